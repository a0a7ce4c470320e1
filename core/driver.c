/* driver — see driver.h. */
#include "driver.h"
#include "files.h"
#include "graph.h"
#include "daemon.h"
#include "state.h"
#include "reload.h"
#include <fcntl.h>
#include <unistd.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct driver {
    config *cfg;
    plan **plans; int nplans;           /* every version, the running one last (tasks keep pointers into them) */
    int version;
    task_shared sh;
    task **tasks; int ntasks;
    channel **chans; int nchans;
    mem_input *inputs; int ninputs;     /* one per source of the plan */
    mem_outputs outs;
    char dir[PATH_MAX];                 /* the temporary folder: state, dead letters */
    char failed[2048];
};

int driver_config(config *c, const char *dir, char *err, size_t errlen) {
    free(c->state_dir);
    free(c->dead_letter_file);
    free(c->dead_letter_kafka);
    c->state_dir = c->dead_letter_file = c->dead_letter_kafka = NULL;
    if (asprintf(&c->state_dir, "%s/state", dir) < 0 || asprintf(&c->dead_letter_file, "%s/dead-letter.jsonl", dir) < 0) {
        c->state_dir = c->dead_letter_file = NULL;
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    c->admin_enabled = 0;
    c->reload_watch = 0;
    c->guarantee = GUARANTEE_AT_LEAST_ONCE;
    c->shuffle = SHUFFLE_LOCAL;
    c->standby = 0;
    c->kafka_embedded = 0;
    c->testing = 1;
    return 0;
}

void driver_destroy(driver *d) {
    if (!d) return;
    for (int i = 0; i < d->ntasks; i++) task_destroy(d->tasks[i]);
    free(d->tasks);
    for (int c = 0; c < d->nchans; c++) channel_destroy(d->chans[c]);
    free(d->chans);
    state_close(d->sh.state);
    if (d->sh.dead_letter) fclose(d->sh.dead_letter);
    pthread_mutex_destroy(&d->sh.dead_letter_mu);
    pthread_mutex_destroy(&d->sh.stdout_mu);
    free(d->sh.boot);
    for (int i = 0; i < d->nplans; i++) plan_destroy(d->plans[i]);
    free(d->plans);
    for (int s = 0; s < d->ninputs; s++) {
        for (int j = 0; j < d->inputs[s].npart; j++) {
            mem_partition *mp = &d->inputs[s].parts[j];
            mem_queue_free(&mp->q);
            if (mp->rfd >= 0) close(mp->rfd);
            if (mp->wfd >= 0) close(mp->wfd);
        }
        free(d->inputs[s].parts);
    }
    free(d->inputs);
    mem_outputs_free(&d->outs);
    if (d->dir[0]) files_rm_tree(d->dir);
    config_destroy(d->cfg);
    free(d);
}

/* Opens the keyed state in dbdir as a copy of the checkpoint `from`: the
 * checkpoint is opened, checkpointed again into dbdir and closed, so
 * several drivers can start from one snapshot.  Owned db, or NULL. */
static state_db *open_copy(const config *c, const char *from, const char *dbdir, char *err, size_t errlen) {
    state_db *src = state_open(from, c->state_cache, &c->state_rocksdb, err, errlen);
    if (!src) return NULL;
    int rc = state_checkpoint(src, dbdir, err, errlen);
    state_close(src);
    return rc < 0 ? NULL : state_open(dbdir, c->state_cache, &c->state_rocksdb, err, errlen);
}

driver *driver_open(config *cfg, plan *p, const driver_opts *o, char *err, size_t errlen) {
    driver *d = calloc(1, sizeof *d);
    if (!d) { config_destroy(cfg); plan_destroy(p); snprintf(err, errlen, "out of memory"); return NULL; }
    d->cfg = cfg;
    if (!(d->plans = malloc(sizeof *d->plans))) {
        config_destroy(cfg);
        plan_destroy(p);
        free(d);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    d->plans[d->nplans++] = p;
    d->version = o->version > 0 ? o->version : 1;
    pthread_mutex_init(&d->sh.dead_letter_mu, NULL);
    pthread_mutex_init(&d->sh.stdout_mu, NULL);
    const char *tmp = o->tmp ? o->tmp : getenv("TMPDIR");
    snprintf(d->dir, sizeof d->dir, "%s/eddy-driver-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(d->dir)) {
        snprintf(err, errlen, "cannot make a temporary folder in %s: %s", tmp && *tmp ? tmp : "/tmp", strerror(errno));
        d->dir[0] = 0;
        goto err;
    }
    if (driver_config(cfg, d->dir, err, errlen) < 0) goto err;
    if (!(d->inputs = calloc(p->nsources ? p->nsources : 1, sizeof *d->inputs))) goto oom;
    d->ninputs = p->nsources;
    for (int s = 0; s < p->nsources; s++) {
        int n = o->partitions ? o->partitions[s] : 1;
        if (n < 1) n = 1;
        if (!(d->inputs[s].parts = calloc(n, sizeof *d->inputs[s].parts))) goto oom;
        d->inputs[s].npart = n;
        for (int j = 0; j < n; j++) d->inputs[s].parts[j].rfd = d->inputs[s].parts[j].wfd = -1;
        for (int j = 0; j < n; j++) {
            mem_partition *mp = &d->inputs[s].parts[j];
            if (!o->pipes) { mp->exact = 1; continue; }
            if (p->sources[s].kind == SRC_KAFKA) continue;
            int fds[2];
            if (pipe2(fds, O_CLOEXEC) < 0) { snprintf(err, errlen, "cannot make a pipe: %s", strerror(errno)); goto err; }
            mp->rfd = fds[0];
            mp->wfd = fds[1];
            fcntl(mp->wfd, F_SETFL, O_NONBLOCK);
            fcntl(mp->wfd, F_SETPIPE_SZ, 1 << 20);      /* (a test's records seldom fill 64 KB; fine if refused) */
        }
        p->sources[s].memory = &d->inputs[s];
        if (plan_set_memory_partitions(p, s, n) < 0) goto oom;
    }
    if (plan_has_keyed_state(p)) {
        char dbdir[PATH_MAX];
        snprintf(dbdir, sizeof dbdir, "%s/db", cfg->state_dir);
        if (files_mkdirs(cfg->state_dir) < 0) {
            snprintf(err, errlen, "cannot make %s: %s", cfg->state_dir, strerror(errno));
            goto err;
        }
        d->sh.state = o->state_from ? open_copy(cfg, o->state_from, dbdir, err, errlen)
                                    : state_open(dbdir, cfg->state_cache, &cfg->state_rocksdb, err, errlen);
        if (!d->sh.state) goto err;
    }
    d->sh.cfg = cfg;
    d->sh.p = p;
    d->sh.lua_dir = daemon_lua_dir();
    d->sh.version = d->version;
    d->sh.memory = &d->outs;
    if (graph_build(&d->sh, p, &d->tasks, &d->ntasks, &d->chans, &d->nchans, err, errlen) < 0) goto err;
    return d;
oom:
    snprintf(err, errlen, "out of memory");
err:
    driver_destroy(d);
    return NULL;
}

int driver_push(driver *d, int source, int partition, const mem_record *r) {
    if (source < 0 || source >= d->ninputs || partition < 0 || partition >= d->inputs[source].npart) return -1;
    return mem_queue_push(&d->inputs[source].parts[partition].q, r);
}

void driver_end(driver *d, int source, int partition) {
    if (source >= 0 && source < d->ninputs && partition >= 0 && partition < d->inputs[source].npart)
        d->inputs[source].parts[partition].ended = 1;
}

/* Steps every task in task order, each while it makes progress, until a
 * whole round makes none.  0, or -1 when a task failed. */
static int run_steps(driver *d) {
    for (;;) {
        int progress = 0;
        for (int i = 0; i < d->ntasks; i++) {
            task *t = d->tasks[i];
            for (;;) {
                step_result r = task_step(t);
                if (r == STEP_FAILED) {
                    snprintf(d->failed, sizeof d->failed, "task %s failed: %s", task_name(t), task_error(t));
                    return -1;
                }
                if (r != STEP_PROGRESS) break;
                progress = 1;
            }
        }
        if (!progress) return 0;
    }
}

int driver_run(driver *d) {
    if (d->failed[0]) return -1;
    int rc = run_steps(d);
    for (int i = 0; rc == 0 && i < d->ntasks; i++)
        if (task_tick(d->tasks[i]) < 0) {
            snprintf(d->failed, sizeof d->failed, "task %s failed: %s", task_name(d->tasks[i]), task_error(d->tasks[i]));
            rc = -1;
        }
    if (rc == 0) rc = run_steps(d);
    return rc;
}

const char *driver_failed(const driver *d) { return d->failed; }
mem_outputs *driver_outputs(driver *d) { return &d->outs; }
const plan *driver_plan(const driver *d) { return d->plans[d->nplans - 1]; }
const config *driver_cfg(const driver *d) { return d->cfg; }
state_db *driver_state(driver *d) { return d->sh.state; }
int driver_version(const driver *d) { return d->version; }

void driver_flush_dead_letters(driver *d) {
    pthread_mutex_lock(&d->sh.dead_letter_mu);
    if (d->sh.dead_letter) fflush(d->sh.dead_letter);
    pthread_mutex_unlock(&d->sh.dead_letter_mu);
}

mem_partition *driver_partition(driver *d, int source, int partition) {
    if (source < 0 || source >= d->ninputs || partition < 0 || partition >= d->inputs[source].npart) return NULL;
    return &d->inputs[source].parts[partition];
}

int driver_npartitions(const driver *d, int source) {
    return source >= 0 && source < d->ninputs ? d->inputs[source].npart : 0;
}

int driver_reload(driver *d, char *script, int allow, char *err, size_t errlen) {
    plan **plans = realloc(d->plans, sizeof *plans * (d->nplans + 1));
    task_vm **tvs = calloc(d->ntasks ? d->ntasks : 1, sizeof *tvs);
    if (plans) d->plans = plans;
    if (!plans || !tvs) { free(tvs); free(script); snprintf(err, errlen, "out of memory"); return -1; }
    char *before = d->cfg->pipeline;
    d->cfg->pipeline = script;
    plan *p = reload_prepare(d->cfg, daemon_lua_dir(), driver_plan(d), d->tasks, d->ntasks, d->version + 1, allow, tvs,
                             err, errlen);
    if (!p) {
        d->cfg->pipeline = before;
        free(script);
        free(tvs);
        return -1;
    }
    free(before);
    d->plans[d->nplans++] = p;
    d->version++;
    /* downstream first, as the daemon offers them (reload.c) */
    for (int i = d->ntasks - 1; i >= 0; i--) {
        if (task_status(d->tasks[i]) == TASK_RUNNING) task_offer(d->tasks[i], tvs[i]);
        else task_vm_destroy(tvs[i]);
    }
    free(tvs);
    driver_run(d);
    return 0;
}
task **driver_tasks(driver *d, int *n) { *n = d->ntasks; return d->tasks; }

long driver_errors(driver *d) {
    long n = 0;
    for (int i = 0; i < d->ntasks; i++) {
        task_counters c;
        task_get_counters(d->tasks[i], &c);
        n += c.errors;
    }
    return n;
}
