/* testing — see testing.h.  The driver (a `driver`, one per T.driver) and
 * the native functions lua/eddy/testing.lua wraps, then the runner. */
#include "testing.h"
#include "clock.h"
#include "codec.h"
#include "config.h"
#include "daemon.h"
#include "driver.h"
#include "files.h"
#include "graph.h"
#include "keygroup.h"
#include "log.h"
#include "pipeline.h"
#include "reload.h"
#include "source_memory.h"
#include "state.h"
#include "task.h"
#include "vm.h"
#include "watchdog.h"
#include "window.h"
#include <csv.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <ftw.h>
#include <lauxlib.h>
#include <limits.h>
#include <lualib.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DRIVER_MT "eddy.testing.driver"
#define TICK_EVERY_MS 1000      /* advance_clock ticks at every whole second it passes */

/* A T.driver: the pipeline run (driver.h) and what a test adds to it. */
typedef struct tdriver {
    driver *drv;                    /* NULL until it is built */
    int64_t now;                    /* the virtual clock */
    long dl_read;                   /* bytes of the dead-letter file read so far */
    int closed;
    watchdog_mark *marks;           /* the watchdog's view of each task's call */
} tdriver;

/* The clock every task reads (clock.h) is the clock of the driver running. */
static int64_t g_now;
static int64_t virtual_clock(void) { return g_now; }

/* The driver whose tasks run now, for the watchdog thread: a user call that
 * runs away is interrupted at limits.time as in eddy run, and one that
 * cannot be (a loop the JIT compiled) ends eddy test with exit 1 naming it,
 * rather than hanging the test run. */
static pthread_mutex_t g_wd_mu = PTHREAD_MUTEX_INITIALIZER;
static struct tdriver *g_running;

static void *watch(void *arg) {
    (void)arg;
    for (;;) {
        usleep(WATCHDOG_TICK_MS * 1000);
        pthread_mutex_lock(&g_wd_mu);
        struct tdriver *d = g_running;
        int ntasks = 0;
        task **tasks = d && d->drv ? driver_tasks(d->drv, &ntasks) : NULL;
        int64_t limit = d && d->drv ? driver_cfg(d->drv)->limit_time_ms : 0;
        for (int i = 0; d && d->marks && i < ntasks; i++) {
            int64_t ran = watchdog_check(tasks[i], &d->marks[i], limit);
            if (ran <= 0) continue;
            const node *nd = task_current_node(tasks[i]);
            fprintf(stderr, "eddy test: operator %s (uid %s, %s) has run for %lld ms of CPU time and cannot be "
                    "interrupted (a loop the JIT compiled runs no hooks; limits.time is %lld ms)\n",
                    nd ? nd->kind_name : "?", nd ? nd->uid : "?", nd ? nd->where : "?", (long long)ran,
                    (long long)limit);
            fflush(stdout);
            _exit(1);
        }
        pthread_mutex_unlock(&g_wd_mu);
    }
    return NULL;
}

static void set_running(struct tdriver *d) {
    pthread_mutex_lock(&g_wd_mu);
    g_running = d;
    pthread_mutex_unlock(&g_wd_mu);
}

static void driver_free(tdriver *d) {
    if (!d) return;
    free(d->marks);
    driver_destroy(d->drv);
    free(d);
}

/* Runs the pipeline until nothing more happens and ticks its tasks at the
 * virtual clock (driver_run), under the watchdog.  0, or -1 when a task
 * failed (driver_failed says which and why). */
static int run(tdriver *d) {
    g_now = d->now;
    set_running(d);
    int rc = driver_run(d->drv);
    set_running(NULL);
    return rc;
}

/* ---- the native functions (Lua: lua/eddy/testing.lua) ------------------- */

static tdriver *check_driver(lua_State *L, int idx) {
    tdriver **b = luaL_checkudata(L, idx, DRIVER_MT);
    if (!*b || !(*b)->drv) luaL_error(L, "this driver was freed (its test ended)");
    return *b;
}

/* A driver that stopped (a task failed) refuses everything after. */
static tdriver *live_driver(lua_State *L, int idx) {
    tdriver *d = check_driver(L, idx);
    if (driver_failed(d->drv)[0]) luaL_error(L, "%s", driver_failed(d->drv));
    return d;
}

static int raise_if_failed(lua_State *L, tdriver *d, int rc) {
    if (rc < 0) return luaL_error(L, "%s", driver_failed(d->drv));
    return 0;
}

static const plan *running(const tdriver *d) { return driver_plan(d->drv); }

static int source_index_of(lua_State *L, const plan *p, const char *name) {
    for (int s = 0; s < p->nsources; s++)
        if (!p->sources[s].repartition && strcmp(p->sources[s].name, name) == 0) return s;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int s = 0; s < p->nsources; s++) {
        luaL_addstring(&b, s ? ", " : "");
        luaL_addstring(&b, p->sources[s].name);
    }
    luaL_pushresult(&b);
    return luaL_error(L, "the pipeline has no source '%s' (its sources: %s)", name, lua_tostring(L, -1));
}

static int source_index(lua_State *L, tdriver *d, const char *name) { return source_index_of(L, running(d), name); }

/* open(path, opts, partitions, clock) -> driver.  path: a config file or a
 * pipeline script; opts: config keys merged over the config's; partitions:
 * a number (every source) or {[source] = n}. */
static int l_open(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int64_t clock0 = (int64_t)luaL_optnumber(L, 4, 0);
    char err[4096];
    tdriver **box = lua_newuserdata(L, sizeof *box);         /* ... box */
    *box = NULL;
    luaL_getmetatable(L, DRIVER_MT);
    lua_setmetatable(L, -2);
    tdriver *d = calloc(1, sizeof *d);
    if (!d) return luaL_error(L, "out of memory");
    *box = d;
    d->now = clock0;
    g_now = d->now;
    clock_set(virtual_clock);
    struct stat st;
    if (stat(path, &st) != 0) return luaL_error(L, "%s: %s", path, strerror(errno));
    int is_pipeline = daemon_looks_like_pipeline(path);
    config *c = config_load_over(is_pipeline ? NULL : path, is_pipeline ? path : NULL, L, 2, err, sizeof err);
    if (!c) return luaL_error(L, "%s", err);
    /* what a test runs without: the store and the dead letters in the
     * driver's temporary folder; no admin server, file watching, Kafka or
     * checkpoints (driver_config) */
    const char *tmp = getenv("TMPDIR");
    if (driver_config(c, tmp && *tmp ? tmp : "/tmp", err, sizeof err) < 0) {
        config_destroy(c);
        return luaL_error(L, "%s", err);
    }
    log_setup(c->log_level, c->log_format == LOGFMT_JSON);
    plan *p = plan_create(c, daemon_lua_dir(), err, sizeof err);
    if (!p) { config_destroy(c); return luaL_error(L, "%s", err); }
    int *parts = calloc(p->nsources ? p->nsources : 1, sizeof *parts);
    if (!parts) { plan_destroy(p); config_destroy(c); return luaL_error(L, "out of memory"); }
    for (int s = 0; s < p->nsources; s++) {
        int n = 1;
        if (lua_isnumber(L, 3)) n = (int)lua_tointeger(L, 3);
        else if (lua_istable(L, 3)) {
            lua_getfield(L, 3, p->sources[s].name);
            if (!lua_isnil(L, -1)) n = (int)lua_tointeger(L, -1);
            lua_pop(L, 1);
        }
        if (n < 1 || n > 4096) {
            snprintf(err, sizeof err, "partitions of source '%s': expected 1 to 4096, got %d", p->sources[s].name, n);
            free(parts);
            plan_destroy(p);
            config_destroy(c);
            return luaL_error(L, "%s", err);
        }
        parts[s] = n;
    }
    if (lua_istable(L, 3)) {                 /* a name that is no source is a mistake in the test */
        for (lua_pushnil(L); lua_next(L, 3); lua_pop(L, 1)) {
            const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
            int found = 0;
            for (int s = 0; s < p->nsources; s++)
                if (!p->sources[s].repartition && strcmp(p->sources[s].name, k) == 0) found = 1;
            if (found) continue;
            int n = snprintf(err, sizeof err, "the pipeline has no source '%.200s' (its sources: ", k);
            for (int s = 0; s < p->nsources && n < (int)sizeof err - 300; s++)
                n += snprintf(err + n, sizeof err - n, "%s%.200s", s ? ", " : "", p->sources[s].name);
            snprintf(err + n, sizeof err - n, ")");
            free(parts);
            plan_destroy(p);
            config_destroy(c);
            return luaL_error(L, "%s", err);
        }
    }
    driver_opts o = { .partitions = parts, .version = 1, .pipes = 1 };
    d->drv = driver_open(c, p, &o, err, sizeof err);
    free(parts);
    if (!d->drv) return luaL_error(L, "%s", err);
    int ntasks;
    driver_tasks(d->drv, &ntasks);
    if (!(d->marks = calloc(ntasks ? ntasks : 1, sizeof *d->marks))) return luaL_error(L, "out of memory");
    for (int i = 0; i < ntasks; i++) d->marks[i].seq = -1;
    if (raise_if_failed(L, d, run(d))) return 0;
    return 1;
}

static int l_free(lua_State *L) {
    tdriver **b = luaL_checkudata(L, 1, DRIVER_MT);
    driver_free(*b);
    *b = NULL;
    return 0;
}

/* The fields of the array at idx as one CSV record (every field quoted by
 * libcsv), without its newline.  0, or -1 out of memory. */
static int csv_line(lua_State *L, int idx, char delimiter, buf *out) {
    size_t n = lua_objlen(L, idx);
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, (int)i);
        size_t len;
        const char *s = lua_tolstring(L, -1, &len);       /* strings and numbers; anything else an empty field */
        if (!s) { s = ""; len = 0; }
        size_t need = csv_write(NULL, 0, s, len);
        if ((i > 1 && buf_append(out, &delimiter, 1) < 0) || buf_reserve(out, need) < 0) { lua_pop(L, 1); return -1; }
        out->len += csv_write(out->data + out->len, need, s, len);
        lua_pop(L, 1);
    }
    return 0;
}

/* Writes a file source's bytes into its partition's pipe; when the pipe is
 * full, the pipeline runs (reading some) first.  0, or -1 with errno
 * (EAGAIN: the pipeline read nothing of it; or driver_failed set). */
static int write_input(tdriver *d, mem_partition *mp, const char *p, size_t n) {
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(mp->wfd, p + off, n - off);
        if (w > 0) { off += (size_t)w; continue; }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && errno != EAGAIN) return -1;
        int before = 0, after = 0;
        ioctl(mp->rfd, FIONREAD, &before);
        if (run(d) < 0) return -1;
        ioctl(mp->rfd, FIONREAD, &after);
        if (after >= before) { errno = EAGAIN; return -1; }
    }
    return 0;
}

/* input(d, source, value, partition, key, ts, headers): one record into a
 * partition, then the pipeline runs until nothing more happens. */
static int l_input(lua_State *L) {
    tdriver *d = live_driver(L, 1);
    const char *name = luaL_checkstring(L, 2);
    int s = source_index(L, d, name);
    const source_info *si = &running(d)->sources[s];
    int part = (int)luaL_optinteger(L, 4, 0);
    if (d->closed) return luaL_error(L, "d:close() ended the input: nothing more can go in");
    int npart = driver_npartitions(d->drv, s);
    if (part < 0 || part >= npart)
        return luaL_error(L, "source '%s' has %d partition%s (T.driver's partitions option): no partition %d", name,
                          npart, npart == 1 ? "" : "s", part);
    int kafka = si->kind == SRC_KAFKA;
    if (!kafka && (!lua_isnoneornil(L, 5) || !lua_isnoneornil(L, 7)))
        return luaL_error(L, "source '%s' reads %s: key and headers are Kafka's", name,
                          si->kind == SRC_STDIN ? "stdin" : "files");
    buf val, hdrs;
    buf_init(&val);
    buf_init(&hdrs);
    char err[512];
    mem_record r = { .ts = TS_NONE };
    int vt = lua_type(L, 3);
    if (vt == LUA_TSTRING) {
        size_t n;
        const char *p = lua_tolstring(L, 3, &n);
        if (buf_append(&val, p, n) < 0) return luaL_error(L, "out of memory");
        r.val = val.data ? val.data : "";
        r.vlen = n;
    } else if (vt == LUA_TNIL || vt == LUA_TNONE) {
        if (!kafka) return luaL_error(L, "a record needs a value (only a Kafka message may have none: a tombstone)");
    } else if (strcmp(si->format, "json") == 0) {
        if (codec_json(L, 3, &val, err, sizeof err) < 0) return luaL_error(L, "the value cannot be JSON: %s", err);
        r.val = val.data;
        r.vlen = val.len;
    } else if (strcmp(si->format, "csv") == 0 && vt == LUA_TTABLE) {
        if (csv_line(L, 3, si->delimiter, &val) < 0) return luaL_error(L, "out of memory");
        r.val = val.data;
        r.vlen = val.len;
    } else if (vt == LUA_TNUMBER) {
        size_t n;
        const char *p = lua_tolstring(L, 3, &n);
        buf_append(&val, p, n);
        r.val = val.data;
        r.vlen = n;
    } else {
        return luaL_error(L, "source '%s' reads %s: give the record as a string, not a %s", name, si->format,
                          luaL_typename(L, 3));
    }
    if (!lua_isnoneornil(L, 5)) r.key = (char *)luaL_checklstring(L, 5, &r.klen);
    if (!lua_isnoneornil(L, 6)) r.ts = (int64_t)luaL_checknumber(L, 6);
    if (!lua_isnoneornil(L, 7)) {
        luaL_checktype(L, 7, LUA_TTABLE);
        if (codec_pack(L, 7, &hdrs, err, sizeof err) < 0) { buf_free(&val); return luaL_error(L, "headers: %s", err); }
        r.hdrs = hdrs.data;
        r.hlen = hdrs.len;
    }
    int rc;
    if (kafka) {
        rc = mem_queue_push(&driver_partition(d->drv, s, part)->q, &r) < 0 ? luaL_error(L, "out of memory") : 0;
    } else {
        rc = buf_append(&val, "\n", 1) < 0 ? -1 : write_input(d, driver_partition(d->drv, s, part), val.data, val.len);
        if (rc < 0 && !driver_failed(d->drv)[0]) {
            buf_free(&val);
            return luaL_error(L, "source '%s' partition %d reads nothing of what the test gives it: %s", name, part,
                              errno == EAGAIN ? "is it waiting for a bootstrap source?" : strerror(errno));
        }
    }
    buf_free(&val);
    buf_free(&hdrs);
    raise_if_failed(L, d, rc < 0 ? -1 : run(d));
    return 0;
}

/* watermark(d, source, ts, partition or -1) */
static int l_watermark(lua_State *L) {
    tdriver *d = live_driver(L, 1);
    int s = source_index(L, d, luaL_checkstring(L, 2));
    int64_t ts = (int64_t)luaL_checknumber(L, 3);
    int part = (int)luaL_optinteger(L, 4, -1);
    if (part >= driver_npartitions(d->drv, s))
        return luaL_error(L, "source '%s' has no partition %d", lua_tostring(L, 2), part);
    g_now = d->now;
    int ntasks;
    task **tasks = driver_tasks(d->drv, &ntasks);
    for (int i = 0; i < ntasks; i++)
        if (task_source(tasks[i]) == s && (part < 0 || task_index(tasks[i]) == part))
            task_advance_watermark(tasks[i], ts);
    raise_if_failed(L, d, run(d));
    return 0;
}

/* advance_clock(d, ms) */
static int l_advance_clock(lua_State *L) {
    tdriver *d = live_driver(L, 1);
    int64_t ms = (int64_t)luaL_checknumber(L, 2);
    if (ms < 0) return luaL_error(L, "processing time only moves forward (got %lld ms)", (long long)ms);
    int64_t target = d->now + ms;
    while (d->now < target) {
        int64_t next = (d->now / TICK_EVERY_MS + 1) * TICK_EVERY_MS;
        d->now = next < target ? next : target;
        if (raise_if_failed(L, d, run(d))) return 0;
    }
    return 0;
}

static int l_now(lua_State *L) {
    lua_pushnumber(L, (lua_Number)check_driver(L, 1)->now);
    return 1;
}

static int l_version(lua_State *L) {
    lua_pushinteger(L, driver_version(check_driver(L, 1)->drv));
    return 1;
}

/* close(d): every source ends; what the end fires, fires. */
static int l_close(lua_State *L) {
    tdriver *d = live_driver(L, 1);
    if (d->closed) return 0;
    d->closed = 1;
    for (int s = 0; s < running(d)->nsources; s++)
        for (int j = 0; j < driver_npartitions(d->drv, s); j++) {
            mem_partition *mp = driver_partition(d->drv, s, j);
            mp->ended = 1;
            if (mp->wfd >= 0) close(mp->wfd);     /* the file reader reads to the end of the pipe */
            mp->wfd = -1;
        }
    if (raise_if_failed(L, d, run(d))) return 0;
    int ntasks;
    task **tasks = driver_tasks(d->drv, &ntasks);
    for (int i = 0; i < ntasks; i++)
        if (task_close_sinks(tasks[i]) < 0)
            return luaL_error(L, "task %s: a sink failed at the end", task_name(tasks[i]));
    return 0;
}

static const node *sink_node(const plan *p, const char *name) {
    for (int i = 0; i < p->nnodes; i++)
        if (p->nodes[i].kind == NODE_SINK && strcmp(p->nodes[i].name, name) == 0) return &p->nodes[i];
    return NULL;
}

/* Pushes bytes as a sink of format fmt wrote them: JSON decoded, anything
 * else a string; NULL (a tombstone) as cjson.null. */
static void push_value(lua_State *L, const char *fmt, const char *p, size_t n) {
    char err[256];
    if (!p) lua_pushlightuserdata(L, NULL);
    else if (strcmp(fmt, "json") == 0 && codec_json_decode(L, p, n, err, sizeof err) == 0) return;
    else lua_pushlstring(L, p, n);
}

/* output(d, sink, records) -> the values (records: {value, key, ts,
 * headers}) written since the last read. */
static int l_output(lua_State *L) {
    tdriver *d = check_driver(L, 1);
    const char *name = luaL_checkstring(L, 2);
    int records = lua_toboolean(L, 3);
    const node *nd = sink_node(running(d), name);
    if (!nd) return luaL_error(L, "the pipeline has no sink '%s'", name);
    const char *fmt = node_opt(nd, "format") ? node_opt(nd, "format") : "json";
    mem_output *o = mem_output_get(driver_outputs(d->drv), name, 0);
    if (!o) return luaL_error(L, "out of memory");
    mem_queue *q = &o->q;
    lua_createtable(L, (int)(q->n - q->head), 0);
    char err[256];
    for (size_t i = q->head; i < q->n; i++) {
        const mem_record *r = &q->recs[i];
        if (!records) {
            push_value(L, fmt, r->val, r->vlen);
        } else {
            lua_createtable(L, 0, 4);
            push_value(L, fmt, r->val, r->vlen);
            lua_setfield(L, -2, "value");
            if (r->key) { lua_pushlstring(L, r->key, r->klen); lua_setfield(L, -2, "key"); }
            if (r->ts >= 0) { lua_pushnumber(L, (lua_Number)r->ts); lua_setfield(L, -2, "ts"); }
            if (r->hdrs && codec_unpack(L, r->hdrs, r->hlen, err, sizeof err) >= 0) lua_setfield(L, -2, "headers");
        }
        lua_rawseti(L, -2, (int)(i - q->head + 1));
    }
    q->head = q->n;
    mem_queue_drop_read(q);
    return 1;
}

/* side(d, name) -> the values sent to p:side(name) since the last read. */
static int l_side(lua_State *L) {
    tdriver *d = check_driver(L, 1);
    const char *name = luaL_checkstring(L, 2);
    const plan *p = running(d);
    int found = 0;
    for (int i = 0; i < p->nnodes; i++)
        if (p->nodes[i].kind == NODE_SIDE && strcmp(p->nodes[i].name, name) == 0) found = 1;
    if (!found) return luaL_error(L, "the pipeline has no p:side(\"%s\")", name);
    mem_output *o = mem_output_get(driver_outputs(d->drv), name, 1);
    if (!o) return luaL_error(L, "out of memory");
    mem_queue *q = &o->q;
    lua_createtable(L, (int)(q->n - q->head), 0);
    char err[256];
    for (size_t i = q->head; i < q->n; i++) {
        if (codec_unpack(L, q->recs[i].val, q->recs[i].vlen, err, sizeof err) < 0) lua_pushnil(L);
        lua_rawseti(L, -2, (int)(i - q->head + 1));
    }
    q->head = q->n;
    mem_queue_drop_read(q);
    return 1;
}

/* Pushes a jansson value as Lua (through its JSON text), or nil. */
static void push_json(lua_State *L, json_t *j) {
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    char err[256];
    if (!s || codec_json_decode(L, s, strlen(s), err, sizeof err) < 0) lua_pushnil(L);
    free(s);
}

/* state(d, uid, key) -> what GET /state/UID/KEY shows, or nil. */
static int l_state(lua_State *L) {
    tdriver *d = live_driver(L, 1);
    const char *uid = luaL_checkstring(L, 2);
    size_t klen;
    const char *key = luaL_checklstring(L, 3, &klen);
    const plan *p = running(d);
    const node *op = NULL;
    for (int i = 0; i < p->nnodes; i++)
        if (p->nodes[i].uid && strcmp(p->nodes[i].uid, uid) == 0 && p->nodes[i].kind != NODE_SINK &&
            p->nodes[i].kind != NODE_SOURCE)
            op = &p->nodes[i];
    state_db *db = driver_state(d->drv);
    if (!op || !node_has_state(op) || !db)
        return luaL_error(L, "no process, dedup, join, window or global table with uid '%s' in the pipeline", uid);
    g_now = d->now;                                   /* (TTL: what expired by the virtual clock is gone) */
    uint32_t kg = op->kind == NODE_GLOBAL_TABLE ? 0 : keygroup_of(key, klen, driver_cfg(d->drv)->max_parallelism);
    const char *agg = node_opt(op, "agg") ? node_opt(op, "agg") : "count";
    json_t *j = op->kind == NODE_WINDOW ? window_key_json(db, uid, kg, key, klen, INT64_MIN, INT64_MAX, agg)
                                        : state_key_json(db, uid, kg, key, klen);
    push_json(L, j);
    json_decref(j);
    return 1;
}

/* dead_letters(d) -> the dead-letter objects written since the last read. */
static int l_dead_letters(lua_State *L) {
    tdriver *d = check_driver(L, 1);
    lua_newtable(L);
    driver_flush_dead_letters(d->drv);
    FILE *f = fopen(driver_cfg(d->drv)->dead_letter_file, "r");
    if (!f) return 1;
    fseek(f, d->dl_read, SEEK_SET);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int i = 0;
    char err[256];
    while ((n = getline(&line, &cap, f)) > 0) {
        if (line[n - 1] != '\n') break;               /* (written whole, with its newline) */
        d->dl_read += n;
        if (codec_json_decode(L, line, (size_t)n - 1, err, sizeof err) < 0) lua_pushlstring(L, line, (size_t)n - 1);
        lua_rawseti(L, -2, ++i);
    }
    free(line);
    fclose(f);
    return 1;
}

static void set_counter(lua_State *L, const char *k, long v) {
    lua_pushnumber(L, (lua_Number)v);
    lua_setfield(L, -2, k);
}

/* Adds an operator's counts to operators[uid] (the table on top of L). */
static void add_operator(void *ud, task *t, const node *nd, uint64_t in, uint64_t out) {
    (void)t;
    lua_State *L = ud;
    lua_getfield(L, -1, nd->uid);                     /* ops op|nil */
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_createtable(L, 0, 3);
        lua_pushstring(L, nd->kind_name);
        lua_setfield(L, -2, "kind");
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, nd->uid);
    }
    lua_getfield(L, -1, "in");
    lua_pushnumber(L, lua_tonumber(L, -1) + (lua_Number)in);
    lua_setfield(L, -3, "in");
    lua_getfield(L, -2, "out");
    lua_pushnumber(L, lua_tonumber(L, -1) + (lua_Number)out);
    lua_setfield(L, -4, "out");
    lua_pop(L, 3);                                    /* ops */
}

/* metrics(d) -> { records_in (read), records_out (written to sinks),
 * errors, skipped, dead_letters, operators = { [uid] = { kind, in, out } },
 * tasks = { [name] = {...} }, sinks = { [name] = records written } } */
static int l_metrics(lua_State *L) {
    tdriver *d = check_driver(L, 1);
    long in = 0, out = 0, errors = 0, skipped = 0, dead = 0;
    lua_newtable(L);                                  /* m */
    lua_newtable(L);                                  /* m tasks */
    int ntasks;
    task **tasks = driver_tasks(d->drv, &ntasks);
    mem_outputs *outs = driver_outputs(d->drv);
    for (int i = 0; i < ntasks; i++) {
        task_counters c;
        task_get_counters(tasks[i], &c);
        if (task_source(tasks[i]) >= 0) in += c.records_in;
        out += c.records_out;
        errors += c.errors;
        skipped += c.skipped;
        dead += c.dead_letters;
        lua_newtable(L);
        set_counter(L, "records_in", c.records_in);
        set_counter(L, "records_out", c.records_out);
        set_counter(L, "errors", c.errors);
        set_counter(L, "skipped", c.skipped);
        set_counter(L, "dead_letters", c.dead_letters);
        lua_setfield(L, -2, task_name(tasks[i]));
    }
    lua_setfield(L, -2, "tasks");
    lua_newtable(L);
    for (int i = 0; i < outs->n; i++) {
        if (outs->outs[i].side) continue;
        set_counter(L, outs->outs[i].name, outs->outs[i].total);
    }
    lua_setfield(L, -2, "sinks");
    lua_newtable(L);
    for (int i = 0; i < ntasks; i++) task_operators(tasks[i], add_operator, L);
    lua_setfield(L, -2, "operators");
    out = 0;
    for (int i = 0; i < outs->n; i++) if (!outs->outs[i].side) out += outs->outs[i].total;
    set_counter(L, "records_in", in);
    set_counter(L, "records_out", out);
    set_counter(L, "errors", errors);
    set_counter(L, "skipped", skipped);
    set_counter(L, "dead_letters", dead);
    return 1;
}

/* reload(d, path, allow_dropped_state) -> true, or nil and why it was refused */
static int l_reload(lua_State *L) {
    tdriver *d = live_driver(L, 1);
    const char *path = luaL_checkstring(L, 2);
    int allow = lua_toboolean(L, 3);
    char *script = realpath(path, NULL);
    if (!script) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(errno));
        return 2;
    }
    char err[4096];
    g_now = d->now;
    set_running(d);
    int rc = driver_reload(d->drv, script, allow, err, sizeof err);
    set_running(NULL);
    if (rc < 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    raise_if_failed(L, d, driver_failed(d->drv)[0] ? -1 : 0);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_gc(lua_State *L) { return l_free(L); }

static const luaL_Reg driver_fns[] = {
    {"open", l_open}, {"free", l_free}, {"input", l_input}, {"watermark", l_watermark},
    {"advance_clock", l_advance_clock}, {"now", l_now}, {"version", l_version}, {"close", l_close},
    {"output", l_output}, {"side", l_side}, {"state", l_state}, {"dead_letters", l_dead_letters},
    {"metrics", l_metrics}, {"reload", l_reload}, {NULL, NULL},
};

/* package.preload["eddy.testing.native"] */
static int open_native(lua_State *L) {
    luaL_newmetatable(L, DRIVER_MT);
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushlightuserdata(L, NULL);                   /* cjson.null */
    lua_setfield(L, -2, "null");
    for (const luaL_Reg *r = driver_fns; r->name; r++) {
        lua_pushcfunction(L, r->func);
        lua_setfield(L, -2, r->name);
    }
    return 1;
}

/* ---- the runner -------------------------------------------------------- */

typedef struct file_list { char **paths; int n, cap; } file_list;

static file_list *g_found;

static int add_path(file_list *l, const char *p) {
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 16;
        char **np = realloc(l->paths, sizeof *np * cap);
        if (!np) return -1;
        l->paths = np;
        l->cap = cap;
    }
    return (l->paths[l->n++] = strdup(p)) ? 0 : -1;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* nftw: *_test.lua files; hidden folders and state/ folders are skipped. */
static int on_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    const char *base = path + ftw->base;
    if (flag == FTW_D && ftw->level > 0 && (base[0] == '.' || strcmp(base, "state") == 0 ||
                                            strcmp(base, "node_modules") == 0))
        return FTW_SKIP_SUBTREE;
    if (flag == FTW_F && ends_with(base, "_test.lua") && add_path(g_found, path) < 0) return FTW_STOP;
    return FTW_CONTINUE;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Runs one file's tests in a Lua state of its own.  Adds to *passed and
 * *failed; -1 when the file did not load. */
static int run_file(const char *path, int *index, int *passed, int *failed) {
    lua_State *L = luaL_newstate();
    if (!L) { fprintf(stderr, "eddy test: out of memory\n"); return -1; }
    luaL_openlibs(L);
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    else snprintf(dir, sizeof dir, ".");
    const char *lua_dir = daemon_lua_dir();
    lua_getglobal(L, "package");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s/?.lua;%s/?/init.lua", dir, dir, lua_dir, lua_dir);
    lua_setfield(L, -2, "path");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, open_native);
    lua_setfield(L, -2, "eddy.testing.native");
    lua_pop(L, 2);
    int rc = 0;
    lua_getglobal(L, "require");
    lua_pushstring(L, "eddy.testing");
    if (lua_pcall(L, 1, 1, 0) != 0) {
        fprintf(stderr, "eddy test: cannot load eddy.testing: %s\n", lua_tostring(L, -1));
        lua_close(L);
        return -1;
    }
    lua_getfield(L, -1, "run_file");                 /* T run_file */
    lua_pushstring(L, path);
    lua_pushinteger(L, *index);
    if (lua_pcall(L, 2, 3, 0) != 0) {                /* T passed failed | err */
        fprintf(stderr, "eddy test: %s\n", lua_tostring(L, -1));
        rc = -1;
    } else if (lua_isnil(L, -3)) {                   /* T nil err _: the file did not load */
        fprintf(stderr, "eddy test: %s\n", lua_tostring(L, -2));
        rc = -1;
    } else {
        int p = (int)lua_tointeger(L, -3), f = (int)lua_tointeger(L, -2);
        *passed += p;
        *failed += f;
        *index += p + f;
    }
    lua_close(L);
    return rc;
}

int testing_main(int argc, char **argv) {
    file_list files = { 0 };
    g_found = &files;
    const char *dflt[] = { "." };
    const char **args = argc > 0 ? (const char **)argv : dflt;
    int nargs = argc > 0 ? argc : 1;
    for (int i = 0; i < nargs; i++) {
        struct stat st;
        if (stat(args[i], &st) != 0) {
            fprintf(stderr, "eddy test: %s: %s\n", args[i], strerror(errno));
            return 2;
        }
        if (S_ISDIR(st.st_mode)) {
            int first = files.n;
            if (nftw(args[i], on_entry, 16, FTW_ACTIONRETVAL | FTW_PHYS) < 0) {
                fprintf(stderr, "eddy test: %s: %s\n", args[i], strerror(errno));
                return 2;
            }
            if (files.n > first) qsort(files.paths + first, files.n - first, sizeof *files.paths, by_name);
        } else if (add_path(&files, args[i]) < 0) {
            fprintf(stderr, "eddy test: out of memory\n");
            return 2;
        }
    }
    if (files.n == 0) {
        fprintf(stderr, "eddy test: no *_test.lua file under %s\n", nargs == 1 ? args[0] : "the paths given");
        return 2;
    }
    log_setup(LOG_ERROR, 0);
    vm_global_init();
    pthread_t wd;
    if (pthread_create(&wd, NULL, watch, NULL) == 0) pthread_detach(wd);
    setvbuf(stdout, NULL, _IOLBF, 0);
    int passed = 0, failed = 0, index = 1, broken = 0;
    for (int i = 0; i < files.n; i++) {
        const char *p = files.paths[i];
        if (strncmp(p, "./", 2) == 0) p += 2;
        if (run_file(p, &index, &passed, &failed) < 0) broken = 1;
        free(files.paths[i]);
    }
    free(files.paths);
    printf("%d passed, %d failed\n", passed, failed);
    return broken ? 2 : failed ? 1 : 0;
}
