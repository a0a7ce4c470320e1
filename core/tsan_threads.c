/* tsan_threads — only in ThreadSanitizer builds (`make tsan`); empty in the
 * others.  librdkafka starts its threads with C11 thrd_create, which glibc
 * implements without calling pthread_create, and clang 14's ThreadSanitizer
 * intercepts only pthread_create: a thread it was not told about crashes in
 * its allocator at its first malloc (`eddy kafka-mock` died so at start).
 * These definitions are the executable's, exported by -Wl,-E, so the dynamic
 * linker binds librdkafka's thrd_create and thrd_join to them rather than to
 * glibc's: the thread starts through pthread_create, which TSAN sees.
 * Calls: pthreads. */
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define EDDY_TSAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define EDDY_TSAN 1
#endif

#ifdef EDDY_TSAN
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <threads.h>

typedef struct c11_start { thrd_start_t fn; void *arg; } c11_start;

static void *c11_trampoline(void *p) {
    c11_start s = *(c11_start *)p;
    free(p);
    return (void *)(intptr_t)s.fn(s.arg);
}

int thrd_create(thrd_t *thr, thrd_start_t fn, void *arg) {
    c11_start *s = malloc(sizeof *s);
    if (!s) return thrd_nomem;
    s->fn = fn;
    s->arg = arg;
    int rc = pthread_create((pthread_t *)thr, NULL, c11_trampoline, s);
    if (rc != 0) { free(s); return rc == ENOMEM || rc == EAGAIN ? thrd_nomem : thrd_error; }
    return thrd_success;
}

int thrd_join(thrd_t thr, int *res) {
    void *ret = NULL;
    if (pthread_join((pthread_t)thr, &ret) != 0) return thrd_error;
    if (res) *res = (int)(intptr_t)ret;
    return thrd_success;
}
#else
typedef int tsan_threads_unused;   /* ISO C: a translation unit is not empty */
#endif
