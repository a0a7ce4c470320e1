#include "vm.h"
#include "clock.h"
#include <lauxlib.h>
#include <lualib.h>
#include <luajit.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

struct vm {
    lua_State *L;
    lua_Alloc base;              /* the allocator under the limit: LuaJIT's own, or realloc */
    void *base_ud;
    _Atomic size_t used;
    size_t limit;
    int unlimited;
    int64_t instructions;
    int64_t hook_count;          /* instructions counted since the hook was armed */
    _Atomic(pthread_t) thread;
    atomic_int running;
    char reason[256];
    atomic_int interrupt;        /* 1 once vm_interrupt asked */
    int armed;                   /* the count hook is set (VM thread only) */
    atomic_ullong calls;         /* calls so far (vm_enter) */
    atomic_ullong target;        /* the call vm_arm / vm_interrupt aimed at */
    int flushed;                 /* traces were flushed for this call */
    const uint64_t *seq;         /* the owner's progress marks (vm_watch_progress), or NULL */
    const int32_t *cur;
    uint64_t armed_seq;          /* their values when the hook was armed */
    int32_t armed_cur;
    void *owner;                 /* vm_set_owner */
    struct vm *reap_next;        /* vm_destroy_later's queue */
};

static __thread vm *current_vm;  /* the VM running on this thread, for the signal handler */

#define HOOK_STEP 1000

/* Sanitizer builds give Lua memory to malloc, where ASan can watch it. */
#if defined(__SANITIZE_ADDRESS__)
#define VM_SYSTEM_MALLOC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define VM_SYSTEM_MALLOC 1
#endif
#endif

#ifdef VM_SYSTEM_MALLOC
static void *sys_alloc(void *ud, void *p, size_t osize, size_t nsize) {
    (void)ud; (void)osize;
    if (nsize == 0) { free(p); return NULL; }
    return realloc(p, nsize);
}
#endif

/* The VM's allocator: the limit's exact accounting over v->base, which is
 * LuaJIT's own per-state allocator (a dlmalloc arena per VM, no locks) in
 * normal builds.  Only the thread running the VM allocates; others only read
 * `used` (metrics), so relaxed loads and stores do, without a locked add. */
static void *vm_alloc(void *ud, void *p, size_t osize, size_t nsize) {
    vm *v = ud;
    size_t used = atomic_load_explicit(&v->used, memory_order_relaxed);
    if (nsize == 0) {
        if (p) {
            v->base(v->base_ud, p, osize, 0);
            atomic_store_explicit(&v->used, used - osize, memory_order_relaxed);
        }
        return NULL;
    }
    size_t cur = p ? osize : 0;
    if (nsize > cur && v->limit && !v->unlimited && used + (nsize - cur) > v->limit)
        return NULL;                                  /* LuaJIT raises "not enough memory" */
    void *np = v->base(v->base_ud, p, osize, nsize);
    if (!np) return NULL;
    atomic_store_explicit(&v->used, used + nsize - cur, memory_order_relaxed);
    return np;
}

static int panic(lua_State *L) {
    fprintf(stderr, "eddy: unprotected Lua error: %s\n", vm_errstr(L, -1));
    abort();
}

vm *vm_create(const vm_opts *o, char *err, size_t errlen) {
    vm *v = calloc(1, sizeof *v);
    if (!v) { snprintf(err, errlen, "out of memory"); return NULL; }
    v->limit = o->memory_limit > 0 ? (size_t)o->memory_limit : 0;
    v->instructions = o->instructions > 0 ? o->instructions : 10000000;
    v->unlimited = 1;
#ifdef VM_SYSTEM_MALLOC
    v->base = sys_alloc;
    v->L = lua_newstate(vm_alloc, v);
#else
    v->L = luaL_newstate();                   /* LuaJIT's allocator, then the limit over it */
    if (v->L) {
        v->base = lua_getallocf(v->L, &v->base_ud);
        atomic_store(&v->used, (size_t)lua_gc(v->L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(v->L, LUA_GCCOUNTB, 0));
        lua_setallocf(v->L, vm_alloc, v);
    }
#endif
    if (!v->L) { snprintf(err, errlen, "cannot create a Lua state"); free(v); return NULL; }
    lua_atpanic(v->L, panic);
    lua_State *L = v->L;
    luaL_openlibs(L);
    /* package.path: the install's lua/ first, then the pipeline's folder */
    lua_getglobal(L, "package");                               /* package */
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s/?.lua", o->lua_dir, o->lua_dir,
                    o->pipeline_dir ? o->pipeline_dir : o->lua_dir);
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);                                             /* */
    v->unlimited = 0;
    return v;
}

void vm_destroy(vm *v) {
    if (!v) return;
    if (v->L) {
        lua_setallocf(v->L, v->base, v->base_ud);     /* so that lua_close also frees LuaJIT's arena */
        lua_close(v->L);
    }
    free(v);
}

/* ---- closing VMs on a thread of their own -------------------------------- */

/* Closing a VM (lua_close: every object, the arena, the JIT's machine code)
 * takes 1-2 ms, more under load (munmap's TLB shootdowns).  On a worker it
 * held up that worker's other tasks (a reload closes one VM per task at
 * once); the reaper thread closes them instead, at the lowest priority. */
static pthread_mutex_t reap_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t reap_cv = PTHREAD_COND_INITIALIZER;   /* a VM queued, or the queue done */
static vm *reap_head;
static int reap_busy;            /* the reaper is closing one */
static int reap_started;

static void *reaper(void *arg) {
    (void)arg;
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19);   /* (this thread only; a failure only costs speed) */
    pthread_mutex_lock(&reap_mu);
    for (;;) {
        while (!reap_head) pthread_cond_wait(&reap_cv, &reap_mu);
        vm *v = reap_head;
        reap_head = v->reap_next;
        reap_busy = 1;
        pthread_mutex_unlock(&reap_mu);
        vm_destroy(v);
        pthread_mutex_lock(&reap_mu);
        reap_busy = 0;
        pthread_cond_broadcast(&reap_cv);
    }
    return NULL;
}

void vm_destroy_later(vm *v) {
    if (!v) return;
    pthread_mutex_lock(&reap_mu);
    if (!reap_started) {
        pthread_attr_t a;
        pthread_t th;
        pthread_attr_init(&a);
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&th, &a, reaper, NULL) == 0) reap_started = 1;
        pthread_attr_destroy(&a);
    }
    if (!reap_started) {                       /* no thread: closed here, as before */
        pthread_mutex_unlock(&reap_mu);
        vm_destroy(v);
        return;
    }
    v->reap_next = reap_head;
    reap_head = v;
    pthread_cond_broadcast(&reap_cv);
    pthread_mutex_unlock(&reap_mu);
}

void vm_reap_wait(void) {
    pthread_mutex_lock(&reap_mu);
    while (reap_head || reap_busy) pthread_cond_wait(&reap_cv, &reap_mu);
    pthread_mutex_unlock(&reap_mu);
}

lua_State *vm_state(vm *v) { return v->L; }
size_t vm_memory(const vm *v) { return atomic_load(&((vm *)v)->used); }
void vm_unlimited(vm *v, int on) { v->unlimited = on; }

static void hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    vm *v = current_vm;
    if (!v) return;
    if (v->seq && (*v->seq != v->armed_seq || *v->cur != v->armed_cur)) {
        /* the call went on to another record (or firing): it is not a runaway */
        lua_sethook(L, NULL, 0, 0);
        v->armed = 0;
        if (v->flushed) luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_ON);
        v->flushed = 0;
        return;
    }
    if (!v->flushed) {
        /* First hook after arming: drop the VM's compiled traces (as jit.flush()
         * does from Lua; a hook runs at the same kind of safe point) so the rest
         * of the runaway call is interpreted, and so counted. */
        v->flushed = 1;
        luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);   /* no new traces either */
        luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_FLUSH);
    }
    v->hook_count += HOOK_STEP;
    if (atomic_load(&v->target) != atomic_load(&v->calls)) {   /* meant for an earlier call */
        lua_sethook(L, NULL, 0, 0);
        v->armed = 0;
        atomic_store(&v->interrupt, 0);
        return;
    }
    if (atomic_load(&v->interrupt) || v->hook_count >= v->instructions) {
        lua_sethook(L, NULL, 0, 0);
        v->armed = 0;
        int timed_out = atomic_exchange(&v->interrupt, 0);
        if (!timed_out)
            lua_pushfstring(L, "used more than %d instructions (limits.instructions)", (int)v->instructions);
        else
            lua_pushstring(L, v->reason);
        lua_error(L);
    }
}

static void on_signal(int sig) {
    (void)sig;
    vm *v = current_vm;
    if (v && atomic_load(&v->running) && !v->armed && atomic_load(&v->target) == atomic_load(&v->calls)) {
        v->armed = 1;
        v->flushed = 0;
        v->hook_count = 0;
        if (v->seq) { v->armed_seq = *v->seq; v->armed_cur = *v->cur; }
        lua_sethook(v->L, hook, LUA_MASKCOUNT, HOOK_STEP);
    }
}

void vm_global_init(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR2, &sa, NULL);
}

void vm_enter(vm *v) {
    atomic_fetch_add(&v->calls, 1);
    current_vm = v;
    atomic_store(&v->thread, pthread_self());
    atomic_store(&v->interrupt, 0);
    v->reason[0] = 0;
    atomic_store(&v->running, 1);
}

void vm_leave(vm *v) {
    atomic_store(&v->running, 0);
    if (v->armed) lua_sethook(v->L, NULL, 0, 0);
    if (v->flushed) luaJIT_setmode(v->L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_ON);
    v->armed = 0;
    v->flushed = 0;
    atomic_store(&v->interrupt, 0);
    current_vm = NULL;
}

void vm_set_owner(vm *v, void *owner) { v->owner = owner; }
void *vm_current_owner(void) { return current_vm ? current_vm->owner : NULL; }

uint64_t vm_call(const vm *v) { return atomic_load(&((vm *)v)->calls); }

void vm_arm(vm *v, uint64_t call) {
    if (!atomic_load(&v->running) || atomic_load(&v->calls) != call) return;
    atomic_store(&v->target, call);
    pthread_kill(atomic_load(&v->thread), SIGUSR2);
}

void vm_watch_progress(vm *v, const uint64_t *seq, const int32_t *cur) {
    v->seq = seq;
    v->cur = cur;
}

void vm_interrupt(vm *v, const char *reason, uint64_t call) {
    if (!atomic_load(&v->running) || atomic_load(&v->calls) != call) return;
    snprintf(v->reason, sizeof v->reason, "%s", reason);
    atomic_store(&v->target, call);
    atomic_store(&v->interrupt, 1);
    pthread_kill(atomic_load(&v->thread), SIGUSR2);
}

const char *vm_errstr(lua_State *L, int idx) {
    const char *s = lua_tostring(L, idx);
    if (s) return s;
    if (lua_isnil(L, idx)) return "nil";
    return luaL_typename(L, idx);
}

/* ---- building a version under limits.time ------------------------------- */

static __thread int64_t build_deadline;   /* this thread's CPU time in ms; the bounded call on this thread */
static __thread int64_t build_limit;
static __thread int build_expired;
static __thread char build_where[300];    /* " (at pipeline.lua:4)": where the time ran out */

/* A build is bounded by the CPU time it computes (clock_cpu_ms), not by
 * how busy the machine is. */
static int64_t thread_cpu_ms(void) { return clock_cpu_ms(CLOCK_THREAD_CPUTIME_ID); }

static void build_hook(lua_State *L, lua_Debug *ar) {
    if (!build_expired && thread_cpu_ms() < build_deadline) return;
    if (!build_expired) {
        build_expired = 1;
        build_where[0] = 0;
        if (lua_getinfo(L, "Sl", ar) && ar->currentline > 0)
            snprintf(build_where, sizeof build_where, " (at %s:%d)", ar->short_src, ar->currentline);
        lua_sethook(L, build_hook, LUA_MASKCOUNT, 1);   /* from now on: every instruction fails */
    }
    lua_pushfstring(L, "building the pipeline ran longer than %d ms (limits.time)%s", (int)build_limit, build_where);
    lua_error(L);
}

int vm_pcall_bounded(vm *v, int nargs, int nresults, int64_t time_ms) {
    lua_State *L = v->L;
    build_limit = time_ms > 0 ? time_ms : 1000;
    build_deadline = thread_cpu_ms() + build_limit;
    build_expired = 0;
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_FLUSH);
    lua_sethook(L, build_hook, LUA_MASKCOUNT, HOOK_STEP);
    int rc = lua_pcall(L, nargs, nresults, 0);
    lua_sethook(L, NULL, 0, 0);
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_ON);
    if (rc != 0 && build_expired) {
        /* the error may have passed through the script's own handlers (or
         * become "error in error handling"): say what happened */
        lua_pop(L, 1);
        lua_pushfstring(L, "building the pipeline ran longer than %d ms (limits.time)%s", (int)build_limit, build_where);
    }
    build_expired = 0;
    return rc;
}
