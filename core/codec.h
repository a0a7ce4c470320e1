/* codec — Lua values <-> MessagePack bytes (msgpack-c), the one encoding of
 * values that leave a VM: records crossing a shuffle, and later keyed state.
 * Integers stay integers, floats stay floats; cjson.null (a NULL lightuserdata)
 * round-trips as msgpack nil inside tables.  Calls msgpack-c and the Lua C API. */
#ifndef EDDY_CODEC_H
#define EDDY_CODEC_H

#include <stddef.h>
#include <lua.h>

/* A growable byte buffer; owned by whoever declared it. */
typedef struct buf {
    char *data;
    size_t len, cap;
} buf;

void buf_init(buf *b);
void buf_free(buf *b);                       /* frees data; b may be reused after buf_init */
int buf_reserve(buf *b, size_t extra);       /* 0, or -1 on allocation failure */
int buf_append(buf *b, const void *p, size_t n);

/* Tables nested deeper than this are refused.  It is msgpack-c's decoder limit
 * (MSGPACK_EMBED_STACK_SIZE, compiled into libmsgpackc as 32): anything deeper
 * would pack here and then fail to unpack on the far side of a shuffle. */
#define CODEC_MAX_DEPTH 32

/* Packs the Lua value at stack index idx (not popped) and appends it to out.
 * A number that is integral and fits int64 packs as an integer (except -0.0),
 * any other as float64.  A table whose keys are exactly 1..n (n >= 1) packs as
 * an array, any other table -- including the empty table -- as a map whose keys
 * are strings, numbers or booleans.  Refuses functions, userdata (except
 * cjson.null), threads, cdata, cyclic tables and nesting deeper than
 * CODEC_MAX_DEPTH: returns -1 with err ("cannot encode a function at
 * value.handler").  On error out->len is restored.  Stack unchanged. */
int codec_pack(lua_State *L, int idx, buf *out, char *err, size_t errlen);

/* Unpacks one value from data[0..len) and pushes it (stack +1).  Returns the
 * number of bytes consumed, or -1 (nothing pushed) with err on malformed data.
 * msgpack nil is nil at top level and cjson.null inside arrays and maps; bin
 * unpacks as a string; ext types, and map keys that are not strings, numbers
 * or booleans, are errors.  Keeps one msgpack zone per lua_State (in its
 * registry, freed by lua_close), so steady-state calls do not allocate in C. */
long codec_unpack(lua_State *L, const char *data, size_t len, char *err, size_t errlen);

/* ---- JSON (codec_json.cc: RapidJSON, double-conversion) ------------------
 * One decoder and one encoder for every JSON record; docs/contract.md
 * ("JSON") states the same rules for users. */

/* Containers nested deeper than this are refused by both. */
#define CODEC_JSON_MAX_DEPTH 1000

/* Encodes the Lua value at stack index idx as compact JSON text and appends
 * it to out.  A number that is integral and fits int64 (not -0.0) is written
 * as an integer; any other finite number in its shortest form that reads
 * back as the same double (0.1, 1e+300; -0.0 as -0.0); NaN and infinities are refused.
 * nil and cjson.null are null; a table with keys exactly 1..n (n >= 1) is an
 * array; an empty table is [] when it carries CODEC_ARRAY_MT (decoded from
 * []) and {} otherwise; any other table an object, whose number keys are
 * written as their text.  Strings (and keys) must be valid UTF-8.  Returns 0,
 * or -1 with err (functions, userdata, invalid UTF-8, other key types,
 * nesting deeper than CODEC_JSON_MAX_DEPTH); out->len is then restored.
 * Stack unchanged. */
int codec_json(lua_State *L, int idx, buf *out, char *err, size_t errlen);

/* The metatable that marks an empty Lua table as an empty JSON array (in the
 * registry under this name); codec_json writes such a table as []. */
#define CODEC_ARRAY_MT "eddy.array_mt"

/* Decodes one JSON value (RFC 8259; blanks around it allowed) from s[0..n)
 * and pushes it (stack +1): objects and arrays become tables, an empty array
 * gets CODEC_ARRAY_MT, null inside them is cjson.null and at the top nil;
 * every number becomes a Lua number, the double nearest to it (integers past
 * 2^53 are rounded like any other; -0 is -0.0; beyond the double range is an
 * error).
 * Refuses invalid UTF-8 (in strings and \u escapes), NaN and Infinity,
 * comments, trailing commas, text after the value and nesting deeper than
 * CODEC_JSON_MAX_DEPTH.  Returns 0, or -1 (nothing pushed) with err. */
int codec_json_decode(lua_State *L, const char *s, size_t n, char *err, size_t errlen);
/* The same with RapidJSON's reader alone (what codec_json_decode falls back
 * on, and has the last word on refusals): for tests that compare the two. */
int codec_json_decode_reader(lua_State *L, const char *s, size_t n, char *err, size_t errlen);

/* Appends s[0..n) as a JSON string literal to out.  0, or -1 (out unchanged)
 * when s is not valid UTF-8. */
int codec_json_string(const char *s, size_t n, buf *out);

/* Replaces the string at stack index idx by a copy in which every byte that
 * is not part of valid UTF-8 is U+FFFD (no-op for valid UTF-8 or a
 * non-string).  For text that must be written as JSON whatever it holds
 * (an error message quoting input). */
void codec_utf8_scrub(lua_State *L, int idx);

#endif
