/* window_internal.h — what the window modules share, for window*.c only: a
 * window as stored (struct win), the per key group bookkeeping, struct
 * window_op, small inline helpers, and the functions one module offers
 * another.  window.c owns reading and writing one window, the operator's
 * life, assignment and the C aggregates; window_fire.c firing in chunks;
 * window_session.c session merging; window_trigger.c what triggers call
 * (listing, firing one window, marks); window_json.c the admin readers.
 * Calls: state (state.h), keygroup. */
#ifndef EDDY_WINDOW_INTERNAL_H
#define EDDY_WINDOW_INTERNAL_H

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

static inline int64_t sat_add(int64_t a, int64_t b) {
    if (b > 0 && a > INT64_MAX - b) return INT64_MAX;
    if (b < 0 && a < INT64_MIN - b) return INT64_MIN;
    return a + b;
}

/* end - 1 + lateness <= wm, without overflow near the ends of int64 */
static inline int expired(const window_op *w, int64_t end, int64_t wm) {
    return wm != INT64_MIN && end - 1 <= sat_add(wm, -w->lateness);
}

static inline int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static inline int grow(char **p, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap : 256;
    while (nc < need) nc *= 2;
    char *np = realloc(*p, nc);
    if (!np) return -1;
    *p = np;
    *cap = nc;
    return 0;
}

/* A window's key, decoded (key borrowed). */
typedef struct wkey { uint32_t kg; int64_t end, start; const char *key; size_t klen; } wkey;

static inline int parse_wkey(const char *k, size_t kl, size_t uidlen, wkey *wk) {
    return state_key_window_parse(k, kl, uidlen, &wk->kg, &wk->end, &wk->key, &wk->klen, &wk->start);
}

/* A walk over one key group's windows (create's count, end_after's first). */
typedef struct scan {
    window_op *w;
    kgstate *g;
    int64_t count;
} scan;

static inline uint32_t kg_of(const window_op *w, const char *key, size_t klen) {
    return keygroup_of(key, klen, w->maxp);
}

/* One more value in x's built-in aggregates (a window that is new, or
 * emptied by a purge, starts its min and max at v). */
static inline void accumulate(win *x, double v) {
    if (x->count == 0) x->min = x->max = v;
    x->count += 1;
    x->sum += v;
    if (v < x->min) x->min = v;
    if (v > x->max) x->max = v;
    x->dirty = 1;
}

/* ---- window.c: one window in the store ----------------------------------- */

void win_decode(window_op *w, const char *v, size_t vl, win *x);
int win_load(window_op *w, uint32_t kg, const char *key, size_t klen, int64_t start, int64_t end, win *x);
int win_store(window_op *w, uint32_t kg, const char *key, size_t klen, const win *x, const char *st, size_t n);
kgstate *win_kgstate_of(window_op *w, uint32_t kg);
int win_session_index_key(window_op *w, uint32_t kg, const char *key, size_t klen, int64_t start);
int win_put_new(window_op *w, uint32_t kg, const char *key, size_t klen, win *x, const char *st, size_t n);
void win_delete(window_op *w, uint32_t kg, const char *key, size_t klen, int64_t start, int64_t end);
/* The key range of key group kg's windows: [from, to). */
void win_kg_range(window_op *w, uint32_t kg, int64_t end_from, state_key *from, state_key *to);
int64_t win_end_of(window_op *w, uint32_t kg, const char *key, size_t klen, int64_t start);
/* The window (key, start): 1 found, 0 new (create set), -1 absent. */
int win_lookup(window_op *w, uint32_t kg, const char *key, size_t klen, int64_t start, int create, double x0,
               win *x);
int win_keep(window_op *w, uint32_t kg, const char *key, size_t klen, win *x, int found, const char *st, size_t n);

/* ---- window_fire.c: firings --------------------------------------------------- */

/* Forgets the firings read since the last change. */
void win_bury(window_op *w);
/* Copies x (key, aggregates, state) into the firings window_fired reads. */
int win_push_fired(window_op *w, const char *key, size_t klen, const win *x);

/* ---- window_session.c ----------------------------------------------------------- */

/* C aggregates of session windows: find, combine in C, put. */
int win_session_add(window_op *w, const char *key, size_t klen, int64_t ts, double x);

/* ---- window_trigger.c ------------------------------------------------------------ */

/* Frees window_list's copies of keys. */
void win_list_free(window_op *w);

#endif
