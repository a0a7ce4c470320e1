/* config_options — see config_internal.h: the keys whose values are maps the
 * schema does not list (librdkafka properties, RocksDB options, embedded
 * topics, sources.<name>, sinks.<name>, admin.hosts), kept as sorted option
 * lists, and their look-ups (opt_find, config_source, config_sink).
 * Calls: config_value.c (messages, paths), config.c (config_read_int). */
#include "config_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>

/* ---- scalar options: kafka properties, sources, sinks ------------------------ */

static int opt_cmp(const void *a, const void *b)
{
    return strcmp(((const opt *)a)->key, ((const opt *)b)->key);
}

static int group_cmp(const void *a, const void *b)
{
    return strcmp(((const opt_group *)a)->name, ((const opt_group *)b)->name);
}

void config_opt_list_free(opt_list *l)
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
                    config_describe(L, idx, LUA_TSTRING, d, sizeof d));
    switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
        const char *s = lua_tostring(L, idx);
        if (dir && *s && (strcmp(k, "file") == 0 || strcmp(k, "dir") == 0)) {
            if (!(resolved = config_path_resolve(dir, s)))
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
                    config_describe(L, idx, LUA_TSTRING, d, sizeof d));
    }
    free(resolved);
    return o ? 0 : fail(err, n, "out of memory");
}

/* kafka = { ["bootstrap.servers"] = "...", ..., embedded = {...} }: every key
 * but `embedded` is a librdkafka property, passed through. */
int config_load_kafka(lua_State *L, int idx, const key *k, config *c, char *err, size_t n)
{
    char path[256];
    int top = lua_gettop(L);
    lua_pushnil(L);                                   /* ... nil */
    while (lua_next(L, idx)) {                        /* ... key value */
        config_child_path(path, sizeof path, k->path, L, -2);
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
int config_load_rocksdb(lua_State *L, int idx, const key *k, config *c, char *err, size_t n)
{
    char path[256], d[128];
    int top = lua_gettop(L);
    if (!lua_istable(L, idx))
        return fail(err, n, "%s: expected a table of RocksDB options, e.g. { max_background_jobs = 4 }, got %s", k->path,
                    config_describe(L, idx, LUA_TTABLE, d, sizeof d));
    lua_pushnil(L);                                   /* ... nil */
    while (lua_next(L, idx)) {                        /* ... key value */
        config_child_path(path, sizeof path, k->path, L, -2);
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

int config_load_embedded(lua_State *L, int idx, const key *k, config *c, char *err, size_t n)
{
    (void)L, (void)idx, (void)k, (void)err, (void)n;
    c->kafka_embedded = 1;
    return 0;
}

/* kafka.embedded.topics = { words = 4, ... } */
int config_load_topics(lua_State *L, int idx, const key *k, config *c, char *err, size_t n)
{
    static const key PARTITIONS = { .path = "partitions", .type = K_INT, .min = 1, .max = MAX_PARTITIONS };
    char path[256], d[128];
    int top = lua_gettop(L);
    int64_t parts;
    if (!lua_istable(L, idx))
        return fail(err, n, "%s: expected a table of topic = partitions, got %s", k->path,
                    config_describe(L, idx, LUA_TTABLE, d, sizeof d));
    lua_pushnil(L);                                   /* ... nil */
    while (lua_next(L, idx)) {                        /* ... key value */
        config_child_path(path, sizeof path, k->path, L, -2);
        if (lua_type(L, -2) != LUA_TSTRING) {
            fail(err, n, "%s: expected topic = partitions, e.g. words = 4", path);
            goto err;
        }
        if (config_read_int(L, -1, &PARTITIONS, path, &parts, err, n) < 0)
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
                    config_describe(L, idx, LUA_TTABLE, d, sizeof d));
    lua_pushnil(L);                                   /* ... nil */
    while (lua_next(L, idx)) {                        /* ... name options */
        int gi = lua_gettop(L);
        config_child_path(path, sizeof path, k->path, L, -2);
        if (lua_type(L, -2) != LUA_TSTRING) {
            fail(err, n, "%s: expected name = { options }", path);
            goto err;
        }
        if (!lua_istable(L, -1)) {
            fail(err, n, "%s: expected a table of options, got %s", path,
                 config_describe(L, -1, LUA_TTABLE, d, sizeof d));
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
            config_child_path(opath, sizeof opath, path, L, -2);
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

int config_load_sources(lua_State *L, int idx, const key *k, config *c, char *err, size_t n)
{
    return load_groups(L, idx, k, c, &c->sources, &c->nsources, err, n);
}

int config_load_sinks(lua_State *L, int idx, const key *k, config *c, char *err, size_t n)
{
    return load_groups(L, idx, k, c, &c->sinks, &c->nsinks, err, n);
}

int config_load_admin(lua_State *L, int idx, const key *k, config *c, char *err, size_t n)
{
    (void)k, (void)err, (void)n;
    c->admin_enabled = lua_istable(L, idx);
    return 0;
}

/* admin.hosts = { "eddy.example.com", ... }: kept comma-separated */
int config_load_hosts(lua_State *L, int idx, const key *k, config *c, char *err, size_t n)
{
    char d[128];
    if (!lua_istable(L, idx))
        return fail(err, n, "%s: expected a list of host names, e.g. { \"eddy.example.com\" }, got %s", k->path,
                    config_describe(L, idx, LUA_TTABLE, d, sizeof d));
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
                 config_describe(L, -1, LUA_TSTRING, d, sizeof d));
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

void config_groups_free(opt_group *g, int n)
{
    for (int i = 0; i < n; i++) {
        free(g[i].name);
        config_opt_list_free(&g[i].opts);
    }
    free(g);
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

/* reload.max_error_rate = 0.01: a fraction from 0 to 1 (a number, or a
 * string like "1%") */
int config_load_error_rate(lua_State *L, int idx, const key *k, config *c, char *err, size_t n)
{
    char d[128];
    double x = -1;
    if (lua_type(L, idx) == LUA_TNUMBER) {
        x = lua_tonumber(L, idx);
    } else if (lua_type(L, idx) == LUA_TSTRING) {
        const char *s = lua_tostring(L, idx);
        char *end = NULL;
        double v = strtod(s, &end);
        if (end && end != s && strcmp(end, "%") == 0) x = v / 100.0;
    }
    if (!(x >= 0 && x <= 1))
        return fail(err, n, "%s: expected a fraction of the records from 0 to 1 (like 0.01, or \"1%%\"), got %s",
                    k->path, config_describe(L, idx, LUA_TNUMBER, d, sizeof d));
    c->reload_max_error_rate = x;
    c->reload_error_rate_set = 1;
    return 0;
}
