/* codec_json — JSON text <-> Lua values, the one JSON codec of the data path
 * (json sources and sinks, dead letters).  Decoding parses a record with
 * simdjson and builds the Lua value from its document; what simdjson
 * refuses (and the few records it reads differently) goes to RapidJSON's
 * SAX reader, straight into Lua tables, which has the last word on every
 * refusal and its message; encoding
 * walks the Lua value into RapidJSON's writer, with numbers that are not
 * integers written by double-conversion's shortest round-trip formatter.
 * The rules are in codec.h and docs/contract.md ("JSON"). */
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <vector>

/* SSE2 is in every x86-64: RapidJSON then scans strings 16 bytes at a time */
#if defined(__x86_64__) && !defined(RAPIDJSON_SSE2)
#define RAPIDJSON_SSE2
#endif
#include <double-conversion/double-to-string.h>
#include <double-conversion/string-to-double.h>
#include <rapidjson/error/en.h>
#include <rapidjson/internal/itoa.h>
#include <rapidjson/memorystream.h>
#include <rapidjson/reader.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <simdjson.h>

extern "C" {
#include "codec.h"
#include <lauxlib.h>
}

namespace {

/* ---- decoding ------------------------------------------------------------ */

const double_conversion::StringToDoubleConverter number_reader(
    double_conversion::StringToDoubleConverter::NO_FLAGS, 0.0, NAN, nullptr, nullptr);

/* An output stream that drops what it gets (for validating only). */
struct NullStream {
    typedef char Ch;
    void Put(char) {}
};

/* 1 when s[0..n) is valid UTF-8.  Text is mostly ASCII: eight bytes at a
 * time are checked for a high bit, and only a string that has one is
 * walked by RapidJSON's UTF-8 validator. */
bool valid_utf8(const char *s, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        if (w & 0x8080808080808080ull) break;
    }
    for (; i < n && !(s[i] & 0x80); i++) {}
    if (i == n) return true;
    rapidjson::MemoryStream ms(s + i, n - i);
    NullStream sink;
    while (ms.Tell() < n - i)
        if (!rapidjson::UTF8<>::Validate(ms, sink)) return false;
    return true;
}

/* The SAX handler.  The members of an open container wait on the Lua stack
 * (object: k1 v1 k2 v2 ..., array: v1 v2 ...) until it ends; then its table
 * is made at its final size at once (no rehash as it grows) and takes them.
 * Stack: [members of level 1]  [members of level 2] ...  */
struct ToLua : rapidjson::BaseReaderHandler<rapidjson::UTF8<>, ToLua> {
    lua_State *L;
    int depth = 0;
    bool too_deep = false, bad_utf8 = false, too_big = false;
    int base[CODEC_JSON_MAX_DEPTH + 1];  /* stack top when each open container started */

    explicit ToLua(lua_State *L_) : L(L_) {}

    int spare = 0;                       /* stack slots known free above the top */
    /* room for the next value (and the copies EndObject makes): asked of
     * LuaJIT 64 slots at a time */
    bool room() {
        if (--spare > 4) return true;
        if (!lua_checkstack(L, 64)) { too_deep = true; return false; }
        spare = 64;
        return true;
    }
    bool Null() { if (!room()) return false; lua_pushlightuserdata(L, nullptr); return true; }   /* cjson.null */
    bool Bool(bool b) { if (!room()) return false; lua_pushboolean(L, b); return true; }
    /* Numbers arrive as their text (kParseNumbersAsStringsFlag: RapidJSON
     * checks the syntax) and double-conversion rounds them correctly:
     * RapidJSON 1.1.0's own full-precision path misreads "0e300". */
    bool RawNumber(const char *s, rapidjson::SizeType n, bool) {
        double d;
        if (n <= 16 && !memchr(s, '.', n) && !memchr(s, 'e', n) && !memchr(s, 'E', n)) {
            /* an integer below 10^16: int64 holds it, and its conversion to
             * double rounds to nearest (s is NUL-terminated here) */
            long long i = strtoll(s, nullptr, 10);
            d = i == 0 && s[0] == '-' ? -0.0 : (double)i;
        } else {
            int used = 0;
            d = number_reader.StringToDouble(s, (int)n, &used);
            if (!std::isfinite(d) || used != (int)n) { too_big = true; return false; }
        }
        if (!room()) return false;
        lua_pushnumber(L, d);
        return true;
    }
    bool String(const char *s, rapidjson::SizeType n, bool) {
        if (!valid_utf8(s, n)) { bad_utf8 = true; return false; }
        if (!room()) return false;
        lua_pushlstring(L, s, n);
        return true;
    }
    bool Key(const char *s, rapidjson::SizeType n, bool copy) { return String(s, n, copy); }
    bool open() {
        if (depth >= CODEC_JSON_MAX_DEPTH) { too_deep = true; return false; }
        base[++depth] = lua_gettop(L);
        return true;
    }
    bool StartObject() { return open(); }
    bool StartArray() { return open(); }
    bool EndObject(rapidjson::SizeType n) {
        int b = base[depth--];
        lua_createtable(L, 0, (int)n);                       /* b: k1 v1 ... t */
        if (n == 0) return true;                             /* b: t */
        for (int k = b + 1; k < b + 2 * (int)n; k += 2) {
            lua_pushvalue(L, k);
            lua_pushvalue(L, k + 1);
            lua_rawset(L, -3);
        }
        lua_replace(L, b + 1);                               /* b: t v1 ... */
        lua_settop(L, b + 1);                                /* b: t */
        return true;
    }
    bool EndArray(rapidjson::SizeType n) {
        int b = base[depth--];
        lua_createtable(L, (int)n, 0);                       /* b: v1 ... t */
        for (int k = 1; k <= (int)n; k++) {
            lua_pushvalue(L, b + k);
            lua_rawseti(L, -2, k);
        }
        if (n == 0) {                                        /* keep [] an array */
            luaL_newmetatable(L, CODEC_ARRAY_MT);            /* b: t mt (made once per VM) */
            lua_setmetatable(L, -2);
            return true;                                     /* b: t */
        }
        lua_replace(L, b + 1);
        lua_settop(L, b + 1);                                /* b: t */
        return true;
    }
};

/* (UTF-8 is checked in ToLua::String, faster for mostly-ASCII text than
 * kParseValidateEncodingFlag, with RapidJSON's validator all the same) */
const unsigned kParseFlags = rapidjson::kParseNumbersAsStringsFlag |
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
 * infinity reach it; plain decimals from 1e-6 to 1e21, exponents outside,
 * as JavaScript writes them). */
const double_conversion::DoubleToStringConverter shortest(
    double_conversion::DoubleToStringConverter::EMIT_POSITIVE_EXPONENT_SIGN, "Infinity", "NaN", 'e', -6, 21, 6, 0);

/* Writes d to out (NUL-terminated, < 32 bytes): an integer when it is one
 * that int64 holds (not -0.0), else the shortest round-trip form. */
int number_text(double d, char *out) {
    if (d >= -0x1p63 && d < 0x1p63 && d == std::floor(d) && !(d == 0 && std::signbit(d))) {
        char *e = rapidjson::internal::i64toa((int64_t)d, out);
        *e = 0;
        return (int)(e - out);
    }
    if (d == 0) {                       /* -0.0: "-0" would read back as the integer 0 */
        memcpy(out, "-0.0", 5);
        return 4;
    }
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
        if (!key && d >= -0x1p63 && d < 0x1p63 && d == (double)(int64_t)d && !(d == 0 && std::signbit(d)))
            return w.Int64((int64_t)d);
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
        if (n == 0) {
            /* no array part: an object, or empty; written in one pass */
            if (lua_next(L, idx)) return object(idx, depth, true);  /* ... k v */
        } else {
            while (lua_next(L, idx)) {                             /* ... k v */
                count++;
                if (lua_type(L, -2) != LUA_TNUMBER) array = false;
                lua_pop(L, 1);                                     /* ... k */
            }
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
        lua_pushnil(L);                                            /* ... k */
        if (!lua_next(L, idx)) return w.StartObject() && w.EndObject();
        return object(idx, depth, true);
    }

    /* Writes table idx as an object; with `started` its first pair is
     * already pushed.  Stack: ... k v -> ... */
    bool object(int idx, int depth, bool started) {
        if (!w.StartObject()) { lua_pop(L, 2); return false; }
        while (started || lua_next(L, idx)) {                      /* ... k v */
            started = false;
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

/* ---- decoding with simdjson ---------------------------------------------- */

/* The records simdjson would read differently from the reader, left to
 * it: a UTF-8 byte-order mark first (the reader refuses it; simdjson 3.6
 * and later skip it), a number "-0" (not "-0.5", not "-0e1"), which simdjson reads as the
 * integer 0 and loses its sign (the reader gives -0.0), and a number whose
 * exponent is over 308 ("0e500", "0.001e310"), which the reader refuses as
 * too big whatever its mantissa and simdjson reads when the value fits.
 * Both are looked for anywhere, strings included: a false alarm only
 * costs the slower reader. */
bool needs_reader(const char *s, size_t n) {
    const char *e = s + n;
    if (n >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0) return true;   /* a byte-order mark: newer simdjson skips it */
    for (const char *p = (const char *)memchr(s, '-', n); p && p + 1 < e;
         p = (const char *)memchr(p + 1, '-', (size_t)(e - p - 1))) {
        if (p[1] != '0') continue;
        char c = p + 2 < e ? p[2] : ' ';
        if (c != '.' && c != 'e' && c != 'E' && !(c >= '0' && c <= '9')) return true;
    }
    for (char x : { 'e', 'E' }) {
        for (const char *p = (const char *)memchr(s, x, n); p; p = (const char *)memchr(p + 1, x, (size_t)(e - p - 1))) {
            if (p == s || !(p[-1] >= '0' && p[-1] <= '9')) { if (p + 1 >= e) break; continue; }
            const char *q = p + 1;
            if (q < e && (*q == '+' || *q == '-')) q++;
            long v = 0;
            for (; q < e && *q >= '0' && *q <= '9'; q++) if ((v = v * 10 + (*q - '0')) > 308) return true;
            if (p + 1 >= e) break;
        }
    }
    return false;
}

/* Pushes element x (at nesting depth: containers around it) as the reader
 * would.  false (the stack then to be reset by the caller): nested deeper
 * than CODEC_JSON_MAX_DEPTH or no Lua stack, for the reader to refuse. */
bool push_element(lua_State *L, simdjson::dom::element x, int depth) {
    using T = simdjson::dom::element_type;
    switch (x.type()) {
    case T::OBJECT: {
        if (depth >= CODEC_JSON_MAX_DEPTH || !lua_checkstack(L, 4)) return false;
        simdjson::dom::object o = x.get_object().value_unsafe();
        lua_createtable(L, 0, (int)o.size());
        for (simdjson::dom::key_value_pair kv : o) {
            lua_pushlstring(L, kv.key.data(), kv.key.size());
            if (!push_element(L, kv.value, depth + 1)) return false;
            lua_rawset(L, -3);                  /* a key seen twice: the last one wins, as in the reader */
        }
        return true;
    }
    case T::ARRAY: {
        if (depth >= CODEC_JSON_MAX_DEPTH || !lua_checkstack(L, 4)) return false;
        simdjson::dom::array a = x.get_array().value_unsafe();
        lua_createtable(L, (int)a.size(), 0);
        int i = 0;
        for (simdjson::dom::element v : a) {
            if (!push_element(L, v, depth + 1)) return false;
            lua_rawseti(L, -2, ++i);
        }
        if (i == 0) {                           /* keep [] an array */
            luaL_newmetatable(L, CODEC_ARRAY_MT);
            lua_setmetatable(L, -2);
        }
        return true;
    }
    case T::INT64: lua_pushnumber(L, (lua_Number)x.get_int64().value_unsafe()); return true;
    case T::UINT64: lua_pushnumber(L, (lua_Number)x.get_uint64().value_unsafe()); return true;
    case T::DOUBLE: lua_pushnumber(L, x.get_double().value_unsafe()); return true;
    case T::STRING: {
        std::string_view v = x.get_string().value_unsafe();
        lua_pushlstring(L, v.data(), v.size());
        return true;
    }
    case T::BOOL: lua_pushboolean(L, x.get_bool().value_unsafe()); return true;
    case T::NULL_VALUE:
        if (depth > 0) lua_pushlightuserdata(L, nullptr);   /* cjson.null */
        else lua_pushnil(L);
        return true;
    }
    return false;
}

/* simdjson's parser keeps its buffers from record to record (one a
 * thread, ~15 bytes for each byte of the largest record it read); a
 * record past this size goes to the reader instead, so that one huge
 * record does not keep megabytes. */
thread_local simdjson::dom::parser simd_parser;
const size_t SIMD_MAX = 64 << 10;

/* 1 when simdjson decoded s[0..n) (the value pushed), 0 when the reader
 * must (nothing pushed). */
int simd_decode(lua_State *L, const char *s, size_t n) {
    if (n > SIMD_MAX || needs_reader(s, n)) return 0;
    simdjson::dom::element root;
    if (simd_parser.parse(s, n).get(root) != simdjson::SUCCESS) return 0;
    int top = lua_gettop(L);
    if (!lua_checkstack(L, 2) || !push_element(L, root, 0)) { lua_settop(L, top); return 0; }
    return 1;
}

extern "C" int codec_json_decode(lua_State *L, const char *s, size_t n, char *err, size_t errlen) {
    if (simd_decode(L, s, n)) return 0;
    return codec_json_decode_reader(L, s, n, err, errlen);
}

extern "C" int codec_json_decode_reader(lua_State *L, const char *s, size_t n, char *err, size_t errlen) {
    int top = lua_gettop(L);
    ToLua h(L);
    /* A NUL-terminated copy with 16 zero bytes after it: RapidJSON's SIMD
     * string scan reads whole aligned 16-byte blocks. */
    static thread_local std::vector<char> copy;
    if (copy.size() < n + 17) copy.resize(n + 17 + 256);
    memcpy(copy.data(), s, n);
    memset(copy.data() + n, 0, 17);
    rapidjson::StringStream ms(copy.data());
    static thread_local rapidjson::Reader reader;                   /* keeps its string stack */
    rapidjson::ParseResult pr = reader.Parse<kParseFlags>(ms, h);
    size_t end = ms.Tell();
    if (copy.size() > ((size_t)1 << 20)) std::vector<char>().swap(copy);   /* a huge record's copy goes */
    if (!pr) {
        if (h.too_big) snprintf(err, errlen, "a number beyond the range of a double (at byte %zu)", pr.Offset() + 1);
        else if (h.bad_utf8) snprintf(err, errlen, "a string that is not valid UTF-8 (at byte %zu)", pr.Offset() + 1);
        else if (h.too_deep) snprintf(err, errlen, "nested deeper than %d levels", CODEC_JSON_MAX_DEPTH);
        else if (pr.Code() == rapidjson::kParseErrorDocumentEmpty) snprintf(err, errlen, "no JSON value");
        else snprintf(err, errlen, "%s (at byte %zu)", rapidjson::GetParseError_En(pr.Code()), pr.Offset() + 1);
        lua_settop(L, top);
        return -1;
    }
    /* only blanks may follow the value (a NUL byte ends StringStream's view early) */
    for (size_t i = end; i < n; i++) {
        char c = s[i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            snprintf(err, errlen, "unexpected text after the JSON value (at byte %zu)", i + 1);
            lua_settop(L, top);
            return -1;
        }
    }
    if (lua_type(L, -1) == LUA_TLIGHTUSERDATA) { lua_pop(L, 1); lua_pushnil(L); }   /* a top-level null: nil */
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
