/* source_kafka — Kafka sources: one consumer per daemon, in the consumer
 * group named by the config's `name` (cooperative-sticky assignment), and one
 * source task per topic partition.  A partition's task reads it only while
 * the group assigns it to this instance, from a queue of its own
 * (rd_kafka_queue_get_partition), so tasks never share a read.  Rebalances
 * are served on the event loop: an assigned partition continues from the
 * group's committed offset (or `start` where there is none); a revoked one
 * is drained first — its task stops reading and sends a marker, and once the
 * outputs before that marker are acknowledged (acks.c) its position is
 * committed and the partition given up.  eddy commits offsets itself, never
 * librdkafka's auto-commit.  Calls librdkafka, jansson, kafka (connection
 * properties), batch and log. */
#ifndef EDDY_SOURCE_KAFKA_H
#define EDDY_SOURCE_KAFKA_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "batch.h"
#include "config.h"

struct kafka;
typedef struct kgroup kgroup;
typedef struct kpart kpart;

/* A partition's state, as its task sees it. */
enum { KP_UNASSIGNED, KP_ASSIGNED, KP_REVOKING, KP_DRAINING };

typedef struct kgroup_hooks {
    void *ud;
    void (*wake)(void *ud, int task_id);          /* a partition's state changed */
    void (*serve)(void *ud);                      /* while revoked partitions drain: deliveries, acks */
    /* exactly_once (NULL otherwise): a revocation commits a checkpoint of
     * what was read first, instead of draining.  0, or -1 when it failed. */
    int (*checkpoint)(void *ud);
} kgroup_hooks;

/* The group's consumer, with the config's kafka properties.  Owned, or NULL with err. */
kgroup *kgroup_create(struct kafka *k, const config *cfg, kgroup_hooks hooks, char *err, size_t errlen);
void kgroup_destroy(kgroup *g);   /* NULL is a no-op; call kgroup_close first */
/* A topic's partition count from the brokers.  -1 with err: KG_UNREACHABLE
 * when no broker answered, KG_UNKNOWN_TOPIC when the topic does not exist. */
enum { KG_UNREACHABLE = 1, KG_UNKNOWN_TOPIC = 2 };
int kgroup_partitions(kgroup *g, const char *topic, int timeout_ms, int *why, char *err, size_t errlen);
/* Registers partition `partition` of `topic`, read by task `task_id` of
 * source `source`.  start: "earliest", "latest" or "committed"; messages
 * over max_bytes go to the error policy.  Borrowed (the group owns it), or NULL. */
kpart *kgroup_add(kgroup *g, const char *source, const char *topic, int partition, int task_id, const char *start,
                  int64_t max_bytes);
/* Joins the group (subscribes to every registered topic).  0, or -1 with err. */
int kgroup_subscribe(kgroup *g, char *err, size_t errlen);
int64_t kgroup_commit_interval(const kgroup *g);   /* ms */
/* Event loop: rebalances, errors, statistics, and commits of acknowledged
 * positions every commit interval (auto.commit.interval.ms, default 5 s). */
void kgroup_poll(kgroup *g);
/* At a clean stop, once every task ended and the sinks delivered: commits
 * what was read (commit = 1) and leaves the group. */
void kgroup_close(kgroup *g, int commit);
/* Why Kafka is unusable now ("all brokers down: ..."), or NULL. */
const char *kgroup_down(kgroup *g, char *buf, size_t len);
json_t *kgroup_status(kgroup *g);              /* owned: the assignment, per partition */
/* Prometheus families: lag, offsets, rebalances. */
struct evbuffer;
void kgroup_metrics(kgroup *g, struct evbuffer *out);

/* ---- one partition (its task's side, on a worker thread) ---- */
int kpart_state(kpart *kp);
/* 1 once the group has assigned partitions and this one is not among ours:
 * it then holds no watermark back here (before the first assignment every
 * partition may still become ours, and holds it). */
int kpart_elsewhere(kpart *kp);
/* Reads up to max messages into b (key, value, headers, Kafka timestamp in
 * ts); records carry partition `index` of source `source`.  Returns the
 * number read (0: none now), or -1 with err (the task fails). */
int kpart_read(kpart *kp, batch *b, int max, uint32_t source, int32_t index, char *err, size_t errlen);
void kpart_pause(kpart *kp, int paused);       /* backpressure: stop or restart fetching (event loop) */
int64_t kpart_position(kpart *kp);             /* the offset after the last one read */
/* 1 when the last read reached the partition's end (nothing left to read
 * now): only then may the partition count as idle. */
int kpart_at_end(kpart *kp);
/* bounded = true: the partition ends once read up to its end offset as of
 * its first assignment (or to its end, when that offset is unknown). */
void kpart_set_bounded(kpart *kp);
int kpart_ended(kpart *kp);                     /* 1 once a bounded partition was read to that end */
int64_t kpart_bound_left(kpart *kp);            /* bounded: offsets left to that end (INT64_MAX: not known) */
/* Recovery: the partition starts at offset the first time it is assigned
 * (before the group's committed offset; with Kafka sinks under exactly_once
 * only where the group has none, its offsets being the checkpoints').  And
 * where a checkpoint restarts it: the position, or while nothing was read
 * the offset it started at (-1: not known). */
void kpart_restore(kpart *kp, int64_t offset);
int64_t kpart_checkpoint_offset(kpart *kp);
const char *kpart_topic(const kpart *kp);
int kpart_partition(const kpart *kp);
kgroup *kpart_group(kpart *kp);
/* Event loop: a Kafka transaction committed offset for the partition (the
 * group has it; nothing is left for the consumer to commit). */
void kpart_committed(kpart *kp, int64_t offset);
/* The consumer's group metadata for send_offsets_to_transaction (owned). */
struct rd_kafka_consumer_group_metadata_s;
struct rd_kafka_consumer_group_metadata_s *kgroup_metadata(kgroup *g);
/* The task stopped reading a revoked partition and sent marker `marker`. */
void kpart_draining(kpart *kp, uint64_t marker);
/* acks.c: every output caused by the records before `position` was
 * acknowledged; `marker` is the marker that showed it. */
void kpart_acked(kpart *kp, uint64_t marker, int64_t position);

#endif
