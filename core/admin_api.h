/* admin_api — what eddy answers on the admin HTTP server: GET /health,
 * /status, /metrics, /explain/UID and /state/UID[/KEY], POST /reload and
 * /savepoint.  admin.c is the server (routing, limits, the token); this is
 * the daemon's side of it, reading the tasks, channels, checkpoints and
 * Kafka client of the run (daemon_state.h) on the event loop thread.  Calls
 * admin, task, channel, window, state, checkpoint, kafka, source_kafka
 * (the group's members), shuffle and keygroup (shuffle = "kafka": a key's
 * owner, for GET /state/UID/KEY on another instance: a 307 there), metrics,
 * reload (POST /reload) and the daemon (savepoint --stop). */
#ifndef EDDY_ADMIN_API_H
#define EDDY_ADMIN_API_H

#include <stddef.h>

struct daemon_state;

/* Starts the admin server with these handlers when the config has one
 * (d->adm; writes state.dir/admin.addr).  0, or -1 with err. */
int admin_api_start(struct daemon_state *d, char *err, size_t errlen);

#endif
