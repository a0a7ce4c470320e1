/* fuzz_json — the JSON codec (core/codec_json.cc): any input decodes or is
 * refused with an error, never crashes; simdjson's way and RapidJSON's
 * reader alone agree (both refuse with the same message, or both decode to
 * values with the same encoding); a value that decoded encodes, and its
 * encoding decodes again to a value whose encoding has the same length
 * (key order may differ between the two tables, nothing else may). */
#include <assert.h>
#include <lauxlib.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

static void fail(const char *what, const char *err)
{
    fprintf(stderr, "fuzz_json: %s: %s\n", what, err);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static lua_State *L;
    static buf a, b;
    char err[256];
    if (!L) L = luaL_newstate();
    char err2[256];
    lua_settop(L, 0);
    int reader = codec_json_decode_reader(L, (const char *)data, size, err2, sizeof err2);
    lua_settop(L, 0);
    if (codec_json_decode(L, (const char *)data, size, err, sizeof err) < 0) {
        assert(lua_gettop(L) == 0);
        if (reader == 0) fail("refused, where the reader alone decodes it", err);
        if (strcmp(err, err2) != 0) fail("refused with another message than the reader's", err);
        return 0;
    }
    if (reader < 0) fail("decoded, where the reader alone refuses it", err2);
    assert(lua_gettop(L) == 1);
    a.len = b.len = 0;
    if (codec_json(L, 1, &a, err, sizeof err) < 0) fail("encode", err);   /* what decoded must encode */
    lua_settop(L, 0);
    if (codec_json_decode_reader(L, (const char *)data, size, err, sizeof err) < 0) fail("the reader", err);
    if (codec_json(L, 1, &b, err, sizeof err) < 0) fail("encode the reader's", err);
    if (a.len != b.len) {
        fprintf(stderr, "fuzz_json: the two ways differ: %.*s vs %.*s\n", (int)a.len, a.data, (int)b.len, b.data);
        abort();
    }
    b.len = 0;
    lua_settop(L, 0);
    if (codec_json_decode(L, (const char *)data, size, err, sizeof err) < 0) fail("decode again", err);
    lua_settop(L, 0);
    if (codec_json_decode(L, a.data, a.len, err, sizeof err) < 0) fail("decode of the encoding", err);
    if (codec_json(L, 1, &b, err, sizeof err) < 0) fail("second encode", err);
    if (a.len != b.len) {
        fprintf(stderr, "fuzz_json: encodings differ: %.*s vs %.*s\n", (int)a.len, a.data, (int)b.len, b.data);
        abort();
    }
    lua_settop(L, 0);
    if (size % 64 == 0) lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}
