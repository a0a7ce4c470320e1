/* task — one task of a stage: its VM, its inputs (a file or stdin for a
 * source task, channels for a keyed task), its outputs (channels to keyed
 * stages, sinks chained in it).  task_step() runs at most one batch: read or
 * pop it, hand it to the task's Lua function once, and route what comes out
 * (task_output.c: shuffled records, sinks, dead letters).
 * Calls vm, channel, source, sink, sched, state, timer, lua_api (the `native`
 * table) and the Lua runtime. */
#ifndef EDDY_TASK_H
#define EDDY_TASK_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
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
} task_shared;

/* A record an earlier run hung on (state.dir/poison.json). */
typedef struct poison {
    char *source;
    int partition;
    int64_t offset;
    char *message;
    atomic_int hit;
} poison;

/* Channels to one downstream keyed stage: one per downstream task. */
typedef struct out_port {
    int stage;
    int ntargets;
    channel **ch;
    batch **pending;            /* the batch being filled for each target */
} out_port;

/* One version of a task's logic: its VM and what depends on the plan it was
 * built from.  A reload prepares a new one off the hot path and the task
 * swaps to it at a barrier. */
typedef struct task_vm {
    struct vm *vm;
    int batch_ref, inputs_ref, finish_ref, tick_ref;   /* the Lua runtime's entry points */
    const plan *p;              /* borrowed: the daemon keeps every plan until exit */
    const stage *st;            /* this task's stage in p */
    int version;
    int *sink_of_node;          /* sink node id -> sinks index, [p->nnodes + 1] */
    int *out_of_node;           /* key_by node id -> outs index, [p->nnodes + 1] */
    uint64_t *node_in, *node_out;   /* records per node, [p->nnodes + 1] */
} task_vm;

/* The state of one window operator, by uid: it outlives VMs. */
typedef struct task_window {
    char *uid;
    int64_t size, advance, offset, lateness;
    struct window_op *w;
} task_window;

typedef struct task {
    sched_entry se;             /* first: sched reaches it through task_sched_entry */
    int id;                     /* 0..ntasks-1, global */
    char name[96];
    task_shared *sh;
    const stage *st;
    int index;                  /* within its stage */
    task_vm cur;                /* the version running */
    pthread_mutex_t swap_mu;    /* held while cur and wins change; readers on other threads take it */
    _Atomic(task_vm *) next;    /* a prepared version waiting for its barrier */
    task_vm *retired;           /* the version swapped out: closed after the first batch on the new one */
    task_window *wins; int nwins;
    eddy_io io;

    channel **in; int nin;      /* keyed task inputs */
    int eos;                    /* inputs that have ended */
    unsigned char *ended;       /* [nin]: input c has ended */
    unsigned char *held;        /* [nin]: input c delivered a barrier and waits for the others */
    int nheld;
    int64_t barrier_version;    /* the version the held barrier announces */
    int64_t held_checkpoint;    /* > 0: the held barriers are of this checkpoint (not a reload) */
    _Atomic int64_t ckpt_req;   /* sources: the checkpoint whose barrier to send at the next batch boundary */
    _Atomic int64_t ckpt_passed;    /* the last checkpoint barrier this task passed (then it waits for release) */
    int64_t *chan_wm;           /* [nin]: watermark of each input (survives reloads) */
    uint8_t *chan_idle;         /* [nin]: input c is idle */
    int64_t sent_wm;            /* the last watermark sent downstream as a mark */
    int idle_sent;              /* an idle mark went downstream and no record since */
    int64_t last_record_ms;     /* sources: processing time of the last record read */
    int input_ended;            /* sources: finished at the end of the input (not by a stop) */
    atomic_int boot_reached;    /* a bootstrap source: read to its end (the others may start once it is drained) */
    int stop_eos;               /* keyed: an input ended because eddy stops (not at the end of input) */
    int64_t wm_at_end;          /* the watermark before finish made it +inf */
    int wants_ticks;            /* keyed: processing-time triggers want the Lua tick function called */
    int64_t last_tick_ms;
    int rr;                     /* round-robin start */
    out_port *outs; int nouts;
    struct sink **sinks; int nsinks;

    struct source *src;         /* source tasks: their partition, of any kind (source.h) */
    int64_t last_mark_ms;       /* when it last sent a marker (monotonic) */
    int64_t marked_position;    /* the position that marker had */
    int source;                 /* source index, or -1 */
    batch *inbatch;             /* source tasks: the batch being read into */
    state_tx *stx;              /* keyed tasks with state: this batch's writes, committed after it */
    timer_index *timers;        /* with stx: the index of its timers (timer.c) */
    uint32_t *kgs; int nkgs;    /* keyed tasks: the key groups this task owns */
    lua_api_env api;            /* what the native functions of its VMs read (lua_api.h) */

    atomic_int status;          /* TASK_* */
    char error[2048];
    atomic_long records_in, records_out, batches;
    atomic_long position;       /* source tasks: byte offset read up to */
    int64_t log_window; int log_count;   /* rate limit of per-record messages */
    int64_t wd_seq; int32_t wd_cur; int64_t wd_since_ms; int wd_armed, wd_interrupted;  /* watchdog */
    int wd_clock;               /* the CPU-time clock (clockid_t) of the worker in the call: set by
                                 * the worker before in_call, read by the watchdog (relaxed atomics) */
    uint64_t wd_call;           /* the VM call the watchdog is watching (vm_call) */
    int64_t last_call_end_us;   /* when the last batch call ended (monotonic) */
    int64_t swapped_at_us;      /* when the task swapped to a new version, 0 once measured */
    atomic_long last_pause_us;  /* last record on the old version -> first on the new */
    atomic_long reloads;        /* versions swapped in */
} task;

/* Creates task `index` of stage `st` with its VM and the user's functions
 * loaded.  Channels are attached afterwards (task_add_input/task_add_output).
 * Returns an owned task, or NULL with err. */
task *task_create(task_shared *sh, const stage *st, int index, int id, char *err, size_t errlen);
void task_destroy(task *t);     /* NULL is a no-op */
int task_add_input(task *t, channel *c);
/* Registers the channels to a downstream stage (takes ownership of the array, not the channels). */
int task_add_output(task *t, int stage, channel **targets, int ntargets);
/* Loads the VM and the operator chain of plan p (after channels are attached). */
int task_start(task *t, char *err, size_t errlen);
/* Builds the task's logic for plan p as version `version`, off the hot path
 * (any thread; the task keeps running).  Returns an owned task_vm or NULL with err. */
task_vm *task_prepare(task *t, const plan *p, int version, char *err, size_t errlen);
void task_vm_destroy(task_vm *tv);   /* NULL is a no-op */
/* Hands t a prepared version (takes ownership); t swaps to it at its next
 * batch boundary (sources) or once a barrier arrived on every input (keyed). */
void task_offer(task *t, task_vm *tv);
int task_version(const task *t);
/* task_windows.c: forgets the window operators of uids that plan p has no window for (after
 * a refused reload, or a swap that let state go); with drop, deletes their
 * stored windows too (only on the task's own thread).  Takes swap_mu. */
void task_forget_windows(task *t, const plan *p, int drop);
step_result task_step(task *t);
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

#endif
