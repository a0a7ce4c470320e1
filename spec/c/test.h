/* A tiny test harness for spec/c: TEST(name) { CHECK(...); } and RUN(name) in
 * main; the binary prints one "ok"/"not ok" line per test and ends with
 * "N passed, N failed"; exit 1 when anything failed. */
#ifndef EDDY_TEST_H
#define EDDY_TEST_H
#include <stdio.h>
#include <string.h>

static int t_passed, t_failed, t_cur_failed;
#define TEST(name) static void name(void)
#define CHECK(cond) do { if (!(cond)) { t_cur_failed = 1; \
    printf("  check failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); } } while (0)
#define CHECK_STR(a, b) do { const char *a_ = (a), *b_ = (b); \
    if (!a_ || !b_ || strcmp(a_, b_) != 0) { t_cur_failed = 1; \
    printf("  check failed: %s == %s: \"%s\" vs \"%s\" (%s:%d)\n", #a, #b, \
           a_ ? a_ : "(null)", b_ ? b_ : "(null)", __FILE__, __LINE__); } } while (0)
#define RUN(name) do { t_cur_failed = 0; name(); \
    if (t_cur_failed) { t_failed++; printf("not ok %s\n", #name); } \
    else { t_passed++; printf("ok %s\n", #name); } } while (0)
#define TEST_END() (printf("%d passed, %d failed\n", t_passed, t_failed), t_failed ? 1 : 0)
#endif
