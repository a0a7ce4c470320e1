/* codec — Lua values <-> MessagePack through msgpack-c.  Packing walks the
 * value with the raw Lua API and feeds a msgpack_packer whose write callback
 * appends to a buf; unpacking lets msgpack_unpack() build an object tree in a
 * zone kept per lua_State, then pushes that tree.  See codec.h for the rules.
 * JSON is in codec_json.cc. */
#include "codec.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <msgpack.h>

/* LuaJIT's lua_type() returns 10 for cdata; lua.h has no name for it. */
#define CODEC_TCDATA 10

/* First chunk of the per-state unpack zone: big enough that ordinary records
 * never make msgpack-c allocate another (it frees extra chunks on clear). */
#define CODEC_ZONE_CHUNK 4096

/* ---- buf ---------------------------------------------------------------- */

void buf_init(buf *b)
{
    b->data = NULL;
    b->len = b->cap = 0;
}

void buf_free(buf *b)
{
    if (!b)
        return;
    free(b->data);
    buf_init(b);
}

int buf_reserve(buf *b, size_t extra)
{
    size_t need, cap;
    char *p;

    if (extra <= b->cap - b->len)
        return 0;
    if (extra > SIZE_MAX - b->len)
        return -1;
    need = b->len + extra;
    cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    p = realloc(b->data, cap);
    if (!p)
        return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int buf_append(buf *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    if (buf_reserve(b, n) < 0)
        return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

/* ---- pack --------------------------------------------------------------- */

/* The walk's state.  Level i (0 <= i < depth) is the i-th table on the path
 * from the root to the value being packed: seen[i] is that table (cycle
 * check), key[i] the Lua stack index of the map key being packed under it, or
 * 0 inside an array, where index[i] is the array index.  Keys stay on the Lua
 * stack until the walk returns, so an error can still name the whole path. */
typedef struct packer {
    lua_State *L;
    msgpack_packer pk;
    int depth;
    const void *seen[CODEC_MAX_DEPTH];
    int key[CODEC_MAX_DEPTH];
    lua_Integer index[CODEC_MAX_DEPTH];
    char *err;
    size_t errlen;
} packer;

static int buf_write(void *data, const char *p, size_t n)
{
    return buf_append(data, p, n);
}

static int is_ident(const char *s, size_t n)
{
    size_t i;

    if (n == 0 || !(s[0] == '_' || (s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')))
        return 0;
    for (i = 1; i < n; i++)
        if (!(s[i] == '_' || (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9')))
            return 0;
    return 1;
}

/* The integer a number packs as, if it packs as one: integral, within int64,
 * and not -0.0 (which only a float can carry).  NaN fails the range test. */
static int number_as_int(lua_Number d, int64_t *out)
{
    if (d >= -0x1p63 && d < 0x1p63) {
        int64_t i = (int64_t)d;
        if ((lua_Number)i == d && (i != 0 || !signbit(d))) {
            *out = i;
            return 1;
        }
    }
    return 0;
}

/* Appends "value[3].x" for the first `levels` levels of the path. */
static void path_format(const packer *p, int levels, char *out, size_t outlen)
{
    lua_State *L = p->L;
    size_t n = (size_t)snprintf(out, outlen, "value");
    int i;

    for (i = 0; i < levels && n < outlen; i++) {
        int k = p->key[i];
        int w = 0;
        int64_t iv;

        if (k == 0) {
            w = snprintf(out + n, outlen - n, "[%lld]", (long long)p->index[i]);
        } else if (lua_type(L, k) == LUA_TSTRING) {
            size_t len;
            const char *s = lua_tolstring(L, k, &len);  /* a string already: no conversion */
            if (is_ident(s, len))
                w = snprintf(out + n, outlen - n, ".%s", s);
            else
                w = snprintf(out + n, outlen - n, "[\"%.*s%s\"]", len > 40 ? 40 : (int)len, s,
                             len > 40 ? "..." : "");
        } else if (lua_type(L, k) == LUA_TNUMBER) {
            lua_Number d = lua_tonumber(L, k);
            if (number_as_int(d, &iv))
                w = snprintf(out + n, outlen - n, "[%lld]", (long long)iv);
            else
                w = snprintf(out + n, outlen - n, "[%.17g]", (double)d);
        } else if (lua_type(L, k) == LUA_TBOOLEAN) {
            w = snprintf(out + n, outlen - n, "[%s]", lua_toboolean(L, k) ? "true" : "false");
        }
        if (w < 0)
            break;
        n += (size_t)w;
    }
}

/* Fills err with "<what> at <path to level `levels`>"; returns -1. */
static int fail(packer *p, int levels, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(packer *p, int levels, const char *fmt, ...)
{
    char what[128], path[256];
    va_list ap;

    if (!p->err || p->errlen == 0)
        return -1;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    path_format(p, levels, path, sizeof path);
    snprintf(p->err, p->errlen, "%s at %s", what, path);
    return -1;
}

static const char *type_phrase(lua_State *L, int t)
{
    switch (t) {
    case LUA_TFUNCTION: return "a function";
    case LUA_TUSERDATA:
    case LUA_TLIGHTUSERDATA: return "a userdata";
    case LUA_TTHREAD: return "a thread";
    case CODEC_TCDATA: return "a cdata";
    case LUA_TTABLE: return "a table";
    default: return lua_typename(L, t);
    }
}

static int pack_number(packer *p, lua_Number d)
{
    int64_t i;

    if (number_as_int(d, &i))
        return msgpack_pack_int64(&p->pk, i);
    return msgpack_pack_double(&p->pk, d);
}

/* Packs a scalar map key at stack index k; 1 if its type cannot be a key. */
static int pack_key(packer *p, int k, int *rc)
{
    lua_State *L = p->L;
    size_t len;
    const char *s;

    switch (lua_type(L, k)) {
    case LUA_TSTRING:
        s = lua_tolstring(L, k, &len);
        *rc = msgpack_pack_str_with_body(&p->pk, s, len);
        return 0;
    case LUA_TNUMBER:
        *rc = pack_number(p, lua_tonumber(L, k));  /* lua_tonumber: no in-place conversion */
        return 0;
    case LUA_TBOOLEAN:
        *rc = lua_toboolean(L, k) ? msgpack_pack_true(&p->pk) : msgpack_pack_false(&p->pk);
        return 0;
    default:
        return 1;
    }
}

static int pack_value(packer *p, int idx);

/* Packs the table at absolute index idx.  On error returns -1 leaving keys and
 * values on the stack (the error names them); codec_pack restores the top. */
static int pack_table(packer *p, int idx)
{
    lua_State *L = p->L;
    const void *self = lua_topointer(L, idx);
    size_t n = lua_objlen(L, idx), count = 0;
    int is_array = n > 0, d = p->depth, i, rc = 0;

    if (d >= CODEC_MAX_DEPTH)
        return fail(p, d, "cannot encode a table nested deeper than %d levels", CODEC_MAX_DEPTH);
    for (i = 0; i < d; i++)
        if (p->seen[i] == self)
            return fail(p, d, "cannot encode a cyclic table");
    if (!lua_checkstack(L, 3))
        return fail(p, d, "cannot encode: Lua stack overflow");

    /* Count pass (msgpack wants the length first), and decide array vs map:
     * an array when every key is an integer in 1..n and there are n keys. */
    lua_pushnil(L);                                     /* ... nil */
    while (lua_next(L, idx)) {                          /* ... key value */
        count++;
        if (is_array) {
            lua_Number k;
            if (lua_type(L, -2) != LUA_TNUMBER)
                is_array = 0;
            else if (k = lua_tonumber(L, -2), !(k >= 1 && k <= (lua_Number)n && k == (lua_Number)(size_t)k))
                is_array = 0;
        }
        lua_pop(L, 1);                                  /* ... key */
    }                                                   /* ... */
    if (count != n)
        is_array = 0;
    if (count == 0) {                                   /* {} is a map unless marked as an empty array */
        is_array = 0;
        if (lua_getmetatable(L, idx)) {                 /* ... mt */
            luaL_getmetatable(L, CODEC_ARRAY_MT);       /* ... mt array_mt */
            is_array = lua_rawequal(L, -1, -2);
            lua_pop(L, 2);                              /* ... */
        }
    }
    if (count > UINT32_MAX)
        return fail(p, d, "cannot encode a table of more than 2^32-1 entries");

    p->seen[d] = self;
    p->depth = d + 1;
    if (is_array) {
        p->key[d] = 0;
        if (msgpack_pack_array(&p->pk, n) != 0)
            goto err;
        for (i = 1; (size_t)i <= n; i++) {
            p->index[d] = i;
            lua_rawgeti(L, idx, i);                     /* ... t[i] */
            if (pack_value(p, lua_gettop(L)) < 0)
                return -1;
            lua_pop(L, 1);                              /* ... */
        }
    } else {
        if (msgpack_pack_map(&p->pk, count) != 0)
            goto err;
        lua_pushnil(L);                                 /* ... nil */
        while (lua_next(L, idx)) {                      /* ... key value */
            int top = lua_gettop(L);
            if (pack_key(p, top - 1, &rc))
                return fail(p, d, "cannot encode %s as a map key", type_phrase(L, lua_type(L, top - 1)));
            if (rc != 0)
                goto err;
            p->key[d] = top - 1;
            if (pack_value(p, top) < 0)
                return -1;
            lua_pop(L, 1);                              /* ... key */
        }                                               /* ... */
    }
    p->depth = d;
    return 0;

err:   /* only msgpack's write callback fails: buf growth */
    return fail(p, d, "out of memory encoding a table");
}

/* Packs the value at absolute index idx; the stack is unchanged on success. */
static int pack_value(packer *p, int idx)
{
    lua_State *L = p->L;
    size_t len;
    const char *s;
    int t = lua_type(L, idx), rc;

    switch (t) {
    case LUA_TNIL:
        rc = msgpack_pack_nil(&p->pk);
        break;
    case LUA_TBOOLEAN:
        rc = lua_toboolean(L, idx) ? msgpack_pack_true(&p->pk) : msgpack_pack_false(&p->pk);
        break;
    case LUA_TNUMBER:
        rc = pack_number(p, lua_tonumber(L, idx));
        break;
    case LUA_TSTRING:
        s = lua_tolstring(L, idx, &len);
        rc = msgpack_pack_str_with_body(&p->pk, s, len);
        break;
    case LUA_TTABLE:
        return pack_table(p, idx);
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL) {           /* cjson.null */
            rc = msgpack_pack_nil(&p->pk);
            break;
        }
        /* fall through */
    default:
        return fail(p, p->depth, "cannot encode %s", type_phrase(L, t));
    }
    if (rc != 0)
        return fail(p, p->depth, "out of memory encoding");
    return 0;
}

int codec_pack(lua_State *L, int idx, buf *out, char *err, size_t errlen)
{
    int top = lua_gettop(L);
    size_t len0 = out->len;
    packer p;

    if (idx < 0 && idx > LUA_REGISTRYINDEX)
        idx = top + idx + 1;
    p.L = L;
    p.depth = 0;
    p.err = err;
    p.errlen = errlen;
    msgpack_packer_init(&p.pk, out, buf_write);
    if (pack_value(&p, idx) < 0)
        goto err;
    return 0;

err:
    out->len = len0;
    lua_settop(L, top);
    return -1;
}

/* ---- unpack ------------------------------------------------------------- */

static char zone_key;   /* its address keys the per-state zone in the registry */

static int zone_gc(lua_State *L)
{
    msgpack_zone_destroy(lua_touserdata(L, 1));
    return 0;
}

/* The state's unpack zone, created on first use as a userdata in the registry
 * whose __gc destroys it.  Borrowed: valid while the state lives.  Needs 3
 * free stack slots; returns NULL when out of memory.  Stack unchanged. */
static msgpack_zone *state_zone(lua_State *L)
{
    msgpack_zone *z;

    lua_pushlightuserdata(L, &zone_key);                /* ... key */
    lua_rawget(L, LUA_REGISTRYINDEX);                   /* ... zone|nil */
    z = lua_touserdata(L, -1);
    lua_pop(L, 1);                                      /* ... */
    if (z)
        return z;

    z = lua_newuserdata(L, sizeof *z);                  /* ... ud */
    if (!msgpack_zone_init(z, CODEC_ZONE_CHUNK)) {
        lua_pop(L, 1);                                  /* ... */
        return NULL;
    }
    lua_createtable(L, 0, 1);                           /* ... ud mt */
    lua_pushcfunction(L, zone_gc);                      /* ... ud mt gc */
    lua_setfield(L, -2, "__gc");                        /* ... ud mt */
    lua_setmetatable(L, -2);                            /* ... ud */
    lua_pushlightuserdata(L, &zone_key);                /* ... ud key */
    lua_pushvalue(L, -2);                               /* ... ud key ud */
    lua_rawset(L, LUA_REGISTRYINDEX);                   /* ... ud */
    lua_pop(L, 1);                                      /* ... */
    return z;
}

static const char *object_type_name(msgpack_object_type t)
{
    switch (t) {
    case MSGPACK_OBJECT_NIL: return "nil";
    case MSGPACK_OBJECT_ARRAY: return "array";
    case MSGPACK_OBJECT_MAP: return "map";
    case MSGPACK_OBJECT_EXT: return "ext";
    default: return "scalar";
    }
}

/* Pushes o (stack +1), or returns -1 with err and possibly partial values
 * pushed (codec_unpack restores the top).  nested: inside an array or map,
 * where nil becomes cjson.null so that the slot survives. */
static int push_object(lua_State *L, const msgpack_object *o, int nested, char *err, size_t errlen)
{
    uint32_t i;

    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        if (nested)
            lua_pushlightuserdata(L, NULL);             /* cjson.null */
        else
            lua_pushnil(L);
        return 0;
    case MSGPACK_OBJECT_BOOLEAN:
        lua_pushboolean(L, o->via.boolean);
        return 0;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        lua_pushnumber(L, (lua_Number)o->via.u64);
        return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        lua_pushnumber(L, (lua_Number)o->via.i64);
        return 0;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        lua_pushnumber(L, o->via.f64);
        return 0;
    case MSGPACK_OBJECT_STR:
        lua_pushlstring(L, o->via.str.ptr, o->via.str.size);
        return 0;
    case MSGPACK_OBJECT_BIN:
        lua_pushlstring(L, o->via.bin.ptr, o->via.bin.size);
        return 0;
    case MSGPACK_OBJECT_ARRAY:
        if (!lua_checkstack(L, 3))
            goto overflow;
        lua_createtable(L, o->via.array.size > INT32_MAX ? 0 : (int)o->via.array.size, 0);
        for (i = 0; i < o->via.array.size; i++) {       /* ... t */
            if (push_object(L, &o->via.array.ptr[i], 1, err, errlen) < 0)
                return -1;                              /* ... t v */
            lua_rawseti(L, -2, (int)i + 1);             /* ... t */
        }
        if (o->via.array.size == 0) {                   /* keep [] an array (codec_json writes it so) */
            luaL_newmetatable(L, CODEC_ARRAY_MT);       /* ... t mt */
            lua_setmetatable(L, -2);                    /* ... t */
        }
        return 0;
    case MSGPACK_OBJECT_MAP:
        if (!lua_checkstack(L, 3))
            goto overflow;
        lua_createtable(L, 0, o->via.map.size > INT32_MAX ? 0 : (int)o->via.map.size);
        for (i = 0; i < o->via.map.size; i++) {         /* ... t */
            const msgpack_object *k = &o->via.map.ptr[i].key;
            switch (k->type) {
            case MSGPACK_OBJECT_BOOLEAN:
            case MSGPACK_OBJECT_POSITIVE_INTEGER:
            case MSGPACK_OBJECT_NEGATIVE_INTEGER:
            case MSGPACK_OBJECT_STR:
            case MSGPACK_OBJECT_BIN:
                break;
            case MSGPACK_OBJECT_FLOAT32:
            case MSGPACK_OBJECT_FLOAT64:
                if (isnan(k->via.f64)) {                /* lua_rawset would raise */
                    if (err && errlen)
                        snprintf(err, errlen, "cannot decode a NaN map key");
                    return -1;
                }
                break;
            default:
                if (err && errlen)
                    snprintf(err, errlen, "cannot decode a map key of msgpack type %s",
                             object_type_name(k->type));
                return -1;
            }
            push_object(L, k, 1, err, errlen);          /* ... t k  (scalar: cannot fail) */
            if (push_object(L, &o->via.map.ptr[i].val, 1, err, errlen) < 0)
                return -1;                              /* ... t k v */
            lua_rawset(L, -3);                          /* ... t */
        }
        return 0;
    case MSGPACK_OBJECT_EXT:
        if (err && errlen)
            snprintf(err, errlen, "cannot decode msgpack ext type %d", (int)o->via.ext.type);
        return -1;
    }
    if (err && errlen)
        snprintf(err, errlen, "cannot decode msgpack object type %d", (int)o->type);
    return -1;

overflow:
    if (err && errlen)
        snprintf(err, errlen, "cannot decode: Lua stack overflow");
    return -1;
}

/* Big-endian unsigned of n bytes at p. */
static uint64_t be(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* 1 when no length in the first value of data[0..len) claims more than the
 * bytes there are: every array element or map key and value takes at least
 * one byte, and strings, bin and ext take their length.  msgpack-c allocates
 * an array's objects as soon as it reads the header, so a 5-byte input
 * claiming 4 billion elements would otherwise cost 64 GB of address space.
 * Reads only the headers (the format bytes of the MessagePack spec); what
 * is truncated or malformed is left for msgpack_unpack to report. */
static int claims_fit(const unsigned char *data, size_t len)
{
    size_t pos = 0;
    uint64_t pending = 1;                               /* values still to read */
    while (pending > 0 && pos < len) {
        unsigned c = data[pos++];
        uint64_t items = 0, skip = 0;
        int lenbytes = 0;
        pending--;
        if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) {
            continue;                                   /* fixints, nil, booleans */
        } else if (c <= 0x8f) {
            items = 2 * (uint64_t)(c & 0x0f);           /* fixmap */
        } else if (c <= 0x9f) {
            items = c & 0x0f;                           /* fixarray */
        } else if (c <= 0xbf) {
            skip = c & 0x1f;                            /* fixstr */
        } else {
            switch (c) {
            case 0xc4: case 0xd9: lenbytes = 1; break;  /* bin8, str8 */
            case 0xc5: case 0xda: lenbytes = 2; break;
            case 0xc6: case 0xdb: lenbytes = 4; break;
            case 0xc7: lenbytes = 1; skip = 1; break;   /* ext8: length, type */
            case 0xc8: lenbytes = 2; skip = 1; break;
            case 0xc9: lenbytes = 4; skip = 1; break;
            case 0xca: skip = 4; break;
            case 0xcb: skip = 8; break;
            case 0xcc: case 0xd0: skip = 1; break;
            case 0xcd: case 0xd1: skip = 2; break;
            case 0xce: case 0xd2: skip = 4; break;
            case 0xcf: case 0xd3: skip = 8; break;
            case 0xd4: skip = 2; break;                 /* fixext: type and data */
            case 0xd5: skip = 3; break;
            case 0xd6: skip = 5; break;
            case 0xd7: skip = 9; break;
            case 0xd8: skip = 17; break;
            case 0xdc: case 0xde: lenbytes = 2; break;  /* array16, map16 */
            case 0xdd: case 0xdf: lenbytes = 4; break;
            default: return 1;                          /* 0xc1: msgpack_unpack refuses it */
            }
            if (lenbytes) {
                if (len - pos < (size_t)lenbytes)
                    return 1;                           /* truncated */
                uint64_t n = be(data + pos, lenbytes);
                pos += (size_t)lenbytes;
                if (c == 0xdc || c == 0xdd) items = n;
                else if (c == 0xde || c == 0xdf) items = 2 * n;
                else skip += n;
            }
        }
        if (items > len - pos || pending + items > len - pos)
            return 0;
        pending += items;
        if (skip > len - pos) {
            if (c >= 0xc4 && c <= 0xc9) return 0;       /* bin and ext are copied as claimed */
            return 1;
        }
        pos += (size_t)skip;
    }
    return 1;
}

long codec_unpack(lua_State *L, const char *data, size_t len, char *err, size_t errlen)
{
    int top = lua_gettop(L);
    msgpack_zone *z = NULL;
    msgpack_object obj;
    size_t off = 0;

    if (!lua_checkstack(L, 4)) {
        if (err && errlen)
            snprintf(err, errlen, "cannot decode: Lua stack overflow");
        goto err;
    }
    z = state_zone(L);
    if (!z) {
        if (err && errlen)
            snprintf(err, errlen, "cannot decode: out of memory");
        goto err;
    }
    /* A Lua error (out of memory) while pushing skips the clear at the end. */
    msgpack_zone_clear(z);
    if (!claims_fit((const unsigned char *)data, len)) {
        if (err && errlen)
            snprintf(err, errlen, "cannot decode: malformed msgpack (a length claims more than the %zu bytes there are)",
                     len);
        goto err;
    }

    switch (msgpack_unpack(data, len, &off, z, &obj)) {
    case MSGPACK_UNPACK_SUCCESS:
    case MSGPACK_UNPACK_EXTRA_BYTES:                    /* the caller gets `off` back */
        break;
    case MSGPACK_UNPACK_CONTINUE:
        if (err && errlen)
            snprintf(err, errlen, "cannot decode: msgpack data truncated (%zu bytes)", len);
        goto err;
    default:
        /* msgpack-c also reports nesting deeper than its stack this way. */
        if (err && errlen)
            snprintf(err, errlen, "cannot decode: malformed msgpack, or nested deeper than %d",
                     CODEC_MAX_DEPTH);
        goto err;
    }
    if (push_object(L, &obj, 0, err, errlen) < 0)
        goto err;
    msgpack_zone_clear(z);
    return (long)off;

err:
    if (z)
        msgpack_zone_clear(z);
    lua_settop(L, top);
    return -1;
}
