#include "vm.h"
#include "clock.h"
#include <lauxlib.h>
#include <lualib.h>
#include <luajit.h>
#include <limits.h>
#include <signal.h>
#include <sys/stat.h>
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

/* ---- the runtime's modules, compiled once per process ------------------- */

/* Every VM (the plan's and each task's, at start and at every reload)
 * requires the runtime: parsing its ~3,500 lines took half of a task VM's
 * build (2.2 of 4.2 ms), on the event loop's thread.  So a module found in
 * the install's lua/ folder is compiled once and its bytecode (with its
 * debug info: names and lines stay in errors) kept for the next VMs, keyed
 * by the file's path and checked against its size, mtime and inode, so an
 * edited file is compiled again.  Only the install's folder: the pipeline's
 * own modules are read by the sandbox, and stay so. */
typedef struct code_entry {
    char *path;
    struct stat st;
    char *bc;
    size_t len;
    struct code_entry *next;
} code_entry;

static pthread_mutex_t code_mu = PTHREAD_MUTEX_INITIALIZER;
static code_entry *code_cache;

typedef struct { char *p; size_t n, cap; } dump_buf;

static int dump_writer(lua_State *L, const void *p, size_t sz, void *ud) {
    (void)L;
    dump_buf *b = ud;
    if (b->n + sz > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16384;
        while (cap < b->n + sz) cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) return 1;
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->n, p, sz);
    b->n += sz;
    return 0;
}

static int same_file(const struct stat *a, const struct stat *b) {
    return a->st_ino == b->st_ino && a->st_dev == b->st_dev && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* Stack: +1, the chunk (0) or an error message (-1). */
static int load_cached(lua_State *L, const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) { lua_pushfstring(L, "cannot read %s", path); return -1; }
    pthread_mutex_lock(&code_mu);
    for (code_entry *e = code_cache; e; e = e->next) {
        if (strcmp(e->path, path) != 0 || !same_file(&e->st, &st)) continue;
        char chunk[PATH_MAX + 1];
        snprintf(chunk, sizeof chunk, "@%s", path);
        int rc = luaL_loadbuffer(L, e->bc, e->len, chunk);
        pthread_mutex_unlock(&code_mu);
        return rc == 0 ? 0 : -1;
    }
    pthread_mutex_unlock(&code_mu);
    if (luaL_loadfile(L, path) != 0) return -1;             /* chunk|err */
    dump_buf b = { 0 };
    if (lua_dump(L, dump_writer, &b) != 0) { free(b.p); return 0; }   /* (not kept: loaded from source next time too) */
    code_entry *e = calloc(1, sizeof *e);
    if (e) e->path = strdup(path);
    if (!e || !e->path) { if (e) free(e); free(b.p); return 0; }
    e->st = st;
    e->bc = b.p;
    e->len = b.n;
    pthread_mutex_lock(&code_mu);
    code_entry **pe = &code_cache;                         /* an older copy of the same file goes */
    while (*pe && strcmp((*pe)->path, path) != 0) pe = &(*pe)->next;
    if (*pe) {
        code_entry *old = *pe;
        *pe = old->next;
        free(old->path); free(old->bc); free(old);
    }
    e->next = code_cache;
    code_cache = e;
    pthread_mutex_unlock(&code_mu);
    return 0;
}

/* package.loaders[2], before Lua's own file searcher: finds the module on
 * package.path as that searcher would, and loads it from the cache when the
 * file is in the install's folder (upvalue 1, with a trailing '/'). */
static int runtime_searcher(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    const char *dir = lua_tostring(L, lua_upvalueindex(1));
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    const char *path = lua_tostring(L, -1);
    if (!path || !dir) return 0;
    char file[PATH_MAX], mod[PATH_MAX];
    size_t nl = strlen(name);
    if (nl >= sizeof mod) return 0;
    for (size_t i = 0; i <= nl; i++) mod[i] = name[i] == '.' ? '/' : name[i];
    for (const char *t = path; *t;) {
        const char *end = strchr(t, ';');
        size_t tl = end ? (size_t)(end - t) : strlen(t);
        size_t n = 0;
        int fits = 1;
        for (size_t i = 0; i < tl && fits; i++) {
            const char *add = t[i] == '?' ? mod : (const char[]){ t[i], 0 };
            size_t al = strlen(add);
            if (n + al >= sizeof file) fits = 0;
            else { memcpy(file + n, add, al); n += al; }
        }
        t += tl + (end ? 1 : 0);
        if (!fits || n == 0) continue;
        file[n] = 0;
        if (access(file, R_OK) != 0) continue;
        /* the first file Lua's searcher would load: ours only in the install's folder */
        if (strncmp(file, dir, strlen(dir)) != 0) return 0;
        if (load_cached(L, file) != 0)
            return luaL_error(L, "error loading module '%s' from file '%s':\n\t%s", name, file, lua_tostring(L, -1));
        return 1;
    }
    return 0;
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
    lua_getfield(L, -1, "loaders");                            /* package loaders */
    int nl = (int)lua_objlen(L, -1);
    for (int i = nl; i >= 2; i--) {                            /* runtime_searcher goes second */
        lua_rawgeti(L, -1, i);
        lua_rawseti(L, -2, i + 1);
    }
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/", o->lua_dir);
    lua_pushstring(L, dir);
    lua_pushcclosure(L, runtime_searcher, 1);
    lua_rawseti(L, -2, 2);
    lua_pop(L, 2);                                             /* */
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
