/* The table of sink kinds, and the calls that reach a sink through its
 * kind's callbacks (see sink.h). */
#include "sink.h"
#include "source_memory.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const sink_ops sink_kafka_ops, sink_file_ops, sink_stdout_ops;

/* Every sink kind, in the order their options are tried (the default, with
 * no option, last): adding one is one line here. */
static const sink_ops *const kinds[] = { &sink_kafka_ops, &sink_file_ops, &sink_stdout_ops };

struct sink {
    const sink_ops *ops;
    void *impl;
    char *name;
    int64_t records;
    int failed;
    char error[512];
};

static const sink_ops *kind_of(const node *nd) {
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++)
        if (!kinds[i]->option || node_opt(nd, kinds[i]->option)) return kinds[i];
    return NULL;
}

sink *sink_open(const sink_args *a, char *err, size_t errlen) {
    const sink_ops *ops = a->memory ? &sink_memory_ops : kind_of(a->nd);
    if (!ops) { snprintf(err, errlen, "sink '%s': no such kind of sink", a->nd->name); return NULL; }
    sink *s = calloc(1, sizeof *s);
    if (!s || !(s->name = strdup(a->nd->name))) { free(s); snprintf(err, errlen, "out of memory"); return NULL; }
    s->ops = ops;
    if (!(s->impl = ops->open(s, a, err, errlen))) { free(s->name); free(s); return NULL; }
    return s;
}

int sink_write_kv(sink *s, const char *key, size_t klen, const char *p, size_t n, int64_t ts, const char *hdrs,
                  size_t hlen, const char *origin) {
    if (s->failed) return -1;
    sink_record r = { key, klen, p, n, ts, hdrs, hlen, origin };
    return s->ops->write(s, &r);
}

int sink_write(sink *s, const char *p, size_t n) { return sink_write_kv(s, NULL, 0, p, n, -1, NULL, 0, NULL); }

int sink_flush(sink *s) {
    if (s->failed) return -1;
    return s->ops->flush ? s->ops->flush(s) : 0;
}

int sink_prepare(sink *s, int64_t checkpoint) { return s->ops->prepare ? s->ops->prepare(s, checkpoint) : sink_flush(s); }
void sink_prepared(sink *s, json_t *parts) { if (s->ops->prepared) s->ops->prepared(s, parts); }
void sink_committed(sink *s) { if (s->ops->committed) s->ops->committed(s); }
void sink_abort(sink *s) { if (s->ops->abort) s->ops->abort(s); }
void sink_set_checkpoint(sink *s, int64_t next) { if (s->ops->set_checkpoint) s->ops->set_checkpoint(s, next); }
int sink_close(sink *s) { return s->ops->close ? s->ops->close(s) : sink_flush(s); }
struct kafka_sink *sink_kafka(sink *s) { return s->ops->producer ? s->ops->producer(s) : NULL; }
const char *sink_error(const sink *s) { return s->error; }
const char *sink_name(const sink *s) { return s->name; }
int64_t sink_records(const sink *s) { return s->records; }

void sink_destroy(sink *s) {
    if (!s) return;
    if (s->ops->destroy) s->ops->destroy(s->impl);
    free(s->name);
    free(s);
}

void *sink_impl(sink *s) { return s->impl; }
int sink_failed(const sink *s) { return s->failed; }
void sink_count(sink *s) { s->records++; }

void sink_fail(sink *s, int fail, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->error, sizeof s->error, fmt, ap);
    va_end(ap);
    if (fail) s->failed = 1;
}
