/* reload — changing the pipeline's logic while it runs.  Watches the
 * pipeline's folder (inotify through the event loop, debounced); decides
 * whether a reload may start now (not while eddy starts or stops, while a
 * version or a checkpoint is still rolling out, nor when nothing changed);
 * prepares the new version off the hot path (plan the script anew in a
 * fresh VM, check it against the running plan, build every task's new VM);
 * and offers it to the tasks, which swap at a barrier (task.c).  The policy
 * lives here beside the mechanism, not in daemon.c, so that everything a
 * reload does reads in one file; it is one of the daemon's modules
 * (daemon_state.h) and runs on the event loop.  Calls pipeline, task,
 * checkpoint, sched and libevent. */
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
/* The same with the script's text read from `text` (a kept version's copy,
 * planned in the pipeline's folder: reload --to); NULL: the script. */
plan *reload_prepare_text(const config *cfg, const char *lua_dir, const char *text, const plan *running,
                          task **tasks, int ntasks, int version, int allow_dropped_state, task_vm **tvs, char *err,
                          size_t errlen);

/* How many key groups of process operator `uid` are still migrating their
 * keys' state to the running version (lua/eddy/runtime/migrate.lua keeps a
 * uid#migrating entry per key group meanwhile); committed data.  Any thread. */
int reload_migrating(state_db *db, const char *uid);

struct daemon_state;
/* 1 while a running task has not reached the newest version. */
int reload_in_progress(struct daemon_state *d);
/* Validates the pipeline script as it is on disk now and, when it is good,
 * offers the new version to every task.  trigger names the cause in the log
 * ("SIGHUP", "POST /reload").  Returns an HTTP-like status (200 with the
 * version in msg, 422 refused, 503 busy or stopping, with why in msg). */
int reload_request(struct daemon_state *d, const char *trigger, int allow_dropped_state, char *msg, size_t len);
/* The same for `eddy reload --to VERSION` (to: a kept version's number or
 * sha256 prefix; NULL: the files on disk): that version's script, planned
 * in the pipeline's folder through the same checks, becomes the next
 * version.  Also 404 (no such kept version) and 400 (malformed VERSION).
 * Every accepted version is kept (versions.c).  With reload.probation an
 * accepted version is put on probation (probation_begin), and with
 * reload.hold_commits a checkpoint is committed first (probation.c). */
int reload_request_to(struct daemon_state *d, const char *trigger, const char *to, int allow_dropped_state,
                      char *msg, size_t len);
/* At start: empties state.dir/versions and keeps the version eddy started
 * with.  0, or -1 (logged; eddy runs on without it). */
int reload_keep_first(struct daemon_state *d);
/* A reload_watch callback (ud: the daemon_state): reloads as file changed. */
void reload_on_file_changed(void *ud, const char *file);

#endif
