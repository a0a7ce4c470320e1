/* source — the interface every source kind implements, and the table of
 * kinds.  A kind (file, stdin, Kafka) is a source_ops: callbacks that open
 * one partition, read a batch of it, tell and restore its position, describe
 * it, and close it; a kind read by a group of instances (Kafka) also says
 * whether the partition is assigned here, and takes backpressure, markers
 * and committed checkpoints.  Optional callbacks are NULL.  The task loop,
 * the checkpoints and the daemon reach a partition only through the
 * source_* functions below.  Adding a kind: its own source_<kind>.c with a
 * source_ops, and one line in source.c's table.  Calls the kinds only. */
#ifndef EDDY_SOURCE_H
#define EDDY_SOURCE_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "batch.h"
#include "pipeline.h"

typedef struct source source;   /* one open partition: its kind's ops and state */
struct kafka_offset;
struct kgroup;

/* Whether a partition is read here now (sources read by a group). */
enum { SOURCE_READING, SOURCE_AWAY, SOURCE_REVOKING };

/* What the task knows of a partition beside its position, for the entry
 * source_save makes (ended < 0: leave it out). */
typedef struct source_mark { int64_t wm, maxts; int ended; } source_mark;

typedef struct source_ops {
    source_kind kind;               /* the SRC_* of pipeline.h it implements */
    const char *name;               /* "file", "stdin", "kafka" */
    const char *const *options;     /* the source options it reads (NULL-terminated) */
    /* Opens partition `partition` of source si (source index `index`).
     * Returns the kind's state (owned), or NULL with err. */
    void *(*open)(const source_info *si, int index, int partition, char *err, size_t errlen);
    /* Appends up to max records to b.  The number appended (0: none now), or
     * -1 with err; *eof once the input ended for good. */
    int (*read)(void *impl, batch *b, int max, int *eof, char *err, size_t errlen);
    int64_t (*position)(void *impl);           /* where the next read starts (-1: not known yet) */
    /* The partition's entry in a checkpoint's manifest (owned: its kind's
     * fields, "source", "watermark", "max_ts"), or NULL: nothing to restore. */
    json_t *(*save)(void *impl, const source_info *si, int partition, const source_mark *m);
    /* Continues where entry e (of save) says.  0, or -1 with err. */
    int (*restore)(void *impl, json_t *e, char *err, size_t errlen);
    void (*status)(void *impl, const source_info *si, int partition, json_t *out);   /* /status fields */
    int resumes;                    /* a stopped run's next one continues from state.dir/positions.json */
    int (*live)(void *impl);                  /* more input may come later: polled (NULL: no) */
    /* read up to where the input ended when it opened (bootstrap = true) */
    int (*caught_up)(void *impl);
    /* optional, for partitions a group assigns (NULL: always read here) */
    int (*state)(void *impl);                 /* SOURCE_* */
    int (*elsewhere)(void *impl);             /* another instance reads it */
    int (*at_end)(void *impl);                /* the last read found nothing left (NULL: 1) */
    int (*ended)(void *impl);                 /* a bounded partition was read to its end */
    int64_t (*generation)(void *impl);        /* bumped each time the group assigns it here */
    int64_t (*bound_left)(void *impl);        /* records left to that end (NULL: no bound) */
    void (*pause)(void *impl, int paused);    /* backpressure (event loop) */
    /* markers (NULL: the kind sends none): the task stopped reading a
     * revoked partition behind marker (0: none); and every output caused by
     * the records before position was acknowledged */
    void (*drain)(void *impl, uint64_t marker);
    void (*acked)(void *impl, uint64_t marker, int64_t position);
    /* exactly_once: checkpoint committed position (txn: in a Kafka
     * transaction); and the offset a transaction commits for it (0, or -1
     * when there is none) */
    void (*committed)(void *impl, int64_t position, int txn);
    int (*txn_offset)(void *impl, struct kafka_offset *o, struct kgroup **g);
    void (*close)(void *impl);                /* NULL is a no-op */
} source_ops;

/* The kind of a source (from the table), or NULL. */
const source_ops *source_ops_of(source_kind kind);
/* Opens partition `partition` of source si.  Owned, or NULL with err. */
source *source_open(const source_info *si, int index, int partition, char *err, size_t errlen);
void source_close(source *s);                  /* NULL is a no-op */
const source_ops *source_ops_get(const source *s);
void *source_impl(source *s);                  /* the kind's state (borrowed) */
int source_read(source *s, batch *b, int max, int *eof, char *err, size_t errlen);
int64_t source_position(source *s);
/* The entry a checkpoint (or positions.json) keeps (owned), or NULL. */
json_t *source_save(source *s, const source_mark *m);
int source_restore(source *s, json_t *e, char *err, size_t errlen);
/* The partition entry e names: its "file" or "partition_label". */
const char *source_entry_label(json_t *e);
void source_status(source *s, json_t *out);
int source_resumes(const source *s);
int source_live(source *s);
int source_caught_up(source *s);
int source_state(source *s);
int source_elsewhere(source *s);
int source_at_end(source *s);
int source_ended(source *s);
int64_t source_generation(source *s);          /* 0 for kinds no group assigns */
int64_t source_bound_left(source *s);
void source_pause(source *s, int paused);
int source_marks(const source *s);             /* the kind sends markers */
void source_drain(source *s, uint64_t marker);
void source_acked(source *s, uint64_t marker, int64_t position);
void source_committed(source *s, int64_t position, int txn);
int source_txn_offset(source *s, struct kafka_offset *o, struct kgroup **g);

#endif
