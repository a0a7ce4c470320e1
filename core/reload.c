#include "reload.h"
#include "clock.h"
#include "daemon_state.h"
#include "log.h"
#include "probation.h"
#include "versions.h"
#include <limits.h>
#include <errno.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

struct reload_watch {
    int fd;
    struct event *ev, *timer;
    int debounce_ms;
    void (*cb)(void *ud, const char *file);
    void *ud;
    char last[256];
};

static void on_quiet(evutil_socket_t fd, short what, void *arg) {
    (void)fd; (void)what;
    reload_watch *w = arg;
    w->cb(w->ud, w->last);
}

static void on_inotify(evutil_socket_t fd, short what, void *arg) {
    (void)what;
    reload_watch *w = arg;
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0) break;
        for (char *p = buf; p < buf + n;) {
            struct inotify_event *e = (struct inotify_event *)p;
            size_t len = e->len ? strlen(e->name) : 0;
            if (len > 4 && strcmp(e->name + len - 4, ".lua") == 0 && !plan_is_test_file(e->name)) {
                snprintf(w->last, sizeof w->last, "%s", e->name);
                struct timeval tv = { w->debounce_ms / 1000, (w->debounce_ms % 1000) * 1000 };
                evtimer_add(w->timer, &tv);      /* re-arming pushes the deadline back */
            }
            p += sizeof *e + e->len;
        }
    }
}

reload_watch *reload_watch_create(struct event_base *base, const char *dir, int debounce_ms,
                                  void (*cb)(void *, const char *), void *ud, char *err, size_t errlen) {
    reload_watch *w = calloc(1, sizeof *w);
    if (!w) { snprintf(err, errlen, "out of memory"); return NULL; }
    w->cb = cb;
    w->ud = ud;
    w->debounce_ms = debounce_ms;
    w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (w->fd < 0) { snprintf(err, errlen, "reload.watch: inotify: %s", strerror(errno)); free(w); return NULL; }
    if (inotify_add_watch(w->fd, dir, IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE) < 0) {
        snprintf(err, errlen, "reload.watch: cannot watch %s: %s", dir, strerror(errno));
        close(w->fd);
        free(w);
        return NULL;
    }
    w->ev = event_new(base, w->fd, EV_READ | EV_PERSIST, on_inotify, w);
    w->timer = evtimer_new(base, on_quiet, w);
    if (!w->ev || !w->timer || event_add(w->ev, NULL) < 0) {
        snprintf(err, errlen, "reload.watch: cannot register with the event loop");
        reload_watch_destroy(w);
        return NULL;
    }
    return w;
}

void reload_watch_destroy(reload_watch *w) {
    if (!w) return;
    if (w->ev) event_free(w->ev);
    if (w->timer) event_free(w->timer);
    if (w->fd >= 0) close(w->fd);
    free(w);
}

plan *reload_prepare(const config *cfg, const char *lua_dir, const plan *running, task **tasks, int ntasks,
                     int version, int allow_dropped_state, task_vm **tvs, char *err, size_t errlen) {
    return reload_prepare_text(cfg, lua_dir, NULL, running, tasks, ntasks, version, allow_dropped_state, tvs, err,
                               errlen);
}

static int count_cb(void *ud, const char *k, size_t kl, const char *v, size_t vl) {
    (void)k; (void)kl; (void)v; (void)vl;
    (*(int *)ud)++;
    return 0;
}

int reload_migrating(state_db *db, const char *uid) {
    char from[600], to[600];
    int n = snprintf(from, sizeof from, "%s#migrating", uid);
    if (!db || n < 0 || (size_t)n + 1 >= sizeof from) return 0;
    memcpy(to, from, (size_t)n);
    from[n] = 0;
    to[n] = 1;                                      /* [uid#migrating 0x00, uid#migrating 0x01) */
    int count = 0;
    state_range(db, from, (size_t)n + 1, to, (size_t)n + 1, count_cb, &count);
    return count;
}

/* A process operator's state migration (lua/eddy/runtime/migrate.lua) has
 * not converted every key yet: another version now would meet keys in
 * either shape.  0, or -1 with err naming the uid. */
static int migration_running(const plan *running, task **tasks, int ntasks, char *err, size_t errlen) {
    state_db *db = ntasks > 0 ? task_state_db(tasks[0]) : NULL;
    for (int i = 0; db && i < running->nnodes; i++) {
        const node *nd = &running->nodes[i];
        if (nd->kind != NODE_PROCESS || !nd->uid) continue;
        int left = reload_migrating(db, nd->uid);
        if (left > 0) {
            snprintf(err, errlen, "%s: the state of process uid '%s' is still being migrated to the running version "
                     "(its migrate; %d key group%s left, GET /status pipeline.migrating); reload once every key is done",
                     nd->where, nd->uid, left, left == 1 ? "" : "s");
            return -1;
        }
    }
    return 0;
}

/* The preparation runs on the event loop's thread, whose poll timer is what
 * wakes a source task to read its followed files again (daemon.c's on_poll):
 * while it builds, nothing would be read, and every task would stand still
 * for the whole preparation, which then counted in the reload's pause (the
 * plan and four VMs: ~20 ms of a 30 ms pause under load, and a build takes
 * several times longer when the machine is busy).  So while it builds, a
 * thread of its own wakes them as on_poll does, every POLL_MS; and between
 * two builds the preparation wakes them itself (all that is left when that
 * thread cannot be started). */
#define POLL_MS 10                 /* daemon.c's POLL_TICK_MS */

static void wake_pollable(task **tasks, int ntasks) {
    for (int i = 0; i < ntasks; i++)
        if (task_pollable(tasks[i]) && task_status(tasks[i]) == TASK_RUNNING) sched_wake(tasks[i]);
}

/* One thread for the process, started at the first preparation and never
 * joined: stopping it only clears `tasks` (under mu, which it holds while it
 * wakes them), so the event loop never waits for it to be scheduled (on a
 * busy machine that took up to 8 ms at every reload). */
static pthread_mutex_t poll_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t poll_cv;         /* tasks set or cleared */
static task **poll_tasks;              /* while a preparation runs: the tasks to wake */
static int poll_ntasks;
static int poll_started;

static void *poll_during_build(void *arg) {
    (void)arg;
    pthread_mutex_lock(&poll_mu);
    for (;;) {
        if (!poll_tasks) { pthread_cond_wait(&poll_cv, &poll_mu); continue; }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += POLL_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
        if (pthread_cond_timedwait(&poll_cv, &poll_mu, &ts) == ETIMEDOUT && poll_tasks)
            wake_pollable(poll_tasks, poll_ntasks);
    }
    return NULL;
}

/* 1 when the thread wakes tasks until poller_stop, 0 when it cannot. */
static int poller_start(task **tasks, int ntasks) {
    if (ntasks == 0 || !task_sched_entry(tasks[0])->s) return 0;    /* (eddy test steps its tasks itself) */
    pthread_mutex_lock(&poll_mu);
    if (!poll_started) {
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&poll_cv, &ca);
        pthread_condattr_destroy(&ca);
        pthread_attr_t a;
        pthread_t th;
        pthread_attr_init(&a);
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        poll_started = pthread_create(&th, &a, poll_during_build, NULL) == 0 ? 1 : -1;
        pthread_attr_destroy(&a);
    }
    int on = poll_started == 1;
    if (on) {
        poll_tasks = tasks;
        poll_ntasks = ntasks;
        pthread_cond_signal(&poll_cv);
    }
    pthread_mutex_unlock(&poll_mu);
    return on;
}

static void poller_stop(void) {
    pthread_mutex_lock(&poll_mu);
    poll_tasks = NULL;
    poll_ntasks = 0;
    pthread_cond_signal(&poll_cv);
    pthread_mutex_unlock(&poll_mu);
}

static plan *prepare_text(const config *cfg, const char *lua_dir, const char *text, const plan *running,
                          task **tasks, int ntasks, int version, int allow_dropped_state, task_vm **tvs, char *err,
                          size_t errlen) {
    plan *p = plan_create_text(cfg, lua_dir, text, err, errlen);
    if (!p) return NULL;
    wake_pollable(tasks, ntasks);
    if (plan_copy_kafka(p, running) < 0) { snprintf(err, errlen, "out of memory"); goto err; }
    if (plan_compatible(running, p, allow_dropped_state, err, errlen) < 0) goto err;
    if (migration_running(running, tasks, ntasks, err, errlen) < 0) goto err;
    for (int i = 0; i < ntasks; i++) tvs[i] = NULL;
    for (int i = 0; i < ntasks; i++) {
        char terr[1024];
        tvs[i] = task_prepare(tasks[i], p, version, terr, sizeof terr);
        wake_pollable(tasks, ntasks);
        if (!tvs[i]) {
            snprintf(err, errlen, "task %s: %s", task_name(tasks[i]), terr);
            for (int j = 0; j < i; j++) { task_vm_destroy(tvs[j]); tvs[j] = NULL; }
            /* the refused version's VMs opened window state of its own uids: drop it */
            for (int j = 0; j <= i; j++) task_forget_windows(tasks[j], running, 0);
            goto err;
        }
    }
    return p;
err:
    plan_destroy(p);
    return NULL;
}

plan *reload_prepare_text(const config *cfg, const char *lua_dir, const char *text, const plan *running,
                          task **tasks, int ntasks, int version, int allow_dropped_state, task_vm **tvs, char *err,
                          size_t errlen) {
    int polling = poller_start(tasks, ntasks);
    plan *p = prepare_text(cfg, lua_dir, text, running, tasks, ntasks, version, allow_dropped_state, tvs, err, errlen);
    if (polling) poller_stop();
    return p;
}

/* ---- the policy: when a reload may start, and its roll-out ---------------- */

/* A reload is in progress while a running task has not reached the last
 * roll-out (a reload, a canary, a promotion, a rollback) offered to it. */
int reload_in_progress(daemon_state *d) {
    for (int i = 0; i < d->ntasks; i++) {
        task *t = d->tasks[i];
        if (task_status(t) == TASK_RUNNING && task_rollout_pending(t)) return 1;
    }
    return 0;
}

/* reload --to: which kept version `to` names, copied to the folder the new
 * version `version` is read from (into text).  0, or an HTTP-like status
 * with msg (404 unknown, 400 malformed, 503 the copy failed). */
static int stage_kept(daemon_state *d, const char *to, int version, char *text, size_t tlen, version_info *picked,
                      char *msg, size_t len) {
    version_info *v = NULL;
    char err[1024];
    int rc = 0;
    int n = versions_list(d->cfg->state_dir, &v, err, sizeof err);
    if (n < 0) { snprintf(msg, len, "%s", err); return 503; }
    int i = versions_pick(v, n, to, err, sizeof err);
    if (i < 0) {
        snprintf(msg, len, "reload --to %s: %s", to, err);
        rc = i == VERSIONS_MALFORMED ? 400 : 404;
        goto done;
    }
    *picked = v[i];
    if (versions_stage(d->cfg->state_dir, &v[i], version, text, tlen, err, sizeof err) < 0) {
        snprintf(msg, len, "reload --to %s: %s", to, err);
        rc = 503;
    }
done:
    free(v);
    return rc;
}

/* Validates the new version (the pipeline script on disk, or with `to` a
 * kept version's script) and, when it is good, offers it to every task.
 * Returns an HTTP-like status with msg. */
int reload_request_to(daemon_state *d, const char *trigger, const char *to, int allow_dropped_state, char *msg,
                      size_t len) {
    if (!d->workers_running) {
        snprintf(msg, len, "eddy is still starting (waiting for Kafka): reload once it runs");
        log_warn("%s: reload refused: %s", trigger, msg);
        return 503;
    }
    if (atomic_load(&d->sh.stopping) || atomic_load(&d->sh.aborting)) {
        snprintf(msg, len, "eddy is stopping: no reload");
        return 503;
    }
    if (d->canary) {                  /* canary.c */
        snprintf(msg, len, "a canary of version %d is running (%s): promote it (eddy reload --promote) or roll it "
                 "back (eddy reload --rollback) before a reload", d->canary->version, d->canary->how);
        log_warn("%s: reload refused: %s", trigger, msg);
        return 409;
    }
    if (reload_in_progress(d)) {
        snprintf(msg, len, "version %d is still being rolled out to the tasks; try again", d->version);
        return 503;
    }
    if (d->ckpt && ckpt_running(d->ckpt)) {
        snprintf(msg, len, "a checkpoint is in progress; try again");
        return 503;
    }
    const plan *cur = d->plans[d->nplans - 1];
    int version = reload_next_version(d);       /* (canary.c: never one given before) */
    char text[PATH_MAX] = "", label[128] = "";
    version_info kept;
    if (to) {
        int rc = stage_kept(d, to, version, text, sizeof text, &kept, msg, len);
        if (rc) {
            log_error("reload (%s) refused, version %d keeps running: %s", trigger, d->version, msg);
            return rc;
        }
        snprintf(label, sizeof label, " (kept version %d)", kept.version);
    }
    /* the same content as the running version: nothing to roll out */
    char hash[65];
    if (!allow_dropped_state && plan_hash_text(to ? text : cur->script, cur->script, hash, msg, len) == 0 &&
        strcmp(hash, cur->hash) == 0) {
        if (to) versions_drop(d->cfg->state_dir, version);
        log_info("reload (%s)%s: nothing changed (sha256 %.12s): version %d keeps running", trigger, label, hash,
                 d->version);
        snprintf(msg, len, "%d", d->version);
        return 200;
    }
    /* reload.hold_commits: a committed checkpoint at the reload's barrier,
     * for a rollback to go back to */
    int hrc = probation_barrier_checkpoint(d, msg, len);
    if (hrc) {
        if (to) versions_drop(d->cfg->state_dir, version);
        log_error("reload (%s) refused, version %d keeps running: %s", trigger, d->version, msg);
        return hrc;
    }
    task_vm **tvs = calloc(d->ntasks, sizeof *tvs);
    plan **plans = realloc(d->plans, sizeof *plans * (d->nplans + 1));
    if (!tvs || !plans) {
        free(tvs);
        if (plans) d->plans = plans;
        if (to) versions_drop(d->cfg->state_dir, version);
        snprintf(msg, len, "out of memory");
        return 503;
    }
    d->plans = plans;
    char err[2048];
    plan *p = reload_prepare_text(d->cfg, daemon_lua_dir(), to ? text : NULL, d->plans[d->nplans - 1], d->tasks,
                                  d->ntasks, version, allow_dropped_state, tvs, err, sizeof err);
    if (!p) {
        free(tvs);
        if (to) {
            versions_drop(d->cfg->state_dir, version);
            char why[2048];
            snprintf(why, sizeof why, "kept version %d (sha256 %.12s) cannot run now (its script is planned in "
                     "the pipeline's folder as it is now): %.1500s (its script and modules as they were are in "
                     "%.200s/versions/%d)", kept.version, kept.sha256, err, d->cfg->state_dir, kept.version);
            snprintf(err, sizeof err, "%s", why);
        }
        d->reloads_failed++;
        snprintf(d->last_reload_error, sizeof d->last_reload_error, "%s", err);
        log_error("reload (%s) refused, version %d keeps running: %s", trigger, d->version, err);
        snprintf(msg, len, "%s", err);
        return 422;
    }
    d->plans[d->nplans++] = p;
    int prev = d->version;                      /* (version - 1 only when no canary came in between) */
    d->version = d->last_version = version;
    d->loaded_at_ms = clock_wall_ms();
    d->last_reload_error[0] = 0;
    d->reloads_ok++;
    /* every task gets its version before the sources start the barrier:
     * downstream first (tasks are numbered sources first), and a keyed task
     * that aligns a barrier before its version arrives waits for it */
    for (int i = d->ntasks - 1; i >= 0; i--) {
        if (task_status(d->tasks[i]) == TASK_RUNNING) task_offer(d->tasks[i], tvs[i]);
        else task_vm_destroy(tvs[i]);
    }
    free(tvs);
    for (int i = 0; i < d->ntasks; i++) sched_wake(d->tasks[i]);
    if (to && strcmp(p->hash, kept.sha256) != 0)
        log_warn("reload (%s): version %d runs kept version %d's script with the modules of %s as they are now, "
                 "which differ from version %d's: its sha256 is %.12s, not %.12s (the copy of version %d's "
                 "modules is in %s/versions/%d)", trigger, version, kept.version, p->dir, kept.version, p->hash,
                 kept.sha256, kept.version, d->cfg->state_dir, kept.version);
    log_info("reload (%s)%s: version %d (sha256 %.12s) is rolling out", trigger, label, version, p->hash);
    int polling = poller_start(d->tasks, d->ntasks);   /* (copying the version takes milliseconds too) */
    probation_begin(d, version, prev);          /* automatic rollback: before keeping may trim the previous copy */
    int kr = to ? versions_commit(d->cfg->state_dir, version, p->hash, p->script_rel, d->loaded_at_ms,
                                  d->cfg->reload_keep_versions, err, sizeof err)
                : versions_keep(d->cfg->state_dir, version, p, d->loaded_at_ms, d->cfg->reload_keep_versions, err,
                                sizeof err);
    if (polling) poller_stop();
    if (kr < 0) log_warn("version %d runs, but is not kept for reload --to: %s", version, err);
    snprintf(msg, len, "%d", version);
    return 200;
}

int reload_request(daemon_state *d, const char *trigger, int allow_dropped_state, char *msg, size_t len) {
    return reload_request_to(d, trigger, NULL, allow_dropped_state, msg, len);
}

int reload_keep_first(daemon_state *d) {
    char err[1024];
    if (versions_reset(d->cfg->state_dir, err, sizeof err) < 0 ||
        versions_keep(d->cfg->state_dir, d->version, d->plans[d->nplans - 1], d->loaded_at_ms,
                      d->cfg->reload_keep_versions, err, sizeof err) < 0) {
        log_warn("version %d is not kept for reload --to: %s", d->version, err);
        return -1;
    }
    return 0;
}

void reload_on_file_changed(void *ud, const char *file) {
    char msg[2048];
    char trigger[300];
    snprintf(trigger, sizeof trigger, "%s changed", file);
    reload_request(ud, trigger, 0, msg, sizeof msg);
}
