/* lua_api — every function Lua calls into: the FFI exports of ffi_api.h
 * (sink writes, dead letters, logging) and the classic lua_CFunctions that
 * shape Lua values (unpacking a record's value, shuffling a record to its
 * keyed task).  Calls codec, keygroup, channel, sink and log. */
#ifndef EDDY_LUA_API_H
#define EDDY_LUA_API_H

#include <lua.h>

struct task;

/* Pushes the `native` table for a task: { shuffle = fn, unpack = fn }. */
void lua_api_push_native(lua_State *L, struct task *t);
/* Moves every partly filled output batch of t into its channel. */
int lua_api_flush_outputs(struct task *t);
/* Frees what the task knows of its timers (task_destroy). */
void lua_api_free_timer_books(struct task *t);

#endif
