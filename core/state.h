/* state — keyed state on RocksDB.  One database per daemon, under
 * state.dir/db: one write-ahead log, one block cache, and (with checkpoints)
 * one consistent copy.  Keys are laid out so that what belongs to one
 * operator and one key group is one contiguous range:
 *
 *   uid 0x00 kg(2, big-endian) keylen(4) key kind name [0x00 sub]   state
 *   uid 0x01 kg(2) kind('e'|'p') ts(8, biased big-endian) keylen(4) key   timers
 *   uid 0x02 kg(2) end(8, biased) keylen(4) key start(8, biased)          windows
 *
 * so a key group moves between tasks (and, later, instances) as a range.
 * Values start with a header: a flags byte and, with STATE_TTL, the expiry
 * (ms since the epoch, 8 bytes); a compaction filter drops expired values,
 * and readers never return them.  Each task writes through a state_tx: the
 * batch's writes in memory (a hash table, and an index sorted when a range
 * read or the commit needs it), committed atomically at the batch's end in
 * key order (so readers never see half a batch), in front of a small
 * per-task cache of committed values.  Exports the runtime's per-record
 * eddy_state_mark, eddy_state_undo and eddy_dedup (ffi_api.h); the timer
 * index is timer.c's.  Calls RocksDB, clock and log. */
#ifndef EDDY_STATE_H
#define EDDY_STATE_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "config.h"

typedef struct state_db state_db;
typedef struct state_tx state_tx;

enum { STATE_TTL = 1 };
#define STATE_HDR_MAX 9

/* Opens (creating) the database in dir; cache_bytes bounds the block cache
 * and the write buffers; rocksdb_opts (state.rocksdb, may be NULL) are
 * RocksDB options by name, applied over eddy's.  Owned, or NULL with err
 * naming the option at fault. */
state_db *state_open(const char *dir, int64_t cache_bytes, const opt_list *rocksdb_opts, char *err, size_t errlen);
void state_close(state_db *db);      /* NULL is a no-op */

/* ---- keys ---- */
typedef struct state_key { char *p; size_t len, cap; } state_key;
void state_key_free(state_key *k);
/* uid 0x00 kg keylen key kind name [0x00 sub]; sub may be NULL.  0 or -1. */
int state_key_state(state_key *k, const char *uid, uint32_t kg, const char *key, size_t klen, char kind,
                    const char *name, size_t nlen, const char *sub, size_t sublen);
/* uid 0x01 kg kind ts keylen key.  0 or -1. */
int state_key_timer(state_key *k, const char *uid, uint32_t kg, char kind, int64_t ts, const char *key, size_t klen);
/* uid 0x02 kg end keylen key start: a window, so that a key group's windows
 * come out by end.  With klen 0 and key NULL, only uid 0x02 kg end: the
 * bound of a range.  0 or -1. */
int state_key_window(state_key *k, const char *uid, uint32_t kg, int64_t end, const char *key, size_t klen,
                     int64_t start);
/* Decodes a window key (key borrowed from k).  0, or -1 when k is not one. */
int state_key_window_parse(const char *k, size_t kl, size_t uidlen, uint32_t *kg, int64_t *end, const char **key,
                           size_t *klen, int64_t *start);
/* Decodes a timer key: its ts and key (borrowed from k).  0, or -1 when k is not one. */
int state_key_timer_parse(const char *k, size_t kl, size_t uidlen, int64_t *ts, const char **key, size_t *klen);

/* ---- values ---- */
/* The payload of a stored value, or NULL when it expired at now_ms. */
const char *state_value_payload(const char *v, size_t vl, int64_t now_ms, size_t *plen);
/* The expiry (ms) a stored value's header holds, or 0 when it has none. */
int64_t state_value_expiry(const char *v, size_t vl);
/* The big-endian unsigned number in p[0..bytes) (the key layout's lengths,
 * key groups and times). */
uint64_t state_get_be(const char *p, int bytes);
/* Writes the header for expiry (0: none) into h; returns its length. */
size_t state_value_header(char *h, int64_t expiry_ms);

/* ---- a task's transaction ---- */
state_tx *state_tx_create(state_db *db);   /* owned, or NULL */
state_db *state_tx_db(const state_tx *tx);
void state_tx_destroy(state_tx *tx);       /* drops what was not committed; NULL is a no-op */
/* The stored value of k (header included), or NULL; borrowed until the next
 * call on tx.  -1 in *err_out... errors are logged and read as absent. */
const char *state_tx_get(state_tx *tx, const char *k, size_t kl, size_t *vl);
/* The committed value, past the cache: for state another task writes (a
 * global table). */
const char *state_tx_get_fresh(state_tx *tx, const char *k, size_t kl, size_t *vl);
int state_tx_put(state_tx *tx, const char *k, size_t kl, const char *v, size_t vl);
int state_tx_delete(state_tx *tx, const char *k, size_t kl);
/* Calls fn for every key in [from, to) in order, through the uncommitted
 * writes; fn returns 0 to go on, 1 to stop.  0, or -1. */
typedef int (*state_each_fn)(void *ud, const char *k, size_t kl, const char *v, size_t vl);
int state_tx_range(state_tx *tx, const char *from, size_t fl, const char *to, size_t tl, state_each_fn fn, void *ud);
/* Writes the batch atomically (end of a record batch; called at the end of
 * every batch, with writes or not, so that its records' marks go with it).
 * 0, or -1 with err. */
int state_tx_commit(state_tx *tx, char *err, size_t errlen);
int state_tx_dirty(const state_tx *tx);   /* uncommitted writes pending */
int state_tx_count(const state_tx *tx);   /* how many */
/* A record starts: state_tx_undo drops every write since (its processing
 * failed and the error policy has it, so its writes must not count). */
void state_tx_mark(state_tx *tx);
void state_tx_undo(state_tx *tx);
/* How many times state_tx_undo was called: what the undone writes did to
 * timers is unknown, so timer.c's index starts afresh when this changes. */
uint64_t state_tx_undos(const state_tx *tx);
/* shuffle = "kafka": fn sees every write of a batch as it commits, in
 * order (v NULL: a delete), then the batch's end (k NULL), to send them to
 * the changelog; fn returning -1 fails the commit.  NULL: none. */
typedef int (*state_log_fn)(void *ud, const char *k, size_t kl, const char *v, size_t vl);
void state_tx_set_log(state_tx *tx, state_log_fn fn, void *ud);
/* The store changed under tx (a restore): forget the values it cached and
 * make timer.c's index scan afresh. */
void state_tx_forget(state_tx *tx);
/* Deletes [from, to) from the database at once (past any tx).  0, or -1. */
int state_delete_range(state_db *db, const char *from, size_t fl, const char *to, size_t tl, char *err, size_t errlen);

/* ---- timers ---- */
typedef struct state_timer { int64_t ts; char *key; size_t klen; uint32_t kg; } state_timer;
/* The timers of kind ('e' event time, 'p' processing time) of operator uid
 * in key groups kgs[0..nkgs) due at `upto` (floors[i] <= ts <= upto: the
 * caller knows key group kgs[i] has none below floors[i], so the deleted
 * ones there are not walked again), removed from the store (in tx) and
 * returned in time order: an owned array of *n (free with
 * state_timers_free), or NULL with *n = 0. */
state_timer *state_timers_due(state_tx *tx, const char *uid, char kind, const uint32_t *kgs, const int64_t *floors,
                              int nkgs, int64_t upto, int *n);
void state_timers_free(state_timer *t, int n);
/* The earliest timer of that kind in key group kg at or after floor, or INT64_MAX. */
int64_t state_timers_next(state_tx *tx, const char *uid, char kind, uint32_t kg, int64_t floor);

/* ---- readers (admin thread): committed data only ---- */
/* Like state_tx_range, over what is committed (a snapshot). */
int state_range(state_db *db, const char *from, size_t fl, const char *to, size_t tl, state_each_fn fn, void *ud);
/* A consistent copy of the database in dir (which must not exist): a
 * RocksDB checkpoint, table files hard-linked, so its cost follows what
 * changed.  0, or -1 with err. */
int state_checkpoint(state_db *db, const char *dir, char *err, size_t errlen);
/* Flushes memtables and compacts [from, to) (NULL: everything), so the
 * compaction filter drops what expired. */
void state_compact(state_db *db);
/* RocksDB's estimate of live keys and of the disk the database uses. */
int64_t state_estimate_keys(state_db *db);
int64_t state_disk_bytes(state_db *db);
/* RocksDB's memory: the block cache's usage and the part of it pinned,
 * memtables, and table readers outside the cache (-1: unknown). */
enum { STATE_MEMORY_PARTS = 4 };
extern const char *const state_memory_parts[STATE_MEMORY_PARTS];
void state_memory(state_db *db, int64_t bytes[STATE_MEMORY_PARTS]);
/* ---- JSON for the admin API (state_json.c) ---- */
/* The named states of one key of operator uid as JSON (values, lists, and
 * maps as objects), expired ones left out: owned, or NULL when it has none. */
json_t *state_key_json(state_db *db, const char *uid, uint32_t kg, const char *key, size_t klen);
/* MessagePack bytes as JSON: the first object, or with all an array of
 * every object in them.  Owned. */
json_t *state_msgpack_json(const char *p, size_t n, int all);
/* Sets the record key k[0..n) in obj, losslessly: as "key" (a string) when
 * it is valid UTF-8, else as "key_base64" (RFC 4648 base64 of its bytes). */
void state_key_field(json_t *obj, const char *k, size_t n);
/* Up to limit keys of operator uid whose key starts with prefix, as an array
 * of {"key", "state"}: owned. */
json_t *state_scan_json(state_db *db, const char *uid, const char *prefix, size_t plen, int limit);

#endif
