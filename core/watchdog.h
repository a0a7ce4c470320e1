/* watchdog — a Lua call that runs too long, and the record it ran on.
 * Every WATCHDOG_TICK_MS the event loop looks at each task's call in
 * progress, measured in CPU time of the worker running it (a call waiting
 * for a core on a loaded machine, or on a disk, is not running away): past WATCHDOG_ARM_MS it arms the VM's instruction-count hook,
 * at limits.time it interrupts the call, and when even that does not end it
 * (a loop the JIT compiled runs no hooks) it writes the record at fault to
 * state.dir/poison.json and exits 1.  The next start loads that poison
 * record, and the source task hands it to the error policy instead of
 * running it again (task.c; crash.c writes the same file on a crash).
 * Part of the daemon (daemon_state.h).  Calls vm, task, pipeline, log. */
#ifndef EDDY_WATCHDOG_H
#define EDDY_WATCHDOG_H

#include <event2/util.h>
#include <stdint.h>

struct daemon_state;
struct poison;
struct task;

#define WATCHDOG_TICK_MS 50
#define WATCHDOG_ARM_MS 100      /* a call this long gets the instruction-count hook */

/* What the watchdog knows of one task's call (one per task; owned by the
 * thread that watches). */
typedef struct watchdog_mark {
    int64_t seq; int32_t cur;   /* the progress marks last seen (seq -1: not in a call) */
    int64_t since_ms;           /* when they last moved (the worker's CPU time) */
    int armed, interrupted;
    uint64_t call;              /* the VM call being watched (vm_call) */
} watchdog_mark;

/* One look at task t's call in progress: past WATCHDOG_ARM_MS of CPU time
 * arms its VM's hook, at `limit` ms interrupts it.  Returns how long it has
 * run once that has not ended it after a grace (max(limit, 1 s)): the call
 * cannot be interrupted; else 0.  Any thread but the task's. */
int64_t watchdog_check(struct task *t, watchdog_mark *w, int64_t limit);
/* The event loop's timer callback (arg: the daemon_state), every WATCHDOG_TICK_MS. */
void watchdog_on_tick(evutil_socket_t fd, short what, void *arg);
/* Reads d->poison_path, if an earlier run left one, into d->sh.poison (owned). */
void watchdog_load_poison(struct daemon_state *d);
void watchdog_free_poison(struct poison *ps);   /* NULL is a no-op */

#endif
