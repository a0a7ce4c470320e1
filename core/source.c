/* The table of source kinds, and the calls that reach a partition through
 * its kind's callbacks (see source.h). */
#include "source.h"
#include <stdlib.h>
#include <string.h>
#include "source_file.h"
#include "source_kafka.h"
#include "source_memory.h"

/* Every source kind: adding one is one line here. */
static const source_ops *const kinds[] = { &source_file_ops, &source_stdin_ops, &source_kafka_ops };

struct source {
    const source_ops *ops;
    void *impl;
    const source_info *si;     /* borrowed: the daemon keeps every plan until exit */
    int partition;
};

const source_ops *source_ops_of(source_kind kind) {
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++)
        if (kinds[i]->kind == kind) return kinds[i];
    return NULL;
}

source *source_open(const source_info *si, int index, int partition, char *err, size_t errlen) {
    const source_ops *ops = si->memory ? &source_memory_ops : source_ops_of(si->kind);
    if (!ops) { snprintf(err, errlen, "source '%s': no such kind of source", si->name); return NULL; }
    source *s = calloc(1, sizeof *s);
    if (!s) { snprintf(err, errlen, "out of memory"); return NULL; }
    s->ops = ops;
    s->si = si;
    s->partition = partition;
    if (!(s->impl = ops->open(si, index, partition, err, errlen))) { free(s); return NULL; }
    return s;
}

void source_close(source *s) {
    if (!s) return;
    if (s->ops->close) s->ops->close(s->impl);
    free(s);
}

const source_ops *source_ops_get(const source *s) { return s->ops; }
void *source_impl(source *s) { return s->impl; }

int source_read(source *s, batch *b, int max, int *eof, char *err, size_t errlen) {
    return s->ops->read(s->impl, b, max, eof, err, errlen);
}

int64_t source_position(source *s) { return s->ops->position(s->impl); }

json_t *source_save(source *s, const source_mark *m) {
    return s->ops->save ? s->ops->save(s->impl, s->si, s->partition, m) : NULL;
}

int source_restore(source *s, json_t *e, char *err, size_t errlen) {
    if (!s->ops->restore) { snprintf(err, errlen, "a %s source cannot continue where it stopped", s->ops->name); return -1; }
    return s->ops->restore(s->impl, e, err, errlen);
}

const char *source_entry_label(json_t *e) {
    const char *file = json_string_value(json_object_get(e, "file"));
    return file ? file : json_string_value(json_object_get(e, "partition_label"));
}

void source_status(source *s, json_t *out) { if (s->ops->status) s->ops->status(s->impl, s->si, s->partition, out); }
int source_resumes(const source *s) { return s->ops->resumes; }
int source_live(source *s) { return s->ops->live && s->ops->live(s->impl); }
int source_caught_up(source *s) { return !s->ops->caught_up || s->ops->caught_up(s->impl); }
int source_state(source *s) { return s->ops->state ? s->ops->state(s->impl) : SOURCE_READING; }
int source_elsewhere(source *s) { return s->ops->elsewhere && s->ops->elsewhere(s->impl); }
int source_at_end(source *s) { return !s->ops->at_end || s->ops->at_end(s->impl); }
int source_ended(source *s) { return s->ops->ended && s->ops->ended(s->impl); }
int64_t source_generation(source *s) { return s->ops->generation ? s->ops->generation(s->impl) : 0; }
int64_t source_bound_left(source *s) { return s->ops->bound_left ? s->ops->bound_left(s->impl) : INT64_MAX; }
void source_pause(source *s, int paused) { if (s->ops->pause) s->ops->pause(s->impl, paused); }
int source_marks(const source *s) { return s->ops->acked != NULL; }
void source_drain(source *s, uint64_t marker) { if (s->ops->drain) s->ops->drain(s->impl, marker); }
void source_acked(source *s, uint64_t marker, int64_t position) { if (s->ops->acked) s->ops->acked(s->impl, marker, position); }
void source_committed(source *s, int64_t position, int txn) { if (s->ops->committed) s->ops->committed(s->impl, position, txn); }

int source_txn_offset(source *s, struct kafka_offset *o, struct kgroup **g) {
    return s->ops->txn_offset ? s->ops->txn_offset(s->impl, o, g) : -1;
}
