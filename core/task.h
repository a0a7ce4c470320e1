/* task — one task of a stage: its VM, its inputs (a file or stdin for a
 * source task, channels for a keyed task), its outputs (channels to keyed
 * stages, sinks chained in it).  task_step() runs at most one batch: read or
 * pop it, hand it to the task's Lua function once, and route what comes out.
 * A task is opaque: its inside (task_impl.h, with which thread may touch
 * which field) is for task*.c; the rest of eddy asks through the functions
 * below (its facts, counters, /status and /explain objects, metric samples,
 * the call in progress, its source partition).  Calls vm, channel, source,
 * sink, sched and the Lua runtime. */
#ifndef EDDY_TASK_H
#define EDDY_TASK_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <jansson.h>
#include "batch.h"
#include "channel.h"
#include "codec.h"
#include "config.h"
#include "ffi_api.h"
#include "lua_api.h"
#include "pipeline.h"
#include "sched.h"
#include "state.h"

struct vm;
struct evbuffer;
struct sink;
struct source;

typedef enum { STEP_PROGRESS, STEP_IDLE, STEP_BLOCKED, STEP_DONE, STEP_FAILED } step_result;
enum { TASK_RUNNING = 0, TASK_DONE = 1, TASK_FAILED = 2 };

#define WM_IDLE (INT64_MIN + 1)     /* a CH_WATERMARK value: the sender's input is idle */
#define WM_END ((int64_t)1 << 62)   /* the watermark of an input that ended (+inf for Lua) */
#define EOS_STOP 1                  /* a CH_EOS value: the input ended because eddy stops */

/* What every task shares; owned by the daemon. */
typedef struct task_shared {
    const config *cfg;
    const plan *p;
    const char *lua_dir;
    pthread_mutex_t dead_letter_mu;
    FILE *dead_letter;          /* opened on first use */
    pthread_mutex_t stdout_mu;  /* the stdout sink writes whole batches under it */
    atomic_int stopping;        /* graceful stop: sources end at their next step */
    atomic_int aborting;        /* a task failed: everything stops at once */
    int version;                /* pipeline version number */
    struct poison *poison;      /* a record an earlier run hung on, or NULL */
    struct kafka *kafka;        /* the Kafka connection, when the pipeline or config uses Kafka */
    struct acks *acks;          /* markers for committing Kafka offsets, when there are Kafka sources */
    state_db *state;            /* keyed state (RocksDB), when the pipeline has stateful keyed operators */
    int64_t mark_interval_ms;   /* how often a Kafka source task sends a marker */
    _Atomic int64_t ckpt_released;   /* tasks that passed this checkpoint's barrier (or an earlier one) go on */
    int continuing;             /* this run goes on from an earlier one (positions, a savepoint): sinks append */
    struct task **boot; int nboot;   /* the tasks of bootstrap sources (task_bootstrap_add) */
    atomic_int boot_open;       /* every bootstrap source was read to its end and drained: the others read */
    struct mem_outputs *memory; /* eddy test (testing.c): sinks and side outputs write here, and the driver
                                 * steps the tasks and says when they tick; NULL in eddy run */
} task_shared;

/* A record an earlier run hung on (state.dir/poison.json). */
typedef struct poison {
    char *source;
    int partition;
    int64_t offset;
    char *message;
    atomic_int hit;
} poison;

typedef struct task_vm task_vm;     /* one version of a task's logic (task_impl.h) */
typedef struct task task;           /* opaque outside task*.c (task_impl.h) */

/* Creates task `index` of stage `st` with its VM and the user's functions
 * loaded.  Channels are attached afterwards (task_add_input/task_add_output).
 * Returns an owned task, or NULL with err. */
task *task_create(task_shared *sh, const stage *st, int index, int id, char *err, size_t errlen);
void task_destroy(task *t);     /* NULL is a no-op */
/* c NULL: an input that comes through Kafka (shuffle = "kafka"): its
 * records and marks arrive in the task's repartition partition. */
int task_add_input(task *t, channel *c);
int task_add_remote_input(task *t, channel *c, task *up);   /* c NULL: through Kafka, from up */
int task_ninputs(const task *t);
/* standby = N (event loop): whether this instance keeps a warm copy of keyed
 * task t's state while another owns it (task_shuffle.c). */
void task_set_standby(task *t, int on);
int task_is_remote_keyed(const task *t);
/* A keyed task's restore (shuffle = "kafka") as metric samples: which 0
 * records and 1 bytes restored, 2 records left, 3 records/s, 4 records its
 * standby copy applied. */
struct evbuffer;
/* 1 when t's keyed state is there for its partition's current assignment
 * (restored from the changelogs; always for a task that reads no
 * repartition partition), so GET /state may answer from it.  Event loop. */
int task_shuffle_ready(task *t);
void task_restore_samples(task *t, struct evbuffer *out, const char *name, int which);        /* a keyed task reading a repartition partition */
/* Registers the channels to a downstream stage (takes ownership of the array, not the channels). */
int task_add_output(task *t, int stage, channel **targets, int ntargets);
/* shuffle = "kafka": the downstream stage's tasks are the ntargets
 * partitions of its repartition topic; this task is their input `input`
 * (task_shuffle.c).  0, or -1 with err. */
int task_add_remote_output(task *t, int stage, int ntargets, uint32_t input, const char *topic, char *err,
                           size_t errlen);
/* Loads the VM and the operator chain of plan p (after channels are attached). */
int task_start(task *t, char *err, size_t errlen);
/* Builds the task's logic for plan p as version `version`, off the hot path
 * (any thread; the task keeps running).  Returns an owned task_vm or NULL with err. */
task_vm *task_prepare(task *t, const plan *p, int version, char *err, size_t errlen);
void task_vm_destroy(task_vm *tv);   /* NULL is a no-op */
/* Hands t a prepared version (takes ownership); t swaps to it at its next
 * batch boundary (sources) or once a barrier arrived on every input (keyed). */
void task_offer(task *t, task_vm *tv);
/* A roll-out in which t keeps its version (a canary's, a promotion's or a
 * rollback's other tasks): a source task sends the roll-out's barrier at its
 * next batch boundary, a keyed task passes it on once it arrived on every
 * input, without swapping.  Event loop. */
void task_pass(task *t);
/* The same, and the version tv replaces is kept (parked) when t swaps:
 * task_offer_parked hands it back (a canary's rollback), task_drop_parked
 * lets it go (its promotion).  Event loop. */
void task_offer_parking(task *t, task_vm *tv);
/* Offers t the version it parked again: 0, or -1 when it parked none. */
int task_offer_parked(task *t);
/* Offers t a pass (task_pass) through which it closes its parked version. */
void task_pass_dropping_parked(task *t);
/* 1 while t has not reached the last roll-out offered to it. */
int task_rollout_pending(const task *t);
int task_version(const task *t);
/* Per-version counters of t (the versions it ran, current included; up to
 * 8, oldest dropped): calls fn once per version.  Event loop. */
typedef void (*task_version_fn)(void *ud, task *t, int version, long in, long out, long errors, long skipped,
                                long dead_letters);
void task_version_counters(task *t, task_version_fn fn, void *ud);
/* task_windows.c: forgets the window operators of uids that plan p has no window for (after
 * a refused reload, or a swap that let state go); with drop, deletes their
 * stored windows too (only on the task's own thread).  Takes swap_mu. */
void task_forget_windows(task *t, const plan *p, int drop);
step_result task_step(task *t);
/* eddy test's driver (testing.c), between steps: runs t's processing-time
 * tick now (in eddy run the task paces its own ticks; under a driver only
 * this runs them).  0, or -1 when the task failed. */
int task_tick(task *t);
/* eddy test: a source task's watermark moves to wm (never back), and the
 * tasks downstream are told.  1 when it moved. */
int task_advance_watermark(task *t, int64_t wm);
/* Ends the task's sinks (flush, fsync, close); called once all workers stopped. */
int task_close_sinks(task *t);
sched_entry *task_sched_entry(task *t);
int task_pollable(const task *t);
/* Registers t as a task of a bootstrap source (before the workers start).  0 or -1. */
int task_bootstrap_add(task_shared *sh, task *t);   /* a source that may have more input later (follow, stdin, Kafka) */
/* 1 when a channel to a downstream task is full (backpressure).  Any thread. */
int task_outputs_full(task *t);

/* ---- task_output.c: routing to keyed tasks ---- */
/* The output (index in t->outs) of key_by node `node` of the running
 * version, or -1 when it has none.  tp is a task. */
int task_output_of(void *tp, int node);
/* Appends a packed record (p[0..n), with key, event time ts and watermark
 * wm) to the batch for the keyed task that owns key's key group, through the
 * output of key_by node `node` (task_output_of >= 0); carry copies the
 * headers of the input record being processed.  The batch goes downstream at
 * task_flush_outputs.  0, or -1 out of memory. */
int task_shuffle(void *tp, int node, const char *key, size_t klen, const char *p, size_t n, int64_t ts, int64_t wm,
                 int carry);
/* Moves every partly filled output batch into its channel.  0, or -1. */
int task_flush_outputs(task *t);

/* ---- what other units read of a task (task_status.c) ---------------------- */

const char *task_name(const task *t);      /* any thread */
int task_index(const task *t);             /* within its stage */
int task_stage(const task *t);             /* its stage's id */
int task_source(const task *t);            /* a source task's source index, or -1 */
/* A source task's ring of the last records it read (replay.h; dry runs), or
 * NULL (reload.dry_run_records = 0, eddy test, a repartition topic).  Borrowed. */
struct replay_ring *task_replay_ring(const task *t);
state_db *task_state_db(const task *t);    /* the keyed state store the tasks share, or NULL */
int task_status(const task *t);            /* TASK_*; any thread */
const char *task_status_name(int status);  /* "running", "done", "failed" */
const char *task_error(const task *t);     /* why it failed: read once task_status() says TASK_FAILED */
void task_set_sched(task *t, sched *s);    /* before the workers start */

/* Counters, for metrics and logs; any thread (atomics; the VM's memory
 * under swap_mu). */
typedef struct task_counters {
    long records_in, records_out, errors, skipped, dead_letters;
    size_t vm_memory;
    int64_t watermark;          /* TS_NONE before any; WM_END and above once ended */
    long last_pause_us;         /* the last reload's pause */
} task_counters;
void task_get_counters(task *t, task_counters *c);
/* Records in and errors since t swapped to the version it runs (all of
 * them when it never swapped); any thread (probation.c). */
void task_version_counts(task *t, long *in, long *errors);
/* GET /status: the task's object (counters, version, watermark, its source
 * partition or its inputs and which holds the watermark back).  Owned.
 * Event loop. */
json_t *task_status_json(task *t);
/* GET /explain/UID: appends to `tasks` one object per window operator of
 * uid `uid` that t runs (why its oldest window has not fired); returns how
 * many.  Event loop. */
int task_explain_json(task *t, const char *uid, json_t *tasks);
/* Metric samples of family `name` (the caller wrote the family line): per
 * operator, records in (dir 0) or out (1); per window operator, records
 * dropped late (which 0) or open windows (1).  Event loop. */
void task_operator_samples(task *t, struct evbuffer *out, const char *name, int dir);
/* Calls fn for each operator of t's running version with its records in
 * and out (this version's counts).  Any thread. */
typedef void (*task_operator_fn)(void *ud, task *t, const node *nd, uint64_t in, uint64_t out);
void task_operators(task *t, task_operator_fn fn, void *ud);
void task_window_samples(task *t, struct evbuffer *out, const char *name, int which);

/* The call in progress, for the watchdog (event loop) and the crash handler
 * (the task's own worker, in a signal handler). */
/* 1 while t is in a Lua call, with its progress marks (batch seq, record). */
int task_in_call(const task *t, int64_t *seq, int32_t *cur);
uint64_t task_call_id(task *t);            /* vm_call() of the running version */
/* The CPU time in ms of the worker thread running t's call (the clock it
 * stored before entering the call, task.c worker_clock): the watchdog
 * measures a call by what it ran, not by the wall clock. */
int64_t task_call_cpu_ms(const task *t);
/* A call that overran: arms the VM's hook (arm) and/or interrupts it with
 * reason `interrupt` (non-NULL), if `call` is still the one running. */
void task_call_overrun(task *t, uint64_t call, int arm, const char *interrupt);
const eddy_rec *task_current_record(const task *t);   /* the record the call is on, or NULL */
const node *task_current_node(const task *t);         /* the operator it is in, or NULL */
const plan *task_plan(const task *t);                 /* the plan of the running version */

/* A source task's partition (daemon.c, recovery.c). */
int task_id(const task *t);                           /* 0..ntasks-1, global */
struct source *task_src(const task *t);               /* its partition, of any kind (source.h), or NULL */
int task_input_ended(const task *t);                  /* it read all of its input (after the workers stopped) */
/* What a stopped source saves beside its position: its watermark before
 * the end made it +inf, and the highest event time it read. */
void task_end_marks(const task *t, int64_t *wm, int64_t *maxts);

/* ---- checkpoints (task_ckpt.c; called by checkpoint.c on the event loop,
 * while the task's worker is held at the barrier, after it ended, or before
 * the workers start) -------------------------------------------------------- */
/* A source task's partition as a manifest keeps it (its kind says how), or NULL. */
json_t *task_ckpt_source(task *t);
/* A running keyed task's watermarks for a manifest's "tasks", or NULL. */
json_t *task_ckpt_watermarks(task *t);
void task_ckpt_sinks_prepared(task *t, json_t *parts);   /* appends what the commit finishes */
void task_ckpt_sinks_committed(task *t);
void task_ckpt_sinks_abort(task *t);          /* recovery: what no checkpoint committed goes */
void task_ckpt_sinks_next(task *t, int64_t next);   /* the id the sinks' next checkpoint will have */
void task_ckpt_request(task *t, int64_t id);  /* a source task starts barrier id (others: nothing) */
int64_t task_ckpt_passed(const task *t);      /* the last barrier it passed; any thread */
/* A task that ended has no worker: its sinks are prepared for id here.  0,
 * or -1 with the sink's error in err. */
int task_ckpt_prepare_ended(task *t, int64_t id, char *err, size_t errlen);
/* 1 when t is the source task of partition `label` of source src (NULL: any source). */
int task_reads(const task *t, const char *src, const char *label);
/* Continues t's partition where manifest entry e says, with its watermark.  0 or -1. */
int task_ckpt_restore_source(task *t, json_t *e, char *err, size_t errlen);
/* A keyed task's input watermarks from a manifest's "tasks" entry e (ignored
 * when the number of inputs changed). */
void task_ckpt_restore_watermarks(task *t, json_t *e);

#endif
