/* replay — the last records a source partition delivered, for dry runs
 * (dryrun.c): a bounded ring per source task, filled by the task's worker
 * after each read (task.c) with copies of the records as the source put
 * them in the batch (bytes, positions, flags), before any operator ran.
 * Each slot keeps its buffer, so a full ring copies without allocating;
 * the worker takes the ring's mutex once per batch, and a dry run takes it
 * once to copy the ring (replay_ring_each).  Calls batch only. */
#ifndef EDDY_REPLAY_H
#define EDDY_REPLAY_H

#include <stddef.h>
#include "batch.h"

typedef struct replay_ring replay_ring;

/* A ring of the last `cap` records (cap >= 1).  Owned, or NULL. */
replay_ring *replay_ring_create(int cap);
void replay_ring_destroy(replay_ring *r);   /* NULL is a no-op */

/* Appends the records of b (only its last `cap` can stay).  0, or -1 out of
 * memory (the ring then holds what fitted; nothing is half-copied). */
int replay_ring_add(replay_ring *r, const batch *b);

/* The records held (at most `max` of the newest; max <= 0: all), oldest
 * first: fn(ud, rec, key, val, hdrs) for each, rec's offsets not usable
 * (key, val and hdrs point at the record's bytes, hdrs NULL when none).  A
 * nonzero return from fn stops and is returned; else 0. */
typedef int (*replay_each_fn)(void *ud, const eddy_rec *rec, const char *key, const char *val, const char *hdrs);
int replay_ring_each(replay_ring *r, int max, replay_each_fn fn, void *ud);

/* Records held now (<= cap), and records added since the ring was made. */
int replay_ring_count(replay_ring *r);
long replay_ring_total(replay_ring *r);

#endif
