/* See changelog.h. */
#include "changelog.h"
#include "clock.h"
#include "kafka.h"
#include "log.h"
#include "shuffle.h"
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MARKS_SEP 0x03        /* uid 0x03 task(2): the task's input watermarks */

typedef struct clog {
    char *uid; size_t uidlen;
    char *topic;
    kafka_sink *sink;
} clog;

/* A batch's writes, the last one per key, until its end. */
typedef struct pend {
    size_t koff, klen, voff, vlen;
    int del;
    clog *log;
} pend;

struct changelog {
    clog *logs; int n;
    int partition;            /* the task's index: its partition of every changelog */
    const config *cfg;
    char *arena; size_t alen, acap;   /* the keys and values of pend */
    pend *pends; int npend, cappend;
    int32_t *slots; int nslots;       /* open addressing: index into pends + 1, 0 empty */
};

/* Operators whose state a keyed stage keeps (a global table's belongs to
 * every instance: it is read whole, not changelogged). */
static int logged(const node *nd) { return node_has_state(nd) && nd->kind != NODE_GLOBAL_TABLE; }

changelog *changelog_create(struct kafka *k, const config *cfg, const plan *p, const stage *st, int index, char *err,
                            size_t errlen) {
    err[0] = 0;
    int n = 0;
    for (int i = 0; i < st->nnodes; i++) n += logged(&p->nodes[st->nodes[i] - 1]);
    if (n == 0) return NULL;
    changelog *c = calloc(1, sizeof *c);
    if (!c || !(c->logs = calloc(n, sizeof *c->logs))) { free(c); snprintf(err, errlen, "out of memory"); return NULL; }
    c->partition = index;
    c->cfg = cfg;
    for (int i = 0; i < st->nnodes; i++) {
        const node *nd = &p->nodes[st->nodes[i] - 1];
        if (!logged(nd)) continue;
        clog *l = &c->logs[c->n++];
        char topic[512];
        shuffle_changelog_topic(cfg, nd->uid, topic, sizeof topic);
        l->uid = strdup(nd->uid);
        l->uidlen = strlen(nd->uid);
        l->topic = strdup(topic);
        if (!l->uid || !l->topic) { snprintf(err, errlen, "out of memory"); goto err; }
        if (!(l->sink = kafka_sink_get(k, topic, topic, NULL, err, errlen))) goto err;
    }
    return c;
err:
    changelog_destroy(c);
    return NULL;
}

void changelog_destroy(changelog *c) {
    if (!c) return;
    for (int i = 0; i < c->n; i++) { free(c->logs[i].uid); free(c->logs[i].topic); }
    free(c->logs);
    free(c->arena);
    free(c->pends);
    free(c->slots);
    free(c);
}

int changelog_count(const changelog *c) { return c ? c->n : 0; }
const char *changelog_topic(const changelog *c, int i) { return c->logs[i].topic; }

int changelog_producers(const changelog *c, kafka_sink **ks, int max) {
    int n = 0;
    for (int i = 0; c && i < c->n && n < max; i++) {
        int seen = 0;
        for (int j = 0; j < n; j++) seen |= ks[j] == c->logs[i].sink;
        if (!seen) ks[n++] = c->logs[i].sink;
    }
    return n;
}

/* The changelog of a store key: the operator whose uid the key starts with
 * (exactly, or as "uid#helper"), or NULL. */
static clog *log_of(const changelog *c, const char *k, size_t kl) {
    size_t u = 0;
    while (u < kl && (unsigned char)k[u] > MARKS_SEP) u++;
    for (int i = 0; i < c->n; i++) {
        clog *l = &c->logs[i];
        if (u < l->uidlen || memcmp(k, l->uid, l->uidlen) != 0) continue;
        if (u == l->uidlen || k[l->uidlen] == '#') return l;
    }
    return NULL;
}

static uint64_t hash_key(const char *k, size_t n) {      /* FNV-1a: a table slot, not security */
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) { h ^= (unsigned char)k[i]; h *= 1099511628211ULL; }
    return h;
}

/* Appends n bytes to the arena; their offset, or -1. */
static long keep(changelog *c, const char *p, size_t n) {
    if (c->alen + n > c->acap) {
        size_t cap = (c->alen + n) * 2 + 4096;
        char *a = realloc(c->arena, cap);
        if (!a) return -1;
        c->arena = a;
        c->acap = cap;
    }
    if (n) memcpy(c->arena + c->alen, p, n);
    c->alen += n;
    return (long)(c->alen - n);
}

/* The slot of key k: its pend, or the empty slot where it goes. */
static int32_t *slot_of(changelog *c, const char *k, size_t kl) {
    uint64_t i = hash_key(k, kl) & (uint64_t)(c->nslots - 1);
    for (;; i = (i + 1) & (uint64_t)(c->nslots - 1)) {
        int32_t *s = &c->slots[i];
        if (*s == 0) return s;
        pend *p = &c->pends[*s - 1];
        if (p->klen == kl && memcmp(c->arena + p->koff, k, kl) == 0) return s;
    }
}

/* Room for one more pend (the table at most half full).  0 or -1. */
static int grow(changelog *c) {
    if (c->npend < c->cappend && (c->npend + 1) * 2 <= c->nslots) return 0;
    int cap = c->cappend ? c->cappend * 2 : 1024;
    pend *np = realloc(c->pends, sizeof *np * (size_t)cap);
    if (!np) return -1;
    c->pends = np;
    c->cappend = cap;
    free(c->slots);
    c->nslots = cap * 2;
    if (!(c->slots = calloc((size_t)c->nslots, sizeof *c->slots))) return -1;
    for (int i = 0; i < c->npend; i++)
        *slot_of(c, c->arena + c->pends[i].koff, c->pends[i].klen) = i + 1;
    return 0;
}

/* The batch's end: each key's last write goes to its changelog. */
static int send_pending(changelog *c) {
    char err[512];
    int rc = 0;
    for (int i = 0; i < c->npend && rc == 0; i++) {
        pend *p = &c->pends[i];
        if (kafka_sink_send_to(p->log->sink, c->partition, c->arena + p->koff, p->klen,
                               p->del ? NULL : c->arena + p->voff, p->del ? 0 : p->vlen, -1, NULL, 0, NULL, err,
                               sizeof err) < 0) {
            log_error("changelog %s: %s", p->log->topic, err);
            rc = -1;
        }
    }
    c->npend = 0;
    c->alen = 0;
    if (c->slots) memset(c->slots, 0, sizeof *c->slots * (size_t)c->nslots);
    return rc;
}

int changelog_log(void *cp, const char *k, size_t kl, const char *v, size_t vl) {
    changelog *c = cp;
    if (!k) return send_pending(c);
    clog *l = log_of(c, k, kl);
    if (!l) return 0;
    if (grow(c) < 0) return -1;
    int32_t *s = slot_of(c, k, kl);
    long vo = v ? keep(c, v, vl) : 0;
    if (vo < 0) return -1;
    if (*s == 0) {                   /* (keep may have moved the arena: offsets, not pointers) */
        long ko = keep(c, k, kl);
        if (ko < 0) return -1;
        c->pends[c->npend] = (pend){ .koff = (size_t)ko, .klen = kl, .log = l };
        *s = ++c->npend;
    }
    pend *p = &c->pends[*s - 1];
    p->del = v == NULL;
    p->voff = (size_t)vo;
    p->vlen = v ? vl : 0;
    return 0;
}

/* uid 0x03 partition(2): the marks key of task `partition`, into out[cap].
 * Its length, or 0 when it does not fit. */
static size_t marks_key(const char *uid, size_t ul, int partition, char *out, size_t cap) {
    if (ul + 3 > cap) return 0;
    memcpy(out, uid, ul);
    out[ul] = MARKS_SEP;
    out[ul + 1] = (char)(partition >> 8);
    out[ul + 2] = (char)partition;
    return ul + 3;
}

int changelog_marks_key(const changelog *c, state_key *k) {
    size_t need = c->logs[0].uidlen + 3;
    if (k->cap < need) {
        char *np = realloc(k->p, need);
        if (!np) return -1;
        k->p = np;
        k->cap = need;
    }
    k->len = marks_key(c->logs[0].uid, c->logs[0].uidlen, c->partition, k->p, k->cap);
    return 0;
}

/* [uid sep kg, uid sep kg+1): one key group's keys of one kind. */
static int wipe_range(state_db *db, const char *uid, size_t ul, char sep, uint32_t kg, char *err, size_t errlen) {
    char from[600], to[600];
    if (ul + 3 > sizeof from) { snprintf(err, errlen, "uid too long"); return -1; }
    memcpy(from, uid, ul);
    memcpy(to, uid, ul);
    from[ul] = to[ul] = sep;
    from[ul + 1] = (char)(kg >> 8); from[ul + 2] = (char)kg;
    to[ul + 1] = (char)((kg + 1) >> 8); to[ul + 2] = (char)(kg + 1);
    return state_delete_range(db, from, ul + 3, to, ul + 3, err, errlen);
}

int changelog_wipe_ops(state_db *db, const char *const *uids, int nuids, int partition, const uint32_t *kgs,
                       int nkgs, char *err, size_t errlen) {
    /* an operator's helper stores: a window's records, a process's state
     * migration (lua/eddy/runtime/migrate.lua) */
    static const char *const helpers[] = { "", "#records", "#migration", "#migrating", "#migrated" };
    for (int i = 0; i < nuids; i++) {
        char us[5][600];
        for (int u = 0; u < 5; u++) snprintf(us[u], sizeof us[u], "%s%s", uids[i], helpers[u]);
        for (int u = 0; u < 5; u++)
            for (int g = 0; g < nkgs; g++)
                for (char sep = 0; sep < MARKS_SEP; sep++)
                    if (wipe_range(db, us[u], strlen(us[u]), sep, kgs[g], err, errlen) < 0) return -1;
    }
    if (nuids == 0) return 0;
    /* the marks: [key, key 0x00) */
    char from[600], to[601];
    size_t n = marks_key(uids[0], strlen(uids[0]), partition, from, sizeof from);
    if (!n) { snprintf(err, errlen, "uid too long"); return -1; }
    memcpy(to, from, n);
    to[n] = 0;
    return state_delete_range(db, from, n, to, n + 1, err, errlen);
}

int changelog_wipe(const changelog *c, state_db *db, const uint32_t *kgs, int nkgs, char *err, size_t errlen) {
    const char **uids = calloc((size_t)c->n, sizeof *uids);
    if (!uids) { snprintf(err, errlen, "out of memory"); return -1; }
    for (int i = 0; i < c->n; i++) uids[i] = c->logs[i].uid;
    int rc = changelog_wipe_ops(db, uids, c->n, c->partition, kgs, nkgs, err, errlen);
    free(uids);
    return rc;
}

/* ---- restore ------------------------------------------------------------- */

struct changelog_restore {
    const changelog *c;
    rd_kafka_t *rk;
    rd_kafka_queue_t *q;
    int *done;                 /* [n]: read to its end */
    int64_t *pos, *high;       /* [n] */
    int left;                  /* partitions not at their end yet */
    int follow;                /* a standby: read on past the end */
    int64_t records, bytes;
};

changelog_restore *changelog_restore_begin(const changelog *c, struct kafka *k, const int64_t *from, char *err,
                                           size_t errlen) {
    changelog_restore *r = calloc(1, sizeof *r);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_topic_partition_list_t *l = NULL;
    char e[512];
    if (!r || !(r->done = calloc(c->n, sizeof *r->done)) || !(r->pos = calloc(c->n, sizeof *r->pos)) ||
        !(r->high = calloc(c->n, sizeof *r->high))) {
        snprintf(err, errlen, "out of memory");
        goto err;
    }
    r->c = c;
    if (kafka_conf_apply(k, conf, NULL, NULL, err, errlen) < 0) goto err;
    char group[600];
    snprintf(group, sizeof group, "%s-restore", c->cfg->name);     /* never joined: offsets are assigned */
    struct { const char *k, *v; } props[] = {
        {"group.id", group}, {"enable.auto.commit", "false"}, {"isolation.level", "read_committed"},
        {"enable.partition.eof", "true"}, {"auto.offset.reset", "earliest"}, {"log_level", "3"},
        {"fetch.max.bytes", "52428800"}, {"queued.max.messages.kbytes", "65536"},
    };
    for (size_t i = 0; i < sizeof props / sizeof props[0]; i++)
        if (rd_kafka_conf_set(conf, props[i].k, props[i].v, e, sizeof e) != RD_KAFKA_CONF_OK) {
            snprintf(err, errlen, "changelog restore: %s: %s", props[i].k, e);
            goto err;
        }
    r->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, e, sizeof e);
    conf = NULL;
    if (!r->rk) { snprintf(err, errlen, "changelog restore: %s", e); goto err; }
    l = rd_kafka_topic_partition_list_new(c->n);
    for (int i = 0; i < c->n; i++) {
        int64_t low = 0, high = -1;
        if (rd_kafka_query_watermark_offsets(r->rk, c->logs[i].topic, c->partition, &low, &high, 10000) != 0) high = -1;
        r->high[i] = high;
        r->pos[i] = from && from[i] >= 0 ? from[i] : -1;
        rd_kafka_topic_partition_list_add(l, c->logs[i].topic, c->partition)->offset =
            r->pos[i] >= 0 ? r->pos[i] : RD_KAFKA_OFFSET_BEGINNING;
    }
    rd_kafka_resp_err_t ae = rd_kafka_assign(r->rk, l);
    if (ae) { snprintf(err, errlen, "changelog restore: cannot read the changelogs: %s", rd_kafka_err2str(ae)); goto err; }
    rd_kafka_topic_partition_list_destroy(l);
    r->q = rd_kafka_queue_get_consumer(r->rk);
    r->left = c->n;
    return r;
err:
    if (conf) rd_kafka_conf_destroy(conf);
    if (l) rd_kafka_topic_partition_list_destroy(l);
    changelog_restore_end(r);
    return NULL;
}

static int index_of(const changelog_restore *r, const char *topic) {
    for (int i = 0; i < r->c->n; i++) if (strcmp(r->c->logs[i].topic, topic) == 0) return i;
    return -1;
}

int changelog_restore_step(changelog_restore *r, state_tx *tx, int max, int wait_ms, int *done, char *err,
                           size_t errlen) {
    *done = r->left == 0;
    int applied = 0;
    rd_kafka_message_t *msgs[512];
    while ((r->follow || !*done) && applied < max) {
        ssize_t n = rd_kafka_consume_batch_queue(r->q, applied ? 0 : wait_ms, msgs, 512);
        if (n <= 0) break;
        for (ssize_t i = 0; i < n; i++) {
            rd_kafka_message_t *m = msgs[i];
            int t = index_of(r, rd_kafka_topic_name(m->rkt));
            if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                if (t >= 0 && !r->done[t]) { r->done[t] = 1; r->left--; }
            } else if (m->err) {
                log_warn("changelog restore: %s", rd_kafka_message_errstr(m));
            } else if (t >= 0 && m->key) {
                int rc = m->payload ? state_tx_put(tx, m->key, m->key_len, m->payload, m->len)
                                    : state_tx_delete(tx, m->key, m->key_len);
                if (rc < 0) {
                    snprintf(err, errlen, "changelog restore: cannot write to the state store");
                    for (ssize_t j = i; j < n; j++) rd_kafka_message_destroy(msgs[j]);
                    return -1;
                }
                r->pos[t] = m->offset + 1;
                r->records++;
                r->bytes += (int64_t)(m->len + m->key_len);
                applied++;
            }
            rd_kafka_message_destroy(m);
        }
        *done = r->left == 0;
    }
    if (state_tx_commit(tx, err, errlen) < 0) return -1;
    return applied;
}

void changelog_restore_progress(const changelog_restore *r, int64_t *records, int64_t *bytes, int64_t *left) {
    *records = r->records;
    *bytes = r->bytes;
    int64_t l = 0;
    for (int i = 0; i < r->c->n; i++) {
        if (r->done[i]) continue;
        if (r->high[i] < 0) { l = -1; break; }
        int64_t at = r->pos[i] >= 0 ? r->pos[i] : 0;
        if (r->high[i] > at) l += r->high[i] - at;
    }
    *left = l;
}

int64_t changelog_restore_position(const changelog_restore *r, int i) { return r->pos[i]; }

int64_t *changelog_restore_positions(const changelog_restore *r) {
    int64_t *p = malloc(sizeof *p * (size_t)r->c->n);
    if (p) memcpy(p, r->pos, sizeof *p * (size_t)r->c->n);
    return p;
}

void changelog_restore_follow(changelog_restore *r) { r->follow = 1; }

void changelog_restore_end(changelog_restore *r) {
    if (!r) return;
    if (r->q) rd_kafka_queue_destroy(r->q);
    if (r->rk) {
        rd_kafka_consumer_close(r->rk);
        rd_kafka_destroy(r->rk);
    }
    free(r->done);
    free(r->pos);
    free(r->high);
    free(r);
}
