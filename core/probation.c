#include "probation.h"
#include "clock.h"
#include "daemon_state.h"
#include "files.h"
#include "log.h"
#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TICK_MS 100

typedef struct probation probation;
struct probation {
    struct event *tick;
    int active;                 /* a version is on probation */
    int version, prev;          /* the version on probation; the one a rollback returns to */
    int64_t started_ms;         /* wall clock */
    int64_t deadline_us;        /* monotonic */
    int pending;                /* a live rollback waits for the reload machinery (busy) */
    int restart;                /* the run ends and restarts on prev (rollback.json written) */
    int rolling_back;           /* reload_request_to is offering the rollback */
    char reason[1024];
    /* the last rollback, for /status */
    int have_last, last_from, last_to, last_version;
    int64_t last_at;
    char last_reason[1024];
    long rollbacks;
};

/* ---- files: state.dir/probation/{prev/, probation.json, rollback.json} ---- */

static void path_of(const daemon_state *d, const char *name, char *out, size_t n) {
    snprintf(out, n, "%s/probation%s%s", d->cfg->state_dir, name ? "/" : "", name ? name : "");
}

/* Copies the regular files of folder `from` into the fresh folder `to`.  0 or -1. */
static int copy_folder(const char *from, const char *to, char *err, size_t errlen) {
    files_rm_tree(to);
    if (files_mkdirs(to) < 0) { snprintf(err, errlen, "cannot create %.400s: %s", to, strerror(errno)); return -1; }
    DIR *dh = opendir(from);
    if (!dh) { snprintf(err, errlen, "cannot read %.400s: %s", from, strerror(errno)); return -1; }
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(dh))) {
        char src[PATH_MAX], dst[PATH_MAX], buf[65536];
        struct stat st;
        if (snprintf(src, sizeof src, "%s/%s", from, e->d_name) >= (int)sizeof src ||
            snprintf(dst, sizeof dst, "%s/%s", to, e->d_name) >= (int)sizeof dst) continue;
        if (stat(src, &st) < 0 || !S_ISREG(st.st_mode)) continue;
        FILE *in = fopen(src, "rb"), *out = in ? fopen(dst, "wb") : NULL;
        if (!in || !out) { snprintf(err, errlen, "cannot copy %.300s to %.300s: %s", src, to, strerror(errno)); rc = -1; }
        if (out) fchmod(fileno(out), st.st_mode & 0777);
        size_t k;
        while (rc == 0 && (k = fread(buf, 1, sizeof buf, in)) > 0)
            if (fwrite(buf, 1, k, out) != k) { snprintf(err, errlen, "cannot write %.400s", dst); rc = -1; }
        if (in) fclose(in);
        if (out && fclose(out) != 0 && rc == 0) { snprintf(err, errlen, "cannot write %.400s", dst); rc = -1; }
    }
    closedir(dh);
    return rc;
}

static int write_json(const char *path, json_t *j) {
    char *text = j ? json_dumps(j, JSON_INDENT(2)) : NULL;
    json_decref(j);
    int rc = text ? files_write_durably(path, text) : -1;
    free(text);
    if (rc < 0) log_warn("cannot write %s: %s", path, strerror(errno));
    return rc;
}

static void set_last(probation *pr, int from, int to, int version, const char *reason, int64_t at) {
    pr->have_last = 1;
    pr->last_from = from;
    pr->last_to = to;
    pr->last_version = version;
    pr->last_at = at;
    snprintf(pr->last_reason, sizeof pr->last_reason, "%s", reason);
}

/* ---- at start -------------------------------------------------------------- */

/* hold_commits with Kafka sinks (or repartition topics): one transaction
 * stays open from the checkpoint at the reload's barrier to the first one
 * after the probation. */
static int check_transaction_timeout(const daemon_state *d, const plan *p, char *err, size_t errlen) {
    const config *cfg = d->cfg;
    if (!cfg->reload_hold_commits) return 0;
    int kafka_out = cfg->shuffle == SHUFFLE_KAFKA;
    for (int i = 0; i < p->nnodes && !kafka_out; i++)
        kafka_out = p->nodes[i].kind == NODE_SINK && node_opt(&p->nodes[i], "kafka") != NULL;
    if (!kafka_out) return 0;
    const opt *o = opt_find(&cfg->kafka, "transaction.timeout.ms");
    double timeout = o ? atof(o->s ? o->s : "0") : 60000;
    if (o && o->type == OPT_NUMBER) timeout = o->n;
    int64_t held = cfg->reload_probation_ms + cfg->checkpoint_interval_ms;
    if ((double)held < timeout) return 0;
    snprintf(err, errlen, "reload.hold_commits: the pipeline writes to Kafka, whose transaction stays open through "
             "reload.probation (%.1f s) after the checkpoint at the reload's barrier, and the next checkpoint comes "
             "up to checkpoint.interval (%.1f s) later: together they must be shorter than kafka[\"transaction."
             "timeout.ms\"] (%.0f ms%s), or the broker aborts the held transaction; shorten reload.probation or "
             "raise kafka[\"transaction.timeout.ms\"] (the broker caps it at its transaction.max.timeout.ms, 15 "
             "min by default)", cfg->reload_probation_ms / 1000.0, cfg->checkpoint_interval_ms / 1000.0, timeout,
             o ? "" : ", the default");
    return -1;
}

plan *probation_plan_at_start(daemon_state *d, char *err, size_t errlen) {
    probation *pr = calloc(1, sizeof *pr);
    if (!pr) { snprintf(err, errlen, "out of memory"); return NULL; }
    d->prob = pr;
    char rb[PATH_MAX], pj[PATH_MAX], prevdir[PATH_MAX];
    path_of(d, "rollback.json", rb, sizeof rb);
    path_of(d, "probation.json", pj, sizeof pj);
    path_of(d, "prev", prevdir, sizeof prevdir);
    int killed = access(rb, F_OK) != 0 && access(pj, F_OK) == 0;
    json_t *j = json_load_file(killed ? pj : rb, 0, NULL);
    const char *script = json_string_value(json_object_get(j, "script"));
    plan *p = NULL;
    if (j && script) {
        int from = (int)json_integer_value(json_object_get(j, killed ? "version" : "from"));
        int to = (int)json_integer_value(json_object_get(j, killed ? "prev" : "to"));
        char reason[1024], text[PATH_MAX + 256];
        if (killed) {
            snprintf(reason, sizeof reason, "eddy stopped during version %d's probation without a clean stop (a "
                     "crash or a kill): it was not proven, so the run goes on with version %d", from, to);
            /* (nothing is written here: state.dir is not locked yet, and
             * probation.json says the same to every start until a reload or
             * a clean stop removes it) */
            json_object_set_new(j, "at", json_integer(clock_wall_ms()));
            json_object_set_new(j, "rollbacks", json_integer(json_integer_value(json_object_get(j, "rollbacks")) + 1));
        } else {
            snprintf(reason, sizeof reason, "%s", json_string_value(json_object_get(j, "reason")) ?
                     json_string_value(json_object_get(j, "reason")) : "?");
        }
        snprintf(text, sizeof text, "%s/%s", prevdir, script);
        char perr[2048];
        p = plan_create_text(d->cfg, daemon_lua_dir(), text, perr, sizeof perr);
        if (!p) {
            snprintf(err, errlen, "version %d was rolled back (%s), and the version it went back to (%d, kept in "
                     "%s) cannot be planned now: %s (remove %s/probation to run the pipeline's files)", from,
                     reason, to, prevdir, perr, d->cfg->state_dir);
            json_decref(j);
            return NULL;
        }
        set_last(pr, from, to, 1, reason, json_integer_value(json_object_get(j, "at")));
        pr->rollbacks = (long)json_integer_value(json_object_get(j, "rollbacks"));
        log_warn("version %d was rolled back to version %d (%s): this run runs version %d's kept copy (%s), not "
                 "the pipeline's files, until the next reload", from, to, reason, to, text);
    } else {
        p = plan_create(d->cfg, daemon_lua_dir(), err, errlen);
    }
    json_decref(j);
    if (p && check_transaction_timeout(d, p, err, errlen) < 0) { plan_destroy(p); return NULL; }
    return p;
}

/* ---- the probation ---------------------------------------------------------- */

int probation_rolling_back(const daemon_state *d) { return d->prob && d->prob->rolling_back; }

int probation_holds_checkpoints(const daemon_state *d) {
    return d->prob && d->cfg->reload_hold_commits && (d->prob->active || d->prob->restart);
}

int probation_barrier_checkpoint(daemon_state *d, char *msg, size_t len) {
    if (!d->cfg->reload_hold_commits || d->cfg->reload_probation_ms == 0 || !d->ckpt || probation_rolling_back(d))
        return 0;
    if (d->prob && d->prob->active) return 0;   /* a reload during a probation: the barrier's checkpoint was taken */
    char err[1024];
    int64_t id = ckpt_now(d->ckpt, 60000, "reload barrier's", NULL, NULL, err, sizeof err);
    if (id < 0) {
        snprintf(msg, len, "reload.hold_commits: the checkpoint at the reload's barrier failed, so a rollback "
                 "could not go back to it; try again: %s", err);
        return 503;
    }
    log_info("reload: checkpoint %lld committed at the reload's barrier (reload.hold_commits: a rollback "
             "restores it)", (long long)id);
    return 0;
}

static void end_probation(daemon_state *d) {
    probation *pr = d->prob;
    pr->active = 0;
    pr->pending = 0;
    if (pr->tick) event_del(pr->tick);
    char dir[PATH_MAX];
    path_of(d, NULL, dir, sizeof dir);
    files_rm_tree(dir);
}

/* Sums the new version's counts over the tasks that run it. */
static void counts(daemon_state *d, int version, long *in, long *errors, int *tasks) {
    *in = *errors = 0;
    *tasks = 0;
    for (int i = 0; i < d->ntasks; i++) {
        task *t = d->tasks[i];
        if (task_version(t) != version) continue;
        long ti, te;
        task_version_counts(t, &ti, &te);
        if (task_source(t) >= 0) *in += ti;
        *errors += te;
        (*tasks)++;
    }
}

/* state.dir/probation/rollback.json: a start (a restart, or the next one
 * after a crash) plans the previous version's copy, not the folder's files,
 * which still hold the rejected version.  Replaces probation.json. */
static void write_rollback(daemon_state *d) {
    probation *pr = d->prob;
    char rb[PATH_MAX], pj[PATH_MAX];
    path_of(d, "rollback.json", rb, sizeof rb);
    path_of(d, "probation.json", pj, sizeof pj);
    json_t *j = json_load_file(pj, 0, NULL);
    if (!j) j = json_object();
    json_object_set_new(j, "from", json_integer(pr->version));
    json_object_set_new(j, "to", json_integer(pr->prev));
    json_object_set_new(j, "reason", json_string(pr->reason));
    json_object_set_new(j, "at", json_integer(clock_wall_ms()));
    json_object_set_new(j, "rollbacks", json_integer(pr->rollbacks));
    if (write_json(rb, j) == 0) unlink(pj);
}

/* Ends the run: it restarts on the previous version (restart.c asks
 * probation_wants_restart). */
static void restart_on_prev(daemon_state *d) {
    probation *pr = d->prob;
    write_rollback(d);
    pr->restart = 1;
    pr->active = 0;
    if (pr->tick) event_del(pr->tick);
}

/* Ends the running process's run now (as a failed task does): nothing since
 * the last committed checkpoint is committed. */
static void end_run(daemon_state *d) {
    atomic_store(&d->sh.aborting, 1);
    for (int i = 0; i < d->ntasks; i++) sched_wake(d->tasks[i]);
    event_base_loopbreak(d->base);
}

static void rollback(daemon_state *d, const char *why) {
    probation *pr = d->prob;
    if (!pr->pending) {
        snprintf(pr->reason, sizeof pr->reason, "%s", why);
        set_last(pr, pr->version, pr->prev, 0, why, clock_wall_ms());
    }
    char kept[PATH_MAX];
    snprintf(kept, sizeof kept, "%s/versions/%d", d->cfg->state_dir, pr->prev);
    if (d->cfg->reload_hold_commits || access(kept, F_OK) != 0) {
        pr->rollbacks++;
        log_error("rollback: version %d goes back to version %d: %s; %s", pr->version, pr->prev, why,
                  d->cfg->reload_hold_commits ? "eddy restarts from the checkpoint committed at the reload's "
                  "barrier (reload.hold_commits), so nothing the rejected version wrote is committed" :
                  "its kept copy is gone from state.dir/versions, so eddy restarts on the copy in state.dir/probation");
        restart_on_prev(d);
        end_run(d);
        return;
    }
    char to[16], msg[2048], trigger[1200];
    snprintf(to, sizeof to, "%d", pr->prev);
    snprintf(trigger, sizeof trigger, "rollback of version %d", pr->version);
    pr->rolling_back = 1;
    int rc = reload_request_to(d, trigger, to, 1, msg, sizeof msg);
    pr->rolling_back = 0;
    if (rc == 503 && !atomic_load(&d->sh.stopping) && !atomic_load(&d->sh.aborting)) {
        if (!pr->pending) log_warn("rollback of version %d: waits (%s)", pr->version, msg);
        pr->pending = 1;                 /* the next tick tries again */
        return;
    }
    if (rc != 200 && d->cfg->guarantee == GUARANTEE_EXACTLY_ONCE) {
        /* refused live (e.g. the new version's state migration still runs):
         * the restart from the last committed checkpoint goes back too */
        pr->rollbacks++;
        log_error("rollback: version %d goes back to version %d: %s; it cannot at a barrier (%s), so eddy restarts "
                  "on version %d from the last committed checkpoint", pr->version, pr->prev, why, msg, pr->prev);
        restart_on_prev(d);
        end_run(d);
        return;
    }
    if (rc != 200) {
        log_error("rollback: version %d should go back to version %d (%s), but that version cannot run: %s; "
                  "version %d keeps running", pr->version, pr->prev, why, msg, pr->version);
        pr->have_last = 0;
        end_probation(d);
        return;
    }
    d->reloads_ok--;                     /* counted as rolled_back, not as a reload */
    pr->rollbacks++;
    pr->last_version = d->version;
    log_error("rollback: version %d went back to version %d (it runs as version %d from the next barrier): %s; "
              "what version %d sent to the error policy stays there", pr->version, pr->prev, d->version, why,
              pr->version);
    /* a restart from here on (a crash, a failure) must not plan the rejected
     * files again: the copy stays, with rollback.json */
    write_rollback(d);
    pr->active = 0;
    pr->pending = 0;
    if (pr->tick) event_del(pr->tick);
}

static void on_tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd; (void)what;
    daemon_state *d = arg;
    probation *pr = d->prob;
    if (!pr->active || atomic_load(&d->sh.stopping) || atomic_load(&d->sh.aborting)) return;
    if (pr->pending) { rollback(d, pr->reason); return; }
    long in, errors;
    int tasks;
    counts(d, pr->version, &in, &errors, &tasks);
    double max = d->cfg->reload_max_error_rate;
    if (d->cfg->reload_error_rate_set && in >= PROBATION_MIN_RECORDS && (double)errors > max * (double)in) {
        char why[512];
        snprintf(why, sizeof why, "its error rate %.2f%% (%ld of %ld records went through the error policy) passed "
                 "reload.max_error_rate (%.2f%%)", 100.0 * errors / in, errors, in, 100.0 * max);
        rollback(d, why);
        return;
    }
    if (clock_mono_us() < pr->deadline_us) return;
    log_info("version %d passed its probation (%.1f s): %ld records read, %ld errors%s", pr->version,
             d->cfg->reload_probation_ms / 1000.0, in, errors,
             d->cfg->reload_error_rate_set && in < PROBATION_MIN_RECORDS ? " (too few records to judge its error "
             "rate: it is kept)" : "");
    end_probation(d);
}

void probation_begin(daemon_state *d, int version, int prev) {
    probation *pr = d->prob;
    if (!pr || d->cfg->reload_probation_ms <= 0 || pr->rolling_back) return;
    char dir[PATH_MAX], pj[PATH_MAX], prevdir[PATH_MAX], from[PATH_MAX], err[1024];
    path_of(d, NULL, dir, sizeof dir);
    path_of(d, "probation.json", pj, sizeof pj);
    path_of(d, "prev", prevdir, sizeof prevdir);
    if (!pr->active) {
        /* the previous version's kept copy, where a restarted process finds it */
        snprintf(from, sizeof from, "%s/versions/%d/version.json", d->cfg->state_dir, prev);
        json_t *v = json_load_file(from, 0, NULL);
        const char *script = json_string_value(json_object_get(v, "script"));
        snprintf(from, sizeof from, "%s/versions/%d", d->cfg->state_dir, prev);
        files_rm_tree(dir);              /* an earlier rollback's files: this reload moves on */
        if (!script || copy_folder(from, prevdir, err, sizeof err) < 0) {
            log_warn("version %d is not on probation: version %d's kept copy (%s) %s", version, prev, from,
                     script ? err : "is missing");
            json_decref(v);
            return;
        }
        pr->prev = prev;
        json_t *j = json_pack("{s:i, s:i, s:s, s:I, s:b}", "version", version, "prev", prev, "script", script,
                              "started_at", (json_int_t)clock_wall_ms(), "hold_commits", d->cfg->reload_hold_commits);
        json_decref(v);
        if (write_json(pj, j) < 0) return;
    } else {
        json_t *j = json_load_file(pj, 0, NULL);
        if (j) {
            json_object_set_new(j, "version", json_integer(version));
            write_json(pj, j);
        }
    }
    if (!pr->tick) pr->tick = event_new(d->base, -1, EV_PERSIST, on_tick, d);
    if (!pr->tick) return;
    pr->active = 1;
    pr->pending = 0;
    pr->version = version;
    pr->started_ms = clock_wall_ms();
    pr->deadline_us = clock_mono_us() + d->cfg->reload_probation_ms * 1000;
    struct timeval tv = { 0, TICK_MS * 1000 };
    event_add(pr->tick, &tv);
    log_info("version %d is on probation for %.1f s: %s%sit goes back to version %d", version,
             d->cfg->reload_probation_ms / 1000.0, "if a task fails on it",
             d->cfg->reload_error_rate_set ? " or its error rate passes reload.max_error_rate, " : ", ", pr->prev);
}

int probation_wants_restart(daemon_state *d, int code) {
    probation *pr = d->prob;
    if (!pr) return 0;
    if (pr->restart) return 1;
    if (!pr->active || code != 1 || !atomic_load(&d->failed)) return 0;
    for (int i = 0; i < d->ntasks; i++) {
        task *t = d->tasks[i];
        if (task_status(t) != TASK_FAILED || task_version(t) != pr->version) continue;
        char why[1024];
        snprintf(why, sizeof why, "task %s failed on it: %.900s", task_name(t), task_error(t));
        snprintf(pr->reason, sizeof pr->reason, "%s", why);
        set_last(pr, pr->version, pr->prev, 0, why, clock_wall_ms());
        pr->rollbacks++;
        log_error("rollback: version %d goes back to version %d: %s; eddy restarts on version %d%s", pr->version,
                  pr->prev, why, pr->prev, d->cfg->guarantee == GUARANTEE_EXACTLY_ONCE ?
                  " from the last committed checkpoint" : "");
        restart_on_prev(d);
        return 1;
    }
    return 0;
}

void probation_clean_end(daemon_state *d) {
    probation *pr = d->prob;
    if (!pr) return;
    char dir[PATH_MAX], rb[PATH_MAX];
    path_of(d, NULL, dir, sizeof dir);
    path_of(d, "rollback.json", rb, sizeof rb);
    if (pr->active)
        log_warn("stopped during version %d's probation: it was not judged; the next run runs the pipeline's files",
                 pr->version);
    else if (access(rb, F_OK) == 0)
        log_warn("stopped while running the version a rollback went back to: the next run runs the pipeline's "
                 "files, which still hold the version rolled back (version %d), unless they changed",
                 pr->last_from);
    files_rm_tree(dir);
}

json_t *probation_last_json(const daemon_state *d) {
    const probation *pr = d->prob;
    if (!pr || !pr->have_last) return json_null();
    return json_pack("{s:i, s:i, s:i, s:s, s:I}", "from", pr->last_from, "to", pr->last_to, "version",
                     pr->last_version, "reason", pr->last_reason, "at", (json_int_t)pr->last_at);
}

json_t *probation_json(const daemon_state *d) {
    const probation *pr = d->prob;
    if (!pr || !pr->active) return json_null();
    long in, errors;
    int tasks;
    counts((daemon_state *)d, pr->version, &in, &errors, &tasks);
    int64_t left = (pr->deadline_us - clock_mono_us()) / 1000;
    return json_pack("{s:i, s:i, s:I, s:I, s:I, s:I, s:i, s:b}", "version", pr->version, "rolls_back_to", pr->prev,
                     "started_at", (json_int_t)pr->started_ms, "ends_in_ms", (json_int_t)(left > 0 ? left : 0),
                     "records_in", (json_int_t)in, "errors", (json_int_t)errors, "tasks", tasks, "hold_commits",
                     d->cfg->reload_hold_commits);
}

long probation_rollbacks(const daemon_state *d) { return d->prob ? d->prob->rollbacks : 0; }

void probation_free(daemon_state *d) {
    if (!d->prob) return;
    if (d->prob->tick) event_free(d->prob->tick);
    free(d->prob);
    d->prob = NULL;
}
