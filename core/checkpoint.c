#include "checkpoint.h"
#include "task.h"
#include "clock.h"
#include "files.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "sink.h"
#include "source.h"
#include "state.h"
#include "window.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Paths here are built from state.dir and ids; one longer than PATH_MAX
 * fails at open() anyway, so truncation warnings say nothing useful. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif

struct ckpt {
    task_shared *sh;
    task **tasks; int ntasks;
    char *dir;                   /* state.dir/checkpoints */
    int retain;
    int64_t next_id;
    int64_t running;             /* the id in progress, 0 when none */
    int64_t began_us, aligned_us;
    /* the last completed checkpoint, for /status and /metrics */
    int64_t last_id, last_time_ms, last_duration_us, last_alignment_us, last_bytes, last_new_bytes;
    int64_t completed, failed;
    int hold;                    /* ckpt_savepoint(..., stop): the next commit keeps the tasks at its barrier */
    int64_t held;                /* the checkpoint whose barrier the tasks wait at (ckpt_release), or 0 */
};

/* ---- files ----------------------------------------------------------------- */


/* Checkpoint ids under dir (ascending, owned) and how many. */
static int64_t *list_ids(const char *dir, int *n) {
    *n = 0;
    DIR *dd = opendir(dir);
    if (!dd) return NULL;
    int64_t *ids = NULL;
    int cap = 0;
    struct dirent *e;
    while ((e = readdir(dd))) {
        char *end;
        long long v = strtoll(e->d_name, &end, 10);
        if (*end || end == e->d_name || v <= 0) continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            int64_t *ni = realloc(ids, sizeof *ni * cap);
            if (!ni) break;
            ids = ni;
        }
        ids[(*n)++] = v;
    }
    closedir(dd);
    for (int i = 1; i < *n; i++)             /* a handful: insertion sort */
        for (int j = i; j > 0 && ids[j - 1] > ids[j]; j--) { int64_t t = ids[j]; ids[j] = ids[j - 1]; ids[j - 1] = t; }
    return ids;
}

static json_t *load_manifest(const char *dir, int64_t id) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%lld/manifest.json", dir, (long long)id);
    return json_load_file(path, 0, NULL);
}

static void checkpoints_dir(const char *state_dir, char *out, size_t len) {
    snprintf(out, len, "%s/checkpoints", state_dir);
}

static int save_manifest(const char *dir, int64_t id, json_t *m) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%lld/manifest.json", dir, (long long)id);
    char *text = json_dumps(m, JSON_INDENT(1));
    int rc = text ? files_write_durably(path, text) : -1;
    free(text);
    return rc;
}

/* The newest committed checkpoint under state_dir; or (prepared) the newest
 * one after it whose manifest names a Kafka transaction.  0: none. */
static int64_t newest(const char *state_dir, int prepared) {
    char dir[PATH_MAX];
    checkpoints_dir(state_dir, dir, sizeof dir);
    int n;
    int64_t *ids = list_ids(dir, &n), found = 0;
    for (int i = n - 1; i >= 0 && !found; i--) {
        json_t *m = load_manifest(dir, ids[i]);
        int committed = m && json_is_true(json_object_get(m, "committed"));
        if (committed && prepared) { json_decref(m); break; }
        if (committed || (prepared && m && json_object_get(m, "kafka_transaction"))) found = ids[i];
        json_decref(m);
    }
    free(ids);
    return found;
}

int64_t ckpt_newest_committed(const char *state_dir) { return newest(state_dir, 0); }
int64_t ckpt_newest_prepared(const char *state_dir) { return newest(state_dir, 1); }

int ckpt_mark_committed(const char *state_dir, int64_t id) {
    char dir[PATH_MAX];
    checkpoints_dir(state_dir, dir, sizeof dir);
    json_t *m = load_manifest(dir, id);
    if (!m) return -1;
    json_object_set_new(m, "committed", json_true());
    int rc = save_manifest(dir, id, m);
    json_decref(m);
    return rc;
}

/* Every id this state dir has used is below the one returned. */
static int64_t next_id(const char *dir) {
    int n;
    int64_t *ids = list_ids(dir, &n), next = n ? ids[n - 1] + 1 : 1;
    free(ids);
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/last-id", dir);
    FILE *f = fopen(path, "r");
    long long last;
    if (f && fscanf(f, "%lld", &last) == 1 && last + 1 > next) next = last + 1;
    if (f) fclose(f);
    return next;
}

void ckpt_forget_all(const char *state_dir) {
    char dir[PATH_MAX], path[PATH_MAX];
    checkpoints_dir(state_dir, dir, sizeof dir);
    int n;
    int64_t *ids = list_ids(dir, &n);
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/%lld", dir, (long long)ids[i]);
        files_rm_tree(path);
    }
    free(ids);
}

/* Copies src to dst (a file), or hard-links it when link is set.  0 or -1. */
static int copy_file(const char *src, const char *dst, int link_it) {
    if (link_it && link(src, dst) == 0) return 0;
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) return -1;
    int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0) { close(in); return -1; }
    char buf[1 << 16];
    ssize_t r;
    int rc = 0;
    while ((r = read(in, buf, sizeof buf)) > 0)
        if (write(out, buf, (size_t)r) != r) { rc = -1; break; }
    if (r < 0 || fsync(out) < 0) rc = -1;
    close(in);
    if (close(out) < 0) rc = -1;
    return rc;
}

/* Copies the db folder of a checkpoint or savepoint (from) into dst (table
 * files linked when link_tables, else copied).  0 or -1 with err. */
static int copy_db(const char *src, const char *dst, int link_tables, char *err, size_t errlen) {
    DIR *dd = opendir(src);
    if (!dd && errno != ENOENT) { snprintf(err, errlen, "cannot read %s: %s", src, strerror(errno)); return -1; }
    files_rm_tree(dst);
    if (!dd) return 0;                       /* a pipeline without keyed state has no db */
    if (files_mkdirs(dst) < 0) { closedir(dd); snprintf(err, errlen, "cannot create %s: %s", dst, strerror(errno)); return -1; }
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(dd))) {
        if (e->d_name[0] == '.') continue;
        char a[2 * PATH_MAX], b[2 * PATH_MAX];
        snprintf(a, sizeof a, "%s/%s", src, e->d_name);
        snprintf(b, sizeof b, "%s/%s", dst, e->d_name);
        /* table files never change: links; the rest RocksDB rewrites: copies */
        size_t l = strlen(e->d_name);
        int sst = l > 4 && strcmp(e->d_name + l - 4, ".sst") == 0;
        if (copy_file(a, b, sst && link_tables) < 0) {
            snprintf(err, errlen, "cannot copy %s to %s: %s", a, b, strerror(errno));
            rc = -1;
        }
    }
    closedir(dd);
    return rc;
}

int ckpt_restore_db(const char *state_dir, int64_t id, char *err, size_t errlen) {
    char src[PATH_MAX], dst[PATH_MAX];
    snprintf(src, sizeof src, "%s/checkpoints/%lld/db", state_dir, (long long)id);
    snprintf(dst, sizeof dst, "%s/db", state_dir);
    return copy_db(src, dst, 1, err, errlen);
}

int ckpt_restore_savepoint_db(const char *state_dir, const char *sp, char *err, size_t errlen) {
    char src[PATH_MAX], dst[PATH_MAX];
    snprintf(src, sizeof src, "%s/db", sp);
    snprintf(dst, sizeof dst, "%s/db", state_dir);
    return copy_db(src, dst, 1, err, errlen);
}

int ckpt_check_savepoint(const char *sp, const char *const *uids, int nuids, int max_parallelism, int allow_missing,
                         char *err, size_t errlen) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/manifest.json", sp);
    json_error_t je;
    json_t *m = json_load_file(path, 0, &je);
    if (!m) { snprintf(err, errlen, "--from-savepoint: cannot read %s: %s", path, je.text); return -1; }
    int rc = 0;
    json_int_t mp = json_integer_value(json_object_get(m, "max_parallelism"));
    if (!json_is_true(json_object_get(m, "committed"))) {
        snprintf(err, errlen, "--from-savepoint: %s is not a complete savepoint", sp);
        rc = -1;
    } else if (mp != max_parallelism) {
        snprintf(err, errlen, "--from-savepoint: the savepoint was taken with max_parallelism %lld and the config "
                 "says %d; its state is split into %lld key groups and cannot be split differently: set "
                 "max_parallelism = %lld", (long long)mp, max_parallelism, (long long)mp, (long long)mp);
        rc = -1;
    }
    size_t i;
    json_t *u;
    json_array_foreach(json_object_get(m, "uids"), i, u) {
        if (rc < 0 || allow_missing) break;
        const char *s = json_string_value(u);
        int found = 0;
        for (int k = 0; s && k < nuids && !found; k++) found = strcmp(uids[k], s) == 0;
        if (s && !found) {
            snprintf(err, errlen, "--from-savepoint: the savepoint has state of operator uid '%s', which this pipeline "
                     "does not have; give the operator that uid, or pass --allow-non-restored-state to drop it", s);
            rc = -1;
        }
    }
    json_decref(m);
    return rc;
}

/* ---- crash points (tests) -------------------------------------------------- */

static void crash_point(const char *point) {
    static int parsed, count;
    static char name[64];
    static int at;
    if (!parsed) {
        parsed = 1;
        const char *e = getenv("EDDY_CRASH_AT");
        if (e && sscanf(e, "%63[^:]:%d", name, &at) != 2) name[0] = 0;
    }
    if (!name[0] || strcmp(name, point) != 0) return;
    if (++count == at) {
        log_warn("EDDY_CRASH_AT=%s:%d: killing myself", name, at);
        raise(SIGKILL);
    }
}

/* ---- the coordinator ------------------------------------------------------- */

ckpt *ckpt_create(task_shared *sh, task **tasks, int ntasks, const char *state_dir, int retain) {
    ckpt *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    char dir[PATH_MAX];
    checkpoints_dir(state_dir, dir, sizeof dir);
    c->dir = strdup(dir);
    if (!c->dir || files_mkdirs(dir) < 0) { ckpt_destroy(c); return NULL; }
    c->sh = sh;
    c->tasks = tasks;
    c->ntasks = ntasks;
    c->retain = retain > 0 ? retain : 1;
    c->next_id = next_id(dir);
    for (int i = 0; i < ntasks; i++) task_ckpt_sinks_next(tasks[i], c->next_id);
    return c;
}

void ckpt_destroy(ckpt *c) {
    if (!c) return;
    free(c->dir);
    free(c);
}

int ckpt_running(const ckpt *c) { return c->running != 0; }
int64_t ckpt_completed(const ckpt *c) { return c->completed; }
int64_t ckpt_last(const ckpt *c) { return c->last_id; }

static json_t *manifest_json(ckpt *c, int64_t id) {
    const plan *p = task_plan(c->tasks[0]);
    json_t *sources = json_array(), *tasks = json_array(), *parts = json_array(), *uids = json_array();
    for (int i = 0; i < p->nnodes; i++)
        if (node_has_state(&p->nodes[i])) json_array_append_new(uids, json_string(p->nodes[i].uid));
    for (int i = 0; i < c->ntasks; i++) {
        task *t = c->tasks[i];
        json_t *s = task_ckpt_source(t), *w = task_ckpt_watermarks(t);
        if (s) json_array_append_new(sources, s);
        if (w) json_array_append_new(tasks, w);
        task_ckpt_sinks_prepared(t, parts);
    }
    return json_pack("{s:I, s:b, s:I, s:s, s:i, s:o, s:o, s:o, s:o}", "id", (json_int_t)id, "committed", 0,
                     "time", (json_int_t)clock_wall_ms(), "pipeline_sha256", p->hash, "max_parallelism",
                     c->sh->cfg->max_parallelism, "uids", uids, "sources", sources, "tasks", tasks, "part_files", parts);
}

static int write_manifest(ckpt *c, int64_t id, json_t *m) { return save_manifest(c->dir, id, m); }

/* Bytes of the files in dir, and of those not in prev (NULL: none). */
static void dir_sizes(const char *dir, const char *prev, int64_t *total, int64_t *fresh) {
    *total = *fresh = 0;
    DIR *dd = opendir(dir);
    if (!dd) return;
    struct dirent *e;
    while ((e = readdir(dd))) {
        if (e->d_name[0] == '.') continue;
        char a[2 * PATH_MAX], b[2 * PATH_MAX];
        struct stat st;
        snprintf(a, sizeof a, "%s/%s", dir, e->d_name);
        if (stat(a, &st) < 0) continue;
        *total += st.st_size;
        if (prev) snprintf(b, sizeof b, "%s/%s", prev, e->d_name);
        if (!prev || access(b, F_OK) != 0) *fresh += st.st_size;
    }
    closedir(dd);
}

/* Renames the part files of committed manifest m (already renamed ones are
 * skipped: recovery redoes this, live = 0, without the crash point). */
static void rename_parts(json_t *m, int live) {
    size_t i;
    json_t *e;
    int first = 1;
    json_array_foreach(json_object_get(m, "part_files"), i, e) {
        const char *h = json_string_value(json_object_get(e, "hidden"));
        const char *f = json_string_value(json_object_get(e, "final"));
        if (!h || !f || access(h, F_OK) != 0) continue;
        if (rename(h, f) < 0) log_error("checkpoint: cannot rename %s to %s: %s", h, f, strerror(errno));
        else files_fsync_dir(f);
        if (first && live) { first = 0; crash_point("post_commit"); }
    }
}

/* Keeps the newest `retain` committed checkpoints up to id; deletes the rest
 * below id. */
static void prune(ckpt *c, int64_t id) {
    int n;
    int64_t *ids = list_ids(c->dir, &n);
    int kept = 0;
    for (int i = n - 1; i >= 0; i--) {
        if (ids[i] > id) continue;
        json_t *m = load_manifest(c->dir, ids[i]);
        int committed = m && json_is_true(json_object_get(m, "committed"));
        json_decref(m);
        if (committed && kept < c->retain) { kept++; continue; }
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%lld", c->dir, (long long)ids[i]);
        files_rm_tree(path);
    }
    free(ids);
}

int ckpt_begin(ckpt *c) {
    if (c->running) return 0;
    c->running = c->next_id++;
    c->began_us = clock_mono_us();
    c->aligned_us = 0;
    for (int i = 0; i < c->ntasks; i++) {
        task *t = c->tasks[i];
        task_ckpt_request(t, c->running);
        sched_wake(t);
    }
    return 1;
}

/* Releases the tasks waiting at the barrier of id. */
static void release(ckpt *c, int64_t id) {
    atomic_store(&c->sh->ckpt_released, id);
    for (int i = 0; i < c->ntasks; i++) sched_wake(c->tasks[i]);
}

/* Every task passed barrier id or ended: snapshot, manifest, commit point,
 * post-commit.  0, or -1 when the checkpoint failed (nothing committed). */
static int complete(ckpt *c, int64_t id, int final) {
    char err[3 * PATH_MAX] = "";
    /* tasks that ended have no worker any more: their sinks are prepared here */
    for (int i = 0; i < c->ntasks; i++) task_ckpt_prepare_ended(c->tasks[i], id, err, sizeof err);
    if (err[0]) goto fail;
    /* a Kafka transaction: everything sent in it is delivered (or it fails) */
    kafka *k = c->sh->kafka;
    int txn = kafka_txn_active(k);
    if (txn && kafka_txn_prepare(k, id, err, sizeof err) < 0) goto kafka_fail;
    crash_point("prepared");
    char dir[PATH_MAX], db[PATH_MAX + 8], prev[PATH_MAX + 32];
    snprintf(dir, sizeof dir, "%s/%lld", c->dir, (long long)id);
    files_rm_tree(dir);                              /* a leftover of a run that crashed */
    if (files_mkdirs(dir) < 0) { snprintf(err, sizeof err, "cannot create %s: %s", dir, strerror(errno)); goto fail; }
    snprintf(db, sizeof db, "%s/db", dir);
    if (c->sh->state && state_checkpoint(c->sh->state, db, err, sizeof err) < 0) goto fail;
    json_t *m = manifest_json(c, id);
    if (m && txn) json_object_set_new(m, "kafka_transaction", json_string(kafka_txn_id(k)));
    if (!m || write_manifest(c, id, m) < 0) {
        json_decref(m);
        snprintf(err, sizeof err, "cannot write the manifest of checkpoint %lld in %s", (long long)id, dir);
        goto fail;
    }
    crash_point("manifest");
    /* the commit point: the Kafka transaction's commit when there is one
     * (recovery then learns from Kafka whether it happened), else marking
     * the manifest committed */
    if (txn) {
        /* the offsets of the partitions this instance holds (a revoked one
         * is held until its rebalance callback returns) go with it */
        kafka_offset *offs = calloc((size_t)c->ntasks + 1, sizeof *offs);
        int noffs = 0;
        struct kgroup *g = NULL;
        for (int i = 0; offs && i < c->ntasks; i++)
            if (task_src(c->tasks[i]) && source_txn_offset(task_src(c->tasks[i]), &offs[noffs], &g) == 0)
                noffs++;
        int rc = offs ? kafka_txn_commit(k, id, offs, noffs, g, err, sizeof err) : -1;
        if (!offs) snprintf(err, sizeof err, "out of memory");
        free(offs);
        if (rc < 0) { json_decref(m); goto kafka_fail; }
        crash_point("txn_committed");
    }
    json_object_set_new(m, "committed", json_true());
    if (write_manifest(c, id, m) < 0) {
        json_decref(m);
        snprintf(err, sizeof err, "cannot mark checkpoint %lld committed in %s", (long long)id, dir);
        goto fail;
    }
    crash_point("committed");
    char last[PATH_MAX + 16], text[32];
    snprintf(last, sizeof last, "%s/last-id", c->dir);
    snprintf(text, sizeof text, "%lld\n", (long long)id);
    if (files_write_durably(last, text) < 0) log_warn("checkpoint: cannot write %s", last);
    int64_t done_us = clock_mono_us();
    /* the next checkpoint's transaction is open before any task goes on */
    if (txn && !final && kafka_txn_begin(k, 0, err, sizeof err) < 0)
        log_error("checkpoint %lld committed, but the next transaction cannot begin: %s; stopping", (long long)id, err);
    else if (!final && c->hold)
        c->held = id;                            /* a stop with savepoint: nothing goes on past it */
    else if (!final)
        release(c, id);
    c->hold = 0;
    /* post-commit: idempotent, and redone by recovery */
    rename_parts(m, 1);
    for (int i = 0; i < c->ntasks; i++) task_ckpt_sinks_committed(c->tasks[i]);
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(m, "sources"), i, e) {
        /* the group's offsets follow the checkpoints (exactly_once only: at
         * least once, acks.c commits what the sinks acknowledged): the
         * transaction committed them, else the consumer commits them now */
        const char *label = json_string_value(json_object_get(e, "partition_label"));
        if (!label || c->sh->cfg->guarantee != GUARANTEE_EXACTLY_ONCE) continue;
        for (int k = 0; k < c->ntasks; k++) {
            task *t = c->tasks[k];
            if (task_reads(t, NULL, label))
                source_committed(task_src(t), json_integer_value(json_object_get(e, "offset")), txn);
        }
    }
    json_decref(m);
    snprintf(prev, sizeof prev, "%s/%lld/db", c->dir, (long long)c->last_id);
    int have_prev = c->last_id > 0 && access(prev, F_OK) == 0;
    dir_sizes(db, have_prev ? prev : NULL, &c->last_bytes, &c->last_new_bytes);
    prune(c, id);
    c->last_id = id;
    c->last_time_ms = clock_wall_ms();
    c->last_duration_us = done_us - c->began_us;
    c->last_alignment_us = (c->aligned_us ? c->aligned_us : done_us) - c->began_us;
    c->completed++;
    log_debug("checkpoint %lld committed in %.1f ms (alignment %.1f ms, %lld bytes, %lld new)", (long long)id,
              c->last_duration_us / 1000.0, c->last_alignment_us / 1000.0, (long long)c->last_bytes,
              (long long)c->last_new_bytes);
    return 0;
fail:
    c->failed++;
    c->hold = 0;
    log_error("checkpoint %lld failed: %s (the next one includes what it had)", (long long)id, err);
    if (!final) release(c, id);
    return -1;
kafka_fail:
    /* the transaction is gone with its records: the daemon stops (kafka_failed)
     * and restarts from the last committed checkpoint; the tasks stay where
     * they are meanwhile */
    c->failed++;
    log_error("checkpoint %lld failed: %s", (long long)id, err);
    return -1;
}

int ckpt_poll(ckpt *c) {
    if (!c->running) return 0;
    int64_t id = c->running;
    for (int i = 0; i < c->ntasks; i++) {
        task *t = c->tasks[i];
        int st = task_status(t);
        if (st == TASK_FAILED) {               /* the daemon is stopping: nothing to commit */
            c->running = 0;
            c->failed++;
            release(c, id);
            return 1;
        }
        if (st != TASK_DONE && task_ckpt_passed(t) < id) return 0;
    }
    c->aligned_us = clock_mono_us();
    complete(c, id, 0);
    c->running = 0;
    return 1;
}

int ckpt_final(ckpt *c) {
    int64_t id = c->running ? c->running : c->next_id++;
    c->running = 0;
    c->began_us = clock_mono_us();
    c->aligned_us = c->began_us;
    return complete(c, id, 1);
}

int64_t ckpt_now(ckpt *c, int64_t timeout_ms, const char *what, void (*serve)(void *), void *ud, char *err,
                 size_t errlen) {
    int64_t deadline = clock_mono_us() + timeout_ms * 1000;
    while (c->running && clock_mono_us() < deadline) {         /* one already running */
        if (serve) serve(ud);
        if (!ckpt_poll(c)) usleep(1000);
    }
    int64_t failed = c->failed;
    if (c->running || !ckpt_begin(c)) { snprintf(err, errlen, "a checkpoint is still running"); return -1; }
    int64_t id = c->running;
    while (c->running && clock_mono_us() < deadline) {
        if (serve) serve(ud);
        if (!ckpt_poll(c)) usleep(1000);
    }
    if (c->running) {
        snprintf(err, errlen, "the %s checkpoint %lld did not complete within %lld s (a task does not reach "
                 "its barrier); it completes later", what, (long long)id, (long long)(timeout_ms / 1000));
        return -1;
    }
    if (c->failed != failed || c->last_id != id) { snprintf(err, errlen, "checkpoint %lld failed (see the log)", (long long)id); return -1; }
    return id;
}

/* ---- recovery --------------------------------------------------------------- */

/* Deletes what the sinks wrote and no checkpoint committed (a file sink's
 * hidden part files: prepared after the checkpoint restored, or written and
 * never prepared). */
static void delete_hidden_parts(ckpt *c) {
    for (int i = 0; i < c->ntasks; i++) task_ckpt_sinks_abort(c->tasks[i]);
}

static task *task_named(ckpt *c, const char *name) {
    for (int i = 0; name && i < c->ntasks; i++)
        if (strcmp(task_name(c->tasks[i]), name) == 0) return c->tasks[i];
    return NULL;
}

int ckpt_seek_source(task **tasks, int ntasks, json_t *e, char *err, size_t errlen) {
    const char *src = json_string_value(json_object_get(e, "source"));
    const char *label = source_entry_label(e);
    for (int k = 0; src && k < ntasks; k++) {
        if (!task_reads(tasks[k], src, label)) continue;
        return task_ckpt_restore_source(tasks[k], e, err, errlen) < 0 ? -1 : 1;
    }
    return 0;
}

static int restore_source(ckpt *c, json_t *e, char *err, size_t errlen) {
    int rc = ckpt_seek_source(c->tasks, c->ntasks, e, err, errlen);
    if (rc != 0) return rc < 0 ? -1 : 0;
    const char *src = json_string_value(json_object_get(e, "source")), *label = source_entry_label(e);
    log_warn("checkpoint: source '%s' %s is not in this pipeline: its position is not restored", src ? src : "?",
             label ? label : "?");
    return 0;
}

/* Continues from manifest m: sources seek, watermarks come back.  0 or -1. */
static int apply_manifest(ckpt *c, json_t *m, int64_t id, char *err, size_t errlen);

int ckpt_recover_savepoint(ckpt *c, const char *sp, char *err, size_t errlen) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/manifest.json", sp);
    json_t *m = json_load_file(path, 0, NULL);
    if (!m) { snprintf(err, errlen, "--from-savepoint: cannot read %s", path); return -1; }
    delete_hidden_parts(c);
    int rc = apply_manifest(c, m, json_integer_value(json_object_get(m, "id")), err, errlen);
    if (rc == 0) log_info("restored savepoint %s", sp);
    json_decref(m);
    return rc;
}

int ckpt_recover(ckpt *c, int64_t id, char *err, size_t errlen) {
    if (id <= 0) { delete_hidden_parts(c); return 0; }
    json_t *m = load_manifest(c->dir, id);
    if (!m) { snprintf(err, errlen, "checkpoint %lld: cannot read its manifest in %s", (long long)id, c->dir); return -1; }
    int rc = apply_manifest(c, m, id, err, errlen);
    if (rc == 0) {
        /* its post-commit steps, then what came after it goes */
        rename_parts(m, 0);
        delete_hidden_parts(c);
        prune(c, id);
        int n;
        int64_t *ids = list_ids(c->dir, &n);
        for (int k = 0; k < n; k++)
            if (ids[k] > id) {
                char path[PATH_MAX];
                snprintf(path, sizeof path, "%s/%lld", c->dir, (long long)ids[k]);
                files_rm_tree(path);
            }
        free(ids);
        c->last_id = id;
        log_info("restored checkpoint %lld (pipeline sha256 %.12s then)", (long long)id,
                 json_string_value(json_object_get(m, "pipeline_sha256")) ? json_string_value(json_object_get(m, "pipeline_sha256")) : "?");
    }
    json_decref(m);
    return rc;
}

static int apply_manifest(ckpt *c, json_t *m, int64_t id, char *err, size_t errlen) {
    int rc = 0;
    if (json_integer_value(json_object_get(m, "max_parallelism")) != c->sh->cfg->max_parallelism) {
        snprintf(err, errlen, "checkpoint %lld was taken with max_parallelism %lld, the config says %d: key groups "
                 "cannot change once state exists", (long long)id,
                 (long long)json_integer_value(json_object_get(m, "max_parallelism")), c->sh->cfg->max_parallelism);
        rc = -1;
        goto out;
    }
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(m, "sources"), i, e)
        if (restore_source(c, e, err, errlen) < 0) { rc = -1; goto out; }
    json_array_foreach(json_object_get(m, "tasks"), i, e) {
        task *t = task_named(c, json_string_value(json_object_get(e, "task")));
        if (t) task_ckpt_restore_watermarks(t, e);
    }
out:
    return rc;
}

/* ---- savepoints ------------------------------------------------------------ */

void ckpt_release(ckpt *c) {
    if (!c || !c->held) return;
    release(c, c->held);
    c->held = 0;
}

int ckpt_savepoint(ckpt *c, const char *state_dir, int64_t timeout_ms, int stop, char *path, size_t plen, char *err,
                   size_t errlen) {
    int64_t deadline = clock_mono_us() + timeout_ms * 1000;
    while (c->running && clock_mono_us() < deadline) { if (!ckpt_poll(c)) usleep(1000); }   /* one already running */
    int64_t failed = c->failed;
    if (c->running || !ckpt_begin(c)) { snprintf(err, errlen, "a checkpoint is still running"); return -1; }
    int64_t id = c->running;
    c->hold = stop;
    while (c->running && clock_mono_us() < deadline) { if (!ckpt_poll(c)) usleep(1000); }
    if (c->running) {
        c->hold = 0;                             /* it completes later as a plain checkpoint */
        snprintf(err, errlen, "the savepoint's checkpoint %lld did not complete within %lld s (a task does not reach "
                 "its barrier); it completes later as a checkpoint", (long long)id, (long long)(timeout_ms / 1000));
        return -1;
    }
    if (c->failed != failed || c->last_id != id) { snprintf(err, errlen, "checkpoint %lld failed (see the log)", (long long)id); return -1; }
    /* a self-contained copy: the manifest and every file of the state */
    char src[PATH_MAX], sp[PATH_MAX], a[PATH_MAX], b[PATH_MAX];
    snprintf(src, sizeof src, "%s/%lld", c->dir, (long long)id);
    snprintf(sp, sizeof sp, "%s/savepoints/savepoint-%lld-%lld", state_dir, (long long)id, (long long)clock_wall_ms());
    snprintf(a, sizeof a, "%s/db", src);
    snprintf(b, sizeof b, "%s/db", sp);
    if (files_mkdirs(sp) < 0) { snprintf(err, errlen, "cannot create %s: %s", sp, strerror(errno)); return -1; }
    if (access(a, F_OK) == 0 && copy_db(a, b, 0, err, errlen) < 0) { files_rm_tree(sp); return -1; }
    json_t *m = load_manifest(c->dir, id);
    if (!m) { snprintf(err, errlen, "cannot read the manifest of checkpoint %lld", (long long)id); files_rm_tree(sp); return -1; }
    json_object_set_new(m, "savepoint", json_true());
    json_object_set_new(m, "part_files", json_array());     /* committed, renamed: nothing to redo */
    char *text = json_dumps(m, JSON_INDENT(1));
    json_decref(m);
    snprintf(a, sizeof a, "%s/manifest.json", sp);
    int rc = text ? files_write_durably(a, text) : -1;
    free(text);
    if (rc < 0) { snprintf(err, errlen, "cannot write %s", a); files_rm_tree(sp); return -1; }
    char *real = realpath(sp, NULL);
    snprintf(path, plen, "%s", real ? real : sp);
    free(real);
    log_info("savepoint %s (checkpoint %lld)", path, (long long)id);
    return 0;
}

/* ---- /status and /metrics -------------------------------------------------- */

json_t *ckpt_status_json(ckpt *c) {
    if (!c->last_id && !c->failed) return json_null();
    return json_pack("{s:I, s:I, s:f, s:f, s:I, s:I, s:I, s:I}", "id", (json_int_t)c->last_id, "time",
                     (json_int_t)c->last_time_ms, "duration_ms", c->last_duration_us / 1000.0, "alignment_ms",
                     c->last_alignment_us / 1000.0, "bytes", (json_int_t)c->last_bytes, "new_bytes",
                     (json_int_t)c->last_new_bytes, "completed", (json_int_t)c->completed, "failures",
                     (json_int_t)c->failed);
}

void ckpt_metrics(ckpt *c, struct evbuffer *out) {
    metrics_family(out, "eddy_checkpoint_last_id", "gauge", "The id of the last completed checkpoint.");
    metrics_sample(out, "eddy_checkpoint_last_id", NULL, (double)c->last_id);
    metrics_family(out, "eddy_checkpoint_duration_seconds", "gauge",
                   "The last completed checkpoint: from its barriers to its commit point.");
    metrics_sample(out, "eddy_checkpoint_duration_seconds", NULL, c->last_duration_us / 1e6);
    metrics_family(out, "eddy_checkpoint_alignment_seconds", "gauge",
                   "The last completed checkpoint: until every task had passed its barrier.");
    metrics_sample(out, "eddy_checkpoint_alignment_seconds", NULL, c->last_alignment_us / 1e6);
    metrics_family(out, "eddy_checkpoint_size_bytes", "gauge", "The state in the last completed checkpoint.");
    metrics_sample(out, "eddy_checkpoint_size_bytes", NULL, (double)c->last_bytes);
    metrics_family(out, "eddy_checkpoint_new_bytes", "gauge",
                   "Of that, the files the checkpoint before it did not have.");
    metrics_sample(out, "eddy_checkpoint_new_bytes", NULL, (double)c->last_new_bytes);
    metrics_family(out, "eddy_checkpoints_total", "counter", "Checkpoints by result.");
    const char *ok[] = { "result", "completed", NULL }, *bad[] = { "result", "failed", NULL };
    metrics_sample(out, "eddy_checkpoints_total", ok, (double)c->completed);
    metrics_sample(out, "eddy_checkpoints_total", bad, (double)c->failed);
}

int ckpt_check_manifests(const char *state_dir, char *err, size_t errlen) {
    char dir[PATH_MAX], path[PATH_MAX];
    checkpoints_dir(state_dir, dir, sizeof dir);
    int n, rc = 0;
    int64_t *ids = list_ids(dir, &n);
    for (int i = n - 1; i >= 0; i--) {
        snprintf(path, sizeof path, "%s/%lld/manifest.json", dir, (long long)ids[i]);
        if (access(path, F_OK) != 0 && errno == ENOENT) continue;      /* never written: not committed */
        json_error_t je;
        json_t *m = json_load_file(path, 0, &je);
        int ok = m && json_is_object(m) && json_integer_value(json_object_get(m, "id")) == ids[i];
        int committed = ok && json_is_true(json_object_get(m, "committed"));
        json_decref(m);
        if (!ok) {
            snprintf(err, errlen, "checkpoint %lld: its manifest %s is damaged (%s): it may belong to the newest "
                     "committed checkpoint, whose output is already published, so eddy does not fall back to an "
                     "older one (that would write that output again). Put the file back from a backup; or, to "
                     "accept duplicated output, remove %s/%lld and run again",
                     (long long)ids[i], path, m ? "no \"id\" of its own" : je.text, dir, (long long)ids[i]);
            rc = -1;
            break;
        }
        if (committed) break;
    }
    free(ids);
    return rc;
}
