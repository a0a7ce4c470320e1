#include "clock.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int64_t clock_wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t clock_mono_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t clock_mono_ms(void) { return clock_mono_us() / 1000; }

/* EDDY_TEST_CLOCK_FILE: the time is whatever number the file holds now. */
static int64_t from_file(void) {
    static const char *path;
    if (!path) path = getenv("EDDY_TEST_CLOCK_FILE");
    FILE *f = fopen(path, "r");
    long long ms = 0;
    if (f) {
        if (fscanf(f, "%lld", &ms) != 1) ms = 0;
        fclose(f);
    }
    return ms;
}

static int64_t (*clock_fn)(void);

int64_t clock_now_ms(void) {
    if (!clock_fn) clock_fn = getenv("EDDY_TEST_CLOCK_FILE") ? from_file : clock_wall_ms;
    return clock_fn();
}

void clock_set(int64_t (*fn)(void)) { clock_fn = fn; }

int64_t clock_cpu_ms(int clock) {
    struct timespec ts;
    if (clock_gettime((clockid_t)clock, &ts) != 0) return clock_mono_ms();
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
