/* fuzz_json — the JSON codec (core/codec_json.cc): any input decodes or is
 * refused with an error, never crashes; a value that decoded encodes, and
 * its encoding decodes again to a value whose encoding has the same length
 * (key order may differ between the two tables, nothing else may). */
#include <assert.h>
#include <lauxlib.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

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
    lua_settop(L, 0);
    if (codec_json_decode(L, (const char *)data, size, err, sizeof err) < 0) {
        assert(lua_gettop(L) == 0);
        return 0;
    }
    assert(lua_gettop(L) == 1);
    a.len = b.len = 0;
    if (codec_json(L, 1, &a, err, sizeof err) < 0) fail("encode", err);   /* what decoded must encode */
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
