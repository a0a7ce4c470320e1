/* The storage ceiling for the keyed state benchmark: the same running total
 * per user, as one C loop doing one RocksDB get and one put per record with
 * RocksDB's default options (jansson reads the records and writes the rows).
 *
 *   state-ceiling DB OUT INPUT... */
#include <jansson.h>
#include <rocksdb/c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void check(char *err, const char *what) {
    if (!err) return;
    fprintf(stderr, "state-ceiling: %s: %s\n", what, err);
    exit(1);
}

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: state-ceiling DB OUT INPUT...\n"); return 2; }
    rocksdb_options_t *opts = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(opts, 1);
    char *err = NULL;
    rocksdb_t *db = rocksdb_open(opts, argv[1], &err);
    check(err, "open");
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    FILE *out = fopen(argv[2], "w");
    if (!out) { perror(argv[2]); return 1; }
    char *line = NULL;
    size_t cap = 0;
    for (int a = 3; a < argc; a++) {
        FILE *in = fopen(argv[a], "r");
        if (!in) { perror(argv[a]); return 1; }
        ssize_t n;
        while ((n = getline(&line, &cap, in)) > 0) {
            json_t *j = json_loadb(line, (size_t)n, 0, NULL);
            const char *user = json_string_value(json_object_get(j, "user"));
            if (!user) { fprintf(stderr, "state-ceiling: %s: a record without user\n", argv[a]); return 1; }
            double total = json_number_value(json_object_get(j, "amount"));
            size_t vl = 0;
            char *v = rocksdb_get(db, ro, user, strlen(user), &vl, &err);
            check(err, "get");
            if (v && vl == sizeof(double)) {
                double was;
                memcpy(&was, v, sizeof was);
                total += was;
            }
            rocksdb_free(v);
            rocksdb_put(db, wo, user, strlen(user), (const char *)&total, sizeof total, &err);
            check(err, "put");
            json_t *row = json_pack("{s:s, s:f}", "user", user, "total", total);
            char *s = json_dumps(row, JSON_COMPACT);
            fputs(s, out);
            fputc('\n', out);
            free(s);
            json_decref(row);
            json_decref(j);
        }
        fclose(in);
    }
    free(line);
    if (fclose(out) != 0) { perror(argv[2]); return 1; }
    rocksdb_writeoptions_destroy(wo);
    rocksdb_readoptions_destroy(ro);
    rocksdb_close(db);
    rocksdb_options_destroy(opts);
    return 0;
}
