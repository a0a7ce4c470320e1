#include "window.h"
#include "ffi_api.h"
#include "keygroup.h"
#include "state.h"
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* A window as stored: the value header (state.h), then these fields, then
 * the state bytes of Lua window functions. */
enum { V_FIRED = 1, V_DIRTY = 2 };
#define VHDR 1
#define VFIX (1 + 8 + 4 * 8)          /* flags, mark, count sum min max */
#define FIRE_CHUNK 1024               /* windows window_advance fires (about) at most per call */
#define COMMIT_AT 65536               /* writes a long firing lets pile up in the batch */

typedef struct win {
    int64_t start, end;
    int fired;                   /* the watermark passed its end (the on-time event happened) */
    int dirty;                   /* changed since it last fired */
    int64_t mark;                /* a processing time the runtime keeps with it (triggers) */
    double count, sum, min, max;
    const char *state; size_t state_len;   /* borrowed from the op's read buffer */
} win;

/* Per owned key group: what the store holds there, so that a watermark that
 * reaches no window costs no read. */
typedef struct kgstate {
    uint32_t kg;
    int64_t next_fire;           /* earliest end of a window that has not fired, or INT64_MAX */
    int64_t first_end;           /* earliest end of any window kept, or INT64_MAX */
} kgstate;

struct window_op {
    int64_t size, advance, offset, lateness;
    int64_t gap;                 /* > 0: session windows */
    int keep_unfired;            /* window_keep_unfired */
    _Atomic int64_t next_end;    /* window_next_end, kept by the owner for readers on other threads */
    _Atomic int64_t open;        /* windows in the store */
    int64_t late_dropped;
    int64_t wm;                  /* the highest watermark seen */
    int pending;                 /* windows the watermark passed are still to be fired (window_advance) */
    int64_t c_end;               /* the end being fired (INT64_MIN: none), */
    int c_kgi;                   /*   the key group, */
    state_key c_after;           /*   and the last window done there (len 0: none) */
    int c_kept;                  /* a window at c_end in that key group stays */
    int revisit;                 /* expired windows were kept for the trigger: find them at the next watermark */
    state_tx *tx;
    char *uid; size_t uidlen;
    int maxp;
    kgstate *kgs; int nkgs;
    int32_t *kg_index;           /* [maxp]: index into kgs, or -1 */
    state_key k, k2;             /* reused keys */
    char *rbuf; size_t rcap;     /* the last window read (its state bytes) */
    char *vbuf; size_t vcap;     /* a value being written */
    eddy_fired *fired; int nfired, capfired;   /* copies; each key+state is one malloc in fmem */
    char **fmem;
    char **lmem; int nlmem;      /* window_list's copies of keys */
};

static int64_t sat_add(int64_t a, int64_t b) {
    if (b > 0 && a > INT64_MAX - b) return INT64_MAX;
    if (b < 0 && a < INT64_MIN - b) return INT64_MIN;
    return a + b;
}

/* end - 1 + lateness <= wm, without overflow near the ends of int64 */
static int expired(const window_op *w, int64_t end, int64_t wm) {
    return wm != INT64_MIN && end - 1 <= sat_add(wm, -w->lateness);
}

static int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static int grow(char **p, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap : 256;
    while (nc < need) nc *= 2;
    char *np = realloc(*p, nc);
    if (!np) return -1;
    *p = np;
    *cap = nc;
    return 0;
}

/* ---- reading and writing one window ------------------------------------- */

static void decode(window_op *w, const char *v, size_t vl, win *x) {
    size_t plen;
    const char *p = state_value_payload(v, vl, 0, &plen);
    memset(x, 0, sizeof *x);
    if (!p || plen < VFIX) return;
    x->fired = (p[0] & V_FIRED) != 0;
    x->dirty = (p[0] & V_DIRTY) != 0;
    memcpy(&x->mark, p + 1, 8);
    memcpy(&x->count, p + 9, 8);
    memcpy(&x->sum, p + 17, 8);
    memcpy(&x->min, p + 25, 8);
    memcpy(&x->max, p + 33, 8);
    size_t n = plen - VFIX;
    if (n && grow(&w->rbuf, &w->rcap, n) == 0) {
        memcpy(w->rbuf, p + VFIX, n);
        x->state = w->rbuf;
        x->state_len = n;
    }
}

/* The window (key, start) ending at end: 1 when it is stored (x filled), 0 when not. */
static int load(window_op *w, uint32_t kg, const char *key, size_t klen, int64_t start, int64_t end, win *x) {
    if (state_key_window(&w->k, w->uid, kg, end, key, klen, start) < 0) return 0;
    size_t vl;
    const char *v = state_tx_get(w->tx, w->k.p, w->k.len, &vl);
    if (!v) return 0;
    int64_t s = start, e = end;
    decode(w, v, vl, x);
    x->start = s;
    x->end = e;
    return 1;
}

/* Writes x with state (st, n).  0 or -1. */
static int store(window_op *w, uint32_t kg, const char *key, size_t klen, const win *x, const char *st, size_t n) {
    if (state_key_window(&w->k, w->uid, kg, x->end, key, klen, x->start) < 0) return -1;
    if (grow(&w->vbuf, &w->vcap, VHDR + VFIX + n) < 0) return -1;
    char *v = w->vbuf;
    size_t h = state_value_header(v, 0);
    v[h] = (char)((x->fired ? V_FIRED : 0) | (x->dirty ? V_DIRTY : 0));
    memcpy(v + h + 1, &x->mark, 8);
    memcpy(v + h + 9, &x->count, 8);
    memcpy(v + h + 17, &x->sum, 8);
    memcpy(v + h + 25, &x->min, 8);
    memcpy(v + h + 33, &x->max, 8);
    if (n) memmove(v + h + VFIX, st, n);    /* st may be the read buffer, never vbuf */
    return state_tx_put(w->tx, w->k.p, w->k.len, v, h + VFIX + n);
}

/* The key group's bookkeeping; one this task was not given (a key that is
 * not the one records were shuffled by) is added, so its windows fire too. */
static kgstate *kgstate_of(window_op *w, uint32_t kg) {
    if ((int)kg >= w->maxp) return NULL;
    if (w->kg_index[kg] >= 0) return &w->kgs[w->kg_index[kg]];
    kgstate *nk = realloc(w->kgs, sizeof *nk * (w->nkgs + 1));
    if (!nk) return NULL;
    w->kgs = nk;
    w->kgs[w->nkgs] = (kgstate){ .kg = kg, .next_fire = INT64_MAX, .first_end = INT64_MAX };
    w->kg_index[kg] = w->nkgs;
    return &w->kgs[w->nkgs++];
}

/* Sessions: key -> its sessions, as uid 0x00 kg keylen key 'w' start -> end. */
static int session_index_key(window_op *w, uint32_t kg, const char *key, size_t klen, int64_t start) {
    char s[8];
    uint64_t b = (uint64_t)start ^ (1ULL << 63);
    for (int i = 0; i < 8; i++) s[i] = (char)(b >> (8 * (7 - i)));
    return state_key_state(&w->k2, w->uid, kg, key, klen, 'w', s, 8, NULL, 0);
}

/* A window came into the store. */
static void created(window_op *w, uint32_t kg, const win *x) {
    atomic_fetch_add(&w->open, 1);
    kgstate *g = kgstate_of(w, kg);
    if (!g) return;
    if (x->end < g->first_end) g->first_end = x->end;
    if (!x->fired && x->end < g->next_fire) g->next_fire = x->end;
    if (!x->fired && x->end < atomic_load(&w->next_end)) atomic_store(&w->next_end, x->end);
}

static int put_new(window_op *w, uint32_t kg, const char *key, size_t klen, win *x, const char *st, size_t n) {
    if (store(w, kg, key, klen, x, st, n) < 0) return -1;
    if (w->gap) {
        char e[VHDR + 8];
        size_t h = state_value_header(e, 0);
        memcpy(e + h, &x->end, 8);
        if (session_index_key(w, kg, key, klen, x->start) < 0) return -1;
        state_tx_put(w->tx, w->k2.p, w->k2.len, e, h + 8);
    }
    created(w, kg, x);
    return 0;
}

static void delete_window(window_op *w, uint32_t kg, const char *key, size_t klen, int64_t start, int64_t end) {
    if (state_key_window(&w->k, w->uid, kg, end, key, klen, start) == 0) state_tx_delete(w->tx, w->k.p, w->k.len);
    if (w->gap && session_index_key(w, kg, key, klen, start) == 0) state_tx_delete(w->tx, w->k2.p, w->k2.len);
    atomic_fetch_sub(&w->open, 1);
}

/* ---- firings -------------------------------------------------------------- */

/* Forgets the firings read since the last change. */
static void bury(window_op *w) {
    for (int i = 0; i < w->nfired; i++) free(w->fmem[i]);
    w->nfired = 0;
}

static int push_fired(window_op *w, const char *key, size_t klen, const win *x) {
    if (w->nfired == w->capfired) {
        int nc = w->capfired ? w->capfired * 2 : 64;
        eddy_fired *nf = realloc(w->fired, sizeof *nf * nc);
        char **nm = realloc(w->fmem, sizeof *nm * nc);
        if (nf) w->fired = nf;
        if (nm) w->fmem = nm;
        if (!nf || !nm) return -1;
        w->capfired = nc;
    }
    char *m = malloc(klen + x->state_len + 1);
    if (!m) return -1;
    memcpy(m, key, klen);
    if (x->state_len) memcpy(m + klen, x->state, x->state_len);
    eddy_fired *f = &w->fired[w->nfired];
    w->fmem[w->nfired++] = m;
    f->key = m;
    f->klen = klen;
    f->start = x->start;
    f->end = x->end;
    f->count = x->count;
    f->sum = x->sum;
    f->min = x->min;
    f->max = x->max;
    f->state = x->state_len ? m + klen : NULL;
    f->state_len = x->state_len;
    return 0;
}

const eddy_fired *window_fired(const window_op *w, int i) {
    return i >= 0 && i < w->nfired ? &w->fired[i] : NULL;
}

/* ---- the operator --------------------------------------------------------- */

/* A window's key, decoded (key borrowed). */
typedef struct wkey { uint32_t kg; int64_t end, start; const char *key; size_t klen; } wkey;

static int parse_wkey(const char *k, size_t kl, size_t uidlen, wkey *wk) {
    return state_key_window_parse(k, kl, uidlen, &wk->kg, &wk->end, &wk->key, &wk->klen, &wk->start);
}

typedef struct scan {
    window_op *w;
    kgstate *g;
    int64_t count;
} scan;

static int init_cb(void *ud, const char *k, size_t kl, const char *v, size_t vl) {
    scan *s = ud;
    wkey wk;
    if (parse_wkey(k, kl, s->w->uidlen, &wk) < 0) return 0;
    win x;
    decode(s->w, v, vl, &x);
    s->count++;
    if (wk.end < s->g->first_end) s->g->first_end = wk.end;
    if (!x.fired && wk.end < s->g->next_fire) s->g->next_fire = wk.end;
    return 0;
}

/* The key range of key group kg's windows: [from, to). */
static void kg_range(window_op *w, uint32_t kg, int64_t end_from, state_key *from, state_key *to) {
    state_key_window(from, w->uid, kg, end_from, NULL, 0, 0);
    state_key_window(to, w->uid, kg + 1, INT64_MIN, NULL, 0, 0);
}

static window_op *create(state_tx *tx, const char *uid, const uint32_t *kgs, int nkgs, int maxp) {
    window_op *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->tx = tx;
    w->uid = strdup(uid);
    w->uidlen = strlen(uid);
    w->maxp = maxp;
    w->kgs = calloc(nkgs ? nkgs : 1, sizeof *w->kgs);
    w->kg_index = malloc(sizeof *w->kg_index * (maxp ? maxp : 1));
    if (!w->uid || !w->kgs || !w->kg_index) { window_destroy(w); return NULL; }
    for (int i = 0; i < maxp; i++) w->kg_index[i] = -1;
    w->nkgs = nkgs;
    w->wm = INT64_MIN;
    w->c_end = INT64_MIN;
    atomic_store(&w->next_end, INT64_MAX);
    /* what an earlier run left: counted, and where each key group's windows
     * start (committed data only: this may run off the task's thread) */
    state_key from = {0}, to = {0};
    int64_t next = INT64_MAX, open = 0;
    for (int i = 0; i < nkgs; i++) {
        w->kgs[i] = (kgstate){ .kg = kgs[i], .next_fire = INT64_MAX, .first_end = INT64_MAX };
        if ((int)kgs[i] < maxp) w->kg_index[kgs[i]] = i;
        scan s = { .w = w, .g = &w->kgs[i] };
        kg_range(w, kgs[i], INT64_MIN, &from, &to);
        state_range(state_tx_db(tx), from.p, from.len, to.p, to.len, init_cb, &s);
        open += s.count;
        if (w->kgs[i].next_fire < next) next = w->kgs[i].next_fire;
    }
    state_key_free(&from);
    state_key_free(&to);
    atomic_store(&w->open, open);
    atomic_store(&w->next_end, next);
    return w;
}

window_op *window_create(state_tx *tx, const char *uid, const uint32_t *kgs, int nkgs, int maxp, int64_t size,
                         int64_t advance, int64_t offset, int64_t lateness) {
    window_op *w = create(tx, uid, kgs, nkgs, maxp);
    if (!w) return NULL;
    w->size = size;
    w->advance = advance > 0 ? advance : size;
    w->offset = offset;
    w->lateness = lateness > 0 ? lateness : 0;
    return w;
}

window_op *window_create_sessions(state_tx *tx, const char *uid, const uint32_t *kgs, int nkgs, int maxp, int64_t gap,
                                  int64_t lateness) {
    window_op *w = window_create(tx, uid, kgs, nkgs, maxp, gap, gap, 0, lateness);
    if (w) w->gap = gap;
    return w;
}

static void list_free(window_op *w) {
    for (int i = 0; i < w->nlmem; i++) free(w->lmem[i]);
    free(w->lmem);
    w->lmem = NULL;
    w->nlmem = 0;
}

void window_destroy(window_op *w) {
    if (!w) return;
    bury(w);
    list_free(w);
    free(w->fired);
    free(w->fmem);
    free(w->kgs);
    free(w->kg_index);
    free(w->rbuf);
    free(w->vbuf);
    state_key_free(&w->k);
    state_key_free(&w->k2);
    state_key_free(&w->c_after);
    free(w->uid);
    free(w);
}

typedef struct collected {
    char *key; size_t klen;      /* key, then the stored value, in one allocation */
    const char *v; size_t vl;
    uint32_t kg;
    int64_t start, end;
} collected;

typedef struct collector {
    window_op *w;
    collected *c; int n, cap;
    int max;                     /* stop after this many (0: no limit) */
    int failed;
} collector;

static int collect_cb(void *ud, const char *k, size_t kl, const char *v, size_t vl) {
    collector *c = ud;
    if (c->max && c->n == c->max) return 1;
    collected x;
    const char *key;
    if (state_key_window_parse(k, kl, c->w->uidlen, &x.kg, &x.end, &key, &x.klen, &x.start) < 0) return 0;
    if (c->n == c->cap) {
        int nc = c->cap ? c->cap * 2 : 64;
        collected *np = realloc(c->c, sizeof *np * nc);
        if (!np) { c->failed = 1; return 1; }
        c->c = np;
        c->cap = nc;
    }
    x.key = malloc(x.klen + vl + 1);
    if (!x.key) { c->failed = 1; return 1; }
    memcpy(x.key, key, x.klen);
    memcpy(x.key + x.klen, v, vl);
    x.v = x.key + x.klen;
    x.vl = vl;
    c->c[c->n++] = x;
    return 0;
}

static void collector_free(collector *c) {
    for (int i = 0; i < c->n; i++) free(c->c[i].key);
    free(c->c);
}

static int first_cb(void *ud, const char *k, size_t kl, const char *v, size_t vl) {
    (void)v; (void)vl;
    scan *s = ud;
    wkey wk;
    if (parse_wkey(k, kl, s->w->uidlen, &wk) < 0) return 0;
    s->g->first_end = wk.end;
    return 1;
}

/* The first window end in key group g after `after`, or INT64_MAX. */
static int64_t end_after(window_op *w, kgstate *g, int64_t after, state_key *from, state_key *to) {
    kgstate first = { .first_end = INT64_MAX };
    scan s = { .w = w, .g = &first };
    kg_range(w, g->kg, sat_add(after, 1), from, to);
    state_tx_range(w->tx, from->p, from->len, to->p, to->len, first_cb, &s);
    return first.first_end;
}

/* The earliest end with work for a watermark: an unfired window it passed,
 * or a window past its lateness.  INT64_MAX when there is none. */
static int64_t next_due(window_op *w) {
    int64_t e = INT64_MAX;
    for (int i = 0; i < w->nkgs; i++) {
        kgstate *g = &w->kgs[i];
        if (g->next_fire != INT64_MAX && g->next_fire - 1 <= w->wm && g->next_fire < e) e = g->next_fire;
        if (g->first_end != INT64_MAX && expired(w, g->first_end, w->wm) && g->first_end < e) e = g->first_end;
    }
    return e;
}

/* Windows are fired end by end (the earliest first), at one end key group
 * by key group in key order, at most FIRE_CHUNK a call: a watermark that
 * passes millions of windows takes several calls (the cursor keeps the
 * place), never memory for all of them. */
int window_advance(window_op *w, int64_t wm) {
    bury(w);
    if (w->pending && wm <= w->wm && state_tx_count(w->tx) > COMMIT_AT) {
        /* the firings of the previous calls went downstream: their deletes
         * are committed rather than held in the batch (a watermark that
         * passes millions of windows would hold them all) */
        char err[512];
        if (state_tx_commit(w->tx, err, sizeof err) < 0) return -1;
    }
    if (wm > w->wm) {
        w->wm = wm;
        w->pending = 1;
        if (w->revisit) {
            /* kept windows were skipped past (keep_unfired): find them again */
            state_key from = {0}, to = {0};
            for (int i = 0; i < w->nkgs; i++) w->kgs[i].first_end = end_after(w, &w->kgs[i], INT64_MIN, &from, &to);
            state_key_free(&from);
            state_key_free(&to);
            w->revisit = 0;
        }
    }
    if (!w->pending) return 0;
    state_key from = {0}, to = {0};
    int rc = 0;
    while (w->nfired < FIRE_CHUNK && rc == 0) {
        if (w->c_end == INT64_MIN) {
            w->c_end = next_due(w);
            if (w->c_end == INT64_MAX) { w->c_end = INT64_MIN; w->pending = 0; break; }
            w->c_kgi = 0;
            w->c_after.len = 0;
            w->c_kept = 0;
        }
        int64_t E = w->c_end;
        for (; w->c_kgi < w->nkgs && w->nfired < FIRE_CHUNK && rc == 0;
             w->c_kgi++, w->c_after.len = 0, w->c_kept = 0) {
            kgstate *g = &w->kgs[w->c_kgi];
            int fire = g->next_fire == E && E - 1 <= wm;
            int drop = g->first_end == E && expired(w, E, wm);
            if (!fire && !drop) continue;
            collector c = { .w = w, .max = FIRE_CHUNK };
            if (w->c_after.len) {             /* after the last window of the previous call */
                state_key_free(&from);
                from.p = malloc(w->c_after.len + 1);
                if (!from.p) { rc = -1; break; }
                memcpy(from.p, w->c_after.p, w->c_after.len);
                from.p[w->c_after.len] = 0;
                from.len = from.cap = w->c_after.len + 1;
            } else {
                state_key_window(&from, w->uid, g->kg, E, NULL, 0, 0);
            }
            state_key_window(&to, w->uid, g->kg, sat_add(E, 1), NULL, 0, 0);
            state_tx_range(w->tx, from.p, from.len, to.p, to.len, collect_cb, &c);
            if (c.failed) rc = -1;
            for (int j = 0; j < c.n && rc == 0; j++) {
                collected *e = &c.c[j];
                win x;
                decode(w, e->v, e->vl, &x);
                x.start = e->start;
                x.end = e->end;
                int changed = 0;
                if (!x.fired) {
                    x.fired = 1;
                    /* a processing-time trigger fires the changes itself: they stay marked */
                    if (!w->keep_unfired) x.dirty = 0;
                    changed = 1;
                    if (push_fired(w, e->key, e->klen, &x) < 0) { rc = -1; break; }
                }
                if (expired(w, x.end, wm) && !(w->keep_unfired && x.dirty)) {
                    delete_window(w, g->kg, e->key, e->klen, e->start, e->end);
                    continue;
                }
                w->c_kept = 1;
                if (changed && store(w, g->kg, e->key, e->klen, &x, x.state, x.state_len) < 0) rc = -1;
            }
            if (c.n > 0 && rc == 0) {         /* the place, should the budget end here */
                collected *last = &c.c[c.n - 1];
                state_key_window(&w->c_after, w->uid, g->kg, E, last->key, last->klen, last->start);
            }
            int full = c.n == c.max;
            collector_free(&c);
            if (full || rc) break;            /* more of this key group at E next call */
            /* key group done with E: every window after E has not fired yet */
            int64_t next = end_after(w, g, E, &from, &to);
            if (fire) g->next_fire = next;
            if (g->first_end == E) {
                if (w->c_kept && !drop) continue;            /* fired, kept for late records */
                if (w->c_kept) w->revisit = 1;               /* kept for the trigger: looked at again later */
                g->first_end = next;
            }
        }
        if (w->c_kgi >= w->nkgs) w->c_end = INT64_MIN;
    }
    state_key_free(&from);
    state_key_free(&to);
    int64_t next = INT64_MAX;
    for (int i = 0; i < w->nkgs; i++) if (w->kgs[i].next_fire < next) next = w->kgs[i].next_fire;
    atomic_store(&w->next_end, next);
    return rc < 0 ? -1 : w->nfired;
}

int window_assign(const window_op *w, int64_t ts, int64_t *starts, int max) {
    int n = 0;
    int64_t last = floor_div(ts - w->offset, w->advance) * w->advance + w->offset;
    for (int64_t start = last; start > ts - w->size && n < max; start -= w->advance)
        if (!expired(w, start + w->size, w->wm)) starts[n++] = start;
    return n;
}

/* The end of the window (key, start): start + size, or for sessions what
 * the key's index says (INT64_MIN when there is no such session). */
static int64_t end_of(window_op *w, uint32_t kg, const char *key, size_t klen, int64_t start) {
    if (!w->gap) return sat_add(start, w->size);
    if (session_index_key(w, kg, key, klen, start) < 0) return INT64_MIN;
    size_t vl, plen;
    const char *v = state_tx_get(w->tx, w->k2.p, w->k2.len, &vl);
    const char *p = v ? state_value_payload(v, vl, 0, &plen) : NULL;
    if (!p || plen < 8) return INT64_MIN;
    int64_t end;
    memcpy(&end, p, 8);
    return end;
}

/* The window (key, start): read, or new (not stored yet) when create is
 * set.  1 found, 0 new, -1 absent. */
static int lookup(window_op *w, uint32_t kg, const char *key, size_t klen, int64_t start, int create, double x0,
                  win *x) {
    int64_t end = end_of(w, kg, key, klen, start);
    if (end != INT64_MIN && load(w, kg, key, klen, start, end, x)) return 1;
    if (!create || end == INT64_MIN) return -1;
    memset(x, 0, sizeof *x);
    x->start = start;
    x->end = end;
    x->min = x->max = x0;
    /* a window created after the watermark passed its end fires late at once */
    x->fired = w->wm != INT64_MIN && end - 1 <= w->wm;
    return 0;
}

static int keep(window_op *w, uint32_t kg, const char *key, size_t klen, win *x, int found, const char *st, size_t n) {
    return found ? store(w, kg, key, klen, x, st, n) : put_new(w, kg, key, klen, x, st, n);
}

static uint32_t kg_of(const window_op *w, const char *key, size_t klen) {
    return keygroup_of(key, klen, w->maxp);
}

const char *window_state(window_op *w, const char *key, size_t klen, int64_t start, size_t *len) {
    win x;
    if (lookup(w, kg_of(w, key, klen), key, klen, start, 0, 0, &x) != 1 || !x.state_len) { *len = 0; return NULL; }
    *len = x.state_len;
    return x.state;
}

int window_store(window_op *w, const char *key, size_t klen, int64_t start, const char *p, size_t n, int mode,
                 double *count) {
    bury(w);
    uint32_t kg = kg_of(w, key, klen);
    win x;
    int found = lookup(w, kg, key, klen, start, 1, 0, &x);
    if (found < 0) return -1;
    if (mode == WINDOW_APPEND && x.state_len) {
        /* the old state is in the read buffer (decode): append there */
        if (grow(&w->rbuf, &w->rcap, x.state_len + n) < 0) return -1;
        memcpy(w->rbuf + x.state_len, p, n);
        x.state = w->rbuf;
        x.state_len += n;
    } else {
        x.state = p;
        x.state_len = n;
    }
    x.count += 1;
    x.dirty = 1;
    int rc = keep(w, kg, key, klen, &x, found, x.state, x.state_len);
    if (rc == 0 && count) *count = x.count;
    if (rc == 0 && x.fired) rc = push_fired(w, key, klen, &x) < 0 ? -1 : 1;
    return rc;
}

static int session_add(window_op *w, const char *key, size_t klen, int64_t ts, double x);

/* One more value in x's built-in aggregates (a window that is new, or
 * emptied by a purge, starts its min and max at v). */
static void accumulate(win *x, double v) {
    if (x->count == 0) x->min = x->max = v;
    x->count += 1;
    x->sum += v;
    if (v < x->min) x->min = v;
    if (v > x->max) x->max = v;
    x->dirty = 1;
}

int window_add(window_op *w, const char *key, size_t klen, int64_t ts, double v) {
    bury(w);
    if (w->gap) return session_add(w, key, klen, ts, v);
    uint32_t kg = kg_of(w, key, klen);
    int64_t last = floor_div(ts - w->offset, w->advance) * w->advance + w->offset;
    int added = 0;
    for (int64_t start = last; start > ts - w->size; start -= w->advance) {
        if (expired(w, start + w->size, w->wm)) continue;      /* past its lateness: this window is gone */
        win x;
        int found = lookup(w, kg, key, klen, start, 1, v, &x);
        if (found < 0) return -1;
        accumulate(&x, v);
        if (keep(w, kg, key, klen, &x, found, x.state, x.state_len) < 0) return -1;
        if (x.fired && push_fired(w, key, klen, &x) < 0) return -1;
        added = 1;
    }
    if (!added) return WINDOW_TOO_LATE;
    return w->nfired;
}

void window_restore_watermark(window_op *w, int64_t wm) { if (wm > w->wm) w->wm = wm; }

void window_count_dropped(window_op *w) { w->late_dropped++; }
int64_t window_late_dropped(const window_op *w) { return w->late_dropped; }
int64_t window_open_count(const window_op *w) { return atomic_load(&((window_op *)w)->open); }

/* Any thread: the value the owner last stored (window state itself is the
 * owner's alone). */
int64_t window_next_end(const window_op *w) { return atomic_load(&((window_op *)w)->next_end); }

/* ---- session windows ------------------------------------------------------ */

typedef struct sess { int64_t start, end; } sess;
typedef struct sesslist { sess *s; int n, cap; size_t prefix; } sesslist;

static int sess_cb(void *ud, const char *k, size_t kl, const char *v, size_t vl) {
    sesslist *l = ud;
    size_t plen;
    const char *p = state_value_payload(v, vl, 0, &plen);
    if (kl != l->prefix + 8 || !p || plen < 8) return 0;
    if (l->n == l->cap) {
        int nc = l->cap ? l->cap * 2 : 8;
        sess *ns = realloc(l->s, sizeof *ns * nc);
        if (!ns) return 1;
        l->s = ns;
        l->cap = nc;
    }
    uint64_t b = 0;
    for (int i = 0; i < 8; i++) b = b << 8 | (unsigned char)k[l->prefix + i];
    l->s[l->n].start = (int64_t)(b ^ (1ULL << 63));
    memcpy(&l->s[l->n].end, p, 8);
    l->n++;
    return 0;
}

/* The open sessions of key (owned array in *l). */
static void sessions_of(window_op *w, uint32_t kg, const char *key, size_t klen, sesslist *l) {
    state_key from = {0}, to = {0};
    state_key_state(&from, w->uid, kg, key, klen, 'w', "", 0, NULL, 0);
    state_key_state(&to, w->uid, kg, key, klen, 'x', "", 0, NULL, 0);
    l->prefix = from.len;
    state_tx_range(w->tx, from.p, from.len, to.p, to.len, sess_cb, l);
    state_key_free(&from);
    state_key_free(&to);
}

int window_session_find(window_op *w, const char *key, size_t klen, int64_t ts, int64_t *starts, int max,
                        int64_t *mstart, int64_t *mend) {
    int64_t lo = ts, hi = ts + w->gap;
    int n = 0;
    sesslist l = {0};
    sessions_of(w, kg_of(w, key, klen), key, klen, &l);
    /* sessions overlapping [ts, ts + gap) join; the merged range can reach
     * further sessions, so repeat until nothing more joins */
    for (int changed = 1; changed;) {
        changed = 0;
        for (int i = 0; i < l.n; i++) {
            sess *e = &l.s[i];
            int in = 0;
            for (int j = 0; j < n; j++) if (starts[j] == e->start) in = 1;
            if (in || e->start >= hi || e->end <= lo) continue;
            if (n == max) { free(l.s); return -1; }
            starts[n++] = e->start;
            if (e->start < lo) lo = e->start;
            if (e->end > hi) hi = e->end;
            changed = 1;
        }
    }
    free(l.s);
    *mstart = lo;
    *mend = hi;
    if (n == 0 && expired(w, hi, w->wm)) return WINDOW_TOO_LATE;
    return n;
}

/* Takes the session (key, start) out of the store; *x gets it.  1 when it was there. */
static int session_drop(window_op *w, uint32_t kg, const char *key, size_t klen, int64_t start, win *x) {
    int64_t end = end_of(w, kg, key, klen, start);
    if (end == INT64_MIN || !load(w, kg, key, klen, start, end, x)) return 0;
    delete_window(w, kg, key, klen, start, end);
    return 1;
}

/* Stores the merged session [mstart, mend) (x holds its aggregates and state). */
static int session_new(window_op *w, uint32_t kg, const char *key, size_t klen, int64_t mstart, int64_t mend, win *x,
                       const char *st, size_t n) {
    x->start = mstart;
    x->end = mend;
    x->dirty = 1;
    x->mark = 0;
    /* the merged session is a new window: it fires late at once only if the
     * watermark has passed its end (within lateness); otherwise on time at
     * its end, replacing what its parts fired before */
    x->fired = w->wm != INT64_MIN && mend - 1 <= w->wm;
    x->state = st;
    x->state_len = n;
    if (put_new(w, kg, key, klen, x, st, n) < 0) return -1;
    if (!x->fired) return 0;
    return push_fired(w, key, klen, x) < 0 ? -1 : 1;
}

int window_session_put(window_op *w, const char *key, size_t klen, const int64_t *starts, int n,
                       int64_t mstart, int64_t mend, const char *p, size_t plen) {
    bury(w);
    uint32_t kg = kg_of(w, key, klen);
    double count = 0;
    for (int i = 0; i < n; i++) {
        win old;
        if (session_drop(w, kg, key, klen, starts[i], &old)) count += old.count;
    }
    win x = {0};
    x.count = count + 1;
    return session_new(w, kg, key, klen, mstart, mend, &x, p, plen);
}

/* C aggregates: find, combine in C, put. */
static int session_add(window_op *w, const char *key, size_t klen, int64_t ts, double v) {
    int64_t starts[64], lo, hi;
    int n = window_session_find(w, key, klen, ts, starts, 64, &lo, &hi);
    if (n == WINDOW_TOO_LATE) return WINDOW_TOO_LATE;
    if (n < 0) return -1;
    uint32_t kg = kg_of(w, key, klen);
    win x = { .count = 1, .sum = v, .min = v, .max = v };
    for (int i = 0; i < n; i++) {
        win old;
        if (!session_drop(w, kg, key, klen, starts[i], &old)) continue;
        x.count += old.count;
        x.sum += old.sum;
        if (old.min < x.min) x.min = old.min;
        if (old.max > x.max) x.max = old.max;
    }
    return session_new(w, kg, key, klen, lo, hi, &x, NULL, 0);
}

/* ---- triggers ------------------------------------------------------------- */

int window_add_at(window_op *w, const char *key, size_t klen, int64_t start, double v, double *count) {
    bury(w);
    uint32_t kg = kg_of(w, key, klen);
    win x;
    int found = lookup(w, kg, key, klen, start, 1, v, &x);
    if (found < 0) return -1;
    accumulate(&x, v);
    if (keep(w, kg, key, klen, &x, found, x.state, x.state_len) < 0) return -1;
    *count = x.count;
    return x.fired;
}

int window_fire(window_op *w, const char *key, size_t klen, int64_t start, int purge) {
    bury(w);
    uint32_t kg = kg_of(w, key, klen);
    win x;
    if (lookup(w, kg, key, klen, start, 0, 0, &x) != 1) return 0;
    if (push_fired(w, key, klen, &x) < 0) return -1;
    x.dirty = 0;
    if (purge) {
        x.count = x.sum = x.min = x.max = 0;
        x.state_len = 0;
    }
    return store(w, kg, key, klen, &x, x.state, x.state_len) < 0 ? -1 : 1;
}

typedef struct lister { window_op *w; eddy_window_info *info; int n, max; } lister;

static int list_cb(void *ud, const char *k, size_t kl, const char *v, size_t vl) {
    lister *l = ud;
    window_op *w = l->w;
    if (l->n == l->max) return 1;
    wkey wk;
    if (parse_wkey(k, kl, w->uidlen, &wk) < 0) return 0;
    win x;
    decode(w, v, vl, &x);
    char *m = malloc(wk.klen ? wk.klen : 1);
    char **nm = realloc(w->lmem, sizeof *nm * (w->nlmem + 1));
    if (nm) w->lmem = nm;
    if (!m || !nm) { free(m); return 1; }
    memcpy(m, wk.key, wk.klen);
    w->lmem[w->nlmem++] = m;
    eddy_window_info *i = &l->info[l->n++];
    i->key = m;
    i->klen = wk.klen;
    i->start = wk.start;
    i->end = wk.end;
    i->mark = x.mark;
    i->count = x.count;
    i->dirty = x.dirty;
    i->due = x.fired;
    return 0;
}

int window_list(window_op *w, eddy_window_info *info, int max) {
    list_free(w);
    lister l = { .w = w, .info = info, .max = max };
    state_key from = {0}, to = {0};
    for (int i = 0; i < w->nkgs && l.n < max; i++) {
        kg_range(w, w->kgs[i].kg, INT64_MIN, &from, &to);
        state_tx_range(w->tx, from.p, from.len, to.p, to.len, list_cb, &l);
    }
    state_key_free(&from);
    state_key_free(&to);
    return l.n;
}

void window_keep_unfired(window_op *w, int keep_them) { w->keep_unfired = keep_them; }

void window_mark(window_op *w, const char *key, size_t klen, int64_t start, int64_t mark) {
    uint32_t kg = kg_of(w, key, klen);
    win x;
    if (lookup(w, kg, key, klen, start, 0, 0, &x) != 1) return;
    x.mark = mark;
    store(w, kg, key, klen, &x, x.state, x.state_len);
}

/* ---- dropping ------------------------------------------------------------- */

typedef struct dropper { state_tx *tx; } dropper;

static int drop_cb(void *ud, const char *k, size_t kl, const char *v, size_t vl) {
    (void)v; (void)vl;
    state_tx_delete(((dropper *)ud)->tx, k, kl);
    return 0;
}

void window_drop(window_op *w) {
    dropper d = { w->tx };
    state_key from = {0}, to = {0};
    for (int i = 0; i < w->nkgs; i++) {
        uint32_t kg = w->kgs[i].kg;
        kg_range(w, kg, INT64_MIN, &from, &to);
        state_tx_range(w->tx, from.p, from.len, to.p, to.len, drop_cb, &d);
        if (w->gap) {          /* the session index: uid 0x00 kg ... */
            state_key_state(&from, w->uid, kg, "", 0, 0, "", 0, NULL, 0);
            state_key_state(&to, w->uid, kg + 1, "", 0, 0, "", 0, NULL, 0);
            from.len = to.len = w->uidlen + 3;
            state_tx_range(w->tx, from.p, from.len, to.p, to.len, drop_cb, &d);
        }
        w->kgs[i].next_fire = w->kgs[i].first_end = INT64_MAX;
    }
    state_key_free(&from);
    state_key_free(&to);
    atomic_store(&w->open, 0);
    atomic_store(&w->next_end, INT64_MAX);
}

/* ---- readers -------------------------------------------------------------- */

typedef struct jwalk {
    size_t uidlen;
    const char *key; size_t klen;        /* window_key_json: the key */
    const char *prefix; size_t plen;     /* window_scan_json: keys by prefix */
    int64_t from, to;
    const char *agg;
    json_t *windows;                     /* window_key_json */
    json_t *bykey;                       /* window_scan_json: key -> windows */
    int limit;
} jwalk;

static json_t *value_json(const char *agg, const char *v, size_t vl) {
    size_t plen;
    const char *p = state_value_payload(v, vl, 0, &plen);
    if (!p || plen < VFIX) return json_null();
    double count, sum, mn, mx;
    memcpy(&count, p + 9, 8);
    memcpy(&sum, p + 17, 8);
    memcpy(&mn, p + 25, 8);
    memcpy(&mx, p + 33, 8);
    const char *st = p + VFIX;
    size_t n = plen - VFIX;
    if (strcmp(agg, "sum") == 0) return json_real(sum);
    if (strcmp(agg, "min") == 0) return json_real(mn);
    if (strcmp(agg, "max") == 0) return json_real(mx);
    if (strcmp(agg, "avg") == 0) return count > 0 ? json_real(sum / count) : json_null();
    if (n && strcmp(agg, "apply") == 0) return state_msgpack_json(st, n, 1);
    if (n) return state_msgpack_json(st, n, 0);
    return json_integer((json_int_t)count);
}

static int jwalk_cb(void *ud, const char *k, size_t kl, const char *v, size_t vl) {
    jwalk *j = ud;
    wkey wk;
    if (parse_wkey(k, kl, j->uidlen, &wk) < 0) return 0;
    if (wk.start < j->from || wk.end > j->to) return 0;
    json_t *arr = j->windows;
    if (j->key) {
        if (wk.klen != j->klen || memcmp(wk.key, j->key, wk.klen) != 0) return 0;
    } else {
        if (wk.klen < j->plen || memcmp(wk.key, j->prefix, j->plen) != 0) return 0;
        /* keyed by the key's bytes as they are (NUL, invalid UTF-8):
         * state_key_field encodes them for the answer */
        arr = json_object_getn(j->bykey, wk.key, wk.klen);
        if (!arr) {
            if ((int)json_object_size(j->bykey) >= j->limit) return 0;
            arr = json_array();
            if (json_object_setn_new_nocheck(j->bykey, wk.key, wk.klen, arr) < 0) return 1;
        }
    }
    json_array_append_new(arr, json_pack("{s:I, s:I, s:o}", "start", (json_int_t)wk.start, "end", (json_int_t)wk.end,
                                         "value", value_json(j->agg, v, vl)));
    return 0;
}

static int by_start(const void *a, const void *b) {
    json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    json_int_t p = json_integer_value(json_object_get(x, "start")), q = json_integer_value(json_object_get(y, "start"));
    return p < q ? -1 : p > q;
}

/* Orders a key's windows by start (the store has them by end). */
static json_t *sorted(json_t *arr) {
    size_t n = json_array_size(arr);
    json_t **v = malloc(sizeof *v * (n ? n : 1));
    if (!v) return arr;
    for (size_t i = 0; i < n; i++) v[i] = json_incref(json_array_get(arr, i));
    qsort(v, n, sizeof *v, by_start);
    json_array_clear(arr);
    for (size_t i = 0; i < n; i++) json_array_append_new(arr, v[i]);
    free(v);
    return arr;
}

json_t *window_key_json(struct state_db *db, const char *uid, uint32_t kg, const char *key, size_t klen, int64_t from,
                        int64_t to, const char *agg) {
    jwalk j = { .uidlen = strlen(uid), .key = key, .klen = klen, .from = from, .to = to, .agg = agg,
                .windows = json_array() };
    state_key a = {0}, b = {0};
    state_key_window(&a, uid, kg, INT64_MIN, NULL, 0, 0);
    state_key_window(&b, uid, kg + 1, INT64_MIN, NULL, 0, 0);
    state_range(db, a.p, a.len, b.p, b.len, jwalk_cb, &j);
    state_key_free(&a);
    state_key_free(&b);
    if (json_array_size(j.windows) == 0) { json_decref(j.windows); return NULL; }
    return json_pack("{s:o}", "windows", sorted(j.windows));
}

typedef struct keyref { const char *k; size_t n; } keyref;

static int by_name(const void *a, const void *b) {
    const keyref *x = a, *y = b;
    int c = memcmp(x->k, y->k, x->n < y->n ? x->n : y->n);
    return c ? c : (x->n > y->n) - (x->n < y->n);
}

json_t *window_scan_json(struct state_db *db, const char *uid, const char *prefix, size_t plen, int limit,
                         const char *agg) {
    jwalk j = { .uidlen = strlen(uid), .prefix = prefix, .plen = plen, .from = INT64_MIN, .to = INT64_MAX,
                .agg = agg, .bykey = json_object(), .limit = limit };
    size_t ul = strlen(uid);
    char *a = malloc(ul + 1), *b = malloc(ul + 1);
    json_t *out = json_array();
    if (a && b) {
        memcpy(a, uid, ul);
        memcpy(b, uid, ul);
        a[ul] = 2;
        b[ul] = 3;
        state_range(db, a, ul + 1, b, ul + 1, jwalk_cb, &j);
    }
    free(a);
    free(b);
    /* keys in order, as the other operators' scans give them */
    size_t n = json_object_size(j.bykey);
    keyref *keys = malloc(sizeof *keys * (n ? n : 1));
    const char *k;
    size_t kn;
    json_t *v;
    size_t i = 0;
    if (keys) {
        json_object_keylen_foreach(j.bykey, k, kn, v) keys[i++] = (keyref){ k, kn };
        qsort(keys, n, sizeof *keys, by_name);
    }
    for (i = 0; keys && i < n; i++) {
        json_t *e = json_object();
        state_key_field(e, keys[i].k, keys[i].n);
        json_object_set_new(e, "state", json_pack("{s:O}", "windows",
                                                  sorted(json_object_getn(j.bykey, keys[i].k, keys[i].n))));
        json_array_append_new(out, e);
    }
    free(keys);
    json_decref(j.bykey);
    return out;
}
