#include "acks.h"
#include "kafka.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define MAX_WAIT_SINKS 32     /* a task's Kafka sinks and the dead-letter producer */

typedef struct marker {
    uint64_t id;
    int source_task;
    int64_t position;
    long expected, got;
    struct marker *next;
} marker;

/* A report waiting for Kafka sinks to deliver. */
typedef struct waiting {
    uint64_t id;
    int n;
    struct kafka_sink *ks[MAX_WAIT_SINKS];
    int64_t seq[MAX_WAIT_SINKS];
    struct waiting *next;
} waiting;

struct acks {
    pthread_mutex_t mu;
    long *expected;          /* [nstages]: reports a marker from source stage s needs */
    int nstages;
    uint64_t next_id;
    marker *markers;
    waiting *waits;
    acks_done_fn done;
    void *ud;
};

/* A marker from one task of source stage s is forwarded by every task that
 * receives a copy to every task of each stage it feeds; each copy received
 * is one report (a stage reading a repartition topic, shuffle = "kafka",
 * is a source stage of its own).  R(s) = 1; R(d) = ntasks(d) * sum of R(u) over the stages u
 * feeding d; a marker needs the sum of R. */
static long count_reports(const plan *p, int s) {
    int n = p->nstages;
    long *r = calloc(n, sizeof *r);
    unsigned char *feeds = calloc((size_t)n * n, 1);
    if (!r || !feeds) { free(r); free(feeds); return -1; }
    for (int u = 0; u < n; u++)
        for (int k = 0; k < p->stages[u].nnodes; k++) {
            const node *nd = &p->nodes[p->stages[u].nodes[k] - 1];
            /* (a keyed stage read from Kafka, shuffle = "kafka", reports its own markers) */
            if (nd->kind == NODE_KEY_BY && nd->stage_out >= 0 && nd->stage_out < n && p->stages[nd->stage_out].source < 0)
                feeds[u * n + nd->stage_out] = 1;
        }
    r[s] = 1;
    for (int round = 0; round < n; round++)          /* the stage graph is acyclic: n rounds settle it */
        for (int d = 0; d < n; d++) {
            if (d == s) continue;
            long in = 0;
            for (int u = 0; u < n; u++) if (feeds[u * n + d]) in += r[u];
            r[d] = p->stages[d].ntasks * in;
        }
    long total = 0;
    for (int d = 0; d < n; d++) total += r[d];
    free(r);
    free(feeds);
    return total;
}

acks *acks_create(const plan *p, acks_done_fn done, void *ud) {
    acks *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->nstages = p->nstages;
    a->expected = calloc(p->nstages ? p->nstages : 1, sizeof *a->expected);
    if (!a->expected) { free(a); return NULL; }
    for (int s = 0; s < p->nstages; s++) a->expected[s] = p->stages[s].source < 0 ? 0 : count_reports(p, s);
    pthread_mutex_init(&a->mu, NULL);
    a->done = done;
    a->ud = ud;
    return a;
}

void acks_destroy(acks *a) {
    if (!a) return;
    while (a->markers) { marker *m = a->markers; a->markers = m->next; free(m); }
    while (a->waits) { waiting *w = a->waits; a->waits = w->next; free(w); }
    pthread_mutex_destroy(&a->mu);
    free(a->expected);
    free(a);
}

uint64_t acks_begin(acks *a, int stage, int source_task, int64_t position) {
    marker *m = calloc(1, sizeof *m);
    if (!m || stage < 0 || stage >= a->nstages || a->expected[stage] <= 0) { free(m); return 0; }
    pthread_mutex_lock(&a->mu);
    m->id = ++a->next_id;
    m->source_task = source_task;
    m->position = position;
    m->expected = a->expected[stage];
    m->next = a->markers;
    a->markers = m;
    pthread_mutex_unlock(&a->mu);
    return m->id;
}

/* One report of marker id counted; the marker, when complete, is unlinked
 * and returned (the caller calls done and frees it).  Under mu. */
static marker *count(acks *a, uint64_t id) {
    for (marker **pm = &a->markers; *pm; pm = &(*pm)->next) {
        marker *m = *pm;
        if (m->id != id) continue;
        if (++m->got < m->expected) return NULL;
        *pm = m->next;
        return m;
    }
    return NULL;
}

static void finish(acks *a, marker *m) {
    if (!m) return;
    a->done(a->ud, m->source_task, m->id, m->position);
    free(m);
}

void acks_report(acks *a, uint64_t id, struct kafka_sink *const *ks, int n) {
    if (!id) return;
    waiting *w = NULL;
    for (int i = 0; i < n; i++) {
        int64_t seq = kafka_sink_seq(ks[i]);
        if (kafka_sink_acked(ks[i], seq)) continue;
        if (!w && !(w = calloc(1, sizeof *w))) break;   /* out of memory: counted now (the commit may run early) */
        if (w->n < MAX_WAIT_SINKS) { w->ks[w->n] = ks[i]; w->seq[w->n] = seq; w->n++; }
    }
    pthread_mutex_lock(&a->mu);
    marker *m = NULL;
    if (w) {
        w->id = id;
        w->next = a->waits;
        a->waits = w;
    } else {
        m = count(a, id);
    }
    pthread_mutex_unlock(&a->mu);
    finish(a, m);
}

void acks_poll(acks *a) {
    for (;;) {
        marker *m = NULL;
        pthread_mutex_lock(&a->mu);
        for (waiting **pw = &a->waits; *pw && !m; ) {
            waiting *w = *pw;
            int ok = 1;
            for (int i = 0; i < w->n && ok; i++) ok = kafka_sink_acked(w->ks[i], w->seq[i]);
            if (!ok) { pw = &w->next; continue; }
            *pw = w->next;
            m = count(a, w->id);
            free(w);
        }
        int more = m != NULL;
        pthread_mutex_unlock(&a->mu);
        finish(a, m);
        if (!more) break;
    }
}

int acks_pending(acks *a) {
    pthread_mutex_lock(&a->mu);
    int n = 0;
    for (marker *m = a->markers; m; m = m->next) n++;
    pthread_mutex_unlock(&a->mu);
    return n;
}
