/* restart — restart.* under exactly_once: a run that failed after its
 * workers ran (a task failed, a sink refused) re-execs eddy with the same
 * command line (same pid), after restart.delay (doubling up to
 * restart.max_delay when exponential), at most restart.attempts times
 * (EDDY_RESTART_ATTEMPT counts them); the new process recovers from the last
 * committed checkpoint, or from the savepoint until this run committed one.
 * A rollback (probation.c) re-execs too, under either guarantee, at once and
 * not counted in the attempts.
 * Part of the daemon (daemon_state.h), on the main thread once the run
 * ended.  Calls checkpoint (ckpt_completed), the daemon (daemon_free) and
 * execv. */
#ifndef EDDY_RESTART_H
#define EDDY_RESTART_H

#include "daemon.h"

struct daemon_state;

/* A run that ended with exit code `code`: when restart.* says to restart,
 * frees d and execs eddy again; returns only when the exec failed (then 1,
 * d freed).  Otherwise -1, d untouched (the caller frees it). */
int restart_run(struct daemon_state *d, const run_opts *o, int code);

#endif
