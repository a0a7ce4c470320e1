/* window — the state of one window operator in one keyed task: assigning a
 * record to its tumbling or hopping windows, the built-in aggregates (count,
 * sum, min, max, avg) kept in C, firing every window whose end the
 * watermark has reached (end - 1 <= watermark) in order of end, then key
 * group, then key, so a
 * run's output does not depend on batching, late firings for records within
 * the allowed lateness, and freeing a window once the watermark passes
 * end - 1 + lateness.  Windows live in the task's RocksDB state (state.h),
 * one value per window at uid 0x02 kg end key start, so a key group's
 * windows come out by end and what is open is bounded by disk, not memory;
 * sessions add an index key -> its sessions (uid 0x00 kg key 'w' start).
 * The operator keeps per key group the earliest end it holds, so a
 * watermark that reaches no window costs no read.  Calls state, keygroup.
 * Modules (window_internal.h): window.c one window in the store, assignment
 * and the C aggregates; window_fire.c firing in chunks; window_session.c
 * session merging; window_trigger.c what triggers call (listing, firing one
 * window, marks); window_json.c the admin's JSON readers. */
#ifndef EDDY_WINDOW_H
#define EDDY_WINDOW_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

struct state_tx;

typedef struct window_op window_op;

/* A fired window, as the Lua runtime reads it through the FFI (ffi_api.h). */
typedef struct eddy_fired eddy_fired;

#define WINDOW_TOO_LATE (-2)

/* The windows of operator uid in key groups kgs[0..nkgs) of max_parallelism
 * maxp, written through tx (the owning task's; what earlier runs left is
 * read from committed data, so this may run on another thread).  size,
 * advance (= size for tumbling), offset and lateness in ms.  Returns an
 * owned operator, or NULL on allocation failure. */
window_op *window_create(struct state_tx *tx, const char *uid, const uint32_t *kgs, int nkgs, int maxp, int64_t size,
                         int64_t advance, int64_t offset, int64_t lateness);
/* The store changed under the operator (a restore): forget what it knew
 * of its key groups and read them again. */
void window_rescan(window_op *w);
void window_destroy(window_op *w);     /* NULL is a no-op; the stored windows stay */
/* Deletes every stored window of the operator (its uid was dropped). */
void window_drop(window_op *w);
/* Adds x to every window of key that contains ts and is not past its
 * lateness.  Returns the number of late firings it caused (windows that had
 * fired and now changed; read them with window_fired), WINDOW_TOO_LATE when
 * every window of the record is past its lateness (nothing added), or -1 on
 * allocation failure. */
int window_add(window_op *w, const char *key, size_t klen, int64_t ts, double x);
/* Fires the windows with end - 1 <= wm that have not fired, and frees those
 * with end - 1 + lateness <= wm, a chunk (about 1024) a call: call until it
 * returns 0.  Returns how many fired (read them with window_fired, valid
 * until the next window_add or window_advance), or -1 when the store
 * failed. */
int window_advance(window_op *w, int64_t wm);
const eddy_fired *window_fired(const window_op *w, int i);
/* For window functions in Lua: the starts of the windows a record at ts
 * belongs to and that are not past their lateness (at most max, latest
 * first); a window's state bytes (NULL and *len 0 when none); storing them
 * (WINDOW_REPLACE) or appending one value (WINDOW_APPEND); *count (may be
 * NULL) gets the window's element count.  window_store returns 1 when the
 * window had already fired (its late firing is then the
 * only entry of window_fired), 0, or -1 on allocation failure. */
enum { WINDOW_REPLACE = 1, WINDOW_APPEND = 2 };
int window_assign(const window_op *w, int64_t ts, int64_t *starts, int max);
const char *window_state(window_op *w, const char *key, size_t klen, int64_t start, size_t *len);
int window_store(window_op *w, const char *key, size_t klen, int64_t start, const char *p, size_t n, int mode,
                 double *count);

/* Session windows: a key's records less than `gap` apart form one window
 * [first, last + gap); a record that bridges sessions merges them.  Create
 * with window_create_sessions.  window_add works on sessions too (C
 * aggregates combine).  For window functions in Lua:
 * window_session_find gives the starts of the sessions a record at ts joins
 * (at most max) and the merged range; 0 means a new session,
 * WINDOW_TOO_LATE a record past the lateness.  window_session_put replaces
 * those sessions by one [mstart, mend) with state p; it returns 1 when the
 * result fires late at once (read it with window_fired(w, 0)), 0, or -1. */
window_op *window_create_sessions(struct state_tx *tx, const char *uid, const uint32_t *kgs, int nkgs, int maxp,
                                  int64_t gap, int64_t lateness);
int window_session_find(window_op *w, const char *key, size_t klen, int64_t ts, int64_t *starts, int max,
                        int64_t *mstart, int64_t *mend);
int window_session_put(window_op *w, const char *key, size_t klen, const int64_t *starts, int n,
                       int64_t mstart, int64_t mend, const char *p, size_t plen);

/* Triggers other than event time (the runtime decides when to fire):
 * window_add_at adds x to the one window (key, start), creating it, and sets
 * *count; it returns 1 when the window's end has already been passed by the
 * watermark (window_advance reported it), 0, or -1.  window_fire queues a
 * firing of (key, start) for window_fired (1 when it exists) and, with
 * purge, empties the window afterwards.  window_list fills info[] with up
 * to max open windows; window_mark keeps a processing time with a window
 * (the runtime's early-firing clock).  A window is `dirty` when it changed
 * since it last fired. */
typedef struct eddy_window_info eddy_window_info;
/* With keep set, window_advance does not free a window that changed since
 * it last fired (a processing-time trigger fires it first). */
void window_keep_unfired(window_op *w, int keep);
int window_add_at(window_op *w, const char *key, size_t klen, int64_t start, double x, double *count);
int window_fire(window_op *w, const char *key, size_t klen, int64_t start, int purge);
int window_list(window_op *w, eddy_window_info *info, int max);
void window_mark(window_op *w, const char *key, size_t klen, int64_t start, int64_t mark);

/* The watermark a restored task had: windows it passed are not made again. */
void window_restore_watermark(window_op *w, int64_t wm);

/* Counts a too-late record that went nowhere (no side output took it). */
void window_count_dropped(window_op *w);
int64_t window_late_dropped(const window_op *w);
int64_t window_open_count(const window_op *w);
/* The earliest end among windows that have not fired yet, or INT64_MAX, as
 * of the owner's last change; safe to call from any thread (/explain). */
int64_t window_next_end(const window_op *w);

/* ---- readers (admin thread): committed data only ---- */
struct state_db;
/* The windows of one key of window operator uid (key group kg) that start
 * at or after from and end at or before to, as {"windows": [{"start",
 * "end", "value"}]}; agg (count, sum, min, max, avg, reduce, aggregate,
 * apply) says what the value is.  Owned, or NULL when the key has none. */
json_t *window_key_json(struct state_db *db, const char *uid, uint32_t kg, const char *key, size_t klen, int64_t from,
                        int64_t to, const char *agg);
/* Up to limit keys starting with prefix, as [{"key", "state"}].  Owned. */
json_t *window_scan_json(struct state_db *db, const char *uid, const char *prefix, size_t plen, int limit,
                         const char *agg);

#endif
