/* graph — the tasks of a plan and the channels between them: a task per
 * source partition and per keyed task, a bounded channel from every task of
 * a stage holding a key_by to every task of the keyed stage it feeds (under
 * shuffle = "kafka" a repartition topic instead, task_shuffle.c), and each
 * task's VM started.  `eddy run` (daemon.c) and `eddy test`'s driver
 * (testing.c) build the same graph.  Calls task, channel and shuffle. */
#ifndef EDDY_GRAPH_H
#define EDDY_GRAPH_H

#include <stddef.h>
#include "channel.h"
#include "pipeline.h"
#include "task.h"

/* Creates p's tasks (numbered stage by stage, sources first) with sh, the
 * channels between them, and starts every task's VM.  Sets *tasks (owned,
 * p->ntasks of them) and *chans (owned); on failure what was made is left
 * there for the caller to destroy.  0, or -1 with err. */
int graph_build(task_shared *sh, const plan *p, task ***tasks, int *ntasks, channel ***chans, int *nchans, char *err,
                size_t errlen);

#endif
