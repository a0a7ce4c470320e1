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
#define SHRINK_AT 65536           /* a transaction's arrays past this many entries are freed after a commit */

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

/* A task's writes of the batch in progress stay in memory until the commit:
 * one entry per key written (its last write), found through a hash table,
 * and listed in key order by an index sorted lazily (the keys new since the
 * last sort are sorted and merged in when a range read or the commit needs
 * them).  The commit writes them in key order, which is also the cheapest
 * order for the memtable's skip list.  (A RocksDB WriteBatchWithIndex did
 * this before: its skip list compared keys on every write, and with the
 * memtable inserts of its commits that was over half the instructions of a
 * windowed job.)  Values read are kept in a small cache of the committed
 * data, which the commit also fills. */

typedef struct slot {            /* a committed value (or its absence), by hash of the key */
    char *b;                     /* the key, then the value */
    uint32_t kl, vl;
    unsigned char used, absent;
} slot;

enum { P_PUT, P_DEL, P_NONE };   /* a pending entry: written, deleted, or undone (not written) */

typedef struct pend {
    uint64_t h;
    char *b;                     /* the key, then the value (owned) */
    uint32_t kl, vl;
    uint32_t pos;                /* its place in the hash table */
    unsigned char st;
} pend;

typedef struct undo_rec {        /* what a write replaced, for state_tx_undo */
    uint32_t e;                  /* the entry */
    char *b;                     /* its blob before (owned here), NULL: the entry was new */
    uint32_t kl, vl;
    unsigned char st;
} undo_rec;

struct state_tx {
    state_db *db;
    pend *ents; uint32_t n, cap;            /* the batch's keys, in order of first write */
    uint32_t *tab; uint32_t tcap;           /* entry index + 1 (0: empty); tcap a power of 2 */
    uint32_t *sorted, *tmp; uint32_t nsorted, scap, tmpcap;   /* ents [0, nsorted) in key order */
    undo_rec *undo; uint32_t nundo, ucap;
    uint32_t *marks; uint32_t nmarks, mcap; /* nundo at each state_tx_mark */
    uint32_t lost_marks;                    /* marks that could not be kept (out of memory) */
    int writes;                   /* writes since the last commit */
    int ranging;                  /* range reads in progress: replaced values are kept (until the
                                   * commit, which no range read makes; a Lua error out of a callback
                                   * may leave it set, which only keeps them until the commit) */
    rocksdb_writebatch_t *wb;     /* the commit's, reused */
    uint64_t undos;               /* state_tx_undo calls so far (timer.c's index follows them) */
    state_key key;                /* reused to build keys (eddy_dedup) */
    char *last; size_t lastlen;   /* the value state_tx_get returned last, when not cached (owned) */
    slot *cache;                  /* [CACHE_SLOTS] */
    state_log_fn log; void *log_ud;   /* shuffle = "kafka": each committed write, for the changelog */
    int log_failed;
};

/* RocksDB counts key comparisons in a thread-local perf context by
 * default: turned off once per thread, as eddy never reads it. */
static __thread int perf_off;
static void no_perf(void) {
    if (!perf_off) { rocksdb_set_perf_level(rocksdb_disable); perf_off = 1; }
}

static uint64_t hash(const char *p, size_t n) {          /* FNV-1a: a table slot, not security */
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) { h ^= (unsigned char)p[i]; h *= 1099511628211ULL; }
    return h;
}

static int keycmp(const char *a, size_t al, const char *b, size_t bl) {
    int c = memcmp(a, b, al < bl ? al : bl);
    return c ? c : (al < bl ? -1 : al > bl);
}

static char *blob(const char *k, size_t kl, const char *v, size_t vl) {
    char *b = malloc(kl + vl ? kl + vl : 1);
    if (!b) return NULL;
    memcpy(b, k, kl);
    if (vl) memcpy(b + kl, v, vl);
    return b;
}

state_db *state_tx_db(const state_tx *tx) { return tx->db; }

state_tx *state_tx_create(state_db *db) {
    state_tx *tx = calloc(1, sizeof *tx);
    if (!tx) return NULL;
    tx->db = db;
    tx->tcap = 1024;
    tx->tab = calloc(tx->tcap, sizeof *tx->tab);
    tx->wb = rocksdb_writebatch_create();
    tx->cache = calloc(CACHE_SLOTS, sizeof *tx->cache);
    if (!tx->tab || !tx->wb || !tx->cache) { state_tx_destroy(tx); return NULL; }
    return tx;
}

static void slot_clear(slot *s) {
    free(s->b);
    memset(s, 0, sizeof *s);
}

static void forget_cache(state_tx *tx) {
    for (int i = 0; i < CACHE_SLOTS; i++) if (tx->cache[i].used) slot_clear(&tx->cache[i]);
}

/* Forgets the pending writes: after a commit (cached: 1, their values go
 * to the cache) or on destroy (0). */
static void pend_reset(state_tx *tx, int cached) {
    for (uint32_t i = 0; i < tx->n; i++) {
        pend *e = &tx->ents[i];
        tx->tab[e->pos] = 0;
        slot *s = &tx->cache[e->h % CACHE_SLOTS];
        if (cached && e->st != P_NONE && e->vl <= CACHE_VALUE_MAX) {
            slot_clear(s);
            *s = (slot){ .b = e->b, .kl = e->kl, .vl = e->vl, .used = 1, .absent = e->st == P_DEL };
        } else {
            if (cached && e->st != P_NONE && s->used && s->kl == e->kl && memcmp(s->b, e->b, e->kl) == 0)
                slot_clear(s);                  /* a value too large to keep: the cached one is stale */
            free(e->b);
        }
    }
    for (uint32_t i = 0; i < tx->nundo; i++) free(tx->undo[i].b);
    tx->n = tx->nsorted = tx->nundo = tx->nmarks = tx->lost_marks = 0;
    tx->writes = 0;
    tx->ranging = 0;
    if (tx->cap > SHRINK_AT || tx->ucap > SHRINK_AT || tx->mcap > SHRINK_AT) {
        /* a huge batch (a firing of millions of windows, a dropped operator)
         * does not keep its arrays for the task's life */
        free(tx->ents); free(tx->sorted); free(tx->tmp); free(tx->undo); free(tx->marks);
        tx->ents = NULL; tx->sorted = tx->tmp = tx->marks = NULL; tx->undo = NULL;
        tx->cap = tx->scap = tx->tmpcap = tx->ucap = tx->mcap = 0;
        uint32_t *t = calloc(1024, sizeof *t);
        if (t) { free(tx->tab); tx->tab = t; tx->tcap = 1024; }
    }
}

void state_tx_destroy(state_tx *tx) {
    if (!tx) return;
    if (tx->tab) pend_reset(tx, 0);
    if (tx->wb) rocksdb_writebatch_destroy(tx->wb);
    if (tx->cache) forget_cache(tx);
    free(tx->cache);
    free(tx->ents);
    free(tx->tab);
    free(tx->sorted);
    free(tx->tmp);
    free(tx->undo);
    free(tx->marks);
    free(tx->last);
    state_key_free(&tx->key);
    free(tx);
}

/* The table slot of key k: its entry's, or the empty one where it goes. */
static uint32_t *tab_find(state_tx *tx, uint64_t h, const char *k, size_t kl) {
    uint32_t mask = tx->tcap - 1;
    for (uint32_t i = (uint32_t)h & mask;; i = (i + 1) & mask) {
        uint32_t v = tx->tab[i];
        if (!v) return &tx->tab[i];
        const pend *e = &tx->ents[v - 1];
        if (e->h == h && e->kl == kl && memcmp(e->b, k, kl) == 0) return &tx->tab[i];
    }
}

static int tab_grow(state_tx *tx) {
    uint32_t nc = tx->tcap * 2;
    uint32_t *nt = calloc(nc, sizeof *nt);
    if (!nt) return -1;
    for (uint32_t j = 0; j < tx->n; j++) {
        uint32_t i = (uint32_t)tx->ents[j].h & (nc - 1);
        while (nt[i]) i = (i + 1) & (nc - 1);
        nt[i] = j + 1;
        tx->ents[j].pos = i;
    }
    free(tx->tab);
    tx->tab = nt;
    tx->tcap = nc;
    return 0;
}

static int grow_array(void **p, uint32_t *cap, uint32_t need, size_t size) {
    if (need <= *cap) return 0;
    uint32_t nc = *cap ? *cap : 64;
    while (nc < need) nc *= 2;
    void *np = realloc(*p, nc * size);
    if (!np) return -1;
    *p = np;
    *cap = nc;
    return 0;
}

static const pend *pend_find(state_tx *tx, uint64_t h, const char *k, size_t kl) {
    if (!tx->n) return NULL;
    uint32_t v = *tab_find(tx, h, k, kl);
    return v && tx->ents[v - 1].st != P_NONE ? &tx->ents[v - 1] : NULL;
}

/* A write of the batch: v NULL deletes.  k and v may point into a value
 * this tx returned (they are copied before anything is freed). */
static int pend_write(state_tx *tx, const char *k, size_t kl, const char *v, size_t vl) {
    if (kl > UINT32_MAX / 2 || vl > UINT32_MAX / 2) return -1;
    uint64_t h = hash(k, kl);
    if ((tx->n + 1) * 2 > tx->tcap && tab_grow(tx) < 0) return -1;
    if (grow_array((void **)&tx->undo, &tx->ucap, tx->nundo + 1, sizeof *tx->undo) < 0) return -1;
    uint32_t *at = tab_find(tx, h, k, kl);
    char *b = blob(k, kl, v, v ? vl : 0);
    if (!b) return -1;
    pend *e;
    if (*at) {
        e = &tx->ents[*at - 1];
        if (tx->nmarks || tx->ranging)         /* an undo may want it back; a range read may hold it */
            tx->undo[tx->nundo++] = (undo_rec){ .e = *at - 1, .b = e->b, .kl = e->kl, .vl = e->vl, .st = e->st };
        else
            free(e->b);
    } else {
        if (grow_array((void **)&tx->ents, &tx->cap, tx->n + 1, sizeof *tx->ents) < 0) { free(b); return -1; }
        if (tx->nmarks) tx->undo[tx->nundo++] = (undo_rec){ .e = tx->n, .b = NULL };
        e = &tx->ents[tx->n];
        *e = (pend){ .h = h, .pos = (uint32_t)(at - tx->tab) };
        *at = ++tx->n;
    }
    e->b = b;
    e->kl = (uint32_t)kl;
    e->vl = v ? (uint32_t)vl : 0;
    e->st = v ? P_PUT : P_DEL;
    tx->writes++;
    return 0;
}

static int by_key(const void *a, const void *b, void *ud) {
    const pend *ents = ud;
    const pend *x = &ents[*(const uint32_t *)a], *y = &ents[*(const uint32_t *)b];
    return keycmp(x->b, x->kl, y->b, y->kl);
}

/* Brings the sorted index up to date: the new keys sorted, then merged in. */
static int pend_sort(state_tx *tx) {
    uint32_t old = tx->nsorted, n = tx->n;
    if (old == n) return 0;
    if (grow_array((void **)&tx->sorted, &tx->scap, n, sizeof *tx->sorted) < 0 ||
        grow_array((void **)&tx->tmp, &tx->tmpcap, n, sizeof *tx->tmp) < 0) return -1;
    uint32_t *a = tx->sorted, *t = tx->tmp, m = n - old;
    for (uint32_t i = 0; i < m; i++) t[i] = old + i;
    qsort_r(t, m, sizeof *t, by_key, tx->ents);
    /* merged in place from the end: each new key's place found by binary
     * search (few new keys into many is the common case: a range read or
     * a fired chunk between writes), each old one moved at most once */
    uint32_t hi = old;
    for (uint32_t k = m; k-- > 0;) {
        uint32_t lo = 0, up = hi;
        while (lo < up) {
            uint32_t mid = lo + (up - lo) / 2;
            if (by_key(&a[mid], &t[k], tx->ents) < 0) lo = mid + 1;
            else up = mid;
        }
        memmove(&a[lo + k + 1], &a[lo], (hi - lo) * sizeof *a);
        a[lo + k] = t[k];
        hi = lo;
    }
    tx->nsorted = n;
    return 0;
}

/* The first place in the sorted index whose key is >= k. */
static uint32_t lower_bound(const state_tx *tx, const char *k, size_t kl) {
    uint32_t lo = 0, hi = tx->nsorted;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        const pend *e = &tx->ents[tx->sorted[mid]];
        if (keycmp(e->b, e->kl, k, kl) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static const char *keep_last(state_tx *tx, char *v, size_t vl, size_t *out) {
    free(tx->last);
    tx->last = v;
    tx->lastlen = vl;
    *out = vl;
    return v;
}

const char *state_tx_get(state_tx *tx, const char *k, size_t kl, size_t *vl) {
    uint64_t h = hash(k, kl);
    const pend *p = pend_find(tx, h, k, kl);
    if (p) {                                   /* a write of this batch wins over the database */
        if (p->st == P_DEL) return NULL;
        *vl = p->vl;
        return p->b + p->kl;
    }
    slot *s = &tx->cache[h % CACHE_SLOTS];
    if (s->used && s->kl == kl && memcmp(s->b, k, kl) == 0) {   /* a hot key: no read at all */
        if (s->absent) return NULL;
        *vl = s->vl;
        return s->b + s->kl;
    }
    no_perf();
    char *e = NULL;
    rocksdb_pinnableslice_t *ps = rocksdb_get_pinned(tx->db->db, tx->db->ropts, k, kl, &e);
    if (e) { log_error("state: %s", e); rocksdb_free(e); return NULL; }
    size_t n = 0;
    const char *v = ps ? rocksdb_pinnableslice_value(ps, &n) : NULL;
    const char *out = NULL;
    if (!v || n <= CACHE_VALUE_MAX) {          /* the value, or its absence, into the cache */
        char *b = blob(k, kl, v, v ? n : 0);
        if (b) {
            slot_clear(s);
            *s = (slot){ .b = b, .kl = (uint32_t)kl, .vl = (uint32_t)n, .used = 1, .absent = v == NULL };
            if (v) { *vl = n; out = b + kl; }
        }
    }
    if (v && !out) {
        char *c = malloc(n ? n : 1);
        if (c) { memcpy(c, v, n); out = keep_last(tx, c, n, vl); }
    }
    rocksdb_pinnableslice_destroy(ps);
    return out;
}

const char *state_tx_get_fresh(state_tx *tx, const char *k, size_t kl, size_t *vl) {
    no_perf();
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

int state_tx_put(state_tx *tx, const char *k, size_t kl, const char *v, size_t vl) {
    return pend_write(tx, k, kl, v ? v : "", vl);
}

int state_tx_delete(state_tx *tx, const char *k, size_t kl) { return pend_write(tx, k, kl, NULL, 0); }

int state_tx_dirty(const state_tx *tx) { return tx->writes > 0; }
int state_tx_count(const state_tx *tx) { return tx->writes; }

void state_tx_mark(state_tx *tx) {
    if (grow_array((void **)&tx->marks, &tx->mcap, tx->nmarks + 1, sizeof *tx->marks) < 0) {
        log_error("state: out of memory marking a record's writes: should it fail, its writes stay");
        tx->lost_marks++;                      /* its undo must not take the previous record's mark */
        return;
    }
    tx->marks[tx->nmarks++] = tx->nundo;
}

void state_tx_undo(state_tx *tx) {
    tx->undos++;
    if (tx->lost_marks) { tx->lost_marks--; return; }
    if (tx->nmarks == 0) return;
    uint32_t to = tx->marks[--tx->nmarks];
    while (tx->nundo > to) {                   /* newest first: each entry as it was before */
        undo_rec *u = &tx->undo[--tx->nundo];
        pend *e = &tx->ents[u->e];
        if (u->b) {
            free(e->b);
            e->b = u->b;
            e->kl = u->kl;
            e->vl = u->vl;
            e->st = u->st;
        } else {
            e->st = P_NONE;                    /* keeps its key: the table still finds it */
        }
    }
}

uint64_t state_tx_undos(const state_tx *tx) { return tx->undos; }

void state_tx_set_log(state_tx *tx, state_log_fn fn, void *ud) { tx->log = fn; tx->log_ud = ud; }

void state_tx_forget(state_tx *tx) {
    tx->undos++;                  /* timer.c's index scans afresh */
    forget_cache(tx);
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
    /* the batch's writes in [from, to): their places in the sorted index,
     * copied (fn may write, which may sort the index again) */
    uint32_t *mine = NULL, np = 0;
    if (tx->n) {
        if (pend_sort(tx) < 0) return -1;
        uint32_t lo = lower_bound(tx, from, fl), hi = lower_bound(tx, to, tl);
        if (hi > lo) {
            mine = malloc((hi - lo) * sizeof *mine);
            if (!mine) return -1;
            memcpy(mine, tx->sorted + lo, (hi - lo) * sizeof *mine);
            np = hi - lo;
        }
    }
    /* the stored part stops at `to`: without a bound, a seek into a range
     * with no live key walks every deleted key after it (the tombstones of
     * fired timers in the key groups that follow) until it finds one */
    no_perf();
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    if (!ro) { free(mine); return -1; }
    rocksdb_readoptions_set_iterate_upper_bound(ro, to, tl);
    rocksdb_iterator_t *it = rocksdb_create_iterator(tx->db->db, ro);
    rocksdb_iter_seek(it, from, fl);
    tx->ranging++;                             /* what fn replaces stays until the commit */
    uint32_t i = 0;
    int stop = 0;
    while (!stop) {
        size_t dkl = 0, dvl = 0;
        const char *dk = rocksdb_iter_valid(it) ? rocksdb_iter_key(it, &dkl) : NULL;
        if (dk && keycmp(dk, dkl, to, tl) >= 0) dk = NULL;
        if (!dk && i == np) break;
        const pend *p = i < np ? &tx->ents[mine[i]] : NULL;
        int c = !p ? 1 : !dk ? -1 : keycmp(p->b, p->kl, dk, dkl);
        if (c <= 0) {                          /* the batch's write wins */
            i++;
            if (p->st == P_PUT) stop = fn(ud, p->b, p->kl, p->b + p->kl, p->vl);
            else if (p->st == P_NONE && c == 0) {
                const char *dv = rocksdb_iter_value(it, &dvl);
                stop = fn(ud, dk, dkl, dv, dvl);
            }
            if (c == 0) rocksdb_iter_next(it);
        } else {
            const char *dv = rocksdb_iter_value(it, &dvl);
            stop = fn(ud, dk, dkl, dv, dvl);
            rocksdb_iter_next(it);
        }
    }
    tx->ranging--;
    int rc = 0;
    char *e = NULL;
    rocksdb_iter_get_error(it, &e);
    if (e) { log_error("state: %s", e); rocksdb_free(e); rc = -1; }
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    free(mine);
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

int state_tx_commit(state_tx *tx, char *err, size_t errlen) {
    if (!tx->writes) { tx->nmarks = 0; return 0; }     /* the batch ends: its marks with it */
    if (pend_sort(tx) < 0) { snprintf(err, errlen, "state: out of memory committing a batch"); return -1; }
    rocksdb_writebatch_clear(tx->wb);
    tx->log_failed = 0;
    for (uint32_t i = 0; i < tx->n; i++) {    /* in key order; the changelog sees the same */
        const pend *p = &tx->ents[tx->sorted[i]];
        if (p->st == P_NONE) continue;
        const char *v = p->st == P_PUT ? p->b + p->kl : NULL;
        if (v) rocksdb_writebatch_put(tx->wb, p->b, p->kl, v, p->vl);
        else rocksdb_writebatch_delete(tx->wb, p->b, p->kl);
        if (tx->log && !tx->log_failed && tx->log(tx->log_ud, p->b, p->kl, v, p->vl) < 0) tx->log_failed = 1;
    }
    if (tx->log && tx->log(tx->log_ud, NULL, 0, NULL, 0) < 0) tx->log_failed = 1;     /* the batch's end */
    if (tx->log_failed) {
        snprintf(err, errlen, "state: the changelog refused a write (see the log)");
        return -1;
    }
    no_perf();
    char *e = NULL;
    rocksdb_write(tx->db->db, tx->db->wopts, tx->wb, &e);
    if (e) {
        write_error(err, errlen, "writing to", tx->db->dir, e);
        rocksdb_free(e);
        return -1;
    }
    pend_reset(tx, 1);
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
