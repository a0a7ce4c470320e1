#include "recovery.h"
#include "daemon_state.h"
#include "files.h"
#include "kafka.h"
#include "log.h"
#include "probation.h"
#include "source.h"
#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
        if (task_source(t) < 0 || !task_src(t)) continue;
        if (!source_resumes(task_src(t))) { all_ended = 0; continue; }     /* stdin, Kafka (its group keeps offsets) */
        files++;
        if (!task_input_ended(t)) all_ended = 0;
        source_mark m = { 0, 0, -1 };
        task_end_marks(t, &m.wm, &m.maxts);
        json_t *e = source_save(task_src(t), &m);
        if (e) json_array_append_new(a, e);
    }
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
void recovery_load_positions(daemon_state *d) {
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
        if (!src || !file) continue;
        char err[512];
        int rc = ckpt_seek_source(d->tasks, d->ntasks, e, err, sizeof err);
        if (rc < 0) log_warn("source '%s' %s: %s", src, file, err);
        else if (rc > 0)
            log_info("source '%s' %s continues at byte %lld (line %lld)", src, file,
                     (long long)json_integer_value(json_object_get(e, "offset")),
                     (long long)json_integer_value(json_object_get(e, "line")));
    }
    json_decref(j);        /* kept until the next clean end: a crash from here reads from these positions again */
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

/* ---- where this run starts ------------------------------------------------ */

int recovery_prepare(daemon_state *d, const run_opts *o, int *code) {
    char err[4096];
    forget_finished_run(d);
    /* a savepoint starts a new job: the state dir's own state goes */
    if (o->from_savepoint) {
        const char *uids[256];
        int nuids = 0;
        for (int i = 0; i < d->p->nnodes && nuids < 256; i++)
            if (node_has_state(&d->p->nodes[i])) uids[nuids++] = d->p->nodes[i].uid;
        if (ckpt_check_savepoint(o->from_savepoint, uids, nuids, d->cfg->max_parallelism, o->allow_non_restored, err,
                                 sizeof err) < 0) {
            fprintf(stderr, "eddy: %s\n", err);
            *code = 2;
            return -1;
        }
        drop_state(d);
        if (ckpt_restore_savepoint_db(d->cfg->state_dir, o->from_savepoint, err, sizeof err) < 0) {
            fprintf(stderr, "eddy: --from-savepoint: %s\n", err);
            *code = 1;
            return -1;
        }
    }
    return 0;
}

int recovery_choose(daemon_state *d, const run_opts *o, int kafka_sinks, int64_t *restore_out, int *code) {
    char err[4096];
    int exactly_once = d->cfg->guarantee == GUARANTEE_EXACTLY_ONCE;
    /* exactly_once: the newest committed checkpoint is where this run starts */
    if (exactly_once && !o->from_savepoint && ckpt_check_manifests(d->cfg->state_dir, err, sizeof err) < 0) {
        fprintf(stderr, "eddy: %s\n", err);
        *code = 1;
        return -1;
    }
    int64_t restore = exactly_once && !o->from_savepoint ? ckpt_newest_committed(d->cfg->state_dir) : 0;
    if (exactly_once && !o->from_savepoint && kafka_sinks && !confirm_kafka_commit(d, &restore)) { *code = 2; return -1; }
    *restore_out = restore;
    {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/positions.json", d->cfg->state_dir);
        d->sh.continuing = o->from_savepoint != NULL || access(path, F_OK) == 0;
    }
    if (exactly_once ? restore == 0 && !o->from_savepoint : !d->sh.continuing) clear_file_sinks(d);
    if (o->from_savepoint) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/running", d->cfg->state_dir);
        unlink(path);
    } else if (exactly_once && restore == 0) {
        /* nothing in the state store is committed before the first checkpoint */
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/running", d->cfg->state_dir);
        if (access(path, F_OK) == 0) {
            log_warn("the last run did not stop cleanly and committed no checkpoint: this run starts afresh");
            drop_state(d);
        }
    } else if (restore > 0) {
        if (ckpt_restore_db(d->cfg->state_dir, restore, err, sizeof err) < 0) { fprintf(stderr, "eddy: %s\n", err); *code = 1; return -1; }
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/positions.json", d->cfg->state_dir);
        unlink(path);                            /* the checkpoint has the positions */
    } else {
        check_unclean_stop(d);
    }
    return 0;
}

void recovery_mark_running(daemon_state *d) {
    char running[PATH_MAX];
    snprintf(running, sizeof running, "%s/running", d->cfg->state_dir);
    if (d->sh.state && files_write_durably(running, "a run is in progress (removed at a clean end)\n") < 0)
        log_warn("cannot write %s", running);
}

void recovery_clean_end(daemon_state *d) {
    char running[PATH_MAX];
    snprintf(running, sizeof running, "%s/running", d->cfg->state_dir);
    save_positions(d);
    probation_clean_end(d);
    unlink(running);
}
