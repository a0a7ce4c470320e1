/* test_shuffle — what shuffle = "kafka" puts in its topics and decides
 * alone (core/shuffle.c, core/changelog.c): a record's frame comes back
 * with every field, headers and value; marks are frames of their own;
 * bytes that are not a frame are refused; topic names; the instance id is
 * made once and kept; a standby copy goes to the instances after the
 * owner by id; a changelog wipe deletes exactly the task's key groups of
 * its operators and its marks, not another operator's whose uid starts
 * the same. */
#include "test.h"

#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "changelog.h"
#include "shuffle.h"
#include "state.h"

static char dir[] = "/tmp/eddy-test-shuffle-XXXXXX";

TEST(a_record_frame_carries_every_field_back)
{
    batch *b = batch_create(4);
    eddy_rec *r = batch_add(b, "k", 1, "\x93\x01\x02\x03", 4);
    r->ts = 1700000000123; r->wm = -5; r->offset = 42; r->line = 7; r->partition = 3;
    r->port = 9; r->kg = 77; r->source = 1;
    long off = batch_reserve(b, 3);
    memcpy(b->data + off, "hdr", 3);
    b->recs[0].hdr_off = (uint64_t)off;
    b->recs[0].hdr_len = 3;
    char *buf = NULL;
    size_t cap = 0;
    long n = frame_encode_record(b, &b->recs[0], 11, &buf, &cap);
    CHECK(n > 0);
    frame f;
    CHECK(frame_decode(buf, (size_t)n, &f) == 0);
    CHECK(f.kind == FRAME_RECORD && f.input == 11 && f.value == -5 && f.ts == 1700000000123);
    CHECK(f.port == 9 && f.kg == 77 && f.source == 1 && f.partition == 3 && f.offset == 42 && f.line == 7);
    CHECK(f.hlen == 3 && memcmp(f.hdrs, "hdr", 3) == 0);
    CHECK(f.vlen == 4 && memcmp(f.val, "\x93\x01\x02\x03", 4) == 0);
    free(buf);
    batch_destroy(b);
}

TEST(marks_are_frames_and_other_bytes_are_refused)
{
    char m[FRAME_MARK_LEN];
    size_t n = frame_encode_mark(FRAME_IDLE, 5, INT64_MIN, m);
    frame f;
    CHECK(frame_decode(m, n, &f) == 0 && f.kind == FRAME_IDLE && f.input == 5 && f.value == INT64_MIN);
    n = frame_encode_mark(FRAME_WATERMARK, 0, 1234, m);
    CHECK(frame_decode(m, n, &f) == 0 && f.kind == FRAME_WATERMARK && f.value == 1234);
    CHECK(frame_decode("{\"user\":1}", 10, &f) < 0);      /* a JSON record someone wrote there */
    CHECK(frame_decode(m, n - 1, &f) < 0);                 /* cut short */
    m[1] = 9;
    CHECK(frame_decode(m, n, &f) < 0);                     /* an unknown kind */
}

TEST(topic_names_and_the_instance_id)
{
    config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.name = "clicks";
    char t[128], err[256];
    shuffle_repartition_topic(&cfg, "key_by-2", t, sizeof t);
    CHECK_STR(t, "clicks-key_by-2-repartition");
    shuffle_changelog_topic(&cfg, "counts", t, sizeof t);
    CHECK_STR(t, "clicks-counts-changelog");
    char a[17], b[17];
    CHECK(shuffle_instance_id(dir, a, err, sizeof err) == 0);
    CHECK(strlen(a) == 16);
    CHECK(shuffle_instance_id(dir, b, err, sizeof err) == 0);
    CHECK_STR(a, b);                                        /* kept in state.dir/instance */
    char path[300];
    snprintf(path, sizeof path, "%s/instance", dir);
    FILE *f = fopen(path, "w");
    fputs("not an id\n", f);
    fclose(f);
    CHECK(shuffle_instance_id(dir, b, err, sizeof err) < 0);
    CHECK(strstr(err, "instance") != NULL);
}

TEST(a_standby_copy_goes_to_the_instances_after_the_owner)
{
    json_t *m = json_loads("{\"members\": ["
        "{\"instance\": \"c\", \"partitions\": {\"t\": [2]}},"
        "{\"instance\": \"a\", \"partitions\": {\"t\": [0]}},"
        "{\"instance\": \"b\", \"partitions\": {\"t\": [1], \"in\": [0]}}]}", 0, NULL);
    CHECK(m != NULL);
    /* by id: a, b, c; partition 0 is a's: b keeps the copy with n = 1, b and c with 2 */
    CHECK(shuffle_standby_of(m, "b", "t", 0, 1) == 1);
    CHECK(shuffle_standby_of(m, "c", "t", 0, 1) == 0);
    CHECK(shuffle_standby_of(m, "c", "t", 0, 2) == 1);
    CHECK(shuffle_standby_of(m, "a", "t", 0, 2) == 0);     /* the owner keeps none */
    CHECK(shuffle_standby_of(m, "a", "t", 2, 1) == 1);     /* c's: wraps around to a */
    CHECK(shuffle_standby_of(m, "a", "t", 3, 1) == 0);     /* no owner: none */
    CHECK(shuffle_standby_of(m, "b", "in", 0, 5) == 0);    /* the owner, with n past the group's size */
    json_decref(m);
}

static int count_cb(void *ud, const char *k, size_t kl, const char *v, size_t vl) {
    (void)k; (void)kl; (void)v; (void)vl;
    (*(int *)ud)++;
    return 0;
}

static int exists(state_db *db, const state_key *k) {
    int n = 0;
    char to[256];
    memcpy(to, k->p, k->len);
    to[k->len] = 0;
    state_range(db, k->p, k->len, to, k->len + 1, count_cb, &n);
    return n;
}

TEST(a_wipe_deletes_the_task_s_key_groups_of_its_operators_only)
{
    char err[512], dbdir[300];
    snprintf(dbdir, sizeof dbdir, "%s/db", dir);
    state_db *db = state_open(dbdir, 8 << 20, NULL, err, sizeof err);
    CHECK(db != NULL);
    if (!db) return;
    state_tx *tx = state_tx_create(db);
    state_key k[7];
    memset(k, 0, sizeof k);
    char h[STATE_HDR_MAX];
    size_t hl = state_value_header(h, 0);
    /* operator "p" in key groups 3 (the task's) and 4 (another task's), a
     * timer and a window of p in 3, p's window helper in 3, operator "p2"
     * (whose uid starts with p's) in 3, and the marks of tasks 0 and 1 */
    state_key_state(&k[0], "p", 3, "key", 3, 'v', "n", 1, NULL, 0);
    state_key_state(&k[1], "p", 4, "key", 3, 'v', "n", 1, NULL, 0);
    state_key_timer(&k[2], "p", 3, 'e', 1000, "key", 3);
    state_key_window(&k[3], "p#records", 3, 2000, "key", 3, 1000);
    state_key_state(&k[4], "p2", 3, "key", 3, 'v', "n", 1, NULL, 0);
    const char m0[4] = { 'p', 3, 0, 0 }, m1[4] = { 'p', 3, 0, 1 };
    k[5].p = malloc(4); memcpy(k[5].p, m0, 4); k[5].len = k[5].cap = 4;
    k[6].p = malloc(4); memcpy(k[6].p, m1, 4); k[6].len = k[6].cap = 4;
    for (int i = 0; i < 7; i++) state_tx_put(tx, k[i].p, k[i].len, h, hl);
    CHECK(state_tx_commit(tx, err, sizeof err) == 0);
    for (int i = 0; i < 7; i++) CHECK(exists(db, &k[i]) == 1);
    const char *uids[1] = { "p" };
    uint32_t mine[1] = { 3 };
    CHECK(changelog_wipe_ops(db, uids, 1, 0, mine, 1, err, sizeof err) == 0);
    int want[7] = { 0, 1, 0, 0, 1, 0, 1 };
    for (int i = 0; i < 7; i++) {
        if (exists(db, &k[i]) != want[i]) printf("  key %d: %d, want %d\n", i, exists(db, &k[i]), want[i]);
        CHECK(exists(db, &k[i]) == want[i]);
    }
    for (int i = 0; i < 7; i++) state_key_free(&k[i]);
    state_tx_destroy(tx);
    state_close(db);
}

int main(void)
{
    if (!mkdtemp(dir)) return 1;
    RUN(a_record_frame_carries_every_field_back);
    RUN(marks_are_frames_and_other_bytes_are_refused);
    RUN(topic_names_and_the_instance_id);
    RUN(a_standby_copy_goes_to_the_instances_after_the_owner);
    RUN(a_wipe_deletes_the_task_s_key_groups_of_its_operators_only);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) return 1;
    return TEST_END();
}
