#include "channel.h"
#include "sched.h"
#include <stdlib.h>

channel *channel_create(int capacity, struct task *producer, struct task *consumer) {
    channel *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    pthread_mutex_init(&c->mu, NULL);
    c->capacity = capacity > 0 ? capacity : 1;
    c->producer = producer;
    c->consumer = consumer;
    return c;
}

void msg_free(msg *m) {
    if (!m) return;
    batch_destroy(m->b);
    free(m);
}

void channel_destroy(channel *c) {
    if (!c) return;
    msg *m = c->head;
    while (m) { msg *n = m->next; msg_free(m); m = n; }
    pthread_mutex_destroy(&c->mu);
    free(c);
}

int channel_push(channel *c, msg_kind kind, batch *b, int64_t value) {
    msg *m = malloc(sizeof *m);
    if (!m) { batch_destroy(b); return -1; }
    m->kind = kind;
    m->b = b;
    m->value = value;
    m->next = NULL;
    pthread_mutex_lock(&c->mu);
    if (c->tail) c->tail->next = m; else c->head = m;
    c->tail = m;
    c->depth++;
    if (kind == CH_BATCH) { c->pushed++; c->batches++; }
    pthread_mutex_unlock(&c->mu);
    if (c->consumer) sched_wake(c->consumer);
    return 0;
}

msg *channel_pop(channel *c) {
    pthread_mutex_lock(&c->mu);
    msg *m = c->head;
    int was_full = c->batches >= c->capacity;
    if (m) {
        c->head = m->next;
        if (!c->head) c->tail = NULL;
        c->depth--;
        if (m->kind == CH_BATCH) { c->popped++; c->batches--; }
    }
    int now_full = c->batches >= c->capacity;
    pthread_mutex_unlock(&c->mu);
    if (m && was_full && !now_full && c->producer) sched_wake(c->producer);
    return m;
}

int channel_full(channel *c) {
    pthread_mutex_lock(&c->mu);
    int f = c->batches >= c->capacity;
    pthread_mutex_unlock(&c->mu);
    return f;
}

int channel_depth(channel *c) {
    pthread_mutex_lock(&c->mu);
    int d = c->depth;
    pthread_mutex_unlock(&c->mu);
    return d;
}
