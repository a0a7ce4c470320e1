/* config — see config.h.  The file is evaluated in a fresh LuaJIT state with
 * a small environment, then SCHEMA (one entry per key: path, type, default,
 * check) is walked twice: once to find keys it does not know, once to read
 * every key it does.  Defaults that depend on other keys (name, threads,
 * parallelism, state.dir, dead_letter.file) are filled in by config_finish().
 * The other config_*.c modules (config_internal.h) own the evaluation, the
 * messages and value parsers, the option maps and the cross-checks. */
#include "config_internal.h"
#include "log.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#define INT53 ((int64_t)1 << 53)   /* largest integer a Lua number holds exactly */

_Static_assert(LOG_DEBUG == 0 && LOG_INFO == 1 && LOG_WARN == 2 && LOG_ERROR == 3,
               "log.level choices are indexed by LOG_*");

/* ---- the schema ------------------------------------------------------------ */

/* One line per key kind; trailing arguments set .load, .check, .flags. */
#define FIELD(f) .off = offsetof(config, f), .size = sizeof(((config *)0)->f)
#define SECTION(p, ...)           { .path = p, .type = K_SECTION, __VA_ARGS__ }
#define CUSTOM(p, fn)             { .path = p, .type = K_CUSTOM, .load = fn }
#define STRING(p, d, f, ...)      { .path = p, .type = K_STRING, .def = d, FIELD(f), __VA_ARGS__ }
#define PATH(p, f)                { .path = p, .type = K_PATH, FIELD(f) }
#define BOOL(p, d, f)             { .path = p, .type = K_BOOL, .def = d, FIELD(f) }
#define INT(p, d, f, lo, hi)      { .path = p, .type = K_INT, .def = d, FIELD(f), .min = lo, .max = hi }
#define DURATION(p, d, f, lo)     { .path = p, .type = K_DURATION, .def = d, FIELD(f), .min = lo, .max = INT64_MAX }
#define SIZE(p, d, f, lo, ...)    { .path = p, .type = K_SIZE, .def = d, FIELD(f), .min = lo, .max = INT64_MAX, __VA_ARGS__ }
#define ENUM(p, d, f, ch)         { .path = p, .type = K_ENUM, .def = d, FIELD(f), .choices = ch }

static const char *const GUARANTEES[] = { "at_least_once", "exactly_once", NULL };
static const char *const ON_ERRORS[] = { "fail", "skip", "dead_letter", NULL };
static const char *const LEVELS[] = { "debug", "info", "warn", "error", NULL };
static const char *const FORMATS[] = { "text", "json", NULL };
static const char *const RESTARTS[] = { "none", "fixed", "exponential", NULL };
static const char *const SHUFFLES[] = { "local", "kafka", NULL };

/* Every key of the config file.  A section comes before its keys. */
static const key SCHEMA[] = {
    STRING("name",                   NULL,    name, .check = config_check_name),  /* default: config_finish() */
    PATH("pipeline",                          pipeline),                   /* required: config_finish() */
    INT("threads",                   NULL,    threads, 1, MAX_THREADS),    /* default: config_finish() */
    INT("parallelism",               NULL,    parallelism, 1, 32768),      /* default: config_finish() */
    INT("max_parallelism",           "128",   max_parallelism, 1, 32768),
    ENUM("guarantee",                "at_least_once", guarantee, GUARANTEES),
    ENUM("shuffle",                  "local", shuffle, SHUFFLES),
    INT("standby",                   "0",     standby, 0, 16),
    SECTION("state"),
    PATH("state.dir",                         state_dir),                  /* default: config_finish() */
    SIZE("state.cache",              "64MB",  state_cache, 0),
    CUSTOM("state.rocksdb",                   config_load_rocksdb),
    SECTION("checkpoint"),
    DURATION("checkpoint.interval",  "10s",   checkpoint_interval_ms, 1),
    INT("checkpoint.retain",         "3",     checkpoint_retain, 1, 1000),
    SECTION("restart"),
    ENUM("restart.strategy",         "fixed", restart_strategy, RESTARTS),
    INT("restart.attempts",          "3",     restart_attempts, 0, 1000000),
    DURATION("restart.delay",        "1s",    restart_delay_ms, 0),
    DURATION("restart.max_delay",    "1m",    restart_max_delay_ms, 0),
    SECTION("kafka", .load = config_load_kafka, .flags = F_OPEN),
    SECTION("kafka.embedded", .load = config_load_embedded),
    INT("kafka.embedded.brokers",    "1",     kafka_embedded_brokers, 1, 64),
    CUSTOM("kafka.embedded.topics",           config_load_topics),
    CUSTOM("sources",                         config_load_sources),
    CUSTOM("sinks",                           config_load_sinks),
    SECTION("admin", .load = config_load_admin, .flags = F_OR_FALSE),
    STRING("admin.listen",           "127.0.0.1:8600", admin_listen, .check = config_check_listen),
    STRING("admin.token",            NULL,    admin_token, .check = config_check_token),
    CUSTOM("admin.hosts",                     config_load_hosts),
    SECTION("reload"),
    BOOL("reload.watch",             "true",  reload_watch),
    INT("reload.keep_versions",      "5",     reload_keep_versions, 1, 1000),
    INT("reload.dry_run_records",    "1000",  reload_dry_run_records, 0, 1000000),
    DURATION("reload.probation",     "0",     reload_probation_ms, 0),
    CUSTOM("reload.max_error_rate",           config_load_error_rate),
    BOOL("reload.hold_commits",      "false", reload_hold_commits),
    ENUM("on_error",                 "fail",  on_error, ON_ERRORS),
    SECTION("dead_letter"),
    PATH("dead_letter.file",                  dead_letter_file),           /* default: config_finish() */
    STRING("dead_letter.kafka",      NULL,    dead_letter_kafka),
    SECTION("limits"),
    SIZE("limits.memory",            "256MB", limit_memory, 0, .check = config_check_memory),
    INT("limits.instructions",       "10000000", limit_instructions, 1000, INT53),
    DURATION("limits.time",          "1s",    limit_time_ms, 1),
    SECTION("log"),
    ENUM("log.level",                "info",  log_level, LEVELS),
    ENUM("log.format",               "text",  log_format, FORMATS),
    SECTION("sandbox"),
    BOOL("sandbox.ffi",              "false", sandbox_ffi),
    BOOL("sandbox.os",               "false", sandbox_os),
    SECTION("tuning"),
    INT("tuning.batch",              "1024",  batch_size, 1, 65536),
    INT("tuning.channel",            "8",     channel_capacity, 1, 1024),
};
#define NKEYS ((int)(sizeof SCHEMA / sizeof SCHEMA[0]))

static const key *schema_find(const char *path)
{
    for (int i = 0; i < NKEYS; i++)
        if (strcmp(SCHEMA[i].path, path) == 0)
            return &SCHEMA[i];
    return NULL;
}

static void *field(config *c, const key *k) { return (char *)c + k->off; }

static void store_int(config *c, const key *k, int64_t v)
{
    if (k->size == sizeof(int))
        *(int *)field(c, k) = (int)v;
    else
        *(int64_t *)field(c, k) = v;
}

static int store_string(config *c, const key *k, const char *s, const char *dir)
{
    char **slot = field(c, k);
    char *copy = k->type == K_PATH ? config_path_resolve(dir, s) : strdup(s);
    if (!copy)
        return -1;
    free(*slot);
    *slot = copy;
    return 0;
}

/* Sets an unset key to its default (SCHEMA's spelling, parsed as the
 * config's would be). */
static int apply_default(config *c, const key *k, char *err, size_t n)
{
    int64_t v = 0;
    switch (k->type) {
    case K_STRING:
    case K_PATH:
        if (store_string(c, k, k->def, c->dir) < 0)
            return fail(err, n, "out of memory");
        return 0;
    case K_INT:
        v = strtoll(k->def, NULL, 10);
        break;
    case K_BOOL:
        v = strcmp(k->def, "true") == 0;
        break;
    case K_DURATION:
        if (config_parse_duration(k->def, &v) < 0)
            return fail(err, n, "%s: bad default \"%s\"", k->path, k->def);
        break;
    case K_SIZE:
        if (config_parse_size(k->def, &v) < 0)
            return fail(err, n, "%s: bad default \"%s\"", k->path, k->def);
        break;
    case K_ENUM:
        for (v = 0; k->choices[v] && strcmp(k->choices[v], k->def) != 0; v++)
            ;
        break;
    default:
        return 0;
    }
    store_int(c, k, v);
    return 0;
}

/* ---- reading values -------------------------------------------------------- */

int config_read_int(lua_State *L, int idx, const key *k, const char *path, int64_t *out,
                    char *err, size_t n)
{
    char d[128];
    double x = lua_tonumber(L, idx);
    if (lua_type(L, idx) != LUA_TNUMBER || x != floor(x) || !isfinite(x))
        return fail(err, n, "%s: expected an integer, got %s", path,
                    config_describe(L, idx, LUA_TNUMBER, d, sizeof d));
    if (x < (double)k->min || x > (double)k->max) {
        if (k->max >= INT53)
            return fail(err, n, "%s: expected an integer of at least %lld, got %s", path,
                        (long long)k->min, config_describe(L, idx, LUA_TNUMBER, d, sizeof d));
        return fail(err, n, "%s: expected an integer from %lld to %lld, got %s", path,
                    (long long)k->min, (long long)k->max, config_describe(L, idx, LUA_TNUMBER, d, sizeof d));
    }
    *out = (int64_t)x;
    return 0;
}

/* A duration or a size: a number (ms, bytes) or a string with a unit. */
static int read_amount(lua_State *L, int idx, const key *k, int64_t *out, char *err, size_t n)
{
    char d[128];
    int dur = k->type == K_DURATION;
    const char *like = dur ? "a duration like \"10s\"" : "a size like \"64MB\"";
    int t = lua_type(L, idx);
    int64_t v;
    if (t == LUA_TNUMBER) {
        double x = lua_tonumber(L, idx);
        if (!(x >= 0 && x < 9.2e18) || (!dur && x != floor(x)))
            return fail(err, n, "%s: expected %s, got %s", k->path, like,
                        config_describe(L, idx, LUA_TNUMBER, d, sizeof d));
        v = (int64_t)llround(x);
    } else if (t == LUA_TSTRING) {
        const char *s = lua_tostring(L, idx);
        if ((dur ? config_parse_duration(s, &v) : config_parse_size(s, &v)) < 0)
            return fail(err, n, "%s: expected %s, got %s", k->path, like,
                        config_describe(L, idx, LUA_TSTRING, d, sizeof d));
    } else {
        return fail(err, n, "%s: expected %s, got %s", k->path, like,
                    config_describe(L, idx, LUA_TSTRING, d, sizeof d));
    }
    if (v < k->min || v > k->max)
        return fail(err, n, "%s: expected %s of at least %lld%s, got %s", k->path,
                    dur ? "a duration" : "a size", (long long)k->min, dur ? "ms" : " bytes",
                    config_describe(L, idx, t, d, sizeof d));
    *out = v;
    return 0;
}

static int read_enum(lua_State *L, int idx, const key *k, int64_t *out, char *err, size_t n)
{
    char d[128], want[256];
    size_t o = 0;
    if (lua_type(L, idx) == LUA_TSTRING) {
        const char *s = lua_tostring(L, idx);
        for (int i = 0; k->choices[i]; i++)
            if (strcmp(s, k->choices[i]) == 0) {
                *out = i;
                return 0;
            }
    }
    /* "a" or "b" / "a", "b" or "c" */
    for (int i = 0; k->choices[i] && o < sizeof want; i++)
        o += (size_t)snprintf(want + o, sizeof want - o, "%s\"%s\"",
                              i == 0 ? "" : k->choices[i + 1] ? ", " : " or ", k->choices[i]);
    return fail(err, n, "%s: expected %s, got %s", k->path, want,
                config_describe(L, idx, LUA_TSTRING, d, sizeof d));
}

/* Reads the non-nil value at idx for key k into c. */
static int load_value(lua_State *L, int idx, const key *k, config *c, char *err, size_t n)
{
    char d[128];
    int64_t v = 0;
    int t = lua_type(L, idx);
    switch (k->type) {
    case K_SECTION:
        if (!(t == LUA_TTABLE || (t == LUA_TBOOLEAN && !lua_toboolean(L, idx) && (k->flags & F_OR_FALSE))))
            return fail(err, n, "%s: expected a table%s, got %s", k->path,
                        k->flags & F_OR_FALSE ? " or false" : "", config_describe(L, idx, LUA_TTABLE, d, sizeof d));
        return k->load ? k->load(L, idx, k, c, err, n) : 0;
    case K_CUSTOM:
        return k->load(L, idx, k, c, err, n);
    case K_STRING:
    case K_PATH:
        if (t != LUA_TSTRING || lua_objlen(L, idx) == 0)
            return fail(err, n, "%s: expected a non-empty string, got %s", k->path,
                        config_describe(L, idx, LUA_TSTRING, d, sizeof d));
        if (store_string(c, k, lua_tostring(L, idx), c->dir) < 0)
            return fail(err, n, "out of memory");
        return k->check ? k->check(c, k, err, n) : 0;
    case K_INT:
        if (config_read_int(L, idx, k, k->path, &v, err, n) < 0)
            return -1;
        break;
    case K_BOOL:
        if (t != LUA_TBOOLEAN)
            return fail(err, n, "%s: expected true or false, got %s", k->path,
                        config_describe(L, idx, LUA_TBOOLEAN, d, sizeof d));
        v = lua_toboolean(L, idx);
        break;
    case K_DURATION:
    case K_SIZE:
        if (read_amount(L, idx, k, &v, err, n) < 0)
            return -1;
        break;
    case K_ENUM:
        if (read_enum(L, idx, k, &v, err, n) < 0)
            return -1;
        break;
    }
    store_int(c, k, v);
    return k->check ? k->check(c, k, err, n) : 0;
}

/* Pushes the value at `path` ("checkpoint.interval") under the table at
 * root, or nil when a section on the way is absent or not a table.
 * Stack: ... -> ... value */
static void push_path(lua_State *L, int root, const char *path)
{
    char seg[64];
    lua_pushvalue(L, root);
    while (*path) {
        size_t len = strcspn(path, ".");
        if (!lua_istable(L, -1) || len >= sizeof seg) {
            lua_pop(L, 1);
            lua_pushnil(L);
            return;
        }
        memcpy(seg, path, len);
        seg[len] = '\0';
        lua_pushstring(L, seg);
        lua_rawget(L, -2);
        lua_remove(L, -2);
        path += len + (path[len] == '.');
    }
}


static int apply_defaults(config *c, const unsigned char *seen, char *err, size_t n)
{
    for (int i = 0; i < NKEYS; i++)
        if (!seen[i] && SCHEMA[i].def && apply_default(c, &SCHEMA[i], err, n) < 0)
            return -1;
    return 0;
}

/* Damerau-free edit distance of two short keys, capped at 9. */
static int distance(const char *a, const char *b)
{
    int la = (int)strlen(a), lb = (int)strlen(b), row[64];
    if (la >= 63 || lb >= 63)
        return 9;
    for (int j = 0; j <= lb; j++)
        row[j] = j;
    for (int i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = i;
        for (int j = 1; j <= lb; j++) {
            int up = row[j];
            int best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb] > 9 ? 9 : row[lb];
}

/* The known key nearest a misspelt `path`, in the same section, or NULL. */
static const char *suggest(const char *path)
{
    const char *dot = strrchr(path, '.'), *best = NULL;
    size_t plen = dot ? (size_t)(dot - path) + 1 : 0;
    int bestd = 3;
    for (int i = 0; i < NKEYS; i++) {
        const char *p = SCHEMA[i].path;
        if (strncmp(p, path, plen) != 0 || strchr(p + plen, '.'))
            continue;
        int d = distance(p + plen, path + plen);
        if (d < bestd) {
            bestd = d;
            best = p;
        }
    }
    return best;
}

/* Finds keys SCHEMA does not know in the table at idx (whose path is
 * `prefix`), keeping the first in byte order in `worst`, so that the error
 * does not depend on Lua's hash order. */
static void find_unknown(lua_State *L, int idx, const char *prefix, int open, char *worst, size_t n)
{
    char path[256];
    lua_pushnil(L);                                   /* ... nil */
    while (lua_next(L, idx)) {                        /* ... key value */
        config_child_path(path, sizeof path, prefix, L, -2);
        const key *k = lua_type(L, -2) == LUA_TSTRING ? schema_find(path) : NULL;
        if (!k && !open && (!*worst || strcmp(path, worst) < 0))
            snprintf(worst, n, "%s", path);
        if (k && k->type == K_SECTION && lua_istable(L, -1))
            find_unknown(L, lua_gettop(L), path, k->flags & F_OPEN, worst, n);
        lua_pop(L, 1);                                /* ... key */
    }
}

/* Reads the config table at idx into c. */
static int load_table(lua_State *L, int idx, config *c, char *err, size_t n)
{
    char unknown[256] = "";
    unsigned char seen[NKEYS] = { 0 };

    find_unknown(L, idx, "", 0, unknown, sizeof unknown);
    if (*unknown) {
        const char *near = suggest(unknown);
        if (near)
            return fail(err, n, "%s: unknown key (did you mean %s?)", unknown, near);
        return fail(err, n, "%s: unknown key", unknown);
    }
    for (int i = 0; i < NKEYS; i++) {
        const key *k = &SCHEMA[i];
        push_path(L, idx, k->path);                   /* ... value */
        int rc = lua_isnil(L, -1) ? 0 : load_value(L, lua_gettop(L), k, c, err, n);
        seen[i] = !lua_isnil(L, -1);
        lua_pop(L, 1);                                /* ... */
        if (rc < 0)
            return -1;
    }
    if (apply_defaults(c, seen, err, n) < 0)
        return -1;
    return config_finish(c, err, n);
}

/* ---- public ------------------------------------------------------------------ */

static config *config_new(void)
{
    config *c = calloc(1, sizeof *c);
    if (c)
        c->admin_enabled = 1;
    return c;
}

config *config_load(const char *path, char *err, size_t errlen)
{
    lua_State *L = NULL;
    config *c = config_new();
    if (!c) {
        fail(err, errlen, "out of memory");
        goto err;
    }
    if (!(c->path = realpath(path, NULL))) {
        fail(err, errlen, "%s: %s", path, strerror(errno));
        goto err;
    }
    c->dir = strndup(c->path, (size_t)(strrchr(c->path, '/') - c->path));
    if (c->dir && !*c->dir) {                         /* the file is in "/" */
        free(c->dir);
        c->dir = strdup("/");
    }
    if (!c->dir || !(L = luaL_newstate())) {
        fail(err, errlen, "out of memory");
        goto err;
    }
    if (config_eval_file(L, path, err, errlen) < 0)          /* table */
        goto err;
    if (load_table(L, lua_gettop(L), c, err, errlen) < 0)
        goto err;
    lua_close(L);
    return c;
err:
    if (L)
        lua_close(L);
    config_destroy(c);
    return NULL;
}

config *config_default_for_pipeline(const char *pipeline_path, char *err, size_t errlen)
{
    unsigned char seen[NKEYS] = { 0 };
    const char *base;
    size_t blen;
    config *c = config_new();
    if (!c) {
        fail(err, errlen, "out of memory");
        goto err;
    }
    if (!(c->pipeline = realpath(pipeline_path, NULL))) {
        fail(err, errlen, "%s: %s", pipeline_path, strerror(errno));
        goto err;
    }
    base = strrchr(c->pipeline, '/') + 1;
    blen = strlen(base);
    if (blen > 4 && strcmp(base + blen - 4, ".lua") == 0)
        blen -= 4;
    c->dir = strndup(c->pipeline, (size_t)(base - 1 - c->pipeline));
    if (c->dir && !*c->dir) {
        free(c->dir);
        c->dir = strdup("/");
    }
    c->name = config_name_from(base, blen);
    if (!c->dir || !c->name) {
        fail(err, errlen, "out of memory");
        goto err;
    }
    if (apply_defaults(c, seen, err, errlen) < 0 || config_finish(c, err, errlen) < 0)
        goto err;
    return c;
err:
    config_destroy(c);
    return NULL;
}
/* Pushes onto L2 a copy of the value at idx of L (nil, booleans, numbers,
 * strings and tables of them); with merge, a table is merged into the
 * table on top of L2 (left in place; its reference is what is pushed).
 * 0, or -1 with err. */
static int copy_over(lua_State *L, int idx, lua_State *L2, int merge, int depth, char *err, size_t n)
{
    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    switch (lua_type(L, idx)) {
    case LUA_TNIL: lua_pushnil(L2); return 0;
    case LUA_TBOOLEAN: lua_pushboolean(L2, lua_toboolean(L, idx)); return 0;
    case LUA_TNUMBER: lua_pushnumber(L2, lua_tonumber(L, idx)); return 0;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        lua_pushlstring(L2, s, len);
        return 0;
    }
    case LUA_TTABLE: break;
    default: return fail(err, n, "a config value cannot be a %s", luaL_typename(L, idx));
    }
    if (depth > 16) return fail(err, n, "the config's tables nest too deep");
    if (!merge || !lua_istable(L2, -1)) lua_newtable(L2);
    else lua_pushvalue(L2, -1);                       /* base base */
    for (lua_pushnil(L); lua_next(L, idx); lua_pop(L, 1)) {   /* L: ... k v */
        if (copy_over(L, -2, L2, 0, depth + 1, err, n) < 0) return -1;     /* base t k */
        lua_pushvalue(L2, -1);                        /* base t k k */
        lua_rawget(L2, -3);                           /* base t k old */
        if (copy_over(L, -1, L2, 1, depth + 1, err, n) < 0) return -1;     /* base t k old new */
        lua_remove(L2, -2);                           /* base t k new */
        lua_rawset(L2, -3);                           /* base t */
    }
    return 0;
}

config *config_load_over(const char *path, const char *pipeline, lua_State *L, int over, char *err, size_t errlen)
{
    lua_State *L2 = NULL;
    config *c = config_new();
    const char *file = path ? path : pipeline;
    if (!c) {
        fail(err, errlen, "out of memory");
        goto err;
    }
    if (!(c->path = realpath(file, NULL))) {
        fail(err, errlen, "%s: %s", file, strerror(errno));
        goto err;
    }
    c->dir = strndup(c->path, (size_t)(strrchr(c->path, '/') - c->path));
    if (c->dir && !*c->dir) {
        free(c->dir);
        c->dir = strdup("/");
    }
    if (!c->dir || !(L2 = luaL_newstate())) {
        fail(err, errlen, "out of memory");
        goto err;
    }
    if (path) {
        if (config_eval_file(L2, path, err, errlen) < 0)     /* base */
            goto err;
    } else {
        lua_newtable(L2);
        lua_pushstring(L2, c->path);
        lua_setfield(L2, -2, "pipeline");
        free(c->path);                                /* a name from the script's, as for eddy check */
        c->path = NULL;
    }
    if (copy_over(L, over, L2, 1, 0, err, errlen) < 0)      /* merged */
        goto err;
    if (load_table(L2, lua_gettop(L2), c, err, errlen) < 0)
        goto err;
    lua_close(L2);
    return c;
err:
    if (L2)
        lua_close(L2);
    config_destroy(c);
    return NULL;
}

void config_destroy(config *c)
{
    if (!c)
        return;
    free(c->path);
    free(c->dir);
    free(c->name);
    free(c->pipeline);
    free(c->state_dir);
    config_opt_list_free(&c->kafka);
    config_opt_list_free(&c->kafka_embedded_topics);
    config_opt_list_free(&c->state_rocksdb);
    config_groups_free(c->sources, c->nsources);
    config_groups_free(c->sinks, c->nsinks);
    free(c->admin_listen);
    free(c->admin_token);
    free(c->admin_hosts);
    free(c->dead_letter_file);
    free(c->dead_letter_kafka);
    free(c);
}
