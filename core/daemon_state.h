/* daemon_state — the state of one `eddy run`, private to the daemon's own
 * modules: daemon.c (the lifecycle), admin_api.c (the admin handlers),
 * watchdog.c, recovery.c, reload.c (the reload policy), probation.c (automatic
 * rollback) and restart.c.
 * Nothing else includes this header; other units get what they need through
 * their own parameters (task_shared, the task and channel arrays, hooks).
 *
 * Threads: the main thread builds everything before the workers start and
 * then runs the event loop; every handler, timer and signal callback of the
 * daemon runs on it.  So a field is the event loop's unless its comment
 * says otherwise.  Workers touch only `sh` (see task_shared in task.h for
 * its fields), `ended` and `failed` (atomics, on_task_done), and the tasks
 * and channels themselves (the arrays are fixed once built). */
#ifndef EDDY_DAEMON_STATE_H
#define EDDY_DAEMON_STATE_H

#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include "admin.h"
#include "canary.h"
#include "checkpoint.h"
#include "config.h"
#include "daemon.h"
#include "pipeline.h"
#include "reload.h"
#include "sched.h"
#include "source_kafka.h"
#include "task.h"

typedef struct daemon_state {
    config *cfg;
    plan *p;                      /* the first version's plan (what the tasks were built from) */
    task_shared sh;               /* shared with the workers (fields: task.h) */
    task **tasks; int ntasks;     /* fixed once built: any thread may read the arrays */
    channel **chans; int nchans;
    sched *s;
    struct event_base *base;
    struct event *done_ev, *wd_ev, *poll_ev, *sig_ev[3];
    admin *adm;
    reload_watch *watch;
    struct follow *follow;        /* inotify on the followed files' folders (follow.c), or NULL */
    plan **plans; int nplans;     /* every version's plan: tasks borrow them until exit */
    int version;                  /* the version every task runs (during a canary: the tasks not on it) */
    int last_version;             /* the highest version number given (canary.c: never given twice) */
    canary_run *canary;           /* a canary in progress (canary.c), or NULL */
    int64_t loaded_at_ms;         /* wall clock of that version's load */
    char last_reload_error[2048];
    long reloads_ok, reloads_failed;
    atomic_int ended;             /* tasks done or failed (workers add, on_task_done) */
    atomic_int failed;            /* (workers add, on_task_done) */
    int64_t started_ms;
    char poison_path[PATH_MAX];
    kgroup *group;                /* the consumer of Kafka sources, or NULL */
    int standby_ticks;            /* polls since the standby copies were last planned (event loop) */
    char instance[17];            /* shuffle = "kafka": this instance's id (state.dir/instance), else "" */
    ckpt *ckpt;                   /* checkpoints (exactly_once), or NULL */
    struct event *ckpt_ev, *ckpt_poll_ev;   /* every checkpoint.interval; while one is running */
    int workers_running;          /* the scheduler runs: tasks may be woken */
    int stop_refused;             /* stopping, a checkpoint was refused as the group rebalanced */
    int workers_ran;              /* it did run (a failure after that is a task's, not the config's) */
    char waiting[2600];           /* why the tasks have not started yet (health), or "" */
    struct watchdog_mark *wd_marks; int nwd_marks;
    struct probation *prob;       /* automatic rollback (probation.c) */   /* the watchdog's view of each task's call (watchdog.c) */
} daemon_state;

/* Lifecycle services of daemon.c the other daemon modules call. */

/* The first stop signal (or savepoint --stop): sources end and everything
 * in flight drains; a second one stops at once.  Event loop. */
void daemon_stop_gracefully(daemon_state *d, const char *why);
/* Frees everything d owns (before a restart by exec, or at exit). */
void daemon_free(daemon_state *d);

#endif
