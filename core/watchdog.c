#include "watchdog.h"
#include "daemon_state.h"
#include "clock.h"
#include "log.h"
#include "vm.h"
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- poison records ---------------------------------------------------- */

void watchdog_load_poison(daemon_state *d) {
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

void watchdog_free_poison(poison *ps) {
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

void watchdog_on_tick(evutil_socket_t fd, short what, void *arg) {
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
