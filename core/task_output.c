/* A task's outputs: records shuffled to the keyed tasks downstream (a
 * batch per target, filled here and pushed at the end of a batch), its sinks
 * and the dead letters, and its log lines, as the Lua runtime reaches them
 * (ffi_api.h's sink, dead-letter and log exports; task_shuffle through
 * lua_api's shuffle).  See task.h. */
#include "task_impl.h"
#include "kafka.h"
#include "keygroup.h"
#include "log.h"
#include "sink.h"
#include "source_memory.h"
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- routing to keyed tasks --------------------------------------------- */

int task_output_of(void *tp, int node) {
    const task *t = tp;
    if (node < 1 || node > t->cur.p->nnodes) return -1;
    return t->cur.out_of_node[node];
}

/* The headers of the input record being processed, or NULL. */
static const char *current_headers(const task *t, size_t *len) {
    if (!t->io.recs || t->io.cur < 0 || t->io.cur >= t->io.n) return NULL;
    const eddy_rec *r = &t->io.recs[t->io.cur];
    *len = r->hdr_len;
    return r->hdr_len ? t->io.data + r->hdr_off : NULL;
}

int task_shuffle(void *tp, int node, const char *key, size_t klen, const char *p, size_t n, int64_t ts, int64_t wm,
                 int carry) {
    task *t = tp;
    out_port *op = &t->outs[t->cur.out_of_node[node]];
    int maxp = t->sh->cfg->max_parallelism;
    uint32_t kg = keygroup_of(key, klen, maxp);
    int target = keygroup_task(kg, maxp, op->ntargets);
    batch *b = op->pending[target];
    if (!b) {
        b = op->pending[target] = batch_create((int)t->sh->cfg->batch_size);
        if (!b) return -1;
    }
    eddy_rec *r = batch_add(b, key, klen, p, n);
    if (!r) return -1;
    r->ts = ts;
    r->wm = wm;
    if (t->io.recs && t->io.cur >= 0 && t->io.cur < t->io.n) {   /* where the record came from */
        const eddy_rec *in = &t->io.recs[t->io.cur];
        r->offset = in->offset;
        r->line = in->line;
        r->partition = in->partition;
        r->source = in->source;
    } else {
        r->source = UINT32_MAX;     /* a window's result at end of input: no input record */
    }
    r->port = (int16_t)node;
    r->kg = kg;
    r->flags = EDDY_REC_PACKED;
    size_t hlen = 0;
    const char *hdrs = carry ? current_headers(t, &hlen) : NULL;
    if (hdrs) {
        int idx = b->n - 1;
        long off = batch_reserve(b, hlen);
        if (off < 0) return -1;
        memcpy(b->data + off, hdrs, hlen);
        b->recs[idx].hdr_off = (uint64_t)off;
        b->recs[idx].hdr_len = (uint32_t)hlen;
    }
    return 0;
}

int task_flush_outputs(task *t) {
    for (int o = 0; o < t->nouts; o++) {
        out_port *op = &t->outs[o];
        if (op->remote) {
            if (task_shuffle_flush(t, op) < 0) return -1;
            continue;
        }
        for (int i = 0; i < op->ntargets; i++) {
            batch *b = op->pending[i];
            if (!b || b->n == 0) continue;
            op->pending[i] = NULL;
            t->records_out += b->n;
            if (channel_push(op->ch[i], CH_BATCH, b, 0) < 0) return -1;
        }
    }
    return 0;
}

/* ---- sinks and dead letters (FFI exports, ffi_api.h) -------------------- */

int eddy_sink_write(void *tp, int32_t idx, const char *p, size_t n) {
    task *t = tp;
    if (idx < 0 || idx >= t->nsinks) return -1;
    if (sink_write(t->sinks[idx], p, n) < 0) {
        log_task_error(t->name, "%s", sink_error(t->sinks[idx]));
        return -1;
    }
    return 0;
}

/* The input position of the record being processed, as the fields of a
 * dead letter ({"task", "source", "file" or "topic", "partition", "offset",
 * "line"}; only "task" for a window firing, which has none).  Owned text, or
 * NULL. */
static char *origin_json(const task *t) {
    json_t *j = json_pack("{s:s}", "task", t->name);
    if (!j) return NULL;
    const eddy_rec *r = t->io.recs && t->io.cur >= 0 && t->io.cur < t->io.n ? &t->io.recs[t->io.cur] : NULL;
    const plan *p = t->cur.p;
    const source_info *si = r && r->source < (uint32_t)p->nsources ? &p->sources[r->source] : NULL;
    if (si) {
        json_object_set_new(j, "source", json_string(si->name));
        int part = r->partition;
        if (si->kind == SRC_KAFKA && part >= 0 && part < si->nfiles) {
            json_object_set_new(j, "topic", json_string(si->topics[si->ktopic[part]]));
            json_object_set_new(j, "partition", json_integer(si->kpart[part]));
        } else {
            if (part >= 0 && part < si->nfiles) json_object_set_new(j, "file", json_string(si->files[part]));
            json_object_set_new(j, "partition", json_integer(part));
        }
        json_object_set_new(j, "offset", json_integer(r->offset));
        if (r->line > 0) json_object_set_new(j, "line", json_integer(r->line));
    }
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return s;
}

int eddy_sink_write_kv(void *tp, int32_t idx, const char *key, size_t klen, const char *p, size_t n, int64_t ts,
                       int32_t carry) {
    task *t = tp;
    if (idx < 0 || idx >= t->nsinks) return -1;
    size_t hlen = 0;
    const char *hdrs = carry ? current_headers(t, &hlen) : NULL;
    /* under dead_letter, a message Kafka refuses later is dead-lettered with where it came from */
    char *origin = t->sh->cfg->on_error == ON_ERROR_DEAD_LETTER && sink_kafka(t->sinks[idx]) ? origin_json(t) : NULL;
    int rc = sink_write_kv(t->sinks[idx], key, klen, p, n, ts, hdrs, hlen, origin);
    free(origin);
    if (rc == -1) log_task_error(t->name, "%s", sink_error(t->sinks[idx]));
    return rc;
}

const char *eddy_sink_error(void *tp, int32_t idx) {
    task *t = tp;
    return idx >= 0 && idx < t->nsinks ? sink_error(t->sinks[idx]) : "";
}

int eddy_dead_letter(void *tp, const char *p, size_t n) {
    task *t = tp;
    task_shared *sh = t->sh;
    int rc = 0;
    if (sh->cfg->dead_letter_kafka && sh->kafka) {
        char err[512];
        if (kafka_dead_letter(sh->kafka, p, n, err, sizeof err) < 0) {
            log_task_error(t->name, "%s", err);
            return -1;
        }
        return 0;
    }
    pthread_mutex_lock(&sh->dead_letter_mu);
    if (!sh->dead_letter) {
        sh->dead_letter = fopen(sh->cfg->dead_letter_file, "a");
        if (!sh->dead_letter) {
            log_task_error(t->name, "cannot open the dead-letter file %s (dead_letter.file): %m",
                           sh->cfg->dead_letter_file);
            rc = -1;
        }
    }
    if (sh->dead_letter) {
        if (fwrite(p, 1, n, sh->dead_letter) != n || fputc('\n', sh->dead_letter) == EOF ||
            fflush(sh->dead_letter) != 0) {
            log_task_error(t->name, "write to the dead-letter file %s failed: %m", sh->cfg->dead_letter_file);
            rc = -1;
        }
    }
    pthread_mutex_unlock(&sh->dead_letter_mu);
    return rc;
}

int eddy_test_side(void *tp, const char *name, const char *p, size_t n) {
    task *t = tp;
    if (!t->sh->memory) return 0;
    mem_output *o = mem_output_get(t->sh->memory, name, 1);
    mem_record r = { .val = (char *)p, .vlen = n, .ts = TS_NONE };
    return o && mem_queue_push(&o->q, &r) == 0 ? 0 : -1;
}

/* ---- the runtime's log (FFI export) -------------------------------------- */

void eddy_log(void *tp, int32_t level, int32_t limited, const char *msg) {
    task *t = tp;
    if (level < log_level_current) return;
    if (limited && level < LOG_ERROR) {
        if (!log_ratelimited(&t->log_window, &t->log_count, 5)) return;
    }
    log_write(level, t->name, "%s", msg);
}
