#include "task_impl.h"
#include "log.h"
#include "lua_api.h"
#include "timer.h"
#include "sink.h"
#include "source.h"
#include "acks.h"
#include "vm.h"
#include "window.h"
#include "clock.h"
#include "replay.h"
#include "kafka.h"
#include "keygroup.h"
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <time.h>

sched_entry *task_sched_entry(task *t) { return &t->se; }

#define TICK_MS 10   /* processing-time triggers are checked this often */

/* On the event loop's thread: whether the poll timer should wake this task
 * (it reads the task's source, never t->cur, which the worker swaps). */
int task_pollable(const task *t) {
    int ticks = __atomic_load_n(&t->wants_ticks, __ATOMIC_RELAXED);   /* (a build sets it, on another thread) */
    if (t->source < 0) return ticks;
    return (t->src && source_live(t->src)) || ticks ||
           (t->sh->nboot > 0 && !atomic_load(&t->sh->boot_open));     /* waiting for the bootstrap */
}

/* On the event loop's thread: t->cur is the worker's to swap (swap_version),
 * so it is read under swap_mu. */
int task_version(const task *t) {
    pthread_mutex_lock((pthread_mutex_t *)&t->swap_mu);
    int v = t->cur.version;
    pthread_mutex_unlock((pthread_mutex_t *)&t->swap_mu);
    return v;
}

task *task_create(task_shared *sh, const stage *st, int index, int id, char *err, size_t errlen) {
    const plan *p = sh->p;
    task *t = calloc(1, sizeof *t);
    if (!t) { snprintf(err, errlen, "out of memory"); return NULL; }
    t->sh = sh;
    t->st = st;
    t->index = index;
    t->id = id;
    t->source = st->source;     /* a keyed stage's under shuffle = "kafka": its repartition topic's */
    t->cur.p = p;
    t->cur.st = st;
    pthread_mutex_init(&t->swap_mu, NULL);
    snprintf(t->name, sizeof t->name, "%s-%d", st->name, index);
    t->sinks = calloc(p->nnodes + 1, sizeof *t->sinks);
    if (!t->sinks) { snprintf(err, errlen, "out of memory"); goto err; }
    /* sinks chained in this task: they belong to the task, not to a version */
    for (int i = 0; i < st->nnodes; i++) {
        const node *nd = &p->nodes[st->nodes[i] - 1];
        if (nd->kind != NODE_SINK) continue;
        sink_args a = { .nd = nd, .dir = p->dir, .task_id = id, .txn = sh->cfg->guarantee == GUARANTEE_EXACTLY_ONCE,
                        .append = sh->continuing, .stdout_lock = &sh->stdout_mu, .kafka = sh->kafka,
                        .memory = sh->memory };
        sink *s = sink_open(&a, err, errlen);
        if (!s) goto err;
        t->sinks[t->nsinks++] = s;
    }
    if (st->source >= 0) {
        t->src = source_open(&p->sources[st->source], st->source, index, err, errlen);
        if (!t->src) goto err;
        t->inbatch = batch_create((int)sh->cfg->batch_size);
        if (!t->inbatch) { snprintf(err, errlen, "out of memory"); goto err; }
        if (!sh->memory && sh->cfg->reload_dry_run_records > 0 && !p->sources[st->source].repartition &&
            !(t->ring = replay_ring_create(sh->cfg->reload_dry_run_records))) {
            snprintf(err, errlen, "out of memory");
            goto err;
        }
    }
    if (st->keyed) {
        int maxp = sh->cfg->max_parallelism;
        t->kgs = calloc(maxp, sizeof *t->kgs);
        if (!t->kgs) { snprintf(err, errlen, "out of memory"); goto err; }
        for (int kg = 0; kg < maxp; kg++)
            if (keygroup_task((uint32_t)kg, maxp, st->ntasks) == index) t->kgs[t->nkgs++] = (uint32_t)kg;
    }
    if (sh->state && (!(t->stx = state_tx_create(sh->state)) || !(t->timers = timer_index_create(t->stx, t->kgs, t->nkgs)))) {
        snprintf(err, errlen, "out of memory");
        goto err;
    }
    /* what the native functions of its VMs read; scratch buffers empty */
    t->api = (lua_api_env){ .task = t, .io = &t->io, .stx = t->stx, .timers = t->timers,
                            .max_parallelism = sh->cfg->max_parallelism, .output_of = task_output_of,
                            .shuffle = task_shuffle };
    t->io.wm = TS_NONE;
    t->io.maxts = TS_NONE;
    t->sent_wm = TS_NONE;
    t->last_record_ms = clock_now_ms();
    if (st->keyed && st->source >= 0 && task_shuffle_open(t, err, errlen) < 0) goto err;
    return t;
err:
    task_destroy(t);
    return NULL;
}

int task_add_input(task *t, channel *c) { return task_add_remote_input(t, c, c ? c->producer : NULL); }

int task_ninputs(const task *t) { return t->nin; }

int task_add_remote_input(task *t, channel *c, task *up) {
    int n = t->nin + 1;
    channel **in = realloc(t->in, sizeof *in * n);
    if (in) t->in = in;
    task **ups = realloc(t->in_up, sizeof *ups * n);
    if (ups) t->in_up = ups;
    if (!ups) return -1;
    t->in_up[t->nin] = up;
    unsigned char *ended = realloc(t->ended, n), *held = realloc(t->held, n);
    if (ended) t->ended = ended;
    if (held) t->held = held;
    int64_t *wm = realloc(t->chan_wm, sizeof *wm * n);
    if (wm) t->chan_wm = wm;
    uint8_t *idle = realloc(t->chan_idle, n);
    if (idle) t->chan_idle = idle;
    if (!in || !ended || !held || !wm || !idle) return -1;
    t->in[t->nin] = c;
    t->ended[t->nin] = 0;
    t->held[t->nin] = 0;
    t->chan_wm[t->nin] = TS_NONE;
    t->chan_idle[t->nin] = 0;
    t->nin = n;
    t->io.chan_wm = t->chan_wm;
    t->io.chan_idle = t->chan_idle;
    return 0;
}

int task_add_output(task *t, int stage, channel **targets, int ntargets) {
    out_port *outs = realloc(t->outs, sizeof *outs * (t->nouts + 1));
    if (!outs) return -1;
    t->outs = outs;
    out_port *op = &t->outs[t->nouts];
    memset(op, 0, sizeof *op);
    op->stage = stage;
    op->ntargets = ntargets;
    op->ch = targets;
    op->pending = calloc(ntargets, sizeof *op->pending);
    if (!op->pending) return -1;
    t->nouts++;
    return 0;
}

/* Pushes a Lua array of ints.  Stack: +1 */
static void push_int_array(lua_State *L, const int *a, int n) {
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushinteger(L, a[i]);
        lua_rawseti(L, -2, i + 1);
    }
}

static const char *on_error_name(int e) {
    return e == ON_ERROR_SKIP ? "skip" : e == ON_ERROR_DEAD_LETTER ? "dead_letter" : "fail";
}

void task_vm_destroy(task_vm *tv) {
    if (!tv) return;
    vm_destroy(tv->vm);
    free(tv->sink_of_node);
    free(tv->out_of_node);
    free(tv->node_in);
    free(tv->node_out);
    free(tv);
}

/* A version no longer used: its VM is closed on the reaper thread (vm.h). */
static void task_vm_retire(task_vm *tv) {
    if (!tv) return;
    vm_destroy_later(tv->vm);
    tv->vm = NULL;
    task_vm_destroy(tv);
}

/* Maps plan p's sink and key_by nodes of this task's stage to the task's
 * sinks (by name) and outputs (by downstream stage). */
static int map_nodes(task *t, task_vm *tv, char *err, size_t errlen) {
    const plan *p = tv->p;
    tv->sink_of_node = malloc(sizeof *tv->sink_of_node * (p->nnodes + 1));
    tv->out_of_node = malloc(sizeof *tv->out_of_node * (p->nnodes + 1));
    tv->node_in = calloc(p->nnodes + 1, sizeof *tv->node_in);
    tv->node_out = calloc(p->nnodes + 1, sizeof *tv->node_out);
    if (!tv->sink_of_node || !tv->out_of_node || !tv->node_in || !tv->node_out) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int i = 0; i <= p->nnodes; i++) tv->sink_of_node[i] = tv->out_of_node[i] = -1;
    for (int i = 0; i < tv->st->nnodes; i++) {
        const node *nd = &p->nodes[tv->st->nodes[i] - 1];
        if (nd->kind == NODE_SINK) {
            for (int s = 0; s < t->nsinks; s++)
                if (strcmp(sink_name(t->sinks[s]), nd->name) == 0) tv->sink_of_node[nd->id] = s;
            if (tv->sink_of_node[nd->id] < 0) {
                snprintf(err, errlen, "sink '%s' (%s) is new: adding a sink needs a restart", nd->name, nd->where);
                return -1;
            }
        } else if (nd->kind == NODE_KEY_BY) {
            for (int o = 0; o < t->nouts; o++)
                if (t->outs[o].stage == nd->stage_out) tv->out_of_node[nd->id] = o;
            if (tv->out_of_node[nd->id] < 0) {
                snprintf(err, errlen, "key_by (%s) feeds a stage this task has no channels to", nd->where);
                return -1;
            }
        }
    }
    return 0;
}

task_vm *task_prepare(task *t, const plan *p, int version, char *err, size_t errlen) {
    const task_shared *sh = t->sh;
    const config *cfg = sh->cfg;
    task_vm *tv = calloc(1, sizeof *tv);
    if (!tv) { snprintf(err, errlen, "out of memory"); return NULL; }
    tv->p = p;
    tv->st = &p->stages[t->st->id];
    tv->version = version;
    tv->batch_ref = tv->inputs_ref = tv->finish_ref = tv->tick_ref = LUA_NOREF;
    if (map_nodes(t, tv, err, errlen) < 0) goto err;
    vm_opts vo = { .memory_limit = cfg->limit_memory, .instructions = cfg->limit_instructions,
                   .lua_dir = sh->lua_dir, .pipeline_dir = p->dir };
    tv->vm = vm_create(&vo, err, errlen);
    if (tv->vm) vm_watch_progress(tv->vm, &t->io.seq, &t->io.cur);
    if (tv->vm) vm_set_owner(tv->vm, t);
    if (!tv->vm) goto err;
    lua_State *L = vm_state(tv->vm);
    char lerr[2048];
    if (plan_push_runtime(tv->vm, p, cfg, "task", 16, lerr, sizeof lerr) < 0) {   /* runtime task args */
        snprintf(err, errlen, "cannot load the eddy runtime: %s", lerr);
        goto err;
    }
    lua_pushlightuserdata(L, t);           lua_setfield(L, -2, "task");
    lua_pushlightuserdata(L, &t->io);      lua_setfield(L, -2, "io");
    lua_pushlightuserdata(L, tv->node_in);  lua_setfield(L, -2, "node_in");
    lua_pushlightuserdata(L, tv->node_out); lua_setfield(L, -2, "node_out");
    lua_pushstring(L, t->name);            lua_setfield(L, -2, "name");
    lua_pushboolean(L, tv->st->keyed);     lua_setfield(L, -2, "keyed");
    lua_pushinteger(L, t->nin);            lua_setfield(L, -2, "ninputs");
    lua_pushstring(L, on_error_name(cfg->on_error)); lua_setfield(L, -2, "on_error");
    lua_pushinteger(L, version);           lua_setfield(L, -2, "version");
    lua_pushboolean(L, sh->memory != NULL); lua_setfield(L, -2, "testing");   /* eddy test's driver runs it */
    lua_createtable(L, t->nkgs, 0);                            /* ... args kgs: the key groups it owns */
    for (int i = 0; i < t->nkgs; i++) {
        lua_pushinteger(L, t->kgs[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "keygroups");
    push_int_array(L, tv->st->nodes, tv->st->nnodes); lua_setfield(L, -2, "stage_nodes");
    push_int_array(L, tv->st->roots, tv->st->nroots); lua_setfield(L, -2, "roots");
    lua_createtable(L, 0, t->nsinks);                          /* ... args sinks */
    for (int id = 1; id <= p->nnodes; id++) {
        if (tv->sink_of_node[id] < 0) continue;
        lua_pushinteger(L, tv->sink_of_node[id]);
        lua_rawseti(L, -2, id);
    }
    lua_setfield(L, -2, "sinks");
    lua_createtable(L, p->nsources, 0);                        /* ... args sources */
    for (int s = 0; s < p->nsources; s++) {
        const source_info *si = &p->sources[s];
        lua_createtable(L, 0, 4);                              /* ... sources s */
        lua_pushstring(L, si->name);   lua_setfield(L, -2, "name");
        lua_pushstring(L, si->format); lua_setfield(L, -2, "format");
        lua_createtable(L, si->nfiles, 0);                     /* ... sources s list */
        for (int j = 0; j < si->nfiles; j++) {
            if (si->kind == SRC_KAFKA) {                       /* partition j: {topic, partition} */
                lua_createtable(L, 0, 2);
                lua_pushstring(L, si->topics[si->ktopic[j]]); lua_setfield(L, -2, "topic");
                lua_pushinteger(L, si->kpart[j]);             lua_setfield(L, -2, "partition");
            } else {
                lua_pushstring(L, si->files[j]);
            }
            lua_rawseti(L, -2, j + 1);
        }
        lua_setfield(L, -2, si->kind == SRC_KAFKA ? "kafka" : "files");   /* ... sources s */
        lua_rawseti(L, -2, s + 1);
    }
    lua_setfield(L, -2, "sources");
    if (lua_api_push_native(L, &t->api, err, errlen) < 0) goto err;
    lua_setfield(L, -2, "native");
    if (vm_pcall_bounded(tv->vm, 1, 1, cfg->limit_time_ms) != 0) {   /* runtime fns | err */
        snprintf(err, errlen, "%s", vm_errstr(L, -1));
        goto err;
    }
    lua_getfield(L, -1, "batch");                              /* runtime fns batch */
    tv->batch_ref = luaL_ref(L, LUA_REGISTRYINDEX);            /* runtime fns */
    lua_getfield(L, -1, "inputs_changed");
    tv->inputs_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, -1, "finish");
    tv->finish_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, -1, "tick");
    tv->tick_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_settop(L, 0);
    return tv;
err:
    if (tv->vm) lua_settop(vm_state(tv->vm), 0);
    task_vm_destroy(tv);
    return NULL;
}

int task_start(task *t, char *err, size_t errlen) {
    task_vm *tv = task_prepare(t, t->sh->p, t->sh->version, err, errlen);
    if (!tv) return -1;
    t->cur = *tv;
    free(tv);
    return 0;
}

void task_offer(task *t, task_vm *tv) {
    if (tv) tv->epoch = ++t->offered_epoch;
    task_vm *old = atomic_exchange(&t->next, tv);
    task_vm_destroy(old);       /* a version offered earlier and never reached: superseded */
}

void task_pass(task *t) {
    atomic_store(&t->pass_epoch, ++t->offered_epoch);
}

void task_offer_parking(task *t, task_vm *tv) {
    if (tv) tv->park_old = 1;
    task_offer(t, tv);
}

int task_offer_parked(task *t) {
    task_vm *pv = atomic_exchange(&t->parked, NULL);
    if (!pv) return -1;
    pv->park_old = 0;
    task_offer(t, pv);
    return 0;
}

void task_pass_dropping_parked(task *t) {
    atomic_store(&t->drop_parked, 1);
    task_pass(t);
}

/* On the worker, as it passes a roll-out: closes a parked version no longer wanted. */
static void passed(task *t, int64_t epoch) {
    if (atomic_exchange(&t->drop_parked, 0)) task_vm_retire(atomic_exchange(&t->parked, NULL));
    atomic_store(&t->epoch_done, epoch);
}

int task_rollout_pending(const task *t) {
    return atomic_load(&((task *)t)->epoch_done) < t->offered_epoch;
}

/* What the version swapped out counted (swap_mu held). */
static void close_version_counts(task *t) {
    long in = t->records_in, out = t->records_out;
    long e = (long)t->io.errors, sk = (long)t->io.skipped, dl = (long)t->io.dead_letters;
    struct version_counts *vc = NULL;
    for (int i = 0; i < t->nvcounts; i++) if (t->vcounts[i].version == t->cur.version) vc = &t->vcounts[i];
    if (!vc) {
        int cap = (int)(sizeof t->vcounts / sizeof t->vcounts[0]);
        if (t->nvcounts == cap) { memmove(t->vcounts, t->vcounts + 1, sizeof t->vcounts[0] * (cap - 1)); t->nvcounts--; }
        vc = &t->vcounts[t->nvcounts++];
        *vc = (struct version_counts){ .version = t->cur.version };
    }
    vc->in += in - t->base_in; vc->out += out - t->base_out; vc->errors += e - t->base_errors;
    vc->skipped += sk - t->base_skipped; vc->dead += dl - t->base_dead;
    t->base_in = in; t->base_out = out; t->base_errors = e; t->base_skipped = sk; t->base_dead = dl;
}

/* Between two batches, on a task that starts roll-outs (a source task, or a
 * keyed task reading its repartition topic): swaps to an offered version,
 * or keeps its version through a roll-out that passes it, and sends the
 * roll-out's barrier on either way. */
void task_rollout_at_boundary(task *t) {
    if (atomic_load(&t->next)) {
        /* every record before this point was processed by the old version,
         * every one after it will be by the new one */
        task_swap_version(t);
        task_push_all(t, CH_BARRIER, t->cur.epoch);
    } else {
        int64_t pass = atomic_load(&t->pass_epoch);
        if (pass > atomic_load(&t->epoch_done)) {
            passed(t, pass);
            task_push_all(t, CH_BARRIER, pass);
        }
    }
}

/* Makes the offered version current (on the task's own worker). */
void task_swap_version(task *t) {
    task_vm *tv = atomic_exchange(&t->next, NULL);
    if (!tv) return;
    /* closing a VM can take milliseconds: keep the old one until the first
     * batch on the new version has gone through, then close it on the
     * reaper thread (or, for a canary, keep it until it is promoted or
     * rolled back: parked) */
    if (!tv->park_old) task_vm_retire(t->retired);
    pthread_mutex_lock(&t->swap_mu);
    close_version_counts(t);
    task_vm *old = malloc(sizeof *old);
    if (old) *old = t->cur;
    else { vm_destroy(t->cur.vm); free(t->cur.sink_of_node); free(t->cur.out_of_node); free(t->cur.node_in); free(t->cur.node_out); }
    if (!tv->park_old) t->retired = old;
    else if (old) task_vm_destroy(atomic_exchange(&t->parked, old));
    t->cur = *tv;
    t->st = t->cur.st;
    pthread_mutex_unlock(&t->swap_mu);
    free(tv);
    task_forget_windows(t, t->cur.p, 1);   /* state a reload let go (allow_dropped_state) */
    t->swapped_at_us = clock_mono_us();
    if (t->cur.epoch > atomic_load(&t->epoch_done)) atomic_store(&t->epoch_done, t->cur.epoch);
    t->last_tick_ms = 0;         /* the new version's first tick comes at the next step (a state migration starts there) */
    t->reloads++;
    log_task_debug(t->name, "now on version %d", t->cur.version);
}

void task_fail(task *t, const char *fmt, const char *msg) {
    snprintf(t->error, sizeof t->error, fmt, msg);
    log_task_error(t->name, "%s", t->error);
    atomic_store(&t->status, TASK_FAILED);
}

/* Calls one of the Lua entry points: over the batch b (ref = batch), or
 * with no batch and an optional integer argument (channel_end, finish); then
 * routes what came out.  0, or -1 after failing the task. */
/* The CPU-time clock of the calling worker thread: the watchdog measures a
 * call by the CPU time it used, so a call on a loaded machine (descheduled,
 * or its sink waiting on the disk) is not taken for a runaway loop. */
static clockid_t worker_clock(void) {
    static __thread clockid_t clock;
    static __thread int known;
    if (!known) {
        if (pthread_getcpuclockid(pthread_self(), &clock) != 0) clock = CLOCK_MONOTONIC;
        known = 1;
    }
    return clock;
}

int task_call_lua(task *t, int ref, batch *b, int arg) {
    lua_State *L = vm_state(t->cur.vm);
    if (t->swapped_at_us && b) {
        /* first records on a new version: the pause is measured from the last
         * records on the old one (or from the swap, when input was idle) */
        int64_t from = t->last_call_end_us > 0 ? t->last_call_end_us : t->swapped_at_us;
        t->last_pause_us = clock_mono_us() - from;
        t->swapped_at_us = 0;
    }
    t->io.recs = b ? b->recs : NULL;
    t->io.data = b ? b->data : NULL;
    t->io.n = b ? b->n : 0;
    /* cur, seq and in_call are the watchdog's progress marks, read on the
     * event loop's thread: relaxed atomic stores (Lua's FFI stores them too,
     * on this thread) */
    __atomic_store_n(&t->io.cur, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&t->io.seq, t->io.seq + 1, __ATOMIC_RELAXED);
    __atomic_store_n(&t->wd_clock, (int)worker_clock(), __ATOMIC_RELAXED);
    __atomic_store_n(&t->io.in_call, 1, __ATOMIC_RELEASE);          /* after wd_clock */
    vm_enter(t->cur.vm);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);                    /* fn */
    int nargs = 0;
    if (arg >= 0) { lua_pushinteger(L, arg); nargs = 1; }      /* fn [arg] */
    int rc = lua_pcall(L, nargs, 0, 0);                        /* | err */
    vm_leave(t->cur.vm);
    __atomic_store_n(&t->io.in_call, 0, __ATOMIC_RELAXED);
    t->io.recs = NULL;
    t->io.data = NULL;
    t->io.n = 0;
    if (b) { t->records_in += b->n; t->batches++; t->last_call_end_us = clock_mono_us(); }
    if (b && t->retired) { task_vm_retire(t->retired); t->retired = NULL; }
    if (rc != 0) {
        task_fail(t, "%s", vm_errstr(L, -1));
        lua_settop(L, 0);
        return -1;
    }
    if (t->rin && task_shuffle_save_marks(t) < 0) return -1;
    if (t->stx) {        /* the batch's state changes, at once (with none, its records' marks are dropped) */
        char err[512];
        if (state_tx_commit(t->stx, err, sizeof err) < 0) { task_fail(t, "%s", err); return -1; }
    }
    for (int i = 0; i < t->nsinks; i++) {
        if (sink_flush(t->sinks[i]) < 0) { task_fail(t, "%s", sink_error(t->sinks[i])); return -1; }
    }
    if (task_flush_outputs(t) < 0) { task_fail(t, "%s", "out of memory"); return -1; }
    return 0;
}

static int outputs_blocked(task *t) {
    for (int o = 0; o < t->nouts; o++)
        for (int i = 0; i < t->outs[o].ntargets && !t->outs[o].remote; i++)
            if (channel_full(t->outs[o].ch[i])) return 1;
    return 0;
}

int task_outputs_full(task *t) { return outputs_blocked(t); }

/* Sends a mark to every task downstream.  A mark that cannot be sent (out of
 * memory) would leave a barrier or the end of input hanging: the task fails. */
void task_push_all(task *t, msg_kind kind, int64_t value) {
    for (int o = 0; o < t->nouts; o++) {
        if (t->outs[o].remote) { task_shuffle_mark(t, &t->outs[o], kind, value); continue; }
        for (int i = 0; i < t->outs[o].ntargets; i++)
            if (channel_push(t->outs[o].ch[i], kind, NULL, value) < 0) {
                snprintf(t->error, sizeof t->error, "out of memory sending a mark downstream");
                log_task_error(t->name, "%s", t->error);
                atomic_store(&t->status, TASK_FAILED);
                return;
            }
    }
}

/* End of this task's input: fire what is left, flush, close sinks, tell downstream. */
step_result task_finish(task *t) {
    /* a stop (not the end of input) keeps event-time timers for the next run */
    int stopped = t->source >= 0 ? !t->input_ended : t->stop_eos;
    t->wm_at_end = t->io.wm;                        /* finish makes it +inf */
    if (!atomic_load(&t->sh->aborting) && task_call_lua(t, t->cur.finish_ref, NULL, stopped) < 0) return STEP_FAILED;
    for (int i = 0; i < t->nsinks; i++) {
        if (sink_close(t->sinks[i]) < 0) { task_fail(t, "%s", sink_error(t->sinks[i])); return STEP_FAILED; }
    }
    if (task_flush_outputs(t) < 0) { task_fail(t, "%s", "out of memory"); return STEP_FAILED; }
    task_push_all(t, CH_EOS, stopped ? EOS_STOP : INT64_MAX);
    atomic_store(&t->status, TASK_DONE);
    log_task_debug(t->name, "done: %ld records in, %ld out", (long)t->records_in, (long)t->records_out);
    return STEP_DONE;
}

/* Marks the record an earlier run hung on, so the error policy handles it. */
static void mark_poison(task *t, batch *b) {
    poison *ps = t->sh->poison;
    if (!ps || atomic_load(&ps->hit) || strcmp(ps->source, t->cur.p->sources[t->source].name) != 0 ||
        ps->partition != t->index)
        return;
    for (int i = 0; i < b->n; i++) {
        eddy_rec *r = &b->recs[i];
        if (r->offset != ps->offset) continue;
        /* rebuild it as a malformed record carrying the watchdog's message */
        batch *nb = batch_create(b->n);
        if (!nb) return;
        for (int j = 0; j < b->n; j++) {
            eddy_rec *o = &b->recs[j];
            const char *msg = j == i ? ps->message : b->data + o->key_off;
            size_t mlen = j == i ? strlen(ps->message) : o->key_len;
            eddy_rec *c = batch_add(nb, msg, mlen, b->data + o->val_off, o->val_len);
            if (!c) { batch_destroy(nb); return; }
            uint64_t ko = c->key_off, vo = c->val_off;
            uint32_t kl = c->key_len, vl = c->val_len;
            *c = *o;
            c->key_off = ko; c->key_len = kl; c->val_off = vo; c->val_len = vl;
            if (j == i) c->flags = EDDY_REC_MALFORMED;
        }
        batch_destroy(t->inbatch);
        t->inbatch = nb;
        atomic_store(&ps->hit, 1);
        return;
    }
}

/* The Kafka sinks chained in this task. */
static int kafka_sinks_of(task *t, struct kafka_sink **ks, int max) {
    int n = 0;
    for (int i = 0; i < t->nsinks && n < max; i++)
        if (sink_kafka(t->sinks[i])) ks[n++] = sink_kafka(t->sinks[i]);
    return n;
}

/* A marker passed this task: what it wrote before it is written (file sinks
 * write at the end of every batch); its Kafka sinks are waited for by acks. */
static void report_mark(task *t, uint64_t id) {
    struct kafka_sink *ks[17];
    int n = kafka_sinks_of(t, ks, 8);
    n += task_shuffle_producers(t, ks + n, 16 - n);
    if (t->sh->kafka && kafka_dead_letter_sink(t->sh->kafka)) ks[n++] = kafka_dead_letter_sink(t->sh->kafka);
    acks_report(t->sh->acks, id, ks, n);
}

/* A Kafka source sends a marker behind the records read so far; 0 or its id.
 * draining: the partition was revoked, and this marker says when what was
 * read is acknowledged (known to the partition before the marker can
 * complete: with nothing in flight it completes in report_mark). */
static uint64_t send_mark(task *t, int draining) {
    if (!t->sh->acks) return 0;
    int64_t pos = source_position(t->src);
    uint64_t id = acks_begin(t->sh->acks, t->st->id, t->id, pos);
    if (!id) return 0;
    if (draining) source_drain(t->src, id);
    t->marked_position = pos;
    t->last_mark_ms = clock_mono_us() / 1000;
    task_push_all(t, CH_MARK, (int64_t)id);
    report_mark(t, id);
    return id;
}

static int exactly_once(const task *t) { return t->sh->cfg->guarantee == GUARANTEE_EXACTLY_ONCE; }

/* A source task reads its partition while it is read here (a group's
 * partition may be assigned to another instance, or being given up).
 * Sets *n_read (-1 when the step is over without a read: return its result)
 * and *eof. */
step_result task_read_source(task *t, int *n_read, int *eof) {
    task_shared *sh = t->sh;
    *n_read = -1;
    int st = source_state(t->src);
    if (st == SOURCE_REVOKING) {
        /* given up: stop reading, and let the group know when what was read is acknowledged */
        uint64_t id = send_mark(t, 1);
        if (!id) source_drain(t->src, 0);
        if (!t->idle_sent && !exactly_once(t) && !t->remote_outs) { t->idle_sent = 1; task_push_all(t, CH_WATERMARK, WM_IDLE); }
        return STEP_PROGRESS;
    }
    if (st != SOURCE_READING) {
        /* idleness counts from the assignment: a partition not yet read here
         * is not idle (on its first empty fetch its records would be late) */
        t->last_record_ms = clock_now_ms();
        /* another instance reads it: it holds no watermark back here (under
         * exactly_once it does: a restarted instance waits for the partitions
         * a dead one still holds, rather than fire windows without them) */
        if (!t->idle_sent && t->nouts > 0 && source_elsewhere(t->src) && !exactly_once(t) && !t->remote_outs) {
            t->idle_sent = 1;
            task_push_all(t, CH_WATERMARK, WM_IDLE);
        }
        return STEP_IDLE;
    }
    if (source_marks(t->src)) {
        if (source_position(t->src) < t->marked_position) t->marked_position = -1;   /* re-assigned, further back */
        if (sh->acks && source_position(t->src) > t->marked_position &&
            clock_mono_us() / 1000 - t->last_mark_ms >= sh->mark_interval_ms)
            send_mark(t, 0);
    }
    batch_clear(t->inbatch);
    char err[700];
    int64_t left = source_bound_left(t->src);
    int max = left < sh->cfg->batch_size ? (int)left : (int)sh->cfg->batch_size;
    if (max <= 0) { *n_read = 0; return STEP_IDLE; }
    int n = source_read(t->src, t->inbatch, max, eof, err, sizeof err);
    if (n < 0) { task_fail(t, "%s", err); return STEP_FAILED; }
    t->position = source_position(t->src);
    *n_read = n;
    return n > 0 ? STEP_PROGRESS : STEP_IDLE;
}

/* Checkpoint id's barrier passes this task: its state is committed (after
 * every batch), its sinks are prepared, the barrier goes downstream, and
 * the task waits until the checkpoint is released (checkpoint.h).  0 or -1. */
int task_pass_checkpoint(task *t, int64_t id) {
    for (int i = 0; i < t->nsinks; i++)
        if (sink_prepare(t->sinks[i], id) < 0) { task_fail(t, "%s", sink_error(t->sinks[i])); return -1; }
    task_push_all(t, CH_CHECKPOINT, id);
    atomic_store(&t->ckpt_passed, id);
    return 0;
}

/* bootstrap = true: has this source task read to its end? */
static int boot_reached_end(task *t, int eof) {
    return eof || source_caught_up(t->src);
}

/* 1 while a bootstrap source has not been read to its end, or what it sent
 * still waits in a channel: the other sources do not read meanwhile, so
 * every record they send meets the tables as loaded. */
static int bootstrapping(task *t) {
    task_shared *sh = t->sh;
    if (sh->nboot == 0 || atomic_load(&sh->boot_open)) return 0;
    for (int i = 0; i < sh->nboot; i++) {
        task *b = sh->boot[i];
        if (!atomic_load(&b->boot_reached)) return 1;
        for (int o = 0; o < b->nouts; o++)
            for (int k = 0; k < b->outs[o].ntargets && !b->outs[o].remote; k++)
                if (channel_depth(b->outs[o].ch[k]) > 0) return 1;
    }
    if (!atomic_exchange(&sh->boot_open, 1)) log_info("the bootstrap sources were read to their end: the others start");
    return 0;
}

int task_bootstrap_add(task_shared *sh, task *t) {
    task **nb = realloc(sh->boot, sizeof *nb * (sh->nboot + 1));
    if (!nb) return -1;
    sh->boot = nb;
    sh->boot[sh->nboot++] = t;
    return 0;
}

static step_result step_source(task *t) {
    task_shared *sh = t->sh;
    task_rollout_at_boundary(t);              /* between two batches */
    int64_t req = atomic_load(&t->ckpt_req);
    if (req > atomic_load(&t->ckpt_passed))       /* between two batches too: the cut of this partition */
        return task_pass_checkpoint(t, req) < 0 ? STEP_FAILED : STEP_PROGRESS;
    if (outputs_blocked(t) && source_state(t->src) != SOURCE_REVOKING) return STEP_BLOCKED;
    if (atomic_load(&sh->stopping)) return task_finish(t);
    const source_info *si = &t->cur.p->sources[t->source];
    if (!si->bootstrap && bootstrapping(t)) return STEP_IDLE;       /* (on_poll wakes it again) */
    /* bounded: a partition another instance reads ends here */
    if (si->bounded && source_state(t->src) != SOURCE_READING && source_elsewhere(t->src)) {
        t->input_ended = 1;
        return task_finish(t);
    }
    int eof = 0, n;
    step_result r = task_read_source(t, &n, &eof);
    if (n < 0) return r;                       /* not reading now (revoked, elsewhere, failed) */
    if (n > 0) {
        t->last_record_ms = clock_now_ms();
        t->idle_sent = 0;                 /* the records themselves wake the inputs downstream */
        if (t->ring) replay_ring_add(t->ring, t->inbatch);     /* (out of memory: the ring keeps fewer) */
        if (sh->poison) mark_poison(t, t->inbatch);
        if (task_call_lua(t, t->cur.batch_ref, t->inbatch, -1) < 0) return STEP_FAILED;
        if (si->bootstrap && !atomic_load(&t->boot_reached) && boot_reached_end(t, 0)) atomic_store(&t->boot_reached, 1);
        /* records carry the watermark only to the tasks their keys go to:
         * tell every task downstream, behind the batch */
        if (t->nouts > 0 && t->io.wm > t->sent_wm && t->io.wm < WM_END) {
            t->sent_wm = t->io.wm;
            task_push_all(t, CH_WATERMARK, t->io.wm);
        }
        return STEP_PROGRESS;
    }
    if (si->bootstrap && !atomic_load(&t->boot_reached) && boot_reached_end(t, eof)) atomic_store(&t->boot_reached, 1);
    if (eof || source_ended(t->src)) { t->input_ended = 1; return task_finish(t); }
    int64_t idle = t->cur.p->sources[t->source].idle_ms;
    /* a Kafka partition is idle only at its end: a fetch still on its way
     * (or a slow one) is not the absence of records */
    if (idle > 0 && !t->idle_sent && clock_now_ms() - t->last_record_ms >= idle && source_at_end(t->src)) {
        log_task_debug(t->name, "idle: no record for %lld ms", (long long)idle);
        t->idle_sent = 1;
        task_push_all(t, CH_WATERMARK, WM_IDLE);
    }
    return STEP_IDLE;
}

/* Tells the tasks downstream how far this task's watermark got (records
 * carry it too; this covers advances without records), then, when every
 * input of this task is idle, that it is idle (its watermark is then the
 * highest of the idle inputs', lua/eddy/runtime/task.lua's merge_watermark). */
void task_forward_watermark(task *t) {
    if (t->io.wm > t->sent_wm && t->io.wm < WM_END) {
        t->sent_wm = t->io.wm;
        t->idle_sent = 0;
        task_push_all(t, CH_WATERMARK, t->io.wm);
    }
    int active = 0;                    /* (an input stopped, not ended, still holds the watermark) */
    for (int c = 0; c < t->nin; c++) if (!t->chan_idle[c] && (!t->ended[c] || t->chan_wm[c] < WM_END)) active++;
    if (active == 0 && t->eos < t->nin && !t->idle_sent) {
        t->idle_sent = 1;
        task_push_all(t, CH_WATERMARK, WM_IDLE);
    }
}

/* Every input has delivered the barrier (or ended): swap (unless the
 * roll-out passes this task), pass it on. */
static void barrier_aligned(task *t, int64_t epoch, int swap) {
    if (swap) task_swap_version(t);
    else passed(t, epoch);
    memset(t->held, 0, t->nin);
    t->nheld = 0;
    task_push_all(t, CH_BARRIER, epoch);
}

/* Every input has delivered the barrier (or ended): swap once the version
 * it announces has been offered (the offer may come a moment after the
 * barrier), then pass it on.  1 when aligned and swapped. */
static int try_align(task *t) {
    if (t->nheld == 0 || t->nheld + t->eos < t->nin) return 0;
    if (t->held_checkpoint) {
        int64_t id = t->held_checkpoint;
        memset(t->held, 0, t->nin);
        t->nheld = 0;
        t->held_checkpoint = 0;
        task_pass_checkpoint(t, id);                 /* a failure shows in the task's status */
        return 1;
    }
    /* the offer (or pass) wakes the task */
    task_vm *n = atomic_load(&t->next);
    if (n && n->epoch >= t->barrier_version) barrier_aligned(t, t->barrier_version, 1);
    else if (atomic_load(&t->pass_epoch) >= t->barrier_version) barrier_aligned(t, t->barrier_version, 0);
    else return 0;
    return 1;
}

/* Processing-time triggers: the Lua tick, due every TICK_MS of real time
 * whether or not input is waiting.  0, or -1 when the task failed. */
int task_maybe_tick(task *t) {
    if (!__atomic_load_n(&t->wants_ticks, __ATOMIC_RELAXED) || t->cur.tick_ref == LUA_NOREF || t->sh->memory) return 0;   /* eddy test: task_tick */
    /* how often is a matter of CPU, not of meaning: the real clock paces
     * ticks (the processing time the triggers see is clock.h's) */
    int64_t now = clock_mono_us() / 1000;
    if (now - t->last_tick_ms < TICK_MS) return 0;
    t->last_tick_ms = now;
    if (task_call_lua(t, t->cur.tick_ref, NULL, -1) < 0) return -1;
    if (t->nouts > 0) task_forward_watermark(t);
    return 0;
}

int task_tick(task *t) {
    if (!__atomic_load_n(&t->wants_ticks, __ATOMIC_RELAXED) || t->cur.tick_ref == LUA_NOREF || task_status(t) != TASK_RUNNING) return 0;
    if (task_call_lua(t, t->cur.tick_ref, NULL, -1) < 0) return -1;
    if (t->nouts > 0) task_forward_watermark(t);
    return 0;
}

int task_advance_watermark(task *t, int64_t wm) {
    if (t->source < 0 || t->st->keyed || task_status(t) != TASK_RUNNING || wm <= t->io.wm || wm >= WM_END) return 0;
    t->io.wm = wm;
    if (t->nouts > 0 && wm > t->sent_wm) {
        t->sent_wm = wm;
        t->idle_sent = 0;
        task_push_all(t, CH_WATERMARK, wm);
    }
    return 1;
}

static step_result step_keyed(task *t) {
    if (outputs_blocked(t)) return STEP_BLOCKED;
    if (try_align(t)) return STEP_PROGRESS;
    if (task_maybe_tick(t) < 0) return STEP_FAILED;
    msg *m = NULL;
    int idx = -1;
    for (int k = 0; k < t->nin && !m; k++) {
        idx = (t->rr + k) % t->nin;
        if (t->held[idx]) continue;          /* aligning: wait for the other inputs' barriers */
        m = channel_pop(t->in[idx]);
    }
    if (!m) return STEP_IDLE;
    t->rr = idx + 1;
    step_result r = STEP_PROGRESS;
    if (m->kind == CH_BATCH) {
        t->io.channel = idx;
        __atomic_store_n(&t->chan_idle[idx], 0, __ATOMIC_RELAXED);   /* records again: the input counts in the minimum */
        if (task_call_lua(t, t->cur.batch_ref, m->b, -1) < 0) r = STEP_FAILED;
    } else if (m->kind == CH_WATERMARK) {
        if (m->value == WM_IDLE) __atomic_store_n(&t->chan_idle[idx], 1, __ATOMIC_RELAXED);
        else {
            __atomic_store_n(&t->chan_idle[idx], 0, __ATOMIC_RELAXED);
            if (m->value > t->chan_wm[idx]) __atomic_store_n(&t->chan_wm[idx], m->value, __ATOMIC_RELAXED);
        }
        if (task_call_lua(t, t->cur.inputs_ref, NULL, -1) < 0) r = STEP_FAILED;
    } else if (m->kind == CH_BARRIER) {
        t->held[idx] = 1;
        t->barrier_version = m->value;
        t->nheld++;                       /* aligned: swapped at the top of a step (below) */
    } else if (m->kind == CH_CHECKPOINT) {
        t->held[idx] = 1;
        t->held_checkpoint = m->value;
        t->nheld++;                       /* aligned: passed at the top of a step */
    } else if (m->kind == CH_MARK) {
        task_push_all(t, CH_MARK, m->value);   /* behind everything this task sent before it */
        report_mark(t, (uint64_t)m->value);
    } else if (m->kind == CH_EOS) {
        t->eos++;
        __atomic_store_n(&t->ended[idx], 1, __ATOMIC_RELAXED);
        __atomic_store_n(&t->chan_idle[idx], 0, __ATOMIC_RELAXED);
        /* an input that ended because eddy stops holds the watermark where
         * it was: a stop never advances event time (the next run goes on) */
        if (m->value == EOS_STOP) t->stop_eos = 1;
        else __atomic_store_n(&t->chan_wm[idx], WM_END, __ATOMIC_RELAXED);
        if (task_call_lua(t, t->cur.inputs_ref, NULL, -1) < 0) r = STEP_FAILED;
        else if (t->eos == t->nin) r = task_finish(t);
    }
    msg_free(m);
    if (r == STEP_PROGRESS && t->nouts > 0) task_forward_watermark(t);
    return r;
}

step_result task_step(task *t) {
    int st = atomic_load(&t->status);
    if (st == TASK_FAILED) return STEP_FAILED;
    if (st == TASK_DONE) return STEP_DONE;
    if (atomic_load(&t->sh->aborting)) { atomic_store(&t->status, TASK_DONE); return STEP_DONE; }
    /* past a checkpoint's barrier: wait until it is committed (a wake comes then) */
    if (atomic_load(&t->ckpt_passed) > atomic_load(&t->sh->ckpt_released)) return STEP_IDLE;
    if (t->st->keyed) return t->source >= 0 ? task_step_remote(t) : step_keyed(t);
    return step_source(t);
}

int task_close_sinks(task *t) {
    int rc = 0;
    for (int i = 0; i < t->nsinks; i++)
        if (sink_close(t->sinks[i]) < 0) rc = -1;
    return rc;
}

void task_destroy(task *t) {
    if (!t) return;
    for (int i = 0; i < t->nsinks; i++) sink_destroy(t->sinks[i]);
    free(t->sinks);
    for (int i = 0; i < t->nwins; i++) { free(t->wins[i].uid); window_destroy(t->wins[i].w); }
    free(t->wins);
    vm_destroy(t->cur.vm);
    free(t->cur.sink_of_node);
    free(t->cur.out_of_node);
    free(t->cur.node_in);
    free(t->cur.node_out);
    task_vm_destroy(atomic_load(&t->next));
    task_vm_destroy(t->retired);
    task_vm_destroy(atomic_load(&t->parked));
    vm_reap_wait();                 /* the versions it swapped out are closed too */
    source_close(t->src);
    batch_destroy(t->inbatch);
    replay_ring_destroy(t->ring);
    for (int o = 0; o < t->nouts; o++) {
        for (int i = 0; i < t->outs[o].ntargets; i++) batch_destroy(t->outs[o].pending[i]);
        free(t->outs[o].pending);
        free(t->outs[o].ch);
        free(t->outs[o].fbuf);
    }
    free(t->outs);
    free(t->in);
    free(t->in_up);
    free(t->ended);
    free(t->held);
    free(t->chan_wm);
    free(t->chan_idle);
    task_shuffle_close(t);
    lua_api_env_free(&t->api);
    timer_index_destroy(t->timers);
    state_tx_destroy(t->stx);
    free(t->kgs);
    pthread_mutex_destroy(&t->swap_mu);
    free(t);
}
