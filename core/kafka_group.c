/* The Kafka consumer group (see source_kafka.h; its state: kafka_group_int.h). */
#include "kafka_group_int.h"
#include "kafka.h"
#include "kafka_admin.h"
#include "clock.h"
#include "log.h"
#include "metrics.h"
#include <event2/buffer.h>
#include <librdkafka/rdkafka.h>
#include <msgpack.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static kpart *find_part(kgroup *g, const char *topic, int partition) {
    for (int i = 0; i < g->nparts; i++)
        if (g->parts[i]->partition == partition && strcmp(g->parts[i]->topic, topic) == 0) return g->parts[i];
    return NULL;
}

static void set_down(kgroup *g, const char *why) {
    pthread_mutex_lock(&g->mu);
    int was = g->down[0] != 0;
    if (why) snprintf(g->down, sizeof g->down, "%s", why);
    else g->down[0] = 0;
    pthread_mutex_unlock(&g->mu);
    int64_t now = clock_mono_ms();
    if (why && (!was || now - g->last_down_log >= DOWN_LOG_MS)) {
        g->last_down_log = now;
        log_warn("kafka: %s (brokers %s); eddy keeps retrying", why, kafka_bootstrap(g->k));
    } else if (!why && was) {
        log_info("kafka: brokers reachable again");
    }
}

/* ---- librdkafka callbacks (served by rd_kafka_consumer_poll on the event loop) ---- */

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    (void)rk;
    kgroup *g = opaque;
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) { set_down(g, "all brokers down"); return; }
    if (rd_kafka_fatal_error(g->rk, NULL, 0)) {
        log_error("kafka: fatal consumer error: %s", reason);
        set_down(g, reason);
        return;
    }
    int64_t now = clock_mono_ms();
    if (now - g->last_down_log >= DOWN_LOG_MS) {
        g->last_down_log = now;
        log_warn("kafka: %s: %s", rd_kafka_err2name(err), reason);
    }
}

/* Statistics: broker states (health), per-partition lag and high watermark. */
static int on_stats(rd_kafka_t *rk, char *json, size_t len, void *opaque) {
    (void)rk;
    kgroup *g = opaque;
    json_t *j = json_loadb(json, len, 0, NULL);
    if (!j) return 0;
    json_t *brokers = json_object_get(j, "brokers");
    const char *name;
    json_t *b;
    int up = 0, known = 0;
    json_object_foreach(brokers, name, b) {
        if (json_integer_value(json_object_get(b, "nodeid")) < 0) continue;   /* bootstrap entries */
        known++;
        const char *st = json_string_value(json_object_get(b, "state"));
        if (st && strcmp(st, "UP") == 0) up++;
    }
    if (up > 0) set_down(g, NULL);
    else if (known > 0) set_down(g, "all brokers down");
    json_t *topics = json_object_get(j, "topics"), *t;
    const char *tname;
    json_object_foreach(topics, tname, t) {
        json_t *parts = json_object_get(t, "partitions"), *pj;
        const char *pname;
        json_object_foreach(parts, pname, pj) {
            kpart *kp = find_part(g, tname, atoi(pname));
            if (!kp) continue;
            kp->high = json_integer_value(json_object_get(pj, "hi_offset"));
            int64_t pos = atomic_load(&kp->position);
            kp->lag = pos >= 0 && kp->high >= pos ? kp->high - pos : json_integer_value(json_object_get(pj, "consumer_lag"));
        }
    }
    json_decref(j);
    return 0;
}

static void describe(const rd_kafka_topic_partition_list_t *l, char *out, size_t n) {
    size_t at = 0;
    out[0] = 0;
    for (int i = 0; i < l->cnt && at + 1 < n; i++) {
        int w = snprintf(out + at, n - at, "%s%s/%d", i ? " " : "", l->elems[i].topic, l->elems[i].partition);
        if (w < 0) break;
        at += (size_t)w;
    }
}

static void commit_list(kgroup *g, rd_kafka_topic_partition_list_t *l, int async) {
    if (l->cnt == 0) return;
    rd_kafka_resp_err_t e = rd_kafka_commit(g->rk, l, async);
    if (e) {
        g->commit_failures++;
        log_warn("kafka: offset commit failed: %s", rd_kafka_err2str(e));
        return;
    }
    g->commits++;
}

/* Commits the acknowledged positions of the partitions in l (or of every
 * partition, when l is NULL) that moved since their last commit. */
static void commit_acked(kgroup *g, const rd_kafka_topic_partition_list_t *l, int async) {
    rd_kafka_topic_partition_list_t *c = rd_kafka_topic_partition_list_new(g->nparts ? g->nparts : 1);
    for (int i = 0; i < g->nparts; i++) {
        kpart *kp = g->parts[i];
        if (l && !rd_kafka_topic_partition_list_find(l, kp->topic, kp->partition)) continue;
        int64_t a = atomic_load(&kp->acked);
        if (atomic_load(&kp->state) == KP_UNASSIGNED || a < 0 || a <= kp->committed) continue;
        rd_kafka_topic_partition_list_add(c, kp->topic, kp->partition)->offset = a;
        kp->committed = a;
    }
    commit_list(g, c, async);
    rd_kafka_topic_partition_list_destroy(c);
}

static void take(kgroup *g, rd_kafka_topic_partition_list_t *parts) {
    char list[1024];
    describe(parts, list, sizeof list);
    /* where each partition starts: the group's committed offset, else `start` */
    rd_kafka_topic_partition_list_t *c = rd_kafka_topic_partition_list_copy(parts);
    /* (nothing to ask about an empty assignment: the call would only wait) */
    rd_kafka_resp_err_t ce = parts->cnt ? rd_kafka_committed(g->rk, c, 10000) : RD_KAFKA_RESP_ERR_NO_ERROR;
    int txn = kafka_txn_active(g->k);
    if (ce) log_warn("kafka: cannot read the group's committed offsets (%s): partitions start by `start`",
                     rd_kafka_err2str(ce));
    for (int i = 0; i < parts->cnt; i++) {
        rd_kafka_topic_partition_t *p = &parts->elems[i];
        kpart *kp = find_part(g, p->topic, p->partition);
        int64_t committed = ce || c->elems[i].err ? RD_KAFKA_OFFSET_INVALID : c->elems[i].offset;
        if (!kp) {
            log_warn("kafka: partition %s/%d was assigned but eddy has no task for it (added after the start?): "
                     "restart eddy to read it", p->topic, p->partition);
            continue;
        }
        /* recovery: where the checkpoint restored says, the first time the
         * partition is assigned.  With Kafka sinks under exactly_once the
         * group's offsets are the checkpoints' (committed in the same
         * transaction as the output) and ahead of this instance's checkpoint
         * where another member read on: the group's offset wins, and the
         * checkpoint's counts only where the group has none */
        int64_t restore = kp->recovering ? atomic_load(&kp->restore) : -1;
        kp->recovering = 0;
        atomic_store(&kp->restore, -1);
        if (restore >= 0 && !(txn && (ce || c->elems[i].err || committed >= 0))) {
            p->offset = restore;
            atomic_store(&kp->restore, restore);
            kp->committed = committed >= 0 ? committed : -1;
            continue;
        }
        if (ce || c->elems[i].err) {
            /* not known here: librdkafka looks the committed offset up itself
             * (auto.offset.reset where there is none) */
            p->offset = RD_KAFKA_OFFSET_INVALID;
            kp->committed = -1;
            continue;
        }
        if (committed >= 0) atomic_store(&kp->restore, p->offset = committed);
        else if (kp->start == START_LATEST) {
            /* the end as of this assignment, not as of whenever fetching starts */
            int64_t low, high;
            p->offset = rd_kafka_query_watermark_offsets(g->rk, p->topic, p->partition, &low, &high, 5000) == 0
                        ? high : RD_KAFKA_OFFSET_END;
        }
        else p->offset = RD_KAFKA_OFFSET_BEGINNING;
        kp->committed = committed >= 0 ? committed : -1;
        if (committed < 0 && kp->start == START_COMMITTED)
            snprintf(kp->error, sizeof kp->error,
                     "source '%s': partition %s/%d has no committed offset for group '%s' (start = \"committed\"); "
                     "use start = \"earliest\" or \"latest\" for a new group", kp->source, kp->topic, kp->partition,
                     g->cfg->name);
    }
    rd_kafka_topic_partition_list_destroy(c);
    /* each partition's queue is taken off the consumer queue before fetching
     * starts, so no message of it can land there */
    for (int i = 0; i < parts->cnt; i++) {
        kpart *kp = find_part(g, parts->elems[i].topic, parts->elems[i].partition);
        if (!kp) continue;
        rd_kafka_queue_t *q = rd_kafka_queue_get_partition(g->rk, kp->topic, kp->partition);
        rd_kafka_queue_forward(q, NULL);
        pthread_mutex_lock(&kp->mu);
        if (kp->q) rd_kafka_queue_destroy(kp->q);
        kp->q = q;
        pthread_mutex_unlock(&kp->mu);
    }
    rd_kafka_error_t *e = rd_kafka_incremental_assign(g->rk, parts);
    if (e) {
        log_error("kafka: cannot take partitions %s: %s", list, rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
        return;
    }
    for (int i = 0; i < parts->cnt; i++) {
        kpart *kp = find_part(g, parts->elems[i].topic, parts->elems[i].partition);
        if (!kp) continue;
        pthread_mutex_lock(&kp->mu);
        kp->paused = 0;
        atomic_store(&kp->position, -1);
        atomic_store(&kp->acked, -1);
        atomic_store(&kp->drain_marker, 0);
        atomic_store(&kp->drained, 0);
        atomic_store(&kp->at_end, 0);
        if (kp->bounded && atomic_load(&kp->end) < 0) {
            /* the end as of the first assignment: what a bounded source reads */
            int64_t low, high;
            rd_kafka_resp_err_t qe = rd_kafka_query_watermark_offsets(g->rk, kp->topic, kp->partition, &low, &high, 5000);
            if (qe) log_warn("kafka: source '%s': the end offset of %s/%d is unknown (%s): it ends at its end of "
                             "partition", kp->source, kp->topic, kp->partition, rd_kafka_err2str(qe));
            atomic_store(&kp->end, qe ? INT64_MAX : high);
        }
        atomic_fetch_add(&kp->generation, 1);
        atomic_store(&kp->state, KP_ASSIGNED);
        pthread_mutex_unlock(&kp->mu);
        g->hooks.wake(g->hooks.ud, kp->task_id);
    }
    /* librdkafka keeps a pause across revoke and assign: start unpaused */
    rd_kafka_resume_partitions(g->rk, parts);
    log_info("kafka: group '%s' assigned %s", g->cfg->name, list[0] ? list : "nothing");
}

static void give_up(kgroup *g, rd_kafka_topic_partition_list_t *parts) {
    char list[1024];
    describe(parts, list, sizeof list);
    int lost = rd_kafka_assignment_lost(g->rk);
    for (int i = 0; i < parts->cnt; i++) {
        kpart *kp = find_part(g, parts->elems[i].topic, parts->elems[i].partition);
        if (!kp) continue;
        pthread_mutex_lock(&kp->mu);
        if (atomic_load(&kp->state) == KP_ASSIGNED) atomic_store(&kp->state, KP_REVOKING);
        pthread_mutex_unlock(&kp->mu);
        g->hooks.wake(g->hooks.ud, kp->task_id);
    }
    if (lost && g->hooks.checkpoint && kafka_txn_active(g->k)) {
        /* exactly_once: the group dropped this instance (a session that
         * expired: frozen, or cut off); the next owner reads these partitions
         * from the last committed offsets, and the open transaction holds
         * what was read from them since: it must not commit.  eddy stops,
         * aborting it, and the restart joins the group anew. */
        char why[1200];
        snprintf(why, sizeof why, "kafka: partitions %s were lost (the group dropped this instance): the open "
                 "transaction holds output their next owner writes again", list);
        kafka_fail(g->k, why);
    }
    if (!lost && !g->closing && g->hooks.checkpoint) {
        /* exactly_once: what was read from these partitions is committed by
         * a checkpoint now (with their offsets), before the next owner reads
         * on from the group's offsets; a failed one stops eddy, and what the
         * next owner reads again was never committed here */
        if (g->hooks.checkpoint(g->hooks.ud) < 0)
            log_warn("kafka: partitions %s are given up without a checkpoint of what was read from them", list);
        commit_acked(g, parts, 0);
    } else if (!lost && !g->closing) {
        /* drain: each task stops reading and sends a marker; wait until the
         * outputs before every marker were acknowledged, then commit */
        int64_t until = clock_mono_ms() + g->drain_timeout_ms;
        for (;;) {
            int pending = 0;
            for (int i = 0; i < parts->cnt; i++) {
                kpart *kp = find_part(g, parts->elems[i].topic, parts->elems[i].partition);
                if (kp && !atomic_load(&kp->drained)) pending++;
            }
            if (!pending) break;
            if (clock_mono_ms() >= until) {
                log_warn("kafka: partitions %s: %d not drained after %d ms; giving them up with the offsets "
                         "acknowledged so far (the next owner reads the rest again)", list, pending, (int)g->drain_timeout_ms);
                break;
            }
            g->hooks.serve(g->hooks.ud);
            usleep(2000);
        }
        commit_acked(g, parts, 0);
    }
    rd_kafka_error_t *e = rd_kafka_incremental_unassign(g->rk, parts);
    if (e) {
        log_error("kafka: cannot give up partitions %s: %s", list, rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
    for (int i = 0; i < parts->cnt; i++) {
        kpart *kp = find_part(g, parts->elems[i].topic, parts->elems[i].partition);
        if (!kp) continue;
        pthread_mutex_lock(&kp->mu);
        if (kp->q) rd_kafka_queue_destroy(kp->q);
        kp->q = NULL;
        atomic_store(&kp->state, KP_UNASSIGNED);
        pthread_mutex_unlock(&kp->mu);
        g->hooks.wake(g->hooks.ud, kp->task_id);
    }
    log_info("kafka: group '%s' %s %s", g->cfg->name, lost ? "lost" : "gave up", list);
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
                         void *opaque) {
    (void)rk;
    kgroup *g = opaque;
    g->rebalances++;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) take(g, parts);
    else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) give_up(g, parts);
    else {
        log_error("kafka: rebalance failed: %s", rd_kafka_err2str(err));
        give_up(g, parts);
    }
    /* only now: a partition being taken is not "elsewhere" while take() waits */
    atomic_store(&g->settled, 1);
}

static void on_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *offsets,
                      void *opaque) {
    (void)rk; (void)offsets;
    kgroup *g = opaque;
    if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET) {
        g->commit_failures++;
        log_warn("kafka: offset commit failed: %s (committed again at the next interval)", rd_kafka_err2str(err));
        for (int i = 0; i < g->nparts; i++) g->parts[i]->committed = -1;
    }
}

/* ---- the group ---------------------------------------------------------- */

/* Sets conf's prefetch for kb a partition, as far as the config's kafka
 * table leaves it to eddy: queued.max.messages.kbytes, and as many messages
 * as the bytes hold of 64 bytes (librdkafka keeps a few hundred bytes
 * beside each queued message, so a count bound made for tiny messages
 * keeps the budget too), at most librdkafka's default 100000 — counted
 * from the config's own bytes when it sets them. */
static void set_prefetch(rd_kafka_conf_t *conf, const config *cfg, int kb) {
    char v[32], e[512];
    const opt *own = opt_find(&cfg->kafka, "queued.max.messages.kbytes");
    if (own && atoi(own->s) > 0) kb = atoi(own->s);
    snprintf(v, sizeof v, "%d", kb);
    if (!own) rd_kafka_conf_set(conf, "queued.max.messages.kbytes", v, e, sizeof e);
    snprintf(v, sizeof v, "%d", kb > 100000 / 16 ? 100000 : kb * 16);
    if (!opt_find(&cfg->kafka, "queued.min.messages")) rd_kafka_conf_set(conf, "queued.min.messages", v, e, sizeof e);
}

kgroup *kgroup_create(struct kafka *k, const config *cfg, kgroup_hooks hooks, char *err, size_t errlen) {
    kgroup *g = calloc(1, sizeof *g);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char e[512];
    if (!g) { snprintf(err, errlen, "out of memory"); goto err; }
    g->k = k;
    g->cfg = cfg;
    g->hooks = hooks;
    g->hooks.client_id = NULL;         /* (not kept: the consumer has it) */
    pthread_mutex_init(&g->mu, NULL);
    struct { const char *k, *v; } defaults[] = {
        {"group.id", cfg->name}, {"partition.assignment.strategy", "cooperative-sticky"},
        {"auto.offset.reset", "earliest"}, {"statistics.interval.ms", "1000"}, {"log_level", "3"},
        {"allow.auto.create.topics", "false"},
        {"session.timeout.ms", "10000"}, {"heartbeat.interval.ms", "1000"},
    };
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++)
        rd_kafka_conf_set(conf, defaults[i].k, defaults[i].v, e, sizeof e);
    /* prefetching: the floor until kgroup_fit_prefetch knows the partitions */
    set_prefetch(conf, cfg, PREFETCH_FLOOR_KB);
    if (kafka_conf_apply(k, conf, NULL, NULL, err, errlen) < 0) goto err;
    /* shuffle = "kafka": how the other instances learn this one's admin address */
    if (hooks.client_id && rd_kafka_conf_set(conf, "client.id", hooks.client_id, e, sizeof e) != RD_KAFKA_CONF_OK) {
        snprintf(err, errlen, "kafka: client.id %s: %s", hooks.client_id, e);
        goto err;
    }
    /* eddy commits what its sinks acknowledged; nothing else may commit */
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", e, sizeof e);
    rd_kafka_conf_set(conf, "enable.auto.offset.store", "false", e, sizeof e);
    /* the end of a partition is what makes it idle for watermarks (task.c) */
    rd_kafka_conf_set(conf, "enable.partition.eof", "true", e, sizeof e);
    const opt *ci = opt_find(&cfg->kafka, "auto.commit.interval.ms");
    g->commit_interval_ms = ci ? atoll(ci->s) : 5000;
    if (g->commit_interval_ms <= 0) g->commit_interval_ms = 5000;
    char st[64];
    size_t stl = sizeof st;
    int64_t session = rd_kafka_conf_get(conf, "session.timeout.ms", st, &stl) == RD_KAFKA_CONF_OK ? atoll(st) : 10000;
    g->drain_timeout_ms = session / 2 < DRAIN_TIMEOUT_MS ? session / 2 : DRAIN_TIMEOUT_MS;
    rd_kafka_conf_set_opaque(conf, g);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_stats_cb(conf, on_stats);
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    rd_kafka_conf_set_offset_commit_cb(conf, on_commit);
    if (!(g->conf = rd_kafka_conf_dup(conf))) { snprintf(err, errlen, "out of memory"); goto err; }
    g->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, e, sizeof e);
    if (!g->rk) { snprintf(err, errlen, "kafka consumer: %s", e); goto err; }    /* conf is still ours */
    conf = NULL;
    rd_kafka_poll_set_consumer(g->rk);
    g->last_commit_ms = clock_mono_ms();
    /* an instance that names itself to the group (shuffle = "kafka") will
     * ask who the others are: kgroup_members' client connects meanwhile */
    if (hooks.client_id && !(g->admin_rk = kafka_admin_client(k, err, errlen))) goto err;
    return g;
err:
    if (conf) rd_kafka_conf_destroy(conf);
    kgroup_destroy(g);
    return NULL;
}

void kgroup_destroy(kgroup *g) {
    if (!g) return;
    for (int i = 0; i < g->nparts; i++) {
        kpart *kp = g->parts[i];
        if (kp->q) rd_kafka_queue_destroy(kp->q);
        pthread_mutex_destroy(&kp->mu);
        free(kp->source);
        free(kp->topic);
        free(kp);
    }
    free(g->parts);
    json_decref(g->members);
    if (g->admin_rk) rd_kafka_destroy(g->admin_rk);
    /* a consumer whose close never finished is stuck inside librdkafka,
     * whose destroy would wait for it forever too: the process is ending
     * (kgroup_destroy runs at exit), so its handle is left to the OS */
    if (g->rk && !g->close_abandoned) rd_kafka_destroy(g->rk);
    if (g->conf) rd_kafka_conf_destroy(g->conf);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

int kgroup_partitions(kgroup *g, const char *topic, int timeout_ms, int *why, char *err, size_t errlen) {
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(g->rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    int n = -1;
    *why = KG_UNREACHABLE;
    if (!rkt) { snprintf(err, errlen, "%s", rd_kafka_err2str(rd_kafka_last_error())); return -1; }
    rd_kafka_resp_err_t e = rd_kafka_metadata(g->rk, 0, rkt, &md, timeout_ms);
    if (e) {
        snprintf(err, errlen, "cannot reach the brokers at %s: %s", kafka_bootstrap(g->k), rd_kafka_err2str(e));
        set_down(g, err);
    } else {
        set_down(g, NULL);
        if (md->topic_cnt < 1 || md->topics[0].err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
            (md->topics[0].err == 0 && md->topics[0].partition_cnt == 0)) {
            *why = KG_UNKNOWN_TOPIC;
            snprintf(err, errlen, "the topic does not exist on the brokers at %s; create it first", kafka_bootstrap(g->k));
        } else if (md->topics[0].err) {
            snprintf(err, errlen, "%s", rd_kafka_err2str(md->topics[0].err));
        } else {
            n = md->topics[0].partition_cnt;
        }
    }
    if (md) rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    return n;
}

kpart *kgroup_add(kgroup *g, const char *source, const char *topic, int partition, int task_id, const char *start,
                  int64_t max_bytes) {
    kpart *kp = calloc(1, sizeof *kp);
    kpart **np = realloc(g->parts, sizeof *np * (g->nparts + 1));
    if (np) g->parts = np;
    if (!kp || !np) { free(kp); return NULL; }
    kp->g = g;
    kp->source = strdup(source);
    kp->topic = strdup(topic);
    kp->partition = partition;
    kp->task_id = task_id;
    kp->start = strcmp(start, "earliest") == 0 ? START_EARLIEST : strcmp(start, "latest") == 0 ? START_LATEST
                                                                                              : START_COMMITTED;
    kp->max_bytes = max_bytes;
    kp->committed = kp->lag = kp->high = -1;
    atomic_init(&kp->position, -1);
    atomic_init(&kp->acked, -1);
    atomic_init(&kp->restore, -1);
    atomic_init(&kp->end, -1);
    pthread_mutex_init(&kp->mu, NULL);
    g->parts[g->nparts++] = kp;
    return kp;
}

/* Prefetching: librdkafka 2.0 stops fetching a partition for a whole
 * second once its queue reaches queued.max.messages.kbytes (or
 * queued.min.messages; librdkafka #2879, configurable only from 2.2), so a
 * partition is read at most about that much a second: at 2 MB a partition
 * a 4-partition topic of ~100-byte records was read at ~110K records/s
 * whatever the cores.  So the bound is a budget for the whole consumer split
 * over the partitions the group reads (all of them: which ones this
 * instance gets is known only once it has joined, and the setting cannot
 * change once the consumer exists): the consumer is made again with it,
 * before it joins, unless kafka.queued.max.messages.kbytes says otherwise. */
int kgroup_fit_prefetch(kgroup *g, char *err, size_t errlen) {
    if (g->nparts == 0 || opt_find(&g->cfg->kafka, "queued.max.messages.kbytes")) return 0;
    int kb = PREFETCH_BUDGET_KB / g->nparts;
    kb = kb < PREFETCH_FLOOR_KB ? PREFETCH_FLOOR_KB : kb > PREFETCH_CEILING_KB ? PREFETCH_CEILING_KB : kb;
    log_info("kafka: prefetching up to %d KB a partition (%d MB over the %d partitions the group reads, "
             "at least %d KB each)", kb, PREFETCH_BUDGET_KB / 1024, g->nparts, PREFETCH_FLOOR_KB);
    if (kb == PREFETCH_FLOOR_KB) return 0;                  /* what the consumer was made with */
    char e[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_dup(g->conf);
    if (!conf) { snprintf(err, errlen, "out of memory"); return -1; }
    set_prefetch(conf, g->cfg, kb);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, e, sizeof e);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        snprintf(err, errlen, "kafka consumer: %s", e);
        return -1;
    }
    rd_kafka_poll_set_consumer(rk);
    /* it never joined: nothing to leave; what it queued meanwhile (its
     * statistics, "all brokers down" from before Kafka answered) is dropped
     * unread rather than handed to the callbacks as if it were news */
    rd_kafka_destroy_flags(g->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    g->rk = rk;
    return 0;
}

int kgroup_subscribe(kgroup *g, char *err, size_t errlen) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(g->nparts ? g->nparts : 1);
    for (int i = 0; i < g->nparts; i++)
        if (!rd_kafka_topic_partition_list_find(l, g->parts[i]->topic, RD_KAFKA_PARTITION_UA))
            rd_kafka_topic_partition_list_add(l, g->parts[i]->topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(g->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (e) { snprintf(err, errlen, "kafka: cannot join group '%s': %s", g->cfg->name, rd_kafka_err2str(e)); return -1; }
    return 0;
}

int64_t kgroup_commit_interval(const kgroup *g) { return g->commit_interval_ms; }

void kgroup_poll(kgroup *g) {
    for (int i = 0; i < 100; i++) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(g->rk, 0);
        if (!m) break;
        /* partitions read from their own queues: only errors arrive here */
        if (m->err && m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            int64_t now = clock_mono_ms();
            if (now - g->last_down_log >= DOWN_LOG_MS) {
                g->last_down_log = now;
                log_warn("kafka: %s", rd_kafka_message_errstr(m));
            }
        }
        rd_kafka_message_destroy(m);
    }
    int64_t now = clock_mono_ms();
    if (now - g->last_commit_ms >= g->commit_interval_ms) {
        g->last_commit_ms = now;
        commit_acked(g, NULL, 1);
    }
}

void kgroup_close(kgroup *g, int commit) {
    g->closing = 1;
    if (commit) {
        /* every task ended and the sinks delivered: what was read is done */
        for (int i = 0; i < g->nparts; i++) {
            kpart *kp = g->parts[i];
            int64_t pos = atomic_load(&kp->position);
            if (pos > atomic_load(&kp->acked)) atomic_store(&kp->acked, pos);
        }
        commit_acked(g, NULL, 0);
    }
    /* asynchronously, and at most CLOSE_TIMEOUT_MS: librdkafka 2.0.2's
     * close of a cooperative-sticky consumer can wait forever when it comes
     * in the middle of a rebalance (seen when instances join and leave in
     * quick succession); then the group drops this member after its session
     * timeout instead (what was read is committed already) */
    if (!atomic_load(&g->settled)) {
        /* no assignment yet: librdkafka 2.0.2 aborts the process closing (or
         * destroying) a cooperative-sticky consumer before its first one
         * (its issue 4312, fixed in 2.3.0); the group drops this member
         * after its session timeout instead */
        log_info("kafka: leaving group '%s' before its first assignment: the group drops this instance after "
                 "its session timeout", g->cfg->name);
        g->close_abandoned = 1;
        return;
    }
    rd_kafka_queue_t *q = rd_kafka_queue_new(g->rk);
    rd_kafka_error_t *ce = rd_kafka_consumer_close_queue(g->rk, q);
    if (ce) {
        log_warn("kafka: leaving group '%s': %s", g->cfg->name, rd_kafka_error_string(ce));
        rd_kafka_error_destroy(ce);
    } else {
        int64_t until = clock_mono_ms() + CLOSE_TIMEOUT_MS;
        while (!rd_kafka_consumer_closed(g->rk)) {
            rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 100);
            if (ev && rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE)
                on_rebalance(g->rk, rd_kafka_event_error(ev), rd_kafka_event_topic_partition_list(ev), g);
            if (ev) rd_kafka_event_destroy(ev);
            if (clock_mono_ms() >= until) {
                log_warn("kafka: leaving group '%s' did not finish within %d s: the group drops this instance "
                         "after its session timeout", g->cfg->name, CLOSE_TIMEOUT_MS / 1000);
                g->close_abandoned = 1;
                break;
            }
        }
    }
    rd_kafka_queue_destroy(q);
}

const char *kgroup_down(kgroup *g, char *buf, size_t len) {
    pthread_mutex_lock(&g->mu);
    int down = g->down[0] != 0;
    if (down) snprintf(buf, len, "kafka: %s (brokers %s)", g->down, kafka_bootstrap(g->k));
    pthread_mutex_unlock(&g->mu);
    return down ? buf : NULL;
}

static const char *state_name(int s) {
    static const char *const names[] = {"unassigned", "assigned", "revoking", "draining"};
    return s >= 0 && s <= KP_DRAINING ? names[s] : "?";
}

json_t *kgroup_status(kgroup *g) {
    json_t *j = json_object();
    json_object_set_new(j, "group", json_string(g->cfg->name));
    json_object_set_new(j, "rebalances", json_integer(g->rebalances));
    char v[32];                          /* what the consumer was made with */
    size_t vl = sizeof v;
    if (rd_kafka_conf_get(rd_kafka_conf(g->rk), "queued.max.messages.kbytes", v, &vl) == RD_KAFKA_CONF_OK)
        json_object_set_new(j, "prefetch_kb", json_integer(atoll(v)));
    json_t *a = json_array();
    for (int i = 0; i < g->nparts; i++) {
        kpart *kp = g->parts[i];
        int st = atomic_load(&kp->state);
        json_t *p = json_object();
        json_object_set_new(p, "source", json_string(kp->source));
        json_object_set_new(p, "topic", json_string(kp->topic));
        json_object_set_new(p, "partition", json_integer(kp->partition));
        json_object_set_new(p, "state", json_string(state_name(st)));
        json_object_set_new(p, "assigned", json_boolean(st != KP_UNASSIGNED));
        int64_t pos = atomic_load(&kp->position);
        json_object_set_new(p, "position", pos >= 0 ? json_integer(pos) : json_null());
        json_object_set_new(p, "committed", kp->committed >= 0 ? json_integer(kp->committed) : json_null());
        json_object_set_new(p, "lag", kp->lag >= 0 && st != KP_UNASSIGNED ? json_integer(kp->lag) : json_null());
        json_object_set_new(p, "paused", json_boolean(kp->paused));
        json_array_append_new(a, p);
    }
    json_object_set_new(j, "partitions", a);
    json_object_set_new(j, "assignment", json_array());
    for (int i = 0; i < g->nparts; i++) {
        if (atomic_load(&g->parts[i]->state) == KP_UNASSIGNED) continue;
        char label[320];
        snprintf(label, sizeof label, "%s/%d", g->parts[i]->topic, g->parts[i]->partition);
        json_array_append_new(json_object_get(j, "assignment"), json_string(label));
    }
    return j;
}

void kgroup_metrics(kgroup *g, struct evbuffer *out) {
    char pnum[16];
    metrics_family(out, "eddy_kafka_consumer_lag", "gauge", "messages between a partition's position and its end");
    for (int i = 0; i < g->nparts; i++) {
        kpart *kp = g->parts[i];
        if (atomic_load(&kp->state) == KP_UNASSIGNED || kp->lag < 0) continue;
        snprintf(pnum, sizeof pnum, "%d", kp->partition);
        const char *l[] = {"source", kp->source, "topic", kp->topic, "partition", pnum, NULL};
        metrics_sample(out, "eddy_kafka_consumer_lag", l, (double)kp->lag);
    }
    metrics_family(out, "eddy_kafka_committed_offset", "gauge", "the offset eddy last committed for a partition");
    for (int i = 0; i < g->nparts; i++) {
        kpart *kp = g->parts[i];
        if (kp->committed < 0) continue;
        snprintf(pnum, sizeof pnum, "%d", kp->partition);
        const char *l[] = {"source", kp->source, "topic", kp->topic, "partition", pnum, NULL};
        metrics_sample(out, "eddy_kafka_committed_offset", l, (double)kp->committed);
    }
    metrics_family(out, "eddy_kafka_assigned_partitions", "gauge", "partitions the group assigned to this instance");
    int assigned = 0;
    for (int i = 0; i < g->nparts; i++) if (atomic_load(&g->parts[i]->state) != KP_UNASSIGNED) assigned++;
    metrics_sample(out, "eddy_kafka_assigned_partitions", NULL, assigned);
    metrics_family(out, "eddy_kafka_rebalances_total", "counter", "assignments and revocations served");
    metrics_sample(out, "eddy_kafka_rebalances_total", NULL, (double)g->rebalances);
    metrics_family(out, "eddy_kafka_commits_total", "counter", "offset commits, by result");
    const char *ok[] = {"result", "ok", NULL}, *failed[] = {"result", "failed", NULL};
    metrics_sample(out, "eddy_kafka_commits_total", ok, (double)g->commits);
    metrics_sample(out, "eddy_kafka_commits_total", failed, (double)g->commit_failures);
    metrics_family(out, "eddy_kafka_messages_in_total", "counter", "messages read, per partition");
    for (int i = 0; i < g->nparts; i++) {
        kpart *kp = g->parts[i];
        snprintf(pnum, sizeof pnum, "%d", kp->partition);
        const char *l[] = {"source", kp->source, "topic", kp->topic, "partition", pnum, NULL};
        metrics_sample(out, "eddy_kafka_messages_in_total", l, (double)atomic_load(&kp->messages));
    }
    metrics_family(out, "eddy_kafka_bytes_in_total", "counter", "key and value bytes read, per partition");
    for (int i = 0; i < g->nparts; i++) {
        kpart *kp = g->parts[i];
        snprintf(pnum, sizeof pnum, "%d", kp->partition);
        const char *l[] = {"source", kp->source, "topic", kp->topic, "partition", pnum, NULL};
        metrics_sample(out, "eddy_kafka_bytes_in_total", l, (double)atomic_load(&kp->bytes));
    }
}

rd_kafka_consumer_group_metadata_t *kgroup_metadata(kgroup *g) { return rd_kafka_consumer_group_metadata(g->rk); }

/* ---- the group's members ------------------------------------------------- */

/* Big-endian reads of the ConsumerProtocol assignment; each moves *p past
 * what it read, or fails (0) when fewer than the bytes it needs are left. */
static int be16(const unsigned char **p, const unsigned char *end, int *v) {
    if (end - *p < 2) return 0;
    *v = (int16_t)(((*p)[0] << 8) | (*p)[1]);
    *p += 2;
    return 1;
}

static int be32(const unsigned char **p, const unsigned char *end, int32_t *v) {
    if (end - *p < 4) return 0;
    *v = (int32_t)(((uint32_t)(*p)[0] << 24) | ((uint32_t)(*p)[1] << 16) | ((uint32_t)(*p)[2] << 8) | (*p)[3]);
    *p += 4;
    return 1;
}

/* (see source_kafka.h) */
json_t *kgroup_assignment_json(const void *data, int n) {
    json_t *out = json_object();
    if (n <= 0 || !data) return out;
    const unsigned char *p = data, *end = p + n;
    int version, len;
    int32_t ntopics, nparts, part;
    if (!be16(&p, end, &version) || !be32(&p, end, &ntopics) || ntopics < 0) goto bad;
    for (int32_t t = 0; t < ntopics; t++) {
        if (!be16(&p, end, &len) || len < 0 || end - p < len) goto bad;
        char topic[256];
        snprintf(topic, sizeof topic, "%.*s", len, (const char *)p);
        p += len;
        if (!be32(&p, end, &nparts) || nparts < 0) goto bad;
        json_t *a = json_object_get(out, topic);
        if (!a) json_object_set_new(out, topic, a = json_array());
        for (int32_t i = 0; i < nparts; i++) {
            if (!be32(&p, end, &part)) goto bad;
            json_array_append_new(a, json_integer(part));
        }
    }
    return out;
bad:
    json_decref(out);
    return NULL;
}

json_t *kgroup_member_json(const struct rd_kafka_group_member_info *m) {
    const char *cid = m->client_id ? m->client_id : "";
    const char *host = m->client_host ? m->client_host : "";
    if (*host == '/') host++;                         /* the broker writes "/127.0.0.1" */
    json_t *j = json_pack("{s:s, s:s, s:s}", "member_id", m->member_id ? m->member_id : "", "client_id", cid,
                          "host", host);
    const char *inst = strncmp(cid, "eddy/", 5) == 0 ? cid + 5 : NULL;
    const char *slash = inst ? strchr(inst, '/') : NULL;
    json_object_set_new(j, "instance", slash ? json_stringn(inst, (size_t)(slash - inst)) : json_null());
    const char *admin = slash && slash[1] ? slash + 1 : NULL;
    if (admin) {
        /* bound to every address: reach it at the address the broker sees */
        char a[512];
        if (strncmp(admin, "0.0.0.0:", 8) == 0 && *host) snprintf(a, sizeof a, "%s:%s", host, admin + 8);
        else if (strncmp(admin, "[::]:", 5) == 0 && *host)
            snprintf(a, sizeof a, strchr(host, ':') ? "[%s]:%s" : "%s:%s", host, admin + 5);
        else snprintf(a, sizeof a, "%s", admin);
        json_object_set_new(j, "admin", json_string(a));
    } else {
        json_object_set_new(j, "admin", json_null());
    }
    json_t *parts = kgroup_assignment_json(m->member_assignment, m->member_assignment_size);
    json_object_set_new(j, "partitions", parts ? parts : json_object());
    if (!parts) json_object_set_new(j, "assignment_error", json_string("the assignment could not be read"));
    return j;
}

json_t *kgroup_members(kgroup *g, int timeout_ms, char *err, size_t errlen) {
    int64_t now = clock_mono_ms();
    if (!g->members_at || now - g->members_at >= KG_MEMBERS_CACHE_MS) {
        const struct rd_kafka_group_list *gl = NULL;
        json_decref(g->members);
        g->members = NULL;
        /* not through the consumer: the broker would answer only after the
         * fetch waiting ahead on its connection (fetch.wait.max.ms) */
        if (!g->admin_rk) g->admin_rk = kafka_admin_client(g->k, g->members_err, sizeof g->members_err);
        rd_kafka_resp_err_t e = g->admin_rk ? rd_kafka_list_groups(g->admin_rk, g->cfg->name, &gl, timeout_ms)
                                            : RD_KAFKA_RESP_ERR__FAIL;
        if (!g->admin_rk) {
            /* members_err says why */
        } else if (e && e != RD_KAFKA_RESP_ERR__PARTIAL) {
            snprintf(g->members_err, sizeof g->members_err, "cannot describe group '%s': %s", g->cfg->name,
                     rd_kafka_err2str(e));
        } else {
            const struct rd_kafka_group_info *gi = NULL;
            for (int i = 0; gl && i < gl->group_cnt; i++)
                if (strcmp(gl->groups[i].group, g->cfg->name) == 0) gi = &gl->groups[i];
            if (!gi) {
                snprintf(g->members_err, sizeof g->members_err, "the brokers do not know group '%s' yet", g->cfg->name);
            } else if (gi->err) {
                snprintf(g->members_err, sizeof g->members_err, "cannot describe group '%s': %s", g->cfg->name,
                         rd_kafka_err2str(gi->err));
            } else {
                json_t *ms = json_array();
                for (int i = 0; i < gi->member_cnt; i++) json_array_append_new(ms, kgroup_member_json(&gi->members[i]));
                g->members = json_pack("{s:s, s:o}", "state", gi->state ? gi->state : "", "members", ms);
            }
        }
        if (gl) rd_kafka_group_list_destroy(gl);
        g->members_at = clock_mono_ms();
    }
    if (!g->members) { snprintf(err, errlen, "%s", g->members_err); return NULL; }
    return json_incref(g->members);
}
