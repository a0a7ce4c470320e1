/* fuzz_msgpack — MessagePack decoding (codec_unpack): any input unpacks or
 * is refused, and a value that unpacked packs and unpacks again.  Run with
 * -malloc_limit_mb: a length field alone must not make it allocate. */
#include <lauxlib.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "codec.h"

static lua_State *L;

/* Closed at exit, so that what it holds (the codec's msgpack zone, which
 * only this state refers to, from LuaJIT's own mmap'd arena) is freed before
 * LeakSanitizer looks: it took that memory for a leak. */
static void close_state(void) { if (L) lua_close(L); L = NULL; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static buf out;
    char err[256];
    if (!L) { L = luaL_newstate(); atexit(close_state); }
    lua_settop(L, 0);
    long n = codec_unpack(L, (const char *)data, size, err, sizeof err);
    if (n < 0) {
        if (lua_gettop(L) != 0) abort();
        return 0;
    }
    if (n == 0 || (size_t)n > size || lua_gettop(L) != 1) abort();
    out.len = 0;
    /* NaN keys and the like cannot come out of msgpack-c; what unpacked packs */
    if (codec_pack(L, 1, &out, err, sizeof err) == 0) {
        lua_settop(L, 0);
        if (codec_unpack(L, out.data, out.len, err, sizeof err) != (long)out.len) abort();
    }
    lua_settop(L, 0);
    if (size % 64 == 0) lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}
