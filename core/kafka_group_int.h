/* kafka_group_int — the consumer group's and its partitions' state, shared
 * by the two files of the Kafka source: kafka_group.c (the group: joining,
 * rebalances, commits, statistics) and source_kafka.c (one partition: the
 * source kind's callbacks, reading messages).  Include nowhere else: the
 * rest of eddy sees source_kafka.h.  Calls librdkafka. */
#ifndef EDDY_KAFKA_GROUP_INT_H
#define EDDY_KAFKA_GROUP_INT_H

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include "source_kafka.h"

#define DRAIN_TIMEOUT_MS 10000   /* a revoked partition's outputs get at most this long to be acknowledged
                                  * (and half the session timeout: the group must not drop us meanwhile) */
#define CLOSE_TIMEOUT_MS 10000   /* leaving the group at a stop waits at most this long */
#define DOWN_LOG_MS 10000        /* "brokers down" is logged at most this often */
#define PREFETCH_BUDGET_KB 32768 /* prefetch, the consumer's: split over its partitions (kgroup_fit_prefetch) */
#define PREFETCH_FLOOR_KB 2048   /* ... but at least this much a partition */
#define PREFETCH_CEILING_KB 16384 /* ... and at most this much */

enum { START_COMMITTED, START_EARLIEST, START_LATEST };
/* A partition's state (its task sees it as source.h's SOURCE_*). */
enum { KP_UNASSIGNED, KP_ASSIGNED, KP_REVOKING, KP_DRAINING };

struct kpart {
    kgroup *g;
    char *source, *topic;
    int partition, task_id, start;
    int64_t max_bytes;
    pthread_mutex_t mu;            /* q and state, between the event loop and the task */
    rd_kafka_queue_t *q;           /* the partition's own queue, while assigned */
    atomic_int state;              /* KP_* */
    atomic_llong generation;       /* assignments so far (a keyed task restores its state at each) */
    atomic_llong position;         /* the offset after the last one read; -1 before the first */
    atomic_llong acked;            /* outputs before this offset were acknowledged; -1: none yet */
    atomic_ullong drain_marker;    /* the marker a revoked partition's task sent, 0 before */
    atomic_int drained;            /* that marker was acknowledged */
    atomic_llong restore;          /* where the partition started while nothing was read here: the
                                    * checkpoint's offset (recovery), else the assignment's; -1: none */
    int recovering;                /* restore is a recovered checkpoint's, not used yet (event loop) */
    atomic_int at_end;             /* the last thing read was the partition's end (no record since) */
    int bounded;                   /* bounded = true: read up to `end`, then end */
    atomic_llong end;              /* bounded: the partition's end offset at its assignment; -1 unknown */
    char error[512];               /* a failure the task reports (start = "committed" without an offset) */
    int64_t committed;             /* the last offset eddy committed (event loop) */
    int64_t lag, high;             /* from the statistics (event loop); -1 unknown */
    int paused;                    /* the task's side */
    atomic_long messages, bytes;
};

struct kgroup {
    struct kafka *k;
    const config *cfg;
    kgroup_hooks hooks;
    rd_kafka_t *rk;
    rd_kafka_conf_t *conf;         /* rk's, kept to make it again (kgroup_fit_prefetch) */
    kpart **parts; int nparts;
    int closing;
    int close_abandoned;           /* leaving the group timed out: destroy without closing again */
    atomic_int settled;            /* the group gave this instance its first assignment */
    int64_t commit_interval_ms, last_commit_ms;
    int64_t drain_timeout_ms;
    long rebalances, commits, commit_failures;
    pthread_mutex_t mu;            /* down[] (read by the admin thread... and the event loop) */
    char down[512];
    int64_t last_down_log;
    rd_kafka_t *admin_rk;          /* kgroup_members' client (kafka_admin_client), made on first use */
    json_t *members;               /* kgroup_members' last answer (NULL: its error), and when (event loop) */
    char members_err[512];
    int64_t members_at;            /* 0: never asked */
};

#endif
