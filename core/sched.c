#include "sched.h"
#include "crash.h"
#include "task.h"
#include <stdio.h>
#include <stdlib.h>

struct sched {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct task *head, *tail;
    int stopping;
    int nthreads;
    pthread_t *threads;
    int started;
    void (*on_done)(void *ud, struct task *t);
    void *ud;
};

sched *sched_create(int nthreads, void (*on_done)(void *, struct task *), void *ud) {
    sched *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->nthreads = nthreads > 0 ? nthreads : 1;
    s->on_done = on_done;
    s->ud = ud;
    return s;
}

static void enqueue_locked(sched *s, struct task *t) {
    sched_entry *e = task_sched_entry(t);
    e->next = NULL;
    if (s->tail) task_sched_entry(s->tail)->next = t; else s->head = t;
    s->tail = t;
}

void sched_wake(struct task *t) {
    sched_entry *e = task_sched_entry(t);
    atomic_fetch_add(&e->wakeups, 1);
    int expected = 0;
    if (!e->s || !atomic_compare_exchange_strong(&e->queued, &expected, 1)) return;
    pthread_mutex_lock(&e->s->mu);
    enqueue_locked(e->s, t);
    pthread_cond_signal(&e->s->cv);
    pthread_mutex_unlock(&e->s->mu);
}

static void *worker(void *arg) {
    sched *s = arg;
    crash_thread_init();          /* a crash in user code is handled on its own stack */
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->head && !s->stopping) pthread_cond_wait(&s->cv, &s->mu);
        if (!s->head) { pthread_mutex_unlock(&s->mu); break; }
        struct task *t = s->head;
        sched_entry *e = task_sched_entry(t);
        s->head = e->next;
        if (!s->head) s->tail = NULL;
        pthread_mutex_unlock(&s->mu);

        unsigned w0 = atomic_load(&e->wakeups);
        step_result r = task_step(t);
        if (r == STEP_PROGRESS) {
            pthread_mutex_lock(&s->mu);
            enqueue_locked(s, t);
            pthread_mutex_unlock(&s->mu);
        } else if (r == STEP_IDLE || r == STEP_BLOCKED) {
            atomic_store(&e->queued, 0);
            if (atomic_load(&e->wakeups) != w0) sched_wake(t);
        } else {
            /* done or failed: stays marked queued so it is never run again */
            if (s->on_done) s->on_done(s->ud, t);
        }
    }
    return NULL;
}

int sched_start(sched *s, char *err, size_t errlen) {
    s->threads = calloc(s->nthreads, sizeof *s->threads);
    if (!s->threads) { snprintf(err, errlen, "out of memory"); return -1; }
    for (int i = 0; i < s->nthreads; i++) {
        if (pthread_create(&s->threads[i], NULL, worker, s) != 0) {
            snprintf(err, errlen, "cannot start worker thread %d", i);
            s->nthreads = i;
            return -1;
        }
        s->started++;
    }
    return 0;
}

void sched_stop(sched *s) {
    if (!s || !s->threads) return;
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->started; i++) pthread_join(s->threads[i], NULL);
    s->started = 0;
}

void sched_destroy(sched *s) {
    if (!s) return;
    sched_stop(s);
    free(s->threads);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}
