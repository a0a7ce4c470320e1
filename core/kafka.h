/* kafka — the daemon's connection to Kafka: the embedded broker when the
 * config asks for one (librdkafka's mock cluster, kafka.embedded), and the
 * producers of Kafka sinks (one per sink, shared by its tasks; idempotent,
 * partitioning by murmur2 of the key as the Java client does).  Delivery
 * reports are served from the event loop; a message Kafka finally refuses
 * goes to the error policy.  Calls librdkafka, jansson and log. */
#ifndef EDDY_KAFKA_H
#define EDDY_KAFKA_H

#include <stddef.h>
#include <stdint.h>
#include "config.h"

typedef struct kafka kafka;
typedef struct kafka_sink kafka_sink;

/* Starts the embedded broker when configured.  Returns an owned kafka, or NULL with err. */
kafka *kafka_create(const config *cfg, char *err, size_t errlen);
void kafka_destroy(kafka *k);       /* flushes nothing: call kafka_flush first; NULL is a no-op */
const char *kafka_bootstrap(const kafka *k);

/* The producer of sink `name` writing to `topic`, created on first use with
 * the config's kafka properties and the sink's own (keys with a dot).
 * Borrowed; NULL with err. */
kafka_sink *kafka_sink_get(kafka *k, const char *name, const char *topic, const opt_list *props,
                           char *err, size_t errlen);
/* Queues one message (copied).  ts < 0: no timestamp; hdrs: a MessagePack
 * map of header names to strings, or NULL.  origin: a JSON object of the
 * input position the message was made from ({"task", "source", "file" or
 * "topic", "partition", "offset", "line"}), or NULL; copied and kept until
 * the delivery report under on_error = "dead_letter", so that a message
 * Kafka finally refuses is dead-lettered with it.  0, or -1 with err. */
int kafka_sink_send(kafka_sink *s, const char *key, size_t klen, const char *val, size_t vlen, int64_t ts,
                    const char *hdrs, size_t hlen, const char *origin, char *err, size_t errlen);
/* The same to a chosen partition (a repartition or changelog topic's, whose
 * partition is a keyed task); val NULL: a tombstone. */
int kafka_sink_send_to(kafka_sink *s, int32_t partition, const char *key, size_t klen, const char *val, size_t vlen,
                       int64_t ts, const char *hdrs, size_t hlen, const char *origin, char *err, size_t errlen);
/* Appends the samples of eddy_dead_letters_total{sink} (messages Kafka
 * refused after its retries, dead-lettered) to out, one per Kafka sink. */
struct evbuffer;
void kafka_metrics_dead_letters(kafka *k, struct evbuffer *out);
/* The sequence number of the last message queued (0: none yet); and whether
 * every message up to seq was acknowledged (delivered, or refused and handed
 * to the error policy).  Any thread. */
int64_t kafka_sink_seq(kafka_sink *s);
int kafka_sink_acked(kafka_sink *s, int64_t seq);
/* Sets bootstrap.servers and the config's kafka properties on conf, then
 * `own` (librdkafka keys, those with a dot; errors name own_prefix.KEY).  0, or -1. */
struct rd_kafka_conf_s;
int kafka_conf_apply(const kafka *k, struct rd_kafka_conf_s *conf, const opt_list *own, const char *own_prefix,
                     char *err, size_t errlen);
/* Serves delivery reports (event loop).  Failures are counted, logged and
 * handed to the error policy: dead letters are written here, "fail" is
 * remembered for kafka_failed. */
void kafka_poll(kafka *k);
/* Waits up to timeout_ms for every queued message; 0 when all were delivered. */
int kafka_flush(kafka *k, int timeout_ms);
/* Appends one dead letter (a JSON line) to the topic dead_letter.kafka names
 * (its producer is made by kafka_create).  0, or -1 with err.  Any thread. */
int kafka_dead_letter(kafka *k, const char *line, size_t n, char *err, size_t errlen);
kafka_sink *kafka_dead_letter_sink(kafka *k);    /* borrowed; NULL without dead_letter.kafka */
/* The first delivery failure under on_error = "fail", or NULL. */
const char *kafka_failed(const kafka *k);
/* Makes eddy stop as kafka_failed says (why, unless a failure came first);
 * under exactly_once the open transaction then commits no more. */
void kafka_fail(kafka *k, const char *why);
int kafka_nsinks(const kafka *k);
kafka_sink *kafka_sink_at(const kafka *k, int i);      /* borrowed */
const char *kafka_sink_name(const kafka_sink *s);
int64_t kafka_sink_sent(const kafka_sink *s);
int64_t kafka_sink_failed(const kafka_sink *s);
int64_t kafka_sink_bytes(const kafka_sink *s);     /* key and value bytes delivered */

/* ---- exactly_once: one Kafka transaction per checkpoint ---------------------
 * Every Kafka sink then writes through one transactional producer
 * (transactional.id: kafka["transactional.id"], else "eddy-<name>"); the
 * coordinator drives it (event loop): begin, then at each checkpoint
 * prepare (flush; a refused message fails it) and commit (the Kafka
 * sources' offsets are sent to the transaction for the consumer group
 * `name`, the checkpoint's id as the offset of partition 0 of the marker
 * topic in the group named by the transactional id, then
 * commit_transaction: the commit point).  Retriable errors are retried; an
 * abortable one aborts; any failure is also kept for kafka_failed, so the
 * daemon stops and restarts from the last committed checkpoint.
 * kafka_destroy aborts a transaction still open. */
int kafka_txn_active(const kafka *k);        /* a transactional producer exists (k may be NULL) */
const char *kafka_txn_id(const kafka *k);
/* The marker topic: the daemon's first Kafka sink's, set once from the plan
 * before any commit or kafka_txn_marker. */
void kafka_txn_set_topic(kafka *k, const char *topic);
/* init (init_transactions first: fences an older producer with the id, whose
 * open transaction the broker aborts) and begin_transaction.  0, or -1 with err. */
int kafka_txn_begin(kafka *k, int init, char *err, size_t errlen);
int kafka_txn_prepare(kafka *k, int64_t checkpoint, char *err, size_t errlen);
/* Commits the open transaction with the source partitions' offsets of the
 * checkpoint (offs: those assigned to this instance; sent to g's consumer
 * group with its metadata; none when noffs is 0 or g NULL) and the marker. */
typedef struct kafka_offset { const char *topic; int partition; int64_t offset; } kafka_offset;
struct kgroup;
int kafka_txn_commit(kafka *k, int64_t checkpoint, const kafka_offset *offs, int noffs, struct kgroup *g, char *err,
                     size_t errlen);
/* The checkpoint id the last committed transaction carried (0: none known;
 * a broker that does not keep offsets sent to transactions, such as the
 * embedded one, knows none).  Ends the last run's transaction first (a
 * producer with the id calls init_transactions), so the offset is stable.
 * 0, or -1 with err. */
int kafka_txn_marker(kafka *k, int64_t *checkpoint, char *err, size_t errlen);
int64_t kafka_txn_committed(const kafka *k);  /* transactions committed by this process */
int64_t kafka_txn_aborted(const kafka *k);    /* failed: aborted, or left to the broker to abort */
/* A transaction failed because the consumer group rebalanced while its
 * offsets went in (ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS,
 * UNKNOWN_MEMBER_ID): the restart that follows is not the job's failure. */
int kafka_txn_rebalanced(const kafka *k);

#endif
