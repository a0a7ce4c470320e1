#include "window.h"
#include "ffi_api.h"
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

typedef struct entry {
    UT_hash_handle hh;
    struct entry *next;          /* in its end bucket */
    eddy_fired f;
    size_t hlen;
    char hkey[];                 /* start (8 bytes) then the key: the hash key */
} entry;

typedef struct bucket {
    int64_t end;
    entry *head;
} bucket;

struct window_op {
    int64_t size, advance, offset;
    entry *table;                /* uthash: (start, key) -> entry */
    bucket *buckets;             /* open windows by end, ascending */
    int nbuckets, capbuckets;
    int64_t wm;                  /* the highest watermark seen */
    entry **fired; int nfired, capfired;
    int64_t late_dropped, open;
    char *scratch; size_t scratch_cap;
};

window_op *window_create(int64_t size, int64_t advance, int64_t offset) {
    window_op *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->size = size;
    w->advance = advance > 0 ? advance : size;
    w->offset = offset;
    w->wm = INT64_MIN;
    return w;
}

static void free_fired(window_op *w) {
    for (int i = 0; i < w->nfired; i++) free(w->fired[i]);
    w->nfired = 0;
}

void window_destroy(window_op *w) {
    if (!w) return;
    free_fired(w);
    entry *e, *tmp;
    HASH_ITER(hh, w->table, e, tmp) {
        HASH_DEL(w->table, e);
        free(e);
    }
    free(w->fired);
    free(w->buckets);
    free(w->scratch);
    free(w);
}

static int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static bucket *bucket_for(window_op *w, int64_t end) {
    int lo = 0, hi = w->nbuckets;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (w->buckets[mid].end < end) lo = mid + 1; else hi = mid;
    }
    if (lo < w->nbuckets && w->buckets[lo].end == end) return &w->buckets[lo];
    if (w->nbuckets == w->capbuckets) {
        int nc = w->capbuckets ? w->capbuckets * 2 : 8;
        bucket *nb = realloc(w->buckets, sizeof *nb * nc);
        if (!nb) return NULL;
        w->buckets = nb;
        w->capbuckets = nc;
    }
    memmove(&w->buckets[lo + 1], &w->buckets[lo], sizeof *w->buckets * (w->nbuckets - lo));
    w->nbuckets++;
    w->buckets[lo].end = end;
    w->buckets[lo].head = NULL;
    return &w->buckets[lo];
}

int window_add(window_op *w, const char *key, size_t klen, int64_t ts, double x) {
    size_t hlen = sizeof(int64_t) + klen;
    if (hlen > w->scratch_cap) {
        char *s = realloc(w->scratch, hlen);
        if (!s) return -1;
        w->scratch = s;
        w->scratch_cap = hlen;
    }
    memcpy(w->scratch + sizeof(int64_t), key, klen);
    int64_t last = floor_div(ts - w->offset, w->advance) * w->advance + w->offset;
    int added = 0;
    for (int64_t start = last; start > ts - w->size; start -= w->advance) {
        int64_t end = start + w->size;
        if (end - 1 <= w->wm) continue;          /* this window already fired */
        memcpy(w->scratch, &start, sizeof start);
        entry *e;
        HASH_FIND(hh, w->table, w->scratch, hlen, e);
        if (!e) {
            e = calloc(1, sizeof *e + hlen);
            if (!e) return -1;
            e->hlen = hlen;
            memcpy(e->hkey, w->scratch, hlen);
            e->f.key = e->hkey + sizeof(int64_t);
            e->f.klen = klen;
            e->f.start = start;
            e->f.end = end;
            e->f.min = x;
            e->f.max = x;
            bucket *b = bucket_for(w, end);
            if (!b) { free(e); return -1; }
            e->next = b->head;
            b->head = e;
            HASH_ADD(hh, w->table, hkey, hlen, e);
            w->open++;
        }
        e->f.count += 1;
        e->f.sum += x;
        if (x < e->f.min) e->f.min = x;
        if (x > e->f.max) e->f.max = x;
        added = 1;
    }
    if (!added) { w->late_dropped++; return 1; }
    return 0;
}

static int by_key(const void *a, const void *b) {
    const entry *x = *(entry *const *)a, *y = *(entry *const *)b;
    size_t n = x->f.klen < y->f.klen ? x->f.klen : y->f.klen;
    int c = memcmp(x->f.key, y->f.key, n);
    if (c) return c;
    return x->f.klen < y->f.klen ? -1 : x->f.klen > y->f.klen;
}

int window_advance(window_op *w, int64_t wm) {
    free_fired(w);
    if (wm <= w->wm) return 0;
    w->wm = wm;
    int nb = 0;
    while (nb < w->nbuckets && w->buckets[nb].end - 1 <= wm) nb++;
    for (int b = 0; b < nb; b++) {
        int first = w->nfired;
        for (entry *e = w->buckets[b].head; e; e = e->next) {
            if (w->nfired == w->capfired) {
                int nc = w->capfired ? w->capfired * 2 : 64;
                entry **nf = realloc(w->fired, sizeof *nf * nc);
                if (!nf) return -1;
                w->fired = nf;
                w->capfired = nc;
            }
            HASH_DEL(w->table, e);
            w->open--;
            w->fired[w->nfired++] = e;
        }
        qsort(w->fired + first, w->nfired - first, sizeof *w->fired, by_key);
    }
    if (nb > 0) {
        memmove(w->buckets, w->buckets + nb, sizeof *w->buckets * (w->nbuckets - nb));
        w->nbuckets -= nb;
    }
    return w->nfired;
}

const eddy_fired *window_fired(const window_op *w, int i) {
    return i >= 0 && i < w->nfired ? &w->fired[i]->f : NULL;
}

int64_t window_late_dropped(const window_op *w) { return w->late_dropped; }
int64_t window_open_count(const window_op *w) { return w->open; }
