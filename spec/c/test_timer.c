/* timer.c: timers set and taken in time order across key groups, the index
 * that skips key groups with nothing due, a deleted timer, a timer in a key
 * group the task does not own, and an undone record's timers (the index
 * must not trust what it knew before the undo). */
#include "test.h"
#include "timer.h"
#include "ffi_api.h"
#include <stdlib.h>
#include <unistd.h>

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

static const uint32_t kgs[] = { 4, 5, 6, 7 };

/* The due timers as "ts:key" joined by spaces. */
static void take(timer_index *ix, const char *uid, char kind, int64_t upto, char *out, size_t cap) {
    state_timer *due;
    int n;
    out[0] = 0;
    if (timer_take_due(ix, uid, kind, upto, &due, &n) < 0) { snprintf(out, cap, "error"); return; }
    size_t len = 0;
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(out + len, cap - len, "%s%lld:%.*s", i ? " " : "", (long long)due[i].ts,
                                (int)due[i].klen, due[i].key);
    state_timers_free(due, n);
}

TEST(due_timers_come_out_once_in_time_order_across_key_groups) {
    state_db *db = open_fresh();
    CHECK(db);
    if (!db) return;
    state_tx *tx = state_tx_create(db);
    timer_index *ix = timer_index_create(tx, kgs, 4);
    CHECK(ix);
    char got[256];
    CHECK(timer_set(ix, "op", 6, 'e', 300, "c", 1) == 0);
    CHECK(timer_set(ix, "op", 4, 'e', 100, "a", 1) == 0);
    CHECK(timer_set(ix, "op", 5, 'e', 200, "b", 1) == 0);
    CHECK(timer_set(ix, "op", 5, 'e', 200, "b", 1) == 0);       /* the same ts twice: one timer */
    CHECK(timer_set(ix, "op", 7, 'p', 150, "d", 1) == 0);       /* another kind */
    take(ix, "op", 'e', 50, got, sizeof got);
    CHECK_STR(got, "");
    take(ix, "op", 'e', 200, got, sizeof got);
    CHECK_STR(got, "100:a 200:b");
    take(ix, "op", 'e', 200, got, sizeof got);
    CHECK_STR(got, "");                                         /* taken: gone */
    CHECK(timer_set(ix, "op", 4, 'e', 250, "e", 1) == 0);       /* below a floor the index knew */
    take(ix, "op", 'e', 1000, got, sizeof got);
    CHECK_STR(got, "250:e 300:c");
    take(ix, "op", 'p', 1000, got, sizeof got);
    CHECK_STR(got, "150:d");
    timer_index_destroy(ix);
    state_tx_destroy(tx);
    state_close(db);
}

TEST(a_deleted_timer_and_one_in_another_task_s_key_group) {
    state_db *db = open_fresh();
    CHECK(db);
    if (!db) return;
    state_tx *tx = state_tx_create(db);
    timer_index *ix = timer_index_create(tx, kgs, 4);
    char got[256];
    CHECK(timer_set(ix, "op", 4, 'e', 100, "a", 1) == 0);
    CHECK(timer_set(ix, "op", 4, 'e', 110, "b", 1) == 0);
    CHECK(timer_del(ix, "op", 4, 100, "a", 1) == 0);
    CHECK(timer_set(ix, "op", 9, 'e', 120, "x", 1) == 0);       /* kg 9 is not the task's: not taken */
    take(ix, "op", 'e', 1000, got, sizeof got);
    CHECK_STR(got, "110:b");
    timer_index_destroy(ix);
    state_tx_destroy(tx);
    state_close(db);
}

TEST(after_an_undo_the_index_scans_again_and_finds_the_timers_the_undo_restored) {
    state_db *db = open_fresh();
    CHECK(db);
    if (!db) return;
    state_tx *tx = state_tx_create(db);
    timer_index *ix = timer_index_create(tx, kgs, 4);
    char got[256];
    CHECK(timer_set(ix, "op", 4, 'e', 100, "a", 1) == 0);
    take(ix, "op", 'e', 50, got, sizeof got);                   /* the index now knows: first at 100 */
    CHECK_STR(got, "");
    eddy_state_mark(tx);
    CHECK(eddy_timer_del(ix, "op", 4, "a", 1, 100) == 0);       /* a record deletes it, then fails */
    take(ix, "op", 'e', 100, got, sizeof got);
    CHECK_STR(got, "");
    eddy_state_undo(tx);                                       /* its delete is undone: the timer is back */
    take(ix, "op", 'e', 100, got, sizeof got);
    CHECK_STR(got, "100:a");
    eddy_state_mark(tx);
    CHECK(eddy_timer_set(ix, "op", 5, "b", 1, 'e', 60) == 0);   /* a record sets one, then fails */
    eddy_state_undo(tx);
    take(ix, "op", 'e', 1000, got, sizeof got);
    CHECK_STR(got, "");
    timer_index_destroy(ix);
    state_tx_destroy(tx);
    state_close(db);
}

TEST(dedup_sees_a_key_again_within_its_ttl_only) {
    state_db *db = open_fresh();
    CHECK(db);
    if (!db) return;
    state_tx *tx = state_tx_create(db);
    CHECK(eddy_dedup(tx, "d", 3, "k", 1, 1000, 500) == 1);
    CHECK(eddy_dedup(tx, "d", 3, "k", 1, 1400, 500) == 0);     /* within 500 of 1000 */
    CHECK(eddy_dedup(tx, "d", 3, "j", 1, 1400, 500) == 1);     /* another key */
    CHECK(eddy_dedup(tx, "d", 3, "k", 1, 1500, 500) == 1);     /* 500 after: new again */
    CHECK(eddy_dedup(tx, "d", 3, "k", 1, 1600, 500) == 0);     /* ... from 1500 on */
    state_tx_destroy(tx);
    state_close(db);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/eddy-test-timer.%d", (int)getpid());
    RUN(due_timers_come_out_once_in_time_order_across_key_groups);
    RUN(a_deleted_timer_and_one_in_another_task_s_key_group);
    RUN(after_an_undo_the_index_scans_again_and_finds_the_timers_the_undo_restored);
    RUN(dedup_sees_a_key_again_within_its_ttl_only);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) printf("  cannot remove %s\n", dir);
    return TEST_END();
}
