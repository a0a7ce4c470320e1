/* The file and stdout sink kinds (see sink.h): both buffer the lines of a
 * batch and write them at its end. */
#include "sink.h"
#include "files.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FLUSH_AT (256 * 1024)

/* A part file prepared for a checkpoint: written and fsynced under its
 * hidden name; renamed to its final name once the checkpoint commits. */
typedef struct part { char hidden[4096], final[4096]; } part;

typedef struct fsink {
    int is_file;             /* else stdout */
    char *path;              /* file: the part file */
    int fd;
    /* exactly-once file sinks: one hidden part file per checkpoint */
    int txn;
    char *dir, *ext;
    int task_id;
    int64_t epoch;           /* the checkpoint the records being written belong to */
    part *parts; int nparts, capparts;   /* prepared, not yet committed */
    pthread_mutex_t *lock;   /* stdout */
    char *buf;
    size_t len, cap;
} fsink;

static void fsink_destroy(void *impl) {
    fsink *f = impl;
    if (!f) return;
    if (f->fd >= 0) close(f->fd);
    free(f->path);
    free(f->dir);
    free(f->ext);
    free(f->parts);
    free(f->buf);
    free(f);
}

static fsink *fsink_new(char *err, size_t errlen) {
    fsink *f = calloc(1, sizeof *f);
    if (f) {
        f->fd = -1;
        f->cap = FLUSH_AT * 2;
        f->buf = malloc(f->cap);
    }
    if (!f || !f->buf) { fsink_destroy(f); snprintf(err, errlen, "out of memory"); return NULL; }
    return f;
}

/* file: DIR (created if missing) gets the part files, .jsonl for json else
 * .txt; with txn (exactly_once) the records between two checkpoints go to a
 * hidden part file of their own (prepare); without, one part file, appended
 * to when append is set (a run that continues an earlier one), else truncated. */
static void *file_open(sink *s, const sink_args *a, char *err, size_t errlen) {
    const char *file = node_opt(a->nd, "file");
    const char *format = node_opt(a->nd, "format") ? node_opt(a->nd, "format") : "json";
    const char *ext = strcmp(format, "json") == 0 ? "jsonl" : "txt";
    char dir[4096];
    if (file[0] != '/') snprintf(dir, sizeof dir, "%s/%s", a->dir, file);
    else snprintf(dir, sizeof dir, "%s", file);
    fsink *f = fsink_new(err, errlen);
    if (!f) return NULL;
    f->is_file = 1;
    if (files_mkdirs(dir) < 0) {
        snprintf(err, errlen, "sink '%s': cannot create %s: %s", sink_name(s), dir, strerror(errno));
        goto err;
    }
    if (a->txn) {
        /* files are opened per checkpoint, at the first write after it */
        f->txn = 1;
        f->task_id = a->task_id;
        f->epoch = 1;
        f->dir = strdup(dir);
        f->ext = strdup(ext);
        if (!f->dir || !f->ext) { snprintf(err, errlen, "out of memory"); goto err; }
        return f;
    }
    size_t n = strlen(dir) + strlen(ext) + 64;
    f->path = malloc(n);
    if (!f->path) { snprintf(err, errlen, "out of memory"); goto err; }
    snprintf(f->path, n, "%s/part-%d-0.%s", dir, a->task_id, ext);
    f->fd = open(f->path, O_WRONLY | O_CREAT | (a->append ? O_APPEND : O_TRUNC) | O_CLOEXEC, 0644);
    if (f->fd < 0) {
        snprintf(err, errlen, "sink '%s': cannot open %s: %s", sink_name(s), f->path, strerror(errno));
        goto err;
    }
    return f;
err:
    fsink_destroy(f);
    return NULL;
}

static void *stdout_open(sink *s, const sink_args *a, char *err, size_t errlen) {
    (void)s;
    fsink *f = fsink_new(err, errlen);
    if (f) f->lock = a->stdout_lock;
    return f;
}

/* The names of task task_id's part file for a checkpoint: hidden
 * (DIR/.part-<task>-<checkpoint>.<ext>.inprogress) and final. */
static void part_names(const char *dir, int task_id, int64_t checkpoint, const char *ext, char *hidden, char *final,
                       size_t len) {
    snprintf(hidden, len, "%s/.part-%d-%lld.%s.inprogress", dir, task_id, (long long)checkpoint, ext);
    snprintf(final, len, "%s/part-%d-%lld.%s", dir, task_id, (long long)checkpoint, ext);
}

/* Opens this checkpoint's hidden part file (exactly-once). */
static int open_part(sink *s, fsink *f) {
    char hidden[4096], final[4096];
    part_names(f->dir, f->task_id, f->epoch, f->ext, hidden, final, sizeof hidden);
    free(f->path);
    f->path = strdup(hidden);
    f->fd = f->path ? open(f->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644) : -1;
    if (f->fd < 0) {
        sink_fail(s, 1, "sink '%.100s': cannot open %.300s: %s", sink_name(s), hidden, strerror(errno));
        return -1;
    }
    return 0;
}

static int write_all(sink *s, fsink *f, const char *p, size_t n) {
    if (f->fd < 0 && f->txn && open_part(s, f) < 0) return -1;
    while (n > 0) {
        ssize_t w = write(f->fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) {
            sink_fail(s, 1, "sink '%s': write to %s failed: %s", sink_name(s), f->path, strerror(errno));
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int fsink_flush(sink *s) {
    fsink *f = sink_impl(s);
    if (f->len == 0) return 0;
    int rc = 0;
    if (f->is_file) {
        rc = write_all(s, f, f->buf, f->len);
    } else {
        pthread_mutex_lock(f->lock);
        if (fwrite(f->buf, 1, f->len, stdout) != f->len || fflush(stdout) != 0) {
            sink_fail(s, 1, "sink '%s': write to stdout failed: %s", sink_name(s), strerror(errno));
            rc = -1;
        }
        pthread_mutex_unlock(f->lock);
    }
    f->len = 0;
    return rc;
}

/* Appends the value and a newline; a file sink writes every FLUSH_AT bytes,
 * stdout only at the end of a batch (or when its buffer is full). */
static int fsink_write(sink *s, const sink_record *r) {
    fsink *f = sink_impl(s);
    size_t n = r->vlen;
    if (f->len + n + 1 > f->cap) {
        if (sink_flush(s) < 0) return -1;
        if (n + 1 > f->cap) {
            size_t ncap = n + 1 + FLUSH_AT;
            char *nb = realloc(f->buf, ncap);
            if (!nb) { sink_fail(s, 1, "sink '%s': out of memory", sink_name(s)); return -1; }
            f->buf = nb;
            f->cap = ncap;
        }
    }
    memcpy(f->buf + f->len, r->val, n);
    f->len += n;
    f->buf[f->len++] = '\n';
    sink_count(s);
    if (f->len >= FLUSH_AT && f->is_file) return sink_flush(s);
    return 0;
}

static int fsink_close(sink *s) {
    fsink *f = sink_impl(s);
    int rc = sink_flush(s);
    if (f->txn) return rc;          /* the checkpoint after this prepares the file */
    if (f->is_file && f->fd >= 0) {
        if (fsync(f->fd) < 0 && rc == 0) {
            sink_fail(s, 0, "sink '%s': fsync of %s failed: %s", sink_name(s), f->path, strerror(errno));
            rc = -1;
        }
        if (close(f->fd) < 0 && rc == 0) rc = -1;
        f->fd = -1;
    }
    return rc;
}

/* An exactly-once file sink closes its part file and keeps it among the
 * prepared ones; others flush. */
static int file_prepare(sink *s, int64_t checkpoint) {
    fsink *f = sink_impl(s);
    int rc = sink_flush(s);
    if (!f->txn) return rc;
    if (rc == 0 && f->fd >= 0) {
        if (fsync(f->fd) < 0) {
            sink_fail(s, 1, "sink '%s': fsync of %s failed: %s", sink_name(s), f->path, strerror(errno));
            rc = -1;
        }
        close(f->fd);
        f->fd = -1;
        if (rc == 0) {
            if (f->nparts == f->capparts) {
                int nc = f->capparts ? f->capparts * 2 : 4;
                part *np = realloc(f->parts, sizeof *np * nc);
                if (!np) { sink_fail(s, 1, "out of memory"); return -1; }
                f->parts = np;
                f->capparts = nc;
            }
            part *pt = &f->parts[f->nparts++];
            part_names(f->dir, f->task_id, f->epoch, f->ext, pt->hidden, pt->final, sizeof pt->hidden);
        }
    }
    f->epoch = checkpoint + 1;
    return rc;
}

static void file_prepared(sink *s, json_t *parts) {
    fsink *f = sink_impl(s);
    for (int j = 0; j < f->nparts; j++)
        json_array_append_new(parts, json_pack("{s:s, s:s, s:s}", "sink", sink_name(s), "hidden", f->parts[j].hidden,
                                               "final", f->parts[j].final));
}

static void file_committed(sink *s) { ((fsink *)sink_impl(s))->nparts = 0; }

/* Deletes this task's hidden part files (prepared after the checkpoint
 * restored, or written and never prepared). */
static void file_abort(sink *s) {
    fsink *f = sink_impl(s);
    if (!f->txn) return;
    DIR *dd = opendir(f->dir);
    if (!dd) return;
    char prefix[64];
    snprintf(prefix, sizeof prefix, ".part-%d-", f->task_id);
    struct dirent *e;
    while ((e = readdir(dd))) {
        size_t l = strlen(e->d_name);
        if (strncmp(e->d_name, prefix, strlen(prefix)) != 0 || l < 11 || strcmp(e->d_name + l - 11, ".inprogress") != 0)
            continue;
        char path[PATH_MAX + 256];
        snprintf(path, sizeof path, "%s/%s", f->dir, e->d_name);
        unlink(path);
    }
    closedir(dd);
}

static void file_set_checkpoint(sink *s, int64_t next) { ((fsink *)sink_impl(s))->epoch = next; }

static const char *const file_options[] = { "file", "format", NULL };
static const char *const stdout_options[] = { "stdout", "format", NULL };

const sink_ops sink_file_ops = {
    .name = "file", .option = "file", .options = file_options,
    .open = file_open, .write = fsink_write, .flush = fsink_flush, .prepare = file_prepare,
    .prepared = file_prepared, .committed = file_committed, .abort = file_abort,
    .set_checkpoint = file_set_checkpoint, .close = fsink_close, .destroy = fsink_destroy,
};

const sink_ops sink_stdout_ops = {
    .name = "stdout", .option = NULL, .options = stdout_options,
    .open = stdout_open, .write = fsink_write, .flush = fsink_flush, .close = fsink_close, .destroy = fsink_destroy,
};
