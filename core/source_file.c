#include "source_file.h"
#include <sys/stat.h>
#include "source.h"
#include <csv.h>
#include <errno.h>
#include <fcntl.h>
#include <msgpack.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define READ_CHUNK (1 << 20)

struct source_reader {
    int fd;
    int is_stdin;
    int follow;
    int csv;
    int header;
    unsigned char delimiter;  /* csv */
    int source_index, partition;
    const source_info *si;    /* borrowed: the daemon keeps every plan until exit */
    int64_t size_at_open;     /* the file's size when it opened (what a bootstrap reads first) */
    char *buf;
    size_t len, pos, cap;     /* buffered bytes are buf[pos..len) */
    int64_t offset;           /* file offset of buf[pos] */
    int64_t line;             /* lines consumed so far */
    int input_ended;          /* read() returned 0 and no follow */
    size_t max_bytes;         /* the longest record (source option max_bytes) */
    int skipping;             /* dropping the rest of a line longer than max_bytes */
    /* csv */
    struct csv_parser parser;
    msgpack_sbuffer fields;   /* fields of the record being parsed, packed */
    int nfields;
    char **header_names; int nheader; int header_done;
    char **cur; int ncur, capcur;   /* fields of the current record */
    size_t *curlen;
    int record_done;
    int in_record;            /* a csv record has started but not ended */
    int64_t rec_offset, rec_line;   /* where it started */
    size_t rec_buf;           /* and where its bytes start in buf (kept across refills) */
};

/* (Re)starts the CSV parser with the source's options: after a malformed
 * record too, so that the records after it are split the same way. */
static void csv_start(source_reader *r) {
    csv_init(&r->parser, CSV_STRICT | CSV_APPEND_NULL | CSV_EMPTY_IS_NULL);
    csv_set_delim(&r->parser, r->delimiter);
}

source_reader *source_file_open(const source_info *si, int source_index, int partition, char *err, size_t errlen) {
    return source_file_open_fd(si, source_index, partition, -1, err, errlen);
}

source_reader *source_file_open_fd(const source_info *si, int source_index, int partition, int fd, char *err,
                                   size_t errlen) {
    source_reader *r = calloc(1, sizeof *r);
    if (!r) { snprintf(err, errlen, "out of memory"); return NULL; }
    r->source_index = source_index;
    r->partition = partition;
    r->si = si;
    r->follow = si->follow;
    r->csv = strcmp(si->format, "csv") == 0;
    r->header = si->header;
    r->max_bytes = si->max_bytes > 0 ? (size_t)si->max_bytes : (size_t)16 << 20;
    r->cap = READ_CHUNK * 2;
    r->buf = malloc(r->cap);
    if (!r->buf) { snprintf(err, errlen, "out of memory"); free(r); return NULL; }
    if (fd >= 0) {               /* eddy test's pipe: read as stdin is */
        r->fd = fd;
        r->is_stdin = 1;
        r->follow = 0;
    } else if (si->kind == SRC_STDIN) {
        r->fd = 0;
        r->is_stdin = 1;
    } else {
        r->fd = open(si->files[partition], O_RDONLY | O_CLOEXEC);
        if (r->fd < 0) {
            snprintf(err, errlen, "source '%s': cannot open %s: %s", si->name, si->files[partition], strerror(errno));
            free(r->buf);
            free(r);
            return NULL;
        }
    }
    struct stat sb;            /* a followed file bootstraps up to its size at the start */
    r->size_at_open = fd < 0 && stat(si->files[partition], &sb) == 0 ? (int64_t)sb.st_size : 0;
    r->delimiter = (unsigned char)si->delimiter;
    if (r->csv) csv_start(r);
    return r;
}

void source_file_close(source_reader *r) {
    if (!r) return;
    if (!r->is_stdin && r->fd >= 0) close(r->fd);
    if (r->csv) csv_free(&r->parser);
    msgpack_sbuffer_destroy(&r->fields);
    for (int i = 0; i < r->nheader; i++) free(r->header_names[i]);
    free(r->header_names);
    for (int i = 0; i < r->capcur; i++) free(r->cur[i]);
    free(r->cur);
    free(r->curlen);
    free(r->buf);
    free(r);
}

int64_t source_file_position(const source_reader *r) { return r->offset; }
int64_t source_file_line(const source_reader *r) { return r->line; }

int source_file_seek(source_reader *r, int64_t offset, int64_t line, char *err, size_t errlen) {
    if (r->is_stdin) { snprintf(err, errlen, "stdin cannot continue where it stopped"); return -1; }
    if (r->csv && r->header) { snprintf(err, errlen, "a CSV file with a header is read again from its start"); return -1; }
    off_t end = lseek(r->fd, 0, SEEK_END);
    if (end < offset) { snprintf(err, errlen, "the file is shorter (%lld bytes) than where the last run stopped (%lld): "
                                 "read from its start", (long long)end, (long long)offset); lseek(r->fd, 0, SEEK_SET); return -1; }
    if (lseek(r->fd, offset, SEEK_SET) < 0) { snprintf(err, errlen, "seek: %s", strerror(errno)); return -1; }
    r->offset = offset;
    r->line = line;
    r->len = r->pos = 0;
    return 0;
}

/* Fills the buffer.  Returns bytes read, 0 when nothing is available now or
 * at end of input (r->input_ended tells which), -1 on error. */
static long fill(source_reader *r, char *err, size_t errlen) {
    size_t keep = r->csv && r->in_record ? r->rec_buf : r->pos;   /* first byte still needed */
    if (keep > 0) {
        memmove(r->buf, r->buf + keep, r->len - keep);
        r->len -= keep;
        r->pos -= keep;
        if (r->csv && r->in_record) r->rec_buf -= keep;
    }
    if (r->cap - r->len < READ_CHUNK) {
        size_t ncap = r->cap * 2;
        char *nb = realloc(r->buf, ncap);
        if (!nb) { snprintf(err, errlen, "out of memory"); return -1; }
        r->buf = nb;
        r->cap = ncap;
    }
    if (r->is_stdin) {
        struct pollfd pfd = { .fd = r->fd, .events = POLLIN };
        if (poll(&pfd, 1, 0) == 0) return 0;
    }
    ssize_t n;
    do n = read(r->fd, r->buf + r->len, r->cap - r->len); while (n < 0 && errno == EINTR);
    if (n < 0) { snprintf(err, errlen, "read error: %s", strerror(errno)); return -1; }
    if (n == 0 && !r->follow) r->input_ended = 1;
    r->len += (size_t)n;
    return n;
}

/* ---- csv ---------------------------------------------------------------- */

static void on_field(void *data, size_t len, void *ud) {
    source_reader *r = ud;
    if (r->ncur == r->capcur) {
        int nc = r->capcur ? r->capcur * 2 : 16;
        char **c = realloc(r->cur, sizeof *c * nc);
        size_t *l = realloc(r->curlen, sizeof *l * nc);
        if (c) r->cur = c;
        if (l) r->curlen = l;
        if (!c || !l) return;
        for (int i = r->capcur; i < nc; i++) r->cur[i] = NULL;
        r->capcur = nc;
    }
    char *s = realloc(r->cur[r->ncur], len + 1);
    if (!s) return;
    if (len) memcpy(s, data, len);
    s[len] = 0;
    r->cur[r->ncur] = s;
    r->curlen[r->ncur] = data ? len : (size_t)-1;   /* -1: empty unquoted field */
    r->ncur++;
}

static void on_record(int c, void *ud) {
    (void)c;
    source_reader *r = ud;
    r->record_done = 1;
}

static int pack_csv(source_reader *r, batch *b, int64_t offset, int64_t line) {
    msgpack_sbuffer_clear(&r->fields);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &r->fields, msgpack_sbuffer_write);
    int named = r->header && r->header_done;
    if (named) msgpack_pack_map(&pk, r->ncur);
    else msgpack_pack_array(&pk, r->ncur);
    for (int i = 0; i < r->ncur; i++) {
        if (named) {
            /* a column past the header, or whose name repeats an earlier
             * column's (header_names[i] NULL), is keyed by its number */
            const char *h = i < r->nheader ? r->header_names[i] : NULL;
            if (h) { msgpack_pack_str(&pk, strlen(h)); msgpack_pack_str_body(&pk, h, strlen(h)); }
            else msgpack_pack_int(&pk, i + 1);
        }
        size_t l = r->curlen[i] == (size_t)-1 ? 0 : r->curlen[i];
        msgpack_pack_str(&pk, l);
        msgpack_pack_str_body(&pk, r->cur[i], l);
    }
    eddy_rec *rec = batch_add(b, NULL, 0, r->fields.data, r->fields.size);
    if (!rec) return -1;
    rec->flags = EDDY_REC_PACKED;
    rec->offset = offset;
    rec->line = line;
    rec->partition = r->partition;
    rec->source = (uint32_t)r->source_index;
    return 0;
}

static int add_malformed(source_reader *r, batch *b, const char *raw, size_t rawlen, const char *msg,
                         int64_t offset, int64_t line) {
    eddy_rec *rec = batch_add(b, msg, strlen(msg), raw, rawlen);
    if (!rec) return -1;
    rec->flags = EDDY_REC_MALFORMED;
    rec->offset = offset;
    rec->line = line;
    rec->partition = r->partition;
    rec->source = (uint32_t)r->source_index;
    return 0;
}

/* ---- reading ------------------------------------------------------------ */

int source_file_read(source_reader *r, batch *b, int max, int *eof, char *err, size_t errlen) {
    int n = 0;
    *eof = 0;
    while (n < max) {
        char *start = r->buf + r->pos;
        size_t avail = r->len - r->pos;
        char *nl = avail ? memchr(start, '\n', avail) : NULL;
        size_t linelen;      /* without the newline */
        size_t consumed;
        if (r->skipping) {   /* the rest of a record longer than max_bytes: dropped as it arrives */
            size_t k = nl ? (size_t)(nl - start) + 1 : avail;
            r->pos += k; r->offset += k;
            if (nl || (r->input_ended && avail > 0)) { r->skipping = 0; r->line++; }
            if (nl || avail > 0) continue;
            if (r->input_ended) { *eof = 1; break; }
            long got = fill(r, err, errlen);
            if (got < 0) return -1;
            if (got == 0 && !r->input_ended) break;
            continue;
        }
        if ((nl ? (size_t)(nl - start) : avail) > r->max_bytes ||
            (r->csv && r->in_record && r->pos - r->rec_buf + (nl ? (size_t)(nl - start) : avail) > r->max_bytes)) {
            /* a record longer than max_bytes: its first KiB goes to the error
             * policy with its position, and the rest of its line is skipped
             * without being held in memory */
            char msg[160];
            snprintf(msg, sizeof msg, "a record longer than max_bytes (%zu bytes); its first 1024 bytes are kept",
                     r->max_bytes);
            int in_csv = r->csv && r->in_record;
            const char *raw = in_csv ? r->buf + r->rec_buf : start;
            size_t here = nl ? (size_t)(nl - start) : avail;
            size_t have = in_csv ? r->pos - r->rec_buf + here : here;
            if (add_malformed(r, b, raw, have < 1024 ? have : 1024, msg, in_csv ? r->rec_offset : r->offset,
                              in_csv ? r->rec_line : r->line + 1) < 0) {
                snprintf(err, errlen, "out of memory");
                return -1;
            }
            n++;
            if (in_csv) {    /* the lines after it are read as new records */
                csv_free(&r->parser);
                csv_start(r);
                r->ncur = 0;
                r->record_done = 0;
                r->in_record = 0;
            }
            r->skipping = 1;
            continue;
        }
        if (nl) {
            linelen = (size_t)(nl - start);
            consumed = linelen + 1;
        } else if (r->input_ended && avail > 0) {
            linelen = consumed = avail;      /* a last line with no newline */
        } else if (r->input_ended) {
            if (r->csv && r->in_record) {
                /* an unterminated quoted field at end of input */
                add_malformed(r, b, r->buf + r->rec_buf, r->pos - r->rec_buf,
                              "csv: unterminated quoted field at end of input", r->rec_offset, r->rec_line);
                r->ncur = 0;
                r->in_record = 0;
                n++;
            }
            *eof = 1;
            break;
        } else {
            long got = fill(r, err, errlen);
            if (got < 0) return -1;
            if (got == 0 && !r->input_ended) break;     /* nothing more now */
            continue;
        }
        if (!r->csv) {
            if (linelen == 0 && nl) {        /* blank line: skipped, but counted */
                r->pos += consumed; r->offset += consumed; r->line++;
                continue;
            }
            eddy_rec *rec = batch_add(b, NULL, 0, start, linelen);
            if (!rec) { snprintf(err, errlen, "out of memory"); return -1; }
            rec->offset = r->offset;
            rec->line = r->line + 1;
            rec->partition = r->partition;
            rec->source = (uint32_t)r->source_index;
            r->pos += consumed; r->offset += consumed; r->line++;
            n++;
            continue;
        }
        /* csv: feed one line (with its newline) and see whether a record ended */
        if (!r->in_record && (linelen == 0 || (linelen == 1 && start[0] == '\r'))) {   /* blank line */
            r->pos += consumed; r->offset += consumed; r->line++;
            continue;
        }
        if (!r->in_record) {
            r->rec_offset = r->offset; r->rec_line = r->line + 1; r->rec_buf = r->pos; r->in_record = 1;
        }
        size_t fed = csv_parse(&r->parser, start, consumed, on_field, on_record, r);
        int bad = fed < consumed;
        if (!nl && !bad) csv_fini(&r->parser, on_field, on_record, r);
        r->pos += consumed; r->offset += consumed; r->line++;
        if (bad) {
            char msg[160];
            snprintf(msg, sizeof msg, "csv: %s", csv_strerror(csv_error(&r->parser)));
            const char *raw = r->buf + r->rec_buf;
            size_t rawlen = r->pos - r->rec_buf;
            if (add_malformed(r, b, raw, rawlen, msg, r->rec_offset, r->rec_line) < 0) { snprintf(err, errlen, "out of memory"); return -1; }
            n++;
            csv_free(&r->parser);
            csv_start(r);
            r->ncur = 0;
            r->record_done = 0;
            r->in_record = 0;
            continue;
        }
        if (r->record_done) {
            r->record_done = 0;
            r->in_record = 0;
            if (r->ncur == 0) continue;
            if (r->header && !r->header_done) {
                r->header_names = calloc(r->ncur, sizeof *r->header_names);
                if (!r->header_names) { snprintf(err, errlen, "out of memory"); return -1; }
                r->nheader = r->ncur;
                for (int i = 0; i < r->ncur; i++) {
                    int dup = 0;
                    for (int j = 0; j < i && !dup; j++)
                        dup = r->header_names[j] && strcmp(r->header_names[j], r->cur[i]) == 0;
                    if (!dup && !(r->header_names[i] = strdup(r->cur[i]))) {
                        snprintf(err, errlen, "out of memory");
                        return -1;
                    }
                }
                r->header_done = 1;
            } else {
                if (pack_csv(r, b, r->rec_offset, r->rec_line) < 0) { snprintf(err, errlen, "out of memory"); return -1; }
                n++;
            }
            r->ncur = 0;
        }
    }
    return n;
}

/* ---- the file and stdin kinds (source.h) ---------------------------------- */

static const char *const file_options[] = { "file", "files", "format", "follow", "header", "delimiter", "max_bytes",
                                            "idle", "bootstrap", NULL };

static void *file_open(const source_info *si, int index, int partition, char *err, size_t errlen) {
    return source_file_open(si, index, partition, err, errlen);
}

static int file_read(void *impl, batch *b, int max, int *eof, char *err, size_t errlen) {
    source_reader *r = impl;
    char e[512];
    int n = source_file_read(r, b, max, eof, e, sizeof e);
    if (n < 0) snprintf(err, errlen, "source '%s' %s: %s", r->si->name, r->si->files[r->partition], e);
    return n;
}

static int64_t file_position(void *impl) { return source_file_position(impl); }
static void file_close(void *impl) { source_file_close(impl); }
static int file_live(void *impl) { return ((source_reader *)impl)->follow; }
static int stdin_live(void *impl) { (void)impl; return 1; }
static int file_caught_up(void *impl) { source_reader *r = impl; return r->offset >= r->size_at_open; }

static json_t *file_save(void *impl, const source_info *si, int partition, const source_mark *m) {
    source_reader *r = impl;
    json_t *e = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I}", "source", si->name, "file", si->files[partition], "offset",
                          (json_int_t)r->offset, "line", (json_int_t)r->line, "watermark", (json_int_t)m->wm,
                          "max_ts", (json_int_t)m->maxts);
    if (e && m->ended >= 0) json_object_set_new(e, "ended", json_boolean(m->ended));
    return e;
}

static int file_restore(void *impl, json_t *e, char *err, size_t errlen) {
    return source_file_seek(impl, json_integer_value(json_object_get(e, "offset")),
                            json_integer_value(json_object_get(e, "line")), err, errlen);
}

static void file_status(void *impl, const source_info *si, int partition, json_t *out) {
    (void)impl;
    json_object_set_new(out, "file", json_string(si->files[partition]));
}

const source_ops source_file_ops = {
    .kind = SRC_FILE, .name = "file", .options = file_options,
    .open = file_open, .read = file_read, .position = file_position, .save = file_save, .restore = file_restore,
    .status = file_status, .resumes = 1, .live = file_live, .caught_up = file_caught_up, .close = file_close,
};

/* stdin: read like a file, never seekable (its restore fails), always polled, never in positions.json */
const source_ops source_stdin_ops = {
    .kind = SRC_STDIN, .name = "stdin", .options = file_options,
    .open = file_open, .read = file_read, .position = file_position, .save = file_save, .restore = file_restore,
    .status = file_status, .live = stdin_live, .caught_up = file_caught_up, .close = file_close,
};
