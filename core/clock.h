/* clock — processing time, from one place that tests can replace: idleness,
 * ingestion timestamps and (later) processing-time triggers read it.  By
 * default the wall clock; with EDDY_TEST_CLOCK_FILE set, the number of ms
 * written in that file (a test advances time by rewriting it); unit tests
 * may install their own function.  Calls nothing of eddy. */
#ifndef EDDY_CLOCK_H
#define EDDY_CLOCK_H

#include <stdint.h>

/* Processing time in ms since the epoch. */
int64_t clock_now_ms(void);
/* Replaces the clock (NULL restores the default).  Not thread-safe: call
 * before the workers start. */
void clock_set(int64_t (*fn)(void));

#endif
