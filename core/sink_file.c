/* The file, stdout and Kafka sinks (see sink.h). */
#include "sink.h"
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
    pthread_mutex_t *lock;   /* stdout */
    struct kafka_sink *ks;   /* kafka */
    char *buf;
    size_t len, cap;
    int64_t records;
    int failed;
    char error[512];
};

static int mkdirs(const char *dir) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", dir);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, 0755) < 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(tmp, 0755) < 0 && errno != EEXIST) return -1;
    return 0;
}

sink *sink_create(sink_kind kind, const char *name, const char *dir, const char *ext, int task_id,
                  pthread_mutex_t *stdout_lock, char *err, size_t errlen) {
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
        if (mkdirs(dir) < 0) {
            snprintf(err, errlen, "sink '%s': cannot create %s: %s", name, dir, strerror(errno));
            goto err;
        }
        size_t n = strlen(dir) + strlen(ext) + 64;
        s->path = malloc(n);
        snprintf(s->path, n, "%s/part-%d-0.%s", dir, task_id, ext);
        s->fd = open(s->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
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
                  size_t hlen) {
    if (s->kind != SINK_KAFKA) return sink_write(s, p, n);
    if (s->failed) return -1;
    /* a record Kafka will not take (too large, say) is that record's error, not the sink's */
    if (kafka_sink_send(s->ks, key, klen, p, n, ts, hdrs, hlen, s->error, sizeof s->error) < 0) return -2;
    s->records++;
    return 0;
}

static int write_all(sink *s, const char *p, size_t n) {
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
    if (s->kind == SINK_KAFKA) return sink_write_kv(s, NULL, 0, p, n, -1, NULL, 0);
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

const char *sink_error(const sink *s) { return s->error; }
const char *sink_name(const sink *s) { return s->name; }
int64_t sink_records(const sink *s) { return s->records; }

void sink_destroy(sink *s) {
    if (!s) return;
    if (s->fd >= 0) close(s->fd);
    free(s->name);
    free(s->path);
    free(s->buf);
    free(s);
}
