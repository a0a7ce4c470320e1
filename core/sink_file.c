/* The file, stdout and Kafka sinks (see sink.h). */
#include "sink.h"
#include "files.h"
#include "kafka.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FLUSH_AT (256 * 1024)

struct sink {
    sink_kind kind;
    char *name;
    char *path;              /* file: the part file */
    int fd;
    /* exactly-once file sinks: one hidden part file per checkpoint */
    int txn;
    char *dir, *ext;
    int task_id;
    int64_t epoch;           /* the checkpoint the records being written belong to */
    sink_part *parts; int nparts, capparts;   /* prepared, not yet committed */
    pthread_mutex_t *lock;   /* stdout */
    struct kafka_sink *ks;   /* kafka */
    char *buf;
    size_t len, cap;
    int64_t records;
    int failed;
    char error[512];
};


sink *sink_create(sink_kind kind, const char *name, const char *dir, const char *ext, int task_id, int txn,
                  int append, pthread_mutex_t *stdout_lock, char *err, size_t errlen) {
    sink *s = calloc(1, sizeof *s);
    if (!s) { snprintf(err, errlen, "out of memory"); return NULL; }
    s->kind = kind;
    s->fd = -1;
    s->name = strdup(name);
    s->lock = stdout_lock;
    s->cap = FLUSH_AT * 2;
    s->buf = malloc(s->cap);
    if (!s->name || !s->buf) { snprintf(err, errlen, "out of memory"); goto err; }
    if (kind == SINK_FILE) {
        if (files_mkdirs(dir) < 0) {
            snprintf(err, errlen, "sink '%s': cannot create %s: %s", name, dir, strerror(errno));
            goto err;
        }
        if (txn) {
            /* files are opened per checkpoint, at the first write after it */
            s->txn = 1;
            s->task_id = task_id;
            s->epoch = 1;
            s->dir = strdup(dir);
            s->ext = strdup(ext);
            if (!s->dir || !s->ext) { snprintf(err, errlen, "out of memory"); goto err; }
            return s;
        }
        size_t n = strlen(dir) + strlen(ext) + 64;
        s->path = malloc(n);
        snprintf(s->path, n, "%s/part-%d-0.%s", dir, task_id, ext);
        s->fd = open(s->path, O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC) | O_CLOEXEC, 0644);
        if (s->fd < 0) {
            snprintf(err, errlen, "sink '%s': cannot open %s: %s", name, s->path, strerror(errno));
            goto err;
        }
    }
    return s;
err:
    sink_destroy(s);
    return NULL;
}

sink *sink_create_kafka(const char *name, struct kafka_sink *ks, char *err, size_t errlen) {
    sink *s = calloc(1, sizeof *s);
    if (!s || !(s->name = strdup(name))) { free(s); snprintf(err, errlen, "out of memory"); return NULL; }
    s->kind = SINK_KAFKA;
    s->fd = -1;
    s->ks = ks;
    return s;
}

struct kafka_sink *sink_kafka(const sink *s) { return s->kind == SINK_KAFKA ? s->ks : NULL; }

int sink_write_kv(sink *s, const char *key, size_t klen, const char *p, size_t n, int64_t ts, const char *hdrs,
                  size_t hlen, const char *origin) {
    if (s->kind != SINK_KAFKA) return sink_write(s, p, n);
    if (s->failed) return -1;
    /* a record Kafka will not take (too large, say) is that record's error, not the sink's */
    if (kafka_sink_send(s->ks, key, klen, p, n, ts, hdrs, hlen, origin, s->error, sizeof s->error) < 0) return -2;
    s->records++;
    return 0;
}

void sink_part_names(const char *dir, int task_id, int64_t checkpoint, const char *ext, char *hidden, char *final,
                     size_t len) {
    snprintf(hidden, len, "%s/.part-%d-%lld.%s.inprogress", dir, task_id, (long long)checkpoint, ext);
    snprintf(final, len, "%s/part-%d-%lld.%s", dir, task_id, (long long)checkpoint, ext);
}

/* Opens this checkpoint's hidden part file (exactly-once). */
static int open_part(sink *s) {
    char hidden[4096], final[4096];
    sink_part_names(s->dir, s->task_id, s->epoch, s->ext, hidden, final, sizeof hidden);
    free(s->path);
    s->path = strdup(hidden);
    s->fd = s->path ? open(s->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644) : -1;
    if (s->fd < 0) {
        snprintf(s->error, sizeof s->error, "sink '%.100s': cannot open %.300s: %s", s->name, hidden, strerror(errno));
        s->failed = 1;
        return -1;
    }
    return 0;
}

static int write_all(sink *s, const char *p, size_t n) {
    if (s->fd < 0 && s->txn && open_part(s) < 0) return -1;
    while (n > 0) {
        ssize_t w = write(s->fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) {
            snprintf(s->error, sizeof s->error, "sink '%s': write to %s failed: %s", s->name, s->path, strerror(errno));
            s->failed = 1;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int sink_flush(sink *s) {
    if (s->failed) return -1;
    if (s->len == 0 || s->kind == SINK_KAFKA) return 0;
    int rc = 0;
    if (s->kind == SINK_FILE) {
        rc = write_all(s, s->buf, s->len);
    } else {
        pthread_mutex_lock(s->lock);
        if (fwrite(s->buf, 1, s->len, stdout) != s->len || fflush(stdout) != 0) {
            snprintf(s->error, sizeof s->error, "sink '%s': write to stdout failed: %s", s->name, strerror(errno));
            s->failed = 1;
            rc = -1;
        }
        pthread_mutex_unlock(s->lock);
    }
    s->len = 0;
    return rc;
}

int sink_write(sink *s, const char *p, size_t n) {
    if (s->kind == SINK_KAFKA) return sink_write_kv(s, NULL, 0, p, n, -1, NULL, 0, NULL);
    if (s->failed) return -1;
    if (s->len + n + 1 > s->cap) {
        if (sink_flush(s) < 0) return -1;
        if (n + 1 > s->cap) {
            size_t ncap = n + 1 + FLUSH_AT;
            char *nb = realloc(s->buf, ncap);
            if (!nb) { snprintf(s->error, sizeof s->error, "sink '%s': out of memory", s->name); s->failed = 1; return -1; }
            s->buf = nb;
            s->cap = ncap;
        }
    }
    memcpy(s->buf + s->len, p, n);
    s->len += n;
    s->buf[s->len++] = '\n';
    s->records++;
    if (s->len >= FLUSH_AT && s->kind == SINK_FILE) return sink_flush(s);
    return 0;
}

int sink_close(sink *s) {
    int rc = sink_flush(s);
    if (s->txn) return rc;          /* the checkpoint after this prepares the file */
    if (s->kind == SINK_FILE && s->fd >= 0) {
        if (fsync(s->fd) < 0 && rc == 0) {
            snprintf(s->error, sizeof s->error, "sink '%s': fsync of %s failed: %s", s->name, s->path, strerror(errno));
            rc = -1;
        }
        if (close(s->fd) < 0 && rc == 0) rc = -1;
        s->fd = -1;
    }
    return rc;
}

int sink_prepare(sink *s, int64_t checkpoint) {
    if (!s->txn) return sink_flush(s);
    int rc = sink_flush(s);
    if (rc == 0 && s->fd >= 0) {
        if (fsync(s->fd) < 0) {
            snprintf(s->error, sizeof s->error, "sink '%s': fsync of %s failed: %s", s->name, s->path, strerror(errno));
            s->failed = 1;
            rc = -1;
        }
        close(s->fd);
        s->fd = -1;
        if (rc == 0) {
            if (s->nparts == s->capparts) {
                int nc = s->capparts ? s->capparts * 2 : 4;
                sink_part *np = realloc(s->parts, sizeof *np * nc);
                if (!np) { snprintf(s->error, sizeof s->error, "out of memory"); s->failed = 1; return -1; }
                s->parts = np;
                s->capparts = nc;
            }
            sink_part *pt = &s->parts[s->nparts++];
            sink_part_names(s->dir, s->task_id, s->epoch, s->ext, pt->hidden, pt->final, sizeof pt->hidden);
        }
    }
    s->epoch = checkpoint + 1;
    return rc;
}

int sink_prepared(const sink *s, const sink_part **parts) {
    *parts = s->parts;
    return s->nparts;
}

void sink_committed(sink *s, int n) {
    if (n > s->nparts) n = s->nparts;
    if (n <= 0) return;
    memmove(s->parts, s->parts + n, sizeof *s->parts * (s->nparts - n));
    s->nparts -= n;
}

void sink_set_checkpoint(sink *s, int64_t next) { s->epoch = next; }

const char *sink_dir(const sink *s) { return s->txn ? s->dir : NULL; }

const char *sink_error(const sink *s) { return s->error; }
const char *sink_name(const sink *s) { return s->name; }
int64_t sink_records(const sink *s) { return s->records; }

void sink_destroy(sink *s) {
    if (!s) return;
    if (s->fd >= 0) close(s->fd);
    free(s->name);
    free(s->path);
    free(s->dir);
    free(s->ext);
    free(s->parts);
    free(s->buf);
    free(s);
}
