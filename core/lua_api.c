#include "lua_api.h"
#include "codec.h"
#include "keygroup.h"
#include "window.h"
#include "clock.h"
#include "config.h"
#include "batch.h"
#include <lauxlib.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- classic functions ------------------------------------------------- */

/* Record i (argument arg) of the current batch; raises when out of range. */
static const eddy_rec *arg_rec(lua_State *L, const lua_api_env *e, int arg) {
    int i = (int)luaL_checkinteger(L, arg);
    if (i < 0 || i >= e->io->n) luaL_error(L, "record %d out of range", i);
    return &e->io->recs[i];
}

/* unpack(i) -> value of record i of the current batch.
 * Stack: i -> i value */
static int l_unpack(lua_State *L) {
    lua_api_env *e = lua_touserdata(L, lua_upvalueindex(1));
    const eddy_rec *r = arg_rec(L, e, 1);
    char err[256];
    if (codec_unpack(L, e->io->data + r->val_off, r->val_len, err, sizeof err) < 0)
        return luaL_error(L, "cannot decode a record: %s", err);
    return 1;
}

/* headers(i) -> the Kafka headers of record i of the current batch, as a
 * table of name -> string (a header without a value: false); {} when none.
 * Stack: i -> i table */
static int l_headers(lua_State *L) {
    lua_api_env *e = lua_touserdata(L, lua_upvalueindex(1));
    const eddy_rec *r = arg_rec(L, e, 1);
    if (r->hdr_len == 0) { lua_newtable(L); return 1; }
    char err[256];
    if (codec_unpack(L, e->io->data + r->hdr_off, r->hdr_len, err, sizeof err) < 0)
        return luaL_error(L, "cannot decode the headers: %s", err);
    return 1;
}

/* shuffle(port, key, value, ts, wm, carry): packs value and hands it to the
 * task, which appends it to the batch for the keyed task that owns key's key
 * group (task_shuffle), with its event time, the watermark after it and
 * (carry true) the input record's headers.
 * Stack: port key value ts wm carry -> (none) */
static int l_shuffle(lua_State *L) {
    lua_api_env *e = lua_touserdata(L, lua_upvalueindex(1));
    int port = (int)luaL_checkinteger(L, 1);
    size_t klen;
    const char *key = luaL_checklstring(L, 2, &klen);
    if (e->output_of(e->task, port) < 0) return luaL_error(L, "no output for node %d", port);
    buf *tmp = &e->packbuf;
    tmp->len = 0;
    char err[256];
    if (codec_pack(L, 3, tmp, err, sizeof err) < 0) return luaL_error(L, "%s", err);
    int64_t ts = (int64_t)luaL_optnumber(L, 4, (lua_Number)TS_NONE);
    int64_t wm = (int64_t)luaL_optnumber(L, 5, (lua_Number)TS_NONE);
    if (e->shuffle(e->task, port, key, klen, tmp->data, tmp->len, ts, wm, lua_toboolean(L, 6)) < 0)
        return luaL_error(L, "out of memory");
    return 0;
}

/* json_encode(value) -> string: the value as JSON (codec_json's rules).
 * Stack: value -> value string */
static int l_json_encode(lua_State *L) {
    lua_api_env *e = lua_touserdata(L, lua_upvalueindex(1));
    buf *b = &e->packbuf;
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
    lua_api_env *e = lua_touserdata(L, lua_upvalueindex(1));
    int idx = (int)luaL_checkinteger(L, 1);
    buf *b = &e->packbuf;
    b->len = 0;
    char err[256];
    if (codec_json(L, 2, b, err, sizeof err) < 0) return luaL_error(L, "%s", err);
    lua_pushboolean(L, eddy_sink_write(e->task, idx, b->data, b->len) == 0);
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
    lua_api_env *e = lua_touserdata(L, lua_upvalueindex(1));
    const eddy_rec *r = arg_rec(L, e, 1);
    char err[256];
    if (codec_json_decode(L, e->io->data + r->val_off, r->val_len, err, sizeof err) < 0)
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
/* test_side(name, value): eddy test only -- value, packed, to what the
 * driver's d:side(name) reads (testing.c).  Stack: name value -> name value */
static int l_test_side(lua_State *L) {
    lua_api_env *e = lua_touserdata(L, lua_upvalueindex(1));
    const char *name = luaL_checkstring(L, 1);
    buf *b = &e->packbuf;
    b->len = 0;
    char err[256];
    if (codec_pack(L, 2, b, err, sizeof err) < 0) return luaL_error(L, "ctx.side(\"%s\"): %s", name, err);
    if (eddy_test_side(e->task, name, b->data, b->len) < 0) return luaL_error(L, "out of memory");
    return 0;
}

static int l_dead_letter(lua_State *L) {
    lua_api_env *e = lua_touserdata(L, lua_upvalueindex(1));
    luaL_checktype(L, 1, LUA_TTABLE);
    int i = lua_isnoneornil(L, 2) ? -1 : (int)luaL_checkinteger(L, 2);
    static const char *const text[] = { "error", "traceback" };
    for (int k = 0; k < 2; k++) {
        lua_getfield(L, 1, text[k]);                       /* meta [i] s */
        codec_utf8_scrub(L, -1);
        lua_setfield(L, 1, text[k]);                       /* meta [i] */
    }
    buf *b = &e->packbuf;
    b->len = 0;
    char err[256];
    if (codec_json(L, 1, b, err, sizeof err) < 0) return luaL_error(L, "dead letter: %s", err);
    if (i >= 0 && i < e->io->n && b->len >= 2 && b->data[b->len - 1] == '}') {
        const eddy_rec *r = &e->io->recs[i];
        const char *p = e->io->data + r->val_off;
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
    lua_pushboolean(L, eddy_dead_letter(e->task, b->data, b->len) == 0);
    return 1;
oom:
    return luaL_error(L, "dead letter: out of memory");
}

/* pack(value) -> MessagePack string.  Stack: value -> value string */
static int l_pack(lua_State *L) {
    lua_api_env *e = lua_touserdata(L, lua_upvalueindex(1));
    buf *b = &e->packbuf;
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

static state_tx *tx_of(lua_State *L, lua_api_env *e) {
    if (!e->stx) luaL_error(L, "keyed state is not available here (no state store)");
    return e->stx;
}

/* Builds the state key from the arguments uid kg key kind name [sub] at
 * stack 1..6; sub (any scalar) is packed as MessagePack.  Stack unchanged. */
static void key_from_args(lua_State *L, lua_api_env *e, state_key *k) {
    const char *uid = luaL_checkstring(L, 1);
    uint32_t kg = (uint32_t)luaL_checkinteger(L, 2);
    size_t klen, nlen;
    const char *key = luaL_checklstring(L, 3, &klen);
    const char *kind = luaL_checkstring(L, 4);
    const char *name = luaL_checklstring(L, 5, &nlen);
    const char *sub = NULL;
    size_t sublen = 0;
    if (!lua_isnoneornil(L, 6)) {
        buf *b = &e->packbuf;
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
    lua_api_env *e = lua_touserdata(L, lua_upvalueindex(1));
    state_tx *tx = tx_of(L, e);
    state_key *k = &e->skey;
    key_from_args(L, e, k);
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
    lua_api_env *e = lua_touserdata(L, lua_upvalueindex(1));
    state_tx *tx = tx_of(L, e);
    state_key *k = &e->skey;
    key_from_args(L, e, k);
    if (lua_isnoneornil(L, 7)) { state_tx_delete(tx, k->p, k->len); return 0; }
    int64_t ttl = (int64_t)luaL_optnumber(L, 8, 0);
    buf *b = &e->statebuf;
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
    lua_api_env *e = lua_touserdata(L, lua_upvalueindex(1));
    state_tx *tx = tx_of(L, e);
    key_from_args(L, e, &e->skey);
    state_tx_delete(tx, e->skey.p, e->skey.len);
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
    lua_api_env *e = lua_touserdata(L, lua_upvalueindex(1));
    state_tx *tx = tx_of(L, e);
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
            key_from_args(L, e, k);
        }
    }
    size_t prefix = strlen(uid) + 1 + 2 + 4 + klen + 1 + nlen + 1;
    lua_newtable(L);                           /* args t */
    entries_ud en = { L, prefix, clock_now_ms(), 0 };
    rc = state_tx_range(tx, lo.p, lo.len, hi.p, hi.len, entry_cb, &en);
    bad = en.bad;
done:
    state_key_free(&lo);
    state_key_free(&hi);
    if (rc < 0 || bad) return luaL_error(L, "stored state cannot be read");
    return 1;
}

/* ---- a key's states as one (state migration: process.lua) --------------- */

/* The bound of every state of one key: uid 0x00 kg klen key (then kind ...). */
static int key_prefix(state_key *k, const char *uid, uint32_t kg, const char *key, size_t klen) {
    if (state_key_state(k, uid, kg, key, klen, 0, "", 0, NULL, 0) < 0) return -1;
    k->len--;                                      /* without the kind byte */
    return 0;
}

typedef struct key_states_ud { lua_State *L; size_t prefix; int64_t now; int n, bad; } key_states_ud;

/* One stored state of the key: {kind, name, sub or nil, value, expiry}. */
static int key_state_cb(void *ud, const char *k, size_t kl, const char *v, size_t vl) {
    key_states_ud *e = ud;
    lua_State *L = e->L;
    size_t pl;
    const char *p = state_value_payload(v, vl, e->now, &pl);
    if (!p || kl <= e->prefix) return 0;
    const char *rest = k + e->prefix, *end = k + kl;
    const char *z = memchr(rest + 1, 0, (size_t)(end - rest - 1));
    char err[128];
    lua_createtable(L, 5, 0);
    lua_pushlstring(L, rest, 1);
    lua_rawseti(L, -2, 1);
    lua_pushlstring(L, rest + 1, (size_t)((z ? z : end) - rest - 1));
    lua_rawseti(L, -2, 2);
    if (z) {
        if (codec_unpack(L, z + 1, (size_t)(end - z - 1), err, sizeof err) < 0) { lua_pop(L, 1); e->bad = 1; return 1; }
        lua_rawseti(L, -2, 3);
    }
    if (codec_unpack(L, p, pl, err, sizeof err) < 0) { lua_pop(L, 1); e->bad = 1; return 1; }
    lua_rawseti(L, -2, 4);
    lua_pushnumber(L, (lua_Number)state_value_expiry(v, vl));
    lua_rawseti(L, -2, 5);
    lua_rawseti(L, -2, ++e->n);
    return 0;
}

/* key_states(uid, kg, key) -> { {kind, name, sub|nil, value, expiry ms or 0}, ... }:
 * every state of the key (value, list and map entries), through the
 * uncommitted writes.  Stack: args -> args array */
static int l_key_states(lua_State *L) {
    lua_api_env *e = lua_touserdata(L, lua_upvalueindex(1));
    state_tx *tx = tx_of(L, e);
    size_t klen;
    const char *uid = luaL_checkstring(L, 1), *key = luaL_checklstring(L, 3, &klen);
    uint32_t kg = (uint32_t)luaL_checkinteger(L, 2);
    state_key lo = {0};
    if (key_prefix(&lo, uid, kg, key, klen) < 0) return luaL_error(L, "out of memory");
    size_t pl = lo.len;
    char hi[1024];
    if (pl + 1 > sizeof hi) { state_key_free(&lo); return luaL_error(L, "a key too long to migrate"); }
    memcpy(hi, lo.p, pl);
    hi[pl] = (char)0xff;
    lua_newtable(L);
    key_states_ud ud = { L, pl, clock_now_ms(), 0, 0 };
    int rc = state_tx_range(tx, lo.p, pl, hi, pl + 1, key_state_cb, &ud);
    state_key_free(&lo);
    if (rc < 0 || ud.bad) return luaL_error(L, "stored state cannot be read");
    return 1;
}

typedef struct keys_ud { buf *keys; size_t n; } keys_ud;

/* Collects whole store keys (a 4-byte length, then the key) to delete. */
static int collect_cb(void *ud, const char *k, size_t kl, const char *v, size_t vl) {
    (void)v; (void)vl;
    keys_ud *c = ud;
    char len[4] = { (char)(kl >> 24), (char)(kl >> 16), (char)(kl >> 8), (char)kl };
    if (buf_append(c->keys, len, 4) < 0 || buf_append(c->keys, k, kl) < 0) return 1;
    c->n++;
    return 0;
}

/* key_clear(uid, kg[, key]): deletes every state of the key (no key: of
 * the whole key group) through the task's transaction.  Stack unchanged. */
static int l_key_clear(lua_State *L) {
    lua_api_env *e = lua_touserdata(L, lua_upvalueindex(1));
    state_tx *tx = tx_of(L, e);
    const char *uid = luaL_checkstring(L, 1);
    uint32_t kg = (uint32_t)luaL_checkinteger(L, 2);
    state_key lo = {0};
    char hi[1024];
    size_t pl;
    if (lua_isnoneornil(L, 3)) {
        if (key_prefix(&lo, uid, kg, "", 0) < 0) return luaL_error(L, "out of memory");
        lo.len -= 4;                               /* uid 0x00 kg */
        pl = lo.len;
        memcpy(hi, lo.p, pl);
        hi[pl - 2] = (char)((kg + 1) >> 8);
        hi[pl - 1] = (char)(kg + 1);
    } else {
        size_t klen;
        const char *key = luaL_checklstring(L, 3, &klen);
        if (key_prefix(&lo, uid, kg, key, klen) < 0) return luaL_error(L, "out of memory");
        pl = lo.len;
        if (pl + 1 > sizeof hi) { state_key_free(&lo); return luaL_error(L, "a key too long"); }
        memcpy(hi, lo.p, pl);
        hi[pl++] = (char)0xff;
    }
    buf keys;
    buf_init(&keys);
    keys_ud c = { &keys, 0 };
    int rc = state_tx_range(tx, lo.p, lo.len, hi, pl, collect_cb, &c);
    for (size_t off = 0; rc == 0 && off + 4 <= keys.len;) {
        size_t kl = (size_t)state_get_be(keys.data + off, 4);
        state_tx_delete(tx, keys.data + off + 4, kl);
        off += 4 + kl;
    }
    buf_free(&keys);
    state_key_free(&lo);
    if (rc < 0) return luaL_error(L, "stored state cannot be read");
    return 0;
}

typedef struct next_ud { lua_State *L; size_t prefix; int want, n; buf last; } next_ud;

/* The next distinct keys after the cursor (uid 0x00 kg klen key ...). */
static int next_cb(void *ud, const char *k, size_t kl, const char *v, size_t vl) {
    (void)v; (void)vl;
    next_ud *c = ud;
    if (kl < c->prefix + 4) return 0;
    size_t klen = (size_t)state_get_be(k + c->prefix, 4);
    if (kl < c->prefix + 4 + klen) return 0;
    const char *key = k + c->prefix + 4;
    if (c->n > 0 && c->last.len == klen && memcmp(c->last.data, key, klen) == 0) return 0;   /* the same key's next state */
    if (c->n == c->want) return 1;
    lua_pushlstring(c->L, key, klen);
    lua_rawseti(c->L, -2, ++c->n);
    c->last.len = 0;                               /* (a copy: the iterator's bytes move on) */
    return buf_append(&c->last, key, klen) < 0;
}

/* state_keys(uid, kg, after, n) -> up to n keys with state in the key group,
 * after key `after` (nil: from the first) in stored order (by length, then
 * bytes).  Stack: args -> args array */
static int l_state_keys(lua_State *L) {
    lua_api_env *e = lua_touserdata(L, lua_upvalueindex(1));
    state_tx *tx = tx_of(L, e);
    const char *uid = luaL_checkstring(L, 1);
    uint32_t kg = (uint32_t)luaL_checkinteger(L, 2);
    int want = (int)luaL_checkinteger(L, 4);
    size_t alen = 0;
    const char *after = lua_isnoneornil(L, 3) ? NULL : luaL_checklstring(L, 3, &alen);
    state_key lo = {0};
    if (key_prefix(&lo, uid, kg, after ? after : "", alen) < 0) { state_key_free(&lo); return luaL_error(L, "out of memory"); }
    size_t prefix = strlen(uid) + 1 + 2;       /* uid 0x00 kg */
    char from[1024], hi[1024];
    if (lo.len + 1 > sizeof from) { state_key_free(&lo); return luaL_error(L, "a key too long"); }
    memcpy(from, lo.p, lo.len);
    size_t fl = after ? lo.len : prefix;
    if (after) from[fl++] = (char)0xff;       /* past every state of `after` */
    memcpy(hi, lo.p, prefix);
    hi[prefix - 2] = (char)((kg + 1) >> 8);
    hi[prefix - 1] = (char)(kg + 1);
    state_key_free(&lo);
    lua_newtable(L);
    next_ud c = { L, prefix, want, 0, { 0 } };
    buf_init(&c.last);
    int rc = state_tx_range(tx, from, fl, hi, prefix, next_cb, &c);
    buf_free(&c.last);
    if (rc < 0) return luaL_error(L, "stored state cannot be read");
    return 1;
}

/* timer_set(uid, kg, key, kind, ts) / timer_del(uid, kg, key, ts): a timer
 * of the key (timer.c); the same ts twice is one timer.  Stack unchanged. */
static int l_timer_set(lua_State *L) {
    lua_api_env *e = lua_touserdata(L, lua_upvalueindex(1));
    tx_of(L, e);
    size_t klen;
    const char *uid = luaL_checkstring(L, 1), *key = luaL_checklstring(L, 3, &klen), *kind = luaL_checkstring(L, 4);
    int64_t ts = (int64_t)luaL_checknumber(L, 5);
    if (timer_set(e->timers, uid, (uint32_t)luaL_checkinteger(L, 2), kind[0], ts, key, klen) < 0)
        return luaL_error(L, "out of memory");
    return 0;
}

static int l_timer_del(lua_State *L) {
    lua_api_env *e = lua_touserdata(L, lua_upvalueindex(1));
    tx_of(L, e);
    size_t klen;
    const char *uid = luaL_checkstring(L, 1), *key = luaL_checklstring(L, 3, &klen);
    uint32_t kg = (uint32_t)luaL_checkinteger(L, 2);
    int64_t ts = (int64_t)luaL_checknumber(L, 4);
    if (timer_del(e->timers, uid, kg, ts, key, klen) < 0) return luaL_error(L, "out of memory");
    return 0;
}

/* timers_due(uid, kind, upto) -> ts array, key array: this task's timers of
 * that kind at or before upto, removed, in time order (timer_take_due).
 * Stack: args -> args ts keys */
static int l_timers_due(lua_State *L) {
    lua_api_env *e = lua_touserdata(L, lua_upvalueindex(1));
    tx_of(L, e);
    const char *uid = luaL_checkstring(L, 1), *kind = luaL_checkstring(L, 2);
    int64_t upto = (int64_t)luaL_checknumber(L, 3);
    state_timer *due;
    int n;
    if (timer_take_due(e->timers, uid, kind[0], upto, &due, &n) < 0) return luaL_error(L, "out of memory");
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

/* state_mark() / state_undo(): around one record (state_tx_mark); the undo
 * also makes the timer index start afresh (timer.h).  Stack unchanged. */
static int l_state_mark(lua_State *L) {
    lua_api_env *e = lua_touserdata(L, lua_upvalueindex(1));
    if (e->stx) state_tx_mark(e->stx);
    return 0;
}

static int l_state_undo(lua_State *L) {
    lua_api_env *e = lua_touserdata(L, lua_upvalueindex(1));
    if (e->stx) state_tx_undo(e->stx);
    return 0;
}

/* keygroup(key) -> the key's key group.  Stack: key -> key kg */
static int l_keygroup(lua_State *L) {
    lua_api_env *e = lua_touserdata(L, lua_upvalueindex(1));
    size_t n;
    const char *k = luaL_checklstring(L, 1, &n);
    lua_pushinteger(L, keygroup_of(k, n, e->max_parallelism));
    return 1;
}

/* dedup(uid, kg, key, ts, ttl_ms) -> true when the key was not seen within
 * ttl before ts (and ts becomes its time), false for a duplicate
 * (eddy_dedup, state.c).  The time is event time when the record has one
 * (ts), else processing time.  Stack: args -> args bool */
static int l_dedup(lua_State *L) {
    lua_api_env *e = lua_touserdata(L, lua_upvalueindex(1));
    state_tx *tx = tx_of(L, e);
    size_t klen;
    const char *uid = luaL_checkstring(L, 1), *key = luaL_checklstring(L, 3, &klen);
    uint32_t kg = (uint32_t)luaL_checkinteger(L, 2);
    int64_t ts = (int64_t)luaL_checknumber(L, 4), ttl = (int64_t)luaL_checknumber(L, 5);
    int rc = eddy_dedup(tx, uid, kg, key, klen, ts, ttl);
    if (rc < 0) return luaL_error(L, "out of memory");
    lua_pushboolean(L, rc);
    return 1;
}

void lua_api_env_free(lua_api_env *e) {
    buf_free(&e->packbuf);
    buf_free(&e->statebuf);
    state_key_free(&e->skey);
}

int lua_api_push_native(lua_State *L, lua_api_env *e, char *err, size_t errlen) {
    static const struct { const char *name; lua_CFunction fn; } fns[] = {
        {"pack", l_pack}, {"unpack_all", l_unpack_all}, {"json_decode", l_json_decode},
        {"json_decode_rec", l_json_decode_rec}, {"json_encode", l_json_encode}, {"json_write", l_json_write},
        {"dead_letter", l_dead_letter}, {"test_side", l_test_side}, {"shuffle", l_shuffle}, {"unpack", l_unpack}, {"headers", l_headers},
        {"state_get", l_state_get}, {"state_put", l_state_put}, {"state_del", l_state_del},
        {"state_entries", l_state_entries}, {"timer_set", l_timer_set}, {"timer_del", l_timer_del},
        {"timers_due", l_timers_due}, {"keygroup", l_keygroup}, {"dedup", l_dedup},
        {"state_mark", l_state_mark}, {"state_undo", l_state_undo},
        {"key_states", l_key_states}, {"key_clear", l_key_clear}, {"state_keys", l_state_keys},
    };
    int n = (int)(sizeof fns / sizeof fns[0]), top = lua_gettop(L);
    lua_getglobal(L, "require");                   /* require */
    lua_pushstring(L, "eddy.ffi");
    if (lua_pcall(L, 1, 1, 0) != 0) goto err;      /* eddyffi */
    lua_getfield(L, -1, "bind_native");            /* eddyffi bind */
    lua_createtable(L, 0, n + 3);                  /* eddyffi bind native */
    for (int i = 0; i < n; i++) {
        lua_pushlightuserdata(L, e);
        lua_pushcclosure(L, fns[i].fn, 1);
        lua_setfield(L, -2, fns[i].name);
    }
    if (e->stx) {
        lua_pushlightuserdata(L, e->stx);
        lua_setfield(L, -2, "state_tx");
        lua_pushlightuserdata(L, e->timers);
        lua_setfield(L, -2, "timers");
    }
    lua_pushinteger(L, e->max_parallelism);
    lua_setfield(L, -2, "max_parallelism");
    lua_pushvalue(L, -1);                          /* eddyffi bind native native */
    lua_insert(L, -4);                             /* native eddyffi bind native */
    if (lua_pcall(L, 1, 0, 0) != 0) goto err;      /* native eddyffi */
    lua_pop(L, 1);                                 /* native */
    return 0;
err:                                               /* ... msg */
    snprintf(err, errlen, "cannot load eddy.ffi: %s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "?");
    lua_settop(L, top);
    return -1;
}

/* ---- windows, time ------------------------------------------------------ */

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
