/* sink — where a task's records leave eddy: the interface every sink kind
 * implements, and the table of kinds.  A kind is a sink_ops: callbacks that
 * open one task's sink from its node's options, write a record, flush at
 * the end of a batch, prepare at a checkpoint's barrier (describing what the
 * commit then finishes), forget what a committed checkpoint finished, abort
 * what no checkpoint committed (recovery), and close.  The kinds: a file
 * sink writes a directory of part files (DIR/part-<task>-<checkpoint>.<ext>,
 * one per task), stdout writes whole batches under one lock so lines of
 * different tasks never interleave (both in sink_file.c), a Kafka sink hands
 * each record to its producer (sink_kafka.c, through kafka.c).  Adding a
 * kind: its own sink_<kind>.c with a sink_ops, and one line in sink.c's
 * table.  Calls the kinds only; the kinds call files and kafka. */
#ifndef EDDY_SINK_H
#define EDDY_SINK_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "pipeline.h"

typedef struct sink sink;
struct kafka;
struct kafka_sink;

/* What opens one task's sink. */
typedef struct sink_args {
    const node *nd;             /* the sink's node: its name and options */
    const char *dir;            /* the pipeline's folder (relative paths) */
    int task_id;
    int txn;                    /* exactly_once: what a checkpoint has not committed stays hidden */
    int append;                 /* this run continues an earlier one: append, never truncate */
    pthread_mutex_t *stdout_lock;   /* shared by every stdout sink */
    struct kafka *kafka;        /* the Kafka connection, or NULL */
    struct mem_outputs *memory; /* eddy test: every sink is an in-memory one writing here (source_memory.h) */
} sink_args;

/* One record as the task's Lua function emitted it (value encoded). */
typedef struct sink_record {
    const char *key; size_t klen;   /* NULL: none */
    const char *val; size_t vlen;
    int64_t ts;                     /* event time; < 0: none */
    const char *hdrs; size_t hlen;  /* Kafka headers: a MessagePack map, or NULL */
    const char *origin;             /* the input position as a JSON object's text, or NULL */
} sink_record;

typedef struct sink_ops {
    const char *name;               /* "file", "stdout", "kafka" */
    const char *option;             /* the sink option that picks this kind; NULL: the default kind */
    const char *const *options;     /* the sink options it reads (NULL-terminated) */
    /* Opens a (its state: owned, or NULL with err). */
    void *(*open)(sink *s, const sink_args *a, char *err, size_t errlen);
    /* 0; -1 when the sink failed; -2 when only this record was refused (sink_fail says why). */
    int (*write)(sink *s, const sink_record *r);
    int (*flush)(sink *s);                      /* end of a batch (NULL: nothing buffered).  0 or -1 */
    /* Checkpoint `checkpoint` passed: what was written since the last one is
     * durable; later records belong to the next checkpoint.  0 or -1. */
    int (*prepare)(sink *s, int64_t checkpoint);
    /* Appends what the commit of the prepared checkpoints finishes to parts
     * (the manifest's part_files: {"sink", "hidden", "final"}: renames). */
    void (*prepared)(sink *s, json_t *parts);
    void (*committed)(sink *s);                 /* what prepared() listed is done (NULL: nothing) */
    void (*abort)(sink *s);                     /* recovery: deletes what no checkpoint committed (NULL: nothing) */
    void (*set_checkpoint)(sink *s, int64_t next);   /* after a restore (NULL: nothing) */
    int (*close)(sink *s);                      /* flushes and makes durable.  0 or -1 */
    void (*destroy)(void *impl);                /* NULL is a no-op */
    /* The producer whose deliveries acknowledge this sink's records (markers
     * wait for them); NULL: written when flushed. */
    struct kafka_sink *(*producer)(sink *s);
} sink_ops;

/* Opens a sink of the kind the node's options pick.  Owned, or NULL with err. */
sink *sink_open(const sink_args *a, char *err, size_t errlen);
/* Appends value bytes (and for file and stdout sinks a newline).  0, or -1
 * with the error kept for sink_error. */
int sink_write(sink *s, const char *p, size_t n);
/* Writes one record with its key (may be NULL), event time (< 0: none),
 * Kafka headers (a MessagePack map, or NULL) and origin (the input position
 * as a JSON object's text, or NULL); file and stdout sinks write the value
 * only.  0; -1 when the sink failed; -2 when only this record was refused
 * (sink_error says why). */
int sink_write_kv(sink *s, const char *key, size_t klen, const char *p, size_t n, int64_t ts, const char *hdrs,
                  size_t hlen, const char *origin);
int sink_flush(sink *s);                        /* writes out what is buffered (end of a batch).  0 or -1 */
int sink_prepare(sink *s, int64_t checkpoint);  /* see sink_ops.prepare */
void sink_prepared(sink *s, json_t *parts);     /* see sink_ops.prepared */
void sink_committed(sink *s);
void sink_abort(sink *s);
void sink_set_checkpoint(sink *s, int64_t next);
/* Flushes, makes durable and closes (an exactly-once file sink only
 * flushes: the next checkpoint prepares its file).  0 or -1. */
int sink_close(sink *s);
struct kafka_sink *sink_kafka(sink *s);         /* see sink_ops.producer (borrowed), or NULL */
const char *sink_error(const sink *s);
const char *sink_name(const sink *s);
int64_t sink_records(const sink *s);
void sink_destroy(sink *s);                     /* NULL is a no-op */

/* ---- for the kinds ---- */
void *sink_impl(sink *s);                       /* the kind's state (borrowed) */
int sink_failed(const sink *s);                 /* the sink failed: it writes no more */
/* Keeps the error (printf-style) and marks the sink failed (fail = 1) or
 * only the record refused (fail = 0). */
void sink_fail(sink *s, int fail, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void sink_count(sink *s);                       /* one more record written */

#endif
