/* A task's side of shuffle = "kafka" (shuffle.h, changelog.h): a task
 * before a key_by writes its records as frames to the partitions of the
 * keyed stage's repartition topic, with its watermark, idle and end marks;
 * a keyed task reads its partition while the group assigns it here, after
 * restoring its state from the changelogs, and turns the frames back into
 * record batches (one input at a time, as channels would deliver them)
 * and marks.  See task.h. */
#include "task_impl.h"
#include "changelog.h"
#include "clock.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "shuffle.h"
#include "source.h"
#include "timer.h"
#include "window.h"
#include <stdlib.h>
#include <string.h>

#define RESTORE_CHUNK 20000   /* changelog records a restore applies per step */

struct shuffle_in {
    changelog *clog;            /* NULL: the stage keeps no state */
    batch *run;                 /* records of one input on their way to Lua */
    int64_t restored;           /* the assignment (source_generation) whose state is restored; -1: none */
    changelog_restore *restore; /* a restore in progress */
    int64_t restore_from_ms;
    state_key mk;               /* the key of the input watermarks */
    char *marks; size_t mlen, mcap;   /* them as last written */
    _Atomic int64_t r_records, r_bytes, r_left, r_ms;   /* the last restore's progress (/status, /metrics) */
    atomic_int restoring;
    atomic_int standby;         /* keep a warm copy while another instance owns the task (standby = N) */
    atomic_int standby_on;      /* a warm copy is kept (for /status) */
    _Atomic int64_t w_records;  /* records it applied */
    changelog_restore *warm;    /* the copy being kept: the changelogs followed */
    int64_t *warm_from;         /* where a takeover's restore goes on from (NULL: the beginning, after a wipe) */
    int64_t log_window; int log_count;
};

/* ---- writing -------------------------------------------------------------- */

int task_add_remote_output(task *t, int stage, int ntargets, uint32_t input, const char *topic, char *err,
                           size_t errlen) {
    if (task_add_output(t, stage, NULL, ntargets) < 0) { snprintf(err, errlen, "out of memory"); return -1; }
    out_port *op = &t->outs[t->nouts - 1];
    op->input = input;
    if (!(op->remote = kafka_sink_get(t->sh->kafka, topic, topic, NULL, err, errlen))) return -1;
    t->remote_outs = 1;
    return 0;
}

int task_shuffle_flush(task *t, out_port *op) {
    char err[512];
    for (int i = 0; i < op->ntargets; i++) {
        batch *b = op->pending[i];
        if (!b || b->n == 0) continue;
        for (int r = 0; r < b->n; r++) {
            const eddy_rec *rec = &b->recs[r];
            long n = frame_encode_record(b, rec, op->input, &op->fbuf, &op->fcap);
            if (n < 0) { task_fail(t, "%s", "out of memory"); return -1; }
            if (kafka_sink_send_to(op->remote, i, b->data + rec->key_off, rec->key_len, op->fbuf, (size_t)n,
                                   rec->ts == TS_NONE ? -1 : rec->ts, NULL, 0, NULL, err, sizeof err) < 0) {
                task_fail(t, "%s", err);
                return -1;
            }
        }
        t->records_out += b->n;
        batch_clear(b);
    }
    return 0;
}

void task_shuffle_mark(task *t, out_port *op, msg_kind kind, int64_t value) {
    int fk;
    if (kind == CH_WATERMARK) fk = value == WM_IDLE ? FRAME_IDLE : FRAME_WATERMARK;
    /* the end of input, not a stop: another instance goes on with a partition
     * this one stops reading (and one read elsewhere ends there) */
    else if (kind == CH_EOS && value != EOS_STOP && !(t->src && source_elsewhere(t->src))) fk = FRAME_END;
    else return;         /* barriers, checkpoints and markers stay inside an instance */
    char f[FRAME_MARK_LEN], err[512];
    size_t n = frame_encode_mark(fk, op->input, value, f);
    for (int i = 0; i < op->ntargets; i++)
        if (kafka_sink_send_to(op->remote, i, NULL, 0, f, n, -1, NULL, 0, NULL, err, sizeof err) < 0) {
            task_fail(t, "%s", err);
            return;
        }
}

int task_shuffle_producers(task *t, kafka_sink **ks, int max) {
    int n = 0;
    for (int o = 0; o < t->nouts && n < max; o++)
        if (t->outs[o].remote) ks[n++] = t->outs[o].remote;
    if (t->rin && t->rin->clog) n += changelog_producers(t->rin->clog, ks + n, max - n);
    return n;
}

/* ---- the keyed task -------------------------------------------------------- */

int task_shuffle_open(task *t, char *err, size_t errlen) {
    struct shuffle_in *in = calloc(1, sizeof *in);
    if (!in || !(in->run = batch_create((int)t->sh->cfg->batch_size))) {
        free(in);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    t->rin = in;
    in->restored = -1;
    in->clog = changelog_create(t->sh->kafka, t->sh->cfg, t->sh->p, t->st, t->index, err, errlen);
    if (!in->clog && err[0]) return -1;
    if (in->clog && t->stx) state_tx_set_log(t->stx, changelog_log, in->clog);
    return 0;
}

void task_shuffle_close(task *t) {
    struct shuffle_in *in = t->rin;
    if (!in) return;
    changelog_restore_end(in->restore);
    changelog_restore_end(in->warm);
    changelog_destroy(in->clog);
    batch_destroy(in->run);
    state_key_free(&in->mk);
    free(in->marks);
    free(in);
    t->rin = NULL;
}

/* The input watermarks as stored: per input its watermark (8 bytes,
 * little-endian), idle and ended (1 byte each), after a value header. */
static size_t encode_marks(task *t, char *out) {
    size_t n = state_value_header(out, 0);
    for (int c = 0; c < t->nin; c++) {
        uint64_t w = (uint64_t)t->chan_wm[c];
        for (int b = 0; b < 8; b++) out[n++] = (char)(w >> (8 * b));
        out[n++] = (char)t->chan_idle[c];
        out[n++] = (char)t->ended[c];
    }
    return n;
}

int task_shuffle_save_marks(task *t) {
    struct shuffle_in *in = t->rin;
    if (!in->clog || !t->stx) return 0;
    size_t need = STATE_HDR_MAX + (size_t)t->nin * 10;
    if (in->mcap < need * 2) {
        char *m = realloc(in->marks, need * 2);
        if (!m) { task_fail(t, "%s", "out of memory"); return -1; }
        in->marks = m;
        in->mcap = need * 2;
    }
    char *cur = in->marks + need;
    size_t n = encode_marks(t, cur);
    if (n == in->mlen && memcmp(cur, in->marks, n) == 0) return 0;
    if (changelog_marks_key(in->clog, &in->mk) < 0 || state_tx_put(t->stx, in->mk.p, in->mk.len, cur, n) < 0) {
        task_fail(t, "%s", "cannot store the input watermarks");
        return -1;
    }
    memcpy(in->marks, cur, n);
    in->mlen = n;
    return 0;
}

/* The restored input watermarks (none: as at the start). */
static void load_marks(task *t) {
    struct shuffle_in *in = t->rin;
    size_t vl = 0;
    const char *v = changelog_marks_key(in->clog, &in->mk) == 0 ? state_tx_get(t->stx, in->mk.p, in->mk.len, &vl) : NULL;
    size_t plen = 0;
    const char *p = v ? state_value_payload(v, vl, 0, &plen) : NULL;
    t->eos = 0;
    for (int c = 0; c < t->nin; c++) {
        int64_t w = TS_NONE;
        uint8_t idle = 0, ended = 0;
        if (p && plen >= (size_t)(c + 1) * 10) {
            uint64_t u = 0;
            for (int b = 0; b < 8; b++) u |= (uint64_t)(unsigned char)p[c * 10 + b] << (8 * b);
            w = (int64_t)u;
            idle = (uint8_t)p[c * 10 + 8];
            ended = (uint8_t)p[c * 10 + 9];
        }
        __atomic_store_n(&t->chan_wm[c], w, __ATOMIC_RELAXED);
        __atomic_store_n(&t->chan_idle[c], idle, __ATOMIC_RELAXED);
        __atomic_store_n(&t->ended[c], ended, __ATOMIC_RELAXED);
        t->eos += ended;
    }
    in->mlen = 0;                /* (written again at the next change) */
}

/* The group gave this task to this instance: wipe what the store has of its
 * key groups, replay its changelogs, then go on from the restored marks.
 * One chunk per step, so the worker serves other tasks meanwhile. */
static step_result restore_step(task *t, int64_t gen) {
    struct shuffle_in *in = t->rin;
    char err[1024];
    if (!in->clog) {                 /* no state: only the watermarks start afresh */
        __atomic_store_n(&in->restored, gen, __ATOMIC_RELEASE);    /* (task_shuffle_ready reads it) */
        return STEP_PROGRESS;
    }
    if (!in->restore) {
        int64_t *from = NULL;
        if (in->warm) {                 /* a standby takes over: only the tail is left to read */
            from = changelog_restore_positions(in->warm);
            changelog_restore_end(in->warm);
            in->warm = NULL;
        }
        if (!from && changelog_wipe(in->clog, state_tx_db(t->stx), t->kgs, t->nkgs, err, sizeof err) < 0) {
            task_fail(t, "%s", err);
            return STEP_FAILED;
        }
        state_tx_forget(t->stx);
        in->restore = changelog_restore_begin(in->clog, t->sh->kafka, from, err, sizeof err);
        free(from);
        if (!in->restore) {
            task_fail(t, "%s", err);
            return STEP_FAILED;
        }
        in->restore_from_ms = clock_mono_ms();
        atomic_store(&in->r_records, 0);
        atomic_store(&in->r_bytes, 0);
        atomic_store(&in->restoring, 1);
        log_task_info(t->name, "restoring its state from %d changelog%s", changelog_count(in->clog),
                      changelog_count(in->clog) == 1 ? "" : "s");
    }
    int done = 0;
    state_tx_set_log(t->stx, NULL, NULL);              /* what is restored is in the changelog already */
    int n = changelog_restore_step(in->restore, t->stx, RESTORE_CHUNK, 100, &done, err, sizeof err);
    state_tx_set_log(t->stx, changelog_log, in->clog);
    if (n < 0) { task_fail(t, "%s", err); return STEP_FAILED; }
    int64_t recs, bytes, left;
    changelog_restore_progress(in->restore, &recs, &bytes, &left);
    atomic_store(&in->r_records, recs);
    atomic_store(&in->r_bytes, bytes);
    atomic_store(&in->r_left, done ? 0 : left);
    atomic_store(&in->r_ms, clock_mono_ms() - in->restore_from_ms);
    if (!done) return STEP_PROGRESS;
    changelog_restore_end(in->restore);
    in->restore = NULL;
    state_tx_forget(t->stx);
    pthread_mutex_lock(&t->swap_mu);
    for (int i = 0; i < t->nwins; i++) window_rescan(t->wins[i].w);
    pthread_mutex_unlock(&t->swap_mu);
    load_marks(t);
    __atomic_store_n(&in->restored, gen, __ATOMIC_RELEASE);
    atomic_store(&in->restoring, 0);
    log_task_info(t->name, "restored %lld records (%lld bytes) in %lld ms", (long long)recs, (long long)bytes,
                  (long long)(clock_mono_ms() - in->restore_from_ms));
    return task_call_lua(t, t->cur.inputs_ref, NULL, -1) < 0 ? STEP_FAILED : STEP_PROGRESS;
}

/* standby = N: while another instance owns the task, follow its changelogs
 * into the store here, so that a takeover reads only their tail. */
static step_result standby_step(task *t) {
    struct shuffle_in *in = t->rin;
    char err[1024];
    if (!in->warm) {
        if (changelog_wipe(in->clog, state_tx_db(t->stx), t->kgs, t->nkgs, err, sizeof err) < 0) {
            log_task_error(t->name, "standby: %s", err);
            return STEP_IDLE;
        }
        state_tx_forget(t->stx);
        __atomic_store_n(&in->restored, -1, __ATOMIC_RELEASE);   /* the store holds the standby's copy now */
        if (!(in->warm = changelog_restore_begin(in->clog, t->sh->kafka, NULL, err, sizeof err))) {
            log_task_error(t->name, "standby: %s", err);
            return STEP_IDLE;
        }
        changelog_restore_follow(in->warm);
        atomic_store(&in->standby_on, 1);
        log_task_info(t->name, "standby: keeping a warm copy of its state");
    }
    int done;
    state_tx_set_log(t->stx, NULL, NULL);
    int n = changelog_restore_step(in->warm, t->stx, RESTORE_CHUNK, 0, &done, err, sizeof err);
    state_tx_set_log(t->stx, changelog_log, in->clog);
    if (n < 0) {
        log_task_error(t->name, "standby: %s (the copy is dropped)", err);
        changelog_restore_end(in->warm);
        in->warm = NULL;
        atomic_store(&in->standby_on, 0);
        return STEP_IDLE;
    }
    int64_t recs, bytes, left;
    changelog_restore_progress(in->warm, &recs, &bytes, &left);
    atomic_store(&in->w_records, recs);
    return n > 0 ? STEP_PROGRESS : STEP_IDLE;
}

int task_is_remote_keyed(const task *t) { return t->rin != NULL; }

void task_set_standby(task *t, int on) { if (t->rin) atomic_store(&t->rin->standby, on); }

/* The records gathered for one input go to Lua as one batch.  0 or -1. */
static int flush_run(task *t, int input) {
    batch *run = t->rin->run;
    if (run->n == 0) return 0;
    t->io.channel = input;
    __atomic_store_n(&t->chan_idle[input], 0, __ATOMIC_RELAXED);   /* records again: it counts in the minimum */
    int rc = task_call_lua(t, t->cur.batch_ref, run, -1);
    batch_clear(run);
    return rc;
}

/* A mark of input c.  1 when every input has ended, 0, or -1. */
static int apply_mark(task *t, const frame *f) {
    uint32_t c = f->input;
    if (f->kind == FRAME_WATERMARK) {
        __atomic_store_n(&t->chan_idle[c], 0, __ATOMIC_RELAXED);
        if (f->value > t->chan_wm[c]) __atomic_store_n(&t->chan_wm[c], f->value, __ATOMIC_RELAXED);
    } else if (f->kind == FRAME_IDLE) {
        __atomic_store_n(&t->chan_idle[c], 1, __ATOMIC_RELAXED);
    } else if (!t->ended[c]) {
        __atomic_store_n(&t->ended[c], 1, __ATOMIC_RELAXED);
        __atomic_store_n(&t->chan_idle[c], 0, __ATOMIC_RELAXED);
        __atomic_store_n(&t->chan_wm[c], WM_END, __ATOMIC_RELAXED);
        t->eos++;
    }
    if (task_call_lua(t, t->cur.inputs_ref, NULL, -1) < 0) return -1;
    return t->eos == t->nin;
}

/* A message of the repartition topic that is not a frame eddy wrote. */
static void foreign(task *t, const eddy_rec *r, const char *why) {
    if (!log_ratelimited(&t->rin->log_window, &t->rin->log_count, 5)) return;
    const source_info *si = &t->cur.p->sources[t->source];
    log_task_error(t->name, "topic %s partition %d offset %lld: %s: skipped", si->topics[0], t->index,
                   (long long)r->offset, why);
}

/* The frames of batch b: records to Lua a run per input, marks between
 * them.  STEP_PROGRESS, STEP_DONE (every input ended) or STEP_FAILED. */
static step_result process_frames(task *t, batch *b) {
    batch *run = t->rin->run;
    int run_input = -1;
    for (int i = 0; i < b->n; i++) {
        const eddy_rec *r = &b->recs[i];
        frame f;
        if ((r->flags & EDDY_REC_MALFORMED) || frame_decode(b->data + r->val_off, r->val_len, &f) < 0) {
            foreign(t, r, "not a frame eddy wrote");
            continue;
        }
        if (f.input >= (uint32_t)t->nin) {
            foreign(t, r, "a frame from an input this stage does not have (did the input's partitions change?)");
            continue;
        }
        if (f.kind != FRAME_RECORD) {
            if (flush_run(t, run_input) < 0) return STEP_FAILED;
            int all = apply_mark(t, &f);
            if (all < 0) return STEP_FAILED;
            if (all) { t->input_ended = 1; return task_finish(t); }
            continue;
        }
        if (run->n > 0 && (int)f.input != run_input && flush_run(t, run_input) < 0) return STEP_FAILED;
        run_input = (int)f.input;
        eddy_rec *o = batch_add(run, b->data + r->key_off, r->key_len, f.val, f.vlen);
        if (!o) { task_fail(t, "%s", "out of memory"); return STEP_FAILED; }
        o->ts = f.ts; o->wm = f.value; o->offset = f.offset; o->line = f.line; o->partition = f.partition;
        o->source = f.source; o->port = f.port; o->kg = f.kg; o->flags = EDDY_REC_PACKED;
        if (f.hlen) {
            int idx = run->n - 1;
            long off = batch_reserve(run, f.hlen);
            if (off < 0) { task_fail(t, "%s", "out of memory"); return STEP_FAILED; }
            memcpy(run->data + off, f.hdrs, f.hlen);
            run->recs[idx].hdr_off = (uint64_t)off;
            run->recs[idx].hdr_len = (uint32_t)f.hlen;
        }
    }
    return flush_run(t, run_input) < 0 ? STEP_FAILED : STEP_PROGRESS;
}

step_result task_step_remote(task *t) {
    struct shuffle_in *in = t->rin;
    task_rollout_at_boundary(t);              /* between two batches, as a source */
    int64_t req = atomic_load(&t->ckpt_req);
    if (req > atomic_load(&t->ckpt_passed))
        return task_pass_checkpoint(t, req) < 0 ? STEP_FAILED : STEP_PROGRESS;
    if (task_outputs_full(t) && source_state(t->src) != SOURCE_REVOKING) return STEP_BLOCKED;
    if (atomic_load(&t->sh->stopping)) return task_finish(t);
    int reading = source_state(t->src) == SOURCE_READING;
    if (!reading && in->restore) {            /* taken away while restoring: start again next time */
        changelog_restore_end(in->restore);
        in->restore = NULL;
        atomic_store(&in->restoring, 0);
    }
    if (!reading && in->clog && atomic_load(&in->standby) && !atomic_load(&t->sh->stopping)) {
        step_result sr = standby_step(t);
        if (sr != STEP_IDLE) return sr;
    } else if (!reading && in->warm) {        /* no longer a standby here */
        changelog_restore_end(in->warm);
        in->warm = NULL;
        atomic_store(&in->standby_on, 0);
    }
    if (reading) {
        int64_t gen = source_generation(t->src);
        if (in->restored != gen) return restore_step(t, gen);
        if (task_maybe_tick(t) < 0) return STEP_FAILED;
    }
    int eof = 0, n;
    step_result r = task_read_source(t, &n, &eof);
    if (n <= 0) return n < 0 ? r : STEP_IDLE;
    r = process_frames(t, t->inbatch);
    if (r == STEP_PROGRESS && t->nouts > 0) task_forward_watermark(t);
    return r;
}

/* ---- /status and /metrics ---- */

static double restore_rate(struct shuffle_in *in) {
    int64_t ms = atomic_load(&in->r_ms);
    return ms > 0 ? (double)atomic_load(&in->r_records) * 1000.0 / (double)ms : 0;
}

void task_restore_samples(task *t, struct evbuffer *out, const char *name, int which) {
    struct shuffle_in *in = t->rin;
    if (!in || !in->clog) return;
    double v = which == 0 ? (double)atomic_load(&in->r_records) : which == 1 ? (double)atomic_load(&in->r_bytes)
             : which == 2 ? (double)atomic_load(&in->r_left) : which == 3 ? restore_rate(in)
             : (double)atomic_load(&in->w_records);
    const char *labels[] = {"task", t->name, NULL};
    metrics_sample(out, name, labels, v);
}

int task_shuffle_ready(task *t) {
    struct shuffle_in *in = t->rin;
    if (!in || !t->src) return 1;
    return !atomic_load(&in->restoring) &&
           __atomic_load_n(&in->restored, __ATOMIC_ACQUIRE) == source_generation(t->src);
}

void task_shuffle_status(task *t, json_t *out) {
    struct shuffle_in *in = t->rin;
    if (!in) return;
    json_t *r = json_object();
    json_object_set_new(r, "restoring", json_boolean(atomic_load(&in->restoring)));
    json_object_set_new(r, "records", json_integer(atomic_load(&in->r_records)));
    json_object_set_new(r, "bytes", json_integer(atomic_load(&in->r_bytes)));
    json_object_set_new(r, "remaining", json_integer(atomic_load(&in->r_left)));
    json_object_set_new(r, "records_per_second", json_real(restore_rate(in)));
    json_object_set_new(r, "ms", json_integer(atomic_load(&in->r_ms)));
    json_object_set_new(out, "restore", r);
    if (atomic_load(&in->standby_on))
        json_object_set_new(out, "standby", json_pack("{s:I}", "records", (json_int_t)atomic_load(&in->w_records)));
}
