/* source_file — reads one partition of a file source (one file, or stdin)
 * into record batches: splits lines for json/lines/raw, parses CSV records
 * (quoted fields, embedded newlines) with libcsv and packs their fields as a
 * MessagePack array (or map, with header = true).  Every record carries its
 * byte offset and line number.  It implements two kinds of source.h: "file"
 * and "stdin".  Calls batch, msgpack-c and libcsv. */
#ifndef EDDY_SOURCE_FILE_H
#define EDDY_SOURCE_FILE_H

#include <stdint.h>
#include "batch.h"
#include "pipeline.h"
#include "source.h"

typedef struct source_reader source_reader;

extern const source_ops source_file_ops, source_stdin_ops;   /* the kinds */

/* Opens partition `partition` of source `si`.  Returns an owned reader or NULL with err. */
source_reader *source_file_open(const source_info *si, int source_index, int partition, char *err, size_t errlen);
/* Appends up to max records to b.  Returns the number appended (0 when nothing
 * is available now), or -1 with err.  Sets *eof once the input has ended
 * (never for follow = true).  The last line of a file needs no newline. */
/* The same over fd (eddy test's in-memory partitions: the read end of a
 * pipe, not closed by the reader), read as stdin is: polled, never
 * seekable; the input ends when the pipe's write end is closed. */
source_reader *source_file_open_fd(const source_info *si, int source_index, int partition, int fd, char *err,
                                   size_t errlen);
int source_file_read(source_reader *r, batch *b, int max, int *eof, char *err, size_t errlen);
int64_t source_file_position(const source_reader *r);   /* bytes consumed */
int64_t source_file_line(const source_reader *r);       /* lines consumed */
/* Continues a file from byte offset (line lines in), where an earlier run
 * stopped.  0, or -1 with err (stdin, a CSV file with a header, a file
 * shorter than offset). */
int source_file_seek(source_reader *r, int64_t offset, int64_t line, char *err, size_t errlen);
void source_file_close(source_reader *r);                /* NULL is a no-op */

#endif
