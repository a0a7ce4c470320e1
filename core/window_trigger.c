/* window_trigger — see window.h: what the runtime's triggers call on a
 * window operator: add to one window (window_add_at), fire one window
 * (window_fire), list the open windows (window_list), keep or mark them.
 * Calls: state, window.c and window_fire.c (window_internal.h). */
#include "window_internal.h"

/* ---- triggers ------------------------------------------------------------- */

int window_add_at(window_op *w, const char *key, size_t klen, int64_t start, double v, double *count) {
    win_bury(w);
    uint32_t kg = kg_of(w, key, klen);
    win x;
    int found = win_lookup(w, kg, key, klen, start, 1, v, &x);
    if (found < 0) return -1;
    accumulate(&x, v);
    if (win_keep(w, kg, key, klen, &x, found, x.state, x.state_len) < 0) return -1;
    *count = x.count;
    return x.fired;
}

int window_fire(window_op *w, const char *key, size_t klen, int64_t start, int purge) {
    win_bury(w);
    uint32_t kg = kg_of(w, key, klen);
    win x;
    if (win_lookup(w, kg, key, klen, start, 0, 0, &x) != 1) return 0;
    if (win_push_fired(w, key, klen, &x) < 0) return -1;
    x.dirty = 0;
    if (purge) {
        x.count = x.sum = x.min = x.max = 0;
        x.state_len = 0;
    }
    return win_store(w, kg, key, klen, &x, x.state, x.state_len) < 0 ? -1 : 1;
}

void win_list_free(window_op *w) {
    for (int i = 0; i < w->nlmem; i++) free(w->lmem[i]);
    free(w->lmem);
    w->lmem = NULL;
    w->nlmem = 0;
}


typedef struct lister { window_op *w; eddy_window_info *info; int n, max; } lister;

static int list_cb(void *ud, const char *k, size_t kl, const char *v, size_t vl) {
    lister *l = ud;
    window_op *w = l->w;
    if (l->n == l->max) return 1;
    wkey wk;
    if (parse_wkey(k, kl, w->uidlen, &wk) < 0) return 0;
    win x;
    win_decode(w, v, vl, &x);
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
    win_list_free(w);
    lister l = { .w = w, .info = info, .max = max };
    state_key from = {0}, to = {0};
    for (int i = 0; i < w->nkgs && l.n < max; i++) {
        win_kg_range(w, w->kgs[i].kg, INT64_MIN, &from, &to);
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
    if (win_lookup(w, kg, key, klen, start, 0, 0, &x) != 1) return;
    x.mark = mark;
    win_store(w, kg, key, klen, &x, x.state, x.state_len);
}
