#include "daemon.h"
#include "follow.h"
#include "shuffle.h"
#include "daemon_state.h"
#include "dryrun.h"
#include "probation.h"
#include "admin_api.h"
#include "recovery.h"
#include "restart.h"
#include "watchdog.h"
#include "admin.h"
#include "config.h"
#include "files.h"
#include "graph.h"
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
#include "kafka_admin.h"
#include "shuffle.h"
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
#include "source.h"

#define POLL_TICK_MS 10          /* followed files and stdin are read again this often */

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
int daemon_looks_like_pipeline(const char *path) {
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
    config *cfg = daemon_looks_like_pipeline(path) ? config_default_for_pipeline(path, err, sizeof err)
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

/* standby = N: which keyed tasks owned elsewhere this instance keeps warm
 * copies of, from the group's members (about once a second). */
static void plan_standby(daemon_state *d) {
    char err[512];
    json_t *members = kgroup_members(d->group, 500, err, sizeof err);
    if (!members) return;                        /* (asked again next time) */
    for (int i = 0; i < d->ntasks; i++) {
        task *t = d->tasks[i];
        if (!task_is_remote_keyed(t)) continue;
        const stage *st = &d->p->stages[task_stage(t)];
        task_set_standby(t, shuffle_standby_of(members, d->instance, shuffle_stage_topic(d->p, st), task_index(t),
                                               d->cfg->standby));
    }
    json_decref(members);
}

/* Wakes the tasks that read live input (followed files, Kafka, ticks): on
 * every poll tick, and as soon as a followed file changes (follow.c). */
static void wake_live(void *arg) {
    daemon_state *d = arg;
    if (!d->workers_running) return;
    for (int i = 0; i < d->ntasks; i++)
        if (task_pollable(d->tasks[i]) && task_status(d->tasks[i]) == TASK_RUNNING) sched_wake(d->tasks[i]);
}

static void on_poll(evutil_socket_t fd, short what, void *arg) {
    (void)fd; (void)what;
    daemon_state *d = arg;
    if (d->sh.kafka) kafka_poll(d->sh.kafka);      /* delivery reports */
    if (d->sh.kafka && kafka_failed(d->sh.kafka) && !atomic_load(&d->sh.aborting)) {
        /* on_error = "fail" and Kafka refused a message: stop now (exit 1);
         * but a stop under way whose checkpoint the group refused as it
         * rebalanced (instances leaving) ends as finish_run says: exit 0 */
        d->stop_refused = atomic_load(&d->sh.stopping) && kafka_txn_rebalanced(d->sh.kafka);
        if (d->stop_refused) log_warn("%s: the stop goes on without it", kafka_failed(d->sh.kafka));
        else log_error("%s: stopping", kafka_failed(d->sh.kafka));
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
            if (task_src(d->tasks[i])) source_pause(task_src(d->tasks[i]), task_outputs_full(d->tasks[i]));
    }
    wake_live(d);
    if (d->cfg->standby > 0 && d->group && d->workers_running && ++d->standby_ticks * POLL_TICK_MS >= 1000) {
        d->standby_ticks = 0;
        plan_standby(d);
    }
}

/* ---- lifecycle --------------------------------------------------------- */

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
    if (!d->workers_running || atomic_load(&d->sh.aborting) || reload_in_progress(d) || ckpt_running(d->ckpt) ||
        probation_holds_checkpoints(d))
        return;
    if (ckpt_begin(d->ckpt)) {
        struct timeval pt = { 0, 2000 };
        event_add(d->ckpt_poll_ev, &pt);
    }
}

static void on_task_done(void *ud, task *t) {
    daemon_state *d = ud;
    if (task_status(t) == TASK_FAILED && atomic_fetch_add(&d->failed, 1) == 0)
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

void daemon_stop_gracefully(daemon_state *d, const char *why) {
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
        reload_request(d, "SIGHUP", 0, msg, sizeof msg);
        return;
    }
    daemon_stop_gracefully(d, sig == SIGTERM ? "SIGTERM" : "SIGINT");
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
    if (source_task >= 0 && source_task < d->ntasks && task_src(d->tasks[source_task]))
        source_acked(task_src(d->tasks[source_task]), marker, position);
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
    for (int i = 0; i < d->ntasks; i++)
        if (task_src(d->tasks[i]) && source_kafka_attach(task_src(d->tasks[i]), d->group, d->p, task_id(d->tasks[i]), err, errlen) < 0)
            return -1;
    return 0;
}

/* ---- building ---------------------------------------------------------- */

void daemon_free(daemon_state *d) {
    canary_free(d);
    if (d->adm) admin_destroy(d->adm);
    dryrun_shutdown();                             /* a dry run still running stops; its folder goes */
    reload_watch_destroy(d->watch);
    follow_close(d->follow);
    probation_free(d);
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
    watchdog_free_poison(d->sh.poison);
    free(d->wd_marks);
    for (int i = 0; i < d->nplans; i++) plan_destroy(d->plans[i]);
    free(d->plans);
    if (!d->nplans) plan_destroy(d->p);
    config_destroy(d->cfg);
}

/* ---- running ------------------------------------------------------------- */

/* Each step of daemon_run returns 0 to go on, or -1 with *code the exit
 * code (its message printed). */

/* The config, the plan, state.dir (created and locked), the dead-letter file. */
static int open_config(daemon_state *d, const char *config_path, int *code) {
    char err[4096];
    if (daemon_looks_like_pipeline(config_path)) {
        fprintf(stderr, "eddy: %s is a pipeline script; eddy run takes a config file that names it "
                "(return { pipeline = \"%s\" }); eddy check takes either\n", config_path, config_path);
        return -1;
    }
    d->cfg = config_load(config_path, err, sizeof err);
    if (!d->cfg) { fprintf(stderr, "eddy: %s\n", err); return -1; }
    log_setup(d->cfg->log_level, d->cfg->log_format == LOGFMT_JSON);
    d->p = probation_plan_at_start(d, err, sizeof err);   /* the files, or the version a rollback went back to */
    if (!d->p) { fprintf(stderr, "eddy: %s\n", err); return -1; }
    if (files_mkdirs(d->cfg->state_dir) < 0) {
        fprintf(stderr, "eddy: state.dir: cannot create %s: %s\n", d->cfg->state_dir, strerror(errno));
        return -1;
    }
    if (files_lock_dir(d->cfg->state_dir, err, sizeof err) < 0) {
        fprintf(stderr, "eddy: %s\n", err);
        *code = 1;
        return -1;
    }
    if (d->cfg->on_error == ON_ERROR_DEAD_LETTER && !d->cfg->dead_letter_kafka) {
        char dlw[PATH_MAX];
        snprintf(dlw, sizeof dlw, "%s", d->cfg->dead_letter_file);
        if (files_mkdirs(dirname(dlw)) < 0 || !(d->sh.dead_letter = fopen(d->cfg->dead_letter_file, "a"))) {
            fprintf(stderr, "eddy: dead_letter.file: cannot open %s: %s\n", d->cfg->dead_letter_file, strerror(errno));
            return -1;
        }
    }
    return 0;
}

/* The Kafka client, when the pipeline or the config uses Kafka. */
static int open_kafka(daemon_state *d, int *kafka_sinks_out, int *code) {
    char err[4096];
    (void)code;
    int kafka_sinks = 0, kafka_sources = plan_has_kafka_sources(d->p);
    for (int i = 0; i < d->p->nnodes; i++)
        if (d->p->nodes[i].kind == NODE_SINK && node_opt(&d->p->nodes[i], "kafka")) kafka_sinks++;
    *kafka_sinks_out = kafka_sinks;
    int kafka_dlq = d->cfg->dead_letter_kafka != NULL;
    if (kafka_sinks || kafka_sources || kafka_dlq || d->cfg->kafka_embedded || d->cfg->kafka.n > 0) {
        if ((kafka_sinks || kafka_sources || kafka_dlq) && !d->cfg->kafka_embedded &&
            !opt_find(&d->cfg->kafka, "bootstrap.servers")) {
            fprintf(stderr, "eddy: kafka: the pipeline %s Kafka: set kafka[\"bootstrap.servers\"] or "
                    "kafka.embedded in the config\n", kafka_sources ? "reads from" : kafka_sinks ? "writes to"
                    : "sends dead letters to (dead_letter.kafka)");
            return -1;
        }
        d->sh.kafka = kafka_create(d->cfg, err, sizeof err);
        if (!d->sh.kafka) { fprintf(stderr, "eddy: %s\n", err); return -1; }
        /* exactly_once: where each transaction's checkpoint id goes, chosen
         * from the plan once, for the commits and for recovery alike */
        for (int s = d->p->nstages - 1; s >= 0; s--)     /* no Kafka sink: the first repartition topic */
            if (shuffle_stage_topic(d->p, &d->p->stages[s]))
                kafka_txn_set_topic(d->sh.kafka, shuffle_stage_topic(d->p, &d->p->stages[s]));
        for (int i = 0; i < d->p->nnodes; i++)
            if (d->p->nodes[i].kind == NODE_SINK && node_opt(&d->p->nodes[i], "kafka")) {
                kafka_txn_set_topic(d->sh.kafka, node_opt(&d->p->nodes[i], "kafka"));
                break;
            }
    }
    return 0;
}

/* Keyed state, the poison record, what the tasks share, the Kafka consumer. */
static int open_state(daemon_state *d, int *code) {
    char err[4096];
    if (plan_has_keyed_state(d->p)) {
        char dbdir[PATH_MAX];
        snprintf(dbdir, sizeof dbdir, "%s/db", d->cfg->state_dir);
        d->sh.state = state_open(dbdir, d->cfg->state_cache, &d->cfg->state_rocksdb, err, sizeof err);
        if (!d->sh.state) {
            fprintf(stderr, "eddy: %s\n", err);
            *code = strncmp(err, "state.rocksdb.", 14) == 0 ? 2 : 1;     /* a bad option is the config's fault */
            return -1;
        }
    }
    recovery_mark_running(d);
    snprintf(d->poison_path, sizeof d->poison_path, "%s/poison.json", d->cfg->state_dir);
    watchdog_load_poison(d);
    crash_install(d->poison_path);
    d->sh.cfg = d->cfg;
    d->sh.p = d->p;
    d->sh.lua_dir = daemon_lua_dir();
    d->sh.version = 1;
    d->version = 1;
    d->loaded_at_ms = clock_wall_ms();
    d->plans = malloc(sizeof *d->plans);
    if (!d->plans) return -1;
    d->plans[d->nplans++] = d->p;
    reload_keep_first(d);                 /* state.dir/versions: this run's versions, for reload --to */
    vm_global_init();
    if (d->cfg->shuffle == SHUFFLE_KAFKA && shuffle_instance_id(d->cfg->state_dir, d->instance, err, sizeof err) < 0) {
        fprintf(stderr, "eddy: %s\n", err);
        return -1;
    }
    return 0;
}

/* The consumer of the Kafka sources, once the admin server listens: under
 * shuffle = "kafka" its client.id tells the group's other members this
 * instance's id and admin address ("eddy/<instance>/<host:port>"). */
static int open_group(daemon_state *d, char *err, size_t errlen) {
    kgroup_hooks hooks = { .ud = d, .wake = on_group_wake, .serve = on_group_serve,
                           .checkpoint = d->cfg->guarantee == GUARANTEE_EXACTLY_ONCE ? on_group_checkpoint : NULL };
    char client_id[512];
    if (d->cfg->shuffle == SHUFFLE_KAFKA) {
        snprintf(client_id, sizeof client_id, "eddy/%s/%s", d->instance, d->adm ? admin_addr(d->adm) : "");
        hooks.client_id = client_id;
    }
    d->group = kgroup_create(d->sh.kafka, d->cfg, hooks, err, errlen);
    return d->group ? 0 : -1;
}

/* shuffle = "kafka": the topics Kafka carries the key_bys and the keyed
 * state through, created when missing (kafka_admin.c): each keyed stage's
 * repartition topic and each of its stateful operators' changelog, one
 * partition per keyed task.  0, or -1 with err and *code. */
static int create_shuffle_topics(daemon_state *d, char *err, size_t errlen, int *code) {
    const plan *p = d->p;
    int n = 0;
    for (int s = 0; s < p->nstages; s++) if (p->stages[s].keyed) n += 1 + p->stages[s].nnodes;
    kafka_topic_spec *specs = calloc(n ? (size_t)n : 1, sizeof *specs);
    char (*names)[512] = calloc(n ? (size_t)n : 1, sizeof *names);
    int *stage_of = calloc(n ? (size_t)n : 1, sizeof *stage_of);
    int ns = 0, rc = -1, why, at;
    *code = 1;
    if (!specs || !names || !stage_of) { snprintf(err, errlen, "out of memory"); goto err; }
    for (int s = 0; s < p->nstages; s++) {
        const stage *st = &p->stages[s];
        if (!st->keyed) continue;
        shuffle_repartition_topic(d->cfg, p->nodes[st->roots[0] - 1].uid, names[ns], sizeof names[ns]);
        specs[ns] = (kafka_topic_spec){ .name = names[ns], .partitions = st->ntasks };
        stage_of[ns++] = s;
        for (int k = 0; k < st->nnodes; k++) {
            const node *nd = &p->nodes[st->nodes[k] - 1];
            if (!node_has_state(nd) || nd->kind == NODE_GLOBAL_TABLE) continue;
            shuffle_changelog_topic(d->cfg, nd->uid, names[ns], sizeof names[ns]);
            specs[ns] = (kafka_topic_spec){ .name = names[ns], .partitions = st->ntasks, .compacted = 1 };
            stage_of[ns++] = s;
        }
    }
    if (kafka_admin_ensure_topics(d->sh.kafka, specs, ns, 10000, &why, &at, err, errlen) == 0) { rc = 0; goto err; }
    if (why == KA_PARTITIONS) {
        /* what to do: the stage's parallelism comes from the key_by's own
         * option or from the config's */
        const stage *st = &p->stages[stage_of[at]];
        const node *root = &p->nodes[st->roots[0] - 1];
        int have = specs[at].have, own = opt_find(&root->opts, "parallelism") != NULL;
        char fix[512];
        if (have > d->cfg->max_parallelism) snprintf(fix, sizeof fix, "delete the topic");
        else if (own) snprintf(fix, sizeof fix, "delete the topic or set the key_by's parallelism = %d (%s)", have,
                               root->where);
        else snprintf(fix, sizeof fix, "delete the topic or set parallelism = %d", have);
        snprintf(err, errlen, "topic %s exists with %d partitions; shuffle = \"kafka\" needs %d (one per keyed "
                 "task of stage %s, its parallelism): %s", specs[at].name, have, specs[at].partitions, st->name, fix);
    }
    if (why != KA_UNREACHABLE) *code = 2;
err:
    free(specs);
    free(names);
    free(stage_of);
    return rc;
}

/* SIGTERM, SIGINT and SIGHUP: held from the start of a run until the event
 * loop answers them, so a stop while starting (reading the config, opening
 * the state, recovering) is a graceful stop once started, not the default
 * action's exit 143.  Threads started meanwhile (librdkafka's, RocksDB's)
 * inherit the mask and never take them. */
static void stop_signals(sigset_t *set) {
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
}

static void block_stop_signals(void) {
    sigset_t stops;
    stop_signals(&stops);
    pthread_sigmask(SIG_BLOCK, &stops, NULL);
}

/* The event loop and its timers and signals. */
static int open_event_loop(daemon_state *d) {
    evthread_use_pthreads();
    d->base = event_base_new();
    if (!d->base) { log_error("cannot create the event loop"); return -1; }
    d->done_ev = event_new(d->base, -1, 0, on_done_check, d);
    struct timeval wd = { 0, WATCHDOG_TICK_MS * 1000 }, pt = { 0, POLL_TICK_MS * 1000 };
    d->wd_ev = event_new(d->base, -1, EV_PERSIST, watchdog_on_tick, d);
    d->poll_ev = event_new(d->base, -1, EV_PERSIST, on_poll, d);
    event_add(d->wd_ev, &wd);
    event_add(d->poll_ev, &pt);
    int sigs[3] = { SIGTERM, SIGINT, SIGHUP };
    for (int i = 0; i < 3; i++) {
        d->sig_ev[i] = evsignal_new(d->base, sigs[i], on_signal, d);
        event_add(d->sig_ev[i], NULL);
    }
    signal(SIGPIPE, SIG_IGN);
    /* a stop signal that came while starting was held (block_stop_signals):
     * now on_signal answers it, once the loop runs */
    sigset_t stops;
    stop_signals(&stops);
    pthread_sigmask(SIG_UNBLOCK, &stops, NULL);
    return 0;
}

/* The admin server, the tasks and channels, where the sources start. */
static int start_tasks(daemon_state *d, const run_opts *o, int *code) {
    char err[4096];
    int exactly_once = d->cfg->guarantee == GUARANTEE_EXACTLY_ONCE;
    int kafka_sources = plan_has_kafka_sources(d->p);
    /* the admin server listens (and writes admin.addr) once it can answer:
     * before waiting for Kafka (503 meanwhile), else once the tasks are built */
    if (kafka_sources && admin_api_start(d, err, sizeof err) < 0) { fprintf(stderr, "eddy: %s\n", err); *code = 2; return -1; }
    if (kafka_sources && open_group(d, err, sizeof err) < 0) { fprintf(stderr, "eddy: %s\n", err); *code = 2; return -1; }
    if (kafka_sources) {
        int w = wait_for_kafka(d, err, sizeof err);
        if (w < 0) { fprintf(stderr, "eddy: %s\n", err); *code = 2; return -1; }
        if (w > 0) { log_info("stopped before Kafka answered"); *code = 0; return -1; }
    }
    if (d->cfg->shuffle == SHUFFLE_KAFKA && create_shuffle_topics(d, err, sizeof err, code) < 0) {
        fprintf(stderr, "eddy: %s\n", err);
        return -1;
    }
    if (graph_build(&d->sh, d->p, &d->tasks, &d->ntasks, &d->chans, &d->nchans, err, sizeof err) < 0) {
        fprintf(stderr, "eddy: %s\n", err);
        *code = 2;
        return -1;
    }
    if (!kafka_sources && admin_api_start(d, err, sizeof err) < 0) { fprintf(stderr, "eddy: %s\n", err); *code = 2; return -1; }
    if (!exactly_once && !o->from_savepoint) recovery_load_positions(d);   /* (d->sh.continuing said so to the sinks) */
    if (d->group) {
        if (attach_partitions(d, err, sizeof err) < 0) { fprintf(stderr, "eddy: %s\n", err); *code = 2; return -1; }
        if (kgroup_fit_prefetch(d->group, err, sizeof err) < 0) { fprintf(stderr, "eddy: %s\n", err); *code = 2; return -1; }
        if (!exactly_once) {        /* exactly_once: checkpoints commit the offsets */
            d->sh.acks = acks_create(d->p, on_acked, d);
            if (!d->sh.acks) { log_error("out of memory"); return -1; }
            int64_t every = kgroup_commit_interval(d->group) / 2;
            d->sh.mark_interval_ms = every < 100 ? 100 : every;
        }
    }
    return 0;
}

/* Checkpoints: every interval under exactly_once (from checkpoint
 * `restore`); savepoints always. */
static int start_checkpoints(daemon_state *d, const run_opts *o, int64_t restore, int *code) {
    char err[4096];
    d->ckpt = ckpt_create(&d->sh, d->tasks, d->ntasks, d->cfg->state_dir, d->cfg->checkpoint_retain);
    if (!d->ckpt) { fprintf(stderr, "eddy: cannot create %s/checkpoints\n", d->cfg->state_dir); return -1; }
    d->ckpt_poll_ev = event_new(d->base, -1, EV_PERSIST, on_checkpoint_poll, d);
    if (o->from_savepoint && ckpt_recover_savepoint(d->ckpt, o->from_savepoint, err, sizeof err) < 0) {
        fprintf(stderr, "eddy: %s\n", err);
        *code = 2;
        return -1;
    }
    if (d->cfg->guarantee == GUARANTEE_EXACTLY_ONCE) {
        if (ckpt_recover(d->ckpt, restore, err, sizeof err) < 0) { fprintf(stderr, "eddy: %s\n", err); *code = 2; return -1; }
        /* the first transaction: fences an older producer with this id */
        if (kafka_txn_active(d->sh.kafka) && kafka_txn_begin(d->sh.kafka, 1, err, sizeof err) < 0) {
            fprintf(stderr, "eddy: %s\n", err);
            return -1;
        }
        struct timeval iv = { d->cfg->checkpoint_interval_ms / 1000, (d->cfg->checkpoint_interval_ms % 1000) * 1000 };
        d->ckpt_ev = event_new(d->base, -1, EV_PERSIST, on_checkpoint, d);
        event_add(d->ckpt_ev, &iv);
    }
    return 0;
}

/* The file watcher, the workers, the Kafka subscription. */
static int start_workers(daemon_state *d) {
    char err[4096];
    if (d->cfg->reload_watch) {
        d->watch = reload_watch_create(d->base, d->p->dir, 200, reload_on_file_changed, d, err, sizeof err);
        if (!d->watch) log_warn("%s: the pipeline will not reload on file changes", err);
    }
    d->s = sched_create(d->cfg->threads, on_task_done, d);
    for (int i = 0; i < d->ntasks; i++) task_set_sched(d->tasks[i], d->s);
    if (!d->s || sched_start(d->s, err, sizeof err) < 0) { log_error("%s", err); return -1; }
    d->workers_running = 1;
    d->workers_ran = 1;
    d->follow = follow_open(d->base, d->p, wake_live, d);
    if (d->group && kgroup_subscribe(d->group, err, sizeof err) < 0) {
        log_error("%s", err);
        atomic_store(&d->sh.aborting, 1);
        for (int i = 0; i < d->ntasks; i++) sched_wake(d->tasks[i]);
        sched_stop(d->s);
        d->workers_running = 0;
        return -1;
    }
    return 0;
}

/* Once the event loop ended: the workers stop, the sinks close (a last
 * checkpoint under exactly_once), Kafka flushes and commits.  The exit code. */
static int finish_run(daemon_state *d) {
    int code;
    int exactly_once = d->cfg->guarantee == GUARANTEE_EXACTLY_ONCE;
    atomic_store(&d->sh.aborting, atomic_load(&d->failed) ? 1 : atomic_load(&d->sh.aborting));
    if (atomic_load(&d->sh.aborting)) for (int i = 0; i < d->ntasks; i++) sched_wake(d->tasks[i]);
    sched_stop(d->s);
    d->workers_running = 0;
    int sink_failed = 0;
    for (int i = 0; i < d->ntasks; i++)
        if (task_close_sinks(d->tasks[i]) < 0) sink_failed = 1;
    /* exactly_once: a clean end commits what is left as a last checkpoint */
    if (d->ckpt && exactly_once && !sink_failed && !atomic_load(&d->failed) && !atomic_load(&d->sh.aborting) && ckpt_final(d->ckpt) < 0)
        sink_failed = 1;
    if (d->sh.kafka) {
        if (kafka_flush(d->sh.kafka, 30000) < 0) sink_failed = 1;
        if (kafka_failed(d->sh.kafka)) {
            fprintf(stderr, "eddy: %s\n", kafka_failed(d->sh.kafka));
            sink_failed = 1;
        }
    }
    if (d->group) {
        /* a clean stop drained everything read: commit it; otherwise the next
         * owner reads again from the last acknowledged positions */
        int clean = !atomic_load(&d->failed) && !sink_failed && !atomic_load(&d->sh.aborting);
        kgroup_close(d->group, clean);
    }
    if (atomic_load(&d->failed)) {
        for (int i = 0; i < d->ntasks; i++)
            if (task_status(d->tasks[i]) == TASK_FAILED) {
                fprintf(stderr, "eddy: task %s failed: %s\n", task_name(d->tasks[i]), task_error(d->tasks[i]));
                break;
            }
        code = 1;
    } else if (d->stop_refused || (sink_failed && atomic_load(&d->sh.stopping) && !atomic_load(&d->sh.aborting) &&
                                   kafka_txn_rebalanced(d->sh.kafka))) {
        /* a stop whose last (or a periodic) checkpoint the group refused (it
         * rebalanced as instances left): what that transaction held is read
         * again by the partitions' next owners, from the last committed
         * offsets */
        log_warn("stopped: the last checkpoint was refused because the group rebalanced; its records are read "
                 "again by the partitions' next owners");
        code = 0;
    } else if (sink_failed || (atomic_load(&d->sh.aborting) && !atomic_load(&d->sh.stopping))) {
        code = 1;
    } else {
        code = atomic_load(&d->sh.aborting) ? 1 : 0;
        if (!code) recovery_clean_end(d);
        if (d->sh.poison && atomic_load(&d->sh.poison->hit)) unlink(d->poison_path);
        long in = 0;
        for (int i = 0; i < d->ntasks; i++) {
            task_counters c;
            task_get_counters(d->tasks[i], &c);
            if (task_source(d->tasks[i]) >= 0) in += c.records_in;
        }
        log_info("%s: %ld records read in %.3f s", atomic_load(&d->sh.stopping) ? "stopped" : "finished", in,
                 (clock_mono_ms() - d->started_ms) / 1000.0);
    }
    return code;
}

int daemon_run(const char *config_path, const run_opts *o) {
    daemon_state d;
    memset(&d, 0, sizeof d);
    pthread_mutex_init(&d.sh.dead_letter_mu, NULL);
    pthread_mutex_init(&d.sh.stdout_mu, NULL);
    int code = 2;
    d.started_ms = clock_mono_ms();
    int kafka_sinks = 0;
    int64_t restore = 0;
    block_stop_signals();
    if (open_config(&d, config_path, &code) < 0 || recovery_prepare(&d, o, &code) < 0 ||
        open_kafka(&d, &kafka_sinks, &code) < 0 || recovery_choose(&d, o, kafka_sinks, &restore, &code) < 0 ||
        open_state(&d, &code) < 0)
        goto out;
    code = 1;
    if (open_event_loop(&d) < 0 || start_tasks(&d, o, &code) < 0 || start_checkpoints(&d, o, restore, &code) < 0 ||
        start_workers(&d) < 0)
        goto out;
    log_info("running %s: %d tasks on %d threads (pipeline %s, sha256 %.12s)", d.cfg->name, d.ntasks,
             d.cfg->threads, d.p->script, d.p->hash);
    for (int i = 0; i < d.ntasks; i++) sched_wake(d.tasks[i]);
    event_base_dispatch(d.base);
    /* the loop answers no signal any more, and freeing its signal events
     * would put back the default action: a stop signal now is held, and
     * the run ends as it is ending (not with the default action's 143) */
    block_stop_signals();
    code = finish_run(&d);
out:;
    int rc = restart_run(&d, o, code);     /* restart.*: does not return unless the exec failed */
    if (rc >= 0) return rc;
    daemon_free(&d);
    return code;
}
