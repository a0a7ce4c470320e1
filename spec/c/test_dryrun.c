/* The dry run's pure parts: the replay ring (replay.c) and the comparison
 * of one input record's outputs (dryrun_compare). */
#include "test.h"
#include "batch.h"
#include "dryrun.h"
#include "replay.h"
#include <stdlib.h>

static void add(batch *b, const char *key, const char *val, int64_t off) {
    eddy_rec *r = batch_add(b, key, key ? strlen(key) : 0, val, strlen(val));
    r->offset = off;
    r->line = off + 1;
    r->partition = 3;
}

typedef struct seen { int n; char vals[64][64]; int64_t offs[64]; char keys[64][16]; } seen;

static int collect(void *ud, const eddy_rec *rec, const char *key, const char *val, const char *hdrs) {
    (void)hdrs;
    seen *s = ud;
    snprintf(s->vals[s->n], sizeof s->vals[0], "%.*s", (int)rec->val_len, val);
    snprintf(s->keys[s->n], sizeof s->keys[0], "%.*s", (int)rec->key_len, key ? key : "");
    s->offs[s->n] = rec->offset;
    s->n++;
    return 0;
}

TEST(ring_keeps_the_last_records_in_order_across_batches) {
    replay_ring *r = replay_ring_create(4);
    batch *b = batch_create(8);
    add(b, NULL, "a", 0); add(b, "k", "bb", 1); add(b, NULL, "ccc", 2);
    CHECK(replay_ring_add(r, b) == 0);
    batch_clear(b);
    add(b, NULL, "d", 3); add(b, NULL, "a much longer value than the slot had", 4);
    CHECK(replay_ring_add(r, b) == 0);
    seen s = { 0 };
    CHECK(replay_ring_each(r, 0, collect, &s) == 0);
    CHECK(s.n == 4);
    CHECK_STR(s.vals[0], "bb");
    CHECK_STR(s.keys[0], "k");
    CHECK_STR(s.vals[1], "ccc");
    CHECK_STR(s.vals[2], "d");
    CHECK_STR(s.vals[3], "a much longer value than the slot had");
    CHECK(s.offs[0] == 1 && s.offs[3] == 4);
    CHECK(replay_ring_count(r) == 4 && replay_ring_total(r) == 5);
    batch_destroy(b);
    replay_ring_destroy(r);
}

TEST(ring_takes_only_the_tail_of_a_batch_larger_than_it) {
    replay_ring *r = replay_ring_create(3);
    batch *b = batch_create(16);
    char v[8];
    for (int i = 0; i < 10; i++) { snprintf(v, sizeof v, "v%d", i); add(b, NULL, v, i); }
    CHECK(replay_ring_add(r, b) == 0);
    seen s = { 0 };
    replay_ring_each(r, 0, collect, &s);
    CHECK(s.n == 3);
    CHECK_STR(s.vals[0], "v7");
    CHECK_STR(s.vals[2], "v9");
    seen s2 = { 0 };
    replay_ring_each(r, 2, collect, &s2);           /* the newest 2 */
    CHECK(s2.n == 2);
    CHECK_STR(s2.vals[0], "v8");
    CHECK_STR(s2.vals[1], "v9");
    batch_destroy(b);
    replay_ring_destroy(r);
}

TEST(ring_refuses_no_capacity_and_destroys_null) {
    CHECK(replay_ring_create(0) == NULL);
    replay_ring_destroy(NULL);
    replay_ring *r = replay_ring_create(2);
    seen s = { 0 };
    CHECK(replay_ring_each(r, 0, collect, &s) == 0 && s.n == 0);   /* empty */
    replay_ring_destroy(r);
}

static mem_record rec(const char *key, const char *val) {
    mem_record m = { 0 };
    m.key = (char *)key;
    m.klen = key ? strlen(key) : 0;
    m.val = (char *)val;
    m.vlen = val ? strlen(val) : 0;
    return m;
}

TEST(compare_tells_same_changed_added_removed) {
    mem_record a[2] = { rec(NULL, "x"), rec(NULL, "y") }, b[2] = { rec(NULL, "x"), rec(NULL, "y") };
    CHECK(dryrun_compare(a, 2, b, 2) == DRY_SAME);
    CHECK(dryrun_compare(NULL, 0, NULL, 0) == DRY_SAME);
    CHECK(dryrun_compare(a, 0, b, 1) == DRY_ADDED);
    CHECK(dryrun_compare(a, 1, b, 0) == DRY_REMOVED);
    CHECK(dryrun_compare(a, 2, b, 1) == DRY_CHANGED);           /* one output fewer */
    mem_record c[2] = { rec(NULL, "x"), rec(NULL, "z") };
    CHECK(dryrun_compare(a, 2, c, 2) == DRY_CHANGED);
    mem_record k1 = rec("k1", "x"), k2 = rec("k2", "x"), k0 = rec(NULL, "x");
    CHECK(dryrun_compare(&k1, 1, &k2, 1) == DRY_CHANGED);       /* the key counts */
    CHECK(dryrun_compare(&k1, 1, &k0, 1) == DRY_CHANGED);
    mem_record t1 = rec("k", NULL), t2 = rec("k", NULL), e = rec("k", "");
    CHECK(dryrun_compare(&t1, 1, &t2, 1) == DRY_SAME);          /* two tombstones */
    CHECK(dryrun_compare(&t1, 1, &e, 1) == DRY_CHANGED);        /* a tombstone is not an empty value */
}

int main(void) {
    RUN(ring_keeps_the_last_records_in_order_across_batches);
    RUN(ring_takes_only_the_tail_of_a_batch_larger_than_it);
    RUN(ring_refuses_no_capacity_and_destroys_null);
    RUN(compare_tells_same_changed_added_removed);
    return TEST_END();
}
