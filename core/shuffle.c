/* See shuffle.h. */
#include "shuffle.h"
#include "pipeline.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void shuffle_repartition_topic(const config *cfg, const char *uid, char *out, size_t n) {
    snprintf(out, n, "%s-%s-repartition", cfg->name, uid);
}

void shuffle_changelog_topic(const config *cfg, const char *uid, char *out, size_t n) {
    snprintf(out, n, "%s-%s-changelog", cfg->name, uid);
}

/* Appends the source of keyed stage st's repartition topic to p.  0 or -1. */
static int add_repartition(plan *p, stage *st, const config *cfg) {
    source_info *ns = realloc(p->sources, sizeof *ns * (p->nsources + 1));
    if (!ns) return -1;
    p->sources = ns;
    source_info *si = &p->sources[p->nsources];
    memset(si, 0, sizeof *si);
    char topic[512];
    shuffle_repartition_topic(cfg, p->nodes[st->roots[0] - 1].uid, topic, sizeof topic);
    si->node = st->roots[0];
    si->kind = SRC_KAFKA;
    si->repartition = 1;
    si->name = strdup(topic);
    si->format = strdup("frames");
    si->start = strdup("earliest");
    si->topics = calloc(1, sizeof *si->topics);
    si->files = calloc(st->ntasks, sizeof *si->files);
    si->ktopic = calloc(st->ntasks, sizeof *si->ktopic);
    si->kpart = calloc(st->ntasks, sizeof *si->kpart);
    p->nsources++;                               /* (plan_destroy frees what was made) */
    if (!si->name || !si->format || !si->start || !si->topics || !si->files || !si->ktopic || !si->kpart) return -1;
    if (!(si->topics[0] = strdup(topic))) return -1;
    si->ntopics = 1;
    si->max_bytes = INT64_MAX;
    for (int i = 0; i < st->ntasks; i++) {
        char label[600];
        snprintf(label, sizeof label, "%s/%d", topic, i);
        if (!(si->files[i] = strdup(label))) return -1;
        si->kpart[i] = i;
        si->nfiles++;
    }
    st->source = p->nsources - 1;
    return 0;
}

int shuffle_plan(plan *p, const config *cfg, char *err, size_t errlen) {
    if (cfg->shuffle != SHUFFLE_KAFKA) return 0;
    int nstages = p->nstages;
    for (int s = 0; s < nstages; s++) {
        stage *st = &p->stages[s];
        if (!st->keyed) continue;
        if (add_repartition(p, st, cfg) < 0) { snprintf(err, errlen, "out of memory"); return -1; }
    }
    return 0;
}

const char *shuffle_stage_topic(const plan *p, const stage *st) {
    if (!st->keyed || st->source < 0) return NULL;
    return p->sources[st->source].topics[0];
}

static int by_string(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int shuffle_standby_of(json_t *members, const char *me, const char *topic, int partition, int n) {
    json_t *ms = json_object_get(members, "members");
    size_t count = json_array_size(ms);
    if (count < 2 || n <= 0) return 0;
    const char **ids = calloc(count, sizeof *ids);
    if (!ids) return 0;
    int nids = 0;
    const char *owner = NULL;
    for (size_t i = 0; i < count; i++) {
        json_t *m = json_array_get(ms, i);
        const char *id = json_string_value(json_object_get(m, "instance"));
        if (!id) continue;
        ids[nids++] = id;
        json_t *ps = json_object_get(json_object_get(m, "partitions"), topic);
        for (size_t k = 0; k < json_array_size(ps); k++)
            if (json_integer_value(json_array_get(ps, k)) == partition) owner = id;
    }
    int yes = 0;
    if (owner && strcmp(owner, me) != 0) {
        qsort(ids, (size_t)nids, sizeof *ids, by_string);
        int at = 0;
        while (at < nids && strcmp(ids[at], owner) != 0) at++;
        for (int k = 1; k <= n && k < nids; k++)
            if (strcmp(ids[(at + k) % nids], me) == 0) yes = 1;
    }
    free(ids);
    return yes;
}

static int is_id(const char *s) {
    if (strlen(s) != 16) return 0;
    for (int i = 0; i < 16; i++) if (!strchr("0123456789abcdef", s[i])) return 0;
    return 1;
}

int shuffle_instance_id(const char *state_dir, char out[17], char *err, size_t errlen) {
    char path[4096];
    snprintf(path, sizeof path, "%s/instance", state_dir);
    FILE *f = fopen(path, "r");
    if (f) {
        char line[64] = "";
        int ok = fgets(line, sizeof line, f) != NULL;
        fclose(f);
        line[strcspn(line, "\r\n")] = 0;
        if (ok && is_id(line)) { memcpy(out, line, 17); return 0; }
        snprintf(err, errlen, "%s: not an instance id (16 hex digits); remove it to make a new one", path);
        return -1;
    }
    if (errno != ENOENT) { snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno)); return -1; }
    unsigned char r[8];
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read(fd, r, sizeof r) != (ssize_t)sizeof r) {
        if (fd >= 0) close(fd);
        snprintf(err, errlen, "cannot read /dev/urandom: %s", strerror(errno));
        return -1;
    }
    close(fd);
    for (int i = 0; i < 8; i++) snprintf(out + 2 * i, 3, "%02x", r[i]);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    f = fopen(tmp, "w");
    if (!f || fprintf(f, "%s\n", out) < 0 || fflush(f) != 0 || fsync(fileno(f)) != 0 || fclose(f) != 0 ||
        rename(tmp, path) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* ---- frames ---------------------------------------------------------------
 * header: magic(1) kind(1) input(4) value(8) = 14 bytes; a record adds
 * ts(8) port(2) kg(4) source(4) partition(4) offset(8) line(8) hlen(4) = 42,
 * then its headers and its value. */
#define HDR 14
#define REC_HDR (HDR + 42)

static void put(char *p, uint64_t v, int n) { for (int i = 0; i < n; i++) p[i] = (char)(v >> (8 * i)); }
static uint64_t get(const char *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v |= (uint64_t)(unsigned char)p[i] << (8 * i);
    return v;
}

size_t frame_encode_mark(int kind, uint32_t input, int64_t value, char *out) {
    out[0] = (char)FRAME_MAGIC;
    out[1] = (char)kind;
    put(out + 2, input, 4);
    put(out + 6, (uint64_t)value, 8);
    return HDR;
}

long frame_encode_record(const batch *b, const eddy_rec *r, uint32_t input, char **buf, size_t *cap) {
    size_t need = REC_HDR + r->hdr_len + r->val_len;
    if (need > *cap) {
        size_t nc = need * 2;
        char *nb = realloc(*buf, nc);
        if (!nb) return -1;
        *buf = nb;
        *cap = nc;
    }
    char *p = *buf;
    frame_encode_mark(FRAME_RECORD, input, r->wm, p);
    put(p + 14, (uint64_t)r->ts, 8);
    put(p + 22, (uint16_t)r->port, 2);
    put(p + 24, r->kg, 4);
    put(p + 28, r->source, 4);
    put(p + 32, (uint32_t)r->partition, 4);
    put(p + 36, (uint64_t)r->offset, 8);
    put(p + 44, (uint64_t)r->line, 8);
    put(p + 52, r->hdr_len, 4);
    if (r->hdr_len) memcpy(p + REC_HDR, b->data + r->hdr_off, r->hdr_len);
    memcpy(p + REC_HDR + r->hdr_len, b->data + r->val_off, r->val_len);
    return (long)need;
}

int frame_decode(const char *p, size_t n, frame *f) {
    if (n < HDR || (unsigned char)p[0] != FRAME_MAGIC || p[1] < FRAME_RECORD || p[1] > FRAME_END) return -1;
    memset(f, 0, sizeof *f);
    f->kind = p[1];
    f->input = (uint32_t)get(p + 2, 4);
    f->value = (int64_t)get(p + 6, 8);
    if (f->kind != FRAME_RECORD) return n == HDR ? 0 : -1;
    if (n < REC_HDR) return -1;
    f->ts = (int64_t)get(p + 14, 8);
    f->port = (int16_t)get(p + 22, 2);
    f->kg = (uint32_t)get(p + 24, 4);
    f->source = (uint32_t)get(p + 28, 4);
    f->partition = (int32_t)get(p + 32, 4);
    f->offset = (int64_t)get(p + 36, 8);
    f->line = (int64_t)get(p + 44, 8);
    f->hlen = (size_t)get(p + 52, 4);
    if (f->hlen > n - REC_HDR) return -1;
    f->hdrs = f->hlen ? p + REC_HDR : NULL;
    f->val = p + REC_HDR + f->hlen;
    f->vlen = n - REC_HDR - f->hlen;
    return 0;
}
