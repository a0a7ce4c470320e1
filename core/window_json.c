/* window_json — see window.h (window_key_json, window_scan_json): a window
 * operator's windows as JSON for the admin's /state, read from committed
 * state on the admin's thread (never the task's working batch).
 * Calls: state (ranges, msgpack to JSON). */
#include "window_internal.h"

/* ---- readers -------------------------------------------------------------- */

typedef struct jwalk {
    size_t uidlen;
    const char *key; size_t klen;        /* window_key_json: the key */
    const char *prefix; size_t plen;     /* window_scan_json: keys by prefix */
    int64_t from, to;
    const char *agg;
    json_t *windows;                     /* window_key_json */
    json_t *bykey;                       /* window_scan_json: key -> windows */
    int limit;
} jwalk;

static json_t *value_json(const char *agg, const char *v, size_t vl) {
    size_t plen;
    const char *p = state_value_payload(v, vl, 0, &plen);
    if (!p || plen < VFIX) return json_null();
    double count, sum, mn, mx;
    memcpy(&count, p + 9, 8);
    memcpy(&sum, p + 17, 8);
    memcpy(&mn, p + 25, 8);
    memcpy(&mx, p + 33, 8);
    const char *st = p + VFIX;
    size_t n = plen - VFIX;
    if (strcmp(agg, "sum") == 0) return json_real(sum);
    if (strcmp(agg, "min") == 0) return json_real(mn);
    if (strcmp(agg, "max") == 0) return json_real(mx);
    if (strcmp(agg, "avg") == 0) return count > 0 ? json_real(sum / count) : json_null();
    if (n && strcmp(agg, "apply") == 0) return state_msgpack_json(st, n, 1);
    if (n) return state_msgpack_json(st, n, 0);
    return json_integer((json_int_t)count);
}

static int jwalk_cb(void *ud, const char *k, size_t kl, const char *v, size_t vl) {
    jwalk *j = ud;
    wkey wk;
    if (parse_wkey(k, kl, j->uidlen, &wk) < 0) return 0;
    if (wk.start < j->from || wk.end > j->to) return 0;
    json_t *arr = j->windows;
    if (j->key) {
        if (wk.klen != j->klen || memcmp(wk.key, j->key, wk.klen) != 0) return 0;
    } else {
        if (wk.klen < j->plen || memcmp(wk.key, j->prefix, j->plen) != 0) return 0;
        /* keyed by the key's bytes as they are (NUL, invalid UTF-8):
         * state_key_field encodes them for the answer */
        arr = json_object_getn(j->bykey, wk.key, wk.klen);
        if (!arr) {
            if ((int)json_object_size(j->bykey) >= j->limit) return 0;
            arr = json_array();
            if (json_object_setn_new_nocheck(j->bykey, wk.key, wk.klen, arr) < 0) return 1;
        }
    }
    json_array_append_new(arr, json_pack("{s:I, s:I, s:o}", "start", (json_int_t)wk.start, "end", (json_int_t)wk.end,
                                         "value", value_json(j->agg, v, vl)));
    return 0;
}

static int by_start(const void *a, const void *b) {
    json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    json_int_t p = json_integer_value(json_object_get(x, "start")), q = json_integer_value(json_object_get(y, "start"));
    return p < q ? -1 : p > q;
}

/* Orders a key's windows by start (the store has them by end). */
static json_t *sorted(json_t *arr) {
    size_t n = json_array_size(arr);
    json_t **v = malloc(sizeof *v * (n ? n : 1));
    if (!v) return arr;
    for (size_t i = 0; i < n; i++) v[i] = json_incref(json_array_get(arr, i));
    qsort(v, n, sizeof *v, by_start);
    json_array_clear(arr);
    for (size_t i = 0; i < n; i++) json_array_append_new(arr, v[i]);
    free(v);
    return arr;
}

json_t *window_key_json(struct state_db *db, const char *uid, uint32_t kg, const char *key, size_t klen, int64_t from,
                        int64_t to, const char *agg) {
    jwalk j = { .uidlen = strlen(uid), .key = key, .klen = klen, .from = from, .to = to, .agg = agg,
                .windows = json_array() };
    state_key a = {0}, b = {0};
    state_key_window(&a, uid, kg, INT64_MIN, NULL, 0, 0);
    state_key_window(&b, uid, kg + 1, INT64_MIN, NULL, 0, 0);
    state_range(db, a.p, a.len, b.p, b.len, jwalk_cb, &j);
    state_key_free(&a);
    state_key_free(&b);
    if (json_array_size(j.windows) == 0) { json_decref(j.windows); return NULL; }
    return json_pack("{s:o}", "windows", sorted(j.windows));
}

typedef struct keyref { const char *k; size_t n; } keyref;

static int by_name(const void *a, const void *b) {
    const keyref *x = a, *y = b;
    int c = memcmp(x->k, y->k, x->n < y->n ? x->n : y->n);
    return c ? c : (x->n > y->n) - (x->n < y->n);
}

json_t *window_scan_json(struct state_db *db, const char *uid, const char *prefix, size_t plen, int limit,
                         const char *agg) {
    jwalk j = { .uidlen = strlen(uid), .prefix = prefix, .plen = plen, .from = INT64_MIN, .to = INT64_MAX,
                .agg = agg, .bykey = json_object(), .limit = limit };
    size_t ul = strlen(uid);
    char *a = malloc(ul + 1), *b = malloc(ul + 1);
    json_t *out = json_array();
    if (a && b) {
        memcpy(a, uid, ul);
        memcpy(b, uid, ul);
        a[ul] = 2;
        b[ul] = 3;
        state_range(db, a, ul + 1, b, ul + 1, jwalk_cb, &j);
    }
    free(a);
    free(b);
    /* keys in order, as the other operators' scans give them */
    size_t n = json_object_size(j.bykey);
    keyref *keys = malloc(sizeof *keys * (n ? n : 1));
    const char *k;
    size_t kn;
    json_t *v;
    size_t i = 0;
    if (keys) {
        json_object_keylen_foreach(j.bykey, k, kn, v) keys[i++] = (keyref){ k, kn };
        qsort(keys, n, sizeof *keys, by_name);
    }
    for (i = 0; keys && i < n; i++) {
        json_t *e = json_object();
        state_key_field(e, keys[i].k, keys[i].n);
        json_object_set_new(e, "state", json_pack("{s:O}", "windows",
                                                  sorted(json_object_getn(j.bykey, keys[i].k, keys[i].n))));
        json_array_append_new(out, e);
    }
    free(keys);
    json_decref(j.bykey);
    return out;
}
