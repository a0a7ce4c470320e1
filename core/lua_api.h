/* lua_api — the classic lua_CFunctions of the runtime's `native` table: the
 * calls that read or build Lua values (a record's value and headers, JSON,
 * MessagePack, keyed state values, timers due, dead letters, shuffling a
 * value to its keyed task), and the FFI exports that wrap window.c, clock
 * and the duration and date parsers (ffi_api.h).  It sees a task only
 * through a lua_api_env, so it includes no task header.  lua/eddy/ffi.lua's
 * bind_native then puts FFI calls in place of the per-record scalar ones.
 * Calls codec, state, timer, keygroup, window, clock, config and the FFI
 * exports of the task (eddy_sink_write, eddy_dead_letter). */
#ifndef EDDY_LUA_API_H
#define EDDY_LUA_API_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>
#include "codec.h"
#include "ffi_api.h"
#include "state.h"
#include "timer.h"

/* Appends a packed record to the batch for the keyed task that owns key's
 * key group, through key_by node `node` (which output_of found): task_shuffle's type. */
typedef int (*lua_api_shuffle_fn)(void *task, int node, const char *key, size_t klen, const char *p, size_t n,
                                  int64_t ts, int64_t wm, int carry);

/* What a task lends the functions of its VMs' `native` tables: borrowed, and
 * must outlive them (the task keeps it). */
typedef struct lua_api_env {
    void *task;                 /* the handle ffi_api.h's task exports take */
    eddy_io *io;                /* the batch being processed */
    buf packbuf;                /* scratch: packing, encoding */
    buf statebuf;               /* scratch: state values */
    state_key skey;             /* scratch: state keys */
    state_tx *stx;              /* keyed state, or NULL (no state store) */
    timer_index *timers;        /* its timers (NULL with stx) */
    int max_parallelism;
    int (*output_of)(void *task, int node);   /* the output of key_by node `node`, or -1 */
    lua_api_shuffle_fn shuffle;
} lua_api_env;

/* Frees the env's scratch buffers (not what it borrows). */
void lua_api_env_free(lua_api_env *e);

/* Pushes the `native` table of a VM (every entry below takes what it reads
 * from e; "FFI" marks the entries lua/eddy/ffi.lua's bind_native replaces
 * by FFI calls when their arguments have the usual types):
 *   unpack(i) headers(i) json_decode_rec(i)      record i of the batch
 *   pack(v) unpack_all(s, one) json_encode(v) json_decode(s)
 *   json_write(sink, v) dead_letter(meta[, i])   into a sink / dead letters
 *   shuffle(port, key, value, ts, wm, carry)     to the keyed task of key
 *   keygroup(key)                                FFI eddy_keygroup
 *   state_get state_put state_del state_entries  (uid, kg, key, kind, name, ...)
 *   state_mark() state_undo()                    FFI eddy_state_mark/undo
 *   dedup(uid, kg, key, ts, ttl)                 FFI eddy_dedup
 *   timer_set(uid, kg, key, kind, ts)            FFI eddy_timer_set
 *   timer_del(uid, kg, key, ts)                  FFI eddy_timer_del
 *   timers_due(uid, kind, upto) -> tss, keys
 * and what bind_native needs: state_tx, timers (lightuserdata, absent
 * without a state store) and max_parallelism.  Then calls bind_native.
 * Stack: -> native.  0, or -1 with err (the stack then has nothing pushed). */
int lua_api_push_native(lua_State *L, lua_api_env *e, char *err, size_t errlen);

/* eddy test: a value (MessagePack) sent to side output `name`, for the
 * driver's d:side(name) (test_side; implemented in task_output.c).  0, or -1 out of memory. */
int eddy_test_side(void *task, const char *name, const char *p, size_t n);

#endif
