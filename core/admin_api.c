#include "admin_api.h"
#include "daemon_state.h"
#include "dryrun.h"
#include "clock.h"
#include "kafka.h"
#include "keygroup.h"
#include "log.h"
#include "probation.h"
#include "metrics.h"
#include "shuffle.h"
#include "source.h"
#include "source_kafka.h"
#include "state.h"
#include "versions.h"
#include "vm.h"
#include "window.h"
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SAVEPOINT_TIMEOUT_MS 60000

/* ---- /state, /explain ------------------------------------------------------ */

static json_t *error_json(int *http_status, int code, const char *msg) {
    *http_status = code;
    return json_pack("{s:s}", "error", msg);
}

/* ---- shuffle = "kafka": who owns what ------------------------------------- */

#define MEMBERS_TIMEOUT_MS 500   /* describing the group blocks the event loop this long at most */

/* The keyed stage that runs operator op (of plan p), or -1. */
static int keyed_stage_of(const plan *p, const node *op) {
    for (int s = 0; s < p->nstages; s++)
        if (p->stages[s].keyed && op->in_stage && op->in_stage[s]) return s;
    return -1;
}

/* The member of the group description `group` (kgroup_members) that holds
 * partition `part` of topic, or NULL.  Borrowed from group. */
static json_t *holder_of(json_t *group, const char *topic, int part) {
    json_t *ms = json_object_get(group, "members"), *m;
    size_t i;
    json_array_foreach(ms, i, m) {
        json_t *ps = json_object_get(json_object_get(m, "partitions"), topic), *pv;
        size_t j;
        json_array_foreach(ps, j, pv) if (json_integer_value(pv) == part) return m;
    }
    return NULL;
}

/* Whether keyed task `index` of stage s reads its repartition partition
 * here: HERE_READY (its state restored), HERE_RESTORING, HERE_NOT, or
 * HERE_UNKNOWN when its task has no partition of its own to say so. */
enum { HERE_UNKNOWN = -1, HERE_NOT = 0, HERE_READY = 1, HERE_RESTORING = 2 };
static int reads_here(const daemon_state *d, int s, int index) {
    int first = 0;
    for (int k = 0; k < s; k++) first += d->p->stages[k].ntasks;
    if (first + index >= d->ntasks || task_index(d->tasks[first + index]) != index) return HERE_UNKNOWN;
    task *t = d->tasks[first + index];
    source *src = task_src(t);
    if (!src) return HERE_UNKNOWN;
    if (source_state(src) != SOURCE_READING) return HERE_NOT;
    return task_shuffle_ready(t) ? HERE_READY : HERE_RESTORING;
}

/* GET /state/UID/KEY under shuffle = "kafka": the key's keyed task may run
 * on another instance.  NULL when this instance answers; else the reply (a
 * 307 to the owner's admin address, or a 503 while no one owns it). */
static json_t *route_key(daemon_state *d, const plan *p, const node *op, const char *key, size_t klen,
                         const char *path, const char *query, int *http_status, struct evkeyvalq *headers) {
    int s = keyed_stage_of(p, op);
    if (s < 0 || !d->group) return NULL;
    const stage *st = &p->stages[s];
    uint32_t kg = keygroup_of(key, klen, d->cfg->max_parallelism);
    int index = keygroup_task(kg, d->cfg->max_parallelism, st->ntasks);
    char topic[512], why[1024], err[512];
    shuffle_repartition_topic(d->cfg, p->nodes[st->roots[0] - 1].uid, topic, sizeof topic);
    int here = d->workers_running ? reads_here(d, s, index) : HERE_NOT;
    if (here == HERE_READY) return NULL;
    json_t *group = here == HERE_RESTORING ? NULL : kgroup_members(d->group, MEMBERS_TIMEOUT_MS, err, sizeof err);
    json_t *out = NULL;
    char label[300];
    snprintf(label, sizeof label, "%s/%d", st->name, index);
    json_t *owner = group ? holder_of(group, topic, index) : NULL;
    const char *inst = json_string_value(json_object_get(owner, "instance"));
    const char *admin = json_string_value(json_object_get(owner, "admin"));
    if (here == HERE_RESTORING || (owner && inst && strcmp(inst, d->instance) == 0)) {
        if (here == HERE_UNKNOWN && d->workers_running) goto local;     /* (the group's word is all there is) */
        snprintf(why, sizeof why, "keyed task %s (key group %u, %s/%d) is this instance's but %s", label, kg,
                 topic, index, here == HERE_RESTORING ? "is restoring its state from the changelog"
                                                      : "does not read yet (starting, or just assigned)");
    } else if (owner && admin) {
        char loc[2048];
        snprintf(loc, sizeof loc, "http://%s%s%s%s", admin, path, query && *query ? "?" : "", query ? query : "");
        evhttp_add_header(headers, "Location", loc);
        *http_status = 307;
        out = json_pack("{s:s, s:{s:O, s:s, s:O}, s:s, s:I}", "location", loc, "owner", "instance",
                        json_object_get(owner, "instance"), "admin", admin, "host", json_object_get(owner, "host"),
                        "task", label, "key_group", (json_int_t)kg);
        goto done;
    } else if (owner) {
        snprintf(why, sizeof why, "keyed task %s (key group %u, %s/%d) runs on member %s, which publishes no "
                 "admin address (admin = false, or not eddy)", label, kg, topic, index,
                 json_string_value(json_object_get(owner, "client_id")));
        out = error_json(http_status, 502, why);
        goto done;
    } else if (!group) {
        snprintf(why, sizeof why, "who owns keyed task %s is not known: %s", label, err);
    } else {
        const char *gs = json_string_value(json_object_get(group, "state"));
        snprintf(why, sizeof why, "no instance holds keyed task %s (key group %u, %s/%d) now: the group '%s' is "
                 "between owners (its state: %s)", label, kg, topic, index, d->cfg->name, gs && *gs ? gs : "unknown");
    }
    evhttp_add_header(headers, "Retry-After", "1");
    out = error_json(http_status, 503, why);
    goto done;
local:
    out = NULL;
done:
    json_decref(group);
    return out;
}

/* /status "group" under shuffle = "kafka": the group's instances and what
 * each owns (input partitions; keyed tasks "stage/index", from their
 * repartition partitions).  Owned. */
static json_t *group_status(daemon_state *d) {
    char err[512];
    json_t *out = json_pack("{s:s}", "instance", d->instance);
    json_t *group = kgroup_members(d->group, MEMBERS_TIMEOUT_MS, err, sizeof err);
    if (!group) {
        json_object_set_new(out, "error", json_string(err));
        return out;
    }
    const plan *p = d->p;
    json_object_set(out, "state", json_object_get(group, "state"));
    json_t *insts = json_array(), *m;
    size_t i;
    json_array_foreach(json_object_get(group, "members"), i, m) {
        const char *inst = json_string_value(json_object_get(m, "instance"));
        json_t *o = json_pack("{s:O, s:O, s:O, s:b}", "instance", json_object_get(m, "instance"), "admin",
                              json_object_get(m, "admin"), "host", json_object_get(m, "host"), "self",
                              inst && strcmp(inst, d->instance) == 0);
        if (!inst) json_object_set(o, "client_id", json_object_get(m, "client_id"));
        json_t *inputs = json_array(), *keyed = json_array(), *ps;
        const char *topic;
        json_object_foreach(json_object_get(m, "partitions"), topic, ps) {
            int s = -1;
            for (int k = 0; k < p->nstages && s < 0; k++) {
                if (!p->stages[k].keyed) continue;
                char rt[512];
                shuffle_repartition_topic(d->cfg, p->nodes[p->stages[k].roots[0] - 1].uid, rt, sizeof rt);
                if (strcmp(rt, topic) == 0) s = k;
            }
            size_t j;
            json_t *pv;
            json_array_foreach(ps, j, pv) {
                char label[600];
                if (s >= 0) snprintf(label, sizeof label, "%s/%d", p->stages[s].name, (int)json_integer_value(pv));
                else snprintf(label, sizeof label, "%s/%d", topic, (int)json_integer_value(pv));
                json_array_append_new(s >= 0 ? keyed : inputs, json_string(label));
            }
        }
        json_object_set_new(o, "inputs", inputs);
        json_object_set_new(o, "keyed_tasks", keyed);
        json_array_append_new(insts, o);
    }
    json_object_set_new(out, "instances", insts);
    json_decref(group);
    return out;
}

/* GET /state/UID/KEY: the named states of one key; GET /state/UID?prefix=&limit=:
 * keys and their states.  Read from committed batches only. */
static json_t *h_state(daemon_state *d, const char *path, const char *query, int *http_status,
                       struct evkeyvalq *headers) {
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
        if (d->cfg->shuffle == SHUFFLE_KAFKA && op->kind != NODE_GLOBAL_TABLE &&
            (out = route_key(d, p, op, key, klen, path, query, http_status, headers))) {
            free(key);
            goto done;
        }
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

/* shuffle = "kafka": the instance that owns the input partition holding a
 * window back (its "file" is "topic/partition"), from the group. */
static void explain_owners(daemon_state *d, json_t *tasks) {
    char err[512];
    json_t *group = kgroup_members(d->group, MEMBERS_TIMEOUT_MS, err, sizeof err), *t;
    size_t i;
    json_array_foreach(tasks, i, t) {
        json_t *held = json_object_get(t, "held_back_by");
        const char *label = json_string_value(json_object_get(held, "file"));
        const char *slash = label ? strrchr(label, '/') : NULL;
        if (!slash) continue;
        char topic[512];
        snprintf(topic, sizeof topic, "%.*s", (int)(slash - label), label);
        json_t *m = group ? holder_of(group, topic, atoi(slash + 1)) : NULL;
        json_object_set_new(held, "owner", m ? json_pack("{s:O, s:O}", "instance", json_object_get(m, "instance"),
                                                         "admin", json_object_get(m, "admin"))
                                             : json_null());
    }
    json_decref(group);
}

/* GET /explain/UID: why the oldest open window of operator UID has not
 * fired, per task that runs it. */
static json_t *h_prefixed(void *ud, const char *path, const char *query, int *http_status,
                          struct evkeyvalq *headers) {
    daemon_state *d = ud;
    if (strncmp(path, "/state/", 7) == 0) return h_state(d, path, query, http_status, headers);
    if (strncmp(path, "/reload/dry-run/", 16) == 0) return dryrun_get(d, path, http_status);
    if (strncmp(path, "/explain/", 9) != 0) { *http_status = 404; return NULL; }
    char *uid = evhttp_uridecode(path + 9, 0, NULL);
    json_t *tasks = json_array();
    int found = 0;
    for (int i = 0; uid && i < d->ntasks; i++) found += task_explain_json(d->tasks[i], uid, tasks);
    if (!found) {
        json_decref(tasks);
        *http_status = 404;
        json_t *e = json_pack("{s:s}", "error", "no window operator with that uid runs here");
        free(uid);
        return e;
    }
    if (d->cfg->shuffle == SHUFFLE_KAFKA && d->group) explain_owners(d, tasks);
    json_t *out = json_pack("{s:s, s:o}", "uid", uid, "tasks", tasks);
    free(uid);
    return out;
}

/* POST /reload[?allow_dropped_state=1][&to=VERSION] */
static json_t *h_reload(void *ud, const char *query, int *http_status) {
    daemon_state *d = ud;
    if (query && strstr(query, "dry_run=1")) return dryrun_request(d, query, http_status);   /* dryrun.c */
    json_t *canary_answer;
    if (canary_http(d, query, http_status, &canary_answer)) return canary_answer;   /* canary.c */
    char msg[2048], trigger[300];
    int force = query && strstr(query, "allow_dropped_state=1") != NULL;
    int before = d->version;
    struct evkeyvalq q;
    q.tqh_first = NULL;
    q.tqh_last = &q.tqh_first;
    if (query && evhttp_parse_query_str(query, &q) < 0) {
        *http_status = 400;
        return json_pack("{s:s, s:i}", "error", "a malformed query", "version", d->version);
    }
    const char *to = evhttp_find_header(&q, "to");
    snprintf(trigger, sizeof trigger, "POST /reload%s%.200s", to ? " --to " : "", to ? to : "");
    *http_status = reload_request_to(d, trigger, to, force, msg, sizeof msg);
    evhttp_clear_headers(&q);
    if (*http_status == 200)
        return json_pack("{s:i, s:s, s:b}", "version", atoi(msg), "sha256", d->plans[d->nplans - 1]->hash, "unchanged",
                         d->version == before);
    return json_pack("{s:s, s:i}", "error", msg, "version", d->version);
}

/* /status pipeline.versions: the kept versions, oldest first.  Owned. */
static json_t *versions_json(const daemon_state *d) {
    version_info *v;
    char err[512];
    int n = versions_list(d->cfg->state_dir, &v, err, sizeof err);
    json_t *out = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(out, json_pack("{s:i, s:s, s:I}", "version", v[i].version, "sha256", v[i].sha256,
                                             "loaded_at", (json_int_t)v[i].loaded_at_ms));
    free(v);
    return out;
}

/* The savepoint is the final state: stopping is set before the tasks held
 * at its barrier go on, so the sources end without reading further. */
static void stop_after_savepoint(evutil_socket_t fd, short what, void *arg) {
    (void)fd; (void)what;
    daemon_state *d = arg;
    daemon_stop_gracefully(d, "savepoint --stop");
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

static int h_health(void *ud, char *reason, size_t len) {
    daemon_state *d = ud;
    if (d->waiting[0]) { snprintf(reason, len, "%s", d->waiting); return 0; }
    if (d->group && kgroup_down(d->group, reason, len)) return 0;
    for (int i = 0; i < d->ntasks; i++)
        if (task_status(d->tasks[i]) == TASK_FAILED) {
            snprintf(reason, len, "task %s failed: %s", task_name(d->tasks[i]), task_error(d->tasks[i]));
            return 0;
        }
    return 1;
}

static json_t *h_status(void *ud) {
    daemon_state *d = ud;
    json_t *tasks = json_array();
    for (int i = 0; i < d->ntasks; i++) json_array_append_new(tasks, task_status_json(d->tasks[i]));
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
    json_object_set_new(json_object_get(j, "pipeline"), "versions", versions_json(d));
    json_object_set_new(json_object_get(j, "pipeline"), "canary", canary_status_json(d));
    json_object_set_new(json_object_get(j, "pipeline"), "last_rollback", probation_last_json(d));
    json_object_set_new(json_object_get(j, "pipeline"), "probation", probation_json(d));
    json_t *mig = json_object();                   /* process uids still migrating: key groups left */
    for (int i = 0; d->sh.state && i < cur->nnodes; i++) {
        const node *nd = &cur->nodes[i];
        int left = nd->kind == NODE_PROCESS && nd->uid ? reload_migrating(d->sh.state, nd->uid) : 0;
        if (left > 0) json_object_set_new(mig, nd->uid, json_integer(left));
    }
    json_object_set_new(json_object_get(j, "pipeline"), "migrating", mig);
    if (d->waiting[0]) json_object_set_new(j, "waiting_for", json_string(d->waiting));
    if (d->group) json_object_set_new(j, "kafka", kgroup_status(d->group));
    if (d->group && d->cfg->shuffle == SHUFFLE_KAFKA) json_object_set_new(j, "group", group_status(d));
    return j;
}

/* Per task and version: records, errors, dead letters; per task: VM memory. */
typedef struct version_sample { struct evbuffer *out; const char *name; int which; } version_sample;

static void version_counter_sample(void *ud, task *t, int version, long in, long out, long errors, long skipped,
                                   long dead_letters) {
    version_sample *s = ud;
    long which[] = {in, out, errors, skipped, dead_letters};
    char v[16];
    snprintf(v, sizeof v, "%d", version);
    const char *labels[] = {"task", task_name(t), "version", v, NULL};
    metrics_sample(s->out, s->name, labels, (double)which[s->which]);
}

static void task_metrics(const daemon_state *d, struct evbuffer *out) {
    struct { const char *name, *help; int which; } per_task[] = {
        {"eddy_records_in_total", "Records a task took in, per version it ran.", 0},
        {"eddy_records_out_total", "Records a task sent to keyed stages, per version it ran.", 1},
        {"eddy_errors_total", "Records whose processing raised an error, per task and version.", 2},
        {"eddy_records_skipped_total", "Records skipped by on_error = \"skip\", per task and version.", 3},
        {"eddy_dead_letters_total", "Records written to the dead-letter file, per task and version.", 4},
        {"eddy_vm_memory_bytes", "Bytes held by a task's Lua VM.", 5},
    };
    for (size_t m = 0; m < sizeof per_task / sizeof per_task[0]; m++) {
        metrics_family(out, per_task[m].name, per_task[m].which == 5 ? "gauge" : "counter", per_task[m].help);
        for (int i = 0; i < d->ntasks; i++) {
            if (per_task[m].which < 5) {
                version_sample vs = { out, per_task[m].name, per_task[m].which };
                task_version_counters(d->tasks[i], version_counter_sample, &vs);
                continue;
            }
            task_counters c;
            task_get_counters(d->tasks[i], &c);
            const char *labels[] = {"task", task_name(d->tasks[i]), NULL};
            metrics_sample(out, per_task[m].name, labels, (double)c.vm_memory);
        }
        if (per_task[m].which == 4) kafka_metrics_dead_letters(d->sh.kafka, out);   /* {sink}: refused after retries */
    }
}

/* Per operator and channel: records, queues, windows, watermark lag. */
static void operator_metrics(const daemon_state *d, struct evbuffer *out) {
    for (int dir = 0; dir < 2; dir++) {
        const char *name = dir == 0 ? "eddy_operator_records_in_total" : "eddy_operator_records_out_total";
        metrics_family(out, name, "counter", dir == 0 ? "Records into an operator, per task." : "Records out of an operator, per task.");
        for (int i = 0; i < d->ntasks; i++) task_operator_samples(d->tasks[i], out, name, dir);
    }
    metrics_family(out, "eddy_channel_queue_depth", "gauge", "Batches waiting in a channel between two tasks.");
    for (int c = 0; c < d->nchans; c++) {
        channel *ch = d->chans[c];
        const char *labels[] = {"from", task_name(ch->producer), "to", task_name(ch->consumer), NULL};
        metrics_sample(out, "eddy_channel_queue_depth", labels, channel_depth(ch));
    }
    metrics_family(out, "eddy_late_records_dropped_total", "counter",
                   "Records too late for every window of an operator, with no side output to take them.");
    for (int i = 0; i < d->ntasks; i++) task_window_samples(d->tasks[i], out, "eddy_late_records_dropped_total", 0);
    metrics_family(out, "eddy_open_windows", "gauge", "Windows holding state, per operator and task.");
    for (int i = 0; i < d->ntasks; i++) task_window_samples(d->tasks[i], out, "eddy_open_windows", 1);
    struct { const char *name, *type, *help; } restore[] = {
        {"eddy_restore_records_total", "counter", "Changelog records a keyed task's last restore applied (shuffle = \"kafka\")."},
        {"eddy_restore_bytes_total", "counter", "Changelog bytes a keyed task's last restore applied."},
        {"eddy_restore_remaining_records", "gauge", "Changelog records a restore in progress has left (estimate)."},
        {"eddy_restore_records_per_second", "gauge", "The rate of a keyed task's last restore."},
        {"eddy_standby_records_total", "counter", "Changelog records a standby copy of a keyed task applied."},
    };
    for (int m = 0; m < 5 && d->cfg->shuffle == SHUFFLE_KAFKA; m++) {
        metrics_family(out, restore[m].name, restore[m].type, restore[m].help);
        for (int i = 0; i < d->ntasks; i++) task_restore_samples(d->tasks[i], out, restore[m].name, m);
    }
    metrics_family(out, "eddy_watermark_lag_ms", "gauge",
                   "Wall-clock time minus a task's event-time watermark (tasks that have one).");
    int64_t now = clock_wall_ms();
    for (int i = 0; i < d->ntasks; i++) {
        task_counters c;
        task_get_counters(d->tasks[i], &c);
        int64_t wm = c.watermark;
        if (wm == TS_NONE || wm >= ((int64_t)1 << 62)) continue;
        const char *labels[] = {"task", task_name(d->tasks[i]), NULL};
        metrics_sample(out, "eddy_watermark_lag_ms", labels, (double)(now - wm));
    }
}

/* Kafka sinks: messages and transactions. */
static void kafka_sink_metrics(const daemon_state *d, struct evbuffer *out) {
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
}

/* Reloads and the version each task runs. */
static void reload_metrics(const daemon_state *d, struct evbuffer *out) {
    metrics_family(out, "eddy_reloads_total", "counter", "Reloads of the pipeline, by result.");
    const char *ok_l[] = {"result", "ok", NULL}, *err_l[] = {"result", "error", NULL};
    metrics_sample(out, "eddy_reloads_total", ok_l, (double)d->reloads_ok);
    metrics_sample(out, "eddy_reloads_total", err_l, (double)d->reloads_failed);
    const char *rb_l[] = {"result", "rolled_back", NULL};
    metrics_sample(out, "eddy_reloads_total", rb_l, (double)probation_rollbacks(d));
    metrics_family(out, "eddy_pipeline_version", "gauge", "The pipeline version each task runs.");
    for (int i = 0; i < d->ntasks; i++) {
        const char *labels[] = {"task", task_name(d->tasks[i]), NULL};
        metrics_sample(out, "eddy_pipeline_version", labels, task_version(d->tasks[i]));
    }
    metrics_family(out, "eddy_reload_pause_seconds", "gauge",
                   "Last reload: time between a task's last record on the old version and its first on the new.");
    for (int i = 0; i < d->ntasks; i++) {
        task_counters c;
        task_get_counters(d->tasks[i], &c);
        const char *labels[] = {"task", task_name(d->tasks[i]), NULL};
        metrics_sample(out, "eddy_reload_pause_seconds", labels, (double)c.last_pause_us / 1e6);
    }
}

/* Kafka sinks: bytes delivered. */
static void kafka_bytes_metrics(const daemon_state *d, struct evbuffer *out) {
    if (d->sh.kafka) {
        metrics_family(out, "eddy_kafka_bytes_out_total", "counter", "Key and value bytes Kafka sinks delivered.");
        for (int i = 0; i < kafka_nsinks(d->sh.kafka); i++) {
            kafka_sink *ks = kafka_sink_at(d->sh.kafka, i);
            const char *l[] = {"sink", kafka_sink_name(ks), NULL};
            metrics_sample(out, "eddy_kafka_bytes_out_total", l, (double)kafka_sink_bytes(ks));
        }
    }
}

/* Keyed state: RocksDB's keys, bytes and memory. */
static void state_metrics(const daemon_state *d, struct evbuffer *out) {
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
}

/* Tasks by state. */
static void task_state_metrics(const daemon_state *d, struct evbuffer *out) {
    metrics_family(out, "eddy_tasks", "gauge", "Tasks by state.");
    int counts[3] = {0, 0, 0};
    for (int i = 0; i < d->ntasks; i++) counts[task_status(d->tasks[i])]++;
    for (int s = 0; s < 3; s++) {
        const char *labels[] = {"state", task_status_name(s), NULL};
        metrics_sample(out, "eddy_tasks", labels, counts[s]);
    }
}

/* GET /metrics: every family in Prometheus text, in this order. */
static void h_metrics(void *ud, struct evbuffer *out) {
    daemon_state *d = ud;
    task_metrics(d, out);
    operator_metrics(d, out);
    kafka_sink_metrics(d, out);
    if (d->ckpt) ckpt_metrics(d->ckpt, out);
    reload_metrics(d, out);
    kafka_bytes_metrics(d, out);
    if (d->group) kgroup_metrics(d->group, out);
    state_metrics(d, out);
    task_state_metrics(d, out);
}

/* The admin HTTP server, when the config has one.  0, or -1 with err. */
int admin_api_start(daemon_state *d, char *err, size_t errlen) {
    if (!d->cfg->admin_enabled) return 0;
    admin_handlers h = { .ud = d, .health = h_health, .status = h_status, .metrics = h_metrics,
                         .reload = h_reload, .savepoint = h_savepoint, .get_prefixed = h_prefixed,
                         .token = d->cfg->admin_token, .hosts = d->cfg->admin_hosts };
    char addr_file[PATH_MAX];
    snprintf(addr_file, sizeof addr_file, "%s/admin.addr", d->cfg->state_dir);
    d->adm = admin_create(d->base, d->cfg->admin_listen, addr_file, &h, err, errlen);
    return d->adm ? 0 : -1;
}
