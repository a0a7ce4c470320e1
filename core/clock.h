/* clock — processing time, from one place that tests can replace: idleness,
 * ingestion timestamps and (later) processing-time triggers read it.  By
 * default the wall clock; with EDDY_TEST_CLOCK_FILE set, the number of ms
 * written in that file (a test advances time by rewriting it); unit tests
 * may install their own function.  Also the real clocks, never replaced,
 * for measuring durations and stamping files.  Calls nothing of eddy. */
#ifndef EDDY_CLOCK_H
#define EDDY_CLOCK_H

#include <stdint.h>

/* Processing time in ms since the epoch. */
int64_t clock_now_ms(void);
/* Replaces the clock (NULL restores the default).  Not thread-safe: call
 * before the workers start. */
void clock_set(int64_t (*fn)(void));
/* The real clocks: monotonic (durations) in ms and in µs, and the wall
 * clock in ms since the epoch (times written down, such as a manifest's). */
int64_t clock_mono_ms(void);
int64_t clock_mono_us(void);
int64_t clock_wall_ms(void);
/* The CPU time in ms of a thread's clock (clock_gettime's clockid_t:
 * CLOCK_THREAD_CPUTIME_ID for the caller, pthread_getcpuclockid for another;
 * an int here so callers need not include <time.h>), or the monotonic clock
 * when it cannot be read.  Limits on user code count this time: a call on a
 * loaded machine waits its turn without counting. */
int64_t clock_cpu_ms(int clock);

#endif
