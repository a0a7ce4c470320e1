/* test_channel — core/channel.c and core/batch.c: a batch keeps every record's
 * key and value at stable offsets however much it grows; a channel is a FIFO
 * of batches and control marks whose depth and fullness follow its capacity,
 * whose push never blocks, and which keeps order between a producer thread
 * and a consumer thread.  Channels get NULL tasks here, so sched is never
 * woken. */
#include "test.h"

#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>

#include "batch.h"
#include "channel.h"

/* ---- batch ---------------------------------------------------------------- */

static int rec_is(const batch *b, int i, const char *key, size_t klen, const char *val, size_t vlen) {
    const eddy_rec *r = &b->recs[i];
    return r->key_len == klen && r->val_len == vlen &&
           (klen == 0 || memcmp(b->data + r->key_off, key, klen) == 0) &&
           (vlen == 0 || memcmp(b->data + r->val_off, val, vlen) == 0);
}

TEST(batch_create_starts_empty) {
    batch *b = batch_create(4);
    CHECK(b != NULL);
    CHECK(b->n == 0);
    CHECK(b->len == 0);
    CHECK(b->cap == 4);
    CHECK(b->dcap > 0);
    batch_destroy(b);
    b = batch_create(0);             /* a non-positive capacity gets a default */
    CHECK(b != NULL && b->cap > 0);
    batch_destroy(b);
    b = batch_create(-5);
    CHECK(b != NULL && b->cap > 0);
    batch_destroy(b);
    batch_destroy(NULL);             /* no-op */
}

TEST(batch_add_copies_key_and_value_at_consecutive_offsets) {
    batch *b = batch_create(4);
    char key[] = "user-1", val[] = "{\"n\":1}";
    eddy_rec *r = batch_add(b, key, 6, val, 7);
    CHECK(r == &b->recs[0]);
    CHECK(b->n == 1);
    CHECK(r->key_off == 0 && r->key_len == 6);
    CHECK(r->val_off == 6 && r->val_len == 7);
    CHECK(b->len == 13);
    key[0] = 'X'; val[0] = 'X';      /* copies, not references */
    CHECK(rec_is(b, 0, "user-1", 6, "{\"n\":1}", 7));

    r = batch_add(b, "k2", 2, "v2", 2);
    CHECK(r == &b->recs[1]);
    CHECK(r->key_off == 13 && r->val_off == 15);
    CHECK(b->len == 17);
    CHECK(rec_is(b, 1, "k2", 2, "v2", 2));
    batch_destroy(b);
}

TEST(batch_add_sets_record_defaults) {
    batch *b = batch_create(2);
    eddy_rec *r = batch_add(b, "k", 1, "v", 1);
    CHECK(r->ts == TS_NONE);
    CHECK(r->wm == TS_NONE);
    CHECK(r->port == -1);
    CHECK(r->flags == 0);
    CHECK(r->offset == 0 && r->line == 0 && r->partition == 0 && r->kg == 0 && r->source == 0);
    /* a reused slot is reset too */
    r->ts = 5; r->flags = 3; r->port = 2;
    batch_clear(b);
    r = batch_add(b, "k", 1, "v", 1);
    CHECK(r->ts == TS_NONE && r->flags == 0 && r->port == -1);
    batch_destroy(b);
}

TEST(batch_add_empty_key_and_empty_value) {
    batch *b = batch_create(2);
    eddy_rec *r = batch_add(b, NULL, 0, "value", 5);
    CHECK(r->key_len == 0 && r->val_off == 0 && r->val_len == 5);
    r = batch_add(b, "key", 3, NULL, 0);
    CHECK(r->key_off == 5 && r->key_len == 3 && r->val_off == 8 && r->val_len == 0);
    r = batch_add(b, NULL, 0, NULL, 0);
    CHECK(r != NULL && r->key_len == 0 && r->val_len == 0 && r->val_off == 8);
    CHECK(b->n == 3 && b->len == 8);
    CHECK(rec_is(b, 0, "", 0, "value", 5));
    CHECK(rec_is(b, 1, "key", 3, "", 0));
    batch_destroy(b);
}

TEST(batch_grows_to_many_records_keeping_every_one) {
    enum { N = 20000 };
    batch *b = batch_create(1);
    size_t total = 0;
    for (int i = 0; i < N; i++) {
        char k[32], v[64];
        int kl = snprintf(k, sizeof k, "key-%d", i);
        int vl = snprintf(v, sizeof v, "value-%d-%0*d", i, i % 40, 0);
        eddy_rec *r = batch_add(b, k, (size_t)kl, v, (size_t)vl);
        if (!r) { CHECK(r != NULL); break; }
        r->offset = i;               /* remembered across growth */
        total += (size_t)(kl + vl);
    }
    CHECK(b->n == N);
    CHECK(b->cap >= N);
    CHECK(b->len == total);
    CHECK(b->dcap >= b->len);
    int bad = 0;
    size_t off = 0;
    for (int i = 0; i < N; i++) {
        char k[32], v[64];
        int kl = snprintf(k, sizeof k, "key-%d", i);
        int vl = snprintf(v, sizeof v, "value-%d-%0*d", i, i % 40, 0);
        const eddy_rec *r = &b->recs[i];
        if (r->offset != i || r->key_off != off || r->val_off != off + (size_t)kl ||
            !rec_is(b, i, k, (size_t)kl, v, (size_t)vl)) bad++;
        off += (size_t)(kl + vl);
    }
    CHECK(bad == 0);
    batch_destroy(b);
}

TEST(batch_holds_values_larger_than_its_arena) {
    size_t big = 3 * 1024 * 1024 + 17;      /* well past the initial arena */
    char *v = malloc(big);
    CHECK(v != NULL);
    if (!v) return;
    for (size_t i = 0; i < big; i++) v[i] = (char)(i * 31 + 7);
    batch *b = batch_create(2);
    size_t dcap0 = b->dcap;
    CHECK(big > dcap0);
    CHECK(batch_add(b, "small", 5, "x", 1) != NULL);
    eddy_rec *r = batch_add(b, "big", 3, v, big);
    CHECK(r != NULL);
    CHECK(b->dcap >= b->len && b->len == 6 + 3 + big);
    CHECK(rec_is(b, 0, "small", 5, "x", 1));
    CHECK(rec_is(b, 1, "big", 3, v, big));
    /* and another one after it, of twice the size */
    char *v2 = malloc(2 * big);
    CHECK(v2 != NULL);
    if (v2) {
        memset(v2, 'z', 2 * big);
        CHECK(batch_add(b, NULL, 0, v2, 2 * big) != NULL);
        CHECK(rec_is(b, 2, "", 0, v2, 2 * big));
        CHECK(rec_is(b, 1, "big", 3, v, big));
        CHECK(b->recs[2].val_off == 6 + 3 + big);
        free(v2);
    }
    batch_destroy(b);
    free(v);
}

TEST(batch_reserve_returns_consecutive_offsets_and_grows) {
    batch *b = batch_create(1);
    CHECK(batch_reserve(b, 10) == 0);
    CHECK(batch_reserve(b, 0) == 10);
    CHECK(batch_reserve(b, 5) == 10);
    CHECK(b->len == 15);
    long off = batch_reserve(b, b->dcap * 3);  /* past the arena: grows */
    CHECK(off == 15);
    CHECK(b->dcap >= b->len);
    memset(b->data + off, 1, (size_t)(b->len - 15));   /* writable (valgrind/asan) */
    CHECK(b->n == 0);                /* reserves bytes, not records */
    batch_destroy(b);
}

TEST(batch_clear_empties_and_reuses_the_arena) {
    batch *b = batch_create(1);
    for (int i = 0; i < 100; i++) batch_add(b, "k", 1, "vvvv", 4);
    int cap = b->cap;
    size_t dcap = b->dcap;
    batch_clear(b);
    CHECK(b->n == 0 && b->len == 0);
    CHECK(b->cap == cap && b->dcap == dcap);
    eddy_rec *r = batch_add(b, "a", 1, "b", 1);
    CHECK(r == &b->recs[0] && r->key_off == 0 && r->val_off == 1);
    CHECK(rec_is(b, 0, "a", 1, "b", 1));
    batch_destroy(b);
}

/* ---- channel -------------------------------------------------------------- */

/* a batch of one record whose value is the decimal i */
static batch *numbered(long i) {
    batch *b = batch_create(1);
    char v[24];
    int n = snprintf(v, sizeof v, "%ld", i);
    batch_add(b, NULL, 0, v, (size_t)n);
    return b;
}

static long number_of(const batch *b) {
    if (!b || b->n != 1) return -1;
    char v[24];
    size_t n = b->recs[0].val_len < sizeof v - 1 ? b->recs[0].val_len : sizeof v - 1;
    memcpy(v, b->data + b->recs[0].val_off, n);
    v[n] = 0;
    return strtol(v, NULL, 10);
}

TEST(channel_create_and_destroy) {
    channel *c = channel_create(4, NULL, NULL);
    CHECK(c != NULL);
    CHECK(c->capacity == 4);
    CHECK(channel_depth(c) == 0);
    CHECK(!channel_full(c));
    CHECK(c->pushed == 0 && c->popped == 0);
    channel_destroy(c);
    channel_destroy(NULL);           /* no-op */
    msg_free(NULL);                  /* no-op */
}

TEST(channel_capacity_below_one_counts_as_one) {
    channel *c = channel_create(0, NULL, NULL);
    CHECK(c->capacity == 1);
    CHECK(!channel_full(c));
    CHECK(channel_push(c, CH_BATCH, numbered(1), 0) == 0);
    CHECK(channel_full(c));
    channel_destroy(c);
    c = channel_create(-3, NULL, NULL);
    CHECK(c->capacity == 1);
    channel_destroy(c);
}

TEST(channel_pop_on_empty_returns_null) {
    channel *c = channel_create(2, NULL, NULL);
    CHECK(channel_pop(c) == NULL);
    CHECK(channel_pop(c) == NULL);
    CHECK(channel_depth(c) == 0);
    CHECK(c->popped == 0);
    /* and again after it was used and drained */
    CHECK(channel_push(c, CH_BATCH, numbered(1), 0) == 0);
    msg *m = channel_pop(c);
    CHECK(m != NULL);
    msg_free(m);
    CHECK(channel_pop(c) == NULL);
    CHECK(c->head == NULL && c->tail == NULL);
    /* a push after draining is seen */
    CHECK(channel_push(c, CH_BATCH, numbered(2), 0) == 0);
    m = channel_pop(c);
    CHECK(m != NULL && number_of(m->b) == 2);
    msg_free(m);
    channel_destroy(c);
}

TEST(channel_is_fifo) {
    enum { N = 1000 };
    channel *c = channel_create(N, NULL, NULL);
    for (long i = 0; i < N; i++) CHECK(channel_push(c, CH_BATCH, numbered(i), i) == 0);
    CHECK(channel_depth(c) == N);
    int bad = 0;
    for (long i = 0; i < N; i++) {
        msg *m = channel_pop(c);
        if (!m || m->kind != CH_BATCH || m->value != i || number_of(m->b) != i) bad++;
        msg_free(m);
    }
    CHECK(bad == 0);
    CHECK(channel_pop(c) == NULL);
    CHECK(c->pushed == N && c->popped == N);
    channel_destroy(c);
}

TEST(channel_interleaved_push_and_pop_keep_order) {
    channel *c = channel_create(3, NULL, NULL);
    long next_in = 0, next_out = 0;
    int bad = 0;
    for (int round = 0; round < 200; round++) {
        int pushes = round % 4 + 1, pops = (round * 7) % 4 + 1;
        for (int i = 0; i < pushes; i++) { channel_push(c, CH_BATCH, numbered(next_in), 0); next_in++; }
        for (int i = 0; i < pops; i++) {
            msg *m = channel_pop(c);
            if (!m) { if (next_out != next_in) bad++; break; }
            if (number_of(m->b) != next_out) bad++;
            next_out++;
            msg_free(m);
        }
        if (channel_depth(c) != (int)(next_in - next_out)) bad++;
    }
    CHECK(bad == 0);
    channel_destroy(c);              /* frees what is still queued */
}

TEST(channel_depth_and_full_follow_capacity) {
    channel *c = channel_create(3, NULL, NULL);
    CHECK(channel_depth(c) == 0 && !channel_full(c));
    channel_push(c, CH_BATCH, numbered(1), 0);
    CHECK(channel_depth(c) == 1 && !channel_full(c));
    channel_push(c, CH_BATCH, numbered(2), 0);
    CHECK(channel_depth(c) == 2 && !channel_full(c));
    channel_push(c, CH_BATCH, numbered(3), 0);
    CHECK(channel_depth(c) == 3 && channel_full(c));
    /* push never blocks and never refuses: a full channel still takes more */
    CHECK(channel_push(c, CH_BATCH, numbered(4), 0) == 0);
    CHECK(channel_depth(c) == 4 && channel_full(c));
    msg_free(channel_pop(c));
    CHECK(channel_depth(c) == 3 && channel_full(c));
    msg_free(channel_pop(c));
    CHECK(channel_depth(c) == 2 && !channel_full(c));
    msg_free(channel_pop(c));
    msg_free(channel_pop(c));
    CHECK(channel_depth(c) == 0 && !channel_full(c));
    CHECK(c->pushed == 4 && c->popped == 4);
    channel_destroy(c);
}

TEST(channel_carries_watermark_barrier_and_eos_in_order) {
    channel *c = channel_create(8, NULL, NULL);
    CHECK(channel_push(c, CH_BATCH, numbered(1), 0) == 0);
    CHECK(channel_push(c, CH_WATERMARK, NULL, 1700000000123LL) == 0);
    CHECK(channel_push(c, CH_BATCH, numbered(2), 0) == 0);
    CHECK(channel_push(c, CH_BARRIER, NULL, 42) == 0);
    CHECK(channel_push(c, CH_WATERMARK, NULL, INT64_MAX) == 0);
    CHECK(channel_push(c, CH_WATERMARK, NULL, INT64_MIN) == 0);
    CHECK(channel_push(c, CH_EOS, NULL, 0) == 0);
    CHECK(channel_depth(c) == 7);    /* depth counts every message */
    CHECK(c->pushed == 2);           /* pushed/popped count batches only */

    msg *m = channel_pop(c);
    CHECK(m && m->kind == CH_BATCH && number_of(m->b) == 1); msg_free(m);
    m = channel_pop(c);
    CHECK(m && m->kind == CH_WATERMARK && m->b == NULL && m->value == 1700000000123LL); msg_free(m);
    m = channel_pop(c);
    CHECK(m && m->kind == CH_BATCH && number_of(m->b) == 2); msg_free(m);
    m = channel_pop(c);
    CHECK(m && m->kind == CH_BARRIER && m->b == NULL && m->value == 42); msg_free(m);
    m = channel_pop(c);
    CHECK(m && m->kind == CH_WATERMARK && m->value == INT64_MAX); msg_free(m);
    m = channel_pop(c);
    CHECK(m && m->kind == CH_WATERMARK && m->value == INT64_MIN); msg_free(m);
    m = channel_pop(c);
    CHECK(m && m->kind == CH_EOS && m->b == NULL); msg_free(m);
    CHECK(channel_pop(c) == NULL);
    CHECK(c->pushed == 2 && c->popped == 2);
    channel_destroy(c);
}

TEST(channel_destroy_frees_queued_batches_and_marks) {
    /* leaks show under valgrind / ASan */
    channel *c = channel_create(2, NULL, NULL);
    for (int i = 0; i < 10; i++) channel_push(c, CH_BATCH, numbered(i), 0);
    channel_push(c, CH_WATERMARK, NULL, 5);
    channel_push(c, CH_EOS, NULL, 0);
    CHECK(channel_depth(c) == 12);
    channel_destroy(c);
}

/* ---- two threads ---------------------------------------------------------- */

enum { STRESS_N = 100000, STRESS_CAP = 8 };

typedef struct {
    channel *c;
    long pushed, full_waits;
    int push_failed;
} producer_arg;

typedef struct {
    channel *c;
    long received, out_of_order, bad_payload, max_depth, empty_polls;
    int saw_eos, after_eos;
} consumer_arg;

static void *producer(void *p) {
    producer_arg *a = p;
    for (long i = 0; i < STRESS_N; i++) {
        while (channel_full(a->c)) { a->full_waits++; sched_yield(); }
        batch *b = numbered(i);
        b->recs[0].offset = i;
        if (channel_push(a->c, CH_BATCH, b, i) != 0) { a->push_failed = 1; break; }
        a->pushed++;
    }
    while (channel_full(a->c)) sched_yield();
    channel_push(a->c, CH_EOS, NULL, 0);
    return NULL;
}

static void *consumer(void *p) {
    consumer_arg *a = p;
    long expect = 0;
    for (;;) {
        int d = channel_depth(a->c);
        if (d > a->max_depth) a->max_depth = d;
        msg *m = channel_pop(a->c);
        if (!m) { a->empty_polls++; sched_yield(); continue; }
        if (m->kind == CH_EOS) { a->saw_eos = 1; msg_free(m); break; }
        if (m->kind != CH_BATCH || m->value != expect) a->out_of_order++;
        if (number_of(m->b) != m->value || m->b->recs[0].offset != m->value) a->bad_payload++;
        expect = m->value + 1;
        a->received++;
        msg_free(m);
    }
    msg *rest = channel_pop(a->c);
    if (rest) { a->after_eos = 1; msg_free(rest); }
    return NULL;
}

TEST(channel_keeps_order_between_a_producer_and_a_consumer_thread) {
    channel *c = channel_create(STRESS_CAP, NULL, NULL);
    producer_arg pa = { .c = c };
    consumer_arg ca = { .c = c };
    pthread_t tp, tc;
    CHECK(pthread_create(&tc, NULL, consumer, &ca) == 0);
    CHECK(pthread_create(&tp, NULL, producer, &pa) == 0);
    pthread_join(tp, NULL);
    pthread_join(tc, NULL);
    CHECK(!pa.push_failed);
    CHECK(pa.pushed == STRESS_N);
    CHECK(ca.received == STRESS_N);
    CHECK(ca.out_of_order == 0);
    CHECK(ca.bad_payload == 0);
    CHECK(ca.saw_eos && !ca.after_eos);
    /* one producer that asks channel_full first never overfills the channel */
    CHECK(ca.max_depth <= STRESS_CAP);
    CHECK(c->pushed == STRESS_N && c->popped == STRESS_N);
    CHECK(channel_depth(c) == 0);
    printf("  (%ld waits on a full channel, %ld polls of an empty one, max depth %ld)\n",
           pa.full_waits, ca.empty_polls, ca.max_depth);
    channel_destroy(c);
}

int main(void) {
    RUN(batch_create_starts_empty);
    RUN(batch_add_copies_key_and_value_at_consecutive_offsets);
    RUN(batch_add_sets_record_defaults);
    RUN(batch_add_empty_key_and_empty_value);
    RUN(batch_grows_to_many_records_keeping_every_one);
    RUN(batch_holds_values_larger_than_its_arena);
    RUN(batch_reserve_returns_consecutive_offsets_and_grows);
    RUN(batch_clear_empties_and_reuses_the_arena);
    RUN(channel_create_and_destroy);
    RUN(channel_capacity_below_one_counts_as_one);
    RUN(channel_pop_on_empty_returns_null);
    RUN(channel_is_fifo);
    RUN(channel_interleaved_push_and_pop_keep_order);
    RUN(channel_depth_and_full_follow_capacity);
    RUN(channel_carries_watermark_barrier_and_eos_in_order);
    RUN(channel_destroy_frees_queued_batches_and_marks);
    RUN(channel_keeps_order_between_a_producer_and_a_consumer_thread);
    return TEST_END();
}
