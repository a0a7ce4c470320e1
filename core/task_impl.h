/* task_impl — the inside of a task, private to the task's own files
 * (task*.c).  Other units go through task.h's functions (the checkpoint
 * coordinator through task_ckpt.c's; lua_api.c through lua_api_env).
 *
 * Threads.  A task runs on one worker at a time (the scheduler's
 * guarantee), so most of it belongs to "the worker running the task" [W]
 * and needs no lock.  The other tags:
 *   [B]  set while the daemon builds the tasks, before the workers start;
 *        read-only afterwards (any thread);
 *   [L]  the event loop (main thread: admin handlers, the watchdog, the
 *        poll timer, the checkpoint coordinator);
 *   [A]  atomics: any thread;
 *   swap_mu: cur (the running version) and wins change under it on [W],
 *        and [L] reads them under it.
 * Fields without a tag belong to [W]. */
#ifndef EDDY_TASK_IMPL_H
#define EDDY_TASK_IMPL_H

#include "task.h"

/* Channels to one downstream keyed stage: one per downstream task. */
typedef struct out_port {
    int stage;
    int ntargets;
    channel **ch;
    batch **pending;            /* the batch being filled for each target */
    /* shuffle = "kafka" (task_shuffle.c): the targets are the partitions of
     * the stage's repartition topic (ch is NULL), written through remote */
    struct kafka_sink *remote;
    uint32_t input;             /* this task's input index at every target */
    char *fbuf; size_t fcap;    /* a frame being encoded */
} out_port;

/* One version of a task's logic: its VM and what depends on the plan it was
 * built from.  A reload prepares a new one off the hot path and the task
 * swaps to it at a barrier. */
struct task_vm {
    struct vm *vm;
    int batch_ref, inputs_ref, finish_ref, tick_ref;   /* the Lua runtime's entry points */
    const plan *p;              /* borrowed: the daemon keeps every plan until exit */
    const stage *st;            /* this task's stage in p */
    int version;
    int64_t epoch;              /* the roll-out that offered it (task_offer): its barriers carry it */
    int park_old;               /* swapping to it parks the version it replaces (task_offer_parking) */
    int *sink_of_node;          /* sink node id -> sinks index, [p->nnodes + 1] */
    int *out_of_node;           /* key_by node id -> outs index, [p->nnodes + 1] */
    uint64_t *node_in, *node_out;   /* records per node, [p->nnodes + 1] */
};

/* The state of one window operator, by uid: it outlives VMs. */
typedef struct task_window {
    char *uid;
    int64_t size, advance, offset, lateness;
    struct window_op *w;
} task_window;

struct task {
    sched_entry se;             /* first: sched reaches it through task_sched_entry.  [sched: its lock] */
    int id;                     /* 0..ntasks-1, global  [B] */
    char name[96];              /* [B] */
    task_shared *sh;            /* [B] (its fields: task_shared) */
    const stage *st;            /* the running version's stage  [B; W writes under swap_mu at a swap; others read under swap_mu] */
    int index;                  /* within its stage  [B] */
    task_vm cur;                /* the version running  [W writes under swap_mu; others read under swap_mu] */
    pthread_mutex_t swap_mu;    /* held while cur and wins change; readers on other threads take it */
    _Atomic(task_vm *) next;    /* a prepared version waiting for its barrier  [A: L offers, W takes] */
    task_vm *retired;           /* the version swapped out: closed after the first batch on the new one  [W] */
    task_window *wins; int nwins;   /* [W writes under swap_mu; L reads under swap_mu] */
    eddy_io io;                 /* [W]; the watchdog (L) reads in_call/seq/cur (relaxed), status reads wm, errors */

    /* Inputs and barriers: [B] arrays, contents [W]; a restore (task_ckpt.c) sets
     * chan_wm/chan_idle before the workers run; /status reads them racily
     * (figures for a human, no decision taken on them). */
    channel **in; int nin;      /* keyed task inputs (NULL: through Kafka, shuffle = "kafka") */
    task **in_up;               /* [nin]: the upstream task of each input */
    int eos;                    /* inputs that have ended */
    unsigned char *ended;       /* [nin]: input c has ended */
    unsigned char *held;        /* [nin]: input c delivered a barrier and waits for the others */
    int nheld;
    int64_t barrier_version;    /* the roll-out (epoch) the held barrier announces */
    /* Roll-outs (reloads, canaries, promotions, rollbacks): each offers every
     * running task either a version (next) or a pass (pass_epoch: the task
     * keeps its version but sends the roll-out's barrier on, so the keyed
     * tasks that do switch can align on every input). */
    int64_t offered_epoch;      /* roll-outs offered so far  [L] */
    _Atomic int64_t pass_epoch; /* a roll-out this task keeps its version through  [A: L sets, W reads] */
    _Atomic int64_t epoch_done; /* the last roll-out this task swapped or passed at  [A: W sets] */
    _Atomic(task_vm *) parked;  /* a canary's task: the version it left, kept to return to  [A: W parks, L offers it back] */
    atomic_int drop_parked;     /* the parked version is no longer wanted: closed at the next pass  [A: L sets, W clears] */
    /* Per-version counters (task_status.c): what the versions this task ran
     * before the current one counted, and the task's totals at its last swap. */
    struct version_counts { int version; long in, out, errors, skipped, dead; } vcounts[8];
    int nvcounts;               /* [W writes under swap_mu; L reads under swap_mu] */
    long base_in, base_out, base_errors, base_skipped, base_dead;   /* [W writes under swap_mu] */
    int64_t held_checkpoint;    /* > 0: the held barriers are of this checkpoint (not a reload) */
    _Atomic int64_t ckpt_req;   /* sources: the checkpoint whose barrier to send at the next batch boundary  [A: L asks] */
    _Atomic int64_t ckpt_passed;    /* the last checkpoint barrier this task passed (then it waits for release)  [A: L reads] */
    int64_t *chan_wm;           /* [nin]: watermark of each input (survives reloads) */
    uint8_t *chan_idle;         /* [nin]: input c is idle */
    int64_t sent_wm;            /* the last watermark sent downstream as a mark */
    int idle_sent;              /* an idle mark went downstream and no record since */
    int64_t last_record_ms;     /* sources: processing time of the last record read */
    int input_ended;            /* sources: finished at the end of the input (not by a stop); read after the workers stopped */
    atomic_int boot_reached;    /* a bootstrap source: read to its end (the others may start once it is drained)  [A] */
    int stop_eos;               /* keyed: an input ended because eddy stops (not at the end of input) */
    int64_t wm_at_end;          /* the watermark before finish made it +inf; read after the workers stopped */
    int wants_ticks;            /* keyed: processing-time triggers want the Lua tick function called  [A: relaxed; a build sets it] */
    int64_t last_tick_ms;
    int rr;                     /* round-robin start */
    out_port *outs; int nouts;
    int remote_outs;            /* some outputs go through Kafka (shuffle = "kafka") */
    struct shuffle_in *rin;     /* a keyed task reading its repartition partition (task_shuffle.c), else NULL */
    struct sink **sinks; int nsinks;

    /* The source: [B] pointers; the reader is [W]'s, and recovery (main
     * thread) reads and seeks it only while no worker runs. */
    struct source *src;         /* source tasks: their partition, of any kind (source.h) */
    int64_t last_mark_ms;       /* when it last sent a marker (monotonic) */
    int64_t marked_position;    /* the position that marker had */
    int source;                 /* source index, or -1 */
    batch *inbatch;             /* source tasks: the batch being read into */
    struct replay_ring *ring;   /* source tasks in eddy run: the last records read, for dry runs (replay.h) [W adds; dry runs copy under its mutex] */
    state_tx *stx;              /* keyed tasks with state: this batch's writes, committed after it */
    timer_index *timers;        /* with stx: the index of its timers (timer.c) */
    uint32_t *kgs; int nkgs;    /* keyed tasks: the key groups this task owns */
    /* The rest of the batch loop's working state: [W] */
    lua_api_env api;            /* what the native functions of its VMs read (lua_api.h) */

    atomic_int status;          /* TASK_*  [A: W writes] */
    char error[2048];           /* [W] written before status becomes TASK_FAILED; read after it */
    atomic_long records_in, records_out, batches;   /* [A: W adds] */
    atomic_long position;       /* source tasks: byte offset read up to  [A: W writes] */
    /* [W] again: */
    int64_t log_window; int log_count;   /* rate limit of per-record messages */
    int wd_clock;               /* the CPU-time clock (clockid_t) of the worker in the call: set by
                                 * the worker before in_call, read by the watchdog  [A: relaxed] */
    int64_t last_call_end_us;   /* when the last batch call ended (monotonic) */
    int64_t swapped_at_us;      /* when the task swapped to a new version, 0 once measured */
    atomic_long last_pause_us;  /* last record on the old version -> first on the new  [A: W writes] */
    atomic_long reloads;        /* versions swapped in  [A: W adds] */
};

/* ---- task.c's steps, for task_shuffle.c ---- */
int task_call_lua(task *t, int ref, batch *b, int arg);   /* 0, or -1 after failing the task */
step_result task_finish(task *t);
void task_fail(task *t, const char *fmt, const char *msg);
void task_swap_version(task *t);
void task_rollout_at_boundary(task *t);
void task_push_all(task *t, msg_kind kind, int64_t value);
int task_pass_checkpoint(task *t, int64_t id);
step_result task_read_source(task *t, int *n_read, int *eof);
void task_forward_watermark(task *t);
int task_maybe_tick(task *t);

/* ---- task_shuffle.c: shuffle = "kafka" ---- */
int task_shuffle_open(task *t, char *err, size_t errlen);     /* a keyed task reading a repartition topic */
void task_shuffle_close(task *t);
int task_shuffle_flush(task *t, out_port *op);                /* the pending batches as frames.  0 or -1 */
void task_shuffle_mark(task *t, out_port *op, msg_kind kind, int64_t value);
step_result task_step_remote(task *t);
int task_shuffle_producers(task *t, struct kafka_sink **ks, int max);
int task_shuffle_save_marks(task *t);
void task_shuffle_status(task *t, json_t *out);                /* a keyed task's restore progress */                         /* its input watermarks, for the changelog.  0 or -1 */

#endif
