/* What a task shows the rest of eddy (task.h, "what other units read of a
 * task"): its name and status, its counters, its /status and /explain
 * objects, its metric samples, and what the watchdog, the crash handler, the
 * daemon and recovery need to know of the call it is in and of its source.
 * Reads the task under swap_mu where the running version matters. */
#include "task_impl.h"
#include "clock.h"
#include "metrics.h"
#include "source.h"
#include "vm.h"
#include "window.h"
#include <event2/buffer.h>
#include <string.h>
#include <time.h>

/* ---- plain facts ------------------------------------------------------------ */

const char *task_name(const task *t) { return t->name; }
int task_index(const task *t) { return t->index; }
int task_source(const task *t) { return t->source; }
struct replay_ring *task_replay_ring(const task *t) { return t->ring; }
int task_status(const task *t) { return atomic_load(&((task *)t)->status); }
const char *task_error(const task *t) { return t->error; }
void task_set_sched(task *t, sched *s) { t->se.s = s; }

const char *task_status_name(int s) {
    return s == TASK_DONE ? "done" : s == TASK_FAILED ? "failed" : "running";
}

void task_get_counters(task *t, task_counters *c) {
    c->records_in = t->records_in;
    c->records_out = t->records_out;
    c->errors = t->io.errors;
    c->skipped = t->io.skipped;
    c->dead_letters = t->io.dead_letters;
    c->watermark = t->io.wm;
    c->last_pause_us = t->last_pause_us;
    pthread_mutex_lock(&t->swap_mu);
    c->vm_memory = vm_memory(t->cur.vm);
    pthread_mutex_unlock(&t->swap_mu);
}

void task_version_counters(task *t, task_version_fn fn, void *ud) {
    pthread_mutex_lock(&t->swap_mu);
    int cur = t->cur.version, seen = 0;
    long in = t->records_in - t->base_in, out = t->records_out - t->base_out;
    long e = (long)t->io.errors - t->base_errors, sk = (long)t->io.skipped - t->base_skipped;
    long dl = (long)t->io.dead_letters - t->base_dead;
    for (int i = 0; i < t->nvcounts; i++) {
        const struct version_counts *vc = &t->vcounts[i];
        if (vc->version == cur) {
            seen = 1;
            fn(ud, t, cur, vc->in + in, vc->out + out, vc->errors + e, vc->skipped + sk, vc->dead + dl);
        } else {
            fn(ud, t, vc->version, vc->in, vc->out, vc->errors, vc->skipped, vc->dead);
        }
    }
    if (!seen) fn(ud, t, cur, in, out, e, sk, dl);
    pthread_mutex_unlock(&t->swap_mu);
}

void task_version_counts(task *t, long *in, long *errors) {
    pthread_mutex_lock(&t->swap_mu);            /* (the base moves at a swap, under it) */
    *in = t->records_in - t->base_in;
    *errors = (long)__atomic_load_n(&t->io.errors, __ATOMIC_RELAXED) - t->base_errors;
    pthread_mutex_unlock(&t->swap_mu);
}

/* ---- sources ------------------------------------------------------------------ */

int task_id(const task *t) { return t->id; }
struct source *task_src(const task *t) { return t->src; }
int task_input_ended(const task *t) { return t->input_ended; }
void task_end_marks(const task *t, int64_t *wm, int64_t *maxts) {
    *wm = t->wm_at_end;
    *maxts = t->io.maxts;
}

/* ---- the call in progress ------------------------------------------------------ */

int task_in_call(const task *t, int64_t *seq, int32_t *cur) {
    /* the worker (and its Lua, through the FFI) writes these as it goes */
    if (!__atomic_load_n(&t->io.in_call, __ATOMIC_ACQUIRE)) return 0;   /* (after wd_clock) */
    *seq = (int64_t)__atomic_load_n(&t->io.seq, __ATOMIC_RELAXED);
    *cur = __atomic_load_n(&t->io.cur, __ATOMIC_RELAXED);
    return 1;
}

int64_t task_call_cpu_ms(const task *t) {
    return clock_cpu_ms(__atomic_load_n(&t->wd_clock, __ATOMIC_RELAXED));
}

uint64_t task_call_id(task *t) {
    pthread_mutex_lock(&t->swap_mu);
    uint64_t call = vm_call(t->cur.vm);
    pthread_mutex_unlock(&t->swap_mu);
    return call;
}

void task_call_overrun(task *t, uint64_t call, int arm, const char *interrupt) {
    pthread_mutex_lock(&t->swap_mu);       /* t->cur.vm must not be swapped away under us */
    if (arm) vm_arm(t->cur.vm, call);
    if (interrupt) vm_interrupt(t->cur.vm, interrupt, call);
    pthread_mutex_unlock(&t->swap_mu);
}

const eddy_rec *task_current_record(const task *t) {
    /* a call without a batch (windows firing at the end, a tick) has no input record */
    return t->io.recs && t->io.cur >= 0 && t->io.cur < t->io.n ? &t->io.recs[t->io.cur] : NULL;
}

const node *task_current_node(const task *t) {
    const plan *p = t->cur.p;
    return t->io.cur_node >= 1 && t->io.cur_node <= p->nnodes ? &p->nodes[t->io.cur_node - 1] : NULL;
}

const plan *task_plan(const task *t) { return t->cur.p; }

/* ---- /status, /explain ------------------------------------------------------------ */

/* A keyed task's per-input marks, as its worker last stored them (relaxed
 * atomics: the worker writes them as messages arrive, step_keyed). */
static int64_t chan_wm(const task *t, int c) { return __atomic_load_n(&t->chan_wm[c], __ATOMIC_RELAXED); }
static int chan_idle(const task *t, int c) { return __atomic_load_n(&t->chan_idle[c], __ATOMIC_RELAXED); }
static int chan_ended(const task *t, int c) { return __atomic_load_n(&t->ended[c], __ATOMIC_RELAXED); }

/* The input of keyed task t that holds its watermark back (the lowest among
 * inputs that are neither idle nor ended), or -1. */
static int holding_input(const task *t) {
    int at = -1;
    int64_t at_wm = 0;
    for (int c = 0; c < t->nin; c++) {
        if (chan_ended(t, c) || chan_idle(t, c)) continue;
        int64_t wm = chan_wm(t, c);
        if (at < 0 || wm < at_wm) { at = c; at_wm = wm; }
    }
    return at;
}

static json_t *wm_json(int64_t wm) {
    if (wm == TS_NONE) return json_null();
    if (wm >= WM_END) return json_string("+inf");
    return json_integer(wm);
}

/* Where an input comes from: the upstream task, and for a source task its
 * source, partition and file. */
static json_t *input_json(const task *t, int c) {
    const task *up = t->in_up[c];
    json_t *j = json_pack("{s:s, s:o, s:b, s:b}", "from", up->name, "watermark", wm_json(chan_wm(t, c)),
                          "idle", chan_idle(t, c) != 0, "ended", chan_ended(t, c) != 0);
    if (up->source >= 0) {
        const source_info *si = &t->sh->p->sources[up->source];
        json_object_set_new(j, "source", json_string(si->name));
        json_object_set_new(j, "partition", json_integer(up->index));
        json_object_set_new(j, "file", json_string(si->files[up->index]));
    }
    return j;
}

json_t *task_status_json(task *t) {
    int version = task_version(t);
    pthread_mutex_lock(&t->swap_mu);
    size_t vm_bytes = vm_memory(t->cur.vm);
    const char *stage = t->st->name;      /* t->st changes with the version (swap_version) */
    int keyed = t->st->keyed;
    pthread_mutex_unlock(&t->swap_mu);
    json_t *jt = json_pack("{s:s, s:s, s:i, s:s, s:I, s:I, s:I, s:I, s:I, s:I}",
        "name", t->name, "stage", stage, "index", t->index,
        "status", task_status_name(atomic_load(&t->status)),
        "records_in", (json_int_t)t->records_in, "records_out", (json_int_t)t->records_out,
        "errors", (json_int_t)t->io.errors, "skipped", (json_int_t)t->io.skipped,
        "dead_letters", (json_int_t)t->io.dead_letters, "vm_memory", (json_int_t)vm_bytes);
    json_object_set_new(jt, "version", json_integer(version));
    json_object_set_new(jt, "last_reload_pause_ms", json_real((double)t->last_pause_us / 1000.0));
    json_object_set_new(jt, "watermark", wm_json(t->io.wm));
    if (t->source >= 0) {
        const source_info *si = &t->sh->p->sources[t->source];
        json_object_set_new(jt, "source", json_string(si->name));
        json_object_set_new(jt, "partition", json_integer(t->index));
        if (t->src) source_status(t->src, jt);     /* its kind's fields: file, or topic and partition */
        json_object_set_new(jt, "position", json_integer(t->position));
        task_shuffle_status(t, jt);
    }
    if (keyed) {
        int depth = 0;
        json_t *inputs = json_array();
        for (int c = 0; c < t->nin; c++) {
            if (t->in[c]) depth += channel_depth(t->in[c]);
            json_array_append_new(inputs, input_json(t, c));
        }
        json_object_set_new(jt, "queue", json_integer(depth));
        json_object_set_new(jt, "inputs", inputs);
        int h = holding_input(t);
        if (h >= 0) json_object_set_new(jt, "held_back_by", json_string(t->in_up[h]->name));
    }
    if (t->error[0]) json_object_set_new(jt, "error", json_string(t->error));
    return jt;
}

int task_explain_json(task *t, const char *uid, json_t *tasks) {
    int found = 0;
    pthread_mutex_lock(&t->swap_mu);
    for (int k = 0; k < t->nwins; k++) {
        if (strcmp(t->wins[k].uid, uid) != 0) continue;
        found++;
        int64_t end = window_next_end(t->wins[k].w);
        json_t *jt = json_pack("{s:s, s:o, s:I}", "task", t->name, "watermark", wm_json(t->io.wm),
                               "open_windows", (json_int_t)window_open_count(t->wins[k].w));
        if (t->rin)     /* shuffle = "kafka": only the owner's figures are current */
            json_object_set_new(jt, "owned_here", json_boolean(source_state(t->src) == SOURCE_READING));
        if (end == INT64_MAX) {
            json_object_set_new(jt, "oldest_window", json_null());
            json_object_set_new(jt, "why", json_string("no window is waiting to fire"));
        } else {
            json_object_set_new(jt, "oldest_window", json_pack("{s:I}", "end", (json_int_t)end));
            json_object_set_new(jt, "fires_at_watermark", json_integer(end - 1));
            int h = holding_input(t);
            char why[512];
            if (h >= 0) {
                json_object_set_new(jt, "held_back_by", input_json(t, h));
                snprintf(why, sizeof why, "the window ending at %lld fires when the watermark reaches %lld; "
                         "input %s holds the watermark at %lld", (long long)end, (long long)(end - 1),
                         t->in_up[h]->name, (long long)chan_wm(t, h));
            } else {
                snprintf(why, sizeof why, "the window ending at %lld fires when the watermark reaches %lld; "
                         "every input is idle, and the highest of their watermarks is below that: it waits for records", (long long)end, (long long)(end - 1));
            }
            json_object_set_new(jt, "why", json_string(why));
        }
        json_array_append_new(tasks, jt);
    }
    pthread_mutex_unlock(&t->swap_mu);
    return found;
}

/* ---- metric samples -------------------------------------------------------------- */

void task_operators(task *t, task_operator_fn fn, void *ud) {
    pthread_mutex_lock(&t->swap_mu);          /* cur must not change under us */
    const plan *tp = t->cur.p;
    for (int k = 0; k < t->cur.st->nnodes; k++) {
        const node *nd = &tp->nodes[t->cur.st->nodes[k] - 1];
        fn(ud, t, nd, t->cur.node_in[nd->id], t->cur.node_out[nd->id]);
    }
    pthread_mutex_unlock(&t->swap_mu);
}

typedef struct samples { struct evbuffer *out; const char *name; int dir; } samples;

static void operator_sample(void *ud, task *t, const node *nd, uint64_t in, uint64_t out) {
    samples *s = ud;
    char version[16];
    snprintf(version, sizeof version, "%d", t->cur.version);     /* (task_operators holds swap_mu) */
    const char *labels[] = {"task", t->name, "operator", nd->uid, "kind", nd->kind_name, "version", version, NULL};
    metrics_sample(s->out, s->name, labels, (double)(s->dir == 0 ? in : out));
}

void task_operator_samples(task *t, struct evbuffer *out, const char *name, int dir) {
    samples s = { out, name, dir };
    task_operators(t, operator_sample, &s);
}

void task_window_samples(task *t, struct evbuffer *out, const char *name, int which) {
    pthread_mutex_lock(&t->swap_mu);
    for (int k = 0; k < t->nwins; k++) {
        if (strchr(t->wins[k].uid, '#')) continue;     /* a window's helper store */
        const char *labels[] = {"task", t->name, "operator", t->wins[k].uid, NULL};
        metrics_sample(out, name, labels, (double)(which == 0 ? window_late_dropped(t->wins[k].w)
                                                                : window_open_count(t->wins[k].w)));
    }
    pthread_mutex_unlock(&t->swap_mu);
}
int task_stage(const task *t) {
    pthread_mutex_lock((pthread_mutex_t *)&t->swap_mu);       /* (t->st changes with the version) */
    int id = t->st->id;
    pthread_mutex_unlock((pthread_mutex_t *)&t->swap_mu);
    return id;
}
state_db *task_state_db(const task *t) { return t->sh->state; }
