/* window.c: assignment, aggregates, firing order and late records. */
#include "test.h"
#include "window.h"
#include "ffi_api.h"
#include "state.h"
#include "keygroup.h"
#include <stdint.h>
#include <stdlib.h>

/* Each operator gets a fresh store (one at a time), owning every key group. */
static const char *dir = "/tmp/eddy-test-window";
static state_db *db;
static state_tx *tx;
static uint32_t all_kgs[128];

static void fresh_store(void) {
    state_tx_destroy(tx);
    state_close(db);
    tx = NULL;
    db = NULL;
    char cmd[128], err[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) return;
    db = state_open(dir, 8 << 20, NULL, err, sizeof err);
    if (!db) { printf("  %s\n", err); return; }
    tx = state_tx_create(db);
    for (int i = 0; i < 128; i++) all_kgs[i] = (uint32_t)i;
}

static window_op *wc(int64_t size, int64_t advance, int64_t offset, int64_t lateness) {
    fresh_store();
    return window_create(tx, "win", all_kgs, 128, 128, size, advance, offset, lateness);
}

static window_op *wcs(int64_t gap, int64_t lateness) {
    fresh_store();
    return window_create_sessions(tx, "win", all_kgs, 128, 128, gap, lateness);
}

static int add(window_op *w, const char *k, int64_t ts, double x) {
    return window_add(w, k, strlen(k), ts, x);
}

TEST(tumbling_counts_fire_when_the_watermark_reaches_end_minus_one) {
    window_op *w = wc(60000, 60000, 0, 0);
    CHECK(add(w, "a", 1000, 1) == 0);
    CHECK(add(w, "a", 59999, 1) == 0);
    CHECK(add(w, "a", 60000, 1) == 0);          /* next window */
    CHECK(window_advance(w, 59998) == 0);       /* end - 1 = 59999 not reached */
    CHECK(window_advance(w, 59999) == 1);
    const eddy_fired *f = window_fired(w, 0);
    CHECK(f && f->start == 0 && f->end == 60000 && f->count == 2);
    CHECK(window_open_count(w) == 1);
    CHECK(window_advance(w, INT64_MAX / 2) == 1);
    CHECK(window_fired(w, 0)->start == 60000);
    window_destroy(w);
}

TEST(builtin_aggregates) {
    window_op *w = wc(10, 10, 0, 0);
    add(w, "k", 1, 5);
    add(w, "k", 2, -3);
    add(w, "k", 3, 10);
    CHECK(window_advance(w, 100) == 1);
    const eddy_fired *f = window_fired(w, 0);
    CHECK(f->count == 3 && f->sum == 12 && f->min == -3 && f->max == 10);
    window_destroy(w);
}

/* At one end, by key group then key (keygroup_of): an order that does not
 * depend on batching or on how many tasks there are. */
static int before(const char *a, const char *b) {
    uint32_t ka = keygroup_of(a, strlen(a), 128), kb = keygroup_of(b, strlen(b), 128);
    if (ka != kb) return ka < kb;
    if (strlen(a) != strlen(b)) return strlen(a) < strlen(b);
    return strcmp(a, b) < 0;
}

TEST(fires_in_end_then_key_group_then_key_order) {
    window_op *w = wc(10, 10, 0, 0);
    add(w, "zeta", 15, 1);
    add(w, "beta", 5, 1);
    add(w, "alpha", 7, 1);
    add(w, "alp", 12, 1);
    CHECK(window_advance(w, 1000) == 4);
    const char *first = before("alpha", "beta") ? "alpha" : "beta", *second = before("alpha", "beta") ? "beta" : "alpha";
    const char *third = before("alp", "zeta") ? "alp" : "zeta", *fourth = before("alp", "zeta") ? "zeta" : "alp";
    CHECK(window_fired(w, 0)->end == 10 && window_fired(w, 0)->klen == strlen(first) &&
          memcmp(window_fired(w, 0)->key, first, strlen(first)) == 0);
    CHECK(window_fired(w, 1)->end == 10 && memcmp(window_fired(w, 1)->key, second, strlen(second)) == 0);
    CHECK(window_fired(w, 2)->end == 20 && memcmp(window_fired(w, 2)->key, third, strlen(third)) == 0);
    CHECK(window_fired(w, 3)->end == 20 && memcmp(window_fired(w, 3)->key, fourth, strlen(fourth)) == 0);
    CHECK(window_fired(w, 4) == NULL);
    CHECK(window_advance(w, 1000) == 0);
    window_destroy(w);
}

TEST(a_watermark_past_many_windows_fires_them_a_chunk_a_call) {
    window_op *w = wc(10, 10, 0, 0);
    char k[32];
    for (int i = 0; i < 3000; i++) {
        snprintf(k, sizeof k, "k%d", i);
        add(w, k, i % 2 ? 5 : 15, 1);             /* 1500 windows end at 10, 1500 at 20 */
    }
    int total = 0, calls = 0, n, ordered = 1;
    int64_t last_end = 0;
    while ((n = window_advance(w, 1000)) > 0) {
        calls++;
        CHECK(n <= 2048);
        for (int i = 0; i < n; i++) {
            if (window_fired(w, i)->end < last_end) ordered = 0;
            last_end = window_fired(w, i)->end;
        }
        total += n;
    }
    CHECK(total == 3000);
    CHECK(calls >= 3);
    CHECK(ordered);
    CHECK(window_open_count(w) == 0);
    window_destroy(w);
}

TEST(hopping_windows_overlap) {
    window_op *w = wc(10, 5, 0, 0);      /* [0,10) [5,15) [10,20) ... */
    add(w, "k", 7, 1);                           /* in [0,10) and [5,15) */
    CHECK(window_open_count(w) == 2);
    CHECK(window_advance(w, 9) == 1);
    CHECK(window_fired(w, 0)->start == 0);
    CHECK(window_advance(w, 14) == 1);
    CHECK(window_fired(w, 0)->start == 5);
    window_destroy(w);
}

TEST(a_record_for_fired_windows_is_too_late_without_lateness) {
    window_op *w = wc(10, 10, 0, 0);
    add(w, "k", 3, 1);
    CHECK(window_advance(w, 9) == 1);
    CHECK(window_open_count(w) == 0);           /* freed: it can no longer change */
    CHECK(add(w, "k", 4, 1) == WINDOW_TOO_LATE);
    CHECK(window_late_dropped(w) == 0);          /* the caller counts what it drops */
    window_count_dropped(w);
    CHECK(window_late_dropped(w) == 1);
    window_destroy(w);
}

TEST(within_lateness_a_record_fires_a_late_update_at_once) {
    window_op *w = wc(10, 10, 0, 5);  /* kept until wm >= 9 + 5 */
    add(w, "k", 3, 1);
    CHECK(window_advance(w, 9) == 1);            /* on time: count 1 */
    CHECK(window_fired(w, 0)->count == 1);
    CHECK(window_open_count(w) == 1);
    CHECK(add(w, "k", 4, 1) == 1);               /* late firing: count 2 */
    CHECK(window_fired(w, 0)->count == 2 && window_fired(w, 0)->start == 0);
    CHECK(window_advance(w, 13) == 0);
    CHECK(window_open_count(w) == 1);
    CHECK(window_advance(w, 14) == 0);           /* end - 1 + lateness: freed, nothing fires again */
    CHECK(window_open_count(w) == 0);
    CHECK(add(w, "k", 5, 1) == WINDOW_TOO_LATE);
    window_destroy(w);
}

TEST(a_first_record_for_a_window_the_watermark_passed_fires_late) {
    window_op *w = wc(10, 10, 0, 100);
    add(w, "k", 25, 1);
    CHECK(window_advance(w, 30) == 1);           /* [20,30) */
    CHECK(add(w, "k", 5, 1) == 1);               /* [0,10) never had a record: it fires late now */
    CHECK(window_fired(w, 0)->start == 0 && window_fired(w, 0)->count == 1);
    CHECK(window_next_end(w) == INT64_MAX);
    window_destroy(w);
}

TEST(offset_and_negative_times) {
    window_op *w = wc(10, 10, 3, 0);     /* [..., -7,3) [3,13) ... */
    add(w, "k", 2, 1);
    add(w, "k", -8, 1);                          /* [-17,-7) */
    CHECK(window_advance(w, 100) == 2);
    CHECK(window_fired(w, 0)->start == -17 && window_fired(w, 0)->end == -7);
    CHECK(window_fired(w, 1)->start == -7 && window_fired(w, 1)->end == 3);
    window_destroy(w);
}

TEST(the_watermark_never_goes_back) {
    window_op *w = wc(10, 10, 0, 0);
    add(w, "k", 25, 1);
    CHECK(window_advance(w, 30) == 1);
    CHECK(window_advance(w, 5) == 0);
    CHECK(add(w, "k", 12, 1) == WINDOW_TOO_LATE);   /* still late: the watermark stays at 30 */
    window_destroy(w);
    window_destroy(NULL);
}

TEST(sessions_grow_merge_and_fire_at_their_end) {
    window_op *w = wcs(5, 0);   /* gap 5 */
    CHECK(add(w, "a", 10, 1) == 0);               /* [10,15) */
    CHECK(add(w, "a", 12, 2) == 0);               /* [10,17) */
    CHECK(add(w, "a", 20, 4) == 0);               /* a second session [20,25) */
    CHECK(window_open_count(w) == 2);
    CHECK(add(w, "a", 16, 8) == 0);               /* out of order, bridges both: [10,25) */
    CHECK(window_open_count(w) == 1);
    CHECK(window_advance(w, 23) == 0);
    CHECK(window_advance(w, 24) == 1);
    const eddy_fired *f = window_fired(w, 0);
    CHECK(f && f->start == 10 && f->end == 25 && f->count == 4 && f->sum == 15 && f->min == 1 && f->max == 8);
    CHECK(window_open_count(w) == 0);
    CHECK(add(w, "a", 11, 1) == WINDOW_TOO_LATE);
    window_destroy(w);
}

TEST(sessions_of_different_keys_stay_apart) {
    window_op *w = wcs(4, 0);
    add(w, "a", 10, 1);
    add(w, "b", 11, 1);
    CHECK(window_open_count(w) == 2);
    CHECK(window_advance(w, 100) == 2);
    CHECK(memcmp(window_fired(w, 0)->key, "a", 1) == 0 && memcmp(window_fired(w, 1)->key, "b", 1) == 0);
    window_destroy(w);
}

TEST(a_late_record_within_lateness_joins_a_fired_session_and_fires_late) {
    window_op *w = wcs(4, 10);
    add(w, "a", 10, 1);                           /* [10,14) */
    CHECK(window_advance(w, 13) == 1);            /* on time */
    CHECK(add(w, "a", 10, 1) == 1);               /* still [10,14): its end has passed: late */
    CHECK(window_fired(w, 0) && window_fired(w, 0)->count == 2);
    /* a record whose session reaches past the watermark makes a new window that fires on time */
    CHECK(add(w, "a", 13, 1) == 0);               /* [10,17) */
    CHECK(window_advance(w, 16) == 1);
    CHECK(window_fired(w, 0) && window_fired(w, 0)->end == 17 && window_fired(w, 0)->count == 3);
    window_destroy(w);
}

TEST(session_find_and_put_merge_states_for_lua) {
    window_op *w = wcs(5, 0);
    int64_t starts[8], lo, hi;
    CHECK(window_session_find(w, "k", 1, 10, starts, 8, &lo, &hi) == 0 && lo == 10 && hi == 15);
    CHECK(window_session_put(w, "k", 1, starts, 0, lo, hi, "A", 1) == 0);
    CHECK(window_session_find(w, "k", 1, 17, starts, 8, &lo, &hi) == 0);
    CHECK(window_session_put(w, "k", 1, starts, 0, lo, hi, "B", 1) == 0);
    int n = window_session_find(w, "k", 1, 13, starts, 8, &lo, &hi);   /* bridges [10,15) and [17,22) */
    CHECK(n == 2 && lo == 10 && hi == 22);
    if (n == 2) CHECK(window_session_put(w, "k", 1, starts, 2, lo, hi, "AB", 2) == 0);
    size_t len;
    const char *st = window_state(w, "k", 1, 10, &len);
    CHECK(st && len == 2 && memcmp(st, "AB", 2) == 0);
    CHECK(window_open_count(w) == 1);
    window_destroy(w);
}

TEST(windows_outlive_the_operator_and_fire_after_a_reopen) {
    window_op *w = wc(10, 10, 0, 0);
    add(w, "a", 1, 1);
    add(w, "a", 2, 1);
    add(w, "b", 15, 1);
    char err[256];
    CHECK(state_tx_commit(tx, err, sizeof err) == 0);
    window_destroy(w);                          /* the stored windows stay */
    w = window_create(tx, "win", all_kgs, 128, 128, 10, 10, 0, 0);
    CHECK(window_open_count(w) == 2);
    CHECK(window_next_end(w) == 10);
    CHECK(window_advance(w, 9) == 1);
    const eddy_fired *f = window_fired(w, 0);
    CHECK(f && f->count == 2 && f->klen == 1 && f->key[0] == 'a');
    CHECK(window_open_count(w) == 1);
    window_drop(w);
    CHECK(window_open_count(w) == 0);
    CHECK(window_advance(w, 100) == 0);
    window_destroy(w);
}

TEST(a_window_function_state_is_kept_with_its_window) {
    window_op *w = wc(10, 10, 0, 0);
    double count;
    CHECK(window_store(w, "k", 1, 0, "ab", 2, WINDOW_REPLACE, &count) == 0 && count == 1);
    CHECK(window_store(w, "k", 1, 0, "c", 1, WINDOW_APPEND, &count) == 0 && count == 2);
    size_t len;
    const char *st = window_state(w, "k", 1, 0, &len);
    CHECK(st && len == 3 && memcmp(st, "abc", 3) == 0);
    CHECK(window_advance(w, 9) == 1);
    CHECK(window_fired(w, 0)->state_len == 3 && memcmp(window_fired(w, 0)->state, "abc", 3) == 0);
    CHECK(window_state(w, "k", 1, 0, &len) == NULL);
    window_destroy(w);
}

int main(void) {
    RUN(tumbling_counts_fire_when_the_watermark_reaches_end_minus_one);
    RUN(builtin_aggregates);
    RUN(fires_in_end_then_key_group_then_key_order);
    RUN(a_watermark_past_many_windows_fires_them_a_chunk_a_call);
    RUN(hopping_windows_overlap);
    RUN(a_record_for_fired_windows_is_too_late_without_lateness);
    RUN(within_lateness_a_record_fires_a_late_update_at_once);
    RUN(a_first_record_for_a_window_the_watermark_passed_fires_late);
    RUN(offset_and_negative_times);
    RUN(the_watermark_never_goes_back);
    RUN(sessions_grow_merge_and_fire_at_their_end);
    RUN(sessions_of_different_keys_stay_apart);
    RUN(a_late_record_within_lateness_joins_a_fired_session_and_fires_late);
    RUN(session_find_and_put_merge_states_for_lua);
    RUN(windows_outlive_the_operator_and_fire_after_a_reopen);
    RUN(a_window_function_state_is_kept_with_its_window);
    state_tx_destroy(tx);
    state_close(db);
    return TEST_END();
}
