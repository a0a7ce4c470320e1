#include "kafka.h"
#include "shuffle.h"
#include "clock.h"
#include "log.h"
#include "source_kafka.h"
#include "metrics.h"
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <msgpack.h>
#include <stdint.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct kafka_sink {
    kafka *k;
    char *name, *topic;
    rd_kafka_t *rk;
    int shared;                     /* writes through the daemon's transactional producer */
    atomic_long sent, failed, bytes;
    atomic_long dead_letters;       /* refused after the retries and dead-lettered */
    int with_origin;                /* each message's opaque is a struct pending (dead_letter policy) */
    /* acknowledgements: every message gets a sequence number; `low` is the
     * first one not yet acknowledged (delivered, or refused and handed to the
     * error policy).  Reports arrive out of order across partitions, so the
     * ones past `low` wait in a ring. */
    atomic_llong next_seq;
    pthread_mutex_t ack_mu;
    int64_t low;
    unsigned char *done; size_t cap;     /* done[seq % cap] for low <= seq < low + cap */
};

struct kafka {
    const config *cfg;
    rd_kafka_t *mock_rk;            /* owns the embedded cluster */
    rd_kafka_mock_cluster_t *mock;
    char *bootstrap;
    kafka_sink **sinks; int nsinks;
    pthread_mutex_t mu;             /* sinks list; the dead-letter file */
    FILE *dead_letter;
    kafka_sink *dead_letters;       /* the producer of dead_letter.kafka, created on first use */
    char failed[1024];              /* the first delivery failure under on_error = "fail", or a
                                     * transaction that failed (exactly_once) */
    /* exactly_once: one transactional producer for every Kafka sink, so a
     * checkpoint has one Kafka transaction; txn_error is the first delivery
     * failure in the open one */
    rd_kafka_t *txn_rk;
    char txn_id[512], txn_topic[512];
    int txn_open;
    int64_t txn_base;               /* the sinks' messages queued when the open transaction began */
    int64_t txn_committed, txn_aborted;
    int txn_rebalanced;             /* a transaction failed because the group rebalanced meanwhile */
    char txn_error[512];            /* under mu */
    int64_t refused_log_ms;         /* rate limit of the "Kafka refused a message" lines (under mu) */
    int refused_log_n;
    long refused_unlogged;
};

/* A message's opaque under on_error = "dead_letter": its sequence number and
 * the input position it came from, until its delivery report. */
struct pending {
    int64_t seq;
    char origin[];                  /* a JSON object's text, "" when none */
};

static int64_t txn_queued(kafka *k);

kafka *kafka_create(const config *cfg, char *err, size_t errlen) {
    kafka *k = calloc(1, sizeof *k);
    if (!k) { snprintf(err, errlen, "out of memory"); return NULL; }
    k->cfg = cfg;
    pthread_mutex_init(&k->mu, NULL);
    const opt *tid = opt_find(&cfg->kafka, "transactional.id");
    char instance[17];
    if (tid) snprintf(k->txn_id, sizeof k->txn_id, "%s", tid->s);
    else if (cfg->shuffle != SHUFFLE_KAFKA) snprintf(k->txn_id, sizeof k->txn_id, "eddy-%s", cfg->name);
    else if (shuffle_instance_id(cfg->state_dir, instance, err, errlen) == 0)
        snprintf(k->txn_id, sizeof k->txn_id, "eddy-%s-%s", cfg->name, instance);   /* every instance its own */
    else goto err;
    if (cfg->kafka_embedded) {
        char e[512];
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        rd_kafka_conf_set(conf, "log_level", "3", e, sizeof e);
        k->mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof e);
        if (!k->mock_rk) {
            rd_kafka_conf_destroy(conf);
            snprintf(err, errlen, "kafka.embedded: %s", e);
            goto err;
        }
        k->mock = rd_kafka_mock_cluster_new(k->mock_rk, cfg->kafka_embedded_brokers);
        if (!k->mock) { snprintf(err, errlen, "kafka.embedded: cannot start the embedded broker"); goto err; }
        for (int i = 0; i < cfg->kafka_embedded_topics.n; i++) {
            const opt *t = &cfg->kafka_embedded_topics.items[i];
            rd_kafka_resp_err_t re = rd_kafka_mock_topic_create(k->mock, t->key, (int)t->n, 1);
            if (re) { snprintf(err, errlen, "kafka.embedded.topics.%s: %s", t->key, rd_kafka_err2str(re)); goto err; }
        }
        k->bootstrap = strdup(rd_kafka_mock_cluster_bootstraps(k->mock));
        log_info("kafka.embedded: broker at %s", k->bootstrap);
    } else {
        const opt *b = opt_find(&cfg->kafka, "bootstrap.servers");
        k->bootstrap = strdup(b ? b->s : "");
    }
    /* the dead-letter producer exists before any task runs: workers use it
     * and the event loop polls it, so it is never added while they do */
    if (cfg->dead_letter_kafka &&
        !(k->dead_letters = kafka_sink_get(k, "dead_letter.kafka", cfg->dead_letter_kafka, NULL, err, errlen)))
        goto err;
    return k;
err:
    kafka_destroy(k);
    return NULL;
}

const char *kafka_bootstrap(const kafka *k) { return k->bootstrap; }

/* A message Kafka finally refused: counted, logged (at most 5 lines a
 * second, then a count of the ones left out), and handed to the error
 * policy.  origin: the input position's JSON object text, or NULL. */
static void delivery_failed(kafka_sink *s, const rd_kafka_message_t *m, const char *origin) {
    kafka *k = s->k;
    s->failed++;
    const char *why = rd_kafka_err2str(m->err);
    if (s == k->dead_letters) {       /* nowhere left to put it: the log has it */
        log_error("dead_letter.kafka: Kafka refused a dead letter for topic %s: %s: %.*s", s->topic, why,
                  (int)(m->len > 2000 ? 2000 : m->len), m->payload ? (const char *)m->payload : "");
        return;
    }
    pthread_mutex_lock(&k->mu);
    int show = log_ratelimited(&k->refused_log_ms, &k->refused_log_n, 5);
    long left_out = show ? k->refused_unlogged : 0;
    if (show) k->refused_unlogged = 0;
    else k->refused_unlogged++;
    pthread_mutex_unlock(&k->mu);
    if (show && left_out)
        log_error("sink '%s': Kafka refused a message for topic %s: %s (and %ld more refused messages not logged)",
                  s->name, s->topic, why, left_out);
    else if (show)
        log_error("sink '%s': Kafka refused a message for topic %s: %s", s->name, s->topic, why);
    if (k->cfg->on_error == ON_ERROR_FAIL) {
        pthread_mutex_lock(&k->mu);
        if (!k->failed[0])
            snprintf(k->failed, sizeof k->failed, "sink '%s': Kafka refused a message for topic %s: %s", s->name,
                     s->topic, why);
        pthread_mutex_unlock(&k->mu);
    } else if (k->cfg->on_error == ON_ERROR_DEAD_LETTER) {
        /* the input position first (task, source, file or topic, partition, offset, line) */
        json_t *j = origin && *origin ? json_loads(origin, 0, NULL) : NULL;
        if (!j) j = json_object();
        char msg[1024];
        snprintf(msg, sizeof msg, "sink '%s': Kafka refused a message for topic %s: %s", s->name, s->topic, why);
        json_t *more = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s%, s:s%}", "time", (json_int_t)clock_wall_ms(),
                                 "sink", s->name, "sink_topic", s->topic, "operator_kind", "sink", "error", msg,
                                 "key", m->key ? (const char *)m->key : "", m->key ? m->key_len : 0,
                                 "record", m->payload ? (const char *)m->payload : "", m->payload ? m->len : 0);
        if (j && more) json_object_update(j, more);
        json_decref(more);
        char *line = j ? json_dumps(j, JSON_COMPACT) : NULL;
        char err[512];
        if (!line) log_error("sink '%s': out of memory writing a dead letter", s->name);
        else if (k->cfg->dead_letter_kafka) {
            if (kafka_dead_letter(k, line, strlen(line), err, sizeof err) < 0) log_error("%s", err);
            else s->dead_letters++;
        } else {
            pthread_mutex_lock(&k->mu);
            if (!k->dead_letter) k->dead_letter = fopen(k->cfg->dead_letter_file, "a");
            if (k->dead_letter && fputs(line, k->dead_letter) >= 0 && fputc('\n', k->dead_letter) != EOF &&
                fflush(k->dead_letter) == 0)
                s->dead_letters++;
            else
                log_error("sink '%s': cannot write the refused message to %s", s->name, k->cfg->dead_letter_file);
            pthread_mutex_unlock(&k->mu);
        }
        free(line);
        json_decref(j);
    }
}

/* Marks message seq acknowledged and moves `low` past what is contiguous. */
static void ack(kafka_sink *s, int64_t seq) {
    pthread_mutex_lock(&s->ack_mu);
    if (seq >= s->low) {
        if ((size_t)(seq - s->low) >= s->cap) {
            size_t ncap = s->cap ? s->cap : 4096;
            while ((size_t)(seq - s->low) >= ncap) ncap *= 2;
            unsigned char *nd = calloc(ncap, 1);
            if (!nd) { pthread_mutex_unlock(&s->ack_mu); log_error("sink '%s': out of memory", s->name); return; }
            for (size_t i = 0; i < s->cap; i++) nd[(s->low + i) % ncap] = s->done[(s->low + i) % s->cap];
            free(s->done);
            s->done = nd;
            s->cap = ncap;
        }
        s->done[seq % s->cap] = 1;
        while (s->done[s->low % s->cap]) { s->done[s->low % s->cap] = 0; s->low++; }
    }
    pthread_mutex_unlock(&s->ack_mu);
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *conf_opaque) {
    (void)rk;
    /* one producer per sink, or the transactional one: the message names its sink */
    kafka_sink *s = conf_opaque ? conf_opaque : m->_private;
    if (!m->err) { s->sent++; s->bytes += (long)(m->len + m->key_len); }
    if (s->shared) {
        /* exactly_once: a refused message fails the transaction (kafka_txn_prepare) */
        if (m->err) {
            s->failed++;
            pthread_mutex_lock(&s->k->mu);
            if (!s->k->txn_error[0])
                snprintf(s->k->txn_error, sizeof s->k->txn_error, "sink '%s': Kafka refused a message for topic %s: %s",
                         s->name, s->topic, rd_kafka_err2str(m->err));
            pthread_mutex_unlock(&s->k->mu);
        }
        return;
    }
    struct pending *pd = s->with_origin ? m->_private : NULL;
    if (m->err) delivery_failed(s, m, pd ? pd->origin : NULL);
    /* a refused message under on_error = "fail" is never acknowledged: no
     * offset past it is committed, and eddy stops (kafka_failed) */
    if (!m->err || s->k->cfg->on_error != ON_ERROR_FAIL || s == s->k->dead_letters)
        ack(s, pd ? pd->seq : (int64_t)(intptr_t)m->_private);     /* the opaque: its sequence number */
    free(pd);
}

int64_t kafka_sink_seq(kafka_sink *s) { return atomic_load(&s->next_seq); }

int kafka_sink_acked(kafka_sink *s, int64_t seq) {
    pthread_mutex_lock(&s->ack_mu);
    int ok = s->low > seq;
    pthread_mutex_unlock(&s->ack_mu);
    return ok;
}

/* librdkafka's own log lines go through eddy's log; its warnings and errors
 * (a refused connection, every second while a broker is away) at most one
 * per LIB_LOG_EVERY_MS, with a count of what was left out. */
#define LIB_LOG_EVERY_MS 5000
static pthread_mutex_t lib_log_mu = PTHREAD_MUTEX_INITIALIZER;
static int64_t lib_log_last;
static long lib_log_dropped;

static void on_lib_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    (void)rk;
    if (level > 4) { log_info("librdkafka %s: %s", fac, buf); return; }    /* debug asked for in the config */
    int64_t now = clock_mono_ms();
    pthread_mutex_lock(&lib_log_mu);
    long dropped = -1;
    if (now - lib_log_last >= LIB_LOG_EVERY_MS) { lib_log_last = now; dropped = lib_log_dropped; lib_log_dropped = 0; }
    else lib_log_dropped++;
    pthread_mutex_unlock(&lib_log_mu);
    if (dropped < 0) return;
    if (dropped > 0) log_warn("kafka: %s (and %ld more librdkafka warnings in the last %d s)", buf, dropped, LIB_LOG_EVERY_MS / 1000);
    else log_warn("kafka: %s", buf);
}

int kafka_conf_apply(const kafka *k, rd_kafka_conf_t *conf, const opt_list *own, const char *own_prefix, char *err,
                     size_t errlen) {
    char e[512];
    rd_kafka_conf_set_log_cb(conf, on_lib_log);
    if (k->bootstrap[0] && rd_kafka_conf_set(conf, "bootstrap.servers", k->bootstrap, e, sizeof e) != RD_KAFKA_CONF_OK) {
        snprintf(err, errlen, "kafka: %s", e);
        return -1;
    }
    const opt_list *lists[2] = { &k->cfg->kafka, own };
    for (int l = 0; l < 2; l++) {
        if (!lists[l]) continue;
        for (int i = 0; i < lists[l]->n; i++) {
            const opt *o = &lists[l]->items[i];
            if (!strchr(o->key, '.') && l == 1) continue;     /* a sink's options that are not librdkafka's */
            if (l == 0 && strcmp(o->key, "transactional.id") == 0) continue;   /* the transactional producer's only */
            if (rd_kafka_conf_set(conf, o->key, o->s, e, sizeof e) != RD_KAFKA_CONF_OK) {
                if (l == 0) snprintf(err, errlen, "kafka.%s: %s", o->key, e);
                else snprintf(err, errlen, "%s.%s: %s", own_prefix, o->key, e);
                return -1;
            }
        }
    }
    return 0;
}

/* A producer: eddy's defaults (extra, then the config's kafka properties,
 * then `props` may override them), `own` set last; opaque as the delivery
 * reports' (NULL: each message names its sink).  Owned, or NULL with err. */
static rd_kafka_t *producer(kafka *k, const char *extra_key, const char *extra_value, const opt_list *props,
                            const char *prefix, const char *own_key, const char *own_value, void *opaque,
                            const char *what, char *err, size_t errlen) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char e[512];
    struct { const char *k, *v; } defaults[] = {
        {"enable.idempotence", "true"}, {"partitioner", "murmur2_random"}, {"linger.ms", "5"}, {"log_level", "3"},
        {extra_key, extra_value},
    };
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++)
        if (defaults[i].k) rd_kafka_conf_set(conf, defaults[i].k, defaults[i].v, e, sizeof e);
    if (kafka_conf_apply(k, conf, props, prefix, err, errlen) < 0) { rd_kafka_conf_destroy(conf); return NULL; }
    if (own_key && rd_kafka_conf_set(conf, own_key, own_value, e, sizeof e) != RD_KAFKA_CONF_OK) {
        snprintf(err, errlen, "kafka.%s: %s", own_key, e);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    if (opaque) rd_kafka_conf_set_opaque(conf, opaque);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof e);   /* takes conf, or leaves it to us */
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        snprintf(err, errlen, "%s: %s", what, e);
    }
    return rk;
}

kafka_sink *kafka_sink_get(kafka *k, const char *name, const char *topic, const opt_list *props,
                           char *err, size_t errlen) {
    pthread_mutex_lock(&k->mu);
    for (int i = 0; i < k->nsinks; i++)
        if (strcmp(k->sinks[i]->name, name) == 0) { pthread_mutex_unlock(&k->mu); return k->sinks[i]; }
    kafka_sink *s = calloc(1, sizeof *s);
    kafka_sink **ns = realloc(k->sinks, sizeof *ns * (k->nsinks + 1));
    if (!s || !ns) { snprintf(err, errlen, "out of memory"); goto err; }
    k->sinks = ns;
    s->k = k;
    s->name = strdup(name);
    s->topic = strdup(topic);
    char what[300];
    snprintf(what, sizeof what, "sinks.%s", name);
    if (k->cfg->guarantee == GUARANTEE_EXACTLY_ONCE && strcmp(name, "dead_letter.kafka") != 0) {
        /* one transaction per checkpoint: every sink shares one producer */
        for (int i = 0; props && i < props->n; i++)
            if (strchr(props->items[i].key, '.')) {
                snprintf(err, errlen, "sinks.%s.%s: under exactly_once every Kafka sink writes through one "
                         "transactional producer: set librdkafka properties in kafka = { ... }", name,
                         props->items[i].key);
                goto err;
            }
        if (!k->txn_rk && !(k->txn_rk = producer(k, "transaction.timeout.ms", "60000", NULL, NULL, "transactional.id",
                                                 k->txn_id, NULL, "kafka: the transactional producer", err, errlen)))
            goto err;
        s->shared = 1;
        s->rk = k->txn_rk;
    } else if (!(s->rk = producer(k, NULL, NULL, props, what, NULL, NULL, s, what, err, errlen))) {
        goto err;
    }
    pthread_mutex_init(&s->ack_mu, NULL);
    s->low = 1;
    s->with_origin = !s->shared && k->cfg->on_error == ON_ERROR_DEAD_LETTER && strcmp(name, "dead_letter.kafka") != 0;
    k->sinks[k->nsinks++] = s;
    pthread_mutex_unlock(&k->mu);
    return s;
err:
    if (s) { free(s->name); free(s->topic); free(s); }
    pthread_mutex_unlock(&k->mu);
    return NULL;
}

/* Kafka headers from a MessagePack map of name -> string (or nil).  Owned, or NULL. */
static rd_kafka_headers_t *headers_of(const char *p, size_t n) {
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    rd_kafka_headers_t *h = NULL;
    if (msgpack_unpack_next(&u, p, n, NULL) == MSGPACK_UNPACK_SUCCESS && u.data.type == MSGPACK_OBJECT_MAP) {
        h = rd_kafka_headers_new(u.data.via.map.size);
        for (uint32_t i = 0; i < u.data.via.map.size; i++) {
            const msgpack_object *k = &u.data.via.map.ptr[i].key, *v = &u.data.via.map.ptr[i].val;
            if (k->type != MSGPACK_OBJECT_STR) continue;
            if (v->type == MSGPACK_OBJECT_STR)
                rd_kafka_header_add(h, k->via.str.ptr, (ssize_t)k->via.str.size, v->via.str.ptr, (ssize_t)v->via.str.size);
            else
                rd_kafka_header_add(h, k->via.str.ptr, (ssize_t)k->via.str.size, NULL, 0);
        }
    }
    msgpack_unpacked_destroy(&u);
    return h;
}

int kafka_sink_send(kafka_sink *s, const char *key, size_t klen, const char *val, size_t vlen, int64_t ts,
                    const char *hdrs, size_t hlen, const char *origin, char *err, size_t errlen) {
    return kafka_sink_send_to(s, RD_KAFKA_PARTITION_UA, key, klen, val, vlen, ts, hdrs, hlen, origin, err, errlen);
}

int kafka_sink_send_to(kafka_sink *s, int32_t partition, const char *key, size_t klen, const char *val, size_t vlen,
                       int64_t ts, const char *hdrs, size_t hlen, const char *origin, char *err, size_t errlen) {
    int64_t seq = atomic_fetch_add(&s->next_seq, 1) + 1;     /* sequence numbers start at 1 */
    void *opaque = s->shared ? (void *)s : (void *)(intptr_t)seq;
    struct pending *pd = NULL;
    if (s->with_origin) {
        size_t on = origin ? strlen(origin) : 0;
        if (!(pd = malloc(sizeof *pd + on + 1))) {
            ack(s, seq);
            snprintf(err, errlen, "sink '%s': out of memory", s->name);
            return -1;
        }
        pd->seq = seq;
        memcpy(pd->origin, origin ? origin : "", on + 1);
        opaque = pd;
    }
    for (int attempt = 0;; attempt++) {
        rd_kafka_headers_t *h = hdrs && hlen ? headers_of(hdrs, hlen) : NULL;
        rd_kafka_resp_err_t e = rd_kafka_producev(s->rk, RD_KAFKA_V_TOPIC(s->topic), RD_KAFKA_V_PARTITION(partition),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY((void *)key, key ? klen : 0),
            RD_KAFKA_V_VALUE((void *)val, vlen), RD_KAFKA_V_TIMESTAMP(ts > 0 ? ts : 0),
            RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
        if (!e) return 0;                         /* the message owns h now (and pd, until its report) */
        if (h) rd_kafka_headers_destroy(h);
        if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL && attempt < 600) {
            rd_kafka_poll(s->rk, 100);            /* the producer's queue is full: wait for Kafka (backpressure) */
            continue;
        }
        if (!s->shared) ack(s, seq);              /* never queued: the error policy has it */
        free(pd);
        snprintf(err, errlen, "sink '%s': cannot queue a message for topic %s: %s", s->name, s->topic, rd_kafka_err2str(e));
        return -1;
    }
}

void kafka_poll(kafka *k) {
    pthread_mutex_lock(&k->mu);
    int n = k->nsinks;
    pthread_mutex_unlock(&k->mu);
    for (int i = 0; i < n; i++)
        if (!k->sinks[i]->shared) rd_kafka_poll(k->sinks[i]->rk, 0);
    if (k->txn_rk) rd_kafka_poll(k->txn_rk, 0);
}

int kafka_flush(kafka *k, int timeout_ms) {
    int rc = 0;
    for (int i = 0; i < k->nsinks; i++) {
        if (k->sinks[i]->shared) continue;      /* a transaction commits what it holds */
        rd_kafka_resp_err_t e = rd_kafka_flush(k->sinks[i]->rk, timeout_ms);
        if (e) {
            log_error("sink '%s': %d messages not delivered after %d ms: %s", k->sinks[i]->name,
                      rd_kafka_outq_len(k->sinks[i]->rk), timeout_ms, rd_kafka_err2str(e));
            rc = -1;
        }
    }
    return rc;
}

int kafka_dead_letter(kafka *k, const char *line, size_t n, char *err, size_t errlen) {
    if (!k->dead_letters) { snprintf(err, errlen, "dead_letter.kafka is not set"); return -1; }
    return kafka_sink_send(k->dead_letters, NULL, 0, line, n, -1, NULL, 0, NULL, err, errlen);
}

kafka_sink *kafka_dead_letter_sink(kafka *k) { return k->dead_letters; }

const char *kafka_failed(const kafka *k) { return k->failed[0] ? k->failed : NULL; }

void kafka_fail(kafka *k, const char *why) {
    pthread_mutex_lock(&k->mu);
    if (!k->failed[0]) snprintf(k->failed, sizeof k->failed, "%s", why);
    pthread_mutex_unlock(&k->mu);
}
int kafka_nsinks(const kafka *k) { return k->nsinks; }
kafka_sink *kafka_sink_at(const kafka *k, int i) { return i >= 0 && i < k->nsinks ? k->sinks[i] : NULL; }
const char *kafka_sink_name(const kafka_sink *s) { return s->name; }
int64_t kafka_sink_sent(const kafka_sink *s) { return s->sent; }
int64_t kafka_sink_failed(const kafka_sink *s) { return s->failed; }
int64_t kafka_sink_bytes(const kafka_sink *s) { return s->bytes; }

void kafka_destroy(kafka *k) {
    if (!k) return;
    if (k->txn_rk) {
        if (k->txn_open) {
            /* a run that failed or stopped before its last commit */
            rd_kafka_error_t *e = rd_kafka_abort_transaction(k->txn_rk, 10000);
            log_warn("kafka: the open transaction (%ld records since the last checkpoint) %s%s",
                     (long)(txn_queued(k) - k->txn_base),
                     e ? "could not be aborted now (the broker aborts it when the producer comes back or times out): "
                       : "was aborted", e ? rd_kafka_error_string(e) : "");
            if (e) rd_kafka_error_destroy(e);
        }
        rd_kafka_destroy(k->txn_rk);
    }
    for (int i = 0; i < k->nsinks; i++) {
        if (!k->sinks[i]->shared) rd_kafka_destroy(k->sinks[i]->rk);
        pthread_mutex_destroy(&k->sinks[i]->ack_mu);
        free(k->sinks[i]->done);
        free(k->sinks[i]->name);
        free(k->sinks[i]->topic);
        free(k->sinks[i]);
    }
    free(k->sinks);
    if (k->mock) rd_kafka_mock_cluster_destroy(k->mock);
    if (k->mock_rk) rd_kafka_destroy(k->mock_rk);
    if (k->dead_letter) fclose(k->dead_letter);
    pthread_mutex_destroy(&k->mu);
    free(k->bootstrap);
    free(k);
}

/* ---- exactly_once: the transaction of each checkpoint ------------------------- */

int kafka_txn_active(const kafka *k) { return k && k->txn_rk != NULL; }
const char *kafka_txn_id(const kafka *k) { return k->txn_id; }
void kafka_txn_set_topic(kafka *k, const char *topic) { snprintf(k->txn_topic, sizeof k->txn_topic, "%s", topic); }
int64_t kafka_txn_committed(const kafka *k) { return k->txn_committed; }
int kafka_txn_rebalanced(const kafka *k) { return k && k->txn_rebalanced; }
int64_t kafka_txn_aborted(const kafka *k) { return k->txn_aborted; }

/* Messages the transactional producer's sinks were given so far. */
static int64_t txn_queued(kafka *k) {
    int64_t n = 0;
    for (int i = 0; i < k->nsinks; i++)
        if (k->sinks[i]->shared) n += atomic_load(&k->sinks[i]->next_seq);
    return n;
}

/* The open transaction failed (why): it is aborted when abort is set (its
 * records are never visible to read_committed consumers), else left to the
 * broker (a fenced or fatally failed producer cannot abort).  The daemon then
 * stops (kafka_failed) and the restart strategy brings it back from the
 * last committed checkpoint.  -1 with err. */
static int txn_failed(kafka *k, const char *what, const char *why, int abort, char *err, size_t errlen) {
    long n = (long)(txn_queued(k) - k->txn_base);
    rd_kafka_error_t *a = abort ? rd_kafka_abort_transaction(k->txn_rk, 30000) : NULL;
    if (a && rd_kafka_error_is_fatal(a))      /* e.g. fenced while its messages were on their way */
        snprintf(err, errlen, "kafka: %s: %s; the transaction could not be aborted: %s (%ld records in it): the "
                 "producer cannot go on (fenced by another with the same transactional.id, or a fatal error)",
                 what, why, rd_kafka_error_string(a), n);
    else if (abort)
        snprintf(err, errlen, "kafka: %s: %s; the transaction %s (%ld records in it)", what, why,
                 a ? "could not be aborted" : "was aborted", n);
    else
        snprintf(err, errlen, "kafka: %s: %s (%ld records in the open transaction, which the broker aborts)", what,
                 why, n);
    if (a) rd_kafka_error_destroy(a);
    k->txn_open = 0;
    k->txn_aborted++;
    pthread_mutex_lock(&k->mu);
    if (!k->failed[0]) snprintf(k->failed, sizeof k->failed, "%s", err);
    pthread_mutex_unlock(&k->mu);
    return -1;
}

/* An error of a transactional call (retriable ones were retried): aborts
 * when it needs an abort.  Takes e.  -1 with err. */
static int txn_error(kafka *k, rd_kafka_error_t *e, const char *what, char *err, size_t errlen) {
    char why[1024];
    snprintf(why, sizeof why, "%s: %s%s", rd_kafka_error_name(e), rd_kafka_error_string(e),
             rd_kafka_error_is_fatal(e) ? "; the producer cannot go on (fenced by another with the same "
                                          "transactional.id, or a fatal error)" : "");
    int abort = rd_kafka_error_txn_requires_abort(e);
    rd_kafka_resp_err_t code = rd_kafka_error_code(e);
    rd_kafka_error_destroy(e);
    /* the group moved on while the offsets went in (a rebalance overlapped
     * the checkpoint): not a failure of the job */
    if (code == RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION || code == RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS ||
        code == RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID)
        k->txn_rebalanced = 1;
    return txn_failed(k, what, why, abort, err, errlen);
}

/* Runs a transactional call again while it fails with a retriable error,
 * for up to TXN_RETRY_MS in all (the event loop waits meanwhile). */
#define TXN_RETRY_MS 60000
#define TXN_RETRYING(e, call, what)                                                 \
    do {                                                                              \
        int64_t until_ = clock_mono_ms() + TXN_RETRY_MS;                              \
        (e) = (call);                                                                 \
        while ((e) && rd_kafka_error_is_retriable(e) && clock_mono_ms() < until_) {   \
            log_warn("kafka: %s: %s (retrying)", (what), rd_kafka_error_string(e));   \
            rd_kafka_error_destroy(e);                                                \
            usleep(500000);                                                           \
            (e) = (call);                                                             \
        }                                                                             \
    } while (0)

int kafka_txn_begin(kafka *k, int init, char *err, size_t errlen) {
    rd_kafka_error_t *e;
    if (init) {
        /* fences an earlier producer with the same id; its open transaction is aborted */
        TXN_RETRYING(e, rd_kafka_init_transactions(k->txn_rk, 20000), "init_transactions");
        if (e) return txn_error(k, e, "init_transactions", err, errlen);
    }
    e = rd_kafka_begin_transaction(k->txn_rk);
    if (e) return txn_error(k, e, "begin_transaction", err, errlen);
    k->txn_open = 1;
    k->txn_base = txn_queued(k);
    pthread_mutex_lock(&k->mu);
    k->txn_error[0] = 0;
    pthread_mutex_unlock(&k->mu);
    return 0;
}

int kafka_txn_prepare(kafka *k, int64_t checkpoint, char *err, size_t errlen) {
    char what[96], why[512];
    snprintf(what, sizeof what, "the transaction of checkpoint %lld", (long long)checkpoint);
    if (!k->txn_open) return txn_failed(k, what, "no transaction is open", 0, err, errlen);
    pthread_mutex_lock(&k->mu);
    snprintf(why, sizeof why, "%.500s", k->failed);
    pthread_mutex_unlock(&k->mu);
    if (why[0]) return txn_failed(k, what, why, 1, err, errlen);      /* eddy stops: nothing more commits */
    /* flushed in slices: once a message was refused the transaction must be
     * aborted, and what is still queued is not sent before that (a flush
     * would wait its whole timeout) */
    int64_t until = clock_mono_ms() + 60000;
    rd_kafka_resp_err_t fe;
    for (;;) {
        fe = rd_kafka_flush(k->txn_rk, 100);
        pthread_mutex_lock(&k->mu);
        int refused = k->txn_error[0] != 0;
        pthread_mutex_unlock(&k->mu);
        if (!fe || refused || clock_mono_ms() >= until) break;
    }
    pthread_mutex_lock(&k->mu);
    snprintf(why, sizeof why, "%s", k->txn_error[0] ? k->txn_error : fe ? rd_kafka_err2str(fe) : "");
    pthread_mutex_unlock(&k->mu);
    return why[0] ? txn_failed(k, what, why, 1, err, errlen) : 0;
}

int kafka_txn_commit(kafka *k, int64_t checkpoint, const kafka_offset *offs, int noffs, kgroup *g, char *err,
                     size_t errlen) {
    char what[96];
    snprintf(what, sizeof what, "the transaction of checkpoint %lld", (long long)checkpoint);
    rd_kafka_error_t *e = NULL;
    /* the source partitions' offsets go to the consumer group with the
     * consumer's metadata (generation, member): committed with the output or
     * not at all, and refused to a member the group has dropped (a zombie) */
    if (noffs > 0 && g) {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(noffs);
        for (int i = 0; i < noffs; i++)
            rd_kafka_topic_partition_list_add(l, offs[i].topic, offs[i].partition)->offset = offs[i].offset;
        rd_kafka_consumer_group_metadata_t *cgmd = kgroup_metadata(g);
        if (cgmd) {
            TXN_RETRYING(e, rd_kafka_send_offsets_to_transaction(k->txn_rk, l, cgmd, 30000), what);
            rd_kafka_consumer_group_metadata_destroy(cgmd);
        }
        rd_kafka_topic_partition_list_destroy(l);
    }
    /* the checkpoint's id goes into the transaction as an offset of the
     * group named by the transactional id (one instance's own, whatever the
     * group of its sources): committed with it or not at all, so recovery
     * can tell whether a checkpoint's commit went through */
    if (!e) {
        rd_kafka_topic_partition_list_t *marker = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(marker, k->txn_topic, 0)->offset = checkpoint;
        rd_kafka_consumer_group_metadata_t *cgmd = rd_kafka_consumer_group_metadata_new(k->txn_id);
        TXN_RETRYING(e, rd_kafka_send_offsets_to_transaction(k->txn_rk, marker, cgmd, 30000), what);
        rd_kafka_consumer_group_metadata_destroy(cgmd);
        rd_kafka_topic_partition_list_destroy(marker);
    }
    if (!e) TXN_RETRYING(e, rd_kafka_commit_transaction(k->txn_rk, 60000), what);
    if (e) return txn_error(k, e, what, err, errlen);
    k->txn_open = 0;
    k->txn_committed++;
    log_debug("kafka: %s committed (%ld records, %d source offsets)", what, (long)(txn_queued(k) - k->txn_base), noffs);
    return 0;
}

int kafka_txn_marker(kafka *k, int64_t *checkpoint, char *err, size_t errlen) {
    const char *topic = k->txn_topic;
    *checkpoint = 0;
    /* the transaction of the last run may still be open (killed before its
     * commit) or completing: while it is, the marker's offset is unstable and
     * a read of it waits (until the transaction times out).  A producer with
     * the same id ends it first: init_transactions aborts an open one and
     * waits for one being completed. */
    rd_kafka_t *p = producer(k, "transaction.timeout.ms", "60000", NULL, NULL, "transactional.id", k->txn_id, NULL,
                             "kafka: the transactional producer", err, errlen);
    if (!p) return -1;
    rd_kafka_error_t *ie;
    TXN_RETRYING(ie, rd_kafka_init_transactions(p, 20000), "init_transactions");
    rd_kafka_destroy(p);
    if (ie) {
        snprintf(err, errlen, "kafka: init_transactions: %s", rd_kafka_error_string(ie));
        rd_kafka_error_destroy(ie);
        return -1;
    }
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char e[512];
    if (kafka_conf_apply(k, conf, NULL, NULL, err, errlen) < 0) { rd_kafka_conf_destroy(conf); return -1; }
    if (rd_kafka_conf_set(conf, "group.id", k->txn_id, e, sizeof e) != RD_KAFKA_CONF_OK) {
        snprintf(err, errlen, "kafka: %s", e);
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, e, sizeof e);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        snprintf(err, errlen, "kafka: %s", e);
        return -1;
    }
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, 0);
    rd_kafka_resp_err_t re = rd_kafka_committed(rk, l, 30000);
    int rc = 0;
    if (re || l->elems[0].err) {
        snprintf(err, errlen, "kafka: cannot read the committed offsets of group %s: %s", k->txn_id,
                 rd_kafka_err2str(re ? re : l->elems[0].err));
        rc = -1;
    } else if (l->elems[0].offset >= 0) {
        *checkpoint = l->elems[0].offset;
    }
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(rk);
    return rc;
}

void kafka_metrics_dead_letters(kafka *k, struct evbuffer *out) {
    if (!k) return;
    pthread_mutex_lock(&k->mu);
    for (int i = 0; i < k->nsinks; i++) {
        kafka_sink *s = k->sinks[i];
        if (s == k->dead_letters || s->shared) continue;
        const char *labels[] = { "sink", s->name, NULL };
        metrics_sample(out, "eddy_dead_letters_total", labels, (double)atomic_load(&s->dead_letters));
    }
    pthread_mutex_unlock(&k->mu);
}
