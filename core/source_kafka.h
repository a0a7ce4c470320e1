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
 * librdkafka's auto-commit.  Two files: kafka_group.c (the group) and
 * source_kafka.c (a partition, as the source kind "kafka" of source.h).
 * Calls librdkafka, jansson, kafka (connection properties), kafka_admin (a
 * client of its own for describing the group), batch and log. */
#ifndef EDDY_SOURCE_KAFKA_H
#define EDDY_SOURCE_KAFKA_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "batch.h"
#include "config.h"
#include "pipeline.h"
#include "source.h"

struct kafka;
typedef struct kgroup kgroup;
typedef struct kpart kpart;

typedef struct kgroup_hooks {
    void *ud;
    void (*wake)(void *ud, int task_id);          /* a partition's state changed */
    void (*serve)(void *ud);                      /* while revoked partitions drain: deliveries, acks */
    /* exactly_once (NULL otherwise): a revocation commits a checkpoint of
     * what was read first, instead of draining.  0, or -1 when it failed. */
    int (*checkpoint)(void *ud);
    /* Not a hook: the consumer's client.id, which the group's other members
     * read (kgroup_members), or NULL for librdkafka's default.  Copied. */
    const char *client_id;
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
/* After the partitions are added, before kgroup_subscribe: the consumer's
 * prefetch budget (32 MB) split over them, 2 to 16 MB a partition (and as
 * many messages as that holds of 64 bytes), unless the config sets
 * kafka.queued.max.messages.kbytes; the consumer is made
 * again when that changes its setting.  Logs the value.  0, or -1 with err. */
int kgroup_fit_prefetch(kgroup *g, char *err, size_t errlen);
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
/* The group's members as the brokers describe them (a blocking request of
 * at most timeout_ms; the answer is kept for KG_MEMBERS_CACHE_MS, a failure
 * too): {"state": "Stable", "members": [{"instance", "admin", "host",
 * "client_id", "partitions": {"topic": [p, ...]}}]}, where instance and
 * admin come from a client.id "eddy/<instance>/<admin host:port>" (null for
 * a member with another client.id; an admin host 0.0.0.0 or :: becomes the
 * member's host as the broker sees it) and partitions from its assignment.
 * Owned, or NULL with err.  Event loop. */
#define KG_MEMBERS_CACHE_MS 1000
json_t *kgroup_members(kgroup *g, int timeout_ms, char *err, size_t errlen);
/* Its parts (for tests): one member's object, from its description; and a
 * member's assignment (ConsumerProtocolAssignment: int16 version, int32
 * topics, each an int16-length name, an int32 count and an int32 per
 * partition, big-endian; then user data, ignored) as {"topic": [p, ...]}
 * ({} when n is 0: none yet).  Owned; the assignment's NULL when malformed. */
struct rd_kafka_group_member_info;
json_t *kgroup_member_json(const struct rd_kafka_group_member_info *m);
json_t *kgroup_assignment_json(const void *data, int n);
/* Prometheus families: lag, offsets, rebalances. */
struct evbuffer;
void kgroup_metrics(kgroup *g, struct evbuffer *out);

/* The consumer's group metadata for send_offsets_to_transaction (owned). */
struct rd_kafka_consumer_group_metadata_s;
struct rd_kafka_consumer_group_metadata_s *kgroup_metadata(kgroup *g);

/* ---- one partition: the source kind "kafka" (source.h) ---- */
extern const source_ops source_kafka_ops;
/* Registers s's partition (a source of kind "kafka" opened by its task
 * `task_id`, of plan p) with the group g, before kgroup_subscribe.  0 (also
 * for a source of another kind), or -1 with err (max_bytes malformed). */
int source_kafka_attach(source *s, kgroup *g, const plan *p, int task_id, char *err, size_t errlen);
#endif
