/* window_session — see window.h (window_session_find, window_session_put):
 * session windows, kept with an index key -> its sessions (uid 0x00 kg key
 * 'w' start -> end); a record joins the sessions within gap of it, merged
 * into one new window.  Calls: state, window.c and window_fire.c
 * (window_internal.h). */
#include "window_internal.h"

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
    int64_t end = win_end_of(w, kg, key, klen, start);
    if (end == INT64_MIN || !win_load(w, kg, key, klen, start, end, x)) return 0;
    win_delete(w, kg, key, klen, start, end);
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
    if (win_put_new(w, kg, key, klen, x, st, n) < 0) return -1;
    if (!x->fired) return 0;
    return win_push_fired(w, key, klen, x) < 0 ? -1 : 1;
}

int window_session_put(window_op *w, const char *key, size_t klen, const int64_t *starts, int n,
                       int64_t mstart, int64_t mend, const char *p, size_t plen) {
    win_bury(w);
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
int win_session_add(window_op *w, const char *key, size_t klen, int64_t ts, double v) {
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
