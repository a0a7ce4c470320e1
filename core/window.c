#include "window.h"
#include "ffi_api.h"
#include <stdlib.h>
#include <string.h>
#include <uthash.h>
#include <stdatomic.h>

typedef struct entry {
    UT_hash_handle hh;
    struct entry *next;          /* in its end bucket, or in the graveyard */
    eddy_fired f;
    int fired;                   /* the watermark passed its end (the on-time event happened) */
    int dirty;                   /* changed since it last fired */
    int purge;                   /* empty it once the firing queued now has been read */
    int64_t mark;                /* a processing time the runtime keeps with it (triggers) */
    char *state; size_t state_cap;   /* Lua window functions: f.state / f.state_len */
    size_t hlen;
    char hkey[];                 /* start (8 bytes) then the key: the hash key */
} entry;

/* Sessions: the open sessions of one key. */
typedef struct keyset {
    UT_hash_handle hh;
    struct entry **e;
    int n, cap;
    size_t klen;
    char key[];
} keyset;

typedef struct bucket {
    int64_t end;
    entry *head;
} bucket;

struct window_op {
    int64_t size, advance, offset, lateness;
    int64_t gap;                 /* > 0: session windows */
    int keep_unfired;            /* window_keep_unfired */
    _Atomic int64_t next_end;    /* window_next_end, kept by the owner for readers on other threads */
    keyset *keys;                /* sessions: key -> its sessions */
    entry *table;                /* uthash: (start, key) -> entry */
    bucket *buckets;             /* open windows by end, ascending */
    int nbuckets, capbuckets;
    int64_t wm;                  /* the highest watermark seen */
    eddy_fired *fired; int nfired, capfired;   /* copies; keys point into entries */
    entry *graveyard;            /* freed windows, kept until their firings were read */
    entry **purging; int npurging, cappurging;   /* windows to empty once their firing was read */
    int64_t late_dropped, open;
    char *scratch; size_t scratch_cap;
};

window_op *window_create(int64_t size, int64_t advance, int64_t offset, int64_t lateness) {
    window_op *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->size = size;
    w->advance = advance > 0 ? advance : size;
    w->offset = offset;
    w->lateness = lateness > 0 ? lateness : 0;
    w->wm = INT64_MIN;
    atomic_store(&w->next_end, INT64_MAX);
    return w;
}

static void empty(entry *e) {
    e->f.count = e->f.sum = 0;
    e->f.min = e->f.max = 0;
    e->f.state_len = 0;
    e->dirty = 0;
    e->purge = 0;
}

static void bury(window_op *w) {
    for (int i = 0; i < w->npurging; i++) empty(w->purging[i]);
    w->npurging = 0;
    while (w->graveyard) {
        entry *e = w->graveyard;
        w->graveyard = e->next;
        free(e->state);
        free(e);
    }
    w->nfired = 0;
}

window_op *window_create_sessions(int64_t gap, int64_t lateness) {
    window_op *w = window_create(gap, gap, 0, lateness);
    if (w) w->gap = gap;
    return w;
}

static keyset *keyset_of(window_op *w, const char *key, size_t klen, int create) {
    keyset *k;
    HASH_FIND(hh, w->keys, key, klen, k);
    if (k || !create) return k;
    k = calloc(1, sizeof *k + klen);
    if (!k) return NULL;
    k->klen = klen;
    memcpy(k->key, key, klen);
    HASH_ADD_KEYPTR(hh, w->keys, k->key, klen, k);
    return k;
}

/* Removes e from its key's session list (sessions only). */
static void keyset_remove(window_op *w, struct entry *e);

void window_destroy(window_op *w) {
    if (!w) return;
    bury(w);
    keyset *k, *ktmp;
    HASH_ITER(hh, w->keys, k, ktmp) {
        HASH_DEL(w->keys, k);
        free(k->e);
        free(k);
    }
    entry *e, *tmp;
    HASH_ITER(hh, w->table, e, tmp) {
        HASH_DEL(w->table, e);
        free(e->state);
        free(e);
    }
    free(w->fired);
    free(w->purging);
    free(w->buckets);
    free(w->scratch);
    free(w);
}

static int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* end - 1 + lateness <= wm, without overflow near the ends of int64 */
static int expired(const window_op *w, int64_t end, int64_t wm) {
    return wm != INT64_MIN && end - 1 <= wm - w->lateness;
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

static void keyset_remove(window_op *w, entry *e) {
    if (!w->gap) return;
    keyset *k = keyset_of(w, e->f.key, e->f.klen, 0);
    if (!k) return;
    for (int i = 0; i < k->n; i++)
        if (k->e[i] == e) { k->e[i] = k->e[--k->n]; break; }
    if (k->n == 0) {
        HASH_DEL(w->keys, k);
        free(k->e);
        free(k);
    }
}

/* Unlinks e from the bucket of its end. */
static void bucket_unlink(window_op *w, entry *e) {
    for (int b = 0; b < w->nbuckets; b++) {
        if (w->buckets[b].end != e->f.end) continue;
        for (entry **pp = &w->buckets[b].head; *pp; pp = &(*pp)->next)
            if (*pp == e) { *pp = e->next; return; }
    }
}

static int push_fired(window_op *w, entry *e) {
    e->dirty = 0;
    if (w->nfired == w->capfired) {
        int nc = w->capfired ? w->capfired * 2 : 64;
        eddy_fired *nf = realloc(w->fired, sizeof *nf * nc);
        if (!nf) return -1;
        w->fired = nf;
        w->capfired = nc;
    }
    w->fired[w->nfired++] = e->f;
    return 0;
}

/* The window (key, start): found, or created when create is set.  NULL when
 * absent (or on allocation failure). */
static entry *lookup(window_op *w, const char *key, size_t klen, int64_t start, int create, double x) {
    size_t hlen = sizeof(int64_t) + klen;
    if (hlen > w->scratch_cap) {
        char *s = realloc(w->scratch, hlen);
        if (!s) return NULL;
        w->scratch = s;
        w->scratch_cap = hlen;
    }
    memcpy(w->scratch, &start, sizeof start);
    memcpy(w->scratch + sizeof(int64_t), key, klen);
    entry *e;
    HASH_FIND(hh, w->table, w->scratch, hlen, e);
    if (e || !create) return e;
    int64_t end = start + w->size;
    e = calloc(1, sizeof *e + hlen);
    if (!e) return NULL;
    e->hlen = hlen;
    memcpy(e->hkey, w->scratch, hlen);
    e->f.key = e->hkey + sizeof(int64_t);
    e->f.klen = klen;
    e->f.start = start;
    e->f.end = end;
    e->f.min = x;
    e->f.max = x;
    /* a window created after the watermark passed its end fires late at once */
    e->fired = w->wm != INT64_MIN && end - 1 <= w->wm;
    bucket *b = bucket_for(w, end);
    if (!b) { free(e); return NULL; }
    e->next = b->head;
    b->head = e;
    HASH_ADD(hh, w->table, hkey, hlen, e);
    w->open++;
    if (!e->fired && end < atomic_load(&w->next_end)) atomic_store(&w->next_end, end);
    if (w->gap) {
        keyset *k = keyset_of(w, key, klen, 1);
        if (!k) return NULL;
        if (k->n == k->cap) {
            int nc = k->cap ? k->cap * 2 : 4;
            entry **ne = realloc(k->e, sizeof *ne * nc);
            if (!ne) return NULL;
            k->e = ne;
            k->cap = nc;
        }
        k->e[k->n++] = e;
    }
    return e;
}

int window_assign(const window_op *w, int64_t ts, int64_t *starts, int max) {
    int n = 0;
    int64_t last = floor_div(ts - w->offset, w->advance) * w->advance + w->offset;
    for (int64_t start = last; start > ts - w->size && n < max; start -= w->advance)
        if (!expired(w, start + w->size, w->wm)) starts[n++] = start;
    return n;
}

const char *window_state(window_op *w, const char *key, size_t klen, int64_t start, size_t *len) {
    entry *e = lookup(w, key, klen, start, 0, 0);
    *len = e ? e->f.state_len : 0;
    return e ? e->f.state : NULL;
}

int window_store(window_op *w, const char *key, size_t klen, int64_t start, const char *p, size_t n, int mode,
                 double *count) {
    bury(w);
    entry *e = lookup(w, key, klen, start, 1, 0);
    if (!e) return -1;
    size_t need = (mode == WINDOW_APPEND ? e->f.state_len : 0) + n;
    if (need > e->state_cap) {
        size_t cap = e->state_cap ? e->state_cap * 2 : 64;
        while (cap < need) cap *= 2;
        char *s = realloc(e->state, cap);
        if (!s) return -1;
        e->state = s;
        e->state_cap = cap;
    }
    if (mode == WINDOW_APPEND) memcpy(e->state + e->f.state_len, p, n);
    else memcpy(e->state, p, n);
    e->f.state = e->state;
    e->f.state_len = need;
    e->f.count += 1;
    e->dirty = 1;
    if (count) *count = e->f.count;
    if (!e->fired) return 0;
    return push_fired(w, e) < 0 ? -1 : 1;
}

static int session_add(window_op *w, const char *key, size_t klen, int64_t ts, double x);

int window_add(window_op *w, const char *key, size_t klen, int64_t ts, double x) {
    bury(w);
    if (w->gap) return session_add(w, key, klen, ts, x);
    int64_t last = floor_div(ts - w->offset, w->advance) * w->advance + w->offset;
    int added = 0;
    for (int64_t start = last; start > ts - w->size; start -= w->advance) {
        int64_t end = start + w->size;
        if (expired(w, end, w->wm)) continue;      /* past its lateness: this window is gone */
        entry *e = lookup(w, key, klen, start, 1, x);
        if (!e) return -1;
        e->f.count += 1;
        e->f.sum += x;
        if (x < e->f.min) e->f.min = x;
        if (x > e->f.max) e->f.max = x;
        e->dirty = 1;
        if (e->fired && push_fired(w, e) < 0) return -1;
        added = 1;
    }
    if (!added) return WINDOW_TOO_LATE;
    return w->nfired;
}

static int by_key(const void *a, const void *b) {
    const eddy_fired *x = a, *y = b;
    size_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(x->key, y->key, n);
    if (c) return c;
    return x->klen < y->klen ? -1 : x->klen > y->klen;
}

int window_advance(window_op *w, int64_t wm) {
    bury(w);
    if (wm <= w->wm) return 0;
    w->wm = wm;
    int nb = 0;
    for (int b = 0; b < w->nbuckets && w->buckets[b].end - 1 <= wm; b++) {
        int first = w->nfired;
        for (entry *e = w->buckets[b].head; e; e = e->next) {
            if (e->fired) continue;
            e->fired = 1;
            if (push_fired(w, e) < 0) return -1;
        }
        if (w->nfired > first) qsort(w->fired + first, w->nfired - first, sizeof *w->fired, by_key);
        if (expired(w, w->buckets[b].end, wm)) {
            /* can no longer change: free it once its firing has been read
             * (unless a processing-time trigger has yet to fire its changes) */
            entry **pp = &w->buckets[b].head;
            while (*pp) {
                entry *e = *pp;
                if (w->keep_unfired && e->dirty) { pp = &e->next; continue; }
                *pp = e->next;
                HASH_DEL(w->table, e);
                keyset_remove(w, e);
                w->open--;
                e->next = w->graveyard;
                w->graveyard = e;
            }
            if (!w->buckets[b].head && nb == b) nb = b + 1;   /* empty buckets at the front go */
        }
    }
    if (nb > 0) {
        memmove(w->buckets, w->buckets + nb, sizeof *w->buckets * (w->nbuckets - nb));
        w->nbuckets -= nb;
    }
    int64_t next = INT64_MAX;
    for (int b = 0; b < w->nbuckets && next == INT64_MAX; b++)
        for (entry *e = w->buckets[b].head; e; e = e->next)
            if (!e->fired) { next = w->buckets[b].end; break; }
    atomic_store(&w->next_end, next);
    return w->nfired;
}

const eddy_fired *window_fired(const window_op *w, int i) {
    return i >= 0 && i < w->nfired ? &w->fired[i] : NULL;
}

void window_count_dropped(window_op *w) { w->late_dropped++; }
int64_t window_late_dropped(const window_op *w) { return w->late_dropped; }
int64_t window_open_count(const window_op *w) { return w->open; }

/* Any thread: the value the owner last stored (window state itself is the
 * owner's alone). */
int64_t window_next_end(const window_op *w) { return atomic_load(&((window_op *)w)->next_end); }

/* ---- session windows ------------------------------------------------------ */

int window_session_find(window_op *w, const char *key, size_t klen, int64_t ts, int64_t *starts, int max,
                        int64_t *mstart, int64_t *mend) {
    int64_t lo = ts, hi = ts + w->gap;
    int n = 0;
    keyset *k = keyset_of(w, key, klen, 0);
    /* sessions overlapping [ts, ts + gap) join; the merged range can reach
     * further sessions, so repeat until nothing more joins */
    for (int changed = 1; changed && k;) {
        changed = 0;
        for (int i = 0; i < k->n; i++) {
            entry *e = k->e[i];
            int in = 0;
            for (int j = 0; j < n; j++) if (starts[j] == e->f.start) in = 1;
            if (in || e->f.start >= hi || e->f.end <= lo) continue;
            if (n == max) return -1;
            starts[n++] = e->f.start;
            if (e->f.start < lo) lo = e->f.start;
            if (e->f.end > hi) hi = e->f.end;
            changed = 1;
        }
    }
    *mstart = lo;
    *mend = hi;
    if (n == 0 && expired(w, hi, w->wm)) return WINDOW_TOO_LATE;
    return n;
}

/* Takes the session (key, start) out of the operator; *out owns it (NULL when absent). */
static void session_drop(window_op *w, const char *key, size_t klen, int64_t start, entry **out) {
    entry *e = lookup(w, key, klen, start, 0, 0);
    *out = e;
    if (!e) return;
    HASH_DEL(w->table, e);
    keyset_remove(w, e);
    bucket_unlink(w, e);
    w->open--;
}

/* A window [start, end) of any length (lookup makes windows of w->size). */
static entry *create_range(window_op *w, const char *key, size_t klen, int64_t start, int64_t end, double x) {
    int64_t size = w->size;
    w->size = end - start;
    entry *e = lookup(w, key, klen, start, 1, x);
    w->size = size;
    return e;
}

int window_session_put(window_op *w, const char *key, size_t klen, const int64_t *starts, int n,
                       int64_t mstart, int64_t mend, const char *p, size_t plen) {
    bury(w);
    double count = 0;
    for (int i = 0; i < n; i++) {
        entry *old = NULL;
        session_drop(w, key, klen, starts[i], &old);
        if (old) { count += old->f.count; free(old->state); free(old); }
    }
    /* the merged session is a new window: it fires late at once only if the
     * watermark has passed its end (within lateness); otherwise on time at
     * its end, replacing what its parts fired before */
    entry *e = create_range(w, key, klen, mstart, mend, 0);
    if (!e) return -1;
    e->f.count = count;
    if (plen > e->state_cap) {
        char *st = realloc(e->state, plen);
        if (!st) return -1;
        e->state = st;
        e->state_cap = plen;
    }
    memcpy(e->state, p, plen);
    e->f.state = e->state;
    e->f.state_len = plen;
    e->f.count += 1;
    e->dirty = 1;
    if (!e->fired) return 0;
    return push_fired(w, e) < 0 ? -1 : 1;
}

/* C aggregates: find, combine in C, put. */
static int session_add(window_op *w, const char *key, size_t klen, int64_t ts, double x) {
    int64_t starts[64], lo, hi;
    int n = window_session_find(w, key, klen, ts, starts, 64, &lo, &hi);
    if (n == WINDOW_TOO_LATE) return WINDOW_TOO_LATE;
    if (n < 0) return -1;
    double count = 1, sum = x, mn = x, mx = x;
    for (int i = 0; i < n; i++) {
        entry *old = NULL;
        session_drop(w, key, klen, starts[i], &old);
        if (!old) continue;
        count += old->f.count;
        sum += old->f.sum;
        if (old->f.min < mn) mn = old->f.min;
        if (old->f.max > mx) mx = old->f.max;
        free(old->state);
        free(old);
    }
    entry *e = create_range(w, key, klen, lo, hi, x);
    if (!e) return -1;
    e->f.count = count;
    e->f.sum = sum;
    e->f.min = mn;
    e->f.max = mx;
    e->dirty = 1;
    if (!e->fired) return 0;
    return push_fired(w, e) < 0 ? -1 : 1;
}

/* ---- triggers ------------------------------------------------------------- */

int window_add_at(window_op *w, const char *key, size_t klen, int64_t start, double x, double *count) {
    bury(w);
    entry *e = lookup(w, key, klen, start, 1, x);
    if (!e) return -1;
    if (e->f.count == 0) { e->f.min = x; e->f.max = x; }   /* new, or emptied by a purge */
    e->f.count += 1;
    e->f.sum += x;
    if (x < e->f.min) e->f.min = x;
    if (x > e->f.max) e->f.max = x;
    e->dirty = 1;
    *count = e->f.count;
    return e->fired;
}

int window_fire(window_op *w, const char *key, size_t klen, int64_t start, int purge) {
    bury(w);
    entry *e = lookup(w, key, klen, start, 0, 0);
    if (!e) return 0;
    if (push_fired(w, e) < 0) return -1;
    if (purge) {
        if (w->npurging == w->cappurging) {
            int nc = w->cappurging ? w->cappurging * 2 : 16;
            entry **np = realloc(w->purging, sizeof *np * nc);
            if (!np) return -1;
            w->purging = np;
            w->cappurging = nc;
        }
        w->purging[w->npurging++] = e;
    }
    return 1;
}

int window_list(window_op *w, eddy_window_info *info, int max) {
    int n = 0;
    for (entry *e = w->table; e && n < max; e = e->hh.next) {
        eddy_window_info *i = &info[n++];
        i->key = e->f.key;
        i->klen = e->f.klen;
        i->start = e->f.start;
        i->end = e->f.end;
        i->mark = e->mark;
        i->count = e->f.count;
        i->dirty = e->dirty;
        i->due = e->fired;
    }
    return n;
}

void window_keep_unfired(window_op *w, int keep) { w->keep_unfired = keep; }

void window_mark(window_op *w, const char *key, size_t klen, int64_t start, int64_t mark) {
    entry *e = lookup(w, key, klen, start, 0, 0);
    if (e) e->mark = mark;
}
