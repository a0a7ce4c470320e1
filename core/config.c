/* config — see config.h.  The file is evaluated in a fresh LuaJIT state with
 * a small environment, then SCHEMA (one entry per key: path, type, default,
 * check) is walked twice: once to find keys it does not know, once to read
 * every key it does.  Defaults that depend on other keys (name, threads,
 * parallelism, state.dir, dead_letter.file) are filled in by finish(). */
#include "config.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <luajit.h>

/* Evaluating a config file stops after this many VM instructions: a config
 * is a few dozen lines, so this only ever catches an endless loop. */
#define EVAL_MAX_INSTRUCTIONS 20000000
#define MAX_THREADS 1024
#define MAX_NAME 128
#define MAX_PARTITIONS 4096
#define INT53 ((int64_t)1 << 53)   /* largest integer a Lua number holds exactly */

_Static_assert(LOG_DEBUG == 0 && LOG_INFO == 1 && LOG_WARN == 2 && LOG_ERROR == 3,
               "log.level choices are indexed by LOG_*");

/* ---- errors and Lua values in messages ------------------------------------ */

static int fail(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && n)
        vsnprintf(err, n, fmt, ap);
    va_end(ap);
    return -1;
}

/* `s` between double quotes, with quotes, backslashes and control bytes
 * escaped, cut at 60 bytes. */
static void quote(char *buf, size_t n, const char *s, size_t len)
{
    size_t o = 0;
    buf[o++] = '"';
    for (size_t i = 0; i < len && o + 8 < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (i == 60) {
            o += (size_t)snprintf(buf + o, n - o, "...");
            break;
        }
        if (ch == '"' || ch == '\\')
            o += (size_t)snprintf(buf + o, n - o, "\\%c", ch);
        else if (ch == '\n')
            o += (size_t)snprintf(buf + o, n - o, "\\n");
        else if (ch < 0x20 || ch == 0x7f)
            o += (size_t)snprintf(buf + o, n - o, "\\x%02x", ch);
        else
            buf[o++] = (char)ch;
    }
    snprintf(buf + o, n - o, "\"");
}

/* The value at idx for an error message.  A value of the Lua type the key
 * takes (`same`) is shown bare ("3.5", "\"ten\""); any other with its type
 * ("string \"two\"", "boolean true", "a table"). */
static const char *describe(lua_State *L, int idx, int same, char *buf, size_t n)
{
    char q[96];
    size_t len;
    int t = lua_type(L, idx);
    const char *pre = t == same ? "" : t == LUA_TNUMBER ? "number " : t == LUA_TSTRING
                      ? "string " : "boolean ";
    switch (t) {
    case LUA_TNUMBER: {
        double x = lua_tonumber(L, idx);
        if (isnan(x))
            snprintf(buf, n, "%snan", pre);
        else
            snprintf(buf, n, "%s%.14g", pre, x);
        break;
    }
    case LUA_TSTRING: {
        const char *s = lua_tolstring(L, idx, &len);
        quote(q, sizeof q, s, len);
        snprintf(buf, n, "%s%s", pre, q);
        break;
    }
    case LUA_TBOOLEAN:
        snprintf(buf, n, "%s%s", pre, lua_toboolean(L, idx) ? "true" : "false");
        break;
    case LUA_TNIL:
        snprintf(buf, n, "nil");
        break;
    default:
        snprintf(buf, n, "a %s", lua_typename(L, t));
        break;
    }
    return buf;
}

static int is_ident(const char *s)
{
    if (!(*s == '_' || isalpha((unsigned char)*s)))
        return 0;
    for (s++; *s; s++)
        if (!(*s == '_' || isalnum((unsigned char)*s)))
            return 0;
    return 1;
}

/* The path of the key at idx inside `prefix`: "checkpoint.interval",
 * kafka["bootstrap.servers"], "sources[1]". */
static void child_path(char *buf, size_t n, const char *prefix, lua_State *L, int idx)
{
    const char *dot = *prefix ? "." : "";
    if (lua_type(L, idx) == LUA_TSTRING) {
        size_t len;
        const char *k = lua_tolstring(L, idx, &len);
        if (is_ident(k)) {
            snprintf(buf, n, "%s%s%s", prefix, dot, k);
        } else {
            char q[96];
            quote(q, sizeof q, k, len);
            snprintf(buf, n, "%s[%s]", prefix, q);
        }
    } else if (lua_type(L, idx) == LUA_TNUMBER) {
        snprintf(buf, n, "%s[%.14g]", prefix, lua_tonumber(L, idx));
    } else if (lua_type(L, idx) == LUA_TBOOLEAN) {
        snprintf(buf, n, "%s[%s]", prefix, lua_toboolean(L, idx) ? "true" : "false");
    } else {
        snprintf(buf, n, "%s[%s]", prefix, lua_typename(L, lua_type(L, idx)));
    }
}

/* ---- durations, sizes, paths ---------------------------------------------- */

/* "12" or "1.5" at the start of s (no sign, no exponent, no leading '.');
 * sets *v and *rest to what follows. */
static int parse_amount(const char *s, double *v, const char **rest)
{
    double x = 0, scale = 1;
    if (!s || *s < '0' || *s > '9')
        return -1;
    for (; *s >= '0' && *s <= '9'; s++)
        x = x * 10 + (*s - '0');
    if (*s == '.') {
        s++;
        if (*s < '0' || *s > '9')
            return -1;
        for (; *s >= '0' && *s <= '9'; s++)
            x += (*s - '0') * (scale /= 10);
    }
    *v = x;
    *rest = s;
    return 0;
}

/* amount * mult rounded, or -1 when it does not fit an int64_t. */
static int scaled(double amount, double mult, int64_t *out)
{
    double v = amount * mult;
    if (!(v < 9.2e18))
        return -1;
    *out = (int64_t)llround(v);
    return 0;
}

int config_parse_duration(const char *s, int64_t *ms)
{
    static const struct { const char *unit; double ms; } UNITS[] = {
        { "", 1 }, { "ms", 1 }, { "s", 1e3 }, { "m", 60e3 }, { "h", 3600e3 }, { "d", 86400e3 },
    };
    double v;
    const char *unit;
    if (parse_amount(s, &v, &unit) < 0)
        return -1;
    for (size_t i = 0; i < sizeof UNITS / sizeof UNITS[0]; i++)
        if (strcmp(unit, UNITS[i].unit) == 0)
            return scaled(v, UNITS[i].ms, ms);
    return -1;
}

int config_parse_size(const char *s, int64_t *bytes)
{
    /* Case-insensitive: "64mb" is what people type too.  1KB = 1024 bytes. */
    static const struct { const char *unit; double mult; } UNITS[] = {
        { "", 1 }, { "b", 1 }, { "k", 1024.0 }, { "kb", 1024.0 }, { "m", 1048576.0 },
        { "mb", 1048576.0 }, { "g", 1073741824.0 }, { "gb", 1073741824.0 },
        { "t", 1099511627776.0 }, { "tb", 1099511627776.0 },
    };
    double v;
    const char *unit;
    if (parse_amount(s, &v, &unit) < 0)
        return -1;
    for (size_t i = 0; i < sizeof UNITS / sizeof UNITS[0]; i++)
        if (strcasecmp(unit, UNITS[i].unit) == 0)
            return scaled(v, UNITS[i].mult, bytes);
    return -1;
}

/* `p` as an absolute path: kept when absolute, else joined to `dir` (an
 * absolute folder), without leading "./".  Owned, or NULL. */
static char *path_resolve(const char *dir, const char *p)
{
    char *out = NULL;
    if (p[0] == '/')
        return strdup(p);
    while (p[0] == '.' && p[1] == '/')
        for (p += 2; *p == '/'; p++)
            ;
    if (strcmp(p, ".") == 0)
        p = "";
    size_t dl = strlen(dir);
    const char *sep = (dl && dir[dl - 1] == '/') || !*p ? "" : "/";
    if (asprintf(&out, "%s%s%s", dir, sep, p) < 0)
        return NULL;
    return out;
}

/* ---- the schema ------------------------------------------------------------ */

typedef enum { K_SECTION, K_STRING, K_PATH, K_INT, K_BOOL, K_DURATION, K_SIZE, K_ENUM, K_CUSTOM } key_type;

typedef struct key key;
/* Reads the (non-nil) value at idx into c: the whole job of a K_CUSTOM key,
 * and an extra step for a section.  Returns 0, or -1 with err set. */
typedef int (*load_fn)(lua_State *L, int idx, const key *k, config *c, char *err, size_t n);
/* Checks a value the config set, once stored (defaults are not checked). */
typedef int (*check_fn)(config *c, const key *k, char *err, size_t n);

enum {
    F_OR_FALSE = 1,   /* a section that may be `false` (admin = false) */
    F_OPEN = 2,       /* a section whose unlisted keys are not errors (kafka: librdkafka properties) */
};

struct key {
    const char *path;
    key_type type;
    const char *def;          /* default in the config's own spelling ("10s", "64MB", "3",
                               * "true"); NULL: none, or computed by finish() */
    size_t off, size;         /* the field of config; size tells int from int64_t */
    int64_t min, max;         /* K_INT, K_DURATION, K_SIZE */
    const char *const *choices;   /* K_ENUM: NULL-terminated; the index is the value */
    load_fn load;
    check_fn check;
    int flags;
};

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

static int load_kafka(lua_State *, int, const key *, config *, char *, size_t);
static int load_embedded(lua_State *, int, const key *, config *, char *, size_t);
static int load_rocksdb(lua_State *, int, const key *, config *, char *, size_t);
static int load_topics(lua_State *, int, const key *, config *, char *, size_t);
static int load_sources(lua_State *, int, const key *, config *, char *, size_t);
static int load_sinks(lua_State *, int, const key *, config *, char *, size_t);
static int load_admin(lua_State *, int, const key *, config *, char *, size_t);
static int load_hosts(lua_State *, int, const key *, config *, char *, size_t);
static int check_name(config *, const key *, char *, size_t);
static int check_listen(config *, const key *, char *, size_t);
static int check_memory(config *, const key *, char *, size_t);
static int check_token(config *, const key *, char *, size_t);

static const char *const GUARANTEES[] = { "at_least_once", "exactly_once", NULL };
static const char *const ON_ERRORS[] = { "fail", "skip", "dead_letter", NULL };
static const char *const LEVELS[] = { "debug", "info", "warn", "error", NULL };
static const char *const FORMATS[] = { "text", "json", NULL };
static const char *const RESTARTS[] = { "none", "fixed", "exponential", NULL };

/* Every key of the config file.  A section comes before its keys. */
static const key SCHEMA[] = {
    STRING("name",                   NULL,    name, .check = check_name),  /* default: finish() */
    PATH("pipeline",                          pipeline),                   /* required: finish() */
    INT("threads",                   NULL,    threads, 1, MAX_THREADS),    /* default: finish() */
    INT("parallelism",               NULL,    parallelism, 1, 32768),      /* default: finish() */
    INT("max_parallelism",           "128",   max_parallelism, 1, 32768),
    ENUM("guarantee",                "at_least_once", guarantee, GUARANTEES),
    SECTION("state"),
    PATH("state.dir",                         state_dir),                  /* default: finish() */
    SIZE("state.cache",              "64MB",  state_cache, 0),
    CUSTOM("state.rocksdb",                   load_rocksdb),
    SECTION("checkpoint"),
    DURATION("checkpoint.interval",  "10s",   checkpoint_interval_ms, 1),
    INT("checkpoint.retain",         "3",     checkpoint_retain, 1, 1000),
    SECTION("restart"),
    ENUM("restart.strategy",         "fixed", restart_strategy, RESTARTS),
    INT("restart.attempts",          "3",     restart_attempts, 0, 1000000),
    DURATION("restart.delay",        "1s",    restart_delay_ms, 0),
    DURATION("restart.max_delay",    "1m",    restart_max_delay_ms, 0),
    SECTION("kafka", .load = load_kafka, .flags = F_OPEN),
    SECTION("kafka.embedded", .load = load_embedded),
    INT("kafka.embedded.brokers",    "1",     kafka_embedded_brokers, 1, 64),
    CUSTOM("kafka.embedded.topics",           load_topics),
    CUSTOM("sources",                         load_sources),
    CUSTOM("sinks",                           load_sinks),
    SECTION("admin", .load = load_admin, .flags = F_OR_FALSE),
    STRING("admin.listen",           "127.0.0.1:8600", admin_listen, .check = check_listen),
    STRING("admin.token",            NULL,    admin_token, .check = check_token),
    CUSTOM("admin.hosts",                     load_hosts),
    SECTION("reload"),
    BOOL("reload.watch",             "true",  reload_watch),
    ENUM("on_error",                 "fail",  on_error, ON_ERRORS),
    SECTION("dead_letter"),
    PATH("dead_letter.file",                  dead_letter_file),           /* default: finish() */
    STRING("dead_letter.kafka",      NULL,    dead_letter_kafka),
    SECTION("limits"),
    SIZE("limits.memory",            "256MB", limit_memory, 0, .check = check_memory),
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
    char *copy = k->type == K_PATH ? path_resolve(dir, s) : strdup(s);
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

static int read_int(lua_State *L, int idx, const key *k, const char *path, int64_t *out,
                    char *err, size_t n)
{
    char d[128];
    double x = lua_tonumber(L, idx);
    if (lua_type(L, idx) != LUA_TNUMBER || x != floor(x) || !isfinite(x))
        return fail(err, n, "%s: expected an integer, got %s", path,
                    describe(L, idx, LUA_TNUMBER, d, sizeof d));
    if (x < (double)k->min || x > (double)k->max) {
        if (k->max >= INT53)
            return fail(err, n, "%s: expected an integer of at least %lld, got %s", path,
                        (long long)k->min, describe(L, idx, LUA_TNUMBER, d, sizeof d));
        return fail(err, n, "%s: expected an integer from %lld to %lld, got %s", path,
                    (long long)k->min, (long long)k->max, describe(L, idx, LUA_TNUMBER, d, sizeof d));
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
                        describe(L, idx, LUA_TNUMBER, d, sizeof d));
        v = (int64_t)llround(x);
    } else if (t == LUA_TSTRING) {
        const char *s = lua_tostring(L, idx);
        if ((dur ? config_parse_duration(s, &v) : config_parse_size(s, &v)) < 0)
            return fail(err, n, "%s: expected %s, got %s", k->path, like,
                        describe(L, idx, LUA_TSTRING, d, sizeof d));
    } else {
        return fail(err, n, "%s: expected %s, got %s", k->path, like,
                    describe(L, idx, LUA_TSTRING, d, sizeof d));
    }
    if (v < k->min || v > k->max)
        return fail(err, n, "%s: expected %s of at least %lld%s, got %s", k->path,
                    dur ? "a duration" : "a size", (long long)k->min, dur ? "ms" : " bytes",
                    describe(L, idx, t, d, sizeof d));
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
                describe(L, idx, LUA_TSTRING, d, sizeof d));
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
                        k->flags & F_OR_FALSE ? " or false" : "", describe(L, idx, LUA_TTABLE, d, sizeof d));
        return k->load ? k->load(L, idx, k, c, err, n) : 0;
    case K_CUSTOM:
        return k->load(L, idx, k, c, err, n);
    case K_STRING:
    case K_PATH:
        if (t != LUA_TSTRING || lua_objlen(L, idx) == 0)
            return fail(err, n, "%s: expected a non-empty string, got %s", k->path,
                        describe(L, idx, LUA_TSTRING, d, sizeof d));
        if (store_string(c, k, lua_tostring(L, idx), c->dir) < 0)
            return fail(err, n, "out of memory");
        return k->check ? k->check(c, k, err, n) : 0;
    case K_INT:
        if (read_int(L, idx, k, k->path, &v, err, n) < 0)
            return -1;
        break;
    case K_BOOL:
        if (t != LUA_TBOOLEAN)
            return fail(err, n, "%s: expected true or false, got %s", k->path,
                        describe(L, idx, LUA_TBOOLEAN, d, sizeof d));
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

/* ---- scalar options: kafka properties, sources, sinks ------------------------ */

static int opt_cmp(const void *a, const void *b)
{
    return strcmp(((const opt *)a)->key, ((const opt *)b)->key);
}

static int group_cmp(const void *a, const void *b)
{
    return strcmp(((const opt_group *)a)->name, ((const opt_group *)b)->name);
}

static void opt_list_free(opt_list *l)
{
    for (int i = 0; i < l->n; i++) {
        free(l->items[i].key);
        free(l->items[i].s);
    }
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

/* Appends an option; the text of a number is "4", "0.5", "1e+20"; of a
 * boolean "true"/"false".  Returns the new option (borrowed), or NULL. */
static opt *opt_add(opt_list *l, const char *key, opt_type type, const char *s, double num, int b)
{
    char text[64];
    opt *items = realloc(l->items, sizeof *items * (size_t)(l->n + 1));
    if (!items)
        return NULL;
    l->items = items;
    opt *o = &items[l->n];
    memset(o, 0, sizeof *o);
    o->type = type;
    o->n = num;
    o->b = b;
    if (type == OPT_NUMBER) {
        if (num == floor(num) && fabs(num) < 1e15)
            snprintf(text, sizeof text, "%.0f", num);
        else
            snprintf(text, sizeof text, "%.17g", num);
        s = text;
    } else if (type == OPT_BOOL) {
        s = b ? "true" : "false";
    }
    o->key = strdup(key);
    o->s = strdup(s);
    if (!o->key || !o->s) {
        free(o->key);
        free(o->s);
        return NULL;
    }
    l->n++;
    return o;
}

/* Adds the scalar at idx (key at kidx, a string) to l.  A `file` or `dir`
 * option that is a string is a path, resolved against dir when dir is set. */
static int opt_add_lua(lua_State *L, int kidx, int idx, const char *path, opt_list *l,
                       const char *dir, char *err, size_t n)
{
    char d[128];
    char *resolved = NULL;
    const char *k = lua_tostring(L, kidx);
    opt *o = NULL;
    if (dir && (strcmp(k, "file") == 0 || strcmp(k, "dir") == 0) && lua_type(L, idx) != LUA_TSTRING)
        return fail(err, n, "%s: expected a path (a string), got %s", path,
                    describe(L, idx, LUA_TSTRING, d, sizeof d));
    switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
        const char *s = lua_tostring(L, idx);
        if (dir && *s && (strcmp(k, "file") == 0 || strcmp(k, "dir") == 0)) {
            if (!(resolved = path_resolve(dir, s)))
                break;
            s = resolved;
        }
        o = opt_add(l, k, OPT_STRING, s, 0, 0);
        break;
    }
    case LUA_TNUMBER:
        o = opt_add(l, k, OPT_NUMBER, NULL, lua_tonumber(L, idx), 0);
        break;
    case LUA_TBOOLEAN:
        o = opt_add(l, k, OPT_BOOL, NULL, 0, lua_toboolean(L, idx));
        break;
    default:
        return fail(err, n, "%s: expected a string, number or boolean, got %s", path,
                    describe(L, idx, LUA_TSTRING, d, sizeof d));
    }
    free(resolved);
    return o ? 0 : fail(err, n, "out of memory");
}

/* kafka = { ["bootstrap.servers"] = "...", ..., embedded = {...} }: every key
 * but `embedded` is a librdkafka property, passed through. */
static int load_kafka(lua_State *L, int idx, const key *k, config *c, char *err, size_t n)
{
    char path[256];
    int top = lua_gettop(L);
    lua_pushnil(L);                                   /* ... nil */
    while (lua_next(L, idx)) {                        /* ... key value */
        child_path(path, sizeof path, k->path, L, -2);
        if (lua_type(L, -2) != LUA_TSTRING) {
            fail(err, n, "%s: expected a librdkafka property name, e.g. "
                 "[\"bootstrap.servers\"] = \"host:9092\"", path);
            goto err;
        }
        if (strcmp(lua_tostring(L, -2), "embedded") != 0
            && opt_add_lua(L, -2, -1, path, &c->kafka, NULL, err, n) < 0)
            goto err;
        lua_pop(L, 1);                                /* ... key */
    }
    if (c->kafka.n > 1)
        qsort(c->kafka.items, (size_t)c->kafka.n, sizeof(opt), opt_cmp);
    return 0;
err:
    lua_settop(L, top);
    return -1;
}

/* state.rocksdb = { max_background_jobs = 4, ... }: RocksDB options by
 * their names in RocksDB's options string format, passed through. */
static int load_rocksdb(lua_State *L, int idx, const key *k, config *c, char *err, size_t n)
{
    char path[256], d[128];
    int top = lua_gettop(L);
    if (!lua_istable(L, idx))
        return fail(err, n, "%s: expected a table of RocksDB options, e.g. { max_background_jobs = 4 }, got %s", k->path,
                    describe(L, idx, LUA_TTABLE, d, sizeof d));
    lua_pushnil(L);                                   /* ... nil */
    while (lua_next(L, idx)) {                        /* ... key value */
        child_path(path, sizeof path, k->path, L, -2);
        if (lua_type(L, -2) != LUA_TSTRING) {
            fail(err, n, "%s: expected a RocksDB option name", path);
            goto err;
        }
        if (opt_add_lua(L, -2, -1, path, &c->state_rocksdb, NULL, err, n) < 0) goto err;
        lua_pop(L, 1);                                /* ... key */
    }
    return 0;
err:
    lua_settop(L, top);
    return -1;
}

static int load_embedded(lua_State *L, int idx, const key *k, config *c, char *err, size_t n)
{
    (void)L, (void)idx, (void)k, (void)err, (void)n;
    c->kafka_embedded = 1;
    return 0;
}

/* kafka.embedded.topics = { words = 4, ... } */
static int load_topics(lua_State *L, int idx, const key *k, config *c, char *err, size_t n)
{
    static const key PARTITIONS = { .path = "partitions", .type = K_INT, .min = 1, .max = MAX_PARTITIONS };
    char path[256], d[128];
    int top = lua_gettop(L);
    int64_t parts;
    if (!lua_istable(L, idx))
        return fail(err, n, "%s: expected a table of topic = partitions, got %s", k->path,
                    describe(L, idx, LUA_TTABLE, d, sizeof d));
    lua_pushnil(L);                                   /* ... nil */
    while (lua_next(L, idx)) {                        /* ... key value */
        child_path(path, sizeof path, k->path, L, -2);
        if (lua_type(L, -2) != LUA_TSTRING) {
            fail(err, n, "%s: expected topic = partitions, e.g. words = 4", path);
            goto err;
        }
        if (read_int(L, -1, &PARTITIONS, path, &parts, err, n) < 0)
            goto err;
        if (!opt_add(&c->kafka_embedded_topics, lua_tostring(L, -2), OPT_NUMBER, NULL, (double)parts, 0)) {
            fail(err, n, "out of memory");
            goto err;
        }
        lua_pop(L, 1);                                /* ... key */
    }
    if (c->kafka_embedded_topics.n > 1)
        qsort(c->kafka_embedded_topics.items, (size_t)c->kafka_embedded_topics.n, sizeof(opt), opt_cmp);
    return 0;
err:
    lua_settop(L, top);
    return -1;
}

/* sources / sinks = { <name> = { <option> = scalar, ... }, ... } */
static int load_groups(lua_State *L, int idx, const key *k, config *c, opt_group **groups,
                       int *ngroups, char *err, size_t n)
{
    char path[256], opath[512], d[128];
    int top = lua_gettop(L);
    if (!lua_istable(L, idx))
        return fail(err, n, "%s: expected a table of name = { options }, got %s", k->path,
                    describe(L, idx, LUA_TTABLE, d, sizeof d));
    lua_pushnil(L);                                   /* ... nil */
    while (lua_next(L, idx)) {                        /* ... name options */
        int gi = lua_gettop(L);
        child_path(path, sizeof path, k->path, L, -2);
        if (lua_type(L, -2) != LUA_TSTRING) {
            fail(err, n, "%s: expected name = { options }", path);
            goto err;
        }
        if (!lua_istable(L, -1)) {
            fail(err, n, "%s: expected a table of options, got %s", path,
                 describe(L, -1, LUA_TTABLE, d, sizeof d));
            goto err;
        }
        opt_group *g = realloc(*groups, sizeof *g * (size_t)(*ngroups + 1));
        if (!g) {
            fail(err, n, "out of memory");
            goto err;
        }
        *groups = g;
        g = &g[*ngroups];
        memset(g, 0, sizeof *g);
        if (!(g->name = strdup(lua_tostring(L, -2)))) {
            fail(err, n, "out of memory");
            goto err;
        }
        (*ngroups)++;
        lua_pushnil(L);                               /* ... name options nil */
        while (lua_next(L, gi)) {                     /* ... name options key value */
            child_path(opath, sizeof opath, path, L, -2);
            if (lua_type(L, -2) != LUA_TSTRING) {
                fail(err, n, "%s: expected option = value", opath);
                goto err;
            }
            if (opt_add_lua(L, -2, -1, opath, &g->opts, c->dir, err, n) < 0)
                goto err;
            lua_pop(L, 1);                            /* ... name options key */
        }
        if (g->opts.n > 1)
            qsort(g->opts.items, (size_t)g->opts.n, sizeof(opt), opt_cmp);
        lua_pop(L, 1);                                /* ... name */
    }
    if (*ngroups > 1)
        qsort(*groups, (size_t)*ngroups, sizeof(opt_group), group_cmp);
    return 0;
err:
    lua_settop(L, top);
    return -1;
}

static int load_sources(lua_State *L, int idx, const key *k, config *c, char *err, size_t n)
{
    return load_groups(L, idx, k, c, &c->sources, &c->nsources, err, n);
}

static int load_sinks(lua_State *L, int idx, const key *k, config *c, char *err, size_t n)
{
    return load_groups(L, idx, k, c, &c->sinks, &c->nsinks, err, n);
}

static int load_admin(lua_State *L, int idx, const key *k, config *c, char *err, size_t n)
{
    (void)k, (void)err, (void)n;
    c->admin_enabled = lua_istable(L, idx);
    return 0;
}

/* admin.hosts = { "eddy.example.com", ... }: kept comma-separated */
static int load_hosts(lua_State *L, int idx, const key *k, config *c, char *err, size_t n)
{
    char d[128];
    if (!lua_istable(L, idx))
        return fail(err, n, "%s: expected a list of host names, e.g. { \"eddy.example.com\" }, got %s", k->path,
                    describe(L, idx, LUA_TTABLE, d, sizeof d));
    size_t len = lua_objlen(L, idx), used = 0, cap = 1;
    char *out = calloc(1, 1);
    for (size_t i = 1; out && i <= len; i++) {
        lua_rawgeti(L, idx, (int)i);                      /* ... name */
        size_t l = 0;
        const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &l) : NULL;
        int ok = s && l > 0 && l < 256;
        for (size_t j = 0; ok && j < l; j++)
            ok = s[j] > ' ' && s[j] < 127 && s[j] != ',' && s[j] != '/';
        if (!ok) {
            fail(err, n, "%s[%zu]: expected a host name like \"eddy.example.com\", got %s", k->path, i,
                 describe(L, -1, LUA_TSTRING, d, sizeof d));
            lua_pop(L, 1);
            free(out);
            return -1;
        }
        char *no = realloc(out, cap + l + 1);
        if (!no) { free(out); out = NULL; break; }
        out = no;
        if (used) out[used++] = ',';
        memcpy(out + used, s, l);
        used += l;
        out[used] = 0;
        cap = used + 1;
        lua_pop(L, 1);                                    /* ... */
    }
    if (!out) return fail(err, n, "out of memory");
    free(c->admin_hosts);
    c->admin_hosts = out;
    return 0;
}

/* ---- checks ------------------------------------------------------------------ */

static int name_char_ok(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')
           || ch == '.' || ch == '_' || ch == '-';
}

/* The name prefixes Kafka topics (<name>-<uid>-changelog) and is a folder
 * under state/, so it keeps to what a topic name may hold. */
static int check_name(config *c, const key *k, char *err, size_t n)
{
    char q[96];
    const char *s = c->name;
    int ok = strlen(s) <= MAX_NAME && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
    for (const char *p = s; ok && *p; p++)
        ok = name_char_ok(*p);
    if (ok)
        return 0;
    quote(q, sizeof q, s, strlen(s));
    return fail(err, n, "%s: expected up to %d letters, digits, '.', '_' or '-' (it names Kafka "
                "topics and the state folder), got %s", k->path, MAX_NAME, q);
}

/* A bearer token: at least 16 characters a header can carry (no spaces). */
static int check_token(config *c, const key *k, char *err, size_t n)
{
    const char *s = c->admin_token;
    size_t len = strlen(s);
    int ok = len >= 16 && len <= 512;
    for (const char *p = s; ok && *p; p++)
        ok = *p > ' ' && *p < 127;
    if (ok)
        return 0;
    return fail(err, n, "%s: expected 16 to 512 printable characters without spaces (a secret the "
                "admin clients send as \"Authorization: Bearer <token>\"), got %zu characters", k->path, len);
}

/* "host:port", "[::1]:port"; port 0..65535 (0 picks a free one). */
static int check_listen(config *c, const key *k, char *err, size_t n)
{
    char q[96];
    const char *s = c->admin_listen, *colon = strrchr(s, ':');
    char *end = NULL;
    long port = -1;
    if (colon && colon > s && colon[1]) {
        errno = 0;
        port = strtol(colon + 1, &end, 10);
        if (errno || *end || colon[1] < '0' || colon[1] > '9')
            port = -1;
    }
    if (port >= 0 && port <= 65535)
        return 0;
    quote(q, sizeof q, s, strlen(s));
    return fail(err, n, "%s: expected \"host:port\" like \"127.0.0.1:8600\", got %s", k->path, q);
}

static int check_memory(config *c, const key *k, char *err, size_t n)
{
    if (c->limit_memory == 0 || c->limit_memory >= 1048576)
        return 0;
    return fail(err, n, "%s: expected 0 (no limit) or at least \"1MB\", got %lld bytes", k->path,
                (long long)c->limit_memory);
}

/* ---- defaults that depend on other keys ----------------------------------------- */

/* A default name from a file name: characters a topic name cannot hold
 * become '-'.  Owned, or NULL. */
static char *name_from(const char *s, size_t len)
{
    if (len == 0)
        return NULL;
    if (len > MAX_NAME)
        len = MAX_NAME;
    char *out = strndup(s, len);
    for (char *p = out; p && *p; p++)
        if (!name_char_ok(*p))
            *p = '-';
    return out;
}

/* The default name of a config at `path` (absolute): its file name up to
 * the first '.' ("prod.conf.lua" -> "prod"), unless that names no app at all
 * ("eddy", "config": "examples/wordcount/eddy.conf.lua" -> "wordcount"); then,
 * or when the file name starts with '.', its folder's name.  Two configs
 * side by side ("prod.conf.lua", "staging.conf.lua") so get two names. */
static char *default_name(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t stem = strcspn(base, ".");
    int generic = stem == 0 || (stem == 4 && strncmp(base, "eddy", 4) == 0)
                  || (stem == 6 && strncmp(base, "config", 6) == 0);
    if (generic && base - path > 1) {           /* a folder other than "/" */
        const char *end = base - 1, *start = end;
        while (start > path && start[-1] != '/')
            start--;
        return name_from(start, (size_t)(end - start));
    }
    return name_from(base, stem ? stem : strlen(base));
}

static int online_cores(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : (int)n;
}

/* Fills the defaults no SCHEMA entry can name alone, and checks the rules
 * that tie keys together. */
static int finish(config *c, char *err, size_t n)
{
    if (!c->pipeline)
        return fail(err, n, "pipeline: missing; set pipeline = \"pipeline.lua\" "
                    "(the script's path, relative to the config file)");
    struct stat pst;
    if (stat(c->pipeline, &pst) == 0 && S_ISDIR(pst.st_mode))
        return fail(err, n, "pipeline: %s is a folder; name the pipeline script in it "
                    "(e.g. pipeline = \"pipeline.lua\")", c->pipeline);
    if (!c->name && !(c->name = default_name(c->path ? c->path : c->pipeline)))
        return fail(err, n, "name: missing; set name = \"my-app\"");
    if (!c->threads)
        c->threads = online_cores();
    if (!c->parallelism)
        c->parallelism = c->threads < c->max_parallelism ? c->threads : c->max_parallelism;
    else if (c->parallelism > c->max_parallelism)
        return fail(err, n, "parallelism: %d is more than max_parallelism (%d); lower parallelism "
                    "or raise max_parallelism", c->parallelism, c->max_parallelism);
    if (!c->state_dir && asprintf(&c->state_dir, "%s/state/%s", c->dir, c->name) < 0) {
        c->state_dir = NULL;
        return fail(err, n, "out of memory");
    }
    if (c->dead_letter_file && c->dead_letter_kafka)
        return fail(err, n, "dead_letter: set either file or kafka, not both");
    /* Always set, so a consumer has somewhere to write; dead_letter_kafka,
     * when set, takes precedence. */
    if (!c->dead_letter_file
        && asprintf(&c->dead_letter_file, "%s/dead-letter.jsonl", c->state_dir) < 0) {
        c->dead_letter_file = NULL;
        return fail(err, n, "out of memory");
    }
    if (c->kafka_embedded && opt_find(&c->kafka, "bootstrap.servers"))
        return fail(err, n, "kafka.embedded: remove kafka[\"bootstrap.servers\"]; the embedded "
                    "cluster provides it");
    return 0;
}

static int apply_defaults(config *c, const unsigned char *seen, char *err, size_t n)
{
    for (int i = 0; i < NKEYS; i++)
        if (!seen[i] && SCHEMA[i].def && apply_default(c, &SCHEMA[i], err, n) < 0)
            return -1;
    return 0;
}

/* ---- evaluating the file ------------------------------------------------------ */

#define ALLOWED "pairs, ipairs, next, type, tostring, tonumber, select, error, assert, " \
                "pcall, unpack, string, table, math, os.getenv, os.time, os.date, os.clock"

/* __index of the environment: reading a global it lacks is an error that
 * says what a config may use (io, require, a misspelt `ture`). */
static int deny_global(lua_State *L)
{
    return luaL_error(L, "%s is not available in a config file (it may use " ALLOWED ")",
                      lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "?");
}

static int deny_os(lua_State *L)
{
    return luaL_error(L, "os.%s is not available in a config file (it may use " ALLOWED ")",
                      lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "?");
}

static void too_long(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    luaL_error(L, "the config file ran for more than %d instructions; is there an endless loop?",
               EVAL_MAX_INSTRUCTIONS);
}

static int open_lib(lua_State *L, lua_CFunction f, const char *name)
{
    lua_pushcfunction(L, f);
    lua_pushstring(L, name);
    return lua_pcall(L, 1, 0, 0);
}

/* Pushes the table the config file at `path` returns.
 * Stack: ... -> ... table   (unchanged on error) */
static int eval_file(lua_State *L, const char *path, char *err, size_t n)
{
    static const char *const BASE[] = { "pairs", "ipairs", "next", "type", "tostring", "tonumber",
                                         "select", "error", "assert", "pcall", "unpack", NULL };
    static const char *const LIBS[] = { "string", "table", "math", NULL };
    static const char *const OS[] = { "getenv", "time", "date", "clock", NULL };
    char d[128];
    int top = lua_gettop(L);

    if (open_lib(L, luaopen_base, "") || open_lib(L, luaopen_string, LUA_STRLIBNAME)
        || open_lib(L, luaopen_table, LUA_TABLIBNAME) || open_lib(L, luaopen_math, LUA_MATHLIBNAME)
        || open_lib(L, luaopen_os, LUA_OSLIBNAME)) {
        fail(err, n, "%s: cannot set up Lua: %s", path, lua_tostring(L, -1));
        goto err;
    }
    /* Hooks only run in the interpreter: keep the JIT off for this state. */
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);

    if (luaL_loadfile(L, path) != 0) {                /* ... msg */
        fail(err, n, "%s", lua_tostring(L, -1));
        goto err;
    }                                                 /* ... chunk */
    lua_newtable(L);                                  /* ... chunk env */
    for (int i = 0; BASE[i]; i++) {
        lua_getglobal(L, BASE[i]);
        lua_setfield(L, -2, BASE[i]);
    }
    for (int i = 0; LIBS[i]; i++) {
        lua_getglobal(L, LIBS[i]);
        lua_setfield(L, -2, LIBS[i]);
    }
    lua_newtable(L);                                  /* ... chunk env os */
    lua_getglobal(L, LUA_OSLIBNAME);                  /* ... chunk env os realos */
    for (int i = 0; OS[i]; i++) {
        lua_getfield(L, -1, OS[i]);
        lua_setfield(L, -3, OS[i]);
    }
    lua_pop(L, 1);                                    /* ... chunk env os */
    lua_newtable(L);
    lua_pushcfunction(L, deny_os);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
    lua_setfield(L, -2, "os");                        /* ... chunk env */
    lua_newtable(L);
    lua_pushcfunction(L, deny_global);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
    lua_setfenv(L, -2);                               /* ... chunk */

    lua_sethook(L, too_long, LUA_MASKCOUNT, EVAL_MAX_INSTRUCTIONS);
    int rc = lua_pcall(L, 0, 1, 0);                   /* ... result | msg */
    lua_sethook(L, NULL, 0, 0);
    if (rc != 0) {
        const char *msg = lua_tostring(L, -1);
        fail(err, n, msg ? "%s" : "%s: the config file raised an error that is not a string",
             msg ? msg : path);
        goto err;
    }
    if (!lua_istable(L, -1)) {
        fail(err, n, "%s: the config file must return a table, e.g. return { pipeline = "
             "\"pipeline.lua\" }; it returned %s", path, describe(L, -1, -1, d, sizeof d));
        goto err;
    }
    return 0;
err:
    lua_settop(L, top);
    return -1;
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
        child_path(path, sizeof path, prefix, L, -2);
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
    return finish(c, err, n);
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
    if (eval_file(L, path, err, errlen) < 0)          /* table */
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
    c->name = name_from(base, blen);
    if (!c->dir || !c->name) {
        fail(err, errlen, "out of memory");
        goto err;
    }
    if (apply_defaults(c, seen, err, errlen) < 0 || finish(c, err, errlen) < 0)
        goto err;
    return c;
err:
    config_destroy(c);
    return NULL;
}

static void groups_free(opt_group *g, int n)
{
    for (int i = 0; i < n; i++) {
        free(g[i].name);
        opt_list_free(&g[i].opts);
    }
    free(g);
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
    opt_list_free(&c->kafka);
    opt_list_free(&c->kafka_embedded_topics);
    opt_list_free(&c->state_rocksdb);
    groups_free(c->sources, c->nsources);
    groups_free(c->sinks, c->nsinks);
    free(c->admin_listen);
    free(c->admin_token);
    free(c->admin_hosts);
    free(c->dead_letter_file);
    free(c->dead_letter_kafka);
    free(c);
}

const opt *opt_find(const opt_list *l, const char *key)
{
    for (int i = 0; l && i < l->n; i++)
        if (strcmp(l->items[i].key, key) == 0)
            return &l->items[i];
    return NULL;
}

static const opt_group *group_find(const opt_group *g, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(g[i].name, name) == 0)
            return &g[i];
    return NULL;
}

const opt_group *config_source(const config *c, const char *name)
{
    return c ? group_find(c->sources, c->nsources, name) : NULL;
}

const opt_group *config_sink(const config *c, const char *name)
{
    return c ? group_find(c->sinks, c->nsinks, name) : NULL;
}
