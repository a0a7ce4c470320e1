/* ffi_api — the C types and functions the Lua runtime reaches through the
 * LuaJIT FFI on the hot path: record fields, sink writes, windows, time, and
 * keyed operators' per-record scalar calls (state marks, dedup, timers, key
 * groups).  This header is the one list of FFI exports; lua/eddy/ffi.lua
 * holds the matching ffi.cdef, and spec/unit/ffi_spec.lua checks that the
 * two agree.  Each function is defined by the module that owns its data
 * (task_output.c, task_windows.c, state.c, timer.c, keygroup.c; lua_api.c
 * wraps window.c, clock and the parsers).  Work that reads or builds Lua
 * values (unpacking, packing, shuffling) is lua_api.c's classic functions. */
#ifndef EDDY_FFI_API_H
#define EDDY_FFI_API_H

#include <stdint.h>
#include <stddef.h>

/* Event times eddy takes, in ms since the epoch: years 1 to 9999. */
#define EDDY_TS_MIN (-62135596800000LL)
#define EDDY_TS_MAX 253402300799999LL

/* FFI-BEGIN (everything up to FFI-END is mirrored in lua/eddy/ffi.lua) */
typedef struct eddy_rec {
    int64_t ts;          /* event time in ms, or INT64_MIN when none */
    int64_t wm;          /* the source partition's watermark after this record */
    int64_t offset;      /* source position: byte offset in a file, Kafka offset */
    int64_t line;        /* line number in a file (1-based), or 0 */
    uint64_t key_off, val_off;  /* key and value bytes in data (the key of a malformed record: the error) */
    uint32_t key_len, val_len;  /* (a batch may pass 4 GiB; one key or value may not) */
    int32_t partition;   /* source partition index */
    int16_t port;        /* the key_by node a shuffled record came through, else -1 */
    int16_t flags;       /* EDDY_REC_* */
    uint32_t kg;         /* key group of a keyed record */
    uint32_t source;     /* index of the source it was read from */
    uint64_t hdr_off;    /* Kafka headers in data, a MessagePack map */
    uint32_t hdr_len;    /* (0: none) */
} eddy_rec;

typedef struct eddy_io {
    eddy_rec *recs;         /* the batch being processed (sources write ts and wm) */
    const char *data;       /* its bytes */
    int32_t n;              /* records in it */
    int32_t cur;            /* index of the record being processed */
    int32_t cur_node;       /* node id of the operator being called */
    int32_t in_call;        /* 1 while Lua runs a batch */
    int32_t channel;        /* keyed tasks: index of the input channel the batch came from */
    uint64_t seq;           /* bumped per record: the watchdog's progress mark */
    uint64_t errors, skipped, dead_letters;
    int64_t *chan_wm;       /* keyed tasks: the watermark of each input channel */
    uint8_t *chan_idle;     /* keyed tasks: 1 for an input that is idle (left out of the minimum) */
    int64_t wm;             /* the task's watermark (sources: their partition's) */
    int64_t maxts;          /* sources: the largest timestamp seen */
} eddy_io;

/* A window that fired (see window.h). */
typedef struct eddy_fired {
    const char *key;
    size_t klen;
    int64_t start, end;   /* [start, end) in ms */
    double count, sum, min, max;
    const char *state;    /* Lua window functions: the MessagePack state (reduce, aggregate) */
    size_t state_len;     /*   or the values one after another (apply) */
} eddy_fired;

/* An open window, as window_list reports it (triggers). */
typedef struct eddy_window_info {
    const char *key;
    size_t klen;
    int64_t start, end;
    int64_t mark;         /* the processing time the runtime set with eddy_window_mark (0: none) */
    double count;
    int32_t dirty;        /* changed since it last fired */
    int32_t due;          /* the watermark has passed its end */
} eddy_window_info;

/* Window operators of a task, by uid: their state outlives the VM (reloads).
 * advance < 0 opens session windows with gap = size (window.h).
 * eddy_window_add returns the number of late firings it caused, or -2 when
 * the record is past every window's lateness (see window.h); the runtime then
 * sends it to the side output or calls eddy_window_drop_late to count it. */
void *eddy_window_open(void *task, const char *uid, int64_t size, int64_t advance, int64_t offset,
                       int64_t lateness);
int eddy_window_add(void *w, const char *key, size_t klen, int64_t ts, double x);
void eddy_window_drop_late(void *w);
/* Lua window functions: the windows a record at ts belongs to (their starts,
 * at most max; 0 when it is past every window's lateness); a window's state
 * (NULL when it has none yet); and storing it (mode 1 replaces the state,
 * mode 2 appends one value).  eddy_window_store returns 1 when the window had
 * fired already (its late firing can be read with eddy_window_fired(w, 0)),
 * 0, or -1 on allocation failure. */
int32_t eddy_window_assign(void *w, int64_t ts, int64_t *starts, int32_t max);
const char *eddy_window_state(void *w, const char *key, size_t klen, int64_t start, size_t *len);
int32_t eddy_window_store(void *w, const char *key, size_t klen, int64_t start, const char *p, size_t n, int32_t mode,
                          double *count);
int32_t eddy_window_session_find(void *w, const char *key, size_t klen, int64_t ts, int64_t *starts, int32_t max,
                                 int64_t *range);
int32_t eddy_window_session_put(void *w, const char *key, size_t klen, const int64_t *starts, int32_t n,
                                int64_t start, int64_t end, const char *p, size_t plen);
int32_t eddy_window_add_at(void *w, const char *key, size_t klen, int64_t start, double x, double *count);
int32_t eddy_window_fire(void *w, const char *key, size_t klen, int64_t start, int32_t purge);
int32_t eddy_window_list(void *w, eddy_window_info *info, int32_t max);
void eddy_window_mark(void *w, const char *key, size_t klen, int64_t start, int64_t mark);
void eddy_window_keep_unfired(void *w);
/* Keyed tasks with processing-time triggers ask to be ticked (their Lua tick function). */
void eddy_task_wants_ticks(void *task);
int32_t eddy_window_advance(void *w, int64_t wm);
const eddy_fired *eddy_window_fired(void *w, int32_t i);

/* Processing time in ms since the epoch (clock.h; timestamp = "ingest"). */
int64_t eddy_now_ms(void);
/* Durations as the config spells them ("5s", "1m", 250): 0 and *ms, or -1. */
int eddy_parse_duration(const char *s, int64_t *ms);
/* An ISO-8601 date-time ("2026-11-21T15:09:17.123Z", "+02:00" offsets) to
 * ms since the epoch: 0 and *ms, or -1. */
int eddy_parse_time(const char *s, size_t n, int64_t *ms);

/* Appends one encoded value and a newline to sink `sink` of `task`.  Returns 0,
 * or -1 when the sink failed (the task then fails). */
int eddy_sink_write(void *task, int32_t sink, const char *p, size_t n);
/* The same with the record's key (may be NULL) and event time (< 0: none), for
 * Kafka sinks; carry = 1 sends the headers of the input record being
 * processed along (0 for a window's result); -2 when Kafka refused this
 * record (the error policy's case). */
int eddy_sink_write_kv(void *task, int32_t sink, const char *key, size_t klen, const char *p, size_t n, int64_t ts,
                       int32_t carry);
const char *eddy_sink_error(void *task, int32_t sink);
/* Appends one JSON line to the dead-letter file (shared by all tasks). */
int eddy_dead_letter(void *task, const char *p, size_t n);
/* Logs at a level (0 debug .. 3 error) with the task's prefix; rate-limited
 * for level < 3 when `limited` is 1. */
void eddy_log(void *task, int32_t level, int32_t limited, const char *msg);
/* Per-record calls of keyed operators, exported by the modules that own the
 * data; lua/eddy/ffi.lua's bind_native puts them in the runtime's `native`
 * table in place of the classic functions of the same names (lua_api.h),
 * which stay for arguments of other types and raise the same errors.
 * tx is the task's state_tx and ix its timer_index (never NULL here).
 * state.c: a record's writes start (mark), or are dropped (undo: it failed). */
void eddy_state_mark(void *tx);
void eddy_state_undo(void *tx);
/* state.c: 1 when key was not seen within ttl_ms before ts (ts becomes its
 * time), 0 for a duplicate, -1 out of memory. */
int32_t eddy_dedup(void *tx, const char *uid, uint32_t kg, const char *key, size_t klen, int64_t ts, int64_t ttl_ms);
/* timer.c: a timer of kind 'e' or 'p' at ts / deleting both kinds at ts.  0, or -1 out of memory. */
int32_t eddy_timer_set(void *ix, const char *uid, uint32_t kg, const char *key, size_t klen, int32_t kind, int64_t ts);
int32_t eddy_timer_del(void *ix, const char *uid, uint32_t kg, const char *key, size_t klen, int64_t ts);
/* keygroup.c: the key group of key. */
uint32_t eddy_keygroup(const char *key, size_t len, int32_t max_parallelism);
/* FFI-END */

enum { EDDY_REC_MALFORMED = 1, EDDY_REC_PACKED = 2,
       EDDY_REC_KEY = 8 /* a Kafka record with a key (an empty one included) */,
       EDDY_REC_TOMBSTONE = 16 /* a Kafka message without a value */ };

#endif
