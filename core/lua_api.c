#include "lua_api.h"
#include "codec.h"
#include "keygroup.h"
#include "log.h"
#include "sink.h"
#include "task.h"
#include "window.h"
#include "clock.h"
#include "config.h"
#include "kafka.h"
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- FFI exports (ffi_api.h) ------------------------------------------- */

int eddy_json_needs_exact(const char *s, size_t n) {
    return batch_closes_right_after(s, n, 'e', '+') || batch_closes_right_after(s, n, '{', '}');
}

int eddy_sink_write(void *tp, int32_t idx, const char *p, size_t n) {
    task *t = tp;
    if (idx < 0 || idx >= t->nsinks) return -1;
    if (sink_write(t->sinks[idx], p, n) < 0) {
        log_task_error(t->name, "%s", sink_error(t->sinks[idx]));
        return -1;
    }
    return 0;
}

/* The headers of the input record being processed, or NULL. */
static const char *current_headers(const task *t, size_t *len) {
    if (!t->io.recs || t->io.cur < 0 || t->io.cur >= t->io.n) return NULL;
    const eddy_rec *r = &t->io.recs[t->io.cur];
    *len = r->hdr_len;
    return r->hdr_len ? t->io.data + r->hdr_off : NULL;
}

int eddy_sink_write_kv(void *tp, int32_t idx, const char *key, size_t klen, const char *p, size_t n, int64_t ts,
                       int32_t carry) {
    task *t = tp;
    if (idx < 0 || idx >= t->nsinks) return -1;
    size_t hlen = 0;
    const char *hdrs = carry ? current_headers(t, &hlen) : NULL;
    int rc = sink_write_kv(t->sinks[idx], key, klen, p, n, ts, hdrs, hlen);
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

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void eddy_log(void *tp, int32_t level, int32_t limited, const char *msg) {
    task *t = tp;
    if (level < log_level_current) return;
    if (limited && level < LOG_ERROR) {
        if (!log_ratelimited(&t->log_window, &t->log_count, 5)) return;
    }
    (void)now_ms;
    log_write(level, t->name, "%s", msg);
}

/* ---- classic functions ------------------------------------------------- */

/* unpack(i) -> value of record i of the current batch.
 * Stack: i -> i value */
static int l_unpack(lua_State *L) {
    task *t = lua_touserdata(L, lua_upvalueindex(1));
    int i = (int)luaL_checkinteger(L, 1);
    if (i < 0 || i >= t->io.n) return luaL_error(L, "record %d out of range", i);
    const eddy_rec *r = &t->io.recs[i];
    char err[256];
    if (codec_unpack(L, t->io.data + r->val_off, r->val_len, err, sizeof err) < 0)
        return luaL_error(L, "cannot decode a record: %s", err);
    return 1;
}

/* headers(i) -> the Kafka headers of record i of the current batch, as a
 * table of name -> string (a header without a value: false); {} when none.
 * Stack: i -> i table */
static int l_headers(lua_State *L) {
    task *t = lua_touserdata(L, lua_upvalueindex(1));
    int i = (int)luaL_checkinteger(L, 1);
    if (i < 0 || i >= t->io.n) return luaL_error(L, "record %d out of range", i);
    const eddy_rec *r = &t->io.recs[i];
    if (r->hdr_len == 0) { lua_newtable(L); return 1; }
    char err[256];
    if (codec_unpack(L, t->io.data + r->hdr_off, r->hdr_len, err, sizeof err) < 0)
        return luaL_error(L, "cannot decode the headers: %s", err);
    return 1;
}

/* shuffle(port, key, value, ts, wm, carry): packs value and appends it to the
 * batch for the keyed task that owns key's key group, with its event time,
 * the watermark after it and (carry true) the input record's headers.
 * Stack: port key value ts wm carry -> (none) */
static int l_shuffle(lua_State *L) {
    task *t = lua_touserdata(L, lua_upvalueindex(1));
    int port = (int)luaL_checkinteger(L, 1);
    size_t klen;
    const char *key = luaL_checklstring(L, 2, &klen);
    if (port < 1 || port > t->cur.p->nnodes || t->cur.out_of_node[port] < 0)
        return luaL_error(L, "no output for node %d", port);
    out_port *op = &t->outs[t->cur.out_of_node[port]];
    int maxp = t->sh->cfg->max_parallelism;
    uint32_t kg = keygroup_of(key, klen, maxp);
    int target = keygroup_task(kg, maxp, op->ntargets);
    batch *b = op->pending[target];
    if (!b) {
        b = op->pending[target] = batch_create((int)t->sh->cfg->batch_size);
        if (!b) return luaL_error(L, "out of memory");
    }
    buf *tmp = &t->packbuf;
    tmp->len = 0;
    char err[256];
    if (codec_pack(L, 3, tmp, err, sizeof err) < 0) return luaL_error(L, "%s", err);
    eddy_rec *r = batch_add(b, key, klen, tmp->data, tmp->len);
    if (!r) return luaL_error(L, "out of memory");
    r->ts = (int64_t)luaL_optnumber(L, 4, (lua_Number)TS_NONE);
    r->wm = (int64_t)luaL_optnumber(L, 5, (lua_Number)TS_NONE);
    if (t->io.recs && t->io.cur >= 0 && t->io.cur < t->io.n) {   /* where the record came from */
        const eddy_rec *in = &t->io.recs[t->io.cur];
        r->offset = in->offset;
        r->line = in->line;
        r->partition = in->partition;
        r->source = in->source;
    } else {
        r->source = UINT32_MAX;     /* a window's result at end of input: no input record */
    }
    r->port = (int16_t)port;
    r->kg = kg;
    r->flags = EDDY_REC_PACKED;
    size_t hlen = 0;
    const char *hdrs = lua_toboolean(L, 6) ? current_headers(t, &hlen) : NULL;
    if (hdrs) {
        int idx = b->n - 1;
        long off = batch_reserve(b, hlen);
        if (off < 0) return luaL_error(L, "out of memory");
        memcpy(b->data + off, hdrs, hlen);
        b->recs[idx].hdr_off = (uint32_t)off;
        b->recs[idx].hdr_len = (uint32_t)hlen;
    }
    return 0;
}

/* json_exact(value) -> string: JSON with integers written exactly.
 * Stack: value -> value string */
static int l_json_exact(lua_State *L) {
    task *t = lua_touserdata(L, lua_upvalueindex(1));
    buf *b = &t->packbuf;
    b->len = 0;
    char err[256];
    if (codec_json(L, 1, b, err, sizeof err) < 0) return luaL_error(L, "%s", err);
    lua_pushlstring(L, b->data, b->len);
    return 1;
}

/* json_decode_exact(string) -> value, with empty arrays marked.
 * Stack: s -> s value */
static int l_json_decode_exact(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    char err[256];
    if (codec_json_decode(L, s, n, err, sizeof err) < 0) return luaL_error(L, "%s", err);
    return 1;
}

/* pack(value) -> MessagePack string.  Stack: value -> value string */
static int l_pack(lua_State *L) {
    task *t = lua_touserdata(L, lua_upvalueindex(1));
    buf *b = &t->packbuf;
    b->len = 0;
    char err[256];
    if (codec_pack(L, 1, b, err, sizeof err) < 0) return luaL_error(L, "%s", err);
    lua_pushlstring(L, b->data, b->len);
    return 1;
}

/* unpack_all(string) -> every value packed one after another in it, as an
 * array (a window's values for apply), or the one value when `one` is true.
 * Stack: s one -> s one value */
static int l_unpack_all(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    int one = lua_toboolean(L, 2);
    char err[256];
    if (one) {
        if (codec_unpack(L, s, n, err, sizeof err) < 0) return luaL_error(L, "cannot decode window state: %s", err);
        return 1;
    }
    lua_newtable(L);                                            /* s one arr */
    int i = 0;
    size_t off = 0;
    while (off < n) {
        long used = codec_unpack(L, s + off, n - off, err, sizeof err);   /* s one arr v */
        if (used < 0) return luaL_error(L, "cannot decode window values: %s", err);
        if (lua_isnil(L, -1)) { lua_pop(L, 1); lua_pushlightuserdata(L, NULL); }   /* keep the slot: cjson.null */
        lua_rawseti(L, -2, ++i);                                /* s one arr */
        off += (size_t)used;
    }
    return 1;
}

void lua_api_push_native(lua_State *L, task *t) {
    lua_createtable(L, 0, 6);                      /* native */
    lua_pushlightuserdata(L, t);
    lua_pushcclosure(L, l_pack, 1);
    lua_setfield(L, -2, "pack");
    lua_pushcfunction(L, l_unpack_all);
    lua_setfield(L, -2, "unpack_all");
    lua_pushcfunction(L, l_json_decode_exact);
    lua_setfield(L, -2, "json_decode_exact");
    lua_pushlightuserdata(L, t);
    lua_pushcclosure(L, l_json_exact, 1);
    lua_setfield(L, -2, "json_exact");
    lua_pushlightuserdata(L, t);
    lua_pushcclosure(L, l_shuffle, 1);
    lua_setfield(L, -2, "shuffle");
    lua_pushlightuserdata(L, t);
    lua_pushcclosure(L, l_unpack, 1);
    lua_setfield(L, -2, "unpack");
    lua_pushlightuserdata(L, t);
    lua_pushcclosure(L, l_headers, 1);
    lua_setfield(L, -2, "headers");
}

int lua_api_flush_outputs(task *t) {
    for (int o = 0; o < t->nouts; o++) {
        out_port *op = &t->outs[o];
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

/* ---- windows, time ------------------------------------------------------ */

/* The window state of operator `uid` in this task, created on first use.
 * NULL when the uid's state was made with another assigner (a reload refuses
 * that before it gets here) or on allocation failure. */
static void *window_open_locked(task *t, const char *uid, int64_t size, int64_t advance, int64_t offset,
                                int64_t lateness);

void *eddy_window_open(void *tp, const char *uid, int64_t size, int64_t advance, int64_t offset, int64_t lateness) {
    task *t = tp;
    pthread_mutex_lock(&t->swap_mu);
    void *w = window_open_locked(t, uid, size, advance, offset, lateness);
    pthread_mutex_unlock(&t->swap_mu);
    return w;
}

static void *window_open_locked(task *t, const char *uid, int64_t size, int64_t advance, int64_t offset,
                                int64_t lateness) {
    for (int i = 0; i < t->nwins; i++) {
        task_window *tw = &t->wins[i];
        if (strcmp(tw->uid, uid) != 0) continue;
        if (tw->size != size || tw->advance != advance || tw->offset != offset || tw->lateness != lateness) return NULL;
        return tw->w;
    }
    task_window *wins = realloc(t->wins, sizeof *wins * (t->nwins + 1));
    if (!wins) return NULL;
    t->wins = wins;
    task_window *tw = &t->wins[t->nwins];
    tw->uid = strdup(uid);
    tw->w = advance < 0 ? window_create_sessions(size, lateness) : window_create(size, advance, offset, lateness);
    if (!tw->uid || !tw->w) { free(tw->uid); window_destroy(tw->w); return NULL; }
    tw->size = size;
    tw->advance = advance;
    tw->offset = offset;
    tw->lateness = lateness;
    t->nwins++;
    return tw->w;
}

int eddy_window_add(void *w, const char *key, size_t klen, int64_t ts, double x) {
    return window_add(w, key, klen, ts, x);
}

void eddy_window_drop_late(void *w) { window_count_dropped(w); }

int32_t eddy_window_assign(void *w, int64_t ts, int64_t *starts, int32_t max) {
    return window_assign(w, ts, starts, max);
}

const char *eddy_window_state(void *w, const char *key, size_t klen, int64_t start, size_t *len) {
    return window_state(w, key, klen, start, len);
}

int32_t eddy_window_store(void *w, const char *key, size_t klen, int64_t start, const char *p, size_t n, int32_t mode,
                          double *count) {
    return window_store(w, key, klen, start, p, n, mode, count);
}

int32_t eddy_window_add_at(void *w, const char *key, size_t klen, int64_t start, double x, double *count) {
    return window_add_at(w, key, klen, start, x, count);
}

int32_t eddy_window_fire(void *w, const char *key, size_t klen, int64_t start, int32_t purge) {
    return window_fire(w, key, klen, start, purge);
}

int32_t eddy_window_list(void *w, eddy_window_info *info, int32_t max) { return window_list(w, info, max); }

void eddy_window_mark(void *w, const char *key, size_t klen, int64_t start, int64_t mark) {
    window_mark(w, key, klen, start, mark);
}

void eddy_task_wants_ticks(void *tp) { ((task *)tp)->wants_ticks = 1; }

void eddy_window_keep_unfired(void *w) { window_keep_unfired(w, 1); }

int32_t eddy_window_session_find(void *w, const char *key, size_t klen, int64_t ts, int64_t *starts, int32_t max,
                                 int64_t *range) {
    return window_session_find(w, key, klen, ts, starts, max, &range[0], &range[1]);
}

int32_t eddy_window_session_put(void *w, const char *key, size_t klen, const int64_t *starts, int32_t n,
                                int64_t start, int64_t end, const char *p, size_t plen) {
    return window_session_put(w, key, klen, starts, n, start, end, p, plen);
}

int32_t eddy_window_advance(void *w, int64_t wm) { return window_advance(w, wm); }

const eddy_fired *eddy_window_fired(void *w, int32_t i) { return window_fired(w, i); }

int64_t eddy_now_ms(void) { return clock_now_ms(); }

int eddy_parse_duration(const char *s, int64_t *ms) { return config_parse_duration(s, ms); }

/* ISO-8601 through strptime: "YYYY-MM-DDTHH:MM:SS[.fff][Z|+HH:MM|+HHMM]", or a date alone. */
int eddy_parse_time(const char *s, size_t n, int64_t *ms) {
    char tmp[64];
    if (n == 0 || n >= sizeof tmp) return -1;
    memcpy(tmp, s, n);
    tmp[n] = 0;
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *rest = strptime(tmp, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!rest) rest = strptime(tmp, "%Y-%m-%d %H:%M:%S", &tm);
    if (!rest) {
        memset(&tm, 0, sizeof tm);
        rest = strptime(tmp, "%Y-%m-%d", &tm);
        if (!rest || *rest) return -1;
    }
    int64_t frac = 0;
    if (*rest == '.' || *rest == ',') {
        int digits = 0;
        rest++;
        while (*rest >= '0' && *rest <= '9') {
            if (digits < 3) { frac = frac * 10 + (*rest - '0'); digits++; }
            rest++;
        }
        if (digits == 0) return -1;
        while (digits++ < 3) frac *= 10;
    }
    int64_t off = 0;
    if (*rest == 'Z' || *rest == 'z') {
        rest++;
    } else if (*rest == '+' || *rest == '-') {
        struct tm z;
        memset(&z, 0, sizeof z);
        const char *e = strptime(rest, "%z", &z);
        if (!e) return -1;
        off = z.tm_gmtoff;
        rest = e;
    }
    if (*rest) return -1;
    time_t secs = timegm(&tm);
    *ms = ((int64_t)secs - off) * 1000 + frac;
    return 0;
}
