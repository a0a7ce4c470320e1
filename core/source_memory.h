/* source_memory — in-memory partitions and outputs, for `eddy test`'s
 * driver (testing.c): what a test puts into a source's partitions, and what
 * the pipeline writes to its sinks and side outputs.  A source_info whose
 * `memory` is set opens this kind instead of its own (file, stdin, Kafka),
 * and reads its records as its own kind would deliver them (a Kafka
 * source's key, timestamp and headers; a file source's bytes go through a
 * pipe to the file reader itself: lines, JSON, CSV with its header, line
 * numbers and byte offsets as from a file); a task whose
 * task_shared has `memory` opens every sink as an in-memory one.  Records
 * are copied in and out; nothing here is shared between threads (the driver
 * steps every task on its own thread).  Calls batch and sink only. */
#ifndef EDDY_SOURCE_MEMORY_H
#define EDDY_SOURCE_MEMORY_H

#include <stddef.h>
#include <stdint.h>
#include "source.h"
#include "sink.h"

/* One record: its bytes (val NULL: a Kafka tombstone), key (NULL: none),
 * event time or Kafka timestamp (TS_NONE: none), headers (a MessagePack
 * map, NULL: none) and flags (EDDY_REC_PACKED for a packed CSV record). */
typedef struct mem_record {
    char *key; size_t klen;
    char *val; size_t vlen;
    char *hdrs; size_t hlen;
    int64_t ts;
    int flags;
    int64_t offset, line;   /* an exact partition's (below): the position the record was read at */
} mem_record;

/* A queue of records: appended at the end, read from `head`. */
typedef struct mem_queue {
    mem_record *recs;
    size_t n, cap, head;
} mem_queue;

/* Appends a copy.  0, or -1 out of memory. */
int mem_queue_push(mem_queue *q, const mem_record *r);
/* Forgets the records before head (they were read). */
void mem_queue_drop_read(mem_queue *q);
void mem_queue_free(mem_queue *q);

/* A source's partitions (owned by the driver; source_info.memory). */
typedef struct mem_partition {
    mem_queue q;        /* a Kafka source's messages */
    int64_t read;       /* messages read so far: the next one's offset */
    int ended;          /* the test closed the input: read to here, then the end */
    int rfd, wfd;       /* a file or stdin source's bytes: a pipe the file reader reads
                         * (source_file.c: lines, JSON, CSV as from a file); -1: none */
    int exact;          /* the queue holds records as a source of any kind read them (a dry run's
                         * replay, dryrun.c): delivered as they are, key, ts, offset and line kept */
} mem_partition;
typedef struct mem_input {
    int npart;
    mem_partition *parts;
} mem_input;

extern const source_ops source_memory_ops;

/* Where the sinks and side outputs write (owned by the driver;
 * task_shared.memory): one queue per sink or side output name. */
typedef struct mem_output {
    char *name;
    int side;           /* a side output (values packed as MessagePack), not a sink */
    mem_queue q;        /* not read yet */
    long total;         /* records written in all */
} mem_output;
typedef struct mem_outputs {
    mem_output *outs;
    int n;
} mem_outputs;

/* The output named `name` (side: of p:side(name)), created on first use;
 * NULL out of memory. */
mem_output *mem_output_get(mem_outputs *o, const char *name, int side);
void mem_outputs_free(mem_outputs *o);

extern const sink_ops sink_memory_ops;

#endif
