/* vm — one LuaJIT state: its allocator (which enforces limits.memory), the
 * module paths (lua/ of the install and the pipeline's folder), and the
 * runaway-code brake: a watchdog on another thread may call vm_interrupt(),
 * which arms a count hook from inside the VM's own thread (through a signal,
 * as LuaJIT's lua.c does), so hooks stay off on the hot path.  The sandbox
 * the user's code runs in is built by lua/eddy/sandbox.lua.  Calls LuaJIT. */
#ifndef EDDY_VM_H
#define EDDY_VM_H

#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <lua.h>

typedef struct vm vm;

typedef struct vm_opts {
    int64_t memory_limit;       /* bytes; 0 = none */
    int64_t instructions;       /* budget once the hook is armed */
    const char *lua_dir;        /* the install's lua/ folder */
    const char *pipeline_dir;   /* the user's folder (require looks only here) */
} vm_opts;

/* Returns an owned VM with the standard libraries open and package.path set,
 * or NULL with err. */
vm *vm_create(const vm_opts *o, char *err, size_t errlen);
void vm_destroy(vm *v);          /* NULL is a no-op */
/* Any thread: hands v (no longer used by anyone) to a low-priority thread
 * that closes it, so that closing it holds up no worker; NULL is a no-op.
 * vm_reap_wait returns once every VM handed over so far is closed. */
void vm_destroy_later(vm *v);
void vm_reap_wait(void);
lua_State *vm_state(vm *v);
size_t vm_memory(const vm *v);   /* bytes the VM holds now */
/* While 1, allocations ignore the limit (used while the runtime itself sets up). */
void vm_unlimited(vm *v, int on);

/* Marks the VM as running on the calling thread (before a call into Lua) and
 * clears that mark (after).  vm_interrupt needs to know the thread. */
void vm_enter(vm *v);
void vm_leave(vm *v);
/* Any thread: arms the instruction-count hook for the call running now, so
 * it fails once it passes limits.instructions.  The watchdog calls it when a
 * call overruns its soft bound. */
void vm_arm(vm *v, uint64_t call);
/* Any thread: asks the VM to abort its current call with a Lua error carrying
 * `reason`.  Takes effect at the VM's next interpreted instruction; a loop
 * the JIT compiled never sees it (the watchdog's last resort is to fail). */
/* Marks the owner moves on each record (and window firing), read by the
 * count hook on the VM's thread: once they change after vm_arm, the hook
 * goes (and the JIT comes back), so the instructions of a long call of
 * quick records are never added up as one runaway record. */
void vm_watch_progress(vm *v, const uint64_t *seq, const int32_t *cur);
void vm_interrupt(vm *v, const char *reason, uint64_t call);
/* The number of the call running now (counted by vm_enter): vm_arm and
 * vm_interrupt act only while that same call runs, so a signal that lands
 * after it ended cannot touch the next one. */
uint64_t vm_call(const vm *v);
/* The owner of the VM (the task, for crash.c) and, on this thread, the
 * owner of the VM whose call is running now (between vm_enter and
 * vm_leave), or NULL.  Async-signal-safe. */
void vm_set_owner(vm *v, void *owner);
void *vm_current_owner(void);
/* Installs the signal handler vm_interrupt relies on; once per process. */
void vm_global_init(void);

/* lua_pcall(L, nargs, nresults, 0) for building a version of the pipeline
 * (running the user's script, `eddy check`): runs on the calling thread under
 * limits.time (time_ms, of the thread's CPU time) as well as limits.memory.  The JIT is off meanwhile,
 * so a count hook sees every loop; once the time is up the hook raises an
 * error at every instruction, so a script that catches it with pcall cannot
 * go on.  Returns lua_pcall's result; on a timeout the error value is
 * "building the pipeline ran longer than N ms (limits.time)". */
int vm_pcall_bounded(vm *v, int nargs, int nresults, int64_t time_ms);

/* Reports a Lua error value at the top of the stack as a string (borrowed
 * from the stack); never NULL. */
const char *vm_errstr(lua_State *L, int idx);

#endif
