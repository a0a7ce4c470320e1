/* kafka_admin — the topics eddy itself needs on the brokers (shuffle =
 * "kafka": a keyed stage's repartition topic, a stateful operator's
 * compacted changelog): creates those missing through the Admin API (the
 * broker's default replication) and checks the partition count of those
 * that exist.  Runs once at start, before the tasks are built; blocking.
 * Calls librdkafka and kafka (the connection's bootstrap servers and
 * properties). */
#ifndef EDDY_KAFKA_ADMIN_H
#define EDDY_KAFKA_ADMIN_H

#include <stddef.h>

struct kafka;

typedef struct kafka_topic_spec {
    const char *name;        /* borrowed */
    int partitions;          /* what eddy needs */
    int compacted;           /* created with cleanup.policy=compact */
    int have;                /* out: the partitions it had (KA_PARTITIONS), else what it has now */
} kafka_topic_spec;

/* A client of its own for admin requests and metadata, with the config's
 * kafka properties: its requests do not wait behind a consumer's fetches on
 * a shared connection (a broker answers one connection's requests in
 * order).  Owned (rd_kafka_destroy), or NULL with err. */
struct rd_kafka_s;
struct rd_kafka_s *kafka_admin_client(struct kafka *k, char *err, size_t errlen);

/* Why kafka_admin_ensure_topics failed. */
enum {
    KA_FAILED = 1,           /* the brokers refused (authorization, a bad topic config, ...) */
    KA_UNREACHABLE = 2,      /* no broker answered within the timeout */
    KA_PARTITIONS = 3,       /* specs[*at] exists with specs[*at].have partitions, not .partitions */
};

/* Makes every topic of specs[0..n) exist with its partition count: creates
 * the missing ones (a topic another instance created meanwhile counts as
 * there) and waits until their partitions have leaders.  timeout_ms bounds
 * each broker round trip.  0, or -1 with err naming the topic, *why (KA_*)
 * and *at (the spec at fault, -1 when none is). */
int kafka_admin_ensure_topics(struct kafka *k, kafka_topic_spec *specs, int n, int timeout_ms, int *why, int *at,
                              char *err, size_t errlen);

#endif
