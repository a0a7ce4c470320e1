/* recovery — where the last run stopped, and so where this one starts.
 * state.dir/finished: the last run read all of its input (this one is a new
 * job: keyed state and positions go); state.dir/running: it did not stop
 * cleanly; state.dir/positions.json: where its file sources stopped (a
 * stopped run without checkpoints); a savepoint (--from-savepoint); the
 * newest committed checkpoint (exactly_once), confirmed with the broker when
 * its Kafka transaction may have committed just before a crash.  A new job
 * also clears its file sinks' old part files.  Part of the daemon
 * (daemon_state.h), on the main thread before the workers start and after
 * they stopped.  Calls checkpoint (ckpt_seek_source restores a position,
 * here and from a checkpoint alike), files, kafka, source_file and log. */
#ifndef EDDY_RECOVERY_H
#define EDDY_RECOVERY_H

#include <stdint.h>
#include "daemon.h"

struct daemon_state;

/* Before the Kafka client exists: forgets a finished run, and for
 * --from-savepoint checks the savepoint and puts its state in place.  0, or
 * -1 with *code the exit code (message printed). */
int recovery_prepare(struct daemon_state *d, const run_opts *o, int *code);
/* Chooses where this run starts: *restore is the committed checkpoint to
 * restore (exactly_once; 0: none), d->sh.continuing whether it continues an
 * earlier run; restores that checkpoint's state, or drops state an unclean
 * stop left.  kafka_sinks: the pipeline writes to Kafka (d->sh.kafka is
 * open).  0, or -1 with *code the exit code (message printed). */
int recovery_choose(struct daemon_state *d, const run_opts *o, int kafka_sinks, int64_t *restore, int *code);
/* Once keyed state is open: state.dir/running says a run is in progress. */
void recovery_mark_running(struct daemon_state *d);
/* Once the tasks are built (not under exactly_once, nor from a savepoint):
 * seeks the file sources to positions.json. */
void recovery_load_positions(struct daemon_state *d);
/* At a clean end: state.dir/finished, or positions.json for the next run;
 * removes state.dir/running. */
void recovery_clean_end(struct daemon_state *d);

#endif
