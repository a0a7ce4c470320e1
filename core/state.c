#include "state.h"
#include "ffi_api.h"
#include "clock.h"
#include "log.h"
#include <rocksdb/c.h>
#include <jansson.h>
#include <msgpack.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CACHE_SLOTS 16384         /* per task: values read, by hash of the key */
#define CACHE_VALUE_MAX 4096      /* larger values are not cached */

struct state_db {
    rocksdb_t *db;
    rocksdb_options_t *opts;
    rocksdb_cache_t *cache;
    rocksdb_block_based_table_options_t *table;
    rocksdb_compactionfilter_t *ttl_filter;
    rocksdb_writeoptions_t *wopts;
    rocksdb_readoptions_t *ropts;
    char *dir;
};

typedef struct slot {
    char *k; size_t kl;
    char *v; size_t vl;           /* v NULL with `absent` 1: known to be absent */
    int used, absent;
} slot;

struct state_tx {
    state_db *db;
    rocksdb_writebatch_wi_t *wb;
    int dirty;
    int marks;                    /* save points set in the batch (state_tx_mark) */
    uint64_t undos;               /* state_tx_undo calls so far (timer.c's index follows them) */
    state_key key;                /* reused to build keys (eddy_dedup) */
    char *last; size_t lastlen;   /* the value state_tx_get returned last (owned) */
    slot *cache;                  /* [CACHE_SLOTS]: committed values */
    state_log_fn log; void *log_ud;   /* shuffle = "kafka": each committed write, for the changelog */
    int log_failed;
};

/* ---- the TTL compaction filter ------------------------------------------ */

static unsigned char ttl_filter(void *st, int level, const char *key, size_t kl, const char *v, size_t vl,
                                char **nv, size_t *nvl, unsigned char *changed) {
    (void)st; (void)level; (void)key; (void)kl; (void)nv; (void)nvl;
    *changed = 0;
    size_t plen;
    return vl > 0 && state_value_payload(v, vl, clock_now_ms(), &plen) == NULL;   /* 1: drop it */
}
static const char *ttl_filter_name(void *st) { (void)st; return "eddy.ttl"; }
static void ttl_filter_free(void *st) { (void)st; }     /* RocksDB calls it unconditionally */

/* ---- the database -------------------------------------------------------- */

state_db *state_open(const char *dir, int64_t cache_bytes, const opt_list *rocksdb_opts, char *err, size_t errlen) {
    state_db *s = calloc(1, sizeof *s);
    if (!s) { snprintf(err, errlen, "out of memory"); return NULL; }
    s->dir = strdup(dir);
    s->opts = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(s->opts, 1);
    if (cache_bytes <= 0) cache_bytes = 64 << 20;
    /* the block cache and the write buffers share the budget: half each */
    s->cache = rocksdb_cache_create_lru((size_t)cache_bytes / 2);
    s->table = rocksdb_block_based_options_create();
    rocksdb_block_based_options_set_block_cache(s->table, s->cache);
    rocksdb_block_based_options_set_cache_index_and_filter_blocks(s->table, 1);
    /* most reads are of keys that are not there yet (a new window, a new
     * key's state): a bloom filter answers those without reading the table,
     * and the level-0 filters and indexes stay in the cache */
    rocksdb_block_based_options_set_filter_policy(s->table, rocksdb_filterpolicy_create_bloom(10));
    rocksdb_block_based_options_set_pin_l0_filter_and_index_blocks_in_cache(s->table, 1);
    /* partitioned: a table's filter and index are 4 KB blocks under a small
     * top level that stays pinned.  Whole, a table of a few million keys has
     * a filter of megabytes, more than one shard of the block cache holds:
     * it was read back from the file on every get (most of the time of a
     * run with millions of keys went there) */
    rocksdb_block_based_options_set_index_type(s->table, rocksdb_block_based_table_index_type_two_level_index_search);
    rocksdb_block_based_options_set_partition_filters(s->table, 1);
    rocksdb_block_based_options_set_metadata_block_size(s->table, 4096);
    rocksdb_block_based_options_set_pin_top_level_index_and_filter(s->table, 1);
    rocksdb_block_based_options_set_cache_index_and_filter_blocks_with_high_priority(s->table, 1);
    /* and the memtables get a bloom filter of their own, for the same gets */
    rocksdb_options_set_memtable_prefix_bloom_size_ratio(s->opts, 0.05);
    rocksdb_options_set_memtable_whole_key_filtering(s->opts, 1);
    rocksdb_options_set_block_based_table_factory(s->opts, s->table);
    size_t wb = (size_t)cache_bytes / 4;
    if (wb < (1 << 20)) wb = 1 << 20;
    rocksdb_options_set_write_buffer_size(s->opts, wb);
    rocksdb_options_set_max_write_buffer_number(s->opts, 2);
    rocksdb_options_set_max_open_files(s->opts, 256);
    s->ttl_filter = rocksdb_compactionfilter_create(NULL, ttl_filter_free, ttl_filter, ttl_filter_name);
    rocksdb_options_set_compaction_filter(s->opts, s->ttl_filter);
    /* RocksDB's info LOG keeps only its header (options at open).  Debian's
     * librocksdb keeps its assertions, and its file logger asserts (SIGABRT)
     * on the next line it logs after a write to a full disk failed — which
     * is where RocksDB logs the failed write.  eddy reports RocksDB's errors
     * itself instead (state_tx_commit, state_checkpoint). */
    rocksdb_options_set_info_log_level(s->opts, 5);      /* rocksdb::HEADER_LEVEL */
    char *e = NULL;
    /* the config's state.rocksdb options, over these defaults */
    for (int i = 0; rocksdb_opts && i < rocksdb_opts->n; i++) {
        const opt *o = &rocksdb_opts->items[i];
        char one[1024];
        snprintf(one, sizeof one, "%s=%s", o->key, o->s ? o->s : "");
        rocksdb_options_t *n = rocksdb_options_create();
        rocksdb_get_options_from_string(s->opts, one, n, &e);
        if (e) {
            snprintf(err, errlen, "state.rocksdb.%s: %s", o->key, e);
            rocksdb_free(e);
            rocksdb_options_destroy(n);
            state_close(s);
            return NULL;
        }
        rocksdb_options_destroy(s->opts);
        s->opts = n;
    }
    mkdir(dir, 0755);
    s->db = rocksdb_open(s->opts, dir, &e);
    if (!s->db) {
        snprintf(err, errlen, "state.dir: cannot open the state database %s: %s", dir, e ? e : "?");
        rocksdb_free(e);
        state_close(s);
        return NULL;
    }
    s->wopts = rocksdb_writeoptions_create();
    s->ropts = rocksdb_readoptions_create();
    return s;
}

void state_close(state_db *s) {
    if (!s) return;
    if (s->db) rocksdb_close(s->db);
    if (s->wopts) rocksdb_writeoptions_destroy(s->wopts);
    if (s->ropts) rocksdb_readoptions_destroy(s->ropts);
    if (s->opts) rocksdb_options_destroy(s->opts);
    if (s->table) rocksdb_block_based_options_destroy(s->table);
    if (s->cache) rocksdb_cache_destroy(s->cache);
    if (s->ttl_filter) rocksdb_compactionfilter_destroy(s->ttl_filter);
    free(s->dir);
    free(s);
}

/* ---- keys ---------------------------------------------------------------- */

void state_key_free(state_key *k) { free(k->p); k->p = NULL; k->len = k->cap = 0; }

static int kput(state_key *k, const void *p, size_t n) {
    if (k->len + n > k->cap) {
        size_t nc = k->cap ? k->cap * 2 : 128;
        while (nc < k->len + n) nc *= 2;
        char *np = realloc(k->p, nc);
        if (!np) return -1;
        k->p = np;
        k->cap = nc;
    }
    memcpy(k->p + k->len, p, n);
    k->len += n;
    return 0;
}

static int kput_be(state_key *k, uint64_t v, int bytes) {
    unsigned char b[8];
    for (int i = 0; i < bytes; i++) b[i] = (unsigned char)(v >> (8 * (bytes - 1 - i)));
    return kput(k, b, (size_t)bytes);
}

int state_key_state(state_key *k, const char *uid, uint32_t kg, const char *key, size_t klen, char kind,
                    const char *name, size_t nlen, const char *sub, size_t sublen) {
    k->len = 0;
    char z = 0;
    if (kput(k, uid, strlen(uid)) || kput(k, &z, 1) || kput_be(k, kg, 2) || kput_be(k, klen, 4) || kput(k, key, klen) ||
        kput(k, &kind, 1) || kput(k, name, nlen))
        return -1;
    if (sub && (kput(k, &z, 1) || kput(k, sub, sublen))) return -1;
    return 0;
}

int state_key_timer(state_key *k, const char *uid, uint32_t kg, char kind, int64_t ts, const char *key, size_t klen) {
    k->len = 0;
    char one = 1;
    return kput(k, uid, strlen(uid)) || kput(k, &one, 1) || kput_be(k, kg, 2) || kput(k, &kind, 1) ||
           kput_be(k, (uint64_t)ts ^ (1ULL << 63), 8) || kput_be(k, klen, 4) || kput(k, key, klen) ? -1 : 0;
}

uint64_t state_get_be(const char *p, int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) v = v << 8 | (unsigned char)p[i];
    return v;
}

int state_key_window(state_key *k, const char *uid, uint32_t kg, int64_t end, const char *key, size_t klen,
                     int64_t start) {
    k->len = 0;
    char two = 2;
    if (kput(k, uid, strlen(uid)) || kput(k, &two, 1) || kput_be(k, kg, 2) ||
        kput_be(k, (uint64_t)end ^ (1ULL << 63), 8))
        return -1;
    if (!key) return 0;
    return kput_be(k, klen, 4) || kput(k, key, klen) || kput_be(k, (uint64_t)start ^ (1ULL << 63), 8) ? -1 : 0;
}

int state_key_window_parse(const char *k, size_t kl, size_t uidlen, uint32_t *kg, int64_t *end, const char **key,
                           size_t *klen, int64_t *start) {
    size_t at = uidlen + 1;
    if (kl < at + 2 + 8 + 4 + 8 || k[uidlen] != 2) return -1;
    *kg = (uint32_t)state_get_be(k + at, 2);
    *end = (int64_t)(state_get_be(k + at + 2, 8) ^ (1ULL << 63));
    size_t n = (size_t)state_get_be(k + at + 10, 4);
    if (kl != at + 14 + n + 8) return -1;
    *key = k + at + 14;
    *klen = n;
    *start = (int64_t)(state_get_be(k + at + 14 + n, 8) ^ (1ULL << 63));
    return 0;
}

int state_key_timer_parse(const char *k, size_t kl, size_t uidlen, int64_t *ts, const char **key, size_t *klen) {
    size_t at = uidlen + 1 + 2 + 1;
    if (kl < at + 12 || k[uidlen] != 1) return -1;
    *ts = (int64_t)(state_get_be(k + at, 8) ^ (1ULL << 63));
    size_t n = (size_t)state_get_be(k + at + 8, 4);
    if (kl != at + 12 + n) return -1;
    *key = k + at + 12;
    *klen = n;
    return 0;
}

/* ---- values -------------------------------------------------------------- */

size_t state_value_header(char *h, int64_t expiry_ms) {
    if (expiry_ms <= 0) { h[0] = 0; return 1; }
    h[0] = STATE_TTL;
    for (int i = 0; i < 8; i++) h[1 + i] = (char)((uint64_t)expiry_ms >> (8 * (7 - i)));
    return 9;
}

int64_t state_value_expiry(const char *v, size_t vl) {
    return vl >= 9 && (v[0] & STATE_TTL) ? (int64_t)state_get_be(v + 1, 8) : 0;
}

const char *state_value_payload(const char *v, size_t vl, int64_t now_ms, size_t *plen) {
    if (vl < 1) return NULL;
    if (v[0] & STATE_TTL) {
        if (vl < 9) return NULL;
        int64_t expiry = (int64_t)state_get_be(v + 1, 8);
        if (now_ms >= expiry) return NULL;
        *plen = vl - 9;
        return v + 9;
    }
    *plen = vl - 1;
    return v + 1;
}

/* ---- transactions -------------------------------------------------------- */

static uint64_t hash(const char *p, size_t n) {          /* FNV-1a: a cache slot, not security */
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) { h ^= (unsigned char)p[i]; h *= 1099511628211ULL; }
    return h;
}

state_db *state_tx_db(const state_tx *tx) { return tx->db; }

state_tx *state_tx_create(state_db *db) {
    state_tx *tx = calloc(1, sizeof *tx);
    if (!tx) return NULL;
    tx->db = db;
    tx->wb = rocksdb_writebatch_wi_create(0, 1);
    tx->cache = calloc(CACHE_SLOTS, sizeof *tx->cache);
    if (!tx->wb || !tx->cache) { state_tx_destroy(tx); return NULL; }
    return tx;
}

static void slot_clear(slot *s) {
    free(s->k); free(s->v);
    memset(s, 0, sizeof *s);
}

void state_tx_destroy(state_tx *tx) {
    if (!tx) return;
    if (tx->wb) rocksdb_writebatch_wi_destroy(tx->wb);
    if (tx->cache) for (int i = 0; i < CACHE_SLOTS; i++) slot_clear(&tx->cache[i]);
    free(tx->cache);
    free(tx->last);
    state_key_free(&tx->key);
    free(tx);
}

static slot *slot_of(state_tx *tx, const char *k, size_t kl) { return &tx->cache[hash(k, kl) % CACHE_SLOTS]; }

/* Remembers a committed value (or its absence) in the cache. */
static void remember(state_tx *tx, const char *k, size_t kl, const char *v, size_t vl) {
    if (v && vl > CACHE_VALUE_MAX) return;
    slot *s = slot_of(tx, k, kl);
    slot_clear(s);
    s->k = malloc(kl ? kl : 1);
    s->v = v ? malloc(vl ? vl : 1) : NULL;
    if (!s->k || (v && !s->v)) { slot_clear(s); return; }
    memcpy(s->k, k, kl);
    s->kl = kl;
    if (v) { memcpy(s->v, v, vl); s->vl = vl; }
    s->absent = v == NULL;
    s->used = 1;
}

static const char *keep_last(state_tx *tx, char *v, size_t vl, size_t *out) {
    free(tx->last);
    tx->last = v;
    tx->lastlen = vl;
    *out = vl;
    return v;
}

const char *state_tx_get(state_tx *tx, const char *k, size_t kl, size_t *vl) {
    slot *s = slot_of(tx, k, kl);
    if (s->used && s->kl == kl && memcmp(s->k, k, kl) == 0) {   /* a hot key: no read at all */
        if (s->absent) return NULL;
        *vl = s->vl;
        return s->v;
    }
    char *e = NULL;
    size_t n = 0;
    /* a write of this batch wins over the database (the batch is checked first) */
    char *v = tx->dirty ? rocksdb_writebatch_wi_get_from_batch_and_db(tx->wb, tx->db->db, tx->db->ropts, k, kl, &n, &e)
                        : rocksdb_get(tx->db->db, tx->db->ropts, k, kl, &n, &e);
    if (e) { log_error("state: %s", e); rocksdb_free(e); return NULL; }
    remember(tx, k, kl, v, n);
    if (!v) return NULL;
    char *c = malloc(n ? n : 1);
    if (c) memcpy(c, v, n);
    rocksdb_free(v);
    return c ? keep_last(tx, c, n, vl) : NULL;
}

const char *state_tx_get_fresh(state_tx *tx, const char *k, size_t kl, size_t *vl) {
    char *e = NULL;
    size_t n = 0;
    char *v = rocksdb_get(tx->db->db, tx->db->ropts, k, kl, &n, &e);
    if (e) { log_error("state: %s", e); rocksdb_free(e); return NULL; }
    if (!v) return NULL;
    char *c = malloc(n ? n : 1);
    if (c) memcpy(c, v, n);
    rocksdb_free(v);
    return c ? keep_last(tx, c, n, vl) : NULL;
}

/* The cache follows every write, so it is right for the batch in progress
 * and, once committed, for the database. */
int state_tx_put(state_tx *tx, const char *k, size_t kl, const char *v, size_t vl) {
    rocksdb_writebatch_wi_put(tx->wb, k, kl, v, vl);
    slot *s = slot_of(tx, k, kl);
    if (vl <= CACHE_VALUE_MAX) remember(tx, k, kl, v, vl);
    else if (s->used && s->kl == kl && memcmp(s->k, k, kl) == 0) slot_clear(s);
    tx->dirty = 1;
    return 0;
}

int state_tx_delete(state_tx *tx, const char *k, size_t kl) {
    rocksdb_writebatch_wi_delete(tx->wb, k, kl);
    remember(tx, k, kl, NULL, 0);
    tx->dirty = 1;
    return 0;
}

int state_tx_dirty(const state_tx *tx) { return tx->dirty; }
int state_tx_count(const state_tx *tx) { return rocksdb_writebatch_wi_count(tx->wb); }

void state_tx_mark(state_tx *tx) {
    if (!tx->dirty && tx->marks > 0) {          /* no writes yet: the earlier save points are of no use */
        rocksdb_writebatch_wi_clear(tx->wb);
        tx->marks = 0;
    }
    rocksdb_writebatch_wi_set_save_point(tx->wb);
    tx->marks++;
}

void state_tx_undo(state_tx *tx) {
    tx->undos++;
    if (tx->marks == 0) return;
    char *e = NULL;
    rocksdb_writebatch_wi_rollback_to_save_point(tx->wb, &e);
    tx->marks--;
    if (e) { log_error("state: rolling back a failed record's writes: %s", e); rocksdb_free(e); }
    /* the cache followed those writes: forget it (failures are rare) */
    for (int i = 0; i < CACHE_SLOTS; i++) slot_clear(&tx->cache[i]);
}

uint64_t state_tx_undos(const state_tx *tx) { return tx->undos; }

void state_tx_set_log(state_tx *tx, state_log_fn fn, void *ud) { tx->log = fn; tx->log_ud = ud; }

void state_tx_forget(state_tx *tx) {
    tx->undos++;                  /* timer.c's index scans afresh */
    for (int i = 0; i < CACHE_SLOTS; i++) slot_clear(&tx->cache[i]);
}

int state_delete_range(state_db *db, const char *from, size_t fl, const char *to, size_t tl, char *err, size_t errlen) {
    char *e = NULL;
    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    rocksdb_writebatch_delete_range(b, from, fl, to, tl);
    rocksdb_write(db->db, db->wopts, b, &e);
    rocksdb_writebatch_destroy(b);
    if (e) {
        snprintf(err, errlen, "state: deleting a range in %s: %s", db->dir, e);
        rocksdb_free(e);
        return -1;
    }
    return 0;
}

/* ---- FFI exports (ffi_api.h): per-record calls of the Lua runtime -------- */

void eddy_state_mark(void *tx) { state_tx_mark(tx); }
void eddy_state_undo(void *tx) { state_tx_undo(tx); }

/* A dedup entry: the header (expiry: ttl of processing time, then the
 * compaction filter drops it) and the record time it was seen at, 8 bytes
 * big-endian. */
int32_t eddy_dedup(void *txp, const char *uid, uint32_t kg, const char *key, size_t klen, int64_t ts, int64_t ttl_ms) {
    state_tx *tx = txp;
    int64_t now = clock_now_ms();
    if (state_key_state(&tx->key, uid, kg, key, klen, 'd', "", 0, NULL, 0) < 0) return -1;
    size_t vl, pl;
    const char *v = state_tx_get(tx, tx->key.p, tx->key.len, &vl);
    const char *p = v ? state_value_payload(v, vl, now, &pl) : NULL;
    if (p && pl == 8) {
        int64_t seen = 0;
        for (int i = 0; i < 8; i++) seen = (int64_t)((uint64_t)seen << 8 | (unsigned char)p[i]);
        if (ts - seen < ttl_ms) return 0;
    }
    char rec[STATE_HDR_MAX + 8];
    size_t hl = state_value_header(rec, now + ttl_ms);
    for (int i = 0; i < 8; i++) rec[hl + i] = (char)((uint64_t)ts >> (8 * (7 - i)));
    state_tx_put(tx, tx->key.p, tx->key.len, rec, hl + 8);
    return 1;
}

static int each(rocksdb_iterator_t *it, const char *from, size_t fl, const char *to, size_t tl, state_each_fn fn,
                void *ud) {
    int rc = 0;
    for (rocksdb_iter_seek(it, from, fl); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl);
        size_t m = kl < tl ? kl : tl;
        int c = memcmp(k, to, m);
        if (c > 0 || (c == 0 && kl >= tl)) break;
        const char *v = rocksdb_iter_value(it, &vl);
        if (fn(ud, k, kl, v, vl)) break;
    }
    char *e = NULL;
    rocksdb_iter_get_error(it, &e);
    if (e) { log_error("state: %s", e); rocksdb_free(e); rc = -1; }
    return rc;
}

int state_tx_range(state_tx *tx, const char *from, size_t fl, const char *to, size_t tl, state_each_fn fn, void *ud) {
    /* the stored part stops at `to`: without a bound, a seek into a range
     * with no live key walks every deleted key after it (the tombstones of
     * fired timers in the key groups that follow) until it finds one */
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    if (!ro) return -1;
    rocksdb_readoptions_set_iterate_upper_bound(ro, to, tl);
    rocksdb_iterator_t *base = rocksdb_create_iterator(tx->db->db, ro);
    rocksdb_iterator_t *it = rocksdb_writebatch_wi_create_iterator_with_base(tx->wb, base);   /* owns base */
    int rc = each(it, from, fl, to, tl, fn, ud);
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    return rc;
}

/* RocksDB's error e about writing into dir, as the message a user acts on:
 * a full disk says so first, and what to do. */
static void write_error(char *err, size_t errlen, const char *what, const char *dir, const char *e) {
    if (strstr(e, "No space left on device"))
        snprintf(err, errlen, "state.dir: no space left on device %s %s: free space there (or move "
                 "state.dir), then run eddy again; RocksDB said: %s", what, dir, e);
    else
        snprintf(err, errlen, "state: %s %s failed: %s", what, dir, e);
}

static void log_put(void *ud, const char *k, size_t kl, const char *v, size_t vl) {
    state_tx *tx = ud;
    if (!tx->log_failed && tx->log(tx->log_ud, k, kl, v, vl) < 0) tx->log_failed = 1;
}

static void log_delete(void *ud, const char *k, size_t kl) {
    state_tx *tx = ud;
    if (!tx->log_failed && tx->log(tx->log_ud, k, kl, NULL, 0) < 0) tx->log_failed = 1;
}

int state_tx_commit(state_tx *tx, char *err, size_t errlen) {
    if (!tx->dirty) return 0;
    if (tx->log) {
        /* every write of the batch, in order, then the end (k NULL) */
        tx->log_failed = 0;
        rocksdb_writebatch_wi_iterate(tx->wb, tx, log_put, log_delete);
        if (tx->log(tx->log_ud, NULL, 0, NULL, 0) < 0) tx->log_failed = 1;      /* the batch's end */
        if (tx->log_failed) {
            snprintf(err, errlen, "state: the changelog refused a write (see the log)");
            return -1;
        }
    }
    char *e = NULL;
    rocksdb_write_writebatch_wi(tx->db->db, tx->db->wopts, tx->wb, &e);
    if (e) {
        write_error(err, errlen, "writing to", tx->db->dir, e);
        rocksdb_free(e);
        return -1;
    }
    rocksdb_writebatch_wi_clear(tx->wb);
    tx->dirty = 0;
    tx->marks = 0;
    return 0;
}

/* ---- readers ------------------------------------------------------------- */

int state_range(state_db *db, const char *from, size_t fl, const char *to, size_t tl, state_each_fn fn, void *ud) {
    const rocksdb_snapshot_t *snap = rocksdb_create_snapshot(db->db);
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_snapshot(ro, snap);
    rocksdb_iterator_t *it = rocksdb_create_iterator(db->db, ro);
    int rc = each(it, from, fl, to, tl, fn, ud);
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    rocksdb_release_snapshot(db->db, snap);
    return rc;
}

int state_checkpoint(state_db *db, const char *dir, char *err, size_t errlen) {
    char *e = NULL;
    rocksdb_checkpoint_t *cp = rocksdb_checkpoint_object_create(db->db, &e);
    if (cp && !e) rocksdb_checkpoint_create(cp, dir, 0, &e);   /* 0: flush first, no WAL to copy */
    if (cp) rocksdb_checkpoint_object_destroy(cp);
    if (e) {
        write_error(err, errlen, "a checkpoint into", dir, e);
        rocksdb_free(e);
        return -1;
    }
    return 0;
}

void state_compact(state_db *db) {
    rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
    rocksdb_flushoptions_set_wait(fo, 1);
    char *e = NULL;
    rocksdb_flush(db->db, fo, &e);
    if (e) { log_warn("state: flush: %s", e); rocksdb_free(e); }
    rocksdb_flushoptions_destroy(fo);
    rocksdb_compact_range(db->db, NULL, 0, NULL, 0);
}

static int64_t int_property(state_db *db, const char *name) {
    char *v = rocksdb_property_value(db->db, name);
    int64_t n = v ? atoll(v) : -1;
    rocksdb_free(v);
    return n;
}

int64_t state_estimate_keys(state_db *db) { return int_property(db, "rocksdb.estimate-num-keys"); }
int64_t state_disk_bytes(state_db *db) {
    int64_t sst = int_property(db, "rocksdb.total-sst-files-size");
    int64_t mem = int_property(db, "rocksdb.cur-size-all-mem-tables");
    return (sst > 0 ? sst : 0) + (mem > 0 ? mem : 0);
}

const char *const state_memory_parts[STATE_MEMORY_PARTS] = {"block_cache", "pinned", "memtables", "table_readers"};

void state_memory(state_db *db, int64_t bytes[STATE_MEMORY_PARTS]) {
    bytes[0] = (int64_t)rocksdb_cache_get_usage(db->cache);
    bytes[1] = (int64_t)rocksdb_cache_get_pinned_usage(db->cache);
    bytes[2] = int_property(db, "rocksdb.cur-size-all-mem-tables");
    bytes[3] = int_property(db, "rocksdb.estimate-table-readers-mem");
}

/* ---- timers -------------------------------------------------------------- */

typedef struct due { state_timer *t; int n, cap; size_t uidlen; uint32_t kg; int first_only; int64_t first; } due;

static int due_cb(void *ud, const char *k, size_t kl, const char *v, size_t vl) {
    (void)v; (void)vl;
    due *d = ud;
    int64_t ts;
    const char *key;
    size_t klen;
    if (state_key_timer_parse(k, kl, d->uidlen, &ts, &key, &klen) < 0) return 0;
    if (d->first_only) { if (ts < d->first) d->first = ts; return 1; }
    if (d->n == d->cap) {
        int nc = d->cap ? d->cap * 2 : 64;
        state_timer *nt = realloc(d->t, sizeof *nt * nc);
        if (!nt) return 1;
        d->t = nt;
        d->cap = nc;
    }
    state_timer *t = &d->t[d->n];
    t->key = malloc(klen ? klen : 1);
    if (!t->key) return 1;
    memcpy(t->key, key, klen);
    t->klen = klen;
    t->ts = ts;
    t->kg = d->kg;
    d->n++;
    return 0;
}

static int by_time(const void *a, const void *b) {
    const state_timer *x = a, *y = b;
    if (x->ts != y->ts) return x->ts < y->ts ? -1 : 1;
    if (x->kg != y->kg) return x->kg < y->kg ? -1 : 1;
    size_t m = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(x->key, y->key, m);
    return c ? c : (x->klen < y->klen ? -1 : x->klen > y->klen);
}

state_timer *state_timers_due(state_tx *tx, const char *uid, char kind, const uint32_t *kgs, const int64_t *floors,
                              int nkgs, int64_t upto, int *n) {
    due d = { .uidlen = strlen(uid) };
    state_key from = {0}, to = {0};
    for (int i = 0; i < nkgs; i++) {
        d.kg = kgs[i];
        if (state_key_timer(&from, uid, kgs[i], kind, floors[i], "", 0) < 0) break;
        /* everything at or before upto: up to the first key of upto + 1 */
        int64_t end = upto == INT64_MAX ? INT64_MAX : upto + 1;
        if (state_key_timer(&to, uid, kgs[i], kind, end, "", 0) < 0) break;
        size_t tl = to.len - 4;                /* up to the time: every key at an earlier one */
        if (upto == INT64_MAX) { tl = to.len - 4 - 8; to.p[tl - 1]++; }   /* the whole kind */
        state_tx_range(tx, from.p, from.len - 4, to.p, tl, due_cb, &d);
    }
    if (d.n > 1) qsort(d.t, (size_t)d.n, sizeof *d.t, by_time);
    for (int i = 0; i < d.n; i++) {
        if (state_key_timer(&from, uid, d.t[i].kg, kind, d.t[i].ts, d.t[i].key, d.t[i].klen) == 0)
            state_tx_delete(tx, from.p, from.len);
    }
    state_key_free(&from);
    state_key_free(&to);
    *n = d.n;
    return d.t;
}

void state_timers_free(state_timer *t, int n) {
    for (int i = 0; i < n; i++) free(t[i].key);
    free(t);
}

int64_t state_timers_next(state_tx *tx, const char *uid, char kind, uint32_t kg, int64_t floor) {
    due d = { .uidlen = strlen(uid), .first_only = 1, .first = INT64_MAX };
    state_key from = {0}, to = {0};
    if (state_key_timer(&from, uid, kg, kind, floor, "", 0) == 0 &&
        state_key_timer(&to, uid, kg, kind, INT64_MAX, "", 0) == 0) {
        to.len -= 4 + 8;
        to.p[to.len - 1]++;                    /* past every timer of this kind */
        state_tx_range(tx, from.p, from.len - 4, to.p, to.len, due_cb, &d);
    }
    state_key_free(&from);
    state_key_free(&to);
    return d.first;
}
