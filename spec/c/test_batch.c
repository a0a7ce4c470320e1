/* test_batch — core/batch.c: record offsets past 4 GiB in one batch's arena
 * (an arena of address space reserved with mmap, so the test touches only a
 * few pages), and a key or value longer than eddy_rec's 32-bit lengths is
 * refused rather than cut. */
#include "test.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "batch.h"

#define GIB ((size_t)1 << 30)

/* a batch whose arena is `size` bytes of reserved address space, `used` of them taken */
static batch *big_batch(size_t size, size_t used)
{
    batch *b = batch_create(4);
    if (!b) return NULL;
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) { batch_destroy(b); return NULL; }
    free(b->data);
    b->data = p;
    b->dcap = size;
    b->len = used;
    return b;
}

static void big_batch_destroy(batch *b, size_t size)
{
    munmap(b->data, size);
    b->data = NULL;
    batch_destroy(b);
}

TEST(a_record_past_4_GiB_in_the_arena_points_at_its_own_bytes)
{
    size_t size = 5 * GIB, used = 4 * GIB + 10;
    batch *b = big_batch(size, used);
    CHECK(b != NULL);
    if (!b) return;
    eddy_rec *r = batch_add(b, "k", 1, "hello", 5);
    CHECK(r != NULL);
    if (r) {
        CHECK(r->key_off == used);
        CHECK(r->val_off == used + 1);
        CHECK(r->val_len == 5);
        CHECK(memcmp(b->data + r->key_off, "k", 1) == 0);
        CHECK(memcmp(b->data + r->val_off, "hello", 5) == 0);
    }
    big_batch_destroy(b, size);
}

TEST(a_value_longer_than_4_GiB_is_refused_not_cut)
{
    size_t size = 5 * GIB;
    batch *b = big_batch(size, 0);
    CHECK(b != NULL);
    if (!b) return;
    /* the value's bytes are never read: the length alone refuses it */
    CHECK(batch_add(b, NULL, 0, b->data, (size_t)UINT32_MAX + 1) == NULL);
    CHECK(b->n == 0 && b->len == 0);
    CHECK(batch_add(b, NULL, 0, "x", 1) != NULL);
    big_batch_destroy(b, size);
}

int main(void)
{
    RUN(a_record_past_4_GiB_in_the_arena_points_at_its_own_bytes);
    RUN(a_value_longer_than_4_GiB_is_refused_not_cut);
    return TEST_END();
}
