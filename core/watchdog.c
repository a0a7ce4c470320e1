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

static void watchdog_fatal(daemon_state *d, task *t, int64_t elapsed) {
    const eddy_rec *r = task_current_record(t);
    const node *nd = task_current_node(t);
    char pos[1024], msg[2048];
    if (r) plan_describe_input(d->p, r->source, r->partition, r->line, r->offset, pos, sizeof pos);
    else snprintf(pos, sizeof pos, "(no input record: windows firing, or a processing-time tick)");
    snprintf(msg, sizeof msg,
             "operator %s (uid %s, %s) has run for %lld ms of CPU time on input %s and cannot be interrupted "
             "(a loop the JIT compiled runs no hooks)",
             nd ? nd->kind_name : "?", nd ? nd->uid : "?", nd ? nd->where : "?", (long long)elapsed, pos);
    int saved = 0;
    if (r) {      /* the record to hand to the error policy next time */
        json_t *j = json_pack("{s:s, s:s?, s:i, s:I, s:I, s:s?, s:s?, s:s}", "task", task_name(t),
                              "source", r->source < (uint32_t)d->p->nsources ? d->p->sources[r->source].name : NULL,
                              "partition", (int)r->partition, "offset", (json_int_t)r->offset,
                              "line", (json_int_t)r->line, "operator", nd ? nd->uid : NULL,
                              "where", nd ? nd->where : NULL, "error", msg);
        saved = j && json_dump_file(j, d->poison_path, JSON_INDENT(2)) == 0;
        json_decref(j);
    }
    log_task_error(task_name(t), "%s; stopping. %s", msg,
                   saved ? "The next start hands this record to the error policy (the position is in state.dir/poison.json)."
                         : r ? "Could not write state.dir/poison.json." : "");
    fflush(stderr);
    _exit(1);
}

void watchdog_on_tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd; (void)what;
    daemon_state *d = arg;
    if (d->nwd_marks < d->ntasks) {          /* the tasks are built after the loop first ran (waiting for Kafka) */
        free(d->wd_marks);
        d->wd_marks = calloc(d->ntasks, sizeof *d->wd_marks);
        d->nwd_marks = d->wd_marks ? d->ntasks : 0;
        if (!d->wd_marks) return;
    }
    for (int i = 0; i < d->ntasks; i++) {
        int64_t elapsed = watchdog_check(d->tasks[i], &d->wd_marks[i], d->cfg->limit_time_ms);
        if (elapsed > 0) watchdog_fatal(d, d->tasks[i], elapsed);
    }
}

int64_t watchdog_check(task *t, watchdog_mark *w, int64_t limit) {
    int64_t grace = limit > 1000 ? limit : 1000;
    int64_t seq;
    int32_t cur;
    if (!task_in_call(t, &seq, &cur)) { w->seq = -1; return 0; }
    int64_t now = task_call_cpu_ms(t);
    if (seq != w->seq || cur != w->cur) {
        w->seq = seq; w->cur = cur; w->since_ms = now;
        w->call = task_call_id(t);
        w->armed = w->interrupted = 0;
        return 0;
    }
    int64_t elapsed = now - w->since_ms;
    int arm = elapsed >= WATCHDOG_ARM_MS && !w->armed;
    char reason[128];
    const char *interrupt = NULL;
    if (elapsed >= limit && !w->interrupted) {
        snprintf(reason, sizeof reason, "ran longer than %lld ms (limits.time)", (long long)limit);
        interrupt = reason;
    }
    if (arm) w->armed = 1;
    if (interrupt) w->interrupted = 1;
    if (arm || interrupt) task_call_overrun(t, w->call, arm, interrupt);
    return elapsed >= limit + grace ? elapsed : 0;
}
