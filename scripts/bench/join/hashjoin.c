/* The ceiling for the join benchmark: the same left join of orders with
 * customers as one C loop -- jansson to parse and write JSON, uthash for
 * the table -- with nothing around it.
 *
 *   hashjoin CUSTOMERS ORDERS OUT */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

typedef struct row { UT_hash_handle hh; char *tier; char id[]; } row;

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: hashjoin CUSTOMERS ORDERS OUT\n"); return 2; }
    FILE *c = fopen(argv[1], "r"), *o = fopen(argv[2], "r"), *out = fopen(argv[3], "w");
    if (!c || !o || !out) { perror("hashjoin"); return 1; }
    row *table = NULL;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, c)) > 0) {
        json_t *j = json_loadb(line, (size_t)n, 0, NULL);
        const char *id = json_string_value(json_object_get(j, "id"));
        const char *tier = json_string_value(json_object_get(j, "tier"));
        if (id && tier) {
            row *r;
            HASH_FIND_STR(table, id, r);
            if (!r) {
                r = calloc(1, sizeof *r + strlen(id) + 1);
                strcpy(r->id, id);
                HASH_ADD_STR(table, id, r);
            }
            free(r->tier);
            r->tier = strdup(tier);
        }
        json_decref(j);
    }
    while ((n = getline(&line, &cap, o)) > 0) {
        json_t *j = json_loadb(line, (size_t)n, 0, NULL);
        const char *cust = json_string_value(json_object_get(j, "customer"));
        row *r = NULL;
        if (cust) HASH_FIND_STR(table, cust, r);
        json_t *res = json_pack("{s:O, s:s, s:O, s:s?}", "order", json_object_get(j, "id"), "customer", cust ? cust : "",
                                "amount", json_object_get(j, "amount"), "tier", r ? r->tier : NULL);
        char *s = json_dumps(res, JSON_COMPACT);
        fputs(s, out);
        fputc('\n', out);
        free(s);
        json_decref(res);
        json_decref(j);
    }
    free(line);
    fclose(out);
    return 0;
}
