/* The Kafka source kind: one partition of the group's (see source_kafka.h). */
#include "kafka_group_int.h"
#include "source.h"
#include "kafka.h"
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

/* ---- one partition -------------------------------------------------------- */

static int kpart_state(kpart *kp) { return atomic_load(&kp->state); }
/* 1 once the group has assigned partitions and this one is not among ours:
 * it then holds no watermark back here (before the first assignment every
 * partition may still become ours, and holds it). */
static int kpart_elsewhere(kpart *kp) {
    return atomic_load(&kp->g->settled) && atomic_load(&kp->state) == KP_UNASSIGNED;
}
static int64_t kpart_position(kpart *kp) { return atomic_load(&kp->position); }   /* after the last one read */
/* 1 when the last read reached the partition's end (nothing left to read
 * now): only then may the partition count as idle. */
static int kpart_at_end(kpart *kp) { return atomic_load(&kp->at_end); }

/* 1 once a bounded partition was read up to its end offset as of its first
 * assignment (or to its end, when that offset is unknown). */
static int kpart_ended(kpart *kp) {
    if (!kp->bounded) return 0;
    int64_t end = atomic_load(&kp->end), pos = atomic_load(&kp->position);
    if (end < 0) return 0;                              /* not assigned yet */
    return (pos >= 0 && pos >= end) || atomic_load(&kp->at_end);
}

/* The offset a checkpoint keeps: the position, or while nothing was read
 * the offset it started at (-1: not known). */
static int64_t checkpoint_offset(kpart *kp) {
    int64_t pos = atomic_load(&kp->position);
    return pos >= 0 ? pos : atomic_load(&kp->restore);
}

/* Every output caused by the records before `position` was acknowledged;
 * `marker` (0: none) is the marker that showed it. */
static void kpart_acked(kpart *kp, uint64_t marker, int64_t position) {
    long long a = atomic_load(&kp->acked);
    while (position > a && !atomic_compare_exchange_weak(&kp->acked, &a, (long long)position)) {}
    if (marker && marker == atomic_load(&kp->drain_marker)) atomic_store(&kp->drained, 1);
}

/* Packs a message's headers as a MessagePack map (name -> value or nil) into b's arena. */
static int add_headers(batch *b, eddy_rec *r, rd_kafka_headers_t *h, msgpack_sbuffer *sb) {
    size_t n = rd_kafka_header_cnt(h);
    msgpack_sbuffer_clear(sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, n);
    const char *name;
    const void *val;
    size_t vlen;
    for (size_t i = 0; i < n && rd_kafka_header_get_all(h, i, &name, &val, &vlen) == 0; i++) {
        size_t nl = strlen(name);
        msgpack_pack_str(&pk, nl);
        msgpack_pack_str_body(&pk, name, nl);
        if (!val) msgpack_pack_false(&pk);          /* a header without a value: false (nil would vanish in Lua) */
        else { msgpack_pack_str(&pk, vlen); msgpack_pack_str_body(&pk, val, vlen); }
    }
    uint32_t idx = (uint32_t)(r - b->recs);
    long off = batch_reserve(b, sb->size);
    if (off < 0) return -1;
    r = &b->recs[idx];
    memcpy(b->data + off, sb->data, sb->size);
    r->hdr_off = (uint64_t)off;
    r->hdr_len = (uint32_t)sb->size;
    return 0;
}

static int read_messages(kpart *kp, batch *b, int max, uint32_t source, int32_t index, char *err, size_t errlen) {
    if (kp->error[0]) { snprintf(err, errlen, "%s", kp->error); return -1; }
    rd_kafka_message_t *msgs[256];
    int total = 0;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pthread_mutex_lock(&kp->mu);
    while (total < max && atomic_load(&kp->state) == KP_ASSIGNED && kp->q) {
        int want = max - total < 256 ? max - total : 256;
        ssize_t n = rd_kafka_consume_batch_queue(kp->q, 0, msgs, (size_t)want);
        if (n <= 0) break;
        for (ssize_t i = 0; i < n; i++) {
            rd_kafka_message_t *m = msgs[i];
            if (m->err) {
                if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) atomic_store(&kp->at_end, 1);
                else log_warn("kafka: %s/%d: %s", kp->topic, kp->partition, rd_kafka_message_errstr(m));
                rd_kafka_message_destroy(m);
                continue;
            }
            if (m->offset < atomic_load(&kp->position)) {
                /* read already: librdkafka 2.0 fetches a partition again from
                 * its start offset when it is resumed right after an assign
                 * (librdkafka #4637); each offset counts once */
                rd_kafka_message_destroy(m);
                continue;
            }
            atomic_store(&kp->at_end, 0);
            eddy_rec *r;
            if ((int64_t)m->len > kp->max_bytes) {
                char msg[200];
                snprintf(msg, sizeof msg, "message of %zu bytes is over the source's max_bytes (%lld)", m->len,
                         (long long)kp->max_bytes);
                r = batch_add(b, msg, strlen(msg), m->payload, m->len);
                if (r) r->flags = EDDY_REC_MALFORMED;
            } else {
                r = batch_add(b, m->key, m->key ? m->key_len : 0, m->payload ? m->payload : "", m->len);
                if (r && m->key) r->flags = EDDY_REC_KEY;
                if (r && !m->payload) r->flags |= EDDY_REC_TOMBSTONE;
            }
            if (!r) { snprintf(err, errlen, "out of memory"); total = -1; goto drop; }
            rd_kafka_timestamp_type_t tt;
            int64_t ts = rd_kafka_message_timestamp(m, &tt);
            r->ts = tt == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE || ts < 0 ? TS_NONE : ts;
            r->offset = m->offset;
            r->line = 0;
            r->partition = index;
            r->source = source;
            rd_kafka_headers_t *h = NULL;
            if (!(r->flags & EDDY_REC_MALFORMED) && rd_kafka_message_headers(m, &h) == 0 && h &&
                add_headers(b, r, h, &sb) < 0) {
                snprintf(err, errlen, "out of memory");
                total = -1;
                goto drop;
            }
            atomic_fetch_add(&kp->messages, 1);
            atomic_fetch_add(&kp->bytes, (long)(m->len + m->key_len));
            atomic_store(&kp->position, m->offset + 1);
            rd_kafka_message_destroy(m);
            total++;
            continue;
        drop:               /* the task fails: what is left of this read goes back unread */
            for (ssize_t j = i; j < n; j++) rd_kafka_message_destroy(msgs[j]);
            goto out;
        }
    }
out:
    pthread_mutex_unlock(&kp->mu);
    msgpack_sbuffer_destroy(&sb);
    return total;
}

/* ---- the Kafka kind (source.h) --------------------------------------------- */

static const char *const kafka_options[] = { "kafka", "format", "start", "max_bytes", "idle", "bootstrap", "bounded",
                                             NULL };

/* A source task's partition: attached to the group's once it exists. */
typedef struct ksrc { kpart *kp; uint32_t source; int32_t index; } ksrc;

static void *kafka_open(const source_info *si, int index, int partition, char *err, size_t errlen) {
    (void)si;
    ksrc *k = calloc(1, sizeof *k);
    if (!k) { snprintf(err, errlen, "out of memory"); return NULL; }
    k->source = (uint32_t)index;
    k->index = partition;
    return k;
}

int source_kafka_attach(source *s, kgroup *g, const plan *p, int task_id, char *err, size_t errlen) {
    if (source_ops_get(s) != &source_kafka_ops) return 0;
    ksrc *k = source_impl(s);
    const source_info *si = &p->sources[k->source];
    const node *nd = &p->nodes[si->node - 1];
    const opt *mb = opt_find(&nd->opts, "max_bytes");
    int64_t max_bytes = si->repartition ? INT64_MAX : 1 << 20;     /* a repartition topic's frames: any size */
    if (mb && mb->type == OPT_NUMBER) max_bytes = (int64_t)mb->n;
    else if (mb && mb->type == OPT_STRING && config_parse_size(mb->s, &max_bytes) < 0) {
        snprintf(err, errlen, "source '%s' (%s): max_bytes: expected a size like \"1MB\", got \"%s\"", si->name,
                 nd->where, mb->s);
        return -1;
    }
    k->kp = kgroup_add(g, si->name, si->topics[si->ktopic[k->index]], si->kpart[k->index], task_id, si->start, max_bytes);
    if (!k->kp) { snprintf(err, errlen, "out of memory"); return -1; }
    if (si->bounded) k->kp->bounded = 1;
    return 0;
}

static int kafka_read(void *impl, batch *b, int max, int *eof, char *err, size_t errlen) {
    ksrc *k = impl;
    *eof = 0;
    return read_messages(k->kp, b, max, k->source, k->index, err, errlen);
}

static int64_t kafka_position(void *impl) { return kpart_position(((ksrc *)impl)->kp); }

static json_t *kafka_save(void *impl, const source_info *si, int partition, const source_mark *m) {
    kpart *kp = ((ksrc *)impl)->kp;
    int64_t off = kp ? checkpoint_offset(kp) : -1;
    if (off < 0) return NULL;                /* nothing read, nothing restored: the group's offset holds */
    return json_pack("{s:s, s:s, s:I, s:I, s:I, s:I}", "source", si->name, "partition_label", si->files[partition],
                     "kafka_partition", (json_int_t)si->kpart[partition], "offset", (json_int_t)off,
                     "watermark", (json_int_t)m->wm, "max_ts", (json_int_t)m->maxts);
}

/* Recovery: the partition starts at the entry's offset the first time it is
 * assigned (before the group's committed offset; with Kafka sinks under
 * exactly_once only where the group has none, its offsets being the
 * checkpoints'). */
static int kafka_restore(void *impl, json_t *e, char *err, size_t errlen) {
    (void)err; (void)errlen;
    kpart *kp = ((ksrc *)impl)->kp;
    atomic_store(&kp->restore, json_integer_value(json_object_get(e, "offset")));
    kp->recovering = 1;
    return 0;
}

static void kafka_status(void *impl, const source_info *si, int partition, json_t *out) {
    kpart *kp = ((ksrc *)impl)->kp;
    json_object_set_new(out, "topic", json_string(si->topics[si->ktopic[partition]]));
    json_object_set_new(out, "kafka_partition", json_integer(si->kpart[partition]));
    json_object_set_new(out, "assigned", json_boolean(kp && kpart_state(kp) != KP_UNASSIGNED));
}

static int kafka_live(void *impl) { (void)impl; return 1; }

static int kafka_state(void *impl) {
    int st = kpart_state(((ksrc *)impl)->kp);
    return st == KP_ASSIGNED ? SOURCE_READING : st == KP_REVOKING ? SOURCE_REVOKING : SOURCE_AWAY;
}

static int kafka_elsewhere(void *impl) { return kpart_elsewhere(((ksrc *)impl)->kp); }
static int kafka_at_end(void *impl) { return kpart_at_end(((ksrc *)impl)->kp); }
static int kafka_ended(void *impl) { return kpart_ended(((ksrc *)impl)->kp); }
static int64_t kafka_generation(void *impl) { return atomic_load(&((ksrc *)impl)->kp->generation); }

static int kafka_caught_up(void *impl) {
    kpart *kp = ((ksrc *)impl)->kp;
    int st = kpart_state(kp);
    return kpart_at_end(kp) || kpart_ended(kp) || (st != KP_ASSIGNED && kpart_elsewhere(kp));
}

/* bounded: nothing past the end offset as of the assignment (one record
 * first, while the position is not known yet) */
static int64_t kafka_bound_left(void *impl) {
    kpart *kp = ((ksrc *)impl)->kp;
    if (!kp->bounded) return INT64_MAX;
    int64_t end = atomic_load(&kp->end), pos = atomic_load(&kp->position);
    if (pos < 0) return 1;
    if (end < 0) return INT64_MAX;
    return end > pos ? end - pos : 0;
}

static void kafka_pause(void *impl, int paused) {
    kpart *kp = ((ksrc *)impl)->kp;
    if (!kp || kp->paused == paused) return;
    pthread_mutex_lock(&kp->mu);
    if (atomic_load(&kp->state) == KP_ASSIGNED) {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, kp->topic, kp->partition);
        rd_kafka_resp_err_t e = paused ? rd_kafka_pause_partitions(kp->g->rk, l) : rd_kafka_resume_partitions(kp->g->rk, l);
        rd_kafka_topic_partition_list_destroy(l);
        if (!e) kp->paused = paused;
    }
    pthread_mutex_unlock(&kp->mu);
}

static void kafka_drain(void *impl, uint64_t marker) {
    kpart *kp = ((ksrc *)impl)->kp;
    pthread_mutex_lock(&kp->mu);
    atomic_store(&kp->drain_marker, marker);
    if (!marker) atomic_store(&kp->drained, 1);      /* nothing to wait for */
    if (atomic_load(&kp->state) == KP_REVOKING) atomic_store(&kp->state, KP_DRAINING);
    pthread_mutex_unlock(&kp->mu);
}

static void kafka_acked(void *impl, uint64_t marker, int64_t position) {
    kpart *kp = ((ksrc *)impl)->kp;
    if (kp) kpart_acked(kp, marker, position);
}

/* exactly_once: a checkpoint committed offset.  In a Kafka transaction the
 * group has it (nothing is left for the consumer to commit); else the
 * consumer commits it as if acknowledged. */
static void kafka_committed(void *impl, int64_t offset, int txn) {
    kpart *kp = ((ksrc *)impl)->kp;
    if (!txn) { kpart_acked(kp, 0, offset); return; }
    if (kpart_state(kp) == KP_UNASSIGNED) return;
    kpart_acked(kp, 0, offset);
    if (offset > kp->committed) kp->committed = offset;
}

/* The offset a transaction commits: partitions this instance holds (a
 * revoked one is held until its rebalance callback returns). */
static int kafka_txn_offset(void *impl, kafka_offset *o, kgroup **g) {
    kpart *kp = ((ksrc *)impl)->kp;
    int64_t off = kp && kpart_state(kp) != KP_UNASSIGNED ? checkpoint_offset(kp) : -1;
    if (off < 0) return -1;
    *o = (kafka_offset){ kp->topic, kp->partition, off };
    *g = kp->g;
    return 0;
}

const source_ops source_kafka_ops = {
    .kind = SRC_KAFKA, .name = "kafka", .options = kafka_options,
    .open = kafka_open, .read = kafka_read, .position = kafka_position, .save = kafka_save,
    .restore = kafka_restore, .status = kafka_status, .live = kafka_live, .caught_up = kafka_caught_up,
    .state = kafka_state, .elsewhere = kafka_elsewhere, .at_end = kafka_at_end, .ended = kafka_ended, .generation = kafka_generation,
    .bound_left = kafka_bound_left, .pause = kafka_pause, .drain = kafka_drain, .acked = kafka_acked,
    .committed = kafka_committed, .txn_offset = kafka_txn_offset, .close = free,
};
