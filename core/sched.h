/* sched — the worker threads and the run queue.  A task is queued when it may
 * make progress (input arrived, output room freed, a poll tick); a worker pops
 * it, runs one step (at most one batch), and queues it again only while it
 * keeps making progress, so no task is run by two workers at once and idle
 * tasks cost nothing.  Calls task_step() and the daemon's done callback. */
#ifndef EDDY_SCHED_H
#define EDDY_SCHED_H

#include <pthread.h>
#include <stdatomic.h>

struct task;
typedef struct sched sched;

/* Per-task scheduling state, embedded in struct task. */
typedef struct sched_entry {
    sched *s;
    atomic_int queued;         /* 1 while in the queue or being run */
    atomic_uint wakeups;       /* bumped by every wake, to catch wakes during a step */
    struct task *next;         /* run-queue link */
} sched_entry;

/* on_done is called from a worker when a task ends (done or failed). */
sched *sched_create(int nthreads, void (*on_done)(void *ud, struct task *t), void *ud);
int sched_start(sched *s, char *err, size_t errlen);
/* Stops the workers once the queue is empty of runnable work and joins them. */
void sched_stop(sched *s);
void sched_destroy(sched *s);   /* NULL is a no-op */
/* Makes t runnable (cheap when it already is).  Any thread. */
void sched_wake(struct task *t);

#endif
