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
    RUN(timer_keys_sort_by_time_including_negative_times);
    RUN(expired_values_read_as_absent_and_compaction_removes_them);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) printf("  cannot remove %s\n", dir);
    return TEST_END();
}
