/* See kafka_admin.h. */
#include "kafka_admin.h"
#include "kafka.h"
#include "clock.h"
#include "log.h"
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define READY_POLL_MS 100        /* how often the metadata is asked again while partitions get leaders */

/* (a producer handle: it sends nothing) */
rd_kafka_t *kafka_admin_client(kafka *k, char *err, size_t errlen) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char e[512];
    rd_kafka_conf_set(conf, "log_level", "3", e, sizeof e);
    if (kafka_conf_apply(k, conf, NULL, NULL, err, errlen) < 0) { rd_kafka_conf_destroy(conf); return NULL; }
    /* a metadata request must never create a topic (auto.create.topics.enable) */
    rd_kafka_conf_set(conf, "allow.auto.create.topics", "false", e, sizeof e);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof e);   /* takes conf, or leaves it to us */
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        snprintf(err, errlen, "kafka: the admin client: %s", e);
    }
    return rk;
}

enum { TOPIC_MISSING = -1, TOPIC_UNSETTLED = -2 };

/* topic's partition count in md; TOPIC_MISSING when md does not list it,
 * TOPIC_UNSETTLED while it has no partitions or one has no leader yet (just
 * created).  *count: the count even when unsettled (0 when unknown). */
static int topic_state(const struct rd_kafka_metadata *md, const char *topic, int *count) {
    *count = 0;
    for (int i = 0; i < md->topic_cnt; i++) {
        const struct rd_kafka_metadata_topic *t = &md->topics[i];
        if (strcmp(t->topic, topic) != 0) continue;
        if (t->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) return TOPIC_MISSING;
        *count = t->partition_cnt;
        if (t->err || t->partition_cnt == 0) return TOPIC_UNSETTLED;
        for (int p = 0; p < t->partition_cnt; p++)
            if (t->partitions[p].leader < 0 || t->partitions[p].err) return TOPIC_UNSETTLED;
        return t->partition_cnt;
    }
    return TOPIC_MISSING;
}

static int fail(int *why, int w, int *at, int a) {
    *why = w;
    *at = a;
    return -1;
}

/* Creates the topics specs[idx[0..n)]: 0, or -1 with err (KA_FAILED, or
 * KA_UNREACHABLE when no answer came).  A topic that exists already is no
 * failure: the caller checks its partitions. */
static int create(rd_kafka_t *rk, const kafka_topic_spec *specs, const int *idx, int n, int timeout_ms, int *why,
                  int *at, char *err, size_t errlen) {
    rd_kafka_NewTopic_t **nt = calloc((size_t)n, sizeof *nt);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_event_t *ev = NULL;
    char e[512];
    int rc = -1;
    *why = KA_FAILED;
    *at = -1;
    if (!nt || !q || !opts) { snprintf(err, errlen, "out of memory"); goto err; }
    rd_kafka_AdminOptions_set_request_timeout(opts, timeout_ms, e, sizeof e);
    rd_kafka_AdminOptions_set_operation_timeout(opts, timeout_ms, e, sizeof e);
    for (int i = 0; i < n; i++) {
        const kafka_topic_spec *s = &specs[idx[i]];
        nt[i] = rd_kafka_NewTopic_new(s->name, s->partitions, -1, e, sizeof e);   /* -1: the broker's replication */
        if (!nt[i]) { snprintf(err, errlen, "topic %s: %s", s->name, e); *at = idx[i]; goto err; }
        if (s->compacted) rd_kafka_NewTopic_set_config(nt[i], "cleanup.policy", "compact");
    }
    rd_kafka_CreateTopics(rk, nt, (size_t)n, opts, q);
    ev = rd_kafka_queue_poll(q, timeout_ms + 2000);
    if (!ev) {
        *why = KA_UNREACHABLE;
        snprintf(err, errlen, "creating topic %s: no answer from the brokers within %d ms", specs[idx[0]].name,
                 timeout_ms);
        goto err;
    }
    if (rd_kafka_event_error(ev)) {
        rd_kafka_resp_err_t ee = rd_kafka_event_error(ev);
        if (ee == RD_KAFKA_RESP_ERR__TIMED_OUT || ee == RD_KAFKA_RESP_ERR__TRANSPORT) *why = KA_UNREACHABLE;
        snprintf(err, errlen, "creating topic %s: %s", specs[idx[0]].name, rd_kafka_event_error_string(ev));
        goto err;
    }
    size_t cnt = 0;
    const rd_kafka_topic_result_t **res = rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &cnt);
    for (size_t i = 0; i < cnt; i++) {
        rd_kafka_resp_err_t te = rd_kafka_topic_result_error(res[i]);
        const char *name = rd_kafka_topic_result_name(res[i]);
        if (te == RD_KAFKA_RESP_ERR_NO_ERROR) { log_info("kafka: created topic %s", name); continue; }
        if (te == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) continue;     /* another instance was first */
        for (int j = 0; j < n; j++) if (strcmp(specs[idx[j]].name, name) == 0) *at = idx[j];
        const char *msg = rd_kafka_topic_result_error_string(res[i]);
        snprintf(err, errlen, "cannot create topic %s: %s", name, msg && *msg ? msg : rd_kafka_err2str(te));
        goto err;
    }
    rc = 0;
err:
    if (ev) rd_kafka_event_destroy(ev);
    if (opts) rd_kafka_AdminOptions_destroy(opts);
    if (q) rd_kafka_queue_destroy(q);
    if (nt) rd_kafka_NewTopic_destroy_array(nt, (size_t)n);
    free(nt);
    return rc;
}

int kafka_admin_ensure_topics(kafka *k, kafka_topic_spec *specs, int n, int timeout_ms, int *why, int *at,
                              char *err, size_t errlen) {
    const struct rd_kafka_metadata *md = NULL;
    int *missing = calloc(n > 0 ? (size_t)n : 1, sizeof *missing);
    int nmissing = 0, rc = -1, created = 0;
    rd_kafka_t *rk = NULL;
    *why = KA_FAILED;
    *at = -1;
    if (!missing) { snprintf(err, errlen, "out of memory"); goto err; }
    if (n == 0) { rc = 0; goto err; }
    if (!(rk = kafka_admin_client(k, err, errlen))) goto err;
    /* until every topic is there with its partitions led: first what is
     * missing is created, then the metadata is asked again until it shows
     * them (a new topic's partitions get leaders a moment later) */
    int64_t deadline = clock_mono_ms() + timeout_ms;
    for (;;) {
        rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 1, NULL, &md, timeout_ms);
        if (e) {
            snprintf(err, errlen, "cannot reach the brokers at %s: %s", kafka_bootstrap(k), rd_kafka_err2str(e));
            rc = fail(why, KA_UNREACHABLE, at, -1);
            goto err;
        }
        int pending = -1;                 /* the first topic not there yet */
        nmissing = 0;
        for (int i = 0; i < n; i++) {
            int count, st = topic_state(md, specs[i].name, &count);
            specs[i].have = count;
            if (st == TOPIC_MISSING) {
                missing[nmissing++] = i;
                if (pending < 0) pending = i;
                continue;
            }
            if (count > 0 && count != specs[i].partitions) {
                snprintf(err, errlen, "topic %s exists with %d partitions, not %d", specs[i].name, count,
                         specs[i].partitions);
                rc = fail(why, KA_PARTITIONS, at, i);
                goto err;
            }
            if (st == TOPIC_UNSETTLED && pending < 0) pending = i;
        }
        rd_kafka_metadata_destroy(md);
        md = NULL;
        if (pending < 0) break;
        if (nmissing && !created) {
            if (create(rk, specs, missing, nmissing, timeout_ms, why, at, err, errlen) < 0) goto err;
            created = 1;
            deadline = clock_mono_ms() + timeout_ms;
            continue;
        }
        if (clock_mono_ms() >= deadline) {
            snprintf(err, errlen, "topic %s: %s after %d ms", specs[pending].name,
                     specs[pending].have ? "its partitions have no leader yet" : "the brokers do not show it yet",
                     timeout_ms);
            rc = fail(why, KA_UNREACHABLE, at, pending);
            goto err;
        }
        usleep(READY_POLL_MS * 1000);
    }
    rc = 0;
err:
    if (md) rd_kafka_metadata_destroy(md);
    if (rk) rd_kafka_destroy(rk);
    free(missing);
    return rc;
}
