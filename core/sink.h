/* sink — where a task's records leave eddy: a file sink writes a directory of
 * part files (DIR/part-<task>-<checkpoint>.<ext>, one per task), stdout
 * writes whole batches under one lock so lines of different tasks never
 * interleave.  Values arrive encoded (one line each); a sink buffers and
 * writes at the end of each batch.  Calls nothing of the runtime. */
#ifndef EDDY_SINK_H
#define EDDY_SINK_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sink sink;

typedef enum { SINK_FILE, SINK_STDOUT } sink_kind;

/* file: dir (created if missing), ext without dot ("jsonl"); stdout: lock is
 * shared by every stdout sink.  Returns an owned sink, or NULL with err. */
sink *sink_create(sink_kind kind, const char *name, const char *dir, const char *ext, int task_id,
                  pthread_mutex_t *stdout_lock, char *err, size_t errlen);
/* Appends value bytes and a newline.  0, or -1 with the error kept for sink_error. */
int sink_write(sink *s, const char *p, size_t n);
/* Writes out what is buffered (end of a batch).  0 or -1. */
int sink_flush(sink *s);
/* Flushes, fsyncs and closes.  0 or -1. */
int sink_close(sink *s);
const char *sink_error(const sink *s);
const char *sink_name(const sink *s);
int64_t sink_records(const sink *s);
void sink_destroy(sink *s);      /* closes if needed; NULL is a no-op */

#endif
