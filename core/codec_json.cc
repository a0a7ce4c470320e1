/* codec_json — JSON text <-> Lua values, the one JSON codec of the data path
 * (json sources and sinks, dead letters).  Decoding runs RapidJSON's SAX
 * reader straight into Lua tables (no document tree in between); encoding
 * walks the Lua value into RapidJSON's writer, with numbers that are not
 * integers written by double-conversion's shortest round-trip formatter.
 * The rules are in codec.h and docs/contract.md ("JSON"). */
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include <double-conversion/double-to-string.h>
#include <rapidjson/error/en.h>
#include <rapidjson/memorystream.h>
#include <rapidjson/reader.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

extern "C" {
#include "codec.h"
#include <lauxlib.h>
}

namespace {

/* ---- decoding ------------------------------------------------------------ */

/* The SAX handler: every value is pushed, then added to the container below
 * it on the Lua stack.  Stack while inside containers (base = the array
 * metatable):  base  t1 [k1]  t2 [k2] ...  value  */
struct ToLua : rapidjson::BaseReaderHandler<rapidjson::UTF8<>, ToLua> {
    lua_State *L;
    int mt;                              /* stack index of CODEC_ARRAY_MT */
    int depth = 0;
    bool too_deep = false;
    bool in_array[CODEC_JSON_MAX_DEPTH + 1];
    int index[CODEC_JSON_MAX_DEPTH + 1]; /* items so far in each open array */

    ToLua(lua_State *L_, int mt_) : L(L_), mt(mt_) {}

    bool add() {
        if (depth == 0) return true;                      /* the root: stays pushed */
        if (in_array[depth]) lua_rawseti(L, -2, ++index[depth]);   /* t v -> t */
        else lua_rawset(L, -3);                           /* t k v -> t */
        return true;
    }
    bool Null() { lua_pushlightuserdata(L, nullptr); return add(); }   /* cjson.null */
    bool Bool(bool b) { lua_pushboolean(L, b); return add(); }
    bool Int(int i) { lua_pushnumber(L, i); return add(); }
    bool Uint(unsigned u) { lua_pushnumber(L, u); return add(); }
    bool Int64(int64_t i) { lua_pushnumber(L, (lua_Number)i); return add(); }
    bool Uint64(uint64_t u) { lua_pushnumber(L, (lua_Number)u); return add(); }
    bool Double(double d) { lua_pushnumber(L, d); return add(); }
    bool String(const char *s, rapidjson::SizeType n, bool) { lua_pushlstring(L, s, n); return add(); }
    bool Key(const char *s, rapidjson::SizeType n, bool) { lua_pushlstring(L, s, n); return true; }
    bool open(bool array) {
        if (depth >= CODEC_JSON_MAX_DEPTH || !lua_checkstack(L, 4)) { too_deep = true; return false; }
        depth++;
        in_array[depth] = array;
        index[depth] = 0;
        lua_createtable(L, 0, 0);
        return true;
    }
    bool StartObject() { return open(false); }
    bool StartArray() { return open(true); }
    bool EndObject(rapidjson::SizeType) { depth--; return add(); }
    bool EndArray(rapidjson::SizeType n) {
        if (n == 0) {                                     /* keep [] an array */
            lua_pushvalue(L, mt);
            lua_setmetatable(L, -2);
        }
        depth--;
        return add();
    }
};

const unsigned kParseFlags = rapidjson::kParseValidateEncodingFlag | rapidjson::kParseFullPrecisionFlag |
                             rapidjson::kParseIterativeFlag | rapidjson::kParseStopWhenDoneFlag;

/* ---- encoding ------------------------------------------------------------ */

/* RapidJSON output stream appending to a codec buf. */
struct BufStream {
    typedef char Ch;
    buf *b;
    bool oom = false;
    explicit BufStream(buf *b_) : b(b_) {}
    void Put(char c) {
        if (b->len == b->cap && buf_reserve(b, 1) < 0) { oom = true; return; }
        b->data[b->len++] = c;
    }
    void Flush() {}
};

typedef rapidjson::Writer<BufStream, rapidjson::UTF8<>, rapidjson::UTF8<>, rapidjson::CrtAllocator,
                          rapidjson::kWriteValidateEncodingFlag>
    Writer;

/* Shortest text that reads back as the same double (JSON syntax: no NaN or
 * infinity reach it; -0.0 keeps its sign; plain decimals from 1e-6 to 1e21,
 * exponents outside, as JavaScript writes them). */
const double_conversion::DoubleToStringConverter shortest(
    double_conversion::DoubleToStringConverter::EMIT_POSITIVE_EXPONENT_SIGN, "Infinity", "NaN", 'e', -6, 21, 6, 0);

/* Writes d to out (NUL-terminated, < 32 bytes): an integer when it is one
 * that int64 holds (not -0.0), else the shortest round-trip form. */
int number_text(double d, char *out) {
    if (d >= -0x1p63 && d < 0x1p63 && d == std::floor(d) && !(d == 0 && std::signbit(d)))
        return snprintf(out, 32, "%lld", (long long)d);
    double_conversion::StringBuilder sb(out, 32);
    shortest.ToShortest(d, &sb);
    int n = sb.position();
    sb.Finalize();
    return n;
}

struct Encoder {
    lua_State *L;
    Writer &w;
    BufStream &os;
    char *err;
    size_t errlen;

    bool fail(const char *what) {
        snprintf(err, errlen, "cannot encode %s as JSON", what);
        return false;
    }

    bool number(double d, bool key) {
        if (!std::isfinite(d)) return fail(d != d ? "NaN" : "an infinite number");
        char t[32];
        int n = number_text(d, t);
        if (key) return w.Key(t, (rapidjson::SizeType)n);
        return w.RawValue(t, (size_t)n, rapidjson::kNumberType);
    }

    bool value(int idx, int depth) {
        switch (lua_type(L, idx)) {
        case LUA_TNIL: return w.Null();
        case LUA_TBOOLEAN: return w.Bool(lua_toboolean(L, idx));
        case LUA_TNUMBER: return number(lua_tonumber(L, idx), false);
        case LUA_TSTRING: {
            size_t n;
            const char *s = lua_tolstring(L, idx, &n);
            if (n > 0xffffffffu) return fail("a string of 4 GiB or more");
            return w.String(s, (rapidjson::SizeType)n) || fail("a string that is not valid UTF-8");
        }
        case LUA_TLIGHTUSERDATA:
            if (lua_touserdata(L, idx) == nullptr) return w.Null();        /* cjson.null */
            return fail("a userdata");
        case LUA_TTABLE: return table(idx, depth);
        default:
            snprintf(err, errlen, "cannot encode a %s as JSON", lua_typename(L, lua_type(L, idx)));
            return false;
        }
    }

    /* Stack: unchanged (pushes and pops while walking). */
    bool table(int idx, int depth) {
        if (depth >= CODEC_JSON_MAX_DEPTH) {
            snprintf(err, errlen, "cannot encode a table nested deeper than %d levels (a cycle?) as JSON",
                     CODEC_JSON_MAX_DEPTH);
            return false;
        }
        if (!lua_checkstack(L, 4)) return fail("a table nested this deep");
        size_t n = lua_objlen(L, idx), count = 0;
        bool array = true;
        lua_pushnil(L);                                            /* ... k */
        while (lua_next(L, idx)) {                                 /* ... k v */
            count++;
            if (lua_type(L, -2) != LUA_TNUMBER) array = false;
            lua_pop(L, 1);                                         /* ... k */
        }
        if (count == 0) {
            bool marked = false;
            if (lua_getmetatable(L, idx)) {                        /* ... mt */
                luaL_getmetatable(L, CODEC_ARRAY_MT);              /* ... mt array_mt */
                marked = lua_rawequal(L, -1, -2);
                lua_pop(L, 2);                                     /* ... */
            }
            return marked ? w.StartArray() && w.EndArray() : w.StartObject() && w.EndObject();
        }
        if (array && count == n) {
            if (!w.StartArray()) return false;
            for (size_t i = 1; i <= n; i++) {
                lua_rawgeti(L, idx, (int)i);                       /* ... v */
                bool ok = value(lua_gettop(L), depth + 1);
                lua_pop(L, 1);                                     /* ... */
                if (!ok) return false;
            }
            return w.EndArray();
        }
        if (!w.StartObject()) return false;
        lua_pushnil(L);                                            /* ... k */
        while (lua_next(L, idx)) {                                 /* ... k v */
            bool ok;
            int kt = lua_type(L, -2);
            if (kt == LUA_TSTRING) {
                size_t kn;
                const char *k = lua_tolstring(L, -2, &kn);         /* a string already: no conversion */
                ok = (kn <= 0xffffffffu && w.Key(k, (rapidjson::SizeType)kn)) || fail("a key that is not valid UTF-8");
            } else if (kt == LUA_TNUMBER) {
                ok = number(lua_tonumber(L, -2), true);
            } else {
                snprintf(err, errlen, "cannot encode a table key of type %s as JSON", lua_typename(L, kt));
                ok = false;
            }
            ok = ok && value(lua_gettop(L), depth + 1);
            lua_pop(L, 1);                                         /* ... k */
            if (!ok) { lua_pop(L, 1); return false; }
        }
        return w.EndObject();
    }
};

}  // namespace

extern "C" int codec_json_decode(lua_State *L, const char *s, size_t n, char *err, size_t errlen) {
    int top = lua_gettop(L);
    luaL_newmetatable(L, CODEC_ARRAY_MT);                           /* mt (created once per VM) */
    ToLua h(L, top + 1);
    rapidjson::MemoryStream ms(s, n);
    rapidjson::Reader reader;
    rapidjson::ParseResult pr = reader.Parse<kParseFlags>(ms, h);
    if (!pr) {
        if (h.too_deep) snprintf(err, errlen, "nested deeper than %d levels", CODEC_JSON_MAX_DEPTH);
        else if (pr.Code() == rapidjson::kParseErrorDocumentEmpty) snprintf(err, errlen, "no JSON value");
        else snprintf(err, errlen, "%s (at byte %zu)", rapidjson::GetParseError_En(pr.Code()), pr.Offset() + 1);
        lua_settop(L, top);
        return -1;
    }
    /* only blanks may follow the value (a NUL byte would end MemoryStream's view early) */
    for (size_t i = ms.Tell(); i < n; i++) {
        char c = s[i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            snprintf(err, errlen, "unexpected text after the JSON value (at byte %zu)", i + 1);
            lua_settop(L, top);
            return -1;
        }
    }
    if (lua_type(L, -1) == LUA_TLIGHTUSERDATA) { lua_pop(L, 1); lua_pushnil(L); }   /* a top-level null: nil */
    lua_replace(L, top + 1);                                        /* value */
    return 0;
}

extern "C" int codec_json(lua_State *L, int idx, buf *out, char *err, size_t errlen) {
    static thread_local Writer w;                  /* reused: its level stack is allocated once a thread */
    if (idx < 0) idx = lua_gettop(L) + idx + 1;
    int top = lua_gettop(L);
    size_t start = out->len;
    BufStream os(out);
    w.Reset(os);
    Encoder e{L, w, os, err, errlen};
    err[0] = 0;
    bool ok = e.value(idx, 0);
    lua_settop(L, top);
    if (ok && os.oom) { snprintf(err, errlen, "out of memory"); ok = false; }
    if (!ok) {
        if (!err[0]) snprintf(err, errlen, "cannot encode the value as JSON");
        out->len = start;
        return -1;
    }
    return 0;
}

extern "C" int codec_json_string(const char *s, size_t n, buf *out) {
    static thread_local Writer w;
    size_t start = out->len;
    BufStream os(out);
    w.Reset(os);
    if (n > 0xffffffffu || !w.String(s, (rapidjson::SizeType)n) || os.oom) {
        out->len = start;
        return -1;
    }
    return 0;
}

extern "C" void codec_utf8_scrub(lua_State *L, int idx) {
    if (idx < 0) idx = lua_gettop(L) + idx + 1;
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    if (!s) return;
    rapidjson::MemoryStream all(s, n);
    rapidjson::StringBuffer ignored;
    bool valid = true;
    while (valid && all.Tell() < n) valid = rapidjson::UTF8<>::Validate(all, ignored);
    if (valid) return;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < n;) {
        rapidjson::MemoryStream ms(s + i, n - i);
        unsigned cp;
        if (rapidjson::UTF8<>::Decode(ms, &cp) && ms.Tell() > 0) {
            luaL_addlstring(&b, s + i, ms.Tell());
            i += ms.Tell();
        } else {
            luaL_addlstring(&b, "\xEF\xBF\xBD", 3);                   /* U+FFFD */
            i++;
        }
    }
    luaL_pushresult(&b);
    lua_replace(L, idx);
}
