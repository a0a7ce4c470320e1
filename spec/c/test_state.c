/* state.c: keys in order, the batch in front of the database, atomic
 * commits, ranges through pending writes, and TTL (readers and compaction). */
#include "test.h"
#include "state.h"
#include "clock.h"
#include <stdlib.h>
#include <unistd.h>

static int64_t fake_now;
static int64_t fake_clock(void) { return fake_now; }

static char dir[64];

static state_db *open_fresh(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) return NULL;
    char err[512];
    state_db *db = state_open(dir, 8 << 20, NULL, err, sizeof err);
    if (!db) printf("  %s\n", err);
    return db;
}

static int count_cb(void *ud, const char *k, size_t kl, const char *v, size_t vl) {
    (void)k; (void)kl; (void)v; (void)vl;
    (*(int *)ud)++;
    return 0;
}

TEST(a_batch_is_read_through_before_it_commits_and_readers_see_it_only_after) {
    state_db *db = open_fresh();
    CHECK(db);
    if (!db) return;
    state_tx *tx = state_tx_create(db);
    state_key k = {0};
    state_key_state(&k, "op", 7, "ada", 3, 'v', "total", 5, NULL, 0);
    size_t n;
    CHECK(state_tx_get(tx, k.p, k.len, &n) == NULL);
    CHECK(state_tx_put(tx, k.p, k.len, "\0x", 2) == 0);
    const char *v = state_tx_get(tx, k.p, k.len, &n);
    CHECK(v && n == 2 && v[1] == 'x');
    int seen = 0;
    state_range(db, "op", 2, "op\xff", 3, count_cb, &seen);
    CHECK(seen == 0);                          /* not committed: readers see nothing */
    char err[256];
    CHECK(state_tx_commit(tx, err, sizeof err) == 0);
    state_range(db, "op", 2, "op\xff", 3, count_cb, &seen);
    CHECK(seen == 1);
    CHECK(state_tx_delete(tx, k.p, k.len) == 0);
    CHECK(state_tx_get(tx, k.p, k.len, &n) == NULL);   /* a delete in the batch reads as absent */
    state_tx_destroy(tx);                       /* dropped, not committed */
    tx = state_tx_create(db);
    v = state_tx_get(tx, k.p, k.len, &n);
    CHECK(v && n == 2);
    state_tx_destroy(tx);
    state_key_free(&k);
    state_close(db);
}

typedef struct collect { int n; char keys[8][64]; } collect;
static int collect_cb(void *ud, const char *k, size_t kl, const char *v, size_t vl) {
    (void)v; (void)vl;
    collect *c = ud;
    if (c->n < 8) { memcpy(c->keys[c->n], k + kl - 1, 1); c->keys[c->n][1] = 0; c->n++; }
    return 0;
}

TEST(ranges_merge_pending_writes_with_the_database_in_key_order) {
    state_db *db = open_fresh();
    if (!db) { CHECK(db); return; }
    state_tx *tx = state_tx_create(db);
    state_key k = {0}, from = {0}, to = {0};
    const char *subs[] = {"b", "d"};
    for (int i = 0; i < 2; i++) {
        state_key_state(&k, "op", 1, "u", 1, 'm', "seen", 4, subs[i], 1);
        state_tx_put(tx, k.p, k.len, "\0", 1);
    }
    char err[256];
    state_tx_commit(tx, err, sizeof err);
    state_key_state(&k, "op", 1, "u", 1, 'm', "seen", 4, "a", 1);
    state_tx_put(tx, k.p, k.len, "\0", 1);
    state_key_state(&k, "op", 1, "u", 1, 'm', "seen", 4, "d", 1);
    state_tx_delete(tx, k.p, k.len);
    state_key_state(&from, "op", 1, "u", 1, 'm', "seen", 4, "", 0);
    state_key_state(&to, "op", 1, "u", 1, 'm', "seen", 4, "\xff", 1);
    collect c = {0};
    CHECK(state_tx_range(tx, from.p, from.len, to.p, to.len, collect_cb, &c) == 0);
    CHECK(c.n == 2);
    CHECK_STR(c.keys[0], "a");
    CHECK_STR(c.keys[1], "b");
    state_tx_destroy(tx);
    state_key_free(&k); state_key_free(&from); state_key_free(&to);
    state_close(db);
}

/* A model of a state_tx over NKEYS keys: the committed values and the
 * batch's view, with a copy of the view at each mark. */
#define NKEYS 64
#define NMARKS 64
typedef struct model { int db[NKEYS], view[NKEYS], marks[NMARKS][NKEYS], nmarks; } model;   /* 0: absent, else the value */

static void mkey(state_key *k, int i) {
    char name[8];
    snprintf(name, sizeof name, "k%03d", i);
    state_key_state(k, "op", (uint32_t)(i % 3), "u", 1, 'v', name, 4, NULL, 0);
}

typedef struct seen { int n, vals[NKEYS]; char last[64]; size_t lastlen; int ordered, wrote; state_tx *tx; } seen;
static int seen_cb(void *ud, const char *k, size_t kl, const char *v, size_t vl) {
    seen *s = ud;
    if (s->n && (kl < s->lastlen ? memcmp(k, s->last, kl) <= 0 : memcmp(k, s->last, s->lastlen) < 0)) s->ordered = 0;
    if (kl <= sizeof s->last) { memcpy(s->last, k, kl); s->lastlen = kl; }
    int val = 0;
    if (vl == sizeof val) memcpy(&val, v, sizeof val);
    if (s->n < NKEYS) s->vals[s->n] = val;
    s->n++;
    if (s->wrote) {                        /* a callback that writes (as window_drop's does) */
        char copy[64];
        memcpy(copy, k, kl);
        state_tx_delete(s->tx, copy, kl);
        state_tx_put(s->tx, k, kl, v, vl);     /* k, v point into what the delete replaced */
    }
    return 0;
}

TEST(random_writes_marks_undos_ranges_and_commits_agree_with_a_model) {
    state_db *db = open_fresh();
    if (!db) { CHECK(db); return; }
    state_tx *tx = state_tx_create(db);
    model m;
    memset(&m, 0, sizeof m);
    state_key k = {0}, from = {0}, to = {0};
    const char *env = getenv("STATE_SEED");            /* another sequence: STATE_SEED=N */
    unsigned seed = env ? (unsigned)atoi(env) : 12345;
    int bad = 0;
    char err[256];
    for (int step = 0; step < 40000 && !bad; step++) {
        seed = seed * 1103515245u + 12345u;
        int op = (int)((seed >> 16) % 100), i = (int)((seed >> 8) % NKEYS);
        mkey(&k, i);
        if (op < 35) {                                     /* put */
            int val = step + 1;
            state_tx_put(tx, k.p, k.len, (const char *)&val, sizeof val);
            m.view[i] = val;
        } else if (op < 50) {                              /* delete */
            state_tx_delete(tx, k.p, k.len);
            m.view[i] = 0;
        } else if (op < 75) {                              /* get */
            size_t n;
            const char *v = state_tx_get(tx, k.p, k.len, &n);
            int val = 0;
            if (v && n == sizeof val) memcpy(&val, v, sizeof val);
            if (val != m.view[i]) { printf("  step %d: get k%03d = %d, model %d\n", step, i, val, m.view[i]); bad = 1; }
        } else if (op < 83) {                              /* a record starts */
            if (m.nmarks < NMARKS) { state_tx_mark(tx); memcpy(m.marks[m.nmarks++], m.view, sizeof m.view); }
        } else if (op < 88) {                              /* its processing failed */
            state_tx_undo(tx);
            if (m.nmarks) memcpy(m.view, m.marks[--m.nmarks], sizeof m.view);
        } else if (op < 96) {                              /* a range over key group i % 3 */
            state_key_state(&from, "op", (uint32_t)(i % 3), "", 0, 0, "", 0, NULL, 0);
            state_key_state(&to, "op", (uint32_t)(i % 3) + 1, "", 0, 0, "", 0, NULL, 0);
            from.len = to.len = 2 + 1 + 2;             /* uid 0x00 kg */
            seen s = { .ordered = 1, .wrote = op >= 94, .tx = tx };
            state_tx_range(tx, from.p, from.len, to.p, to.len, seen_cb, &s);
            int want = 0, j = 0, same = s.ordered;
            for (int x = i % 3; x < NKEYS; x += 3) if (m.view[x]) want++;
            for (int x = 0; x < NKEYS; x++) if ((x % 3) == (i % 3) && m.view[x] && j < s.n) same &= s.vals[j++] == m.view[x];
            if (s.n != want || !same) {
                printf("  step %d: range saw %d (ordered %d), model %d:", step, s.n, s.ordered, want);
                for (int x = 0; x < s.n && x < NKEYS; x++) printf(" %d", s.vals[x]);
                printf(" / model");
                for (int x = i % 3; x < NKEYS; x += 3) if (m.view[x]) printf(" %d", m.view[x]);
                printf("\n");
                bad = 1;
            }
        } else {                                           /* the batch ends */
            if (state_tx_commit(tx, err, sizeof err) != 0) { printf("  %s\n", err); bad = 1; }
            memcpy(m.db, m.view, sizeof m.view);
            m.nmarks = 0;
        }
    }
    CHECK(!bad);
    state_tx_destroy(tx);                                  /* what was not committed is dropped */
    tx = state_tx_create(db);
    for (int i = 0; i < NKEYS; i++) {
        mkey(&k, i);
        size_t n;
        const char *v = state_tx_get(tx, k.p, k.len, &n);
        int val = 0;
        if (v && n == sizeof val) memcpy(&val, v, sizeof val);
        if (val != m.db[i]) { printf("  after reopening: k%03d = %d, committed %d\n", i, val, m.db[i]); bad = 1; }
    }
    CHECK(!bad);
    state_tx_destroy(tx);
    state_key_free(&k); state_key_free(&from); state_key_free(&to);
    state_close(db);
}

TEST(timer_keys_sort_by_time_including_negative_times) {
    state_key a = {0}, b = {0}, c = {0};
    state_key_timer(&a, "op", 3, 'e', -5, "k", 1);
    state_key_timer(&b, "op", 3, 'e', 10, "k", 1);
    state_key_timer(&c, "op", 3, 'e', 1000, "a", 1);
    CHECK(a.len == b.len && memcmp(a.p, b.p, a.len) < 0);
    CHECK(memcmp(b.p, c.p, b.len < c.len ? b.len : c.len) < 0);
    int64_t ts;
    const char *key;
    size_t kl;
    CHECK(state_key_timer_parse(a.p, a.len, 2, &ts, &key, &kl) == 0 && ts == -5 && kl == 1 && key[0] == 'k');
    state_key_free(&a); state_key_free(&b); state_key_free(&c);
}

TEST(expired_values_read_as_absent_and_compaction_removes_them) {
    clock_set(fake_clock);
    fake_now = 1000;
    state_db *db = open_fresh();
    if (!db) { CHECK(db); return; }
    state_tx *tx = state_tx_create(db);
    state_key k = {0};
    char v[64];
    for (int i = 0; i < 1000; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i);
        state_key_state(&k, "op", 0, key, strlen(key), 'v', "x", 1, NULL, 0);
        size_t h = state_value_header(v, i < 500 ? 2000 : 0);   /* half expire at 2000 */
        memcpy(v + h, "payload", 7);
        state_tx_put(tx, k.p, k.len, v, h + 7);
    }
    char err[256];
    CHECK(state_tx_commit(tx, err, sizeof err) == 0);
    size_t n, pl;
    state_key_state(&k, "op", 0, "k1", 2, 'v', "x", 1, NULL, 0);
    const char *got = state_tx_get(tx, k.p, k.len, &n);
    CHECK(got && state_value_payload(got, n, fake_now, &pl) && pl == 7);
    fake_now = 2000;
    CHECK(state_value_payload(got, n, fake_now, &pl) == NULL);
    int before = 0, after = 0;
    state_range(db, "op", 2, "op\xff", 3, count_cb, &before);
    state_compact(db);
    state_range(db, "op", 2, "op\xff", 3, count_cb, &after);
    CHECK(before == 1000);
    CHECK(after == 500);
    state_tx_destroy(tx);
    state_key_free(&k);
    state_close(db);
    clock_set(NULL);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/eddy-test-state.%d", (int)getpid());
    RUN(a_batch_is_read_through_before_it_commits_and_readers_see_it_only_after);
    RUN(ranges_merge_pending_writes_with_the_database_in_key_order);
    RUN(random_writes_marks_undos_ranges_and_commits_agree_with_a_model);
    RUN(timer_keys_sort_by_time_including_negative_times);
    RUN(expired_values_read_as_absent_and_compaction_removes_them);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) printf("  cannot remove %s\n", dir);
    return TEST_END();
}
