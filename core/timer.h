/* timer — a keyed task's timers (event time 'e', processing time 'p'):
 * setting and deleting them in the task's state_tx (state.c's timer keys),
 * and the index that finds the due ones without a scan per key group: per
 * operator uid and kind, the earliest timer of each key group the task owns
 * and a floor below which it has none.  The index is a cache of what is
 * stored: a failed record's state_tx_undo makes it start afresh.  The FFI
 * exports eddy_timer_set/eddy_timer_del (ffi_api.h) are here.  Calls state. */
#ifndef EDDY_TIMER_H
#define EDDY_TIMER_H

#include <stdint.h>
#include "state.h"

typedef struct timer_index timer_index;

/* The index of the timers tx holds for key groups kgs[0..nkgs) (ascending;
 * copied).  Borrows tx, which must outlive it.  Owned, or NULL. */
timer_index *timer_index_create(state_tx *tx, const uint32_t *kgs, int nkgs);
void timer_index_destroy(timer_index *ix);    /* NULL is a no-op */
/* A timer of key (in key group kg) at ts; the same ts twice is one timer.  0, or -1 (out of memory). */
int timer_set(timer_index *ix, const char *uid, uint32_t kg, char kind, int64_t ts, const char *key, size_t klen);
/* Deletes the timers of key at ts, of both kinds.  0, or -1 (out of memory). */
int timer_del(timer_index *ix, const char *uid, uint32_t kg, int64_t ts, const char *key, size_t klen);
/* The timers of operator uid of that kind at or before upto in the task's
 * key groups, removed from the store, in time order: *due an owned array of
 * *n (state_timers_free; NULL when none).  0, or -1 (out of memory). */
int timer_take_due(timer_index *ix, const char *uid, char kind, int64_t upto, state_timer **due, int *n);

#endif
