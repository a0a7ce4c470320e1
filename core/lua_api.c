#include "lua_api.h"
#include "codec.h"
#include "keygroup.h"
#include "log.h"
#include "sink.h"
#include "task_impl.h"   /* an exception: see task_impl.h */
#include "window.h"
#include "clock.h"
#include "config.h"
#include "kafka.h"
#include "state.h"
#include <jansson.h>
#include <lauxlib.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- FFI exports (ffi_api.h) ------------------------------------------- */

int eddy_sink_write(void *tp, int32_t idx, const char *p, size_t n) {
    task *t = tp;
    if (idx < 0 || idx >= t->nsinks) return -1;
    if (sink_write(t->sinks[idx], p, n) < 0) {
        log_task_error(t->name, "%s", sink_error(t->sinks[idx]));
        return -1;
    }
    return 0;
}

/* The headers of the input record being processed, or NULL. */
static const char *current_headers(const task *t, size_t *len) {
    if (!t->io.recs || t->io.cur < 0 || t->io.cur >= t->io.n) return NULL;
    const eddy_rec *r = &t->io.recs[t->io.cur];
    *len = r->hdr_len;
    return r->hdr_len ? t->io.data + r->hdr_off : NULL;
}

/* The input position of the record being processed, as the fields of a
 * dead letter ({"task", "source", "file" or "topic", "partition", "offset",
 * "line"}; only "task" for a window firing, which has none).  Owned text, or
 * NULL. */
static char *origin_json(const task *t) {
    json_t *j = json_pack("{s:s}", "task", t->name);
    if (!j) return NULL;
    const eddy_rec *r = t->io.recs && t->io.cur >= 0 && t->io.cur < t->io.n ? &t->io.recs[t->io.cur] : NULL;
    const plan *p = t->cur.p;
    const source_info *si = r && r->source < (uint32_t)p->nsources ? &p->sources[r->source] : NULL;
    if (si) {
        json_object_set_new(j, "source", json_string(si->name));
        int part = r->partition;
        if (si->kind == SRC_KAFKA && part >= 0 && part < si->nfiles) {
            json_object_set_new(j, "topic", json_string(si->topics[si->ktopic[part]]));
            json_object_set_new(j, "partition", json_integer(si->kpart[part]));
        } else {
            if (part >= 0 && part < si->nfiles) json_object_set_new(j, "file", json_string(si->files[part]));
            json_object_set_new(j, "partition", json_integer(part));
        }
        json_object_set_new(j, "offset", json_integer(r->offset));
        if (r->line > 0) json_object_set_new(j, "line", json_integer(r->line));
    }
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return s;
}

int eddy_sink_write_kv(void *tp, int32_t idx, const char *key, size_t klen, const char *p, size_t n, int64_t ts,
                       int32_t carry) {
    task *t = tp;
    if (idx < 0 || idx >= t->nsinks) return -1;
    size_t hlen = 0;
    const char *hdrs = carry ? current_headers(t, &hlen) : NULL;
    /* under dead_letter, a message Kafka refuses later is dead-lettered with where it came from */
    char *origin = t->sh->cfg->on_error == ON_ERROR_DEAD_LETTER && sink_kafka(t->sinks[idx]) ? origin_json(t) : NULL;
    int rc = sink_write_kv(t->sinks[idx], key, klen, p, n, ts, hdrs, hlen, origin);
    free(origin);
    if (rc == -1) log_task_error(t->name, "%s", sink_error(t->sinks[idx]));
    return rc;
}

const char *eddy_sink_error(void *tp, int32_t idx) {
    task *t = tp;
    return idx >= 0 && idx < t->nsinks ? sink_error(t->sinks[idx]) : "";
}

int eddy_dead_letter(void *tp, const char *p, size_t n) {
    task *t = tp;
    task_shared *sh = t->sh;
    int rc = 0;
    if (sh->cfg->dead_letter_kafka && sh->kafka) {
        char err[512];
        if (kafka_dead_letter(sh->kafka, p, n, err, sizeof err) < 0) {
            log_task_error(t->name, "%s", err);
            return -1;
        }
        return 0;
    }
    pthread_mutex_lock(&sh->dead_letter_mu);
    if (!sh->dead_letter) {
        sh->dead_letter = fopen(sh->cfg->dead_letter_file, "a");
        if (!sh->dead_letter) {
            log_task_error(t->name, "cannot open the dead-letter file %s (dead_letter.file): %m",
                           sh->cfg->dead_letter_file);
            rc = -1;
        }
    }
    if (sh->dead_letter) {
        if (fwrite(p, 1, n, sh->dead_letter) != n || fputc('\n', sh->dead_letter) == EOF ||
            fflush(sh->dead_letter) != 0) {
            log_task_error(t->name, "write to the dead-letter file %s failed: %m", sh->cfg->dead_letter_file);
            rc = -1;
        }
    }
    pthread_mutex_unlock(&sh->dead_letter_mu);
    return rc;
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void eddy_log(void *tp, int32_t level, int32_t limited, const char *msg) {
    task *t = tp;
    if (level < log_level_current) return;
    if (limited && level < LOG_ERROR) {
        if (!log_ratelimited(&t->log_window, &t->log_count, 5)) return;
    }
    (void)now_ms;
    log_write(level, t->name, "%s", msg);
}

/* ---- classic functions ------------------------------------------------- */

/* Record i (argument arg) of the current batch; raises when out of range. */
static const eddy_rec *arg_rec(lua_State *L, const task *t, int arg) {
    int i = (int)luaL_checkinteger(L, arg);
    if (i < 0 || i >= t->io.n) luaL_error(L, "record %d out of range", i);
    return &t->io.recs[i];
}

/* unpack(i) -> value of record i of the current batch.
 * Stack: i -> i value */
static int l_unpack(lua_State *L) {
    task *t = lua_touserdata(L, lua_upvalueindex(1));
    const eddy_rec *r = arg_rec(L, t, 1);
    char err[256];
    if (codec_unpack(L, t->io.data + r->val_off, r->val_len, err, sizeof err) < 0)
        return luaL_error(L, "cannot decode a record: %s", err);
    return 1;
}

/* headers(i) -> the Kafka headers of record i of the current batch, as a
 * table of name -> string (a header without a value: false); {} when none.
 * Stack: i -> i table */
static int l_headers(lua_State *L) {
    task *t = lua_touserdata(L, lua_upvalueindex(1));
    const eddy_rec *r = arg_rec(L, t, 1);
    if (r->hdr_len == 0) { lua_newtable(L); return 1; }
    char err[256];
    if (codec_unpack(L, t->io.data + r->hdr_off, r->hdr_len, err, sizeof err) < 0)
        return luaL_error(L, "cannot decode the headers: %s", err);
    return 1;
}

/* shuffle(port, key, value, ts, wm, carry): packs value and appends it to the
 * batch for the keyed task that owns key's key group, with its event time,
 * the watermark after it and (carry true) the input record's headers.
 * Stack: port key value ts wm carry -> (none) */
static int l_shuffle(lua_State *L) {
    task *t = lua_touserdata(L, lua_upvalueindex(1));
    int port = (int)luaL_checkinteger(L, 1);
    size_t klen;
    const char *key = luaL_checklstring(L, 2, &klen);
    if (port < 1 || port > t->cur.p->nnodes || t->cur.out_of_node[port] < 0)
        return luaL_error(L, "no output for node %d", port);
    out_port *op = &t->outs[t->cur.out_of_node[port]];
    int maxp = t->sh->cfg->max_parallelism;
    uint32_t kg = keygroup_of(key, klen, maxp);
    int target = keygroup_task(kg, maxp, op->ntargets);
    batch *b = op->pending[target];
    if (!b) {
        b = op->pending[target] = batch_create((int)t->sh->cfg->batch_size);
        if (!b) return luaL_error(L, "out of memory");
    }
    buf *tmp = &t->packbuf;
    tmp->len = 0;
    char err[256];
    if (codec_pack(L, 3, tmp, err, sizeof err) < 0) return luaL_error(L, "%s", err);
    eddy_rec *r = batch_add(b, key, klen, tmp->data, tmp->len);
    if (!r) return luaL_error(L, "out of memory");
    r->ts = (int64_t)luaL_optnumber(L, 4, (lua_Number)TS_NONE);
    r->wm = (int64_t)luaL_optnumber(L, 5, (lua_Number)TS_NONE);
    if (t->io.recs && t->io.cur >= 0 && t->io.cur < t->io.n) {   /* where the record came from */
        const eddy_rec *in = &t->io.recs[t->io.cur];
        r->offset = in->offset;
        r->line = in->line;
        r->partition = in->partition;
        r->source = in->source;
    } else {
        r->source = UINT32_MAX;     /* a window's result at end of input: no input record */
    }
    r->port = (int16_t)port;
    r->kg = kg;
    r->flags = EDDY_REC_PACKED;
    size_t hlen = 0;
    const char *hdrs = lua_toboolean(L, 6) ? current_headers(t, &hlen) : NULL;
    if (hdrs) {
        int idx = b->n - 1;
        long off = batch_reserve(b, hlen);
        if (off < 0) return luaL_error(L, "out of memory");
        memcpy(b->data + off, hdrs, hlen);
        b->recs[idx].hdr_off = (uint64_t)off;
        b->recs[idx].hdr_len = (uint32_t)hlen;
    }
    return 0;
}

/* json_encode(value) -> string: the value as JSON (codec_json's rules).
 * Stack: value -> value string */
static int l_json_encode(lua_State *L) {
    task *t = lua_touserdata(L, lua_upvalueindex(1));
    buf *b = &t->packbuf;
    b->len = 0;
    char err[256];
    if (codec_json(L, 1, b, err, sizeof err) < 0) return luaL_error(L, "%s", err);
    lua_pushlstring(L, b->data, b->len);
    return 1;
}

/* json_write(sink, value) -> true, or false when the sink failed (logged):
 * encodes value as JSON straight into sink `sink` of the task (no Lua
 * string of the line is made).  An encoding error is raised.
 * Stack: sink value -> sink value boolean */
static int l_json_write(lua_State *L) {
    task *t = lua_touserdata(L, lua_upvalueindex(1));
    int idx = (int)luaL_checkinteger(L, 1);
    buf *b = &t->packbuf;
    b->len = 0;
    char err[256];
    if (codec_json(L, 2, b, err, sizeof err) < 0) return luaL_error(L, "%s", err);
    lua_pushboolean(L, eddy_sink_write(t, idx, b->data, b->len) == 0);
    return 1;
}

/* json_decode(string) -> value (codec_json_decode's rules).
 * Stack: s -> s value */
static int l_json_decode(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    char err[256];
    if (codec_json_decode(L, s, n, err, sizeof err) < 0) return luaL_error(L, "%s", err);
    return 1;
}

/* json_decode_rec(i) -> the value of record i of the current batch, decoded
 * as JSON where it lies (no Lua string of the line is made).
 * Stack: i -> i value */
static int l_json_decode_rec(lua_State *L) {
    task *t = lua_touserdata(L, lua_upvalueindex(1));
    const eddy_rec *r = arg_rec(L, t, 1);
    char err[256];
    if (codec_json_decode(L, t->io.data + r->val_off, r->val_len, err, sizeof err) < 0)
        return luaL_error(L, "%s", err);
    return 1;
}

/* dead_letter(meta[, i]) -> true, or false when the dead-letter file or
 * topic refused the line (logged).  Writes the JSON object meta (its error
 * and traceback scrubbed to valid UTF-8) and, with i, the bytes of record i
 * of the current batch as "record" (a string when they are valid UTF-8, else
 * "record_base64"): built here, outside the VM's memory, so that a record as
 * large as limits.memory allows still gets its dead letter.
 * Stack: meta [i] -> meta [i] boolean */
static int l_dead_letter(lua_State *L) {
    task *t = lua_touserdata(L, lua_upvalueindex(1));
    luaL_checktype(L, 1, LUA_TTABLE);
    int i = lua_isnoneornil(L, 2) ? -1 : (int)luaL_checkinteger(L, 2);
    static const char *const text[] = { "error", "traceback" };
    for (int k = 0; k < 2; k++) {
        lua_getfield(L, 1, text[k]);                       /* meta [i] s */
        codec_utf8_scrub(L, -1);
        lua_setfield(L, 1, text[k]);                       /* meta [i] */
    }
    buf *b = &t->packbuf;
    b->len = 0;
    char err[256];
    if (codec_json(L, 1, b, err, sizeof err) < 0) return luaL_error(L, "dead letter: %s", err);
    if (i >= 0 && i < t->io.n && b->len >= 2 && b->data[b->len - 1] == '}') {
        const eddy_rec *r = &t->io.recs[i];
        const char *p = t->io.data + r->val_off;
        size_t n = r->val_len;
        b->len--;                                          /* reopen the object */
        const char *sep = b->len > 1 ? "," : "";
        if (buf_append(b, sep, strlen(sep)) < 0 || buf_append(b, "\"record\":", 9) < 0) goto oom;
        if (codec_json_string(p, n, b) < 0) {
            b->len -= 9;
            size_t cap = 4 * ((n + 2) / 3) + 1;
            if (buf_append(b, "\"record_base64\":\"", 17) < 0 || buf_reserve(b, cap) < 0) goto oom;
            b->len += (size_t)EVP_EncodeBlock((unsigned char *)b->data + b->len, (const unsigned char *)p, (int)n);
            if (buf_append(b, "\"", 1) < 0) goto oom;
        }
        if (buf_append(b, "}", 1) < 0) goto oom;
    }
    lua_pushboolean(L, eddy_dead_letter(t, b->data, b->len) == 0);
    return 1;
oom:
    return luaL_error(L, "dead letter: out of memory");
}

/* pack(value) -> MessagePack string.  Stack: value -> value string */
static int l_pack(lua_State *L) {
    task *t = lua_touserdata(L, lua_upvalueindex(1));
    buf *b = &t->packbuf;
    b->len = 0;
    char err[256];
    if (codec_pack(L, 1, b, err, sizeof err) < 0) return luaL_error(L, "%s", err);
    lua_pushlstring(L, b->data, b->len);
    return 1;
}

/* unpack_all(string) -> every value packed one after another in it, as an
 * array (a window's values for apply), or the one value when `one` is true.
 * Stack: s one -> s one value */
static int l_unpack_all(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    int one = lua_toboolean(L, 2);
    char err[256];
    if (one) {
        if (codec_unpack(L, s, n, err, sizeof err) < 0) return luaL_error(L, "cannot decode window state: %s", err);
        return 1;
    }
    lua_newtable(L);                                            /* s one arr */
    int i = 0;
    size_t off = 0;
    while (off < n) {
        long used = codec_unpack(L, s + off, n - off, err, sizeof err);   /* s one arr v */
        if (used < 0) return luaL_error(L, "cannot decode window values: %s", err);
        if (lua_isnil(L, -1)) { lua_pop(L, 1); lua_pushlightuserdata(L, NULL); }   /* keep the slot: cjson.null */
        lua_rawseti(L, -2, ++i);                                /* s one arr */
        off += (size_t)used;
    }
    return 1;
}

/* ---- keyed state (process, dedup) --------------------------------------- */

static state_tx *tx_of(lua_State *L, task *t) {
    if (!t->stx) luaL_error(L, "keyed state is not available here (no state store)");
    return t->stx;
}

/* Builds the state key from the arguments uid kg key kind name [sub] at
 * stack 1..6; sub (any scalar) is packed as MessagePack.  Stack unchanged. */
static void key_from_args(lua_State *L, task *t, state_key *k) {
    const char *uid = luaL_checkstring(L, 1);
    uint32_t kg = (uint32_t)luaL_checkinteger(L, 2);
    size_t klen, nlen;
    const char *key = luaL_checklstring(L, 3, &klen);
    const char *kind = luaL_checkstring(L, 4);
    const char *name = luaL_checklstring(L, 5, &nlen);
    const char *sub = NULL;
    size_t sublen = 0;
    if (!lua_isnoneornil(L, 6)) {
        buf *b = &t->packbuf;
        b->len = 0;
        char err[256];
        if (codec_pack(L, 6, b, err, sizeof err) < 0) luaL_error(L, "a map key: %s", err);
        sub = b->data;
        sublen = b->len;
    }
    if (state_key_state(k, uid, kg, key, klen, kind[0], name, nlen, sub, sublen) < 0) luaL_error(L, "out of memory");
}

/* state_get(uid, kg, key, kind, name[, sub[, fresh]]) -> value or nil; fresh:
 * what is committed, past the task's cache (state other tasks write).
 * Stack: args -> args value */
static int l_state_get(lua_State *L) {
    task *t = lua_touserdata(L, lua_upvalueindex(1));
    state_tx *tx = tx_of(L, t);
    state_key *k = &t->skey;
    key_from_args(L, t, k);
    size_t vl, pl;
    const char *v = lua_toboolean(L, 7) ? state_tx_get_fresh(tx, k->p, k->len, &vl) : state_tx_get(tx, k->p, k->len, &vl);
    const char *p = v ? state_value_payload(v, vl, clock_now_ms(), &pl) : NULL;
    if (!p) { lua_pushnil(L); return 1; }
    char err[256];
    if (codec_unpack(L, p, pl, err, sizeof err) < 0) return luaL_error(L, "stored state cannot be read: %s", err);
    return 1;
}

/* state_put(uid, kg, key, kind, name, sub, value[, ttl_ms]): a nil value deletes.  Stack unchanged. */
static int l_state_put(lua_State *L) {
    task *t = lua_touserdata(L, lua_upvalueindex(1));
    state_tx *tx = tx_of(L, t);
    state_key *k = &t->skey;
    key_from_args(L, t, k);
    if (lua_isnoneornil(L, 7)) { state_tx_delete(tx, k->p, k->len); return 0; }
    int64_t ttl = (int64_t)luaL_optnumber(L, 8, 0);
    buf *b = &t->statebuf;
    b->len = 0;
    char h[STATE_HDR_MAX];
    size_t hl = state_value_header(h, ttl > 0 ? clock_now_ms() + ttl : 0);
    char err[256];
    if (buf_append(b, h, hl) < 0) return luaL_error(L, "out of memory");
    if (codec_pack(L, 7, b, err, sizeof err) < 0) return luaL_error(L, "cannot keep this value in state: %s", err);
    state_tx_put(tx, k->p, k->len, b->data, b->len);
    return 0;
}

/* state_del(uid, kg, key, kind, name[, sub]).  Stack unchanged. */
static int l_state_del(lua_State *L) {
    task *t = lua_touserdata(L, lua_upvalueindex(1));
    state_tx *tx = tx_of(L, t);
    key_from_args(L, t, &t->skey);
    state_tx_delete(tx, t->skey.p, t->skey.len);
    return 0;
}

typedef struct entries_ud { lua_State *L; size_t prefix; int64_t now; int bad; } entries_ud;

static int entry_cb(void *ud, const char *k, size_t kl, const char *v, size_t vl) {
    entries_ud *e = ud;
    size_t pl;
    const char *p = state_value_payload(v, vl, e->now, &pl);
    if (!p) return 0;
    char err[128];
    if (codec_unpack(e->L, k + e->prefix, kl - e->prefix, err, sizeof err) < 0) { e->bad = 1; return 1; }   /* t k */
    if (codec_unpack(e->L, p, pl, err, sizeof err) < 0) { lua_pop(e->L, 1); e->bad = 1; return 1; }         /* t k v */
    lua_rawset(e->L, -3);                                                                                     /* t */
    return 0;
}

/* state_entries(uid, kg, key, kind, name[, from[, to]]) -> table of sub key
 * -> value: every entry, or those whose sub key is in [from, to) (from nil:
 * from the first; to nil: to the last).  A lower bound skips what lies
 * below it unread: the deleted entries there (tombstones until a
 * compaction) are not walked again.  Stack: args -> args table */
static int l_state_entries(lua_State *L) {
    task *t = lua_touserdata(L, lua_upvalueindex(1));
    state_tx *tx = tx_of(L, t);
    lua_settop(L, 7);
    size_t klen, nlen;
    const char *uid = luaL_checkstring(L, 1), *key = luaL_checklstring(L, 3, &klen), *kind = luaL_checkstring(L, 4);
    const char *name = luaL_checklstring(L, 5, &nlen);
    uint32_t kg = (uint32_t)luaL_checkinteger(L, 2);
    /* the prefix ... name 0x00; a bound: the prefix and the packed sub key */
    state_key lo = {0}, hi = {0};
    int rc = -1, bad = 0;
    for (int i = 0; i < 2; i++) {
        state_key *k = i ? &hi : &lo;
        if (lua_isnil(L, 6 + i)) {
            if (state_key_state(k, uid, kg, key, klen, kind[0], name, nlen, "", 0) < 0) goto done;
            if (i) k->p[k->len - 1] = 1;          /* name 0x00 ... up to name 0x01 */
        } else {
            lua_pushvalue(L, 6 + i);
            lua_replace(L, 6);                    /* key_from_args packs argument 6 */
            key_from_args(L, t, k);
        }
    }
    size_t prefix = strlen(uid) + 1 + 2 + 4 + klen + 1 + nlen + 1;
    lua_newtable(L);                           /* args t */
    entries_ud e = { L, prefix, clock_now_ms(), 0 };
    rc = state_tx_range(tx, lo.p, lo.len, hi.p, hi.len, entry_cb, &e);
    bad = e.bad;
done:
    state_key_free(&lo);
    state_key_free(&hi);
    if (rc < 0 || bad) return luaL_error(L, "stored state cannot be read");
    return 1;
}

/* Per operator uid and kind, what this task knows of its timers, by key
 * group (each array is [t->nkgs], in t->kgs's order): the earliest timer
 * (INT64_MIN: unknown, scan; INT64_MAX: none), and a floor below which
 * there are none (the due ones were deleted: deleted keys are not walked
 * again).  `first` is the earliest over every key group (INT64_MIN:
 * unknown).  So a watermark scans only the key groups it makes due, from
 * their floors: each timer costs a few seeks, however many there are. */
typedef struct timer_book { char *uid; char kind; int64_t first, *next, *floor; } timer_book;

static void book_forget(timer_book *b, int nkgs) {
    b->first = INT64_MIN;
    for (int i = 0; i < nkgs; i++) b->next[i] = b->floor[i] = INT64_MIN;
}

static timer_book *book_of(task *t, const char *uid, char kind) {
    for (int i = 0; i < t->ntimer_books; i++)
        if (t->timer_books[i].kind == kind && strcmp(t->timer_books[i].uid, uid) == 0) return &t->timer_books[i];
    timer_book *nb = realloc(t->timer_books, sizeof *nb * (t->ntimer_books + 1));
    if (!nb) return NULL;
    t->timer_books = nb;
    timer_book *b = &nb[t->ntimer_books];
    size_t n = t->nkgs > 0 ? (size_t)t->nkgs : 1;
    b->uid = strdup(uid);
    b->next = malloc(n * sizeof *b->next);
    b->floor = malloc(n * sizeof *b->floor);
    if (!b->uid || !b->next || !b->floor) { free(b->uid); free(b->next); free(b->floor); return NULL; }
    b->kind = kind;
    book_forget(b, t->nkgs);
    t->ntimer_books++;
    return b;
}

/* The index of key group kg in t->kgs (an ascending range), or -1. */
static int kg_index(const task *t, uint32_t kg) {
    int lo = 0, hi = t->nkgs - 1;
    if (t->nkgs > 0 && kg >= t->kgs[0] && kg - t->kgs[0] < (uint32_t)t->nkgs && t->kgs[kg - t->kgs[0]] == kg)
        return (int)(kg - t->kgs[0]);
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (t->kgs[mid] == kg) return mid;
        if (t->kgs[mid] < kg) lo = mid + 1; else hi = mid - 1;
    }
    return -1;
}

void lua_api_free_timer_books(task *t) {
    for (int i = 0; i < t->ntimer_books; i++) {
        free(t->timer_books[i].uid);
        free(t->timer_books[i].next);
        free(t->timer_books[i].floor);
    }
    free(t->timer_books);
    t->timer_books = NULL;
    t->ntimer_books = 0;
}

/* timer_set(uid, kg, key, kind, ts) / timer_del(uid, kg, key, ts): a timer
 * of the key; the same ts twice is one timer.  Stack unchanged. */
static int l_timer_set(lua_State *L) {
    task *t = lua_touserdata(L, lua_upvalueindex(1));
    state_tx *tx = tx_of(L, t);
    size_t klen;
    const char *uid = luaL_checkstring(L, 1), *key = luaL_checklstring(L, 3, &klen), *kind = luaL_checkstring(L, 4);
    int64_t ts = (int64_t)luaL_checknumber(L, 5);
    if (state_key_timer(&t->skey, uid, (uint32_t)luaL_checkinteger(L, 2), kind[0], ts, key, klen) < 0)
        return luaL_error(L, "out of memory");
    state_tx_put(tx, t->skey.p, t->skey.len, "", 0);
    timer_book *b = book_of(t, uid, kind[0]);
    if (!b) return luaL_error(L, "out of memory");
    int i = kg_index(t, (uint32_t)luaL_checkinteger(L, 2));
    if (i < 0) { book_forget(b, t->nkgs); return 0; }     /* not this task's key group: scan afresh */
    if (b->next[i] != INT64_MIN && ts < b->next[i]) b->next[i] = ts;
    if (ts < b->floor[i]) b->floor[i] = ts;
    if (b->first != INT64_MIN && ts < b->first) b->first = ts;
    return 0;
}

static int l_timer_del(lua_State *L) {
    task *t = lua_touserdata(L, lua_upvalueindex(1));
    state_tx *tx = tx_of(L, t);
    size_t klen;
    const char *uid = luaL_checkstring(L, 1), *key = luaL_checklstring(L, 3, &klen);
    uint32_t kg = (uint32_t)luaL_checkinteger(L, 2);
    int64_t ts = (int64_t)luaL_checknumber(L, 4);
    for (int i = 0; i < 2; i++) {
        if (state_key_timer(&t->skey, uid, kg, i ? 'p' : 'e', ts, key, klen) < 0) return luaL_error(L, "out of memory");
        state_tx_delete(tx, t->skey.p, t->skey.len);
    }
    return 0;
}

/* timers_due(uid, kind, upto) -> ts array, key array: this task's timers of
 * that kind at or before upto, removed, in time order.  Stack: args -> args ts keys */
static int l_timers_due(lua_State *L) {
    task *t = lua_touserdata(L, lua_upvalueindex(1));
    state_tx *tx = tx_of(L, t);
    const char *uid = luaL_checkstring(L, 1), *kind = luaL_checkstring(L, 2);
    int64_t upto = (int64_t)luaL_checknumber(L, 3);
    timer_book *b = book_of(t, uid, kind[0]);
    if (!b) return luaL_error(L, "out of memory");
    if (b->first != INT64_MIN && upto < b->first) { lua_newtable(L); lua_newtable(L); return 2; }   /* nothing due: no scan */
    /* the key groups with a timer due (or not known yet), from their floors */
    uint32_t *kgs = malloc(sizeof *kgs * (size_t)(t->nkgs + 1));
    int64_t *floors = malloc(sizeof *floors * (size_t)(t->nkgs + 1));
    int *idx = malloc(sizeof *idx * (size_t)(t->nkgs + 1));
    if (!kgs || !floors || !idx) { free(kgs); free(floors); free(idx); return luaL_error(L, "out of memory"); }
    int m = 0;
    for (int i = 0; i < t->nkgs; i++)
        if (b->next[i] == INT64_MIN || b->next[i] <= upto) { kgs[m] = t->kgs[i]; floors[m] = b->floor[i]; idx[m++] = i; }
    int n = 0;
    state_timer *due = state_timers_due(tx, uid, kind[0], kgs, floors, m, upto, &n);
    /* every timer up to upto is gone from those key groups: their next ones */
    for (int j = 0; j < m; j++) {
        int i = idx[j];
        if (upto < INT64_MAX && upto + 1 > b->floor[i]) b->floor[i] = upto + 1;
        b->next[i] = upto == INT64_MAX ? INT64_MAX : state_timers_next(tx, uid, kind[0], t->kgs[i], b->floor[i]);
    }
    free(kgs); free(floors); free(idx);
    b->first = INT64_MAX;
    for (int i = 0; i < t->nkgs; i++) if (b->next[i] < b->first) b->first = b->next[i];
    lua_createtable(L, n, 0);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushnumber(L, (lua_Number)due[i].ts);
        lua_rawseti(L, -3, i + 1);
        lua_pushlstring(L, due[i].key, due[i].klen);
        lua_rawseti(L, -2, i + 1);
    }
    state_timers_free(due, n);
    return 2;
}

/* state_mark() / state_undo(): around one record (state_tx_mark).  Stack unchanged. */
static int l_state_mark(lua_State *L) {
    task *t = lua_touserdata(L, lua_upvalueindex(1));
    if (t->stx) state_tx_mark(t->stx);
    return 0;
}

static int l_state_undo(lua_State *L) {
    task *t = lua_touserdata(L, lua_upvalueindex(1));
    if (t->stx) state_tx_undo(t->stx);
    /* timers the record deleted or set are back or gone: scan afresh */
    for (int i = 0; i < t->ntimer_books; i++) book_forget(&t->timer_books[i], t->nkgs);
    return 0;
}

/* keygroup(key) -> the key's key group.  Stack: key -> key kg */
static int l_keygroup(lua_State *L) {
    task *t = lua_touserdata(L, lua_upvalueindex(1));
    size_t n;
    const char *k = luaL_checklstring(L, 1, &n);
    lua_pushinteger(L, keygroup_of(k, n, t->sh->cfg->max_parallelism));
    return 1;
}

/* dedup(uid, kg, key, ts, ttl_ms) -> true when the key was not seen within
 * ttl before ts (and ts becomes its time), false for a duplicate.  The time
 * is event time when the record has one (ts), else processing time.  The
 * entry is kept for ttl of processing time (then the compaction filter
 * drops it).  Stack: args -> args bool */
static int l_dedup(lua_State *L) {
    task *t = lua_touserdata(L, lua_upvalueindex(1));
    state_tx *tx = tx_of(L, t);
    size_t klen;
    const char *uid = luaL_checkstring(L, 1), *key = luaL_checklstring(L, 3, &klen);
    uint32_t kg = (uint32_t)luaL_checkinteger(L, 2);
    int64_t ts = (int64_t)luaL_checknumber(L, 4), ttl = (int64_t)luaL_checknumber(L, 5), now = clock_now_ms();
    if (state_key_state(&t->skey, uid, kg, key, klen, 'd', "", 0, NULL, 0) < 0) return luaL_error(L, "out of memory");
    size_t vl, pl;
    const char *v = state_tx_get(tx, t->skey.p, t->skey.len, &vl);
    const char *p = v ? state_value_payload(v, vl, now, &pl) : NULL;
    if (p && pl == 8) {
        int64_t seen = 0;
        for (int i = 0; i < 8; i++) seen = (int64_t)((uint64_t)seen << 8 | (unsigned char)p[i]);
        if (ts - seen < ttl) { lua_pushboolean(L, 0); return 1; }
    }
    char rec[STATE_HDR_MAX + 8];
    size_t hl = state_value_header(rec, now + ttl);
    for (int i = 0; i < 8; i++) rec[hl + i] = (char)((uint64_t)ts >> (8 * (7 - i)));
    state_tx_put(tx, t->skey.p, t->skey.len, rec, hl + 8);
    lua_pushboolean(L, 1);
    return 1;
}

void lua_api_push_native(lua_State *L, task *t) {
    lua_createtable(L, 0, 6);                      /* native */
    lua_pushlightuserdata(L, t);
    lua_pushcclosure(L, l_pack, 1);
    lua_setfield(L, -2, "pack");
    lua_pushcfunction(L, l_unpack_all);
    lua_setfield(L, -2, "unpack_all");
    lua_pushcfunction(L, l_json_decode);
    lua_setfield(L, -2, "json_decode");
    lua_pushlightuserdata(L, t);
    lua_pushcclosure(L, l_json_decode_rec, 1);
    lua_setfield(L, -2, "json_decode_rec");
    lua_pushlightuserdata(L, t);
    lua_pushcclosure(L, l_json_encode, 1);
    lua_setfield(L, -2, "json_encode");
    lua_pushlightuserdata(L, t);
    lua_pushcclosure(L, l_json_write, 1);
    lua_setfield(L, -2, "json_write");
    lua_pushlightuserdata(L, t);
    lua_pushcclosure(L, l_dead_letter, 1);
    lua_setfield(L, -2, "dead_letter");
    lua_pushlightuserdata(L, t);
    lua_pushcclosure(L, l_shuffle, 1);
    lua_setfield(L, -2, "shuffle");
    lua_pushlightuserdata(L, t);
    lua_pushcclosure(L, l_unpack, 1);
    lua_setfield(L, -2, "unpack");
    lua_pushlightuserdata(L, t);
    lua_pushcclosure(L, l_headers, 1);
    lua_setfield(L, -2, "headers");
    static const struct { const char *name; lua_CFunction fn; } state_fns[] = {
        {"state_get", l_state_get}, {"state_put", l_state_put}, {"state_del", l_state_del},
        {"state_entries", l_state_entries}, {"timer_set", l_timer_set}, {"timer_del", l_timer_del},
        {"timers_due", l_timers_due}, {"keygroup", l_keygroup}, {"dedup", l_dedup},
        {"state_mark", l_state_mark}, {"state_undo", l_state_undo},
    };
    for (size_t i = 0; i < sizeof state_fns / sizeof state_fns[0]; i++) {
        lua_pushlightuserdata(L, t);
        lua_pushcclosure(L, state_fns[i].fn, 1);
        lua_setfield(L, -2, state_fns[i].name);
    }
}

int lua_api_flush_outputs(task *t) {
    for (int o = 0; o < t->nouts; o++) {
        out_port *op = &t->outs[o];
        for (int i = 0; i < op->ntargets; i++) {
            batch *b = op->pending[i];
            if (!b || b->n == 0) continue;
            op->pending[i] = NULL;
            t->records_out += b->n;
            if (channel_push(op->ch[i], CH_BATCH, b, 0) < 0) return -1;
        }
    }
    return 0;
}

/* ---- windows, time ------------------------------------------------------ */

/* The window state of operator `uid` in this task, created on first use.
 * NULL when the uid's state was made with another assigner (a reload refuses
 * that before it gets here) or on allocation failure. */
static void *window_open_locked(task *t, const char *uid, int64_t size, int64_t advance, int64_t offset,
                                int64_t lateness);

void *eddy_window_open(void *tp, const char *uid, int64_t size, int64_t advance, int64_t offset, int64_t lateness) {
    task *t = tp;
    pthread_mutex_lock(&t->swap_mu);
    void *w = window_open_locked(t, uid, size, advance, offset, lateness);
    pthread_mutex_unlock(&t->swap_mu);
    return w;
}

static void *window_open_locked(task *t, const char *uid, int64_t size, int64_t advance, int64_t offset,
                                int64_t lateness) {
    for (int i = 0; i < t->nwins; i++) {
        task_window *tw = &t->wins[i];
        if (strcmp(tw->uid, uid) != 0) continue;
        if (tw->size != size || tw->advance != advance || tw->offset != offset || tw->lateness != lateness) return NULL;
        return tw->w;
    }
    if (!t->stx) return NULL;               /* windows live in the state store */
    task_window *wins = realloc(t->wins, sizeof *wins * (t->nwins + 1));
    if (!wins) return NULL;
    t->wins = wins;
    task_window *tw = &t->wins[t->nwins];
    tw->uid = strdup(uid);
    int maxp = t->sh->cfg->max_parallelism;
    tw->w = advance < 0 ? window_create_sessions(t->stx, uid, t->kgs, t->nkgs, maxp, size, lateness)
                        : window_create(t->stx, uid, t->kgs, t->nkgs, maxp, size, advance, offset, lateness);
    if (!tw->uid || !tw->w) { free(tw->uid); window_destroy(tw->w); return NULL; }
    tw->size = size;
    tw->advance = advance;
    tw->offset = offset;
    tw->lateness = lateness;
    t->nwins++;
    return tw->w;
}

int eddy_window_add(void *w, const char *key, size_t klen, int64_t ts, double x) {
    return window_add(w, key, klen, ts, x);
}

void eddy_window_drop_late(void *w) { window_count_dropped(w); }

int32_t eddy_window_assign(void *w, int64_t ts, int64_t *starts, int32_t max) {
    return window_assign(w, ts, starts, max);
}

const char *eddy_window_state(void *w, const char *key, size_t klen, int64_t start, size_t *len) {
    return window_state(w, key, klen, start, len);
}

int32_t eddy_window_store(void *w, const char *key, size_t klen, int64_t start, const char *p, size_t n, int32_t mode,
                          double *count) {
    return window_store(w, key, klen, start, p, n, mode, count);
}

int32_t eddy_window_add_at(void *w, const char *key, size_t klen, int64_t start, double x, double *count) {
    return window_add_at(w, key, klen, start, x, count);
}

int32_t eddy_window_fire(void *w, const char *key, size_t klen, int64_t start, int32_t purge) {
    return window_fire(w, key, klen, start, purge);
}

int32_t eddy_window_list(void *w, eddy_window_info *info, int32_t max) { return window_list(w, info, max); }

void eddy_window_mark(void *w, const char *key, size_t klen, int64_t start, int64_t mark) {
    window_mark(w, key, klen, start, mark);
}

void eddy_task_wants_ticks(void *tp) { ((task *)tp)->wants_ticks = 1; }

void eddy_window_keep_unfired(void *w) { window_keep_unfired(w, 1); }

int32_t eddy_window_session_find(void *w, const char *key, size_t klen, int64_t ts, int64_t *starts, int32_t max,
                                 int64_t *range) {
    return window_session_find(w, key, klen, ts, starts, max, &range[0], &range[1]);
}

int32_t eddy_window_session_put(void *w, const char *key, size_t klen, const int64_t *starts, int32_t n,
                                int64_t start, int64_t end, const char *p, size_t plen) {
    return window_session_put(w, key, klen, starts, n, start, end, p, plen);
}

int32_t eddy_window_advance(void *w, int64_t wm) { return window_advance(w, wm); }

const eddy_fired *eddy_window_fired(void *w, int32_t i) { return window_fired(w, i); }

int64_t eddy_now_ms(void) { return clock_now_ms(); }

int eddy_parse_duration(const char *s, int64_t *ms) { return config_parse_duration(s, ms); }

/* ISO-8601 through strptime: "YYYY-MM-DDTHH:MM:SS[.fff][Z|+HH:MM|+HHMM]", or a date alone. */
int eddy_parse_time(const char *s, size_t n, int64_t *ms) {
    char tmp[64];
    if (n == 0 || n >= sizeof tmp) return -1;
    memcpy(tmp, s, n);
    tmp[n] = 0;
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *rest = strptime(tmp, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!rest) rest = strptime(tmp, "%Y-%m-%d %H:%M:%S", &tm);
    if (!rest) {
        memset(&tm, 0, sizeof tm);
        rest = strptime(tmp, "%Y-%m-%d", &tm);
        if (!rest || *rest) return -1;
    }
    int64_t frac = 0;
    if (*rest == '.' || *rest == ',') {
        int digits = 0;
        rest++;
        while (*rest >= '0' && *rest <= '9') {
            if (digits < 3) { frac = frac * 10 + (*rest - '0'); digits++; }
            rest++;
        }
        if (digits == 0) return -1;
        while (digits++ < 3) frac *= 10;
    }
    int64_t off = 0;
    if (*rest == 'Z' || *rest == 'z') {
        rest++;
    } else if (*rest == '+' || *rest == '-') {
        struct tm z;
        memset(&z, 0, sizeof z);
        const char *e = strptime(rest, "%z", &z);
        if (!e) return -1;
        off = z.tm_gmtoff;
        rest = e;
    }
    if (*rest) return -1;
    struct tm want = tm, got;
    time_t secs = timegm(&tm);
    /* timegm rolls an impossible date over (2023-02-30 -> 2023-03-02): refuse
     * any date or time that does not come back as it was written */
    if (!gmtime_r(&secs, &got) || got.tm_year != want.tm_year || got.tm_mon != want.tm_mon ||
        got.tm_mday != want.tm_mday || got.tm_hour != want.tm_hour || got.tm_min != want.tm_min ||
        got.tm_sec != want.tm_sec)
        return -1;
    int64_t t = ((int64_t)secs - off) * 1000 + frac;
    if (t < EDDY_TS_MIN || t > EDDY_TS_MAX) return -1;
    *ms = t;
    return 0;
}
