#include "timer.h"
#include "ffi_api.h"
#include <stdlib.h>
#include <string.h>

/* Per operator uid and kind, what the task knows of its timers, by key
 * group (each array is [nkgs], in kgs's order): the earliest timer
 * (INT64_MIN: unknown, scan; INT64_MAX: none), and a floor below which
 * there are none (the due ones were deleted: deleted keys are not walked
 * again).  `first` is the earliest over every key group (INT64_MIN:
 * unknown).  So a watermark scans only the key groups it makes due, from
 * their floors: each timer costs a few seeks, however many there are. */
typedef struct timer_book { char *uid; char kind; int64_t first, *next, *floor; } timer_book;

struct timer_index {
    state_tx *tx;               /* borrowed */
    uint32_t *kgs; int nkgs;    /* the task's key groups, ascending */
    timer_book *books; int nbooks;
    uint64_t undos;             /* state_tx_undos(tx) when the books were last right */
    state_key key;              /* reused to build timer keys */
};

static void book_forget(timer_book *b, int nkgs) {
    b->first = INT64_MIN;
    for (int i = 0; i < nkgs; i++) b->next[i] = b->floor[i] = INT64_MIN;
}

/* The books, after a record's writes were undone: the timers it deleted or
 * set are back or gone, so every key group is scanned afresh. */
static void check_undone(timer_index *ix) {
    uint64_t u = state_tx_undos(ix->tx);
    if (u == ix->undos) return;
    ix->undos = u;
    for (int i = 0; i < ix->nbooks; i++) book_forget(&ix->books[i], ix->nkgs);
}

timer_index *timer_index_create(state_tx *tx, const uint32_t *kgs, int nkgs) {
    timer_index *ix = calloc(1, sizeof *ix);
    if (!ix) return NULL;
    ix->tx = tx;
    ix->kgs = malloc(sizeof *ix->kgs * (size_t)(nkgs > 0 ? nkgs : 1));
    if (!ix->kgs) { free(ix); return NULL; }
    if (nkgs > 0) memcpy(ix->kgs, kgs, sizeof *kgs * (size_t)nkgs);
    ix->nkgs = nkgs;
    ix->undos = state_tx_undos(tx);
    return ix;
}

void timer_index_destroy(timer_index *ix) {
    if (!ix) return;
    for (int i = 0; i < ix->nbooks; i++) {
        free(ix->books[i].uid);
        free(ix->books[i].next);
        free(ix->books[i].floor);
    }
    free(ix->books);
    free(ix->kgs);
    state_key_free(&ix->key);
    free(ix);
}

static timer_book *book_of(timer_index *ix, const char *uid, char kind) {
    for (int i = 0; i < ix->nbooks; i++)
        if (ix->books[i].kind == kind && strcmp(ix->books[i].uid, uid) == 0) return &ix->books[i];
    timer_book *nb = realloc(ix->books, sizeof *nb * (ix->nbooks + 1));
    if (!nb) return NULL;
    ix->books = nb;
    timer_book *b = &nb[ix->nbooks];
    size_t n = ix->nkgs > 0 ? (size_t)ix->nkgs : 1;
    b->uid = strdup(uid);
    b->next = malloc(n * sizeof *b->next);
    b->floor = malloc(n * sizeof *b->floor);
    if (!b->uid || !b->next || !b->floor) { free(b->uid); free(b->next); free(b->floor); return NULL; }
    b->kind = kind;
    book_forget(b, ix->nkgs);
    ix->nbooks++;
    return b;
}

/* The index of key group kg in ix->kgs (an ascending range), or -1. */
static int kg_index(const timer_index *ix, uint32_t kg) {
    int lo = 0, hi = ix->nkgs - 1;
    if (ix->nkgs > 0 && kg >= ix->kgs[0] && kg - ix->kgs[0] < (uint32_t)ix->nkgs && ix->kgs[kg - ix->kgs[0]] == kg)
        return (int)(kg - ix->kgs[0]);
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (ix->kgs[mid] == kg) return mid;
        if (ix->kgs[mid] < kg) lo = mid + 1; else hi = mid - 1;
    }
    return -1;
}

int timer_set(timer_index *ix, const char *uid, uint32_t kg, char kind, int64_t ts, const char *key, size_t klen) {
    check_undone(ix);
    if (state_key_timer(&ix->key, uid, kg, kind, ts, key, klen) < 0) return -1;
    state_tx_put(ix->tx, ix->key.p, ix->key.len, "", 0);
    timer_book *b = book_of(ix, uid, kind);
    if (!b) return -1;
    int i = kg_index(ix, kg);
    if (i < 0) { book_forget(b, ix->nkgs); return 0; }     /* not this task's key group: scan afresh */
    if (b->next[i] != INT64_MIN && ts < b->next[i]) b->next[i] = ts;
    if (ts < b->floor[i]) b->floor[i] = ts;
    if (b->first != INT64_MIN && ts < b->first) b->first = ts;
    return 0;
}

int timer_del(timer_index *ix, const char *uid, uint32_t kg, int64_t ts, const char *key, size_t klen) {
    for (int i = 0; i < 2; i++) {
        if (state_key_timer(&ix->key, uid, kg, i ? 'p' : 'e', ts, key, klen) < 0) return -1;
        state_tx_delete(ix->tx, ix->key.p, ix->key.len);
    }
    return 0;
}

int timer_take_due(timer_index *ix, const char *uid, char kind, int64_t upto, state_timer **due, int *n) {
    *due = NULL;
    *n = 0;
    check_undone(ix);
    timer_book *b = book_of(ix, uid, kind);
    if (!b) return -1;
    if (b->first != INT64_MIN && upto < b->first) return 0;     /* nothing due: no scan */
    /* the key groups with a timer due (or not known yet), from their floors */
    size_t cap = (size_t)(ix->nkgs + 1);
    uint32_t *kgs = malloc(sizeof *kgs * cap);
    int64_t *floors = malloc(sizeof *floors * cap);
    int *idx = malloc(sizeof *idx * cap);
    if (!kgs || !floors || !idx) { free(kgs); free(floors); free(idx); return -1; }
    int m = 0;
    for (int i = 0; i < ix->nkgs; i++)
        if (b->next[i] == INT64_MIN || b->next[i] <= upto) { kgs[m] = ix->kgs[i]; floors[m] = b->floor[i]; idx[m++] = i; }
    *due = state_timers_due(ix->tx, uid, kind, kgs, floors, m, upto, n);
    /* every timer up to upto is gone from those key groups: their next ones */
    for (int j = 0; j < m; j++) {
        int i = idx[j];
        if (upto < INT64_MAX && upto + 1 > b->floor[i]) b->floor[i] = upto + 1;
        b->next[i] = upto == INT64_MAX ? INT64_MAX : state_timers_next(ix->tx, uid, kind, ix->kgs[i], b->floor[i]);
    }
    free(kgs); free(floors); free(idx);
    b->first = INT64_MAX;
    for (int i = 0; i < ix->nkgs; i++) if (b->next[i] < b->first) b->first = b->next[i];
    return 0;
}

/* ---- FFI exports (ffi_api.h) ------------------------------------------- */

int32_t eddy_timer_set(void *ix, const char *uid, uint32_t kg, const char *key, size_t klen, int32_t kind, int64_t ts) {
    return timer_set(ix, uid, kg, (char)kind, ts, key, klen);
}

int32_t eddy_timer_del(void *ix, const char *uid, uint32_t kg, const char *key, size_t klen, int64_t ts) {
    return timer_del(ix, uid, kg, ts, key, klen);
}
