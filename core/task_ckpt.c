/* A task's part in checkpoints (task.h, "checkpoints"): what a manifest
 * keeps of it (its source partition's place, a keyed task's watermarks),
 * its sinks' two-phase commit when it has no worker any more, and what a
 * restore gives back.  checkpoint.c drives these; the fields they touch are
 * the task's (task_impl.h says which thread may touch which: the
 * coordinator runs on the event loop while workers are held at the barrier
 * or the task has ended, and before the workers start on a restore). */
#include "task_impl.h"
#include "sink.h"
#include "source.h"
#include "window.h"
#include <string.h>

json_t *task_ckpt_source(task *t) {
    if (t->source < 0 || !t->src) return NULL;
    int done = atomic_load(&t->status) == TASK_DONE;
    source_mark m = { done ? t->wm_at_end : t->io.wm, t->io.maxts, t->input_ended };
    return source_save(t->src, &m);
}

json_t *task_ckpt_watermarks(task *t) {
    if (t->source >= 0 || atomic_load(&t->status) != TASK_RUNNING) return NULL;
    json_t *wms = json_array(), *idle = json_array(), *kg = json_array();
    for (int k = 0; k < t->nin; k++) {
        json_array_append_new(wms, json_integer((json_int_t)t->chan_wm[k]));
        json_array_append_new(idle, json_boolean(t->chan_idle[k]));
    }
    if (t->nkgs > 0) {
        json_array_append_new(kg, json_integer(t->kgs[0]));
        json_array_append_new(kg, json_integer(t->kgs[t->nkgs - 1] + 1));
    }
    return json_pack("{s:s, s:I, s:o, s:o, s:o}", "task", t->name, "watermark", (json_int_t)t->io.wm,
                     "chan_wm", wms, "chan_idle", idle, "key_groups", kg);
}

void task_ckpt_sinks_prepared(task *t, json_t *parts) {
    for (int k = 0; k < t->nsinks; k++) sink_prepared(t->sinks[k], parts);
}

void task_ckpt_sinks_committed(task *t) {
    for (int k = 0; k < t->nsinks; k++) sink_committed(t->sinks[k]);
}

void task_ckpt_sinks_next(task *t, int64_t next) {
    for (int k = 0; k < t->nsinks; k++) sink_set_checkpoint(t->sinks[k], next);
}

void task_ckpt_sinks_abort(task *t) {
    for (int k = 0; k < t->nsinks; k++) sink_abort(t->sinks[k]);
}

void task_ckpt_request(task *t, int64_t id) {
    if (t->source >= 0) atomic_store(&t->ckpt_req, id);
}

int64_t task_ckpt_passed(const task *t) { return atomic_load(&t->ckpt_passed); }

int task_ckpt_prepare_ended(task *t, int64_t id, char *err, size_t errlen) {
    if (atomic_load(&t->status) != TASK_DONE || atomic_load(&t->ckpt_passed) >= id) return 0;
    int rc = 0;
    for (int k = 0; k < t->nsinks; k++)
        if (sink_prepare(t->sinks[k], id) < 0) { snprintf(err, errlen, "%s", sink_error(t->sinks[k])); rc = -1; }
    atomic_store(&t->ckpt_passed, id);
    return rc;
}

int task_reads(const task *t, const char *src, const char *label) {
    if (t->source < 0 || !t->src) return 0;
    const source_info *si = &t->cur.p->sources[t->source];
    if (src && strcmp(si->name, src) != 0) return 0;
    return strcmp(si->files[t->index], label ? label : "") == 0;
}

int task_ckpt_restore_source(task *t, json_t *e, char *err, size_t errlen) {
    if (source_restore(t->src, e, err, errlen) < 0) return -1;
    if (source_position(t->src) >= 0) t->position = source_position(t->src);   /* (Kafka's: once read) */
    t->io.wm = json_integer_value(json_object_get(e, "watermark"));
    t->io.maxts = json_integer_value(json_object_get(e, "max_ts"));
    return 0;
}

void task_ckpt_restore_watermarks(task *t, json_t *e) {
    json_t *wms = json_object_get(e, "chan_wm");
    if ((int)json_array_size(wms) != t->nin) return;
    json_t *idle = json_object_get(e, "chan_idle");
    for (int k = 0; k < t->nin; k++) {
        t->chan_wm[k] = json_integer_value(json_array_get(wms, k));
        t->chan_idle[k] = json_is_true(json_array_get(idle, k));
    }
    /* the task's own watermark (the minimum over inputs that were not idle) */
    int64_t wm = json_integer_value(json_object_get(e, "watermark"));
    if (json_object_get(e, "watermark") && wm > INT64_MIN && wm < WM_END) {
        t->io.wm = wm;
        for (int k = 0; k < t->nwins; k++) window_restore_watermark(t->wins[k].w, wm);
    }
}
