/* checkpoint — consistent snapshots of one daemon and recovery from them
 * (guarantee = "exactly_once").  Every checkpoint.interval the coordinator
 * (event loop) asks each source task for barrier n; a source passes it
 * between two batches, a keyed task once it came on every input
 * (alignment).  A task that passed n prepares its sinks (a file sink fsyncs
 * and closes its hidden part file of n) and waits; when every task passed n
 * (or ended) the state store is snapshotted (a RocksDB checkpoint: hard
 * links), the manifest (positions, watermarks, part files, pipeline hash,
 * uids, key groups) is written, and marking it committed is the commit
 * point.  Then the tasks go on, and the post-commit steps run: part files
 * renamed to their final names, old checkpoints deleted, Kafka offsets
 * committed.  Recovery restores the newest committed checkpoint and redoes
 * its post-commit steps; anything prepared after it is deleted.
 *
 *   state.dir/checkpoints/<n>/manifest.json   "committed": true once n is
 *   state.dir/checkpoints/<n>/db/             the RocksDB checkpoint
 *   state.dir/checkpoints/last-id             ids go on across jobs
 *
 * With Kafka sinks (one transaction per checkpoint, kafka.h) the
 * coordinator flushes the transaction with the sinks' prepare, and its
 * commit is the commit point, after the manifest is written and before it
 * is marked committed.
 *
 * EDDY_CRASH_AT=<point>:<k> kills the daemon (SIGKILL) the k-th time it
 * reaches point: prepared, manifest, txn_committed, committed or
 * post_commit (tests).
 * Calls state, sink, kafka, task, source (a partition's position, through
 * its kind), window and log. */
#ifndef EDDY_CHECKPOINT_H
#define EDDY_CHECKPOINT_H

#include <stdint.h>
#include <jansson.h>
#include "task.h"

struct evbuffer;
typedef struct ckpt ckpt;

/* ---- before the tasks exist ---------------------------------------------- */

/* The newest committed checkpoint under state_dir, or 0. */
int64_t ckpt_newest_committed(const char *state_dir);
/* Checks the manifests a restore would read: from the newest checkpoint
 * down to the newest committed one, each manifest.json must be missing (a
 * checkpoint that crashed before its manifest was written) or readable JSON
 * with its "id".  A damaged one may be that of the newest committed
 * checkpoint, whose output is published: falling back past it would publish
 * that output again, so this is -1 with err naming the file. */
int ckpt_check_manifests(const char *state_dir, char *err, size_t errlen);
/* The newest checkpoint newer than the newest committed one whose manifest
 * was written with a Kafka transaction (its commit point), or 0; and marking
 * one committed, once Kafka says its transaction was.  0 or -1. */
int64_t ckpt_newest_prepared(const char *state_dir);
int ckpt_mark_committed(const char *state_dir, int64_t id);
/* Replaces state_dir/db by checkpoint id's snapshot of it.  0, or -1 with err. */
int ckpt_restore_db(const char *state_dir, int64_t id, char *err, size_t errlen);
/* Replaces state_dir/db by savepoint folder sp's copy.  0, or -1 with err. */
int ckpt_restore_savepoint_db(const char *state_dir, const char *sp, char *err, size_t errlen);
/* Whether a pipeline with stateful operators uids[0..nuids) may start from
 * savepoint sp: the same max_parallelism, and every uid with state in the
 * savepoint still there (unless allow_missing).  0, or -1 with err. */
int ckpt_check_savepoint(const char *sp, const char *const *uids, int nuids, int max_parallelism, int allow_missing,
                         char *err, size_t errlen);
/* A new job: deletes every checkpoint (the id counter stays, so part file
 * names never repeat). */
void ckpt_forget_all(const char *state_dir);

/* ---- the coordinator ------------------------------------------------------ */

/* For the daemon's tasks (borrowed); the checkpoint ids, and so the next
 * part files' numbers, go on from those state_dir has seen.  Owned, or NULL. */
ckpt *ckpt_create(task_shared *sh, task **tasks, int ntasks, const char *state_dir, int retain);
void ckpt_destroy(ckpt *c);     /* NULL is a no-op */
/* After the tasks are built, before they run: continues from committed
 * checkpoint id (0: none) — sources seek, watermarks are restored, its
 * post-commit steps redone, and what was prepared after it deleted.  0, or -1 with err. */
int ckpt_recover(ckpt *c, int64_t id, char *err, size_t errlen);
/* After the tasks are built: continues from savepoint sp (positions and
 * watermarks by source, file and task name; state by uid and key group,
 * whatever the parallelism now).  0, or -1 with err. */
int ckpt_recover_savepoint(ckpt *c, const char *sp, char *err, size_t errlen);
/* One entry of a manifest's (or positions.json's) "sources": the source
 * task among tasks[ntasks] that reads that source's file (or partition
 * label) seeks to its offset (and line) and takes back its watermark and
 * max_ts.  The one way a task's position is restored, from a checkpoint, a
 * savepoint or a stopped run alike.  1 when done, 0 when no task reads that
 * input, -1 with err when the seek failed.  Before the workers run. */
int ckpt_seek_source(task **tasks, int ntasks, json_t *e, char *err, size_t errlen);
/* Event loop: takes a checkpoint now (after the one running, if any) and
 * waits for it up to timeout_ms, calling serve(ud) meanwhile (NULL: none);
 * `what` names it in err.  Its id, or -1 with err (failed, or still
 * running: it completes later through ckpt_poll). */
int64_t ckpt_now(ckpt *c, int64_t timeout_ms, const char *what, void (*serve)(void *), void *ud, char *err,
                 size_t errlen);
/* Event loop: takes a checkpoint now (waiting for it, up to timeout_ms) and
 * copies it into state_dir/savepoints/savepoint-<id>-<time>/ (manifest and
 * every state file: no links).  0 with its absolute path, or -1 with err.
 * stop: the tasks stay at the checkpoint's barrier once it is committed
 * (nothing is read or processed past the savepoint) until ckpt_release;
 * the caller sets stopping first, so the savepoint is the final state. */
int ckpt_savepoint(ckpt *c, const char *state_dir, int64_t timeout_ms, int stop, char *path, size_t plen, char *err,
                   size_t errlen);
/* Event loop: lets the tasks a stop-with-savepoint holds go on (to their end). */
void ckpt_release(ckpt *c);
/* Event loop: starts the next checkpoint unless one is running.  1 when started. */
int ckpt_begin(ckpt *c);
/* Event loop: completes the running checkpoint once every task passed its
 * barrier or ended.  1 when it ended (committed or failed), 0 otherwise. */
int ckpt_poll(ckpt *c);
int ckpt_running(const ckpt *c);
int64_t ckpt_completed(const ckpt *c);   /* checkpoints this process committed */
int64_t ckpt_last(const ckpt *c);        /* the last committed one (restored or taken), or 0 */
/* After the workers stopped (every task done): the last checkpoint.  0 or -1. */
int ckpt_final(ckpt *c);
/* /status's last_checkpoint (owned) and the /metrics families. */
json_t *ckpt_status_json(ckpt *c);
void ckpt_metrics(ckpt *c, struct evbuffer *out);

#endif
