/* reload — changing the pipeline's logic while it runs.  Watches the
 * pipeline's folder (inotify through the event loop, debounced) and
 * prepares a new version off the hot path: plan the script anew in a fresh
 * VM, check it against the running plan, and build every task's new VM.
 * The daemon then offers the versions to the tasks, which swap at a barrier
 * (task.c).  Calls pipeline, task and libevent. */
#ifndef EDDY_RELOAD_H
#define EDDY_RELOAD_H

#include <stddef.h>
#include "config.h"
#include "pipeline.h"
#include "task.h"

struct event_base;
typedef struct reload_watch reload_watch;

/* Calls cb(ud, file) once changes to *.lua files in dir have been quiet for
 * debounce_ms.  Returns an owned watcher, or NULL with err. */
reload_watch *reload_watch_create(struct event_base *base, const char *dir, int debounce_ms,
                                  void (*cb)(void *ud, const char *file), void *ud, char *err, size_t errlen);
void reload_watch_destroy(reload_watch *w);   /* NULL is a no-op */

/* Plans the pipeline script again and checks it against `running`; then
 * prepares a task_vm of version `version` for each task into tvs[ntasks].
 * Returns the new plan (owned) or NULL with err (file:line or what changed);
 * on failure nothing is left in tvs. */
plan *reload_prepare(const config *cfg, const char *lua_dir, const plan *running, task **tasks, int ntasks,
                     int version, int allow_dropped_state, task_vm **tvs, char *err, size_t errlen);

#endif
