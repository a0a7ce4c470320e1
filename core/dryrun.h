/* dryrun — `eddy reload --dry-run`: what the pipeline script on disk would
 * have done with the last records each source partition delivered (the
 * source tasks' rings, replay.h), beside what the running version does with
 * them, from the same snapshot of the keyed state; nothing is written
 * anywhere (no sink, dead letter or state of the daemon) and the running
 * version is not touched.  On the event loop: the checks of a reload (the
 * script planned and checked against the running plan), the copy of the
 * rings and a RocksDB checkpoint of the state; then on a thread of its own:
 * two drivers (driver.h), the running version's and the new one's, fed the
 * same records one at a time, each run to quiescence so that every output
 * is the doing of one input record, and their outputs compared per record
 * and sink.  The result is fetched at GET /reload/dry-run/ID.  One of the
 * daemon's modules (daemon_state.h).  Calls driver, reload, versions,
 * state, replay and jansson. */
#ifndef EDDY_DRYRUN_H
#define EDDY_DRYRUN_H

#include <stddef.h>
#include <jansson.h>
#include "source_memory.h"

#define DRYRUN_MAX_DIFFERENCES 100      /* per sink, in the answer */

/* How one input record's outputs to one sink compare: the same list of
 * records (value, key) in both versions, or changed, only in the new one
 * (added), only in the running one (removed). */
enum { DRY_SAME, DRY_CHANGED, DRY_ADDED, DRY_REMOVED };
int dryrun_compare(const mem_record *old, int nold, const mem_record *nu, int nnew);

struct daemon_state;
/* POST /reload?dry_run=1[&records=N][&allow_dropped_state=1] (query: the
 * raw query string).  Sets *http_status: 202 and {"dry_run": ID, "location":
 * "/reload/dry-run/ID", "records"} when it started; 422 {"error"} for a
 * version a reload would refuse or with dry runs off; 400 for a bad
 * records; 503 while eddy starts or stops, or another dry run runs.
 * Returns an owned body. */
json_t *dryrun_request(struct daemon_state *d, const char *query, int *http_status);
/* GET /reload/dry-run/ID: 202 {"state": "running"} while it runs, 200 and
 * the result when done, 422 {"error"} when a version could not be built,
 * 404 for an ID that is not the last dry run's.  Owned body. */
json_t *dryrun_get(struct daemon_state *d, const char *path, int *http_status);
/* At the end of a run: asks a dry run still running to stop and waits for
 * it (its temporary folders are removed). */
void dryrun_shutdown(void);

#endif
