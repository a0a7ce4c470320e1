/* channel — a bounded FIFO of messages from one upstream task to one
 * downstream task.  Messages are record batches and in-band control marks
 * (watermark, barrier, end of stream).  A push never blocks: the producer
 * asks channel_full() before it produces more, which is how backpressure
 * reaches the sources.  Push wakes the consumer, a pop that makes room wakes
 * the producer (through sched).  Calls batch and sched. */
#ifndef EDDY_CHANNEL_H
#define EDDY_CHANNEL_H

#include <pthread.h>
#include <stdint.h>
#include "batch.h"

struct task;

typedef enum { CH_BATCH, CH_WATERMARK, CH_BARRIER, CH_EOS, CH_MARK, CH_CHECKPOINT } msg_kind;

typedef struct msg {
    msg_kind kind;
    batch *b;            /* CH_BATCH: owned by the message */
    int64_t value;       /* CH_WATERMARK: the watermark; CH_BARRIER: its roll-out (epoch); CH_MARK: an acks marker;
                            CH_CHECKPOINT: the checkpoint's id */
    struct msg *next;
} msg;

typedef struct channel {
    pthread_mutex_t mu;
    msg *head, *tail;
    int depth;           /* messages queued */
    int batches;         /* of which record batches */
    int capacity;        /* batches before the channel counts as full (marks do not count) */
    struct task *producer, *consumer;
    int64_t pushed, popped;   /* batches, for metrics */
} channel;

channel *channel_create(int capacity, struct task *producer, struct task *consumer);
void channel_destroy(channel *c);     /* frees queued messages; NULL is a no-op */

/* Takes ownership of m (and its batch).  Never blocks.  Returns 0, or -1 on
 * allocation failure (m is then freed). */
int channel_push(channel *c, msg_kind kind, batch *b, int64_t value);
/* Returns the oldest message (owned by the caller; free with msg_free), or NULL. */
msg *channel_pop(channel *c);
int channel_full(channel *c);
int channel_depth(channel *c);
void msg_free(msg *m);                /* frees the message and its batch */

#endif
