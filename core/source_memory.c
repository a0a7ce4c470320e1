/* source_memory — see source_memory.h. */
#include "source_memory.h"
#include "batch.h"
#include "source_file.h"
#include <stdlib.h>
#include <string.h>

static char *dup_bytes(const char *p, size_t n) {
    char *d = malloc(n ? n : 1);
    if (d && n) memcpy(d, p, n);
    return d;
}

int mem_queue_push(mem_queue *q, const mem_record *r) {
    if (q->n == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 16;
        mem_record *nr = realloc(q->recs, sizeof *nr * cap);
        if (!nr) return -1;
        q->recs = nr;
        q->cap = cap;
    }
    mem_record c = *r;
    c.key = r->key ? dup_bytes(r->key, r->klen) : NULL;
    c.val = r->val ? dup_bytes(r->val, r->vlen) : NULL;
    c.hdrs = r->hdrs ? dup_bytes(r->hdrs, r->hlen) : NULL;
    if ((r->key && !c.key) || (r->val && !c.val) || (r->hdrs && !c.hdrs)) {
        free(c.key); free(c.val); free(c.hdrs);
        return -1;
    }
    q->recs[q->n++] = c;
    return 0;
}

static void record_free(mem_record *r) { free(r->key); free(r->val); free(r->hdrs); }

void mem_queue_drop_read(mem_queue *q) {
    if (q->head == 0) return;           /* (nothing read; recs may be NULL) */
    for (size_t i = 0; i < q->head; i++) record_free(&q->recs[i]);
    memmove(q->recs, q->recs + q->head, sizeof *q->recs * (q->n - q->head));
    q->n -= q->head;
    q->head = 0;
}

void mem_queue_free(mem_queue *q) {
    for (size_t i = 0; i < q->n; i++) record_free(&q->recs[i]);
    free(q->recs);
    memset(q, 0, sizeof *q);
}

/* ---- the source kind --------------------------------------------------- */

typedef struct mem_source {
    mem_partition *part;        /* borrowed from the driver's mem_input */
    int index;                  /* the partition's index in its source */
    uint32_t source;            /* the source's index */
    int kafka;                  /* the source is a Kafka one: keys, timestamps, headers, offsets */
    source_reader *reader;      /* a file or stdin source: the file reader over the pipe */
} mem_source;

static void *mem_open(const source_info *si, int index, int partition, char *err, size_t errlen) {
    mem_input *in = si->memory;
    if (partition < 0 || partition >= in->npart) {
        snprintf(err, errlen, "source '%s' has no partition %d", si->name, partition);
        return NULL;
    }
    mem_source *m = calloc(1, sizeof *m);
    if (!m) { snprintf(err, errlen, "out of memory"); return NULL; }
    m->part = &in->parts[partition];
    m->index = partition;
    m->source = (uint32_t)index;
    m->kafka = si->kind == SRC_KAFKA;
    if (!m->kafka && !m->part->exact && !(m->reader = source_file_open_fd(si, index, partition, m->part->rfd, err, errlen))) {
        free(m);
        return NULL;
    }
    return m;
}

static int mem_read(void *impl, batch *b, int max, int *eof, char *err, size_t errlen) {
    mem_source *m = impl;
    if (m->reader) return source_file_read(m->reader, b, max, eof, err, errlen);
    mem_queue *q = &m->part->q;
    int n = 0;
    while (n < max && q->head < q->n) {
        const mem_record *r = &q->recs[q->head];
        int whole = m->kafka || m->part->exact;
        eddy_rec *rec = batch_add(b, whole ? r->key : NULL, whole && r->key ? r->klen : 0, r->val ? r->val : "",
                                  r->val ? r->vlen : 0);
        if (!rec) { snprintf(err, errlen, "out of memory"); return -1; }
        rec->flags = (int16_t)r->flags;
        if (m->kafka && r->key) rec->flags |= EDDY_REC_KEY;
        if (m->kafka && !r->val) rec->flags |= EDDY_REC_TOMBSTONE;
        rec->ts = m->kafka ? r->ts : TS_NONE;
        rec->offset = m->part->read;
        rec->line = m->kafka ? 0 : m->part->read + 1;     /* as a file's records: the n-th line */
        if (m->part->exact) { rec->ts = r->ts; rec->offset = r->offset; rec->line = r->line; }
        rec->partition = m->index;
        rec->source = m->source;
        if (r->hdrs && whole) {
            long off = batch_reserve(b, r->hlen);
            if (off < 0) { snprintf(err, errlen, "out of memory"); return -1; }
            memcpy(b->data + off, r->hdrs, r->hlen);
            rec = &b->recs[b->n - 1];
            rec->hdr_off = (uint64_t)off;
            rec->hdr_len = (uint32_t)r->hlen;
        }
        q->head++;
        m->part->read++;
        n++;
    }
    mem_queue_drop_read(q);
    *eof = m->part->ended && q->head == q->n;
    return n;
}

static int64_t mem_position(void *impl) {
    mem_source *m = impl;
    return m->reader ? source_file_position(m->reader) : m->part->read;
}

static int mem_live(void *impl) { return !((mem_source *)impl)->part->ended; }

static void mem_close(void *impl) {
    mem_source *m = impl;
    if (m) source_file_close(m->reader);
    free(m);
}

static const char *const mem_options[] = { NULL };

const source_ops source_memory_ops = {
    .kind = SRC_MEMORY, .name = "memory", .options = mem_options,
    .open = mem_open, .read = mem_read, .position = mem_position, .live = mem_live, .close = mem_close,
};

/* ---- outputs and the sink kind ----------------------------------------- */

mem_output *mem_output_get(mem_outputs *o, const char *name, int side) {
    for (int i = 0; i < o->n; i++)
        if (o->outs[i].side == side && strcmp(o->outs[i].name, name) == 0) return &o->outs[i];
    mem_output *no = realloc(o->outs, sizeof *no * (o->n + 1));
    if (!no) return NULL;
    o->outs = no;
    mem_output *m = &o->outs[o->n];
    memset(m, 0, sizeof *m);
    if (!(m->name = strdup(name))) return NULL;
    m->side = side;
    o->n++;
    return m;
}

void mem_outputs_free(mem_outputs *o) {
    for (int i = 0; i < o->n; i++) { free(o->outs[i].name); mem_queue_free(&o->outs[i].q); }
    free(o->outs);
    o->outs = NULL;
    o->n = 0;
}

/* A sink's state: the driver's output of that name.  Outputs grow while
 * sinks are open (a side output appears on first use), so it is found by
 * name at each write rather than kept as a pointer. */
typedef struct mem_sink {
    mem_outputs *outs;
    char *name;
} mem_sink;

static void *msink_open(sink *s, const sink_args *a, char *err, size_t errlen) {
    (void)s;
    mem_sink *m = calloc(1, sizeof *m);
    if (!m || !(m->name = strdup(a->nd->name)) || !mem_output_get(a->memory, a->nd->name, 0)) {
        if (m) free(m->name);
        free(m);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    m->outs = a->memory;
    return m;
}

static int msink_write(sink *s, const sink_record *r) {
    mem_sink *m = sink_impl(s);
    mem_output *o = mem_output_get(m->outs, m->name, 0);
    mem_record mr = { .key = (char *)r->key, .klen = r->klen, .val = (char *)r->val, .vlen = r->vlen,
                      .hdrs = (char *)r->hdrs, .hlen = r->hlen, .ts = r->ts };
    if (!o || mem_queue_push(&o->q, &mr) < 0) { sink_fail(s, 1, "sink '%s': out of memory", m->name); return -1; }
    o->total++;
    sink_count(s);
    return 0;
}

static void msink_destroy(void *impl) {
    mem_sink *m = impl;
    if (m) free(m->name);
    free(m);
}

static const char *const msink_options[] = { NULL };

const sink_ops sink_memory_ops = {
    .name = "memory", .option = NULL, .options = msink_options,
    .open = msink_open, .write = msink_write, .destroy = msink_destroy,
};
