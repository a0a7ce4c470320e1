/* window — see window.h: one window in the store (decode, load, store),
 * the operator's life (create: what an earlier run left, per key group),
 * assigning a record to its windows and the C aggregates, the per-task
 * accessors and dropping the operator's windows.  Firing, sessions,
 * triggers and the admin readers are in window_fire.c, window_session.c,
 * window_trigger.c and window_json.c (window_internal.h). */
#include "window_internal.h"

/* ---- reading and writing one window ------------------------------------- */

void win_decode(window_op *w, const char *v, size_t vl, win *x) {
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
int win_load(window_op *w, uint32_t kg, const char *key, size_t klen, int64_t start, int64_t end, win *x) {
    if (state_key_window(&w->k, w->uid, kg, end, key, klen, start) < 0) return 0;
    size_t vl;
    const char *v = state_tx_get(w->tx, w->k.p, w->k.len, &vl);
    if (!v) return 0;
    int64_t s = start, e = end;
    win_decode(w, v, vl, x);
    x->start = s;
    x->end = e;
    return 1;
}

/* Writes x with state (st, n).  0 or -1. */
int win_store(window_op *w, uint32_t kg, const char *key, size_t klen, const win *x, const char *st, size_t n) {
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
kgstate *win_kgstate_of(window_op *w, uint32_t kg) {
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
int win_session_index_key(window_op *w, uint32_t kg, const char *key, size_t klen, int64_t start) {
    char s[8];
    uint64_t b = (uint64_t)start ^ (1ULL << 63);
    for (int i = 0; i < 8; i++) s[i] = (char)(b >> (8 * (7 - i)));
    return state_key_state(&w->k2, w->uid, kg, key, klen, 'w', s, 8, NULL, 0);
}

/* A window came into the store. */
static void created(window_op *w, uint32_t kg, const win *x) {
    atomic_fetch_add(&w->open, 1);
    kgstate *g = win_kgstate_of(w, kg);
    if (!g) return;
    if (x->end < g->first_end) g->first_end = x->end;
    if (!x->fired && x->end < g->next_fire) g->next_fire = x->end;
    if (!x->fired && x->end < atomic_load(&w->next_end)) atomic_store(&w->next_end, x->end);
}

int win_put_new(window_op *w, uint32_t kg, const char *key, size_t klen, win *x, const char *st, size_t n) {
    if (win_store(w, kg, key, klen, x, st, n) < 0) return -1;
    if (w->gap) {
        char e[VHDR + 8];
        size_t h = state_value_header(e, 0);
        memcpy(e + h, &x->end, 8);
        if (win_session_index_key(w, kg, key, klen, x->start) < 0) return -1;
        state_tx_put(w->tx, w->k2.p, w->k2.len, e, h + 8);
    }
    created(w, kg, x);
    return 0;
}

void win_delete(window_op *w, uint32_t kg, const char *key, size_t klen, int64_t start, int64_t end) {
    if (state_key_window(&w->k, w->uid, kg, end, key, klen, start) == 0) state_tx_delete(w->tx, w->k.p, w->k.len);
    if (w->gap && win_session_index_key(w, kg, key, klen, start) == 0) state_tx_delete(w->tx, w->k2.p, w->k2.len);
    atomic_fetch_sub(&w->open, 1);
}

/* ---- the operator --------------------------------------------------------- */

static int init_cb(void *ud, const char *k, size_t kl, const char *v, size_t vl) {
    scan *s = ud;
    wkey wk;
    if (parse_wkey(k, kl, s->w->uidlen, &wk) < 0) return 0;
    win x;
    win_decode(s->w, v, vl, &x);
    s->count++;
    if (wk.end < s->g->first_end) s->g->first_end = wk.end;
    if (!x.fired && wk.end < s->g->next_fire) s->g->next_fire = wk.end;
    return 0;
}

/* The key range of key group kg's windows: [from, to). */
void win_kg_range(window_op *w, uint32_t kg, int64_t end_from, state_key *from, state_key *to) {
    state_key_window(from, w->uid, kg, end_from, NULL, 0, 0);
    state_key_window(to, w->uid, kg + 1, INT64_MIN, NULL, 0, 0);
}

static void scan_store(window_op *w);

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
    for (int i = 0; i < nkgs; i++) {
        w->kgs[i].kg = kgs[i];
        if ((int)kgs[i] < maxp) w->kg_index[kgs[i]] = i;
    }
    scan_store(w);
    return w;
}

/* What the store holds: counted, and where each key group's windows start
 * (committed data only: this may run off the task's thread). */
static void scan_store(window_op *w) {
    state_tx *tx = w->tx;
    state_key from = {0}, to = {0};
    int64_t next = INT64_MAX, open = 0;
    for (int i = 0; i < w->nkgs; i++) {
        uint32_t kg = w->kgs[i].kg;
        w->kgs[i] = (kgstate){ .kg = kg, .next_fire = INT64_MAX, .first_end = INT64_MAX };
        scan s = { .w = w, .g = &w->kgs[i] };
        win_kg_range(w, kg, INT64_MIN, &from, &to);
        state_range(state_tx_db(tx), from.p, from.len, to.p, to.len, init_cb, &s);
        open += s.count;
        if (w->kgs[i].next_fire < next) next = w->kgs[i].next_fire;
    }
    state_key_free(&from);
    state_key_free(&to);
    atomic_store(&w->open, open);
    atomic_store(&w->next_end, next);
}

void window_rescan(window_op *w) {
    w->pending = 0;
    w->c_end = INT64_MIN;
    w->c_kgi = 0;
    w->c_after.len = 0;
    w->c_kept = 0;
    w->revisit = 0;
    scan_store(w);
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

void window_destroy(window_op *w) {
    if (!w) return;
    win_bury(w);
    win_list_free(w);
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

int window_assign(const window_op *w, int64_t ts, int64_t *starts, int max) {
    int n = 0;
    int64_t last = floor_div(ts - w->offset, w->advance) * w->advance + w->offset;
    for (int64_t start = last; start > ts - w->size && n < max; start -= w->advance)
        if (!expired(w, start + w->size, w->wm)) starts[n++] = start;
    return n;
}

/* The end of the window (key, start): start + size, or for sessions what
 * the key's index says (INT64_MIN when there is no such session). */
int64_t win_end_of(window_op *w, uint32_t kg, const char *key, size_t klen, int64_t start) {
    if (!w->gap) return sat_add(start, w->size);
    if (win_session_index_key(w, kg, key, klen, start) < 0) return INT64_MIN;
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
int win_lookup(window_op *w, uint32_t kg, const char *key, size_t klen, int64_t start, int create, double x0,
                  win *x) {
    int64_t end = win_end_of(w, kg, key, klen, start);
    if (end != INT64_MIN && win_load(w, kg, key, klen, start, end, x)) return 1;
    if (!create || end == INT64_MIN) return -1;
    memset(x, 0, sizeof *x);
    x->start = start;
    x->end = end;
    x->min = x->max = x0;
    /* a window created after the watermark passed its end fires late at once */
    x->fired = w->wm != INT64_MIN && end - 1 <= w->wm;
    return 0;
}

int win_keep(window_op *w, uint32_t kg, const char *key, size_t klen, win *x, int found, const char *st, size_t n) {
    return found ? win_store(w, kg, key, klen, x, st, n) : win_put_new(w, kg, key, klen, x, st, n);
}


const char *window_state(window_op *w, const char *key, size_t klen, int64_t start, size_t *len) {
    win x;
    if (win_lookup(w, kg_of(w, key, klen), key, klen, start, 0, 0, &x) != 1 || !x.state_len) { *len = 0; return NULL; }
    *len = x.state_len;
    return x.state;
}

int window_store(window_op *w, const char *key, size_t klen, int64_t start, const char *p, size_t n, int mode,
                 double *count) {
    win_bury(w);
    uint32_t kg = kg_of(w, key, klen);
    win x;
    int found = win_lookup(w, kg, key, klen, start, 1, 0, &x);
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
    int rc = win_keep(w, kg, key, klen, &x, found, x.state, x.state_len);
    if (rc == 0 && count) *count = x.count;
    if (rc == 0 && x.fired) rc = win_push_fired(w, key, klen, &x) < 0 ? -1 : 1;
    return rc;
}


int window_add(window_op *w, const char *key, size_t klen, int64_t ts, double v) {
    win_bury(w);
    if (w->gap) return win_session_add(w, key, klen, ts, v);
    uint32_t kg = kg_of(w, key, klen);
    int64_t last = floor_div(ts - w->offset, w->advance) * w->advance + w->offset;
    int added = 0;
    for (int64_t start = last; start > ts - w->size; start -= w->advance) {
        if (expired(w, start + w->size, w->wm)) continue;      /* past its lateness: this window is gone */
        win x;
        int found = win_lookup(w, kg, key, klen, start, 1, v, &x);
        if (found < 0) return -1;
        accumulate(&x, v);
        if (win_keep(w, kg, key, klen, &x, found, x.state, x.state_len) < 0) return -1;
        if (x.fired && win_push_fired(w, key, klen, &x) < 0) return -1;
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
        win_kg_range(w, kg, INT64_MIN, &from, &to);
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
