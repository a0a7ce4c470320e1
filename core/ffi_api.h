/* ffi_api — the C types and functions the Lua runtime reaches through the
 * LuaJIT FFI on the hot path (record fields, sink writes, counters).  This
 * header is the one list of FFI exports; lua/eddy/ffi.lua holds the matching
 * ffi.cdef, and spec/unit/ffi_spec.lua checks that the two agree.  Work that
 * shapes Lua tables (unpacking values, shuffling) is in lua_api.c instead. */
#ifndef EDDY_FFI_API_H
#define EDDY_FFI_API_H

#include <stdint.h>
#include <stddef.h>

/* FFI-BEGIN (everything up to FFI-END is mirrored in lua/eddy/ffi.lua) */
typedef struct eddy_rec {
    int64_t ts;          /* event time in ms, or INT64_MIN when none */
    int64_t wm;          /* the source partition's watermark after this record */
    int64_t offset;      /* source position: byte offset in a file, Kafka offset */
    int64_t line;        /* line number in a file (1-based), or 0 */
    uint32_t key_off, key_len;  /* key bytes in data (or, for a malformed record, the error) */
    uint32_t val_off, val_len;  /* value bytes in data */
    int32_t partition;   /* source partition index */
    int16_t port;        /* the key_by node a shuffled record came through, else -1 */
    int16_t flags;       /* EDDY_REC_* */
    uint32_t kg;         /* key group of a keyed record */
    uint32_t source;     /* index of the source it was read from */
} eddy_rec;

typedef struct eddy_io {
    const eddy_rec *recs;   /* the batch being processed */
    const char *data;       /* its bytes */
    int32_t n;              /* records in it */
    int32_t cur;            /* index of the record being processed */
    int32_t cur_node;       /* node id of the operator being called */
    int32_t in_call;        /* 1 while Lua runs a batch */
    uint64_t seq;           /* bumped per record: the watchdog's progress mark */
    uint64_t *node_in;      /* records into each node, indexed by node id */
    uint64_t *node_out;     /* records out of each node */
    uint64_t errors, skipped, dead_letters;
} eddy_io;

/* Appends one encoded value and a newline to sink `sink` of `task`.  Returns 0,
 * or -1 when the sink failed (the task then fails). */
int eddy_sink_write(void *task, int32_t sink, const char *p, size_t n);
/* Appends one JSON line to the dead-letter file (shared by all tasks). */
int eddy_dead_letter(void *task, const char *p, size_t n);
/* Logs at a level (0 debug .. 3 error) with the task's prefix; rate-limited
 * for level < 3 when `limited` is 1. */
void eddy_log(void *task, int32_t level, int32_t limited, const char *msg);
/* FFI-END */

enum { EDDY_REC_MALFORMED = 1, EDDY_REC_PACKED = 2 };

#endif
