/* changelog — a keyed task's state in Kafka (shuffle = "kafka"): every
 * write the task commits goes to the changelog topic of its operator
 * (<name>-<uid>-changelog, the partition of the task: key = the store's
 * key, value = the stored value, a tombstone for a delete), so the task can
 * be restored on whichever instance the group gives it next: its key
 * groups wiped there, then the changelogs replayed to their end
 * (read_committed).  The task's input watermarks travel the same way,
 * under a key of their own in its first changelog.  Calls state, kafka
 * (producers) and librdkafka (the restore's consumer). */
#ifndef EDDY_CHANGELOG_H
#define EDDY_CHANGELOG_H

#include <stddef.h>
#include <stdint.h>
#include "config.h"
#include "pipeline.h"
#include "state.h"

struct kafka;
struct kafka_sink;
typedef struct changelog changelog;

/* The changelogs of keyed task `index` of stage st: one per stateful
 * operator of the stage.  Owned (NULL with *err empty: the stage has no
 * state), or NULL with err. */
changelog *changelog_create(struct kafka *k, const config *cfg, const plan *p, const stage *st, int index, char *err,
                            size_t errlen);
void changelog_destroy(changelog *c);        /* NULL is a no-op */
/* state_log_fn (state.h): sends one committed write. */
int changelog_log(void *c, const char *k, size_t kl, const char *v, size_t vl);
/* Its producers (acks wait for them), up to max.  How many. */
int changelog_producers(const changelog *c, struct kafka_sink **ks, int max);
int changelog_count(const changelog *c);
const char *changelog_topic(const changelog *c, int i);

/* The key of the task's input watermarks (in the store and the changelog). */
int changelog_marks_key(const changelog *c, state_key *k);

/* Deletes the task's key groups kgs[0..nkgs) of every operator with a
 * changelog, and its marks, from the store.  0, or -1 with err. */
int changelog_wipe(const changelog *c, state_db *db, const uint32_t *kgs, int nkgs, char *err, size_t errlen);
/* The same for operators uids[0..nuids) (uids[0] keeps the marks) of the
 * task that is partition `partition`. */
int changelog_wipe_ops(state_db *db, const char *const *uids, int nuids, int partition, const uint32_t *kgs,
                       int nkgs, char *err, size_t errlen);

/* ---- restore ---- */
typedef struct changelog_restore changelog_restore;
/* Starts reading the task's changelog partitions from `from[i]` (NULL or
 * < 0: the beginning).  Owned, or NULL with err. */
changelog_restore *changelog_restore_begin(const changelog *c, struct kafka *k, const int64_t *from, char *err,
                                           size_t errlen);
/* Applies up to max records into tx (waiting up to wait_ms for the first;
 * committing as it goes, without logging them again); *done once every
 * partition was read to its end.
 * The number applied, or -1 with err. */
int changelog_restore_step(changelog_restore *r, state_tx *tx, int max, int wait_ms, int *done, char *err,
                           size_t errlen);
/* Progress: records and bytes applied, records left (estimate; -1 unknown). */
void changelog_restore_progress(const changelog_restore *r, int64_t *records, int64_t *bytes, int64_t *left);
/* The offset after the last record read of changelog i (-1: none). */
int64_t changelog_restore_position(const changelog_restore *r, int i);
/* Where each changelog's next record is (for changelog_restore_begin's
 * `from`): an owned array of changelog_count entries, or NULL. */
int64_t *changelog_restore_positions(const changelog_restore *r);
/* A standby's copy: read on past the end, as the owner writes. */
void changelog_restore_follow(changelog_restore *r);
void changelog_restore_end(changelog_restore *r);      /* NULL is a no-op */

#endif
