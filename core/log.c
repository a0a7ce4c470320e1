/* log — leveled lines on stderr, as text or JSON.  See log.h.  Each line is
 * built whole in memory and written with one fwrite under a mutex, so lines
 * from different threads never interleave. */
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

int log_level_current = LOG_INFO;

static int log_json;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const LEVEL_NAMES[] = { "debug", "info", "warn", "error" };
static const char *const LEVEL_TAGS[] = { "DEBUG", "INFO", "WARN", "ERROR" };

void log_setup(int level, int json)
{
    if (level >= LOG_DEBUG && level <= LOG_ERROR)
        log_level_current = level;
    log_json = json ? 1 : 0;
}

int log_level_parse(const char *name)
{
    for (int i = LOG_DEBUG; name && i <= LOG_ERROR; i++)
        if (strcmp(name, LEVEL_NAMES[i]) == 0)
            return i;
    return -1;
}

const char *log_level_name(int level)
{
    if (level < LOG_DEBUG || level > LOG_ERROR)
        return "unknown";
    return LEVEL_NAMES[level];
}

/* "2026-11-21T15:09:17.123Z" (UTC, millisecond precision) into buf[32]. */
static void format_time(char *buf, size_t n)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t len = strftime(buf, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + len, n - len, ".%03ldZ", ts.tv_nsec / 1000000);
}

/* A copy of s (len bytes) where every byte that is not part of valid UTF-8
 * becomes U+FFFD, so a message quoting raw record bytes still makes a JSON
 * string.  Returns an owned string, or NULL on allocation failure. */
static char *utf8_repair(const char *s, size_t len)
{
    char *out = malloc(len * 3 + 1);   /* each bad byte grows to 3 bytes at most */
    if (!out)
        return NULL;
    size_t o = 0;
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (p < end) {
        int need = *p < 0x80 ? 0 : (*p & 0xE0) == 0xC0 ? 1 : (*p & 0xF0) == 0xE0 ? 2
                 : (*p & 0xF8) == 0xF0 ? 3 : -1;
        int ok = need >= 0 && end - p > need;
        for (int i = 1; ok && i <= need; i++)
            ok = (p[i] & 0xC0) == 0x80;
        if (ok && need == 1)
            ok = *p >= 0xC2;                                   /* overlong */
        if (ok && need == 2) {
            unsigned cp = ((p[0] & 0x0Fu) << 12) | ((p[1] & 0x3Fu) << 6) | (p[2] & 0x3Fu);
            ok = cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF);  /* overlong, surrogate */
        }
        if (ok && need == 3) {
            unsigned cp = ((p[0] & 0x07u) << 18) | ((p[1] & 0x3Fu) << 12)
                        | ((p[2] & 0x3Fu) << 6) | (p[3] & 0x3Fu);
            ok = cp >= 0x10000 && cp <= 0x10FFFF;
        }
        if (ok) {
            memcpy(out + o, p, (size_t)need + 1);
            o += (size_t)need + 1;
            p += need + 1;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            p++;
        }
    }
    out[o] = '\0';
    return out;
}

/* A JSON string value for s; NULL on allocation failure. */
static json_t *json_text(const char *s)
{
    size_t len = strlen(s);
    json_t *j = json_stringn(s, len);
    if (j)
        return j;
    char *fixed = utf8_repair(s, len);
    if (!fixed)
        return NULL;
    j = json_string(fixed);
    free(fixed);
    return j;
}

/* The JSON line for one message, with its newline; owned, or NULL. */
static char *json_line(const char *ts, int level, const char *task, const char *msg)
{
    char *line = NULL;
    json_t *o = json_object();
    if (!o)
        goto err;
    if (json_object_set_new(o, "ts", json_string(ts)) < 0
        || json_object_set_new(o, "level", json_string(log_level_name(level))) < 0
        || (task && json_object_set_new(o, "task", json_text(task)) < 0)
        || json_object_set_new(o, "msg", json_text(msg)) < 0)
        goto err;
    char *body = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!body)
        goto err;
    size_t len = strlen(body);
    line = malloc(len + 2);
    if (line) {
        memcpy(line, body, len);
        memcpy(line + len, "\n", 2);
    }
    free(body);
err:
    json_decref(o);
    return line;
}

void log_write(int level, const char *task, const char *fmt, ...)
{
    char stackmsg[1024], ts[40];
    char *msg = stackmsg, *line = NULL;
    va_list ap;

    if (level < LOG_DEBUG || level > LOG_ERROR)
        level = LOG_ERROR;
    va_start(ap, fmt);
    int len = vsnprintf(stackmsg, sizeof stackmsg, fmt, ap);
    va_end(ap);
    if (len < 0)
        return;
    if ((size_t)len >= sizeof stackmsg) {
        msg = malloc((size_t)len + 1);
        if (!msg) {
            msg = stackmsg;        /* keep the truncated text rather than nothing */
        } else {
            va_start(ap, fmt);
            vsnprintf(msg, (size_t)len + 1, fmt, ap);
            va_end(ap);
        }
    }
    /* A trailing newline (a Lua traceback, a strerror-style text) would
     * leave an empty line behind. */
    for (size_t n = strlen(msg); n > 0 && msg[n - 1] == '\n'; n--)
        msg[n - 1] = '\0';

    format_time(ts, sizeof ts);
    if (log_json) {
        line = json_line(ts, level, task, msg);
    } else {
        const char *t1 = task ? " [task:" : "", *t2 = task ? "]" : "";
        if (asprintf(&line, "%s %-5s%s%s%s %s\n", ts, LEVEL_TAGS[level], t1,
                     task ? task : "", t2, msg) < 0)
            line = NULL;
    }
    pthread_mutex_lock(&log_lock);
    if (line)
        fwrite(line, 1, strlen(line), stderr);
    else   /* out of memory: still say something */
        fprintf(stderr, "%s %s\n", LEVEL_TAGS[level], msg);
    fflush(stderr);
    pthread_mutex_unlock(&log_lock);

    free(line);
    if (msg != stackmsg)
        free(msg);
}

int log_ratelimited(int64_t *window_start_ms, int *count, int burst)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    if (*window_start_ms == 0 || now - *window_start_ms >= 1000) {
        *window_start_ms = now;
        *count = 0;
    }
    if (*count >= burst)
        return 0;
    (*count)++;
    return 1;
}
