/* test_keygroup — core/keygroup.c: that a key's key group is the partition the
 * Kafka Java client's default partitioner picks (toPositive(murmur2) % n), and
 * that keygroup_range is exactly the inverse of keygroup_task. */
#include "test.h"

#include <limits.h>
#include <stdint.h>

#include "keygroup.h"

/* Java Utils.murmur2 values, as published in librdkafka's src/rdmurmur2.c unit
 * test (computed there with the Java client).  With n = INT_MAX the key group
 * is the hash with its top bit cleared, so these check the hash itself. */
static const struct { const char *key; uint32_t java_murmur2; } published[] = {
    { "kafka", 0xd067cf64 },
    { "giberish123456789", 0x8f552b0c },
    { "1234", 0x9fc97b14 },
    { "234", 0xe7c009ca },
    { "34", 0x873930da },
    { "4", 0x5a4b5ca1 },
    { "PreAmbleWillBeRemoved,ThePrePartThatIs", 0x78424f1c },
    { "reAmbleWillBeRemoved,ThePrePartThatIs", 0x4a62b377 },
    { "eAmbleWillBeRemoved,ThePrePartThatIs", 0xe0e4e09e },
    { "AmbleWillBeRemoved,ThePrePartThatIs", 0x62b8b43f },
    { "", 0x106e08d9 },
};

/* Partitions for n = 100, 128, 1, 7, 32768.  Obtained with an independent
 * Python port of the Java client's Utils.murmur2 ((murmur2(key) & 0x7fffffff)
 * % n), written only to generate these constants; that port reproduces every
 * value in `published` above. */
static const struct { const char *key; size_t len; uint32_t kg[5]; } python[] = {
    { "foo", 3, { 16, 80, 0, 1, 22224 } },
    { "kafka", 5, { 80, 100, 0, 3, 20324 } },
    { "", 0, { 81, 89, 0, 2, 2265 } },
    { "user-42", 7, { 60, 44, 0, 1, 26668 } },
    { "a\0b", 3, { 81, 73, 0, 5, 20041 } },
    { "giberish123456789", 17, { 20, 12, 0, 5, 11020 } },
    { "hello", 5, { 29, 61, 0, 4, 23485 } },
};
static const int python_n[5] = { 100, 128, 1, 7, 32768 };

TEST(keygroup_of_is_the_java_murmur2_hash_with_the_sign_bit_cleared)
{
    size_t i;
    for (i = 0; i < sizeof published / sizeof *published; i++) {
        uint32_t got = keygroup_of(published[i].key, strlen(published[i].key), INT_MAX);
        if (got != (published[i].java_murmur2 & 0x7fffffff))
            printf("  key \"%s\": got %u, want %u\n", published[i].key, got,
                   published[i].java_murmur2 & 0x7fffffff);
        CHECK(got == (published[i].java_murmur2 & 0x7fffffff));
    }
}

TEST(keygroup_of_matches_the_java_default_partitioner)
{
    size_t i, j;
    for (i = 0; i < sizeof python / sizeof *python; i++)
        for (j = 0; j < 5; j++) {
            uint32_t got = keygroup_of(python[i].key, python[i].len, python_n[j]);
            if (got != python[i].kg[j])
                printf("  key \"%s\" n=%d: got %u, want %u\n", python[i].key, python_n[j], got,
                       python[i].kg[j]);
            CHECK(got == python[i].kg[j]);
        }
}

TEST(keygroup_of_does_not_depend_on_key_alignment_and_accepts_a_null_empty_key)
{
    char a[64];
    size_t off;
    for (off = 0; off < 8; off++) {
        memcpy(a + off, "PreAmbleWillBeRemoved", 21);
        CHECK(keygroup_of(a + off, 21, 128) == keygroup_of("PreAmbleWillBeRemoved", 21, 128));
    }
    CHECK(keygroup_of(NULL, 0, INT_MAX) == (0x106e08d9u & 0x7fffffff));
}

TEST(keygroup_of_is_below_max_parallelism)
{
    char key[16];
    int i, ok = 1;
    for (i = 0; i < 10000; i++) {
        int n = snprintf(key, sizeof key, "k%d", i);
        ok &= keygroup_of(key, (size_t)n, 128) < 128 && keygroup_of(key, (size_t)n, 7) < 7;
    }
    CHECK(ok);
}

TEST(keygroup_task_is_flinks_formula)
{
    /* Flink: keyGroupId * parallelism / maxParallelism. */
    CHECK(keygroup_task(0, 128, 3) == 0);
    CHECK(keygroup_task(42, 128, 3) == 0);
    CHECK(keygroup_task(43, 128, 3) == 1);
    CHECK(keygroup_task(85, 128, 3) == 1);
    CHECK(keygroup_task(86, 128, 3) == 2);
    CHECK(keygroup_task(127, 128, 3) == 2);
    CHECK(keygroup_task(127, 128, 1) == 0);
    CHECK(keygroup_task(127, 128, 128) == 127);
    /* No 32-bit overflow: 32767 * 32768 > INT_MAX. */
    CHECK(keygroup_task(32767, 32768, 32768) == 32767);
    CHECK(keygroup_task(2147483646u, INT_MAX, 65536) == 65535);
}

/* For every task, its range contains exactly the key groups keygroup_task maps
 * to it; ranges are contiguous and together cover [0, maxp). */
static int range_is_inverse(int maxp, int p)
{
    uint32_t kg, lo, hi, next = 0;
    int t, ok = 1;

    for (t = 0; t < p; t++) {
        keygroup_range(t, maxp, p, &lo, &hi);
        if (lo != next || hi < lo) {
            printf("  maxp=%d p=%d task %d: [%u, %u) after %u\n", maxp, p, t, lo, hi, next);
            ok = 0;
        }
        next = hi;
        for (kg = lo; kg < hi; kg++)
            if (keygroup_task(kg, maxp, p) != t) {
                printf("  maxp=%d p=%d kg %u in task %d's range but maps to %d\n", maxp, p, kg, t,
                       keygroup_task(kg, maxp, p));
                ok = 0;
            }
    }
    if (next != (uint32_t)maxp) {
        printf("  maxp=%d p=%d: ranges end at %u\n", maxp, p, next);
        ok = 0;
    }
    for (kg = 0; kg < (uint32_t)maxp; kg++) {
        t = keygroup_task(kg, maxp, p);
        keygroup_range(t, maxp, p, &lo, &hi);
        if (t < 0 || t >= p || kg < lo || kg >= hi) {
            printf("  maxp=%d p=%d kg %u -> task %d outside [%u, %u)\n", maxp, p, kg, t, lo, hi);
            ok = 0;
        }
    }
    return ok;
}

TEST(keygroup_range_agrees_with_keygroup_task_for_every_key_group)
{
    static const int pairs[][2] = {
        { 128, 1 }, { 128, 3 }, { 128, 4 }, { 128, 7 }, { 128, 128 }, { 7, 3 },
        { 1, 1 }, { 32768, 1 }, { 32768, 13 }, { 32768, 32768 }, { 100, 99 }, { 3, 5 },
    };
    size_t i;
    int maxp, p;

    for (i = 0; i < sizeof pairs / sizeof *pairs; i++)
        CHECK(range_is_inverse(pairs[i][0], pairs[i][1]));
    for (maxp = 1; maxp <= 64; maxp++)
        for (p = 1; p <= maxp + 2; p++)
            CHECK(range_is_inverse(maxp, p));
}

TEST(keygroup_range_matches_flinks_ranges)
{
    /* Flink's computeKeyGroupRangeForOperatorIndex(128, 3, i): [0,42] [43,85] [86,127]. */
    uint32_t lo, hi;
    keygroup_range(0, 128, 3, &lo, &hi);
    CHECK(lo == 0 && hi == 43);
    keygroup_range(1, 128, 3, &lo, &hi);
    CHECK(lo == 43 && hi == 86);
    keygroup_range(2, 128, 3, &lo, &hi);
    CHECK(lo == 86 && hi == 128);
    /* More tasks than key groups: some tasks own nothing. */
    keygroup_range(0, 3, 5, &lo, &hi);
    CHECK(lo == 0 && hi == 1);
    keygroup_range(1, 3, 5, &lo, &hi);
    CHECK(lo == 1 && hi == 2);
    keygroup_range(2, 3, 5, &lo, &hi);
    CHECK(lo == 2 && hi == 2);
}

int main(void)
{
    RUN(keygroup_of_is_the_java_murmur2_hash_with_the_sign_bit_cleared);
    RUN(keygroup_of_matches_the_java_default_partitioner);
    RUN(keygroup_of_does_not_depend_on_key_alignment_and_accepts_a_null_empty_key);
    RUN(keygroup_of_is_below_max_parallelism);
    RUN(keygroup_task_is_flinks_formula);
    RUN(keygroup_range_agrees_with_keygroup_task_for_every_key_group);
    RUN(keygroup_range_matches_flinks_ranges);
    return TEST_END();
}
