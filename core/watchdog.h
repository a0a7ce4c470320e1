/* watchdog — a Lua call that runs too long, and the record it ran on.
 * Every WATCHDOG_TICK_MS the event loop looks at each task's call in
 * progress: past WATCHDOG_ARM_MS it arms the VM's instruction-count hook,
 * at limits.time it interrupts the call, and when even that does not end it
 * (a loop the JIT compiled runs no hooks) it writes the record at fault to
 * state.dir/poison.json and exits 1.  The next start loads that poison
 * record, and the source task hands it to the error policy instead of
 * running it again (task.c; crash.c writes the same file on a crash).
 * Part of the daemon (daemon_state.h).  Calls vm, task, pipeline, log. */
#ifndef EDDY_WATCHDOG_H
#define EDDY_WATCHDOG_H

#include <event2/util.h>

struct daemon_state;
struct poison;

#define WATCHDOG_TICK_MS 50
#define WATCHDOG_ARM_MS 100      /* a call this long gets the instruction-count hook */

/* The event loop's timer callback (arg: the daemon_state), every WATCHDOG_TICK_MS. */
void watchdog_on_tick(evutil_socket_t fd, short what, void *arg);
/* Reads d->poison_path, if an earlier run left one, into d->sh.poison (owned). */
void watchdog_load_poison(struct daemon_state *d);
void watchdog_free_poison(struct poison *ps);   /* NULL is a no-op */

#endif
