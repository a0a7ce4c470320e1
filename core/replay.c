/* replay — see replay.h. */
#include "replay.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct slot {
    eddy_rec rec;           /* key at bytes[0], value after it, headers after that */
    char *bytes;
    size_t cap;
} slot;

struct replay_ring {
    pthread_mutex_t mu;     /* the worker once per batch; a dry run once per copy */
    slot *slots;
    int cap;
    int next;               /* where the next record goes */
    int n;                  /* held (<= cap) */
    long total;
};

replay_ring *replay_ring_create(int cap) {
    if (cap < 1) return NULL;
    replay_ring *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    if (!(r->slots = calloc((size_t)cap, sizeof *r->slots))) { free(r); return NULL; }
    r->cap = cap;
    pthread_mutex_init(&r->mu, NULL);
    return r;
}

void replay_ring_destroy(replay_ring *r) {
    if (!r) return;
    for (int i = 0; i < r->cap; i++) free(r->slots[i].bytes);
    free(r->slots);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

int replay_ring_add(replay_ring *r, const batch *b) {
    int first = b->n > r->cap ? b->n - r->cap : 0;
    int rc = 0;
    pthread_mutex_lock(&r->mu);
    for (int i = first; i < b->n; i++) {
        const eddy_rec *src = &b->recs[i];
        slot *s = &r->slots[r->next];
        size_t need = (size_t)src->key_len + src->val_len + src->hdr_len;
        if (need > s->cap) {
            size_t cap = need < 64 ? 64 : need + need / 2;
            char *nb = realloc(s->bytes, cap);
            if (!nb) { rc = -1; break; }
            s->bytes = nb;
            s->cap = cap;
        }
        s->rec = *src;
        if (src->key_len) memcpy(s->bytes, b->data + src->key_off, src->key_len);
        if (src->val_len) memcpy(s->bytes + src->key_len, b->data + src->val_off, src->val_len);
        if (src->hdr_len) memcpy(s->bytes + src->key_len + src->val_len, b->data + src->hdr_off, src->hdr_len);
        r->next = r->next + 1 == r->cap ? 0 : r->next + 1;
        if (r->n < r->cap) r->n++;
        r->total++;
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

int replay_ring_each(replay_ring *r, int max, replay_each_fn fn, void *ud) {
    int rc = 0;
    pthread_mutex_lock(&r->mu);
    int n = max > 0 && max < r->n ? max : r->n;
    int start = (r->next - n + r->cap) % r->cap;
    for (int i = 0; i < n && rc == 0; i++) {
        const slot *s = &r->slots[(start + i) % r->cap];
        const char *key = s->bytes, *val = s->bytes ? s->bytes + s->rec.key_len : NULL;
        const char *hdrs = s->rec.hdr_len ? s->bytes + s->rec.key_len + s->rec.val_len : NULL;
        rc = fn(ud, &s->rec, key, val, hdrs);
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

int replay_ring_count(replay_ring *r) {
    pthread_mutex_lock(&r->mu);
    int n = r->n;
    pthread_mutex_unlock(&r->mu);
    return n;
}

long replay_ring_total(replay_ring *r) {
    pthread_mutex_lock(&r->mu);
    long n = r->total;
    pthread_mutex_unlock(&r->mu);
    return n;
}
