#include "daemon.h"
#include "admin.h"
#include "config.h"
#include "files.h"
#include "clock.h"
#include "log.h"
#include "metrics.h"
#include "pipeline.h"
#include "reload.h"
#include "sched.h"
#include "task.h"
#include "vm.h"
#include "window.h"
#include "checkpoint.h"
#include "crash.h"
#include "kafka.h"
#include "source_kafka.h"
#include "acks.h"
#include "state.h"
#include "keygroup.h"
#include <dirent.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <ftw.h>
#include "source_file.h"

#define WATCHDOG_TICK_MS 50
#define WATCHDOG_ARM_MS 100      /* a call this long gets the instruction-count hook */
#define SAVEPOINT_TIMEOUT_MS 60000
#define POLL_TICK_MS 10          /* followed files and stdin are read again this often */

typedef struct daemon_state {
    config *cfg;
    plan *p;
    task_shared sh;
    task **tasks; int ntasks;
    channel **chans; int nchans;
    sched *s;
    struct event_base *base;
    struct event *done_ev, *wd_ev, *poll_ev, *sig_ev[3];
    admin *adm;
    reload_watch *watch;
    plan **plans; int nplans;     /* every version's plan: tasks borrow them until exit */
    int version;                  /* the newest version offered to the tasks */
    int64_t loaded_at_ms;         /* wall clock of that version's load */
    char last_reload_error[2048];
    long reloads_ok, reloads_failed;
    atomic_int ended;             /* tasks done or failed */
    atomic_int failed;
    int64_t started_ms;
    char poison_path[PATH_MAX];
    kgroup *group;                /* the consumer of Kafka sources, or NULL */
    ckpt *ckpt;                   /* checkpoints (exactly_once), or NULL */
    struct event *ckpt_ev, *ckpt_poll_ev;   /* every checkpoint.interval; while one is running */
    int workers_running;          /* the scheduler runs: tasks may be woken */
    int workers_ran;              /* it did run (a failure after that is a task's, not the config's) */
    char waiting[2600];           /* why the tasks have not started yet (health), or "" */
} daemon_state;

static int holding_input(const task *t);

/* A keyed task's per-input marks, as its worker last stored them (relaxed
 * atomics: the worker writes them as messages arrive, step_keyed). */
static int64_t chan_wm(const task *t, int c) { return __atomic_load_n(&t->chan_wm[c], __ATOMIC_RELAXED); }
static int chan_idle(const task *t, int c) { return __atomic_load_n(&t->chan_idle[c], __ATOMIC_RELAXED); }
static int chan_ended(const task *t, int c) { return __atomic_load_n(&t->ended[c], __ATOMIC_RELAXED); }
static json_t *wm_json(int64_t wm);
static json_t *input_json(const daemon_state *d, const task *t, int c);

const char *daemon_lua_dir(void) {
    static char dir[PATH_MAX];
    if (dir[0]) return dir;
    const char *env = getenv("EDDY_LUA_DIR");
    if (env && *env) { snprintf(dir, sizeof dir, "%s", env); return dir; }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) { snprintf(dir, sizeof dir, "lua"); return dir; }
    exe[n] = 0;
    snprintf(dir, sizeof dir, "%s/../lua", dirname(exe));
    char real[PATH_MAX];
    if (realpath(dir, real)) snprintf(dir, sizeof dir, "%s", real);
    return dir;
}


/* ---- checking ---------------------------------------------------------- */

/* A file is a pipeline script (not a config) when it requires "eddy". */
static int looks_like_pipeline(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    for (char *q = strstr(buf, "require"); q; q = strstr(q + 1, "require")) {
        char *r = q + 7;
        while (*r == ' ' || *r == '(' || *r == '\t') r++;
        if ((*r == '"' || *r == '\'') && strncmp(r + 1, "eddy", 4) == 0 && r[5] == *r) return 1;
    }
    return 0;
}

int daemon_check(const char *path) {
    char err[2048];
    config *cfg = looks_like_pipeline(path) ? config_default_for_pipeline(path, err, sizeof err)
                                            : config_load(path, err, sizeof err);
    if (!cfg) { fprintf(stderr, "eddy: %s\n", err); return 2; }
    log_setup(cfg->log_level, cfg->log_format == LOGFMT_JSON);
    plan *p = plan_create(cfg, daemon_lua_dir(), err, sizeof err);
    if (!p) { fprintf(stderr, "eddy: %s\n", err); config_destroy(cfg); return 2; }
    /* every task's VM must build too: the same script, its own sandbox */
    plan_print(p, cfg, stdout);
    plan_destroy(p);
    config_destroy(cfg);
    return 0;
}

/* ---- poison records ---------------------------------------------------- */

static void poison_load(daemon_state *d) {
    json_error_t je;
    json_t *j = json_load_file(d->poison_path, 0, &je);
    if (!j) return;
    poison *ps = calloc(1, sizeof *ps);
    const char *src = json_string_value(json_object_get(j, "source"));
    const char *msg = json_string_value(json_object_get(j, "error"));
    if (!ps || !src) { free(ps); json_decref(j); return; }
    ps->source = strdup(src);
    ps->partition = (int)json_integer_value(json_object_get(j, "partition"));
    ps->offset = json_integer_value(json_object_get(j, "offset"));
    char m[1024];
    snprintf(m, sizeof m, "an earlier run stopped here: %s", msg ? msg : "the record's call could not be interrupted");
    ps->message = strdup(m);
    d->sh.poison = ps;
    log_warn("%s names a record an earlier run hung on (source %s, partition %d, byte %lld); "
             "it goes to the error policy this time", d->poison_path, ps->source, ps->partition,
             (long long)ps->offset);
    json_decref(j);
}

static void poison_free(poison *ps) {
    if (!ps) return;
    free(ps->source);
    free(ps->message);
    free(ps);
}

/* ---- watchdog ---------------------------------------------------------- */

static const node *node_by_id(const plan *p, int id) {
    return id >= 1 && id <= p->nnodes ? &p->nodes[id - 1] : NULL;
}

static void describe_position(const daemon_state *d, const eddy_rec *r, char *out, size_t n) {
    const source_info *si = r->source < (uint32_t)d->p->nsources ? &d->p->sources[r->source] : NULL;
    const char *file = si && r->partition >= 0 && r->partition < si->nfiles ? si->files[r->partition] : "?";
    snprintf(out, n, "%s %s:%lld (byte %lld)", si ? si->name : "?", file, (long long)r->line, (long long)r->offset);
}

static void watchdog_fatal(daemon_state *d, task *t, int64_t elapsed) {
    /* a call without a batch (windows firing at the end, a tick) has no input record */
    const eddy_rec *r = t->io.recs && t->io.cur >= 0 && t->io.cur < t->io.n ? &t->io.recs[t->io.cur] : NULL;
    const node *nd = node_by_id(t->cur.p, t->io.cur_node);
    char pos[1024], msg[2048];
    if (r) describe_position(d, r, pos, sizeof pos);
    else snprintf(pos, sizeof pos, "(no input record: windows firing, or a processing-time tick)");
    snprintf(msg, sizeof msg,
             "operator %s (uid %s, %s) has run for %lld ms on input %s and cannot be interrupted "
             "(a loop the JIT compiled runs no hooks)",
             nd ? nd->kind_name : "?", nd ? nd->uid : "?", nd ? nd->where : "?", (long long)elapsed, pos);
    int saved = 0;
    if (r) {      /* the record to hand to the error policy next time */
        json_t *j = json_pack("{s:s, s:s?, s:i, s:I, s:I, s:s?, s:s?, s:s}", "task", t->name,
                              "source", r->source < (uint32_t)d->p->nsources ? d->p->sources[r->source].name : NULL,
                              "partition", (int)r->partition, "offset", (json_int_t)r->offset,
                              "line", (json_int_t)r->line, "operator", nd ? nd->uid : NULL,
                              "where", nd ? nd->where : NULL, "error", msg);
        saved = j && json_dump_file(j, d->poison_path, JSON_INDENT(2)) == 0;
        json_decref(j);
    }
    log_task_error(t->name, "%s; stopping. %s", msg,
                   saved ? "The next start hands this record to the error policy (the position is in state.dir/poison.json)."
                         : r ? "Could not write state.dir/poison.json." : "");
    fflush(stderr);
    _exit(1);
}

static void on_watchdog(evutil_socket_t fd, short what, void *arg) {
    (void)fd; (void)what;
    daemon_state *d = arg;
    int64_t now = clock_mono_ms();
    int64_t limit = d->cfg->limit_time_ms;
    int64_t grace = limit > 1000 ? limit : 1000;
    for (int i = 0; i < d->ntasks; i++) {
        task *t = d->tasks[i];
        /* the worker (and its Lua, through the FFI) writes these as it goes */
        if (!__atomic_load_n(&t->io.in_call, __ATOMIC_RELAXED)) { t->wd_seq = -1; continue; }
        int64_t seq = (int64_t)__atomic_load_n(&t->io.seq, __ATOMIC_RELAXED);
        int32_t cur = __atomic_load_n(&t->io.cur, __ATOMIC_RELAXED);
        if (seq != t->wd_seq || cur != t->wd_cur) {
            t->wd_seq = seq; t->wd_cur = cur; t->wd_since_ms = now;
            pthread_mutex_lock(&t->swap_mu);
            t->wd_call = vm_call(t->cur.vm);
            pthread_mutex_unlock(&t->swap_mu);
            t->wd_armed = t->wd_interrupted = 0;
            continue;
        }
        int64_t elapsed = now - t->wd_since_ms;
        pthread_mutex_lock(&t->swap_mu);       /* t->cur.vm must not be swapped away under us */
        if (elapsed >= WATCHDOG_ARM_MS && !t->wd_armed) { t->wd_armed = 1; vm_arm(t->cur.vm, t->wd_call); }
        if (elapsed >= limit && !t->wd_interrupted) {
            char reason[128];
            snprintf(reason, sizeof reason, "ran longer than %lld ms (limits.time)", (long long)limit);
            t->wd_interrupted = 1;
            vm_interrupt(t->cur.vm, reason, t->wd_call);
        }
        pthread_mutex_unlock(&t->swap_mu);
        if (elapsed >= limit + grace) watchdog_fatal(d, t, elapsed);
    }
}

static void on_poll(evutil_socket_t fd, short what, void *arg) {
    (void)fd; (void)what;
    daemon_state *d = arg;
    if (d->sh.kafka) kafka_poll(d->sh.kafka);      /* delivery reports */
    if (d->sh.kafka && kafka_failed(d->sh.kafka) && !atomic_load(&d->sh.aborting)) {
        /* on_error = "fail" and Kafka refused a message: stop now (exit 1) */
        log_error("%s: stopping", kafka_failed(d->sh.kafka));
        atomic_store(&d->sh.aborting, 1);
        for (int i = 0; i < d->ntasks; i++) sched_wake(d->tasks[i]);
        event_base_loopbreak(d->base);
        return;
    }
    if (d->sh.acks) acks_poll(d->sh.acks);         /* markers whose Kafka outputs were delivered */
    if (d->group && d->workers_running) {
        kgroup_poll(d->group);                     /* rebalances, commits, statistics */
        /* backpressure: a partition whose task cannot send stops being
         * fetched (the broker keeps the rest) until its channels have room;
         * decided here, so that it holds even while every worker is busy */
        for (int i = 0; i < d->ntasks; i++)
            if (d->tasks[i]->kp) kpart_pause(d->tasks[i]->kp, task_outputs_full(d->tasks[i]));
    }
    for (int i = 0; i < d->ntasks; i++)
        if (task_pollable(d->tasks[i]) && atomic_load(&d->tasks[i]->status) == TASK_RUNNING) sched_wake(d->tasks[i]);
}

static int request_reload(daemon_state *d, const char *trigger, int allow_dropped_state, char *msg, size_t len);
static int reload_in_progress(daemon_state *d);

/* ---- lifecycle --------------------------------------------------------- */

/* Checkpoints: one begins every checkpoint.interval (unless a reload is
 * rolling out); while it runs, the poll completes it once every task passed
 * its barrier. */
static void on_checkpoint_poll(evutil_socket_t fd, short what, void *arg) {
    (void)fd; (void)what;
    daemon_state *d = arg;
    ckpt_poll(d->ckpt);
    if (!ckpt_running(d->ckpt)) event_del(d->ckpt_poll_ev);
}

static void on_checkpoint(evutil_socket_t fd, short what, void *arg) {
    (void)fd; (void)what;
    daemon_state *d = arg;
    if (!d->workers_running || atomic_load(&d->sh.aborting) || reload_in_progress(d) || ckpt_running(d->ckpt)) return;
    if (ckpt_begin(d->ckpt)) {
        struct timeval pt = { 0, 2000 };
        event_add(d->ckpt_poll_ev, &pt);
    }
}

static void on_task_done(void *ud, task *t) {
    daemon_state *d = ud;
    if (atomic_load(&t->status) == TASK_FAILED && atomic_fetch_add(&d->failed, 1) == 0)
        atomic_store(&d->sh.aborting, 1);
    atomic_fetch_add(&d->ended, 1);
    event_active(d->done_ev, EV_READ, 0);
}

static void on_done_check(evutil_socket_t fd, short what, void *arg) {
    (void)fd; (void)what;
    daemon_state *d = arg;
    if (atomic_load(&d->failed)) {
        /* wake everything so the rest end quickly */
        for (int i = 0; i < d->ntasks; i++) sched_wake(d->tasks[i]);
        event_base_loopbreak(d->base);
        return;
    }
    if (atomic_load(&d->ended) == d->ntasks) event_base_loopbreak(d->base);
}

/* A second stop signal: the workers get ABORT_GRACE_MS to leave the call
 * they are in; past that the process exits as after a crash (nothing of
 * this run is committed, and the next one recovers as from a SIGKILL). */
#define ABORT_GRACE_MS 2000
static void *exit_soon(void *arg) {
    (void)arg;
    usleep(ABORT_GRACE_MS * 1000);
    log_warn("still stopping after %d ms (a call that does not return): exiting now", ABORT_GRACE_MS);
    _exit(1);
    return NULL;
}

static void stop_gracefully(daemon_state *d, const char *why) {
    if (atomic_exchange(&d->sh.stopping, 1)) {
        log_warn("%s again: stopping now without draining", why);
        atomic_store(&d->sh.aborting, 1);
        event_base_loopbreak(d->base);
        pthread_t th;
        if (pthread_create(&th, NULL, exit_soon, NULL) == 0) pthread_detach(th);
        return;
    }
    log_info("%s: stopping (sources end, everything in flight is drained and written)", why);
    for (int i = 0; i < d->ntasks; i++) sched_wake(d->tasks[i]);
}

static void on_signal(evutil_socket_t sig, short what, void *arg) {
    (void)what;
    daemon_state *d = arg;
    if (sig == SIGHUP) {
        char msg[2048];
        request_reload(d, "SIGHUP", 0, msg, sizeof msg);
        return;
    }
    stop_gracefully(d, sig == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* GET /explain/UID: why the oldest open window of operator UID has not
 * fired, per task that runs it. */
static json_t *error_json(int *http_status, int code, const char *msg) {
    *http_status = code;
    return json_pack("{s:s}", "error", msg);
}

/* GET /state/UID/KEY: the named states of one key; GET /state/UID?prefix=&limit=:
 * keys and their states.  Read from committed batches only. */
static json_t *h_state(daemon_state *d, const char *path, const char *query, int *http_status) {
    const char *rest = path + 7;                       /* after "/state/" */
    const char *slash = strchr(rest, '/');
    char uidraw[512];
    snprintf(uidraw, sizeof uidraw, "%.*s", (int)(slash ? (size_t)(slash - rest) : strlen(rest)), rest);
    char *uid = evhttp_uridecode(uidraw, 0, NULL);
    json_t *out = NULL;
    const plan *p = d->plans[d->nplans - 1];
    const node *op = NULL;
    for (int i = 0; uid && i < p->nnodes; i++)
        if (p->nodes[i].uid && strcmp(p->nodes[i].uid, uid) == 0 && p->nodes[i].kind != NODE_SINK &&
            p->nodes[i].kind != NODE_SOURCE)
            op = &p->nodes[i];                     /* (sources and sinks have uids of their own: their names) */
    if (!uid || !*uid) { out = error_json(http_status, 400, "GET /state/UID/KEY or /state/UID?prefix=P&limit=N"); goto done; }
    if (!op || (op->kind != NODE_PROCESS && op->kind != NODE_DEDUP && op->kind != NODE_JOIN &&
                op->kind != NODE_GLOBAL_TABLE && op->kind != NODE_WINDOW) || !d->sh.state) {
        out = error_json(http_status, 404, "no process, dedup, join, window or global table with that uid runs here");
        goto done;
    }
    int window = op->kind == NODE_WINDOW;
    const char *agg = window ? (node_opt(op, "agg") ? node_opt(op, "agg") : "count") : NULL;
    struct evkeyvalq q;
    q.tqh_first = NULL;
    q.tqh_last = &q.tqh_first;
    if (query && evhttp_parse_query_str(query, &q) < 0) { out = error_json(http_status, 400, "a malformed query"); goto done; }
    if (slash) {
        /* windows: ?from=&to= (ms) bound them */
        const char *fs = evhttp_find_header(&q, "from"), *ts = evhttp_find_header(&q, "to");
        char *fe = NULL, *te = NULL;
        long long from = fs ? strtoll(fs, &fe, 10) : INT64_MIN, to = ts ? strtoll(ts, &te, 10) : INT64_MAX;
        int bad = (fs && (*fe || fe == fs)) || (ts && (*te || te == ts));
        for (struct evkeyval *kv = q.tqh_first; kv; kv = kv->next.tqe_next)
            if (!window || (strcmp(kv->key, "from") != 0 && strcmp(kv->key, "to") != 0)) bad = 1;
        evhttp_clear_headers(&q);
        if (bad) {
            out = error_json(http_status, 400, window ? "from and to must be times in ms (and the only parameters)"
                                                      : "GET /state/UID/KEY takes no parameters");
            goto done;
        }
        size_t klen = 0;
        char *key = evhttp_uridecode(slash + 1, 0, &klen);
        if (!key || klen == 0) { free(key); out = error_json(http_status, 400, "an empty key"); goto done; }
        uint32_t kg = op->kind == NODE_GLOBAL_TABLE ? 0 : keygroup_of(key, klen, d->cfg->max_parallelism);
        out = window ? window_key_json(d->sh.state, uid, kg, key, klen, from, to, agg)
                     : state_key_json(d->sh.state, uid, kg, key, klen);
        free(key);
        if (!out) out = error_json(http_status, 404, "that key has no state");
        goto done;
    }
    const char *prefix = evhttp_find_header(&q, "prefix"), *lim = evhttp_find_header(&q, "limit");
    char *end = NULL;
    long limit = lim ? strtol(lim, &end, 10) : 100;
    for (struct evkeyval *kv = q.tqh_first; kv; kv = kv->next.tqe_next)
        if (strcmp(kv->key, "prefix") != 0 && strcmp(kv->key, "limit") != 0) limit = -1;
    if ((lim && (*end || end == lim)) || limit < 1 || limit > 100000) {
        evhttp_clear_headers(&q);
        out = error_json(http_status, 400, "limit must be a number from 1 to 100000 (and prefix and limit the only parameters)");
        goto done;
    }
    size_t plen = prefix ? strlen(prefix) : 0;
    out = window ? window_scan_json(d->sh.state, uid, prefix ? prefix : "", plen, (int)limit, agg)
                 : state_scan_json(d->sh.state, uid, prefix ? prefix : "", plen, (int)limit);
    evhttp_clear_headers(&q);
done:
    free(uid);
    return out;
}

static json_t *h_prefixed(void *ud, const char *path, const char *query, int *http_status) {
    daemon_state *d = ud;
    if (strncmp(path, "/state/", 7) == 0) return h_state(d, path, query, http_status);
    if (strncmp(path, "/explain/", 9) != 0) { *http_status = 404; return NULL; }
    char *uid = evhttp_uridecode(path + 9, 0, NULL);
    json_t *tasks = json_array();
    int found = 0;
    for (int i = 0; uid && i < d->ntasks; i++) {
        task *t = d->tasks[i];
        pthread_mutex_lock(&t->swap_mu);
        for (int k = 0; k < t->nwins; k++) {
            if (strcmp(t->wins[k].uid, uid) != 0) continue;
            found = 1;
            int64_t end = window_next_end(t->wins[k].w);
            json_t *jt = json_pack("{s:s, s:o, s:I}", "task", t->name, "watermark", wm_json(t->io.wm),
                                   "open_windows", (json_int_t)window_open_count(t->wins[k].w));
            if (end == INT64_MAX) {
                json_object_set_new(jt, "oldest_window", json_null());
                json_object_set_new(jt, "why", json_string("no window is waiting to fire"));
            } else {
                json_object_set_new(jt, "oldest_window", json_pack("{s:I}", "end", (json_int_t)end));
                json_object_set_new(jt, "fires_at_watermark", json_integer(end - 1));
                int h = holding_input(t);
                char why[512];
                if (h >= 0) {
                    json_object_set_new(jt, "held_back_by", input_json(d, t, h));
                    snprintf(why, sizeof why, "the window ending at %lld fires when the watermark reaches %lld; "
                             "input %s holds the watermark at %lld", (long long)end, (long long)(end - 1),
                             t->in[h]->producer->name, (long long)chan_wm(t, h));
                } else {
                    snprintf(why, sizeof why, "the window ending at %lld fires when the watermark reaches %lld; "
                             "every input is idle, and the highest of their watermarks is below that: it waits for records", (long long)end, (long long)(end - 1));
                }
                json_object_set_new(jt, "why", json_string(why));
            }
            json_array_append_new(tasks, jt);
        }
        pthread_mutex_unlock(&t->swap_mu);
    }
    if (!found) {
        json_decref(tasks);
        *http_status = 404;
        json_t *e = json_pack("{s:s}", "error", "no window operator with that uid runs here");
        free(uid);
        return e;
    }
    json_t *out = json_pack("{s:s, s:o}", "uid", uid, "tasks", tasks);
    free(uid);
    return out;
}

/* ---- reload ------------------------------------------------------------ */

/* A reload is in progress while a running task has not reached the newest version. */
static int reload_in_progress(daemon_state *d) {
    for (int i = 0; i < d->ntasks; i++) {
        task *t = d->tasks[i];
        if (atomic_load(&t->status) == TASK_RUNNING && task_version(t) != d->version) return 1;
    }
    return 0;
}

/* Validates the pipeline script as it is on disk now and, when it is good,
 * offers the new version to every task.  Returns an HTTP-like status (200,
 * 422 refused, 503 busy or stopping) with msg. */
static int request_reload(daemon_state *d, const char *trigger, int allow_dropped_state, char *msg, size_t len) {
    if (!d->workers_running) {
        snprintf(msg, len, "eddy is still starting (waiting for Kafka): reload once it runs");
        log_warn("%s: reload refused: %s", trigger, msg);
        return 503;
    }
    if (atomic_load(&d->sh.stopping) || atomic_load(&d->sh.aborting)) {
        snprintf(msg, len, "eddy is stopping: no reload");
        return 503;
    }
    if (reload_in_progress(d)) {
        snprintf(msg, len, "version %d is still being rolled out to the tasks; try again", d->version);
        return 503;
    }
    if (d->ckpt && ckpt_running(d->ckpt)) {
        snprintf(msg, len, "a checkpoint is in progress; try again");
        return 503;
    }
    /* the same content as the running version: nothing to roll out */
    const plan *cur = d->plans[d->nplans - 1];
    char hash[65];
    if (!allow_dropped_state && plan_hash(cur->script, hash, msg, len) == 0 && strcmp(hash, cur->hash) == 0) {
        log_info("reload (%s): nothing changed (sha256 %.12s): version %d keeps running", trigger, hash, d->version);
        snprintf(msg, len, "%d", d->version);
        return 200;
    }
    int version = d->version + 1;
    task_vm **tvs = calloc(d->ntasks, sizeof *tvs);
    plan **plans = realloc(d->plans, sizeof *plans * (d->nplans + 1));
    if (!tvs || !plans) { free(tvs); snprintf(msg, len, "out of memory"); return 503; }
    d->plans = plans;
    char err[2048];
    plan *p = reload_prepare(d->cfg, daemon_lua_dir(), d->plans[d->nplans - 1], d->tasks, d->ntasks, version,
                             allow_dropped_state, tvs, err, sizeof err);
    if (!p) {
        free(tvs);
        d->reloads_failed++;
        snprintf(d->last_reload_error, sizeof d->last_reload_error, "%s", err);
        log_error("reload (%s) refused, version %d keeps running: %s", trigger, d->version, err);
        snprintf(msg, len, "%s", err);
        return 422;
    }
    d->plans[d->nplans++] = p;
    d->version = version;
    d->loaded_at_ms = clock_wall_ms();
    d->last_reload_error[0] = 0;
    d->reloads_ok++;
    /* every task gets its version before the sources start the barrier:
     * downstream first (tasks are numbered sources first), and a keyed task
     * that aligns a barrier before its version arrives waits for it */
    for (int i = d->ntasks - 1; i >= 0; i--) {
        if (atomic_load(&d->tasks[i]->status) == TASK_RUNNING) task_offer(d->tasks[i], tvs[i]);
        else task_vm_destroy(tvs[i]);
    }
    free(tvs);
    for (int i = 0; i < d->ntasks; i++) sched_wake(d->tasks[i]);
    log_info("reload (%s): version %d (sha256 %.12s) is rolling out", trigger, version, p->hash);
    snprintf(msg, len, "%d", version);
    return 200;
}

static void on_file_changed(void *ud, const char *file) {
    char msg[2048];
    char trigger[300];
    snprintf(trigger, sizeof trigger, "%s changed", file);
    request_reload(ud, trigger, 0, msg, sizeof msg);
}

static json_t *h_reload(void *ud, const char *query, int *http_status) {
    daemon_state *d = ud;
    char msg[2048];
    int force = query && strstr(query, "allow_dropped_state=1") != NULL;
    int before = d->version;
    *http_status = request_reload(d, "POST /reload", force, msg, sizeof msg);
    if (*http_status == 200)
        return json_pack("{s:i, s:s, s:b}", "version", atoi(msg), "sha256", d->plans[d->nplans - 1]->hash, "unchanged",
                         d->version == before);
    return json_pack("{s:s, s:i}", "error", msg, "version", d->version);
}

/* The savepoint is the final state: stopping is set before the tasks held
 * at its barrier go on, so the sources end without reading further. */
static void stop_after_savepoint(evutil_socket_t fd, short what, void *arg) {
    (void)fd; (void)what;
    daemon_state *d = arg;
    stop_gracefully(d, "savepoint --stop");
    ckpt_release(d->ckpt);
}

/* POST /savepoint[?stop=1]: a checkpoint copied into a folder of its own;
 * the event loop waits for it (up to 60 s for the barriers). */
static json_t *h_savepoint(void *ud, const char *query, int *http_status) {
    daemon_state *d = ud;
    char path[PATH_MAX], err[2048];
    if (!d->ckpt || !d->workers_running || atomic_load(&d->sh.stopping) || atomic_load(&d->sh.aborting)) {
        *http_status = 503;
        return json_pack("{s:s}", "error", d->ckpt ? "eddy is starting or stopping: no savepoint" : "no state to save");
    }
    if (reload_in_progress(d)) {
        *http_status = 503;
        return json_pack("{s:s}", "error", "a reload is rolling out; try again");
    }
    int stop = query && strstr(query, "stop=1") != NULL;
    int rc = ckpt_savepoint(d->ckpt, d->cfg->state_dir, SAVEPOINT_TIMEOUT_MS, stop, path, sizeof path, err, sizeof err);
    if (ckpt_running(d->ckpt)) {                  /* timed out: it completes as a checkpoint */
        struct timeval pt = { 0, 2000 };
        event_add(d->ckpt_poll_ev, &pt);
    }
    if (rc < 0) {
        ckpt_release(d->ckpt);                        /* (held when only the copy failed) */
        log_error("savepoint failed: %s", err);
        *http_status = 500;
        return json_pack("{s:s}", "error", err);
    }
    if (stop) {                                       /* once the answer is on its way */
        struct timeval soon = { 0, 100 * 1000 };
        event_base_once(d->base, -1, EV_TIMEOUT, stop_after_savepoint, d, &soon);
    }
    return json_pack("{s:s}", "path", path);
}

/* ---- admin ------------------------------------------------------------- */

static int h_health(void *ud, char *reason, size_t len) {
    daemon_state *d = ud;
    if (d->waiting[0]) { snprintf(reason, len, "%s", d->waiting); return 0; }
    if (d->group && kgroup_down(d->group, reason, len)) return 0;
    for (int i = 0; i < d->ntasks; i++)
        if (atomic_load(&d->tasks[i]->status) == TASK_FAILED) {
            snprintf(reason, len, "task %s failed: %s", d->tasks[i]->name, d->tasks[i]->error);
            return 0;
        }
    return 1;
}

/* The input of keyed task t that holds its watermark back (the lowest among
 * inputs that are neither idle nor ended), or -1. */
static int holding_input(const task *t) {
    int at = -1;
    int64_t at_wm = 0;
    for (int c = 0; c < t->nin; c++) {
        if (chan_ended(t, c) || chan_idle(t, c)) continue;
        int64_t wm = chan_wm(t, c);
        if (at < 0 || wm < at_wm) { at = c; at_wm = wm; }
    }
    return at;
}

static json_t *wm_json(int64_t wm) {
    if (wm == TS_NONE) return json_null();
    if (wm >= WM_END) return json_string("+inf");
    return json_integer(wm);
}

/* Where an input comes from: the upstream task, and for a source task its
 * source, partition and file. */
static json_t *input_json(const daemon_state *d, const task *t, int c) {
    const task *up = t->in[c]->producer;
    json_t *j = json_pack("{s:s, s:o, s:b, s:b}", "from", up->name, "watermark", wm_json(chan_wm(t, c)),
                          "idle", chan_idle(t, c) != 0, "ended", chan_ended(t, c) != 0);
    if (up->source >= 0) {
        const source_info *si = &d->p->sources[up->source];
        json_object_set_new(j, "source", json_string(si->name));
        json_object_set_new(j, "partition", json_integer(up->index));
        json_object_set_new(j, "file", json_string(si->files[up->index]));
    }
    return j;
}

static const char *status_name(int s) {
    return s == TASK_DONE ? "done" : s == TASK_FAILED ? "failed" : "running";
}

static json_t *h_status(void *ud) {
    daemon_state *d = ud;
    json_t *tasks = json_array();
    for (int i = 0; i < d->ntasks; i++) {
        task *t = d->tasks[i];
        int version = task_version(t);
        pthread_mutex_lock(&t->swap_mu);
        size_t vm_bytes = vm_memory(t->cur.vm);
        const char *stage = t->st->name;      /* t->st changes with the version (swap_version) */
        pthread_mutex_unlock(&t->swap_mu);
        json_t *jt = json_pack("{s:s, s:s, s:i, s:s, s:I, s:I, s:I, s:I, s:I, s:I}",
            "name", t->name, "stage", stage, "index", t->index,
            "status", status_name(atomic_load(&t->status)),
            "records_in", (json_int_t)t->records_in, "records_out", (json_int_t)t->records_out,
            "errors", (json_int_t)t->io.errors, "skipped", (json_int_t)t->io.skipped,
            "dead_letters", (json_int_t)t->io.dead_letters, "vm_memory", (json_int_t)vm_bytes);
        json_object_set_new(jt, "version", json_integer(version));
        json_object_set_new(jt, "last_reload_pause_ms", json_real((double)t->last_pause_us / 1000.0));
        json_object_set_new(jt, "watermark", wm_json(t->io.wm));
        if (t->source >= 0) {
            const source_info *si = &d->p->sources[t->source];
            json_object_set_new(jt, "source", json_string(si->name));
            json_object_set_new(jt, "partition", json_integer(t->index));
            if (si->kind == SRC_KAFKA) {
                json_object_set_new(jt, "topic", json_string(si->topics[si->ktopic[t->index]]));
                json_object_set_new(jt, "kafka_partition", json_integer(si->kpart[t->index]));
                json_object_set_new(jt, "assigned", json_boolean(t->kp && kpart_state(t->kp) != KP_UNASSIGNED));
            } else {
                json_object_set_new(jt, "file", json_string(si->files[t->index]));
            }
            json_object_set_new(jt, "position", json_integer(t->position));
        } else {
            int depth = 0;
            json_t *inputs = json_array();
            for (int c = 0; c < t->nin; c++) {
                depth += channel_depth(t->in[c]);
                json_array_append_new(inputs, input_json(d, t, c));
            }
            json_object_set_new(jt, "queue", json_integer(depth));
            json_object_set_new(jt, "inputs", inputs);
            int h = holding_input(t);
            if (h >= 0) json_object_set_new(jt, "held_back_by", json_string(t->in[h]->producer->name));
        }
        if (t->error[0]) json_object_set_new(jt, "error", json_string(t->error));
        json_array_append_new(tasks, jt);
    }
    char hash[13];
    const plan *cur = d->plans[d->nplans - 1];
    snprintf(hash, sizeof hash, "%.12s", cur->hash);
    json_t *err = d->last_reload_error[0] ? json_string(d->last_reload_error) : json_null();
    json_t *j = json_pack("{s:s, s:{s:s, s:i, s:s, s:s, s:I, s:o, s:b}, s:s, s:I, s:o, s:o}",
        "app", d->cfg->name,
        "pipeline", "path", cur->script, "version", d->version, "hash", hash, "sha256", cur->hash,
        "loaded_at", (json_int_t)d->loaded_at_ms, "last_reload_error", err, "reloading", reload_in_progress(d),
        "state", atomic_load(&d->sh.stopping) ? "stopping" : d->waiting[0] ? "waiting" : "running",
        "uptime_ms", (json_int_t)(clock_mono_ms() - d->started_ms),
        "tasks", tasks, "last_checkpoint", d->ckpt ? ckpt_status_json(d->ckpt) : json_null());
    if (d->waiting[0]) json_object_set_new(j, "waiting_for", json_string(d->waiting));
    if (d->group) json_object_set_new(j, "kafka", kgroup_status(d->group));
    return j;
}

static void h_metrics(void *ud, struct evbuffer *out) {
    daemon_state *d = ud;
    struct { const char *name, *help; int which; } per_task[] = {
        {"eddy_records_in_total", "Records a task took in.", 0},
        {"eddy_records_out_total", "Records a task sent to keyed stages.", 1},
        {"eddy_errors_total", "Records whose processing raised an error.", 2},
        {"eddy_records_skipped_total", "Records skipped by on_error = \"skip\".", 3},
        {"eddy_dead_letters_total", "Records written to the dead-letter file.", 4},
        {"eddy_vm_memory_bytes", "Bytes held by a task's Lua VM.", 5},
    };
    for (size_t m = 0; m < sizeof per_task / sizeof per_task[0]; m++) {
        metrics_family(out, per_task[m].name, per_task[m].which == 5 ? "gauge" : "counter", per_task[m].help);
        for (int i = 0; i < d->ntasks; i++) {
            task *t = d->tasks[i];
            double v = 0;
            switch (per_task[m].which) {
            case 0: v = (double)t->records_in; break;
            case 1: v = (double)t->records_out; break;
            case 2: v = (double)t->io.errors; break;
            case 3: v = (double)t->io.skipped; break;
            case 4: v = (double)t->io.dead_letters; break;
            default:
                pthread_mutex_lock(&t->swap_mu);
                v = (double)vm_memory(t->cur.vm);
                pthread_mutex_unlock(&t->swap_mu);
                break;
            }
            const char *labels[] = {"task", t->name, NULL};
            metrics_sample(out, per_task[m].name, labels, v);
        }
        if (per_task[m].which == 4) kafka_metrics_dead_letters(d->sh.kafka, out);   /* {sink}: refused after retries */
    }
    for (int dir = 0; dir < 2; dir++) {
        const char *name = dir == 0 ? "eddy_operator_records_in_total" : "eddy_operator_records_out_total";
        metrics_family(out, name, "counter", dir == 0 ? "Records into an operator, per task." : "Records out of an operator, per task.");
        for (int i = 0; i < d->ntasks; i++) {
            task *t = d->tasks[i];
            pthread_mutex_lock(&t->swap_mu);          /* cur must not change under us */
            const plan *tp = t->cur.p;
            for (int k = 0; k < t->cur.st->nnodes; k++) {
                const node *nd = &tp->nodes[t->cur.st->nodes[k] - 1];
                const char *labels[] = {"task", t->name, "operator", nd->uid, "kind", nd->kind_name, NULL};
                metrics_sample(out, name, labels, (double)(dir == 0 ? t->cur.node_in[nd->id] : t->cur.node_out[nd->id]));
            }
            pthread_mutex_unlock(&t->swap_mu);
        }
    }
    metrics_family(out, "eddy_channel_queue_depth", "gauge", "Batches waiting in a channel between two tasks.");
    for (int c = 0; c < d->nchans; c++) {
        channel *ch = d->chans[c];
        const char *labels[] = {"from", ch->producer->name, "to", ch->consumer->name, NULL};
        metrics_sample(out, "eddy_channel_queue_depth", labels, channel_depth(ch));
    }
    metrics_family(out, "eddy_late_records_dropped_total", "counter",
                   "Records too late for every window of an operator, with no side output to take them.");
    for (int i = 0; i < d->ntasks; i++) {
        pthread_mutex_lock(&d->tasks[i]->swap_mu);
        for (int k = 0; k < d->tasks[i]->nwins; k++) {
            if (strchr(d->tasks[i]->wins[k].uid, '#')) continue;     /* a window's helper store */
            const char *labels[] = {"task", d->tasks[i]->name, "operator", d->tasks[i]->wins[k].uid, NULL};
            metrics_sample(out, "eddy_late_records_dropped_total", labels, (double)window_late_dropped(d->tasks[i]->wins[k].w));
        }
        pthread_mutex_unlock(&d->tasks[i]->swap_mu);
    }
    metrics_family(out, "eddy_open_windows", "gauge", "Windows holding state, per operator and task.");
    for (int i = 0; i < d->ntasks; i++) {
        pthread_mutex_lock(&d->tasks[i]->swap_mu);
        for (int k = 0; k < d->tasks[i]->nwins; k++) {
            if (strchr(d->tasks[i]->wins[k].uid, '#')) continue;
            const char *labels[] = {"task", d->tasks[i]->name, "operator", d->tasks[i]->wins[k].uid, NULL};
            metrics_sample(out, "eddy_open_windows", labels, (double)window_open_count(d->tasks[i]->wins[k].w));
        }
        pthread_mutex_unlock(&d->tasks[i]->swap_mu);
    }
    metrics_family(out, "eddy_watermark_lag_ms", "gauge",
                   "Wall-clock time minus a task's event-time watermark (tasks that have one).");
    int64_t now = clock_wall_ms();
    for (int i = 0; i < d->ntasks; i++) {
        int64_t wm = d->tasks[i]->io.wm;
        if (wm == TS_NONE || wm >= ((int64_t)1 << 62)) continue;
        const char *labels[] = {"task", d->tasks[i]->name, NULL};
        metrics_sample(out, "eddy_watermark_lag_ms", labels, (double)(now - wm));
    }
    if (d->sh.kafka) {
        metrics_family(out, "eddy_kafka_messages_total", "counter",
                       "Messages a Kafka sink's producer delivered, or that Kafka finally refused.");
        for (int i = 0; i < kafka_nsinks(d->sh.kafka); i++) {
            kafka_sink *ks = kafka_sink_at(d->sh.kafka, i);
            const char *sent[] = {"sink", kafka_sink_name(ks), "result", "delivered", NULL};
            const char *failed[] = {"sink", kafka_sink_name(ks), "result", "failed", NULL};
            metrics_sample(out, "eddy_kafka_messages_total", sent, (double)kafka_sink_sent(ks));
            metrics_sample(out, "eddy_kafka_messages_total", failed, (double)kafka_sink_failed(ks));
        }
    }
    if (kafka_txn_active(d->sh.kafka)) {
        metrics_family(out, "eddy_kafka_transactions_total", "counter",
                       "Kafka transactions of the sinks (exactly_once: one per checkpoint), committed or failed.");
        const char *c_l[] = {"result", "committed", NULL}, *a_l[] = {"result", "aborted", NULL};
        metrics_sample(out, "eddy_kafka_transactions_total", c_l, (double)kafka_txn_committed(d->sh.kafka));
        metrics_sample(out, "eddy_kafka_transactions_total", a_l, (double)kafka_txn_aborted(d->sh.kafka));
    }
    if (d->ckpt) ckpt_metrics(d->ckpt, out);
    metrics_family(out, "eddy_reloads_total", "counter", "Reloads of the pipeline, by result.");
    const char *ok_l[] = {"result", "ok", NULL}, *err_l[] = {"result", "error", NULL};
    metrics_sample(out, "eddy_reloads_total", ok_l, (double)d->reloads_ok);
    metrics_sample(out, "eddy_reloads_total", err_l, (double)d->reloads_failed);
    metrics_family(out, "eddy_pipeline_version", "gauge", "The pipeline version each task runs.");
    for (int i = 0; i < d->ntasks; i++) {
        const char *labels[] = {"task", d->tasks[i]->name, NULL};
        metrics_sample(out, "eddy_pipeline_version", labels, task_version(d->tasks[i]));
    }
    metrics_family(out, "eddy_reload_pause_seconds", "gauge",
                   "Last reload: time between a task's last record on the old version and its first on the new.");
    for (int i = 0; i < d->ntasks; i++) {
        const char *labels[] = {"task", d->tasks[i]->name, NULL};
        metrics_sample(out, "eddy_reload_pause_seconds", labels, (double)d->tasks[i]->last_pause_us / 1e6);
    }
    if (d->sh.kafka) {
        metrics_family(out, "eddy_kafka_bytes_out_total", "counter", "Key and value bytes Kafka sinks delivered.");
        for (int i = 0; i < kafka_nsinks(d->sh.kafka); i++) {
            kafka_sink *ks = kafka_sink_at(d->sh.kafka, i);
            const char *l[] = {"sink", kafka_sink_name(ks), NULL};
            metrics_sample(out, "eddy_kafka_bytes_out_total", l, (double)kafka_sink_bytes(ks));
        }
    }
    if (d->group) kgroup_metrics(d->group, out);
    if (d->sh.state) {
        metrics_family(out, "eddy_state_keys", "gauge", "RocksDB's estimate of the keyed state entries (state, timers).");
        metrics_sample(out, "eddy_state_keys", NULL, (double)state_estimate_keys(d->sh.state));
        metrics_family(out, "eddy_state_bytes", "gauge", "Keyed state on disk and in memtables, in bytes.");
        metrics_sample(out, "eddy_state_bytes", NULL, (double)state_disk_bytes(d->sh.state));
        int64_t mem[STATE_MEMORY_PARTS];
        state_memory(d->sh.state, mem);
        metrics_family(out, "eddy_state_memory_bytes", "gauge",
                       "RocksDB's memory: block cache (pinned: the part of it that cannot be evicted), memtables, "
                       "table readers outside the cache.");
        for (int i = 0; i < STATE_MEMORY_PARTS; i++) {
            const char *labels[] = {"part", state_memory_parts[i], NULL};
            if (mem[i] >= 0) metrics_sample(out, "eddy_state_memory_bytes", labels, (double)mem[i]);
        }
    }
    metrics_family(out, "eddy_tasks", "gauge", "Tasks by state.");
    int counts[3] = {0, 0, 0};
    for (int i = 0; i < d->ntasks; i++) counts[atomic_load(&d->tasks[i]->status)]++;
    for (int s = 0; s < 3; s++) {
        const char *labels[] = {"state", status_name(s), NULL};
        metrics_sample(out, "eddy_tasks", labels, counts[s]);
    }
}

/* ---- Kafka sources ------------------------------------------------------ */

static void on_group_wake(void *ud, int task_id) {
    daemon_state *d = ud;
    if (d->workers_running && task_id >= 0 && task_id < d->ntasks) sched_wake(d->tasks[task_id]);
}

static void on_group_serve(void *ud) {
    daemon_state *d = ud;
    if (d->sh.kafka) kafka_poll(d->sh.kafka);
    if (d->sh.acks) acks_poll(d->sh.acks);
}

/* exactly_once: partitions are being revoked; what was read from them is
 * committed by a checkpoint before the group hands them on (on the event
 * loop, inside the rebalance callback). */
#define REVOKE_CHECKPOINT_TIMEOUT_MS 30000
static int on_group_checkpoint(void *ud) {
    daemon_state *d = ud;
    if (!d->ckpt || !d->workers_running) return 0;          /* nothing read yet */
    if (atomic_load(&d->sh.aborting) || reload_in_progress(d)) return -1;
    char err[2048];
    int64_t id = ckpt_now(d->ckpt, REVOKE_CHECKPOINT_TIMEOUT_MS, "revocation's", on_group_serve, d, err, sizeof err);
    if (ckpt_running(d->ckpt)) {
        struct timeval pt = { 0, 2000 };
        event_add(d->ckpt_poll_ev, &pt);
    }
    if (id < 0) { log_warn("kafka: %s", err); return -1; }
    log_info("kafka: checkpoint %lld committed what was read from the partitions given up", (long long)id);
    return 0;
}

static void on_acked(void *ud, int source_task, uint64_t marker, int64_t position) {
    daemon_state *d = ud;
    if (source_task >= 0 && source_task < d->ntasks && d->tasks[source_task]->kp)
        kpart_acked(d->tasks[source_task]->kp, marker, position);
}

typedef struct resolve_ctx { daemon_state *d; int why; } resolve_ctx;

static int count_partitions(void *ud, const char *topic, char *err, size_t errlen) {
    resolve_ctx *rc = ud;
    const config *cfg = rc->d->cfg;
    if (cfg->kafka_embedded && !opt_find(&cfg->kafka_embedded_topics, topic)) {
        /* librdkafka's mock cluster creates any topic it is asked about: a
         * typo would read an empty topic without a word */
        rc->why = KG_UNKNOWN_TOPIC;
        snprintf(err, errlen, "no such topic in kafka.embedded.topics; add it there (topics = { %s = 4 })", topic);
        return -1;
    }
    return kgroup_partitions(rc->d->group, topic, 1000, &rc->why, err, errlen);
}

static void on_wait_tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd; (void)what;
    event_base_loopbreak(((daemon_state *)arg)->base);
}

/* Learns the Kafka sources' partitions, retrying while no broker answers
 * (the admin server answers 503 meanwhile, and a stop signal ends the
 * wait).  0; 1 when told to stop; -1 with err (an unknown topic, say). */
static int wait_for_kafka(daemon_state *d, char *err, size_t errlen) {
    struct event *tick = event_new(d->base, -1, 0, on_wait_tick, d);
    int rc = -1;
    for (;;) {
        resolve_ctx ctx = { d, 0 };
        char e[2048];
        if (plan_resolve_kafka(d->p, count_partitions, &ctx, e, sizeof e) == 0) { rc = 0; break; }
        if (ctx.why != KG_UNREACHABLE) { snprintf(err, errlen, "%s", e); break; }
        if (!d->waiting[0]) log_warn("waiting for Kafka: %s", e);
        snprintf(d->waiting, sizeof d->waiting, "waiting for Kafka: %s", e);
        struct timeval tv = { 0, 500 * 1000 };       /* serve the admin server and signals meanwhile */
        event_add(tick, &tv);
        event_base_dispatch(d->base);
        if (atomic_load(&d->sh.stopping)) { rc = 1; break; }
    }
    if (rc == 0 && d->waiting[0]) log_info("Kafka answered: starting");
    d->waiting[0] = 0;
    event_free(tick);
    return rc;
}

/* Attaches every Kafka source task to its partition. */
static int attach_partitions(daemon_state *d, char *err, size_t errlen) {
    for (int i = 0; i < d->ntasks; i++) {
        task *t = d->tasks[i];
        if (t->source < 0) continue;
        const source_info *si = &d->p->sources[t->source];
        if (si->kind != SRC_KAFKA) continue;
        const node *nd = &d->p->nodes[si->node - 1];
        const opt *mb = opt_find(&nd->opts, "max_bytes");
        int64_t max_bytes = 1 << 20;
        if (mb && mb->type == OPT_NUMBER) max_bytes = (int64_t)mb->n;
        else if (mb && mb->type == OPT_STRING && config_parse_size(mb->s, &max_bytes) < 0) {
            snprintf(err, errlen, "source '%s' (%s): max_bytes: expected a size like \"1MB\", got \"%s\"", si->name,
                     nd->where, mb->s);
            return -1;
        }
        t->kp = kgroup_add(d->group, si->name, si->topics[si->ktopic[t->index]], si->kpart[t->index], t->id,
                           si->start, max_bytes);
        if (!t->kp) { snprintf(err, errlen, "out of memory"); return -1; }
        if (si->bounded) kpart_set_bounded(t->kp);
    }
    return 0;
}

/* ---- where the last run stopped ------------------------------------------ */

/* state.dir/finished: the last run read all of its input, so this run is a
 * new job over it: its keyed state and positions are dropped.  (A run that
 * was stopped leaves positions.json instead, and the next one continues.) */

/* Drops keyed state and file positions: the next run starts afresh. */
static void drop_state(daemon_state *d) {
    char sub[PATH_MAX];
    snprintf(sub, sizeof sub, "%s/db", d->cfg->state_dir);
    files_rm_tree(sub);
    snprintf(sub, sizeof sub, "%s/positions.json", d->cfg->state_dir);
    unlink(sub);
    ckpt_forget_all(d->cfg->state_dir);
}

/* A new job (nothing to continue: no positions, no checkpoint, no
 * savepoint) replaces its file sinks' output: the part files an earlier job
 * left in their folders go, under either guarantee, before a task opens
 * one.  (A run that continues a stopped one keeps and adds to them.) */
static void clear_file_sinks(daemon_state *d) {
    for (int i = 0; i < d->p->nnodes; i++) {
        const node *nd = &d->p->nodes[i];
        const char *file = nd->kind == NODE_SINK ? node_opt(nd, "file") : NULL;
        if (!file) continue;
        char dir[PATH_MAX], path[PATH_MAX + 256];
        if (file[0] != '/') snprintf(dir, sizeof dir, "%s/%s", d->p->dir, file);
        else snprintf(dir, sizeof dir, "%s", file);
        DIR *dh = opendir(dir);
        if (!dh) continue;
        int n = 0;
        struct dirent *e;
        while ((e = readdir(dh))) {
            if (strncmp(e->d_name, "part-", 5) != 0 && strncmp(e->d_name, ".part-", 6) != 0) continue;
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            if (unlink(path) == 0) n++;
        }
        closedir(dh);
        if (n > 0) log_info("sink '%s': a new job: the %d part file%s of the last one in %s went", nd->name, n,
                            n == 1 ? "" : "s", dir);
    }
}

static void forget_finished_run(daemon_state *d) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/finished", d->cfg->state_dir);
    if (access(path, F_OK) != 0) return;
    log_info("the last run read all of its input: this one starts afresh (keyed state and positions in %s dropped)",
             d->cfg->state_dir);
    drop_state(d);
    unlink(path);
}

/* state.dir/running: written at the start, removed at a clean end.  Found
 * at the next start, it says the last run crashed (or failed): its keyed
 * state may hold records past the positions that run would have saved.  A
 * pipeline that reads only files starts over from empty state (its files
 * from their start); one that reads Kafka keeps its state and reads again
 * from the committed offsets, so records since the last commit count again
 * (crash consistency comes with checkpoints). */
static void check_unclean_stop(daemon_state *d) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/running", d->cfg->state_dir);
    if (access(path, F_OK) != 0 || !plan_has_keyed_state(d->p)) return;
    if (plan_has_kafka_sources(d->p)) {
        log_warn("the last run did not stop cleanly (%s): keyed state is kept, and the records read again from the "
                 "committed offsets are applied to it again", path);
        return;
    }
    log_warn("the last run did not stop cleanly (%s): its keyed state may already count input it had not saved "
             "its place in, so this run starts afresh from the start of its files", path);
    drop_state(d);
}


/* At a clean end: state.dir/finished when every file source read all of
 * its input, else state.dir/positions.json with where each one stopped. */
static void save_positions(daemon_state *d) {
    int files = 0, all_ended = 1;
    json_t *a = json_array();
    for (int i = 0; i < d->ntasks; i++) {
        task *t = d->tasks[i];
        if (t->source < 0 || !t->src) continue;
        const source_info *si = &d->p->sources[t->source];
        if (si->kind != SRC_FILE) { all_ended = 0; continue; }
        files++;
        if (!t->input_ended) all_ended = 0;
        json_array_append_new(a, json_pack("{s:s, s:s, s:I, s:I, s:I, s:I}", "source", si->name,
            "file", si->files[t->index], "offset", (json_int_t)source_position(t->src),
            "line", (json_int_t)source_line(t->src), "watermark", (json_int_t)t->wm_at_end, "max_ts", (json_int_t)t->io.maxts));
    }
    for (int i = 0; i < d->ntasks; i++) if (d->tasks[i]->kp) all_ended = 0;   /* Kafka never ends */
    char path[PATH_MAX];
    if (files > 0 && all_ended) {
        snprintf(path, sizeof path, "%s/finished", d->cfg->state_dir);
        if (files_write_durably(path, "the last run read all of its input\n") < 0) log_warn("cannot write %s", path);
        snprintf(path, sizeof path, "%s/positions.json", d->cfg->state_dir);
        unlink(path);
    } else if (files > 0 && d->cfg->guarantee == GUARANTEE_EXACTLY_ONCE) {
        log_info("stopped: the next run continues from checkpoint %lld", (long long)ckpt_last(d->ckpt));
    } else if (files > 0) {
        json_t *j = json_pack("{s:o}", "sources", a);
        a = NULL;
        char *text = json_dumps(j, JSON_INDENT(2));
        snprintf(path, sizeof path, "%s/positions.json", d->cfg->state_dir);
        if (!text || files_write_durably(path, text) < 0) log_error("cannot write %s: the next run reads its files again", path);
        else log_info("stopped: the next run continues where this one stopped (%s)", path);
        free(text);
        json_decref(j);
    }
    json_decref(a);
}

/* Seeks each file source to where the last (stopped) run left it. */
static void load_positions(daemon_state *d) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/positions.json", d->cfg->state_dir);
    if (access(path, F_OK) != 0) return;
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    json_t *a = json_object_get(j, "sources");
    if (!json_is_array(a)) { log_warn("%s: %s: the files are read from their start", path, j ? "no sources" : je.text); }
    size_t i;
    json_t *e;
    json_array_foreach(a, i, e) {
        const char *src = json_string_value(json_object_get(e, "source"));
        const char *file = json_string_value(json_object_get(e, "file"));
        for (int k = 0; src && file && k < d->ntasks; k++) {
            task *t = d->tasks[k];
            if (t->source < 0 || !t->src) continue;
            const source_info *si = &d->p->sources[t->source];
            if (si->kind != SRC_FILE || strcmp(si->name, src) != 0 || strcmp(si->files[t->index], file) != 0) continue;
            int64_t off = json_integer_value(json_object_get(e, "offset"));
            int64_t line = json_integer_value(json_object_get(e, "line"));
            char err[512];
            if (source_seek(t->src, off, line, err, sizeof err) < 0) {
                log_warn("source '%s' %s: %s", src, file, err);
                continue;
            }
            t->io.wm = json_integer_value(json_object_get(e, "watermark"));
            t->io.maxts = json_integer_value(json_object_get(e, "max_ts"));
            t->position = off;
            log_info("source '%s' %s continues at byte %lld (line %lld)", src, file, (long long)off, (long long)line);
        }
    }
    json_decref(j);        /* kept until the next clean end: a crash from here reads from these positions again */
}

/* The admin HTTP server, when the config has one.  0, or -1 with err. */
static int start_admin(daemon_state *d, char *err, size_t errlen) {
    if (!d->cfg->admin_enabled) return 0;
    admin_handlers h = { .ud = d, .health = h_health, .status = h_status, .metrics = h_metrics,
                         .reload = h_reload, .savepoint = h_savepoint, .get_prefixed = h_prefixed,
                         .token = d->cfg->admin_token, .hosts = d->cfg->admin_hosts };
    char addr_file[PATH_MAX];
    snprintf(addr_file, sizeof addr_file, "%s/admin.addr", d->cfg->state_dir);
    d->adm = admin_create(d->base, d->cfg->admin_listen, addr_file, &h, err, errlen);
    return d->adm ? 0 : -1;
}

/* ---- building ---------------------------------------------------------- */

static int build_tasks(daemon_state *d, char *err, size_t errlen) {
    const plan *p = d->p;
    d->tasks = calloc(p->ntasks, sizeof *d->tasks);
    int *first = calloc(p->nstages, sizeof *first);       /* first task id of each stage */
    int rc = -1;
    if (!d->tasks || !first) { snprintf(err, errlen, "out of memory"); goto err; }
    for (int s = 0; s < p->nstages; s++) {
        first[s] = d->ntasks;
        for (int i = 0; i < p->stages[s].ntasks; i++) {
            task *t = task_create(&d->sh, &p->stages[s], i, d->ntasks, err, errlen);
            if (!t) goto err;
            d->tasks[d->ntasks++] = t;
            if (p->stages[s].source >= 0 && p->sources[p->stages[s].source].bootstrap &&
                task_bootstrap_add(&d->sh, t) < 0) {
                snprintf(err, errlen, "out of memory");
                goto err;
            }
        }
    }
    /* channels: every task of a stage holding a key_by into stage D, to every task of D */
    for (int u = 0; u < p->nstages; u++) {
        for (int ds = 0; ds < p->nstages; ds++) {
            int feeds = 0;
            for (int k = 0; k < p->stages[u].nnodes; k++) {
                const node *nd = &p->nodes[p->stages[u].nodes[k] - 1];
                if (nd->kind == NODE_KEY_BY && nd->stage_out == ds) feeds = 1;
            }
            if (!feeds) continue;
            int nt = p->stages[ds].ntasks;
            for (int ui = 0; ui < p->stages[u].ntasks; ui++) {
                task *up = d->tasks[first[u] + ui];
                channel **targets = calloc(nt, sizeof *targets);
                if (!targets) { snprintf(err, errlen, "out of memory"); goto err; }
                for (int di = 0; di < nt; di++) {
                    task *down = d->tasks[first[ds] + di];
                    channel *c = channel_create((int)d->cfg->channel_capacity, up, down);
                    channel **cs = realloc(d->chans, sizeof *cs * (d->nchans + 1));
                    if (!c || !cs) { channel_destroy(c); free(targets); snprintf(err, errlen, "out of memory"); goto err; }
                    d->chans = cs;
                    d->chans[d->nchans++] = c;
                    targets[di] = c;
                    if (task_add_input(down, c) < 0) { free(targets); snprintf(err, errlen, "out of memory"); goto err; }
                }
                if (task_add_output(up, ds, targets, nt) < 0) { snprintf(err, errlen, "out of memory"); goto err; }
            }
        }
    }
    for (int i = 0; i < d->ntasks; i++) {
        char terr[2048];
        if (task_start(d->tasks[i], terr, sizeof terr) < 0) {
            snprintf(err, errlen, "task %s: %s", d->tasks[i]->name, terr);
            goto err;
        }
    }
    rc = 0;
err:
    free(first);
    return rc;
}

static void daemon_free(daemon_state *d) {
    if (d->adm) admin_destroy(d->adm);
    reload_watch_destroy(d->watch);
    for (int i = 0; i < 3; i++) if (d->sig_ev[i]) event_free(d->sig_ev[i]);
    if (d->done_ev) event_free(d->done_ev);
    if (d->wd_ev) event_free(d->wd_ev);
    if (d->poll_ev) event_free(d->poll_ev);
    if (d->ckpt_ev) event_free(d->ckpt_ev);
    if (d->ckpt_poll_ev) event_free(d->ckpt_poll_ev);
    ckpt_destroy(d->ckpt);
    sched_destroy(d->s);
    for (int i = 0; i < d->ntasks; i++) task_destroy(d->tasks[i]);
    free(d->sh.boot);
    acks_destroy(d->sh.acks);
    state_close(d->sh.state);                      /* after the tasks: their transactions are gone */
    kgroup_destroy(d->group);                      /* its partitions' tasks are gone */
    free(d->tasks);
    for (int c = 0; c < d->nchans; c++) channel_destroy(d->chans[c]);
    free(d->chans);
    kafka_destroy(d->sh.kafka);                    /* after the tasks: their sinks borrow its producers */
    if (d->base) event_base_free(d->base);
    if (d->sh.dead_letter) fclose(d->sh.dead_letter);
    pthread_mutex_destroy(&d->sh.dead_letter_mu);
    pthread_mutex_destroy(&d->sh.stdout_mu);
    poison_free(d->sh.poison);
    for (int i = 0; i < d->nplans; i++) plan_destroy(d->plans[i]);
    free(d->plans);
    if (!d->nplans) plan_destroy(d->p);
    config_destroy(d->cfg);
}

/* exactly_once with Kafka sinks: a checkpoint newer than the newest
 * committed one may have had its Kafka transaction committed just before a
 * crash (the commit point), with its manifest not yet marked.  The
 * transaction carried the checkpoint's id as an offset (kafka_txn_marker):
 * when the broker has it, that checkpoint is committed and this run starts
 * there.  1, or 0 when eddy cannot start (message printed). */
static int confirm_kafka_commit(daemon_state *d, int64_t *restore) {
    int64_t pending = ckpt_newest_prepared(d->cfg->state_dir);
    if (pending <= *restore) return 1;
    char err[1024];
    int64_t marked = 0;
    if (kafka_txn_marker(d->sh.kafka, &marked, err, sizeof err) < 0) {
        fprintf(stderr, "eddy: checkpoint %lld was prepared when the last run stopped, and whether its Kafka "
                "transaction committed cannot be told now: %s\n", (long long)pending, err);
        return 0;
    }
    if (marked == pending) {
        log_info("checkpoint %lld: its Kafka transaction committed before the last run stopped; so is the checkpoint",
                 (long long)pending);
        if (ckpt_mark_committed(d->cfg->state_dir, pending) < 0) {
            fprintf(stderr, "eddy: cannot mark checkpoint %lld committed in %s/checkpoints\n", (long long)pending,
                    d->cfg->state_dir);
            return 0;
        }
        *restore = pending;
    } else {
        char from[64] = "afresh";
        if (*restore > 0) snprintf(from, sizeof from, "from checkpoint %lld", (long long)*restore);
        log_info("checkpoint %lld was prepared, but the broker has no record that its Kafka transaction committed "
                 "(the last it has is %lld): starting %s", (long long)pending, (long long)marked, from);
    }
    return 1;
}

int daemon_run(const char *config_path, const run_opts *o) {
    daemon_state d;
    memset(&d, 0, sizeof d);
    pthread_mutex_init(&d.sh.dead_letter_mu, NULL);
    pthread_mutex_init(&d.sh.stdout_mu, NULL);
    char err[4096];
    int code = 2;
    d.started_ms = clock_mono_ms();
    if (looks_like_pipeline(config_path)) {
        fprintf(stderr, "eddy: %s is a pipeline script; eddy run takes a config file that names it "
                "(return { pipeline = \"%s\" }); eddy check takes either\n", config_path, config_path);
        goto out;
    }
    d.cfg = config_load(config_path, err, sizeof err);
    if (!d.cfg) { fprintf(stderr, "eddy: %s\n", err); goto out; }
    log_setup(d.cfg->log_level, d.cfg->log_format == LOGFMT_JSON);
    d.p = plan_create(d.cfg, daemon_lua_dir(), err, sizeof err);
    if (!d.p) { fprintf(stderr, "eddy: %s\n", err); goto out; }
    int exactly_once = d.cfg->guarantee == GUARANTEE_EXACTLY_ONCE;
    if (files_mkdirs(d.cfg->state_dir) < 0) {
        fprintf(stderr, "eddy: state.dir: cannot create %s: %s\n", d.cfg->state_dir, strerror(errno));
        goto out;
    }
    if (files_lock_dir(d.cfg->state_dir, err, sizeof err) < 0) {
        fprintf(stderr, "eddy: %s\n", err);
        code = 1;
        goto out;
    }
    if (d.cfg->on_error == ON_ERROR_DEAD_LETTER && !d.cfg->dead_letter_kafka) {
        char dlw[PATH_MAX];
        snprintf(dlw, sizeof dlw, "%s", d.cfg->dead_letter_file);
        if (files_mkdirs(dirname(dlw)) < 0 || !(d.sh.dead_letter = fopen(d.cfg->dead_letter_file, "a"))) {
            fprintf(stderr, "eddy: dead_letter.file: cannot open %s: %s\n", d.cfg->dead_letter_file, strerror(errno));
            goto out;
        }
    }
    forget_finished_run(&d);
    /* a savepoint starts a new job: the state dir's own state goes */
    if (o->from_savepoint) {
        const char *uids[256];
        int nuids = 0;
        for (int i = 0; i < d.p->nnodes && nuids < 256; i++)
            if (node_has_state(&d.p->nodes[i])) uids[nuids++] = d.p->nodes[i].uid;
        if (ckpt_check_savepoint(o->from_savepoint, uids, nuids, d.cfg->max_parallelism, o->allow_non_restored, err,
                                 sizeof err) < 0) {
            fprintf(stderr, "eddy: %s\n", err);
            goto out;
        }
        drop_state(&d);
        if (ckpt_restore_savepoint_db(d.cfg->state_dir, o->from_savepoint, err, sizeof err) < 0) {
            fprintf(stderr, "eddy: --from-savepoint: %s\n", err);
            code = 1;
            goto out;
        }
    }
    int kafka_sinks = 0, kafka_sources = plan_has_kafka_sources(d.p);
    for (int i = 0; i < d.p->nnodes; i++)
        if (d.p->nodes[i].kind == NODE_SINK && node_opt(&d.p->nodes[i], "kafka")) kafka_sinks++;
    int kafka_dlq = d.cfg->dead_letter_kafka != NULL;
    if (kafka_sinks || kafka_sources || kafka_dlq || d.cfg->kafka_embedded || d.cfg->kafka.n > 0) {
        if ((kafka_sinks || kafka_sources || kafka_dlq) && !d.cfg->kafka_embedded &&
            !opt_find(&d.cfg->kafka, "bootstrap.servers")) {
            fprintf(stderr, "eddy: kafka: the pipeline %s Kafka: set kafka[\"bootstrap.servers\"] or "
                    "kafka.embedded in the config\n", kafka_sources ? "reads from" : kafka_sinks ? "writes to"
                    : "sends dead letters to (dead_letter.kafka)");
            goto out;
        }
        d.sh.kafka = kafka_create(d.cfg, err, sizeof err);
        if (!d.sh.kafka) { fprintf(stderr, "eddy: %s\n", err); goto out; }
        /* exactly_once: where each transaction's checkpoint id goes, chosen
         * from the plan once, for the commits and for recovery alike */
        for (int i = 0; i < d.p->nnodes; i++)
            if (d.p->nodes[i].kind == NODE_SINK && node_opt(&d.p->nodes[i], "kafka")) {
                kafka_txn_set_topic(d.sh.kafka, node_opt(&d.p->nodes[i], "kafka"));
                break;
            }
    }
    /* exactly_once: the newest committed checkpoint is where this run starts */
    if (exactly_once && !o->from_savepoint && ckpt_check_manifests(d.cfg->state_dir, err, sizeof err) < 0) {
        fprintf(stderr, "eddy: %s\n", err);
        code = 1;
        goto out;
    }
    int64_t restore = exactly_once && !o->from_savepoint ? ckpt_newest_committed(d.cfg->state_dir) : 0;
    if (exactly_once && !o->from_savepoint && kafka_sinks && !confirm_kafka_commit(&d, &restore)) goto out;
    {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/positions.json", d.cfg->state_dir);
        d.sh.continuing = o->from_savepoint != NULL || access(path, F_OK) == 0;
    }
    if (exactly_once ? restore == 0 && !o->from_savepoint : !d.sh.continuing) clear_file_sinks(&d);
    if (o->from_savepoint) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/running", d.cfg->state_dir);
        unlink(path);
    } else if (exactly_once && restore == 0) {
        /* nothing in the state store is committed before the first checkpoint */
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/running", d.cfg->state_dir);
        if (access(path, F_OK) == 0) {
            log_warn("the last run did not stop cleanly and committed no checkpoint: this run starts afresh");
            drop_state(&d);
        }
    } else if (restore > 0) {
        if (ckpt_restore_db(d.cfg->state_dir, restore, err, sizeof err) < 0) { fprintf(stderr, "eddy: %s\n", err); code = 1; goto out; }
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/positions.json", d.cfg->state_dir);
        unlink(path);                            /* the checkpoint has the positions */
    } else {
        check_unclean_stop(&d);
    }
    if (plan_has_keyed_state(d.p)) {
        char dbdir[PATH_MAX];
        snprintf(dbdir, sizeof dbdir, "%s/db", d.cfg->state_dir);
        d.sh.state = state_open(dbdir, d.cfg->state_cache, &d.cfg->state_rocksdb, err, sizeof err);
        if (!d.sh.state) {
            fprintf(stderr, "eddy: %s\n", err);
            code = strncmp(err, "state.rocksdb.", 14) == 0 ? 2 : 1;     /* a bad option is the config's fault */
            goto out;
        }
    }
    char running[PATH_MAX];
    snprintf(running, sizeof running, "%s/running", d.cfg->state_dir);
    if (d.sh.state && files_write_durably(running, "a run is in progress (removed at a clean end)\n") < 0)
        log_warn("cannot write %s", running);
    snprintf(d.poison_path, sizeof d.poison_path, "%s/poison.json", d.cfg->state_dir);
    poison_load(&d);
    crash_install(d.poison_path);
    d.sh.cfg = d.cfg;
    d.sh.p = d.p;
    d.sh.lua_dir = daemon_lua_dir();
    d.sh.version = 1;
    d.version = 1;
    d.loaded_at_ms = clock_wall_ms();
    d.plans = malloc(sizeof *d.plans);
    if (!d.plans) goto out;
    d.plans[d.nplans++] = d.p;
    vm_global_init();
    if (kafka_sources) {
        kgroup_hooks hooks = { .ud = &d, .wake = on_group_wake, .serve = on_group_serve,
                               .checkpoint = exactly_once ? on_group_checkpoint : NULL };
        d.group = kgroup_create(d.sh.kafka, d.cfg, hooks, err, sizeof err);
        if (!d.group) { fprintf(stderr, "eddy: %s\n", err); goto out; }
    }

    code = 1;
    evthread_use_pthreads();
    d.base = event_base_new();
    if (!d.base) { log_error("cannot create the event loop"); goto out; }
    d.done_ev = event_new(d.base, -1, 0, on_done_check, &d);
    struct timeval wd = { 0, WATCHDOG_TICK_MS * 1000 }, pt = { 0, POLL_TICK_MS * 1000 };
    d.wd_ev = event_new(d.base, -1, EV_PERSIST, on_watchdog, &d);
    d.poll_ev = event_new(d.base, -1, EV_PERSIST, on_poll, &d);
    event_add(d.wd_ev, &wd);
    event_add(d.poll_ev, &pt);
    int sigs[3] = { SIGTERM, SIGINT, SIGHUP };
    for (int i = 0; i < 3; i++) {
        d.sig_ev[i] = evsignal_new(d.base, sigs[i], on_signal, &d);
        event_add(d.sig_ev[i], NULL);
    }
    signal(SIGPIPE, SIG_IGN);
    /* the admin server listens (and writes admin.addr) once it can answer:
     * before waiting for Kafka (503 meanwhile), else once the tasks are built */
    if (kafka_sources && start_admin(&d, err, sizeof err) < 0) { fprintf(stderr, "eddy: %s\n", err); code = 2; goto out; }
    if (kafka_sources) {
        int w = wait_for_kafka(&d, err, sizeof err);
        if (w < 0) { fprintf(stderr, "eddy: %s\n", err); code = 2; goto out; }
        if (w > 0) { log_info("stopped before Kafka answered"); code = 0; goto out; }
    }
    if (build_tasks(&d, err, sizeof err) < 0) { fprintf(stderr, "eddy: %s\n", err); code = 2; goto out; }
    if (!kafka_sources && start_admin(&d, err, sizeof err) < 0) { fprintf(stderr, "eddy: %s\n", err); code = 2; goto out; }
    if (!exactly_once && !o->from_savepoint) load_positions(&d);   /* (d.sh.continuing said so to the sinks) */
    if (d.group) {
        if (attach_partitions(&d, err, sizeof err) < 0) { fprintf(stderr, "eddy: %s\n", err); code = 2; goto out; }
        if (!exactly_once) {        /* exactly_once: checkpoints commit the offsets */
            d.sh.acks = acks_create(d.p, on_acked, &d);
            if (!d.sh.acks) { log_error("out of memory"); goto out; }
            int64_t every = kgroup_commit_interval(d.group) / 2;
            d.sh.mark_interval_ms = every < 100 ? 100 : every;
        }
    }
    /* checkpoints: every interval under exactly_once; savepoints always */
    d.ckpt = ckpt_create(&d.sh, d.tasks, d.ntasks, d.cfg->state_dir, d.cfg->checkpoint_retain);
    if (!d.ckpt) { fprintf(stderr, "eddy: cannot create %s/checkpoints\n", d.cfg->state_dir); goto out; }
    d.ckpt_poll_ev = event_new(d.base, -1, EV_PERSIST, on_checkpoint_poll, &d);
    if (o->from_savepoint && ckpt_recover_savepoint(d.ckpt, o->from_savepoint, err, sizeof err) < 0) {
        fprintf(stderr, "eddy: %s\n", err);
        code = 2;
        goto out;
    }
    if (exactly_once) {
        if (ckpt_recover(d.ckpt, restore, err, sizeof err) < 0) { fprintf(stderr, "eddy: %s\n", err); code = 2; goto out; }
        /* the first transaction: fences an older producer with this id */
        if (kafka_txn_active(d.sh.kafka) && kafka_txn_begin(d.sh.kafka, 1, err, sizeof err) < 0) {
            fprintf(stderr, "eddy: %s\n", err);
            goto out;
        }
        struct timeval iv = { d.cfg->checkpoint_interval_ms / 1000, (d.cfg->checkpoint_interval_ms % 1000) * 1000 };
        d.ckpt_ev = event_new(d.base, -1, EV_PERSIST, on_checkpoint, &d);
        event_add(d.ckpt_ev, &iv);
    }
    if (d.cfg->reload_watch) {
        d.watch = reload_watch_create(d.base, d.p->dir, 200, on_file_changed, &d, err, sizeof err);
        if (!d.watch) log_warn("%s: the pipeline will not reload on file changes", err);
    }
    d.s = sched_create(d.cfg->threads, on_task_done, &d);
    for (int i = 0; i < d.ntasks; i++) d.tasks[i]->se.s = d.s;
    if (!d.s || sched_start(d.s, err, sizeof err) < 0) { log_error("%s", err); goto out; }
    d.workers_running = 1;
    d.workers_ran = 1;
    if (d.group && kgroup_subscribe(d.group, err, sizeof err) < 0) {
        log_error("%s", err);
        atomic_store(&d.sh.aborting, 1);
        for (int i = 0; i < d.ntasks; i++) sched_wake(d.tasks[i]);
        sched_stop(d.s);
        d.workers_running = 0;
        goto out;
    }
    log_info("running %s: %d tasks on %d threads (pipeline %s, sha256 %.12s)", d.cfg->name, d.ntasks,
             d.cfg->threads, d.p->script, d.p->hash);
    for (int i = 0; i < d.ntasks; i++) sched_wake(d.tasks[i]);
    event_base_dispatch(d.base);

    atomic_store(&d.sh.aborting, atomic_load(&d.failed) ? 1 : atomic_load(&d.sh.aborting));
    if (atomic_load(&d.sh.aborting)) for (int i = 0; i < d.ntasks; i++) sched_wake(d.tasks[i]);
    sched_stop(d.s);
    d.workers_running = 0;
    int sink_failed = 0;
    for (int i = 0; i < d.ntasks; i++)
        if (task_close_sinks(d.tasks[i]) < 0) sink_failed = 1;
    /* exactly_once: a clean end commits what is left as a last checkpoint */
    if (d.ckpt && exactly_once && !sink_failed && !atomic_load(&d.failed) && !atomic_load(&d.sh.aborting) && ckpt_final(d.ckpt) < 0)
        sink_failed = 1;
    if (d.sh.kafka) {
        if (kafka_flush(d.sh.kafka, 30000) < 0) sink_failed = 1;
        if (kafka_failed(d.sh.kafka)) {
            fprintf(stderr, "eddy: %s\n", kafka_failed(d.sh.kafka));
            sink_failed = 1;
        }
    }
    if (d.group) {
        /* a clean stop drained everything read: commit it; otherwise the next
         * owner reads again from the last acknowledged positions */
        int clean = !atomic_load(&d.failed) && !sink_failed && !atomic_load(&d.sh.aborting);
        kgroup_close(d.group, clean);
    }
    if (atomic_load(&d.failed)) {
        for (int i = 0; i < d.ntasks; i++)
            if (atomic_load(&d.tasks[i]->status) == TASK_FAILED) {
                fprintf(stderr, "eddy: task %s failed: %s\n", d.tasks[i]->name, d.tasks[i]->error);
                break;
            }
        code = 1;
    } else if (sink_failed || (atomic_load(&d.sh.aborting) && !atomic_load(&d.sh.stopping))) {
        code = 1;
    } else {
        code = atomic_load(&d.sh.aborting) ? 1 : 0;
        if (!code) {
            save_positions(&d);
            unlink(running);
        }
        if (d.sh.poison && atomic_load(&d.sh.poison->hit)) unlink(d.poison_path);
        long in = 0;
        for (int i = 0; i < d.ntasks; i++) if (d.tasks[i]->source >= 0) in += d.tasks[i]->records_in;
        log_info("%s: %ld records read in %.3f s", atomic_load(&d.sh.stopping) ? "stopped" : "finished", in,
                 (clock_mono_ms() - d.started_ms) / 1000.0);
    }
out:
    {
        /* exactly_once: a failed task restarts eddy, which recovers from the
         * last committed checkpoint (restart.*) */
        int restartable = code == 1 && d.ckpt && d.cfg && d.cfg->guarantee == GUARANTEE_EXACTLY_ONCE &&
                          d.workers_ran && !atomic_load(&d.sh.stopping);
        const config *cfg = d.cfg;
        int attempt = getenv("EDDY_RESTART_ATTEMPT") ? atoi(getenv("EDDY_RESTART_ATTEMPT")) : 0;
        if (restartable && cfg->restart_strategy != RESTART_NONE && attempt < cfg->restart_attempts && o->argv) {
            int64_t delay = cfg->restart_delay_ms;
            for (int i = 0; cfg->restart_strategy == RESTART_EXPONENTIAL && i < attempt && delay < cfg->restart_max_delay_ms; i++)
                delay *= 2;
            if (cfg->restart_strategy == RESTART_EXPONENTIAL && delay > cfg->restart_max_delay_ms) delay = cfg->restart_max_delay_ms;
            log_warn("restarting in %.1f s from the last committed checkpoint (restart %d of %d, restart.strategy = %s)",
                     delay / 1000.0, attempt + 1, cfg->restart_attempts,
                     cfg->restart_strategy == RESTART_FIXED ? "fixed" : "exponential");
            char n[16];
            snprintf(n, sizeof n, "%d", attempt + 1);
            /* once this run committed a checkpoint, that is where the next
             * one starts: not the savepoint again */
            if (o->from_savepoint && ckpt_completed(d.ckpt) > 0) {
                int k = 0;
                for (int i = 0; o->argv[i]; i++) {
                    if (strcmp(o->argv[i], "--from-savepoint") == 0 && o->argv[i + 1]) { i++; continue; }
                    if (strncmp(o->argv[i], "--from-savepoint=", 17) == 0 ||
                        strcmp(o->argv[i], "--allow-non-restored-state") == 0)
                        continue;
                    o->argv[k++] = o->argv[i];
                }
                o->argv[k] = NULL;
            }
            daemon_free(&d);
            fflush(stderr);
            usleep((useconds_t)(delay * 1000));
            setenv("EDDY_RESTART_ATTEMPT", n, 1);
            execv("/proc/self/exe", o->argv);
            fprintf(stderr, "eddy: cannot restart: %s\n", strerror(errno));
            return 1;
        }
        if (restartable && cfg->restart_strategy != RESTART_NONE && cfg->restart_attempts > 0)
            fprintf(stderr, "eddy: gave up after %d restart%s (restart.attempts = %d): the task fails again from the "
                    "last committed checkpoint\n", attempt, attempt == 1 ? "" : "s", cfg->restart_attempts);
    }
    daemon_free(&d);
    return code;
}
