/* driver — a pipeline run in-process on the caller's thread: the real plan,
 * tasks, channels (graph.c), VMs and keyed state, with every source an
 * in-memory one and every sink an in-memory one (source_memory.h), its
 * tasks stepped in a fixed order until nothing more happens.  No worker
 * threads, no event loop, no scheduler, no Kafka, no watchdog thread, and
 * it does not replace the process's clock: a caller that wants a virtual
 * clock installs it (eddy test), one inside a running daemon (a dry run,
 * dryrun.c) keeps the real one, so nothing here touches what the daemon's
 * workers use.  Several drivers may run at once on different threads.
 * Calls config, pipeline, graph, task, state and source_memory. */
#ifndef EDDY_DRIVER_H
#define EDDY_DRIVER_H

#include <stddef.h>
#include <stdint.h>
#include "config.h"
#include "pipeline.h"
#include "source_memory.h"
#include "task.h"

typedef struct driver driver;

/* What a driver runs with. */
typedef struct driver_opts {
    const int *partitions;      /* per source of the plan: its in-memory partitions (>= 1) */
    const char *state_from;     /* a RocksDB checkpoint the keyed state starts as (copied), or NULL: empty */
    int version;                /* ctx.version of the pipeline (>= 1) */
    const char *tmp;            /* where the driver's temporary folder goes (NULL: $TMPDIR or /tmp) */
    int pipes;                  /* a file or stdin source's partitions are pipes the file reader reads (eddy
                                 * test's d:input writes a record's bytes there); 0: every partition exact
                                 * (records go in as a source read them: driver_push) */
} driver_opts;

/* Prepares cfg for a driver: state and dead letters in `dir`, no admin
 * server, file watching, Kafka, checkpoints or shuffle topics; config.testing
 * set (plan_create globs no file and asks Kafka nothing).  Call it before
 * planning (with any folder: driver_open calls it again with its own).
 * 0, or -1 with err. */
int driver_config(config *cfg, const char *dir, char *err, size_t errlen);

/* Builds a driver over plan p (planned with a config driver_config made,
 * sources' memory not set yet).  Takes ownership of cfg and p, even on
 * failure.  Makes its temporary folder, sets each source's in-memory
 * partitions, opens the state (a copy of opts->state_from) and builds the
 * tasks; driver_run starts them.  Returns an owned driver, or NULL with err. */
driver *driver_open(config *cfg, plan *p, const driver_opts *opts, char *err, size_t errlen);
void driver_destroy(driver *d);             /* NULL is a no-op; removes its folder */

/* Partition `partition` of source `source` (borrowed), or NULL. */
mem_partition *driver_partition(driver *d, int source, int partition);
int driver_npartitions(const driver *d, int source);

/* Reloads as eddy reload does: plans `script` (owned by the driver from
 * here, even when refused) and checks it against the running plan
 * (reload_prepare), offers every task its new VM (downstream first) and
 * runs.  0 (driver_failed says whether the run failed), or -1 with err when
 * the version was refused (the running one stays). */
int driver_reload(driver *d, char *script, int allow_dropped_state, char *err, size_t errlen);
int driver_version(const driver *d);        /* 1, then 2 after the first accepted reload, ... */

/* Queues a record into an exact partition (its bytes, key, ts, offset,
 * line and flags as a source read them) of source `source`.  0, or -1. */
int driver_push(driver *d, int source, int partition, const mem_record *r);
/* Ends partition `partition` of source `source`: read to here, then the end. */
void driver_end(driver *d, int source, int partition);
/* Runs the pipeline until nothing more happens, then ticks every task at
 * the clock as it is and runs what that sent.  0, or -1 when a task failed
 * (driver_failed says which and why; the driver is then done). */
int driver_run(driver *d);
const char *driver_failed(const driver *d);  /* "" while none failed */

/* The outputs (sinks and side outputs) written so far; read them from
 * each queue's head and move the head (mem_queue_drop_read). */
mem_outputs *driver_outputs(driver *d);
/* Records the tasks sent to the error policy so far (summed). */
long driver_errors(driver *d);
const plan *driver_plan(const driver *d);    /* the running version's */
const config *driver_cfg(const driver *d);
state_db *driver_state(driver *d);          /* the keyed state, or NULL */
void driver_flush_dead_letters(driver *d);  /* what was written reaches the file */
/* Its tasks (borrowed; n set), e.g. for a watchdog on another thread. */
task **driver_tasks(driver *d, int *n);

#endif
