/* state_json — keyed state as JSON for the admin API (/state): a key's
 * named states, a scan by key prefix, MessagePack values as JSON.  Reads
 * committed data only (state_range's snapshot).  See state.h.
 * Calls state, jansson, msgpack and OpenSSL (base64). */
#include "state.h"
#include "clock.h"
#include <jansson.h>
#include <msgpack.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *mp_json(const msgpack_object *o) {
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return json_null();
    case MSGPACK_OBJECT_BOOLEAN: return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER: return json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return json_integer((json_int_t)o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return json_real(o->via.f64);
    case MSGPACK_OBJECT_STR: return json_stringn(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_BIN: return json_stringn(o->via.bin.ptr, o->via.bin.size);
    case MSGPACK_OBJECT_ARRAY: {
        json_t *a = json_array();
        for (uint32_t i = 0; i < o->via.array.size; i++) json_array_append_new(a, mp_json(&o->via.array.ptr[i]));
        return a;
    }
    case MSGPACK_OBJECT_MAP: {
        json_t *m = json_object();
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            json_t *k = mp_json(&o->via.map.ptr[i].key);
            char num[64];
            const char *ks = json_string_value(k);
            if (!ks) {                      /* a number or boolean key: its text */
                char *d = json_dumps(k, JSON_ENCODE_ANY);
                snprintf(num, sizeof num, "%s", d ? d : "?");
                free(d);
                ks = num;
            }
            json_object_set_new(m, ks, mp_json(&o->via.map.ptr[i].val));
            json_decref(k);
        }
        return m;
    }
    default: return json_null();
    }
}

static json_t *bytes_json(const char *p, size_t n) {
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    json_t *j = msgpack_unpack_next(&u, p, n, NULL) == MSGPACK_UNPACK_SUCCESS ? mp_json(&u.data) : json_null();
    msgpack_unpacked_destroy(&u);
    return j;
}

json_t *state_msgpack_json(const char *p, size_t n, int all) {
    if (!all) return bytes_json(p, n);
    json_t *a = json_array();
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    while (msgpack_unpack_next(&u, p, n, &off) == MSGPACK_UNPACK_SUCCESS) json_array_append_new(a, mp_json(&u.data));
    msgpack_unpacked_destroy(&u);
    return a;
}

void state_key_field(json_t *obj, const char *k, size_t n) {
    json_t *s = json_stringn(k, n);          /* NULL when k is not valid UTF-8 */
    if (s) { json_object_set_new(obj, "key", s); return; }
    size_t cap = 4 * ((n + 2) / 3) + 1;
    unsigned char *b = malloc(cap);
    if (!b) return;
    int len = EVP_EncodeBlock(b, (const unsigned char *)k, (int)n);
    json_object_set_new(obj, "key_base64", json_stringn((const char *)b, (size_t)len));
    free(b);
}

/* Adds one state entry (after its key prefix: kind name [0x00 sub]) to obj. */
static void add_entry(json_t *obj, const char *rest, size_t rl, const char *v, size_t vl, int64_t now) {
    size_t pl;
    const char *p = state_value_payload(v, vl, now, &pl);
    if (!p || rl < 1) return;
    char kind = rest[0];
    const char *name = rest + 1;
    size_t nl = rl - 1;
    const char *sub = memchr(name, 0, nl);
    if (kind == 'd') {                      /* dedup: when the key was last let through */
        int64_t ts = 0;
        for (size_t i = 0; i < 8 && i < pl; i++) ts = (int64_t)((uint64_t)ts << 8 | (unsigned char)p[i]);
        json_object_set_new(obj, "seen_at", json_integer(ts));
        return;
    }
    char nm[512];
    size_t n = sub ? (size_t)(sub - name) : nl;
    snprintf(nm, sizeof nm, "%.*s", (int)n, name);
    if (kind == 'm' && sub) {
        json_t *m = json_object_get(obj, nm);
        if (!m) { m = json_object(); json_object_set_new(obj, nm, m); }
        json_t *k = bytes_json(sub + 1, nl - n - 1);
        char buf[64];
        const char *ks = json_string_value(k);
        if (!ks) {
            char *d = json_dumps(k, JSON_ENCODE_ANY);
            snprintf(buf, sizeof buf, "%s", d ? d : "?");
            free(d);
            ks = buf;
        }
        json_object_set_new(m, ks, bytes_json(p, pl));
        json_decref(k);
    } else if (kind == 'v' || kind == 'l' || kind == 't') {     /* values, lists, a join's table row */
        json_object_set_new(obj, nm, bytes_json(p, pl));
    }
}

typedef struct key_walk { json_t *obj; size_t prefix; int64_t now; } key_walk;

static int key_cb(void *ud, const char *k, size_t kl, const char *v, size_t vl) {
    key_walk *w = ud;
    add_entry(w->obj, k + w->prefix, kl - w->prefix, v, vl, w->now);
    return 0;
}

json_t *state_key_json(state_db *db, const char *uid, uint32_t kg, const char *key, size_t klen) {
    state_key from = {0};
    if (state_key_state(&from, uid, kg, key, klen, 0, "", 0, NULL, 0) < 0) return NULL;
    from.len--;                             /* up to the key: every kind and name */
    char *to = malloc(from.len + 1);
    if (!to) { state_key_free(&from); return NULL; }
    memcpy(to, from.p, from.len);
    to[from.len] = (char)0xff;
    key_walk w = { json_object(), from.len, clock_now_ms() };
    state_range(db, from.p, from.len, to, from.len + 1, key_cb, &w);
    free(to);
    state_key_free(&from);
    if (json_object_size(w.obj) == 0) { json_decref(w.obj); return NULL; }
    return w.obj;
}

typedef struct scan_walk {
    json_t *out, *cur;
    char *curkey; size_t curlen;
    const char *prefix; size_t plen;
    size_t uidlen;
    int limit;
    int64_t now;
} scan_walk;

static int scan_cb(void *ud, const char *k, size_t kl, const char *v, size_t vl) {
    scan_walk *w = ud;
    size_t at = w->uidlen + 1 + 2;
    if (kl < at + 4) return 0;
    size_t klen = (size_t)state_get_be(k + at, 4);
    if (kl < at + 4 + klen + 1) return 0;
    const char *key = k + at + 4;
    if (klen < w->plen || memcmp(key, w->prefix, w->plen) != 0) return 0;
    if (!w->cur || w->curlen != klen || memcmp(w->curkey, key, klen) != 0) {
        if (w->cur && json_object_size(w->cur) == 0) json_array_remove(w->out, json_array_size(w->out) - 1);
        if ((int)json_array_size(w->out) >= w->limit) return 1;
        free(w->curkey);
        w->curkey = malloc(klen ? klen : 1);
        if (!w->curkey) return 1;
        memcpy(w->curkey, key, klen);
        w->curlen = klen;
        json_t *e = json_object();
        state_key_field(e, key, klen);
        w->cur = json_object();
        json_object_set_new(e, "state", w->cur);
        json_array_append_new(w->out, e);
    }
    add_entry(w->cur, key + klen, kl - (at + 4 + klen), v, vl, w->now);
    return 0;
}

json_t *state_scan_json(state_db *db, const char *uid, const char *prefix, size_t plen, int limit) {
    size_t ul = strlen(uid);
    char *from = malloc(ul + 2);
    if (!from) return json_array();
    memcpy(from, uid, ul);
    from[ul] = 0;
    char *to = malloc(ul + 1);
    if (!to) { free(from); return json_array(); }
    memcpy(to, uid, ul);
    to[ul] = 1;                             /* the whole state range of the uid (timers start at uid 0x01) */
    scan_walk w = { json_array(), NULL, NULL, 0, prefix, plen, ul, limit, clock_now_ms() };
    state_range(db, from, ul + 1, to, ul + 1, scan_cb, &w);
    if (w.cur && json_object_size(w.cur) == 0) json_array_remove(w.out, json_array_size(w.out) - 1);
    free(w.curkey);
    free(from);
    free(to);
    return w.out;
}
