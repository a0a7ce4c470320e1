/* probation — automatic rollback (reload.probation, reload.max_error_rate,
 * reload.hold_commits).  After an accepted reload the new version is on
 * probation: a timer on the event loop sums, over the tasks that swapped to
 * it, the records they took in and the records that went through the error
 * policy since the swap; once the new version's source tasks took in at
 * least PROBATION_MIN_RECORDS records, an error rate (errors / source
 * records in) above reload.max_error_rate rolls it back.  A task that fails
 * on the new version rolls it back too.  Past reload.probation it is kept.
 *
 * The version rolled back to is the last one that was not on probation (a
 * reload during a probation does not make the version on probation the one
 * to go back to).  Its kept copy (state.dir/versions/<N>, versions.c) is
 * copied to state.dir/probation/prev/ when the probation begins, so that a
 * restarted process can still run it.
 *
 * Two ways back:
 *   - live, at a barrier, through the reload mechanism (reload --to the
 *     previous version, with state the new version added let go): the error
 *     rate passed the bound and commits are not held;
 *   - by restarting the process (the same pid, as restart.c does): a task
 *     failed (its VM and batch are gone), or reload.hold_commits is set
 *     (the output since the reload's barrier must be discarded, and only
 *     recovery from the checkpoint taken at that barrier does that), or eddy
 *     was killed during a probation.  state.dir/probation/rollback.json
 *     tells the next start to plan the kept copy instead of the pipeline's
 *     files (probation_plan_at_start); it stays until the next accepted
 *     reload or a clean end, so that further restarts keep running it.
 *
 * hold_commits: a checkpoint is taken and committed at the reload's barrier
 * (just before the new version is offered, probation_barrier_checkpoint),
 * and no checkpoint starts during the probation (on_checkpoint asks
 * probation_holds_checkpoints); the output of the probation stays in the
 * open Kafka transaction or in hidden part files until the first
 * checkpoint after it.  With Kafka sinks the transaction is open for the
 * whole probation, so probation plus checkpoint.interval must be shorter
 * than the producer's transaction.timeout.ms: refused at start otherwise.
 *
 * Part of the daemon (daemon_state.h), on the event loop; calls reload,
 * checkpoint, versions, files, task and log. */
#ifndef EDDY_PROBATION_H
#define EDDY_PROBATION_H

#include <stddef.h>
#include <jansson.h>
#include "daemon.h"
#include "pipeline.h"

/* The error rate is judged once the new version read at least this many
 * records (so one bad record among the first few does not roll it back);
 * a version that read fewer by the end of its probation is kept. */
#define PROBATION_MIN_RECORDS 100

struct daemon_state;

/* At start, instead of plan_create: the plan of the kept previous version
 * when the last process of this run rolled back (or was killed during a
 * probation), else of the pipeline's files.  Also refuses hold_commits with
 * Kafka sinks whose transactions would time out.  NULL with err. */
plan *probation_plan_at_start(struct daemon_state *d, char *err, size_t errlen);
/* hold_commits, before a reload is offered: takes a checkpoint and waits
 * for its commit.  0 (also when there is nothing to do), or an HTTP-like
 * status (503) with msg. */
int probation_barrier_checkpoint(struct daemon_state *d, char *msg, size_t len);
/* An accepted reload offered version `version`; prev is the version that
 * ran until now.  Starts (or restarts) the probation when reload.probation
 * is set.  Call before the new version is kept (versions_keep may trim
 * prev's copy). */
void probation_begin(struct daemon_state *d, int version, int prev);
/* 1 while a rollback is the one offering a version (not a new probation). */
int probation_rolling_back(const struct daemon_state *d);
/* 1 while checkpoints must not start (hold_commits during a probation). */
int probation_holds_checkpoints(const struct daemon_state *d);
/* At the end of a run with exit code `code`: 1 when the process must
 * restart on the previous version (rollback.json written), else 0. */
int probation_wants_restart(struct daemon_state *d, int code);
/* A clean end: the probation's files go (the next run plans the files). */
void probation_clean_end(struct daemon_state *d);
/* /status pipeline.last_rollback ({from, to, version, reason, at}) or null;
 * pipeline.probation ({version, ends_at, records_in, errors}) or null. */
json_t *probation_last_json(const struct daemon_state *d);
json_t *probation_json(const struct daemon_state *d);
long probation_rollbacks(const struct daemon_state *d);   /* eddy_reloads_total{result="rolled_back"} */
void probation_free(struct daemon_state *d);

#endif
