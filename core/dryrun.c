/* dryrun — see dryrun.h. */
#include "dryrun.h"
#include "clock.h"
#include "daemon.h"
#include "daemon_state.h"
#include "driver.h"
#include "files.h"
#include "log.h"
#include "reload.h"
#include "replay.h"
#include "state.h"
#include "versions.h"
#include "watchdog.h"
#include <unistd.h>
#include <errno.h>
#include <glob.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- comparing one input record's outputs ------------------------------- */

static int bytes_eq(const char *a, size_t an, const char *b, size_t bn) {
    if (!a || !b) return !a && !b;
    return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

int dryrun_compare(const mem_record *old, int nold, const mem_record *nu, int nnew) {
    if (nold == 0 && nnew == 0) return DRY_SAME;
    if (nold == 0) return DRY_ADDED;
    if (nnew == 0) return DRY_REMOVED;
    if (nold != nnew) return DRY_CHANGED;
    for (int i = 0; i < nold; i++)
        if (!bytes_eq(old[i].val, old[i].vlen, nu[i].val, nu[i].vlen) ||
            !bytes_eq(old[i].key, old[i].klen, nu[i].key, nu[i].klen))
            return DRY_CHANGED;
    return DRY_SAME;
}

/* ---- a dry run ----------------------------------------------------------- */

typedef struct dry_input {
    int source, partition;
    mem_record r;           /* owned bytes */
} dry_input;

typedef struct dry_job {
    int id;
    char *cfg_path, *pipeline;      /* the daemon's config (NULL: a pipeline run with defaults) */
    char *old_text;                 /* the running version's script (a kept copy) */
    int version;                    /* the running version */
    int next_version;               /* the number the new one would get (its ctx.version) */
    int64_t limit_time_ms;          /* limits.time */
    char tmp[PATH_MAX];             /* the job's folder under state.dir: the state's snapshot */
    int has_snap;
    dry_input *in; int nin, cap;
    int nsources;
    int *parts;                     /* per source: in-memory partitions */
    int *boot;                      /* per source: a bootstrap source (fed first, then ended) */
    atomic_int cancel;
    atomic_int done;
    pthread_t th;
    pthread_t wd;                   /* the watchdog of its drivers' calls */
    pthread_mutex_t wd_mu;          /* drivers[] while the watchdog looks at them */
    driver *drivers[2];
    int stuck;                      /* a call could not be interrupted [wd_mu] */
    int status;                     /* when done: 200, or 422 with result {"error"} */
    json_t *result;
} dry_job;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static dry_job *g_job;              /* the last dry run [event loop; done and result under g_mu] */
static int g_next_id = 1;

static void job_free(dry_job *j) {
    if (!j) return;
    for (int i = 0; i < j->nin; i++) { free(j->in[i].r.key); free(j->in[i].r.val); free(j->in[i].r.hdrs); }
    free(j->in);
    free(j->parts);
    free(j->boot);
    free(j->cfg_path);
    free(j->pipeline);
    free(j->old_text);
    if (j->tmp[0]) files_rm_tree(j->tmp);
    json_decref(j->result);
    pthread_mutex_destroy(&j->wd_mu);
    free(j);
}

static char *dup_n(const char *p, size_t n) {
    char *d = malloc(n ? n : 1);
    if (d && n) memcpy(d, p, n);
    return d;
}

typedef struct copy_ctx { dry_job *j; int source; } copy_ctx;

/* replay_ring_each: one record of a ring into the job. */
static int copy_record(void *ud, const eddy_rec *rec, const char *key, const char *val, const char *hdrs) {
    copy_ctx *c = ud;
    dry_job *j = c->j;
    if (j->nin == j->cap) {
        int cap = j->cap ? j->cap * 2 : 256;
        dry_input *n = realloc(j->in, sizeof *n * cap);
        if (!n) return -1;
        j->in = n;
        j->cap = cap;
    }
    dry_input *di = &j->in[j->nin];
    memset(di, 0, sizeof *di);
    di->source = c->source;
    di->partition = rec->partition >= 0 && rec->partition < 4096 ? rec->partition : 0;
    mem_record *r = &di->r;
    r->ts = rec->ts;
    r->flags = rec->flags;
    r->offset = rec->offset;
    r->line = rec->line;
    if ((rec->key_len || (rec->flags & EDDY_REC_KEY)) && !(r->key = dup_n(key, rec->key_len))) return -1;
    r->klen = rec->key_len;
    if (!(r->val = dup_n(val, rec->val_len))) { free(r->key); return -1; }
    r->vlen = rec->val_len;
    if (hdrs && !(r->hdrs = dup_n(hdrs, rec->hdr_len))) { free(r->key); free(r->val); return -1; }
    r->hlen = rec->hdr_len;
    j->nin++;
    if (di->partition + 1 > j->parts[c->source]) j->parts[c->source] = di->partition + 1;
    return 0;
}

/* The feeding order: the bootstrap sources' records first (then those
 * partitions end, as a bootstrap source is read to its end before the
 * others start), then the other partitions' in turns, one record of each
 * per round (each partition's records in the order they were read).  The
 * records of one ring lie together in j->in, in order. */
static int feed_order(const dry_job *j, int **order) {
    int *o = malloc(sizeof *o * (j->nin ? j->nin : 1));
    int *start = malloc(sizeof *start * (j->nin ? j->nin : 1)), *len = calloc(j->nin ? j->nin : 1, sizeof *len);
    if (!o || !start || !len) { free(o); free(start); free(len); return -1; }
    int n = 0, ng = 0, longest = 0;
    for (int i = 0; i < j->nin; i++) {
        if (j->boot[j->in[i].source]) { o[n++] = i; continue; }
        if (ng == 0 || i != start[ng - 1] + len[ng - 1] || j->in[i].source != j->in[i - 1].source ||
            j->in[i].partition != j->in[i - 1].partition)
            start[ng++] = i;
        if (++len[ng - 1] > longest) longest = len[ng - 1];
    }
    for (int r = 0; r < longest; r++)
        for (int g = 0; g < ng; g++)
            if (r < len[g]) o[n++] = start[g] + r;
    free(start);
    free(len);
    *order = o;
    return n;
}

static json_t *bytes_json(const char *fmt, const char *p, size_t n) {
    if (!p) return json_null();
    if (fmt && strcmp(fmt, "json") == 0) {
        json_t *v = json_loadb(p, n, JSON_DECODE_ANY, NULL);
        if (v) return v;
    }
    return json_stringn_nocheck(p, n);
}

static json_t *input_json(const plan *p, const dry_input *di) {
    const source_info *si = &p->sources[di->source];
    json_t *o = json_pack("{s:s, s:i, s:I}", "source", si->name, "partition", di->partition, "offset",
                          (json_int_t)di->r.offset);
    if (di->r.line > 0) json_object_set_new(o, "line", json_integer(di->r.line));
    if (di->r.key) json_object_set_new(o, "key", json_stringn_nocheck(di->r.key, di->r.klen));
    json_object_set_new(o, "value", (di->r.flags & EDDY_REC_TOMBSTONE) ? json_null()
                                    : bytes_json(si->format, di->r.val, di->r.vlen));
    return o;
}

static json_t *outputs_json(const char *fmt, const mem_record *r, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) {
        json_t *v = bytes_json(fmt, r[i].val, r[i].vlen);
        if (r[i].key) {
            json_t *o = json_pack("{s:s%, s:o}", "key", r[i].key, r[i].klen, "value", v);
            json_array_append_new(a, o);
        } else {
            json_array_append_new(a, v);
        }
    }
    return a;
}

typedef struct sink_acc {
    const char *name, *fmt;
    long n[4];                      /* DRY_* */
    json_t *diffs;
} sink_acc;

static void finish(dry_job *j, int status, json_t *result) {
    pthread_mutex_lock(&g_mu);
    j->status = status;
    j->result = result;
    atomic_store(&j->done, 1);
    pthread_mutex_unlock(&g_mu);
}

static config *load_config(const dry_job *j, char *err, size_t errlen) {
    config *c = j->cfg_path ? config_load(j->cfg_path, err, errlen) : config_default_for_pipeline(j->pipeline, err, errlen);
    if (!c) return NULL;
    /* the drivers' temporary folders go in the job's (under state.dir) */
    if (driver_config(c, j->tmp, err, errlen) < 0) { config_destroy(c); return NULL; }
    c->on_error = ON_ERROR_SKIP;       /* a record that fails is counted, never dead-lettered or fatal */
    return c;
}

/* The dry run's watchdog: a user call in either driver that runs past
 * limits.time of CPU is interrupted (its record goes to the error policy),
 * as the daemon's watchdog does for its own tasks. */
static void *watch_job(void *arg) {
    dry_job *j = arg;
    watchdog_mark marks[2][256];
    for (int v = 0; v < 2; v++)
        for (int i = 0; i < 256; i++) { memset(&marks[v][i], 0, sizeof marks[v][i]); marks[v][i].seq = -1; }
    while (!atomic_load(&j->done)) {
        usleep(WATCHDOG_TICK_MS * 1000);
        pthread_mutex_lock(&j->wd_mu);
        for (int v = 0; v < 2; v++) {
            if (!j->drivers[v]) continue;
            int n;
            task **ts = driver_tasks(j->drivers[v], &n);
            for (int i = 0; i < n && i < 256; i++) {
                int64_t ran = watchdog_check(ts[i], &marks[v][i], j->limit_time_ms);
                if (ran > 0 && !j->stuck) {
                    j->stuck = 1;
                    log_error("dry run %d: a call of the %s version has run for %lld ms of CPU time and cannot be "
                              "interrupted (a loop the JIT compiled runs no hooks): the dry run waits for it to return, "
                              "and the next dry run is refused until then", j->id, v ? "new" : "running", (long long)ran);
                }
            }
        }
        pthread_mutex_unlock(&j->wd_mu);
    }
    return NULL;
}

static void set_driver(dry_job *j, int v, driver *d) {
    pthread_mutex_lock(&j->wd_mu);
    j->drivers[v] = d;
    pthread_mutex_unlock(&j->wd_mu);
}

static void *run_job(void *arg) {
    dry_job *j = arg;
    char err[4096];
    int64_t t0 = clock_mono_ms();
    driver *dold = NULL, *dnew = NULL;
    sink_acc *acc = NULL;
    int *order = NULL, nacc = 0;
    config *co = load_config(j, err, sizeof err), *cn = co ? load_config(j, err, sizeof err) : NULL;
    if (!cn) { config_destroy(co); goto refused; }
    plan *po = plan_create_text(co, daemon_lua_dir(), j->old_text, err, sizeof err);
    if (!po) {
        char why[4096];
        snprintf(why, sizeof why, "the running version %d cannot be planned again (from %.1000s): %.2500s", j->version,
                 j->old_text, err);
        memcpy(err, why, sizeof err);
        config_destroy(co);
        config_destroy(cn);
        goto refused;
    }
    plan *pn = plan_create(cn, daemon_lua_dir(), err, sizeof err);
    if (!pn) { plan_destroy(po); config_destroy(co); config_destroy(cn); goto refused; }
    char new_hash[65];
    snprintf(new_hash, sizeof new_hash, "%s", pn->hash);
    char snap[PATH_MAX + 16];
    snprintf(snap, sizeof snap, "%s/snap", j->tmp);
    driver_opts o = { .partitions = j->parts, .state_from = j->has_snap ? snap : NULL, .version = j->version,
                      .tmp = j->tmp };
    char derr[4096];
    if (!(dold = driver_open(co, po, &o, derr, sizeof derr))) {
        snprintf(err, sizeof err, "the running version %d: %.3000s", j->version, derr);
        config_destroy(cn);
        plan_destroy(pn);
        goto refused;
    }
    set_driver(j, 0, dold);
    o.version = j->next_version;
    if (!(dnew = driver_open(cn, pn, &o, err, sizeof err))) goto refused;
    set_driver(j, 1, dnew);
    if (driver_run(dold) < 0) { snprintf(err, sizeof err, "the running version %d: %.3000s", j->version, driver_failed(dold)); goto refused; }
    if (driver_run(dnew) < 0) { snprintf(err, sizeof err, "%s", driver_failed(dnew)); goto refused; }
    const plan *np = driver_plan(dnew), *op = driver_plan(dold);
    for (int i = 0; i < np->nnodes; i++) if (np->nodes[i].kind == NODE_SINK) nacc++;
    if (!(acc = calloc(nacc ? nacc : 1, sizeof *acc))) goto oom;
    nacc = 0;
    for (int i = 0; i < np->nnodes; i++) {
        if (np->nodes[i].kind != NODE_SINK) continue;
        acc[nacc].name = np->nodes[i].name;
        acc[nacc].fmt = node_opt(&np->nodes[i], "format") ? node_opt(&np->nodes[i], "format") : "json";
        acc[nacc].diffs = json_array();
        nacc++;
    }
    int n = feed_order(j, &order);
    if (n < 0) goto oom;
    long errors = 0, old_errors = 0, done = 0;
    json_t *error_records = json_array(), *failed = NULL;
    int boot_ended = 0;
    for (int k = 0; k < n && !atomic_load(&j->cancel); k++) {
        const dry_input *di = &j->in[order[k]];
        if (!boot_ended && !j->boot[di->source]) {
            for (int s = 0; s < j->nsources; s++)
                for (int p = 0; j->boot[s] && p < j->parts[s]; p++) { driver_end(dold, s, p); driver_end(dnew, s, p); }
            boot_ended = 1;
        }
        long e0 = driver_errors(dnew), oe0 = driver_errors(dold);
        if (driver_push(dold, di->source, di->partition, &di->r) < 0 ||
            driver_push(dnew, di->source, di->partition, &di->r) < 0)
            goto oom;
        int ro = driver_run(dold), rn = driver_run(dnew);
        done++;
        long e = driver_errors(dnew) - e0;
        old_errors += driver_errors(dold) - oe0;
        if (e > 0) {
            errors++;
            if (json_array_size(error_records) < DRYRUN_MAX_DIFFERENCES)
                json_array_append_new(error_records, input_json(np, di));
        }
        mem_outputs *oo = driver_outputs(dold), *no = driver_outputs(dnew);
        for (int a = 0; a < nacc; a++) {
            mem_output *mo = mem_output_get(oo, acc[a].name, 0), *mn = mem_output_get(no, acc[a].name, 0);
            if (!mo || !mn) goto oom;
            const mem_record *ro_ = mo->q.recs + mo->q.head, *rn_ = mn->q.recs + mn->q.head;
            int nro = (int)(mo->q.n - mo->q.head), nrn = (int)(mn->q.n - mn->q.head);
            int c = dryrun_compare(ro_, nro, rn_, nrn);
            acc[a].n[c]++;
            if (c != DRY_SAME && json_array_size(acc[a].diffs) < DRYRUN_MAX_DIFFERENCES) {
                json_t *d = json_pack("{s:o, s:s, s:o, s:o}", "input", input_json(np, di), "kind",
                                      c == DRY_CHANGED ? "changed" : c == DRY_ADDED ? "added" : "removed", "old",
                                      outputs_json(acc[a].fmt, ro_, nro), "new", outputs_json(acc[a].fmt, rn_, nrn));
                if (e > 0) json_object_set_new(d, "error", json_true());
                json_array_append_new(acc[a].diffs, d);
            }
            mo->q.head = mo->q.n;
            mem_queue_drop_read(&mo->q);
            mn->q.head = mn->q.n;
            mem_queue_drop_read(&mn->q);
        }
        if (ro < 0 || rn < 0) {
            failed = json_pack("{s:s, s:s, s:o}", "version", rn < 0 ? "new" : "running", "error",
                               rn < 0 ? driver_failed(dnew) : driver_failed(dold), "input", input_json(np, di));
            break;
        }
    }
    (void)op;
    json_t *sinks = json_object();
    for (int a = 0; a < nacc; a++) {
        json_object_set_new(sinks, acc[a].name,
                            json_pack("{s:I, s:I, s:I, s:I, s:o}", "same", (json_int_t)acc[a].n[DRY_SAME], "changed",
                                      (json_int_t)acc[a].n[DRY_CHANGED], "added", (json_int_t)acc[a].n[DRY_ADDED],
                                      "removed", (json_int_t)acc[a].n[DRY_REMOVED], "differences", acc[a].diffs));
        acc[a].diffs = NULL;
    }
    json_t *res = json_pack("{s:i, s:i, s:s, s:I, s:I, s:I, s:o, s:o, s:b, s:I}", "dry_run", j->id,
                            "running_version", j->version, "sha256", new_hash, "records", (json_int_t)done, "errors",
                            (json_int_t)errors, "running_errors", (json_int_t)old_errors, "sinks", sinks,
                            "error_records", error_records, "cancelled", atomic_load(&j->cancel) != 0,
                            "duration_ms", (json_int_t)(clock_mono_ms() - t0));
    if (failed) json_object_set_new(res, "failed", failed);
    log_info("dry run %d: %ld records through version %d and the script on disk (sha256 %.12s), %ld errors, in %lld ms",
             j->id, done, j->version, new_hash, errors, (long long)(clock_mono_ms() - t0));
    set_driver(j, 0, NULL);
    set_driver(j, 1, NULL);
    driver_destroy(dold);
    driver_destroy(dnew);
    free(order);
    free(acc);
    files_rm_tree(j->tmp);              /* the snapshot and the drivers' folders: only the result stays */
    j->tmp[0] = 0;
    finish(j, 200, res);
    return NULL;
oom:
    snprintf(err, sizeof err, "out of memory");
refused:
    for (int a = 0; acc && a < nacc; a++) json_decref(acc[a].diffs);
    free(acc);
    free(order);
    set_driver(j, 0, NULL);
    set_driver(j, 1, NULL);
    driver_destroy(dold);
    driver_destroy(dnew);
    log_warn("dry run %d: %s", j->id, err);
    files_rm_tree(j->tmp);
    j->tmp[0] = 0;
    finish(j, 422, json_pack("{s:s, s:i}", "error", err, "dry_run", j->id));
    return NULL;
}

/* ---- the requests --------------------------------------------------------- */

/* The running version's script: the text it was planned from (reload --to)
 * or its kept copy.  Owned path, or NULL with msg. */
static char *running_text(daemon_state *d, char *msg, size_t len) {
    const plan *cur = d->plans[d->nplans - 1];
    if (cur->text) return strdup(cur->text);
    version_info *v = NULL;
    char err[512];
    int n = versions_list(d->cfg->state_dir, &v, err, sizeof err);
    char *out = NULL;
    for (int i = 0; i < n; i++)
        if (v[i].version == d->version && asprintf(&out, "%s/versions/%d/%s", d->cfg->state_dir, v[i].version,
                                                   v[i].script) < 0)
            out = NULL;
    free(v);
    if (!out)
        snprintf(msg, len, "the running version %d's script is not kept in %s/versions (see the log): a dry run "
                 "compares with it", d->version, d->cfg->state_dir);
    return out;
}

/* The folders of dry runs a killed eddy left in state.dir. */
static void remove_stale(const char *state_dir) {
    char pat[PATH_MAX];
    snprintf(pat, sizeof pat, "%s/dry-run-*", state_dir);
    glob_t g;
    if (glob(pat, GLOB_NOSORT, NULL, &g) != 0) return;
    for (size_t i = 0; i < g.gl_pathc; i++) files_rm_tree(g.gl_pathv[i]);
    globfree(&g);
}

static json_t *refuse(int *http_status, int status, const char *msg) {
    *http_status = status;
    return json_pack("{s:s}", "error", msg);
}

json_t *dryrun_request(daemon_state *d, const char *query, int *http_status) {
    char msg[4096];
    if (d->cfg->reload_dry_run_records <= 0)
        return refuse(http_status, 422, "dry runs are off: reload.dry_run_records is 0, so the last records of each "
                      "source partition are not kept (set it, e.g. 1000, and restart eddy)");
    if (!d->workers_running) return refuse(http_status, 503, "eddy is still starting: dry run once it runs");
    if (atomic_load(&d->sh.stopping) || atomic_load(&d->sh.aborting))
        return refuse(http_status, 503, "eddy is stopping: no dry run");
    if (d->canary) {
        snprintf(msg, sizeof msg, "a canary of version %d is running: promote it (eddy reload --promote) or roll it "
                 "back (eddy reload --rollback) first; a dry run compares the script on disk with the version every "
                 "task runs", d->canary->version);
        return refuse(http_status, 409, msg);
    }
    if (g_job && !atomic_load(&g_job->done)) {
        snprintf(msg, sizeof msg, "dry run %d is still running (GET /reload/dry-run/%d); try again when it is done",
                 g_job->id, g_job->id);
        return refuse(http_status, 503, msg);
    }
    struct evkeyvalq q;
    q.tqh_first = NULL;
    q.tqh_last = &q.tqh_first;
    if (query && evhttp_parse_query_str(query, &q) < 0) return refuse(http_status, 400, "a malformed query");
    int records = d->cfg->reload_dry_run_records;
    const char *rs = evhttp_find_header(&q, "records");
    const char *ad = evhttp_find_header(&q, "allow_dropped_state");
    int allow = ad && strcmp(ad, "1") == 0;
    if (rs) {
        char *end;
        long v = strtol(rs, &end, 10);
        if (!*rs || *end || v < 1 || v > d->cfg->reload_dry_run_records) {
            snprintf(msg, sizeof msg, "records=%.100s: expected 1 to %d (reload.dry_run_records: what each source "
                     "partition keeps)", rs, d->cfg->reload_dry_run_records);
            evhttp_clear_headers(&q);
            return refuse(http_status, 400, msg);
        }
        records = (int)v;
    }
    evhttp_clear_headers(&q);
    /* the checks of a reload: the script on disk planned and checked against the running plan */
    const plan *cur = d->plans[d->nplans - 1];
    plan *p = reload_prepare_text(d->cfg, daemon_lua_dir(), NULL, cur, NULL, 0, reload_next_version(d), allow, NULL,
                                  msg, sizeof msg);
    if (!p) {
        log_warn("dry run refused: %s", msg);
        return refuse(http_status, 422, msg);
    }
    plan_destroy(p);
    dry_job *j = calloc(1, sizeof *j);
    if (!j) return refuse(http_status, 503, "out of memory");
    j->nsources = cur->nsources;
    j->parts = calloc(cur->nsources ? cur->nsources : 1, sizeof *j->parts);
    j->boot = calloc(cur->nsources ? cur->nsources : 1, sizeof *j->boot);
    j->version = d->version;
    j->next_version = reload_next_version(d);
    j->limit_time_ms = d->cfg->limit_time_ms;
    pthread_mutex_init(&j->wd_mu, NULL);
    if (!j->parts || !j->boot || (d->cfg->path && !(j->cfg_path = strdup(d->cfg->path))) ||
        !(j->pipeline = strdup(d->cfg->pipeline))) {
        job_free(j);
        return refuse(http_status, 503, "out of memory");
    }
    for (int s = 0; s < cur->nsources; s++) { j->parts[s] = 1; j->boot[s] = cur->sources[s].bootstrap; }
    if (!(j->old_text = running_text(d, msg, sizeof msg))) { job_free(j); return refuse(http_status, 503, msg); }
    if (g_next_id == 1) remove_stale(d->cfg->state_dir);
    snprintf(j->tmp, sizeof j->tmp, "%s/dry-run-XXXXXX", d->cfg->state_dir);
    if (!mkdtemp(j->tmp)) {
        snprintf(msg, sizeof msg, "cannot make a folder in %s: %s", d->cfg->state_dir, strerror(errno));
        j->tmp[0] = 0;
        job_free(j);
        return refuse(http_status, 503, msg);
    }
    /* the records: each source task's ring, copied under its mutex */
    for (int i = 0; i < d->ntasks; i++) {
        replay_ring *r = task_replay_ring(d->tasks[i]);
        int s = task_source(d->tasks[i]);
        if (!r || s < 0 || s >= cur->nsources) continue;
        if (task_index(d->tasks[i]) + 1 > j->parts[s]) j->parts[s] = task_index(d->tasks[i]) + 1;
        copy_ctx c = { j, s };
        if (replay_ring_each(r, records, copy_record, &c) != 0) { job_free(j); return refuse(http_status, 503, "out of memory"); }
    }
    /* the keyed state as it is now: a RocksDB checkpoint (hard links) both versions start from a copy of */
    if (d->sh.state) {
        char snap[PATH_MAX + 16], err[1024];
        snprintf(snap, sizeof snap, "%s/snap", j->tmp);
        if (state_checkpoint(d->sh.state, snap, err, sizeof err) < 0) {
            snprintf(msg, sizeof msg, "cannot snapshot the state: %s", err);
            job_free(j);
            return refuse(http_status, 503, msg);
        }
        j->has_snap = 1;
    }
    j->id = g_next_id++;
    if (pthread_create(&j->th, NULL, run_job, j) != 0) { job_free(j); return refuse(http_status, 503, "cannot start a thread"); }
    if (pthread_create(&j->wd, NULL, watch_job, j) != 0) j->wd = 0;
    if (g_job) {
        pthread_join(g_job->th, NULL);
        if (g_job->wd) pthread_join(g_job->wd, NULL);
        job_free(g_job);
    }
    pthread_mutex_lock(&g_mu);
    g_job = j;
    pthread_mutex_unlock(&g_mu);
    log_info("dry run %d: %d records of the running version %d's input, through it and the script on disk",
             j->id, j->nin, j->version);
    char loc[64];
    snprintf(loc, sizeof loc, "/reload/dry-run/%d", j->id);
    *http_status = 202;
    return json_pack("{s:i, s:s, s:i, s:i}", "dry_run", j->id, "location", loc, "records", j->nin, "running_version",
                     j->version);
}

json_t *dryrun_get(daemon_state *d, const char *path, int *http_status) {
    (void)d;
    const char *rest = path + strlen("/reload/dry-run/");
    char *end;
    long id = strtol(rest, &end, 10);
    pthread_mutex_lock(&g_mu);
    dry_job *j = g_job;
    json_t *out;
    if (!*rest || *end || !j || j->id != id) {
        *http_status = 404;
        out = j ? json_pack("{s:s, s:i}", "error", "no such dry run: only the last one's result is kept", "last", j->id)
                : json_pack("{s:s}", "error", "no dry run has run");
    } else if (!atomic_load(&j->done)) {
        *http_status = 202;
        out = json_pack("{s:i, s:s}", "dry_run", j->id, "state", "running");
    } else {
        *http_status = j->status;
        out = json_deep_copy(j->result);
    }
    pthread_mutex_unlock(&g_mu);
    return out;
}

void dryrun_shutdown(void) {
    dry_job *j = g_job;
    if (!j) return;
    atomic_store(&j->cancel, 1);
    pthread_mutex_lock(&j->wd_mu);
    int stuck = j->stuck;
    pthread_mutex_unlock(&j->wd_mu);
    if (stuck && !atomic_load(&j->done)) return;   /* (it cannot be stopped: it ends with the process) */
    pthread_join(j->th, NULL);
    if (j->wd) pthread_join(j->wd, NULL);
    pthread_mutex_lock(&g_mu);
    g_job = NULL;
    pthread_mutex_unlock(&g_mu);
    job_free(j);
}
