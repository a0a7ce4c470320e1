/* window_fire — see window.h (window_advance, window_fired): the firings a
 * call hands to Lua (copies, freed at the next change), and firing the
 * windows a watermark passed, end by end, key group by key group, at most
 * FIRE_CHUNK a call, with a cursor that keeps the place between calls.
 * Calls: state (ranges, commits), window.c (window_internal.h). */
#include "window_internal.h"

/* ---- firings -------------------------------------------------------------- */

/* Forgets the firings read since the last change. */
void win_bury(window_op *w) {
    for (int i = 0; i < w->nfired; i++) free(w->fmem[i]);
    w->nfired = 0;
}

int win_push_fired(window_op *w, const char *key, size_t klen, const win *x) {
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
    win_kg_range(w, g->kg, sat_add(after, 1), from, to);
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
    win_bury(w);
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
                win_decode(w, e->v, e->vl, &x);
                x.start = e->start;
                x.end = e->end;
                int changed = 0;
                if (!x.fired) {
                    x.fired = 1;
                    /* a processing-time trigger fires the changes itself: they stay marked */
                    if (!w->keep_unfired) x.dirty = 0;
                    changed = 1;
                    if (win_push_fired(w, e->key, e->klen, &x) < 0) { rc = -1; break; }
                }
                if (expired(w, x.end, wm) && !(w->keep_unfired && x.dirty)) {
                    win_delete(w, g->kg, e->key, e->klen, e->start, e->end);
                    continue;
                }
                w->c_kept = 1;
                if (changed && win_store(w, g->kg, e->key, e->klen, &x, x.state, x.state_len) < 0) rc = -1;
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
