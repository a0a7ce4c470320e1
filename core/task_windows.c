/* A task's window operators, by uid: their state (window.c, in the state
 * store) outlives the task's VMs, so a reload keeps it.  The runtime opens
 * them through eddy_window_open (ffi_api.h); a reload that drops a window
 * forgets it (task_forget_windows).  See task.h. */
#include "task_impl.h"
#include "window.h"
#include <stdlib.h>
#include <string.h>

/* The window state of operator `uid` in this task, created on first use.
 * NULL when the uid's state was made with another assigner (a reload refuses
 * that before it gets here) or on allocation failure. */
static void *window_open_locked(task *t, const char *uid, int64_t size, int64_t advance, int64_t offset,
                                int64_t lateness);

void *eddy_window_open(void *tp, const char *uid, int64_t size, int64_t advance, int64_t offset, int64_t lateness) {
    task *t = tp;
    pthread_mutex_lock(&t->swap_mu);
    void *w = window_open_locked(t, uid, size, advance, offset, lateness);
    pthread_mutex_unlock(&t->swap_mu);
    return w;
}

static void *window_open_locked(task *t, const char *uid, int64_t size, int64_t advance, int64_t offset,
                                int64_t lateness) {
    for (int i = 0; i < t->nwins; i++) {
        task_window *tw = &t->wins[i];
        if (strcmp(tw->uid, uid) != 0) continue;
        if (tw->size != size || tw->advance != advance || tw->offset != offset || tw->lateness != lateness) return NULL;
        return tw->w;
    }
    if (!t->stx) return NULL;               /* windows live in the state store */
    task_window *wins = realloc(t->wins, sizeof *wins * (t->nwins + 1));
    if (!wins) return NULL;
    t->wins = wins;
    task_window *tw = &t->wins[t->nwins];
    tw->uid = strdup(uid);
    int maxp = t->sh->cfg->max_parallelism;
    tw->w = advance < 0 ? window_create_sessions(t->stx, uid, t->kgs, t->nkgs, maxp, size, lateness)
                        : window_create(t->stx, uid, t->kgs, t->nkgs, maxp, size, advance, offset, lateness);
    if (!tw->uid || !tw->w) { free(tw->uid); window_destroy(tw->w); return NULL; }
    tw->size = size;
    tw->advance = advance;
    tw->offset = offset;
    tw->lateness = lateness;
    t->nwins++;
    return tw->w;
}

/* (called while a version is built, on the event loop's or a build's thread,
 * while the task's worker and the reload's poller read it) */
void eddy_task_wants_ticks(void *tp) { __atomic_store_n(&((task *)tp)->wants_ticks, 1, __ATOMIC_RELAXED); }

void task_forget_windows(task *t, const plan *p, int drop) {
    pthread_mutex_lock(&t->swap_mu);
    for (int i = 0; i < t->nwins;) {
        int used = 0;
        for (int k = 0; k < p->nnodes && !used; k++) {
            const node *nd = &p->nodes[k];
            if (nd->kind != NODE_WINDOW) continue;
            size_t n = strlen(nd->uid);
            /* the window's own state, and its helpers ("uid#records") */
            if (strncmp(t->wins[i].uid, nd->uid, n) == 0 && (t->wins[i].uid[n] == 0 || t->wins[i].uid[n] == '#')) used = 1;
        }
        if (used) { i++; continue; }
        free(t->wins[i].uid);
        if (drop) window_drop(t->wins[i].w);
        window_destroy(t->wins[i].w);
        t->wins[i] = t->wins[--t->nwins];
    }
    pthread_mutex_unlock(&t->swap_mu);
}
