#include "canary.h"
#include "client.h"
#include "clock.h"
#include "daemon_state.h"
#include "log.h"
#include "reload.h"
#include "versions.h"
#include <ctype.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- which tasks: pure --------------------------------------------------- */

/* The next item of a comma-separated list into buf; 1, or 0 at its end. */
static int next_item(const char **s, char *buf, size_t len) {
    while (**s == ',' || **s == ' ') (*s)++;
    if (!**s) return 0;
    size_t n = strcspn(*s, ", ");
    snprintf(buf, len, "%.*s", (int)(n < len ? n : len - 1), *s);
    *s += n;
    return 1;
}

/* A whole non-negative number: 0 with *v, or -1. */
static int whole(const char *s, long *v) {
    if (!*s || strlen(s) > 9) return -1;
    for (const char *c = s; *c; c++) if (!isdigit((unsigned char)*c)) return -1;
    *v = strtol(s, NULL, 10);
    return 0;
}

int canary_pick(int ntasks, const int *stage_of, const int *index_of, const char *const *names, canary_kind kind,
                const char *arg, unsigned char *on, char *err, size_t errlen) {
    int widest = 0;
    for (int i = 0; i < ntasks; i++) {
        on[i] = 0;
        if (index_of[i] + 1 > widest) widest = index_of[i] + 1;
    }
    (void)stage_of;      /* a stage's tasks are indexed 0..n-1: the index alone picks */
    if (!arg) arg = "";
    char item[128];
    if (kind == CANARY_COUNT) {
        long k;
        if (whole(arg, &k) < 0) {
            snprintf(err, errlen, "--canary %s: K is a number of tasks per stage (1 to %d)", arg, widest - 1);
            return -1;
        }
        if (k < 1 || k >= widest) {
            if (widest < 2) snprintf(err, errlen, "--canary %ld: every stage runs one task: a canary needs a stage "
                                     "with two tasks or more (its others stay on the running version)", k);
            else snprintf(err, errlen, "--canary %ld: K is out of range: between 1 and %d (the widest stage runs %d "
                          "tasks; K of them switch)", k, widest - 1, widest);
            return -1;
        }
        for (int i = 0; i < ntasks; i++) on[i] = index_of[i] < k;
    } else if (kind == CANARY_PARTITIONS) {
        const char *s = arg;
        int any = 0;
        while (next_item(&s, item, sizeof item)) {
            long j;
            if (whole(item, &j) < 0) {
                snprintf(err, errlen, "--canary-partitions %s: '%s' is not a partition number", arg, item);
                return -1;
            }
            if (j >= widest) {
                snprintf(err, errlen, "--canary-partitions %s: partition %ld is out of range: the widest stage runs "
                         "%d tasks (0 to %d)", arg, j, widest, widest - 1);
                return -1;
            }
            for (int i = 0; i < ntasks; i++) if (index_of[i] == j) on[i] = 1;
            any = 1;
        }
        if (!any) { snprintf(err, errlen, "--canary-partitions: give partition numbers, like 0,3"); return -1; }
    } else {
        const char *s = arg;
        int any = 0;
        while (next_item(&s, item, sizeof item)) {
            int found = 0;
            for (int i = 0; i < ntasks; i++)
                if (strcmp(names[i], item) == 0) { on[i] = 1; found = 1; }
            if (!found) {
                snprintf(err, errlen, "--canary-tasks %s: no task is named '%s' (GET /status lists the tasks)", arg,
                         item);
                return -1;
            }
            any = 1;
        }
        if (!any) { snprintf(err, errlen, "--canary-tasks: give task names, like keyed1-0,keyed1-2"); return -1; }
    }
    int n = 0;
    for (int i = 0; i < ntasks; i++) n += on[i];
    if (n == ntasks) {
        snprintf(err, errlen, "%s %s picks every task: nothing would stay on the running version (that is a "
                 "reload: eddy reload)", kind == CANARY_COUNT ? "--canary" : kind == CANARY_PARTITIONS ?
                 "--canary-partitions" : "--canary-tasks", arg);
        return -1;
    }
    return n;
}

/* ---- routing: the key_by operators --------------------------------------- */

static int same_opt(const node *a, const node *b, const char *key) {
    const char *x = node_opt(a, key), *y = node_opt(b, key);
    return (!x && !y) || (x && y && strcmp(x, y) == 0);
}

int canary_same_routing(const plan *old, const plan *p, char *err, size_t errlen) {
    int i = 0, j = 0;
    for (;;) {
        while (i < old->nnodes && old->nodes[i].kind != NODE_KEY_BY) i++;
        while (j < p->nnodes && p->nodes[j].kind != NODE_KEY_BY) j++;
        if (i == old->nnodes || j == p->nnodes) break;
        const node *a = &old->nodes[i], *b = &p->nodes[j];
        if (a->stage_out != b->stage_out || !same_opt(a, b, "field") || !same_opt(a, b, "key") ||
            !same_opt(a, b, "key_code")) {
            const char *fa = node_opt(a, "field"), *fb = node_opt(b, "field");
            char what[300];
            if (fa && fb) snprintf(what, sizeof what, "its field changed from '%s' to '%s'", fa, fb);
            else if (fa || fb) snprintf(what, sizeof what, "it changed from %s to %s", fa ? "a field" : "a function",
                                        fb ? "a field" : "a function");
            else snprintf(what, sizeof what, "its key function changed (its code, or a value it reads from an "
                          "enclosing local)");
            snprintf(err, errlen, "a canary cannot change how records are keyed: the key_by at %s (version running: "
                     "%s) %s, so the two versions would send a key to different tasks; reload it whole (eddy "
                     "reload) instead", b->where ? b->where : "?", a->where ? a->where : "?", what);
            return -1;
        }
        i++, j++;
    }
    if (i != old->nnodes || j != p->nnodes) {
        snprintf(err, errlen, "a canary cannot add or remove a key_by: the two versions would send records to "
                 "different tasks; reload it whole (eddy reload) instead");
        return -1;
    }
    return 0;
}

int canary_same_migrations(const plan *old, const plan *p, char *err, size_t errlen) {
    for (int j = 0; j < p->nnodes; j++) {
        const node *b = &p->nodes[j];
        const char *code = b->kind == NODE_PROCESS ? node_opt(b, "migrate_code") : NULL;
        if (!code) continue;
        const char *was = NULL;
        for (int i = 0; i < old->nnodes; i++)
            if (old->nodes[i].kind == NODE_PROCESS && old->nodes[i].uid && b->uid && strcmp(old->nodes[i].uid, b->uid) == 0)
                was = node_opt(&old->nodes[i], "migrate_code");
        if (!was || strcmp(was, code) != 0) {
            snprintf(err, errlen, "a canary cannot bring a new migrate: the process operator at %s (uid %s) would "
                     "convert its keys' state on the canary tasks, and the running version (or a rollback) cannot "
                     "read the new shape; reload it whole (eddy reload) instead", b->where ? b->where : "?",
                     b->uid ? b->uid : "?");
            return -1;
        }
    }
    return 0;
}

/* ---- the daemon's side ------------------------------------------------------ */

int reload_next_version(daemon_state *d) {
    int v = d->version;
    if (d->canary && d->canary->version > v) v = d->canary->version;
    if (d->last_version > v) v = d->last_version;
    return v + 1;
}

void canary_free(daemon_state *d) {
    if (!d->canary) return;
    for (int i = 0; d->canary->ready && i < d->ntasks; i++) task_vm_destroy(d->canary->ready[i]);
    free(d->canary->ready);
    free(d->canary->on);
    free(d->canary);
    d->canary = NULL;
}

/* What every roll-out waits for: 0, or an HTTP-like status with msg. */
static int may_roll_out(daemon_state *d, char *msg, size_t len) {
    if (!d->workers_running) {
        snprintf(msg, len, "eddy is still starting (waiting for Kafka): try again once it runs");
        return 503;
    }
    if (atomic_load(&d->sh.stopping) || atomic_load(&d->sh.aborting)) {
        snprintf(msg, len, "eddy is stopping: no reload");
        return 503;
    }
    if (reload_in_progress(d)) {
        snprintf(msg, len, "a version is still being rolled out to the tasks; try again");
        return 503;
    }
    if (d->ckpt && ckpt_running(d->ckpt)) {
        snprintf(msg, len, "a checkpoint is in progress; try again");
        return 503;
    }
    return 0;
}

/* What a roll-out does to the canary tasks (on[i]) beyond its offers. */
enum { START, PROMOTE, ROLLBACK };

/* Offers tvs[i] to the running tasks that have one (taken: tvs[i] is NULL
 * after); the canary tasks, on a start, park the version they leave, on a
 * promotion close it, on a rollback get it back; every other running task
 * gets a pass.  Downstream first (tasks are numbered sources first: a keyed
 * task has its offer or pass before the barriers reach it); then wakes them. */
static void roll_out(daemon_state *d, task_vm **tvs, const unsigned char *on, int mode) {
    for (int i = d->ntasks - 1; i >= 0; i--) {
        task *t = d->tasks[i];
        task_vm *tv = tvs[i];
        tvs[i] = NULL;
        if (task_status(t) != TASK_RUNNING) { task_vm_destroy(tv); continue; }
        if (tv && mode == START) task_offer_parking(t, tv);
        else if (tv) task_offer(t, tv);
        else if (on[i] && mode == PROMOTE) task_pass_dropping_parked(t);
        else if (on[i] && mode == ROLLBACK) {
            if (task_offer_parked(t) == 0) continue;
            /* (it parked nothing: it never swapped to the canary, or ran out of memory doing so) */
            log_warn("rollback: task %s has no version to return to: it stays on version %d", task_name(t),
                     task_version(t));
            task_pass(t);
        } else task_pass(t);
    }
    for (int i = 0; i < d->ntasks; i++) sched_wake(d->tasks[i]);
}

/* The names of the tasks on[] picks, "a, b, c" (at most len). */
static void task_list(const daemon_state *d, const unsigned char *on, int want, char *out, size_t len) {
    size_t n = 0;
    out[0] = 0;
    for (int i = 0; i < d->ntasks && n + 1 < len; i++) {
        if (on[i] != want) continue;
        int w = snprintf(out + n, len - n, "%s%s", n ? ", " : "", task_name(d->tasks[i]));
        if (w < 0) break;
        n += (size_t)w;
    }
}

int canary_request(daemon_state *d, const char *trigger, canary_kind kind, const char *arg, char *msg, size_t len) {
    if (d->canary) {
        snprintf(msg, len, "a canary of version %d is running (%s): promote it (eddy reload --promote) or roll it "
                 "back (eddy reload --rollback) first", d->canary->version, d->canary->how);
        return 409;
    }
    if (d->cfg->shuffle == SHUFFLE_KAFKA) {
        /* barriers stay inside an instance, and each instance holds only some
         * keyed tasks: no instance could switch "the keys of task j" alone */
        snprintf(msg, len, "a canary needs shuffle = \"local\": under shuffle = \"kafka\" the keyed tasks are spread "
                 "over the instances and barriers do not cross them; reload every instance instead");
        return 422;
    }
    int rc = may_roll_out(d, msg, len);
    if (rc) return rc;
    int n = d->ntasks;
    int *stage_of = calloc(n, sizeof *stage_of), *index_of = calloc(n, sizeof *index_of);
    const char **names = calloc(n, sizeof *names);
    unsigned char *on = calloc(n, 1);
    task_vm **tvs = calloc(n, sizeof *tvs);
    plan **plans = realloc(d->plans, sizeof *plans * (d->nplans + 1));
    if (plans) d->plans = plans;
    char err[2048];
    plan *p = NULL;
    if (!stage_of || !index_of || !names || !on || !tvs || !plans) { snprintf(msg, len, "out of memory"); rc = 503; goto out; }
    for (int i = 0; i < n; i++) {
        stage_of[i] = task_stage(d->tasks[i]);
        index_of[i] = task_index(d->tasks[i]);
        names[i] = task_name(d->tasks[i]);
    }
    if (canary_pick(n, stage_of, index_of, names, kind, arg, on, msg, len) < 0) { rc = 400; goto out; }
    const plan *cur = d->plans[d->nplans - 1];
    char hash[65];
    if (plan_hash(cur->script, hash, err, sizeof err) == 0 && strcmp(hash, cur->hash) == 0) {
        snprintf(msg, len, "nothing changed (sha256 %.12s is version %d's): no canary to run", hash, d->version);
        rc = 422;
        goto out;
    }
    int version = reload_next_version(d);
    p = reload_prepare(d->cfg, daemon_lua_dir(), cur, d->tasks, n, version, 0, tvs, err, sizeof err);
    if (p && (canary_same_routing(cur, p, err, sizeof err) < 0 || canary_same_migrations(cur, p, err, sizeof err) < 0)) {
        for (int i = 0; i < n; i++) { task_vm_destroy(tvs[i]); tvs[i] = NULL; task_forget_windows(d->tasks[i], cur, 0); }
        plan_destroy(p);
        p = NULL;
    }
    if (!p) {
        d->reloads_failed++;
        snprintf(d->last_reload_error, sizeof d->last_reload_error, "%s", err);
        log_error("canary (%s) refused, version %d keeps running: %s", trigger, d->version, err);
        snprintf(msg, len, "%s", err);
        rc = 422;
        goto out;
    }
    /* the other tasks stay: their new VMs wait for a promotion */
    canary_run *c = calloc(1, sizeof *c);
    task_vm **ready = calloc(n, sizeof *ready);
    if (!c || !ready) {
        free(c);
        free(ready);
        for (int i = 0; i < n; i++) task_vm_destroy(tvs[i]);
        plan_destroy(p);
        snprintf(msg, len, "out of memory");
        rc = 503;
        goto out;
    }
    /* the last plan stays the running version's (d->version): the canary's goes before it */
    d->plans[d->nplans] = d->plans[d->nplans - 1];
    d->plans[d->nplans - 1] = p;
    d->nplans++;
    c->version = version;
    c->from = d->version;
    c->p = p;
    c->from_p = cur;
    c->on = on;
    on = NULL;
    c->ready = ready;
    for (int i = 0; i < n; i++)
        if (!c->on[i]) { ready[i] = tvs[i]; tvs[i] = NULL; }
    snprintf(c->how, sizeof c->how, "%s %.200s", kind == CANARY_COUNT ? "--canary" : kind == CANARY_PARTITIONS ?
             "--canary-partitions" : "--canary-tasks", arg);
    c->started_ms = clock_wall_ms();
    d->canary = c;
    d->last_version = version;
    d->last_reload_error[0] = 0;
    d->reloads_ok++;
    roll_out(d, tvs, c->on, START);
    char list[1024];
    task_list(d, c->on, 1, list, sizeof list);
    log_info("canary (%s): version %d (sha256 %.12s) is rolling out to %s; the other tasks stay on version %d",
             trigger, version, p->hash, list, c->from);
    if (versions_keep(d->cfg->state_dir, version, p, c->started_ms, d->cfg->reload_keep_versions, err,
                      sizeof err) < 0)
        log_warn("canary version %d runs, but is not kept for reload --to: %s", version, err);
    snprintf(msg, len, "%d", version);
    rc = 200;
out:
    free(stage_of);
    free(index_of);
    free(names);
    free(on);
    free(tvs);
    return rc;
}

int canary_promote(daemon_state *d, const char *trigger, char *msg, size_t len) {
    if (!d->canary) {
        snprintf(msg, len, "no canary is running: nothing to promote (start one with eddy reload --canary K)");
        return 409;
    }
    int rc = may_roll_out(d, msg, len);
    if (rc) return rc;
    canary_run *c = d->canary;
    roll_out(d, c->ready, c->on, PROMOTE);      /* (takes the ready VMs) */
    log_info("promote (%s): version %d (sha256 %.12s) is rolling out to the tasks still on version %d", trigger,
             c->version, c->p->hash, c->from);
    d->version = c->version;
    d->loaded_at_ms = clock_wall_ms();
    for (int i = 0; i < d->nplans; i++)       /* the last plan is the running version's */
        if (d->plans[i] == c->p) {
            d->plans[i] = d->plans[d->nplans - 1];
            d->plans[d->nplans - 1] = (plan *)c->p;
            break;
        }
    canary_free(d);
    snprintf(msg, len, "%d", d->version);
    return 200;
}

int canary_rollback(daemon_state *d, const char *trigger, char *msg, size_t len) {
    if (!d->canary) {
        snprintf(msg, len, "no canary is running: nothing to roll back");
        return 409;
    }
    int rc = may_roll_out(d, msg, len);
    if (rc) return rc;
    canary_run *c = d->canary;
    /* the promotion's VMs go, and the windows of the canary's uids they opened */
    for (int i = 0; i < d->ntasks; i++)
        if (c->ready[i]) {
            task_vm_destroy(c->ready[i]);
            c->ready[i] = NULL;
            task_forget_windows(d->tasks[i], c->from_p, 0);
        }
    task_vm **none = calloc(d->ntasks, sizeof *none);
    if (!none) { snprintf(msg, len, "out of memory"); return 503; }
    roll_out(d, none, c->on, ROLLBACK);         /* the canaries get their parked version back */
    free(none);
    /* (the canary's plan stays in the list: its VMs close as the tasks swap away) */
    log_info("rollback (%s): the canaries of version %d go back to version %d", trigger, c->version, c->from);
    canary_free(d);
    snprintf(msg, len, "%d", d->version);
    return 200;
}

json_t *canary_status_json(const daemon_state *d) {
    const canary_run *c = d->canary;
    if (!c) return json_null();
    json_t *tasks = json_array();
    for (int i = 0; i < d->ntasks; i++)
        if (c->on[i]) json_array_append_new(tasks, json_string(task_name(d->tasks[i])));
    return json_pack("{s:i, s:i, s:s, s:o, s:s, s:I}", "version", c->version, "from_version", c->from, "sha256",
                     c->p->hash, "tasks", tasks, "selected_by", c->how, "started_at", (json_int_t)c->started_ms);
}

/* ---- POST /reload?canary=...; eddy reload --canary ... ---------------------- */

int canary_http(daemon_state *d, const char *query, int *status, json_t **answer) {
    if (!query || (!strstr(query, "canary") && !strstr(query, "promote") && !strstr(query, "rollback"))) return 0;
    struct evkeyvalq q;
    q.tqh_first = NULL;
    q.tqh_last = &q.tqh_first;
    if (evhttp_parse_query_str(query, &q) < 0) return 0;      /* the plain reload answers it */
    const char *k = evhttp_find_header(&q, "canary"), *parts = evhttp_find_header(&q, "canary_partitions");
    const char *names = evhttp_find_header(&q, "canary_tasks"), *promote = evhttp_find_header(&q, "promote");
    const char *rollback = evhttp_find_header(&q, "rollback");
    int asked = (k != NULL) + (parts != NULL) + (names != NULL) + (promote != NULL) + (rollback != NULL);
    char msg[2048];
    if (asked == 0) { evhttp_clear_headers(&q); return 0; }
    if (asked > 1 || evhttp_find_header(&q, "allow_dropped_state") || evhttp_find_header(&q, "to")) {
        *status = 400;
        snprintf(msg, sizeof msg, "give one of canary, canary_partitions, canary_tasks, promote and rollback, alone");
    } else if (promote) {
        *status = canary_promote(d, "POST /reload?promote", msg, sizeof msg);
    } else if (rollback) {
        *status = canary_rollback(d, "POST /reload?rollback", msg, sizeof msg);
    } else {
        canary_kind kind = k ? CANARY_COUNT : parts ? CANARY_PARTITIONS : CANARY_TASKS;
        *status = canary_request(d, "POST /reload?canary", kind, k ? k : parts ? parts : names, msg, sizeof msg);
    }
    evhttp_clear_headers(&q);
    if (*status == 200) {
        *answer = json_pack("{s:i, s:o}", "version", atoi(msg), "canary", canary_status_json(d));
        json_object_set_new(*answer, "sha256", json_string(d->canary ? d->canary->p->hash : d->plans[d->nplans - 1]->hash));
    } else {
        *answer = json_pack("{s:s, s:i}", "error", msg, "version", d->version);
    }
    return 1;
}

int canary_cli(int argc, char **argv, int *rc) {
    const char *admin = "127.0.0.1:8600", *token = getenv("EDDY_ADMIN_TOKEN");
    const char *what = NULL, *value = NULL;
    int n = 0;
    static const char *const opts[] = {"--canary", "--canary-partitions", "--canary-tasks"};
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        int o = -1;
        size_t l = 0;
        for (int k = 0; k < 3 && o < 0; k++) {
            l = strlen(opts[k]);
            if (strncmp(a, opts[k], l) == 0 && (a[l] == 0 || a[l] == '=')) o = k;
        }
        if (o >= 0) {
            what = opts[o];
            if (a[l] == '=') value = a + l + 1;               /* --canary=1 */
            else if (i + 1 < argc) value = argv[++i];
            else { fprintf(stderr, "eddy reload: %s needs a value\n", a); *rc = 2; return 1; }
            n++;
        } else if (strcmp(a, "--promote") == 0 || strcmp(a, "--rollback") == 0) {
            what = a;
            n++;
        }
    }
    if (n == 0) return 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--admin") == 0 && i + 1 < argc) admin = argv[++i];
        else if (strncmp(a, "--admin=", 8) == 0) admin = a + 8;
        else if (strcmp(a, "--token") == 0 && i + 1 < argc) token = argv[++i];
        else if (strncmp(a, "--canary", 8) == 0) i += strchr(a, '=') ? 0 : 1;
        else if (strcmp(a, "--promote") != 0 && strcmp(a, "--rollback") != 0) {
            fprintf(stderr, "eddy reload: '%s' does not go with %s\n", a, what);
            *rc = 2;
            return 1;
        }
    }
    if (n > 1) {
        fprintf(stderr, "eddy reload: give one of --canary, --canary-partitions, --canary-tasks, --promote and "
                "--rollback\n");
        *rc = 2;
        return 1;
    }
    char path[600], esc[400];
    size_t e = 0;
    for (const char *c = value ? value : ""; *c && e + 4 < sizeof esc; c++) {
        if (isalnum((unsigned char)*c) || strchr("-_.,", *c)) esc[e++] = *c;
        else e += (size_t)snprintf(esc + e, sizeof esc - e, "%%%02X", (unsigned char)*c);
    }
    esc[e] = 0;
    if (strcmp(what, "--promote") == 0) snprintf(path, sizeof path, "/reload?promote=1");
    else if (strcmp(what, "--rollback") == 0) snprintf(path, sizeof path, "/reload?rollback=1");
    else snprintf(path, sizeof path, "/reload?%s=%s", strcmp(what, "--canary") == 0 ? "canary" :
                  strcmp(what, "--canary-partitions") == 0 ? "canary_partitions" : "canary_tasks", esc);
    *rc = client_post(admin, path, NULL, token);
    return 1;
}
