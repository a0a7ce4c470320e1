/* sink — where a task's records leave eddy: a file sink writes a directory of
 * part files (DIR/part-<task>-<checkpoint>.<ext>, one per task), stdout
 * writes whole batches under one lock so lines of different tasks never
 * interleave, a Kafka sink hands each record to its producer (kafka.c).
 * Values arrive encoded; file and stdout sinks buffer and write at the end
 * of each batch.  Calls kafka for Kafka sinks, nothing else of the runtime. */
#ifndef EDDY_SINK_H
#define EDDY_SINK_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sink sink;

/* A part file prepared for a checkpoint: written and fsynced under its
 * hidden name; renamed to its final name once the checkpoint commits. */
typedef struct sink_part { char hidden[4096], final[4096]; } sink_part;

typedef enum { SINK_FILE, SINK_STDOUT, SINK_KAFKA } sink_kind;
struct kafka_sink;

/* file: dir (created if missing), ext without dot ("jsonl"); with txn
 * (exactly_once) the records between two checkpoints go to a hidden part
 * file of their own (sink_prepare); without, one part file, appended to
 * when append is set (a run that continues an earlier one), else
 * truncated.  stdout: lock is shared by every stdout sink.  Returns an
 * owned sink, or NULL with err. */
sink *sink_create(sink_kind kind, const char *name, const char *dir, const char *ext, int task_id, int txn,
                  int append, pthread_mutex_t *stdout_lock, char *err, size_t errlen);
/* The names of task task_id's part file for a checkpoint: hidden
 * (DIR/.part-<task>-<checkpoint>.<ext>.inprogress) and final. */
void sink_part_names(const char *dir, int task_id, int64_t checkpoint, const char *ext, char *hidden, char *final,
                     size_t len);
/* Checkpoint `checkpoint` passed this sink: what was written since the last
 * one is flushed and fsynced (an exactly-once file sink closes its part file
 * and keeps it among the prepared ones); later records belong to the next
 * checkpoint.  0 or -1. */
int sink_prepare(sink *s, int64_t checkpoint);
/* The part files prepared and not yet committed (borrowed), and forgetting
 * the first n of them once their checkpoint committed. */
int sink_prepared(const sink *s, const sink_part **parts);
void sink_committed(sink *s, int n);
/* An exactly-once file sink's folder, else NULL. */
const char *sink_dir(const sink *s);
/* The checkpoint the next records belong to (after a restore). */
void sink_set_checkpoint(sink *s, int64_t next);
/* Appends value bytes and a newline.  0, or -1 with the error kept for sink_error. */
int sink_write(sink *s, const char *p, size_t n);
/* A Kafka sink, writing through ks (borrowed: kafka.c owns it).  Owned, or NULL. */
sink *sink_create_kafka(const char *name, struct kafka_sink *ks, char *err, size_t errlen);
/* Writes one record with its key (may be NULL), event time (< 0: none) and
 * Kafka headers (a MessagePack map, or NULL); for file and stdout sinks only
 * the value is written.  0; -1 when the sink failed; -2 when only this record
 * was refused (sink_error says why). */
/* origin: the input position as a JSON object's text (kafka_sink_send), or NULL. */
int sink_write_kv(sink *s, const char *key, size_t klen, const char *p, size_t n, int64_t ts, const char *hdrs,
                  size_t hlen, const char *origin);
/* The Kafka producer of a Kafka sink (borrowed), or NULL. */
struct kafka_sink *sink_kafka(const sink *s);
/* Writes out what is buffered (end of a batch).  0 or -1. */
int sink_flush(sink *s);
/* Flushes, fsyncs and closes (an exactly-once file sink only flushes: the
 * next checkpoint prepares its file).  0 or -1. */
int sink_close(sink *s);
const char *sink_error(const sink *s);
const char *sink_name(const sink *s);
int64_t sink_records(const sink *s);
void sink_destroy(sink *s);      /* closes if needed; NULL is a no-op */

#endif
