/* test_codec — core/codec.c: Lua values <-> MessagePack.  Pins down the
 * encoding choices (integers vs floats, arrays vs maps, the empty table as an
 * empty map, cjson.null as nil inside tables), the refusals and their path
 * messages, and that error paths leave the Lua stack and the buffer as they
 * were.  Each test makes its own lua_State. */
#include "test.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lualib.h>

#include "codec.h"

/* deep_eq(a, b): structural equality; NaN equals NaN; lightuserdata (cjson.null)
 * compares by pointer, as Lua does. */
static const char deep_eq_src[] =
    "function deep_eq(a, b)\n"
    "  if type(a) ~= type(b) then return false end\n"
    "  if type(a) == 'number' then return a == b or (a ~= a and b ~= b) end\n"
    "  if type(a) ~= 'table' then return a == b end\n"
    "  for k, v in pairs(a) do if not deep_eq(v, b[k]) then return false end end\n"
    "  for k in pairs(b) do if a[k] == nil then return false end end\n"
    "  return true\n"
    "end\n"
    "null = require('cjson').null\n";

static lua_State *new_state(void)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    if (luaL_dostring(L, deep_eq_src) != 0) {
        printf("  setup failed: %s\n", lua_tostring(L, -1));
        abort();
    }
    return L;
}

/* Pushes the value of a Lua expression (stack +1). */
static void push_expr(lua_State *L, const char *expr)
{
    char src[4096];
    snprintf(src, sizeof src, "return %s", expr);
    if (luaL_loadstring(L, src) != 0 || lua_pcall(L, 0, 1, 0) != 0) {
        printf("  bad expression %s: %s\n", expr, lua_tostring(L, -1));
        abort();
    }
}

/* Packs expr into b (appending); returns codec_pack's result. */
static int pack_expr(lua_State *L, const char *expr, buf *b, char *err, size_t errlen)
{
    int rc;
    push_expr(L, expr);
    rc = codec_pack(L, -1, b, err, errlen);
    lua_pop(L, 1);
    return rc;
}

/* Packs expr, unpacks the bytes, and returns deep_eq(original, copy); checks
 * the stack is balanced and every byte was consumed. */
static int roundtrip(lua_State *L, const char *expr)
{
    buf b;
    char err[256] = "";
    int top = lua_gettop(L), ok = 0;
    long n;

    buf_init(&b);
    push_expr(L, expr);                                 /* v */
    if (codec_pack(L, -1, &b, err, sizeof err) != 0 || lua_gettop(L) != top + 1) {
        printf("  pack %s failed: %s\n", expr, err);
        goto out;
    }
    n = codec_unpack(L, b.data, b.len, err, sizeof err);  /* v copy */
    if (n != (long)b.len || lua_gettop(L) != top + 2) {
        printf("  unpack %s failed: %ld of %zu: %s\n", expr, n, b.len, err);
        goto out;
    }
    lua_getglobal(L, "deep_eq");                        /* v copy eq */
    lua_insert(L, -3);                                  /* eq v copy */
    lua_call(L, 2, 1);                                  /* ok */
    ok = lua_toboolean(L, -1);
    if (!ok)
        printf("  %s did not round-trip\n", expr);
out:
    lua_settop(L, top);
    buf_free(&b);
    return ok;
}

/* The bytes expr packs to, as lowercase hex, in out. */
static const char *hex_of(lua_State *L, const char *expr, char *out, size_t outlen)
{
    buf b;
    char err[256];
    size_t i;

    buf_init(&b);
    out[0] = 0;
    if (pack_expr(L, expr, &b, err, sizeof err) != 0) {
        snprintf(out, outlen, "error: %s", err);
    } else {
        for (i = 0; i < b.len && 2 * i + 2 < outlen; i++)
            snprintf(out + 2 * i, 3, "%02x", (unsigned char)b.data[i]);
    }
    buf_free(&b);
    return out;
}

#define CHECK_HEX(L, expr, hex) do { char h_[512]; CHECK_STR(hex_of((L), (expr), h_, sizeof h_), (hex)); } while (0)

/* Packs expr into a buffer that already holds bytes, expects failure with
 * exactly msg, and checks the stack and the buffer's length are unchanged. */
static void expect_pack_error(lua_State *L, const char *expr, const char *msg)
{
    buf b;
    char err[256] = "";
    int top;

    buf_init(&b);
    buf_append(&b, "prefix", 6);
    push_expr(L, expr);
    lua_pushinteger(L, 7);                              /* v 7: a slot above v */
    top = lua_gettop(L);
    CHECK(codec_pack(L, -2, &b, err, sizeof err) == -1);
    CHECK_STR(err, msg);
    CHECK(lua_gettop(L) == top);
    CHECK(lua_tointeger(L, -1) == 7);
    CHECK(b.len == 6 && memcmp(b.data, "prefix", 6) == 0);
    lua_pop(L, 2);
    buf_free(&b);
}

/* Unpacks n bytes, expects -1 with an error and nothing pushed. */
static int unpack_fails(lua_State *L, const char *data, size_t n, char *err, size_t errlen)
{
    int top = lua_gettop(L);
    long rc;

    err[0] = 0;
    rc = codec_unpack(L, data, n, err, errlen);
    return rc == -1 && lua_gettop(L) == top && err[0] != 0;
}

/* ---- buf ---------------------------------------------------------------- */

TEST(buf_append_grows_and_buf_free_allows_reuse)
{
    buf b;
    int i;

    buf_init(&b);
    CHECK(b.data == NULL && b.len == 0 && b.cap == 0);
    for (i = 0; i < 1000; i++)
        CHECK(buf_append(&b, "abc", 3) == 0);
    CHECK(b.len == 3000 && b.cap >= 3000);
    CHECK(memcmp(b.data + 2997, "abc", 3) == 0);
    CHECK(buf_append(&b, NULL, 0) == 0 && b.len == 3000);
    buf_free(&b);
    CHECK(b.data == NULL && b.len == 0);
    CHECK(buf_append(&b, "x", 1) == 0 && b.len == 1);
    CHECK(buf_reserve(&b, 100) == 0 && b.cap - b.len >= 100);
    CHECK(buf_reserve(&b, SIZE_MAX) == -1);
    buf_free(&b);
    buf_free(NULL);
}

/* ---- scalars ------------------------------------------------------------ */

TEST(integral_numbers_pack_as_msgpack_integers)
{
    lua_State *L = new_state();
    CHECK_HEX(L, "0", "00");
    CHECK_HEX(L, "3", "03");
    CHECK_HEX(L, "127", "7f");
    CHECK_HEX(L, "128", "cc80");
    CHECK_HEX(L, "-1", "ff");
    CHECK_HEX(L, "-32", "e0");
    CHECK_HEX(L, "-129", "d1ff7f");
    CHECK_HEX(L, "65536", "ce00010000");
    CHECK_HEX(L, "2^53", "cf0020000000000000");
    CHECK_HEX(L, "-2^53", "d3ffe0000000000000");
    CHECK_HEX(L, "-2^63", "d38000000000000000");
    CHECK_HEX(L, "3.0", "03");                          /* Lua has one number type */
    lua_close(L);
}

TEST(non_integral_and_special_numbers_pack_as_float64)
{
    lua_State *L = new_state();
    CHECK_HEX(L, "3.5", "cb400c000000000000");
    CHECK_HEX(L, "-0.5", "cbbfe0000000000000");
    CHECK_HEX(L, "-0.0", "cb8000000000000000");
    CHECK_HEX(L, "1/0", "cb7ff0000000000000");
    CHECK_HEX(L, "-1/0", "cbfff0000000000000");
    CHECK_HEX(L, "2^63", "cb43e0000000000000");     /* integral but beyond int64 */
    CHECK_HEX(L, "2^64", "cb43f0000000000000");
    {
        char h[64];
        hex_of(L, "0/0", h, sizeof h);
        CHECK(strncmp(h, "cb", 2) == 0 && strlen(h) == 18);
    }
    lua_close(L);
}

TEST(numbers_round_trip_with_integers_integral_and_floats_exact)
{
    lua_State *L = new_state();
    const char *exprs[] = { "0", "3", "-1", "3.5", "-2.25", "2^53", "-2^53", "2^53 + 2",
                            "2^63", "-2^63", "2^31", "-2^31", "4294967295", "1e300",
                            "-1e-300", "0.1", "1/0", "-1/0", "0/0" };
    size_t i;

    for (i = 0; i < sizeof exprs / sizeof *exprs; i++)
        CHECK(roundtrip(L, exprs[i]));

    /* -0.0 keeps its sign. */
    {
        buf b;
        char err[64];
        buf_init(&b);
        CHECK(pack_expr(L, "-0.0", &b, err, sizeof err) == 0);
        CHECK(codec_unpack(L, b.data, b.len, err, sizeof err) == 9);
        CHECK(lua_tonumber(L, -1) == 0 && signbit(lua_tonumber(L, -1)));
        lua_pop(L, 1);
        buf_free(&b);
    }
    /* A msgpack uint64 and a float64 3.0 both decode to the Lua number 3 / 2^64-1. */
    {
        char err[64];
        CHECK(codec_unpack(L, "\xcb\x40\x08\x00\x00\x00\x00\x00\x00", 9, err, sizeof err) == 9);
        CHECK(lua_tonumber(L, -1) == 3.0);
        CHECK(codec_unpack(L, "\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 9, err, sizeof err) == 9);
        CHECK(lua_tonumber(L, -1) == 18446744073709551615.0);
        CHECK(codec_unpack(L, "\xca\x40\x60\x00\x00", 5, err, sizeof err) == 5);  /* float32 3.5 */
        CHECK(lua_tonumber(L, -1) == 3.5);
        lua_pop(L, 3);
    }
    lua_close(L);
}

TEST(nil_booleans_and_strings_round_trip)
{
    lua_State *L = new_state();
    char err[64];

    CHECK_HEX(L, "nil", "c0");
    CHECK_HEX(L, "true", "c3");
    CHECK_HEX(L, "false", "c2");
    CHECK_HEX(L, "'abc'", "a3616263");
    CHECK_HEX(L, "''", "a0");
    CHECK_HEX(L, "'a\\0b'", "a3610062");
    CHECK(roundtrip(L, "true"));
    CHECK(roundtrip(L, "false"));
    CHECK(roundtrip(L, "''"));
    CHECK(roundtrip(L, "'\\0\\0\\255\\1'"));
    CHECK(roundtrip(L, "string.rep('x', 70000)"));     /* str32 */
    CHECK(roundtrip(L, "string.rep('y', 300)"));       /* str16 */

    /* Top-level nil unpacks as nil, not cjson.null. */
    CHECK(codec_unpack(L, "\xc0", 1, err, sizeof err) == 1);
    CHECK(lua_gettop(L) == 1 && lua_isnil(L, -1));
    lua_pop(L, 1);

    /* Strings with NUL bytes keep every byte. */
    {
        buf b;
        size_t n;
        const char *s;
        buf_init(&b);
        CHECK(pack_expr(L, "'a\\0b\\0'", &b, err, sizeof err) == 0);
        CHECK(codec_unpack(L, b.data, b.len, err, sizeof err) == 5);
        s = lua_tolstring(L, -1, &n);
        CHECK(n == 4 && memcmp(s, "a\0b\0", 4) == 0);
        lua_pop(L, 1);
        buf_free(&b);
    }
    lua_close(L);
}

TEST(msgpack_bin_unpacks_as_a_lua_string)
{
    lua_State *L = new_state();
    char err[64];
    size_t n;
    const char *s;

    CHECK(codec_unpack(L, "\xc4\x03x\0y", 5, err, sizeof err) == 5);
    s = lua_tolstring(L, -1, &n);
    CHECK(lua_type(L, -1) == LUA_TSTRING && n == 3 && memcmp(s, "x\0y", 3) == 0);
    lua_close(L);
}

/* ---- tables ------------------------------------------------------------- */

TEST(tables_with_keys_exactly_1_to_n_pack_as_arrays)
{
    lua_State *L = new_state();
    CHECK_HEX(L, "{1, 2, 3}", "93010203");
    CHECK_HEX(L, "{'a'}", "91a161");
    CHECK_HEX(L, "{[1]='a', [2]='b'}", "92a161a162");
    CHECK_HEX(L, "{[2]='b', [1]='a'}", "92a161a162");
    CHECK_HEX(L, "{{}, {1}}", "928091" "01");
    lua_close(L);
}

TEST(other_tables_pack_as_maps_and_the_empty_table_as_an_empty_map)
{
    lua_State *L = new_state();
    char h[512];

    CHECK_HEX(L, "{}", "80");
    CHECK_HEX(L, "{a = 1}", "81a16101");
    CHECK_HEX(L, "{[2] = 'x'}", "8102a178");            /* does not start at 1 */
    CHECK_HEX(L, "{[0] = 'x'}", "8100a178");
    CHECK_HEX(L, "{[1.5] = true}", "81cb3ff8000000000000c3");
    CHECK_HEX(L, "{[true] = false}", "81c3c2");
    /* A hole makes a map, whatever the array part looks like. */
    hex_of(L, "{1, 2, nil, 4}", h, sizeof h);
    CHECK(h[0] == '8' && h[1] == '3');
    hex_of(L, "{1, 2, x = 3}", h, sizeof h);
    CHECK(h[0] == '8' && h[1] == '3');
    lua_close(L);
}

TEST(nested_tables_round_trip)
{
    lua_State *L = new_state();
    CHECK(roundtrip(L, "{}"));
    CHECK(roundtrip(L, "{1, 2, 3}"));
    CHECK(roundtrip(L, "{1, 2, nil, 4}"));
    CHECK(roundtrip(L, "{[-1] = 'neg', [0] = 'zero', [1] = 'one', [2^40] = 'big', [0.5] = 'half'}"));
    CHECK(roundtrip(L, "{name = 'x', list = {1, 2.5, {a = true, b = {}}}, "
                       "m = {[1.5] = 'f', [true] = false, ['a b'] = {'\\0'}}}"));
    CHECK(roundtrip(L, "{user = {id = 42, tags = {'a', 'b'}, score = -3.25}, ts = 1700000000123}"));
    {
        char expr[256];
        snprintf(expr, sizeof expr, "(function() local t = {} for i = 1, 20000 do t[i] = i * 1.5 end return t end)()");
        CHECK(roundtrip(L, expr));                      /* array32 and extra zone chunks */
        CHECK(roundtrip(L, "{1, {2, {3}}}"));           /* then a small one again */
    }
    lua_close(L);
}

TEST(shared_subtables_that_are_not_cycles_are_allowed)
{
    lua_State *L = new_state();
    CHECK(roundtrip(L, "(function() local s = {1} return {a = s, b = s, c = {s, s}} end)()"));
    lua_close(L);
}

TEST(cjson_null_inside_tables_round_trips_and_packs_as_nil)
{
    lua_State *L = new_state();
    char err[64];

    CHECK_HEX(L, "null", "c0");
    CHECK_HEX(L, "{1, null, 3}", "9301c003");
    CHECK_HEX(L, "{a = null}", "81a161c0");
    CHECK(roundtrip(L, "{1, null, 3}"));
    CHECK(roundtrip(L, "{null}"));
    CHECK(roundtrip(L, "{a = null, b = {null, {c = null}}}"));

    /* msgpack nil in an array / map value pushes a NULL lightuserdata. */
    CHECK(codec_unpack(L, "\x92\xc0\x01", 3, err, sizeof err) == 3);
    lua_rawgeti(L, -1, 1);
    CHECK(lua_type(L, -1) == LUA_TLIGHTUSERDATA && lua_touserdata(L, -1) == NULL);
    lua_pop(L, 2);
    CHECK(codec_unpack(L, "\x81\xa1k\xc0", 4, err, sizeof err) == 4);
    lua_getfield(L, -1, "k");
    CHECK(lua_type(L, -1) == LUA_TLIGHTUSERDATA && lua_touserdata(L, -1) == NULL);
    lua_pop(L, 2);
    CHECK(lua_gettop(L) == 0);
    lua_close(L);
}

TEST(nesting_up_to_the_limit_packs_and_unpacks)
{
    lua_State *L = new_state();
    char expr[512];

    /* CODEC_MAX_DEPTH tables deep: { { ... {1} ... } } */
    snprintf(expr, sizeof expr,
             "(function() local t = {1} for i = 2, %d do t = {t} end return t end)()", CODEC_MAX_DEPTH);
    CHECK(roundtrip(L, expr));
    snprintf(expr, sizeof expr,
             "(function() local t = {x = 1} for i = 2, %d do t = {k = t} end return t end)()", CODEC_MAX_DEPTH);
    CHECK(roundtrip(L, expr));
    lua_close(L);
}

TEST(pack_accepts_negative_and_absolute_indices_and_leaves_the_stack)
{
    lua_State *L = new_state();
    buf a, b;
    char err[64];

    buf_init(&a);
    buf_init(&b);
    push_expr(L, "{x = {1, 2}}");
    lua_pushnil(L);
    CHECK(codec_pack(L, -2, &a, err, sizeof err) == 0);
    CHECK(codec_pack(L, 1, &b, err, sizeof err) == 0);
    CHECK(lua_gettop(L) == 2 && lua_istable(L, 1) && lua_isnil(L, 2));
    CHECK(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);
    /* Packing appends. */
    CHECK(codec_pack(L, 2, &a, err, sizeof err) == 0);
    CHECK(a.len == b.len + 1 && (unsigned char)a.data[b.len] == 0xc0);
    buf_free(&a);
    buf_free(&b);
    lua_close(L);
}

/* ---- pack errors -------------------------------------------------------- */

TEST(pack_refuses_functions_naming_the_path)
{
    lua_State *L = new_state();
    expect_pack_error(L, "print", "cannot encode a function at value");
    expect_pack_error(L, "{handler = function() end}", "cannot encode a function at value.handler");
    expect_pack_error(L, "{1, 2, {x = print}}", "cannot encode a function at value[3].x");
    expect_pack_error(L, "{a = {b = {{}, {c = {print}}}}}", "cannot encode a function at value.a.b[2].c[1]");
    expect_pack_error(L, "{['a b'] = {f = print}}", "cannot encode a function at value[\"a b\"].f");
    expect_pack_error(L, "{[2.5] = {[true] = print}}", "cannot encode a function at value[2.5][true]");
    expect_pack_error(L, "{[7] = print}", "cannot encode a function at value[7]");
    lua_close(L);
}

TEST(pack_refuses_userdata_threads_and_cdata)
{
    lua_State *L = new_state();
    expect_pack_error(L, "io.stdout", "cannot encode a userdata at value");
    expect_pack_error(L, "{f = io.stdout}", "cannot encode a userdata at value.f");
    expect_pack_error(L, "{co = coroutine.create(print)}", "cannot encode a thread at value.co");
    expect_pack_error(L, "{n = require('ffi').new('int', 1)}", "cannot encode a cdata at value.n");
    expect_pack_error(L, "{1ULL}", "cannot encode a cdata at value[1]");

    /* A lightuserdata that is not NULL is not cjson.null. */
    lua_pushlightuserdata(L, (void *)L);
    lua_setglobal(L, "lud");
    expect_pack_error(L, "{x = lud}", "cannot encode a userdata at value.x");
    lua_close(L);
}

TEST(pack_refuses_cyclic_tables)
{
    lua_State *L = new_state();
    expect_pack_error(L, "(function() local t = {} t.self = t return t end)()",
                      "cannot encode a cyclic table at value.self");
    expect_pack_error(L, "(function() local t = {a = {b = {}}} t.a.b[1] = t.a return t end)()",
                      "cannot encode a cyclic table at value.a.b[1]");
    lua_close(L);
}

TEST(pack_refuses_tables_nested_too_deep)
{
    lua_State *L = new_state();
    char expr[256], msg[512], path[512];
    int i;

    snprintf(expr, sizeof expr,
             "(function() local t = {} for i = 1, %d do t = {t} end return t end)()", CODEC_MAX_DEPTH);
    strcpy(path, "value");
    for (i = 0; i < CODEC_MAX_DEPTH; i++)
        strcat(path, "[1]");
    snprintf(msg, sizeof msg, "cannot encode a table nested deeper than %d levels at %s", CODEC_MAX_DEPTH, path);
    expect_pack_error(L, expr, msg);

    /* Far deeper (and with a cycle-free chain) fails the same way, not by crashing. */
    expect_pack_error(L, "(function() local t = {} for i = 1, 10000 do t = {t} end return t end)()", msg);
    lua_close(L);
}

TEST(pack_refuses_non_scalar_map_keys)
{
    lua_State *L = new_state();
    expect_pack_error(L, "{[{}] = 1}", "cannot encode a table as a map key at value");
    expect_pack_error(L, "{x = {[print] = 1}}", "cannot encode a function as a map key at value.x");
    expect_pack_error(L, "{x = {[null] = 1}}", "cannot encode a userdata as a map key at value.x");
    lua_close(L);
}

TEST(pack_errors_tolerate_a_null_or_tiny_err_buffer)
{
    lua_State *L = new_state();
    buf b;
    char err[8];

    buf_init(&b);
    push_expr(L, "{handler = print}");
    CHECK(codec_pack(L, -1, &b, NULL, 0) == -1);
    CHECK(codec_pack(L, -1, &b, err, sizeof err) == -1);
    CHECK_STR(err, "cannot ");
    CHECK(b.len == 0 && lua_gettop(L) == 1);
    buf_free(&b);
    lua_close(L);
}

/* ---- unpack errors ------------------------------------------------------ */

TEST(unpack_of_every_truncation_fails_and_pushes_nothing)
{
    lua_State *L = new_state();
    buf b;
    char err[256];
    size_t n;

    buf_init(&b);
    CHECK(pack_expr(L, "{name = 'abcdef', list = {1, 2.5, {a = true}}, big = 2^40, s = string.rep('z', 300)}",
                    &b, err, sizeof err) == 0);
    lua_pushinteger(L, 99);
    for (n = 0; n < b.len; n++)
        CHECK(unpack_fails(L, b.data, n, err, sizeof err));
    CHECK(lua_gettop(L) == 1 && lua_tointeger(L, -1) == 99);
    CHECK(strstr(err, "truncated") != NULL);
    CHECK(codec_unpack(L, b.data, b.len, err, sizeof err) == (long)b.len);
    lua_settop(L, 0);
    buf_free(&b);
    lua_close(L);
}

/* A length field alone must not make the decoder allocate: an array32 or
 * map32 header claiming 4 billion entries in a 5-byte input is refused
 * before msgpack-c would allocate room for them. */
TEST(unpack_refuses_lengths_that_claim_more_than_the_bytes_there_are)
{
    lua_State *L = new_state();
    char err[256];

    CHECK(unpack_fails(L, "\xdd\xff\xff\xff\xff", 5, err, sizeof err));        /* array32 */
    CHECK(strstr(err, "claims more than") != NULL);
    CHECK(unpack_fails(L, "\xdf\x7f\xff\xff\xff", 5, err, sizeof err));        /* map32 */
    CHECK(strstr(err, "claims more than") != NULL);
    CHECK(unpack_fails(L, "\x91\xdd\x00\x01\x00\x00\x01", 7, err, sizeof err)); /* nested, 65536 claimed */
    CHECK(strstr(err, "claims more than") != NULL);
    CHECK(unpack_fails(L, "\xc6\xff\xff\xff\xff" "ab", 7, err, sizeof err));      /* bin32 */
    CHECK(unpack_fails(L, "\x92\xdc\x00\x02\x01\x02", 6, err, sizeof err));     /* 3 claimed, 2 there */
    CHECK(codec_unpack(L, "\x92\xdc\x00\x01\x01\x02", 6, err, sizeof err) == 6);  /* [[1], 2] fits exactly */
    lua_pop(L, 1);
    lua_close(L);
}

TEST(unpack_refuses_malformed_bytes_ext_types_and_bad_map_keys)
{
    lua_State *L = new_state();
    char err[256];
    char deep[64];

    CHECK(unpack_fails(L, "", 0, err, sizeof err));
    CHECK(unpack_fails(L, "\xc1", 1, err, sizeof err));              /* never-used byte */
    CHECK(unpack_fails(L, "\x92\x01\xc1", 3, err, sizeof err));
    CHECK(unpack_fails(L, "\xd4\x01\x00", 3, err, sizeof err));      /* fixext1 */
    CHECK(strstr(err, "ext type 1") != NULL);
    CHECK(unpack_fails(L, "\x91\xc7\x01\x05x", 5, err, sizeof err)); /* ext8 in an array */
    CHECK(unpack_fails(L, "\x81\x90\x01", 3, err, sizeof err));      /* array as a key */
    CHECK_STR(err, "cannot decode a map key of msgpack type array");
    CHECK(unpack_fails(L, "\x81\xc0\x01", 3, err, sizeof err));      /* nil as a key */
    CHECK(unpack_fails(L, "\x81\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00\x01", 11, err, sizeof err)); /* NaN key */
    CHECK(unpack_fails(L, "\x82\xa1k\x01\xa1j", 5, err, sizeof err)); /* truncated map */

    /* Deeper than msgpack-c's decoder goes. */
    memset(deep, 0x91, CODEC_MAX_DEPTH + 1);
    deep[CODEC_MAX_DEPTH + 1] = 0x01;
    CHECK(unpack_fails(L, deep, CODEC_MAX_DEPTH + 2, err, sizeof err));
    CHECK(codec_unpack(L, deep + 1, CODEC_MAX_DEPTH + 1, err, sizeof err) == CODEC_MAX_DEPTH + 1);
    lua_pop(L, 1);

    /* A NULL err buffer is tolerated. */
    CHECK(codec_unpack(L, "\xc1", 1, NULL, 0) == -1);
    CHECK(lua_gettop(L) == 0);
    lua_close(L);
}

TEST(unpack_consumes_one_value_and_reports_its_length)
{
    lua_State *L = new_state();
    buf b;
    char err[64];
    long n;

    buf_init(&b);
    CHECK(pack_expr(L, "{1, 2}", &b, err, sizeof err) == 0);
    CHECK(pack_expr(L, "'tail'", &b, err, sizeof err) == 0);
    n = codec_unpack(L, b.data, b.len, err, sizeof err);
    CHECK(n == 3);
    CHECK(lua_istable(L, -1) && lua_objlen(L, -1) == 2);
    CHECK(codec_unpack(L, b.data + n, b.len - (size_t)n, err, sizeof err) == 5);
    CHECK_STR(lua_tostring(L, -1), "tail");
    CHECK(lua_gettop(L) == 2);
    buf_free(&b);
    lua_close(L);
}

/* ---- the hot path ------------------------------------------------------- */

TEST(repeated_pack_unpack_reuses_buffers_and_stays_balanced)
{
    lua_State *L = new_state();
    buf b;
    char err[128];
    int i, ok = 1;

    buf_init(&b);
    push_expr(L, "{user = 'u-42', n = 7, price = 9.99, tags = {'a', 'b', null}, meta = {}}");
    for (i = 0; i < 20000 && ok; i++) {
        b.len = 0;
        ok = codec_pack(L, 1, &b, err, sizeof err) == 0 &&
             codec_unpack(L, b.data, b.len, err, sizeof err) == (long)b.len &&
             lua_gettop(L) == 2;
        lua_settop(L, 1);
    }
    CHECK(ok);
    CHECK(b.cap < 256);
    buf_free(&b);
    lua_close(L);
}

TEST(codec_works_in_two_states_and_after_a_state_is_closed)
{
    lua_State *L1 = new_state(), *L2 = new_state();
    CHECK(roundtrip(L1, "{a = {1, 2}}"));
    CHECK(roundtrip(L2, "{b = {3, null}}"));
    lua_close(L1);
    CHECK(roundtrip(L2, "{c = 'x'}"));
    lua_close(L2);
}

/* ---- JSON (codec_json.cc) ----------------------------------------------- */

/* Decodes text, encodes the result, and compares with want (NULL: decoding
 * must fail, with an error containing err_has). */
static int json_round(lua_State *L, const char *text, const char *want, const char *err_has)
{
    char err[256];
    buf b;
    int ok;
    int top = lua_gettop(L);

    buf_init(&b);
    err[0] = 0;
    if (codec_json_decode(L, text, strlen(text), err, sizeof err) < 0) {
        ok = !want && lua_gettop(L) == top && (!err_has || strstr(err, err_has));
        if (!ok) printf("  %s: refused (%s)\n", text, err);
        return ok;
    }
    ok = want && codec_json(L, -1, &b, err, sizeof err) == 0 && b.len == strlen(want) &&
         memcmp(b.data, want, b.len) == 0;
    if (!ok) printf("  %s: got %.*s (%s), want %s\n", text, (int)b.len, b.data ? b.data : "", err,
                    want ? want : "a refusal");
    lua_settop(L, top);
    buf_free(&b);
    return ok;
}

TEST(json_decodes_and_encodes_by_one_set_of_rules)
{
    lua_State *L = new_state();

    CHECK(json_round(L, "{\"a\":[]}", "{\"a\":[]}", NULL));                 /* [] stays an array */
    CHECK(json_round(L, "{\"a\":{}}", "{\"a\":{}}", NULL));                 /* an empty object kept */
    CHECK(json_round(L, "[{},{\"b\":{}},[]]", "[{},{\"b\":{}},[]]", NULL));
    CHECK(json_round(L, " [1, 2.5, \"x\", true, null] ", "[1,2.5,\"x\",true,null]", NULL));
    CHECK(json_round(L, "0.1", "0.1", NULL));                                /* shortest round trip */
    CHECK(json_round(L, "1.2345678901234567", "1.2345678901234567", NULL));
    CHECK(json_round(L, "9007199254740993", "9007199254740992", NULL));      /* past 2^53: rounded */
    CHECK(json_round(L, "18446744073709551616", "18446744073709552000", NULL));
    CHECK(json_round(L, "1e300", "1e+300", NULL));
    CHECK(json_round(L, "0e300", "0", NULL));
    CHECK(json_round(L, "-0", "-0.0", NULL));
    CHECK(json_round(L, "1E2", "100", NULL));
    CHECK(json_round(L, "\"\\u00e9\\ud83d\\ude00/\"", "\"\xc3\xa9\xf0\x9f\x98\x80/\"", NULL));
    CHECK(json_round(L, "\"a\\u0000b\"", "\"a\\u0000b\"", NULL));
    CHECK(json_round(L, "1e400", NULL, "too big"));
    CHECK(json_round(L, "\"\xff\"", NULL, "UTF-8"));
    CHECK(json_round(L, "\"\\ud800\"", NULL, NULL));                         /* a lone surrogate */
    CHECK(json_round(L, "NaN", NULL, NULL));
    CHECK(json_round(L, "[1,]", NULL, NULL));
    CHECK(json_round(L, "{} x", NULL, "after the JSON value"));
    CHECK(json_round(L, "", NULL, "no JSON value"));
    lua_close(L);
}

/* Decodes text both ways: through codec_json_decode (simdjson, falling
 * back on the reader) and through RapidJSON's reader alone.  1 when both
 * refuse, or both give deep-equal values. */
static int json_ways_agree(lua_State *L, const char *text, size_t n)
{
    char e1[256], e2[256];
    int top = lua_gettop(L);
    int a = codec_json_decode(L, text, n, e1, sizeof e1);
    int b = codec_json_decode_reader(L, text, n, e2, sizeof e2);
    int ok;
    if (a < 0 || b < 0) {
        ok = a < 0 && b < 0 && lua_gettop(L) == top && strcmp(e1, e2) == 0;
    } else {
        lua_getglobal(L, "deep_eq");
        lua_pushvalue(L, -3);
        lua_pushvalue(L, -3);
        lua_call(L, 2, 1);
        ok = lua_toboolean(L, -1) && lua_gettop(L) == top + 3;
        if (ok) {                               /* -0 and 0 are equal to deep_eq: the signs too */
            int na = lua_type(L, -3) == LUA_TNUMBER, nb = lua_type(L, -2) == LUA_TNUMBER;
            if (na && nb) ok = signbit(lua_tonumber(L, -3)) == signbit(lua_tonumber(L, -2));
        }
    }
    if (!ok) printf("  %.*s: %s / %s\n", (int)n, text, a < 0 ? e1 : "decoded", b < 0 ? e2 : "decoded");
    lua_settop(L, top);
    return ok;
}

static unsigned json_seed = 7;
static unsigned json_rand(unsigned n) { json_seed = json_seed * 1103515245u + 12345u; return (json_seed >> 8) % n; }

/* Appends a random JSON value (sometimes a slightly wrong one) to b. */
static void random_json(buf *b, int depth)
{
    static const char *atoms[] = { "0", "-0", "-0.0", "1", "-1", "12", "9007199254740993", "18446744073709551615",
        "18446744073709551616", "123456789012345678901234", "-9223372036854775808", "-9223372036854775809", "0.1",
        "1.5e3", "1E-7", "-2.5e+10", "1e308", "1e309", "1e-400", "4.9e-324", "0e300", "01", "1.", "true", "false",
        "null", "nul", "\"\"", "\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\"", "\"\\u00e9\\u20ac\\ud83d\\ude00\"",
        "\"\\ud800\"", "\"\\udc00x\"", "\"a\\u0000b\"", "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"", "\"\xff\"",
        "\"\xc3\"", "\"\xed\xa0\x80\"", "\"x\ty\"", "\"2024-01-05\"", "\"a-0,b\"", "-", "[]", "{}" };
    int k = depth > 6 ? 0 : (int)json_rand(10);
    const char *ws = json_rand(4) == 0 ? " \n" : "";
    buf_append(b, ws, strlen(ws));
    if (k < 6) {
        const char *a = atoms[json_rand(sizeof atoms / sizeof atoms[0])];
        buf_append(b, a, strlen(a));
    } else if (k < 8) {
        int n = (int)json_rand(5);
        buf_append(b, "[", 1);
        for (int i = 0; i < n; i++) { if (i) buf_append(b, ",", 1); random_json(b, depth + 1); }
        if (json_rand(40) == 0) buf_append(b, ",", 1);          /* a trailing comma: refused */
        buf_append(b, "]", 1);
    } else {
        int n = (int)json_rand(5);
        buf_append(b, "{", 1);
        for (int i = 0; i < n; i++) {
            char key[16];
            snprintf(key, sizeof key, "\"k%u\":", json_rand(4));  /* keys repeat: the last one wins */
            if (i) buf_append(b, ",", 1);
            buf_append(b, key, strlen(key));
            random_json(b, depth + 1);
        }
        buf_append(b, "}", 1);
    }
    buf_append(b, ws, strlen(ws));
}

TEST(json_simdjson_and_the_reader_agree)
{
    lua_State *L = new_state();
    const char *env = getenv("JSON_SEED");               /* another sequence: JSON_SEED=N */
    if (env) json_seed = (unsigned)atoi(env);
    static const char *texts[] = { "-0", "[-0]", "{\"a\":-0}", "[-0,1]", "-0 ", "\"-0\"", "[\"a-0\",-0.5]", "0",
        "{\"a\":1,\"a\":2}", "[[[[[[[[[[1]]]]]]]]]]", "{\"a\":[{},[],null]}", "null", " null ", "[null]",
        "{\"a\":1}\n", "{\"a\":1}x", "{\"a\":1}\0", "\xef\xbb\xbf{}", "[1,2", "", "   ", "\"\\u0041\"", "1e400",
        "-1e400", "[1e-400]", "18446744073709551616", "{\"\xff\":1}" };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) CHECK(json_ways_agree(L, texts[i], strlen(texts[i])));
    CHECK(json_ways_agree(L, "{\"a\":1}\0", 8));               /* a NUL byte after the value */
    /* nesting at the limit and past it */
    buf d;
    buf_init(&d);
    for (int depth = CODEC_JSON_MAX_DEPTH - 1; depth <= CODEC_JSON_MAX_DEPTH + 1; depth++) {
        d.len = 0;
        for (int i = 0; i < depth; i++) buf_append(&d, "[", 1);
        for (int i = 0; i < depth; i++) buf_append(&d, "]", 1);
        CHECK(json_ways_agree(L, d.data, d.len));
    }
    /* random values, and the same with a byte changed */
    int bad = 0;
    for (int i = 0; i < 20000 && bad < 5; i++) {
        d.len = 0;
        random_json(&d, 0);
        if (!json_ways_agree(L, d.data, d.len)) bad++;
        if (d.len && json_rand(2)) {
            d.data[json_rand((unsigned)d.len)] = (char)json_rand(256);
            if (!json_ways_agree(L, d.data, d.len)) bad++;
        }
    }
    CHECK(bad == 0);
    buf_free(&d);
    lua_close(L);
}

TEST(json_encode_refuses_what_json_cannot_hold)
{
    lua_State *L = new_state();
    char err[256];
    buf b;

    buf_init(&b);
    push_expr(L, "{ x = 0/0 }");
    CHECK(codec_json(L, -1, &b, err, sizeof err) < 0 && strstr(err, "NaN") && b.len == 0);
    lua_pop(L, 1);
    push_expr(L, "{ 'a\255' }");
    CHECK(codec_json(L, -1, &b, err, sizeof err) < 0 && strstr(err, "UTF-8"));
    lua_pop(L, 1);
    push_expr(L, "{ f = print }");
    CHECK(codec_json(L, -1, &b, err, sizeof err) < 0 && strstr(err, "function"));
    lua_pop(L, 1);
    CHECK(luaL_dostring(L, "local t = {} t.t = t return t") == 0);               /* a cycle */
    CHECK(codec_json(L, -1, &b, err, sizeof err) < 0 && strstr(err, "deeper"));
    lua_pop(L, 1);
    push_expr(L, "{ [1.5] = 1, [2] = 2 }");                                     /* number keys */
    CHECK(codec_json(L, -1, &b, err, sizeof err) == 0);
    CHECK((b.len == 15 && memcmp(b.data, "{\"1.5\":1,\"2\":2}", 15) == 0) ||
          (b.len == 15 && memcmp(b.data, "{\"2\":2,\"1.5\":1}", 15) == 0));
    lua_pop(L, 1);
    buf_free(&b);
    lua_close(L);
}

int main(void)
{
    RUN(buf_append_grows_and_buf_free_allows_reuse);
    RUN(integral_numbers_pack_as_msgpack_integers);
    RUN(non_integral_and_special_numbers_pack_as_float64);
    RUN(numbers_round_trip_with_integers_integral_and_floats_exact);
    RUN(nil_booleans_and_strings_round_trip);
    RUN(msgpack_bin_unpacks_as_a_lua_string);
    RUN(tables_with_keys_exactly_1_to_n_pack_as_arrays);
    RUN(other_tables_pack_as_maps_and_the_empty_table_as_an_empty_map);
    RUN(nested_tables_round_trip);
    RUN(shared_subtables_that_are_not_cycles_are_allowed);
    RUN(cjson_null_inside_tables_round_trips_and_packs_as_nil);
    RUN(nesting_up_to_the_limit_packs_and_unpacks);
    RUN(pack_accepts_negative_and_absolute_indices_and_leaves_the_stack);
    RUN(pack_refuses_functions_naming_the_path);
    RUN(pack_refuses_userdata_threads_and_cdata);
    RUN(pack_refuses_cyclic_tables);
    RUN(pack_refuses_tables_nested_too_deep);
    RUN(pack_refuses_non_scalar_map_keys);
    RUN(pack_errors_tolerate_a_null_or_tiny_err_buffer);
    RUN(unpack_of_every_truncation_fails_and_pushes_nothing);
    RUN(unpack_refuses_malformed_bytes_ext_types_and_bad_map_keys);
    RUN(unpack_consumes_one_value_and_reports_its_length);
    RUN(unpack_refuses_lengths_that_claim_more_than_the_bytes_there_are);
    RUN(json_decodes_and_encodes_by_one_set_of_rules);
    RUN(json_simdjson_and_the_reader_agree);
    RUN(json_encode_refuses_what_json_cannot_hold);
    RUN(repeated_pack_unpack_reuses_buffers_and_stays_balanced);
    RUN(codec_works_in_two_states_and_after_a_state_is_closed);
    return TEST_END();
}
