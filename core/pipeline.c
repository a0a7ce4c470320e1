#include "pipeline.h"
#include "config.h"
#include "vm.h"
#include "log.h"
#include "shuffle.h"
#include <glob.h>
#include <lauxlib.h>
#include <libgen.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

static char *xstrdup(const char *s) { return s ? strdup(s) : NULL; }

const char *node_opt(const node *n, const char *key) {
    const opt *o = opt_find(&n->opts, key);
    return o ? o->s : NULL;
}

int node_opt_bool(const node *n, const char *key) {
    const opt *o = opt_find(&n->opts, key);
    if (!o) return 0;
    if (o->type == OPT_BOOL) return o->b;
    if (o->type == OPT_NUMBER) return o->n != 0;
    return o->s && *o->s;
}

static int opt_set(opt_list *l, const char *key, opt_type t, const char *s, double n, int b) {
    opt *o = (opt *)opt_find(l, key);
    if (!o) {
        opt *items = realloc(l->items, sizeof *items * (l->n + 1));
        if (!items) return -1;
        l->items = items;
        o = &l->items[l->n++];
        memset(o, 0, sizeof *o);
        o->key = strdup(key);
    }
    free(o->s);
    o->type = t;
    o->n = n;
    o->b = b;
    char tmp[64];
    if (t == OPT_NUMBER) { snprintf(tmp, sizeof tmp, "%.17g", n); s = tmp; }
    if (t == OPT_BOOL) s = b ? "true" : "false";
    o->s = strdup(s ? s : "");
    return 0;
}

static void opts_free(opt_list *l) {
    for (int i = 0; i < l->n; i++) { free(l->items[i].key); free(l->items[i].s); }
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

static void digest_file(EVP_MD_CTX *md, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return;
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) EVP_DigestUpdate(md, buf, n);
    fclose(f);
}

/* The version's content hash: the script, then every .lua file beside it
 * (the modules it may require) in name order, each preceded by its name. */
int plan_hash(const char *path, char hex[65], char *err, size_t errlen) {
    return plan_hash_files(path, path, NULL, hex, err, errlen);
}

int plan_is_test_file(const char *name) {
    size_t n = strlen(name);
    return n >= 9 && strcmp(name + n - 9, "_test.lua") == 0;
}

int plan_hash_text(const char *text, const char *path, char hex[65], char *err, size_t errlen) {
    return plan_hash_files(text, path, NULL, hex, err, errlen);
}

int plan_hash_files(const char *text, const char *path, const char *modules, char hex[65], char *err,
                    size_t errlen) {
    FILE *f = fopen(text, "rb");
    if (!f) { snprintf(err, errlen, "%s: cannot open the pipeline script", text); return -1; }
    fclose(f);
    char *tmp = strdup(path), sdir[PATH_MAX], pattern[PATH_MAX + 16], shown[2 * PATH_MAX + 16];
    if (!tmp) { snprintf(err, errlen, "out of memory"); return -1; }
    snprintf(sdir, sizeof sdir, "%s", dirname(tmp));
    free(tmp);
    const char *mdir = modules ? modules : sdir;
    snprintf(pattern, sizeof pattern, "%s/*.lua", mdir);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    digest_file(md, text);
    glob_t g;
    if (glob(pattern, 0, NULL, &g) == 0) {
        for (size_t i = 0; i < g.gl_pathc; i++) {
            /* a module is named as it is (or was) beside the script */
            if (modules) snprintf(shown, sizeof shown, "%s/%s", sdir, g.gl_pathv[i] + strlen(mdir) + 1);
            else snprintf(shown, sizeof shown, "%s", g.gl_pathv[i]);
            if (strcmp(shown, path) == 0 || plan_is_test_file(shown)) continue;
            EVP_DigestUpdate(md, shown, strlen(shown) + 1);
            digest_file(md, g.gl_pathv[i]);
        }
        globfree(&g);
    }
    unsigned char d[32];
    unsigned int dl = 0;
    EVP_DigestFinal_ex(md, d, &dl);
    EVP_MD_CTX_free(md);
    for (unsigned i = 0; i < 32; i++) sprintf(hex + 2 * i, "%02x", d[i]);
    hex[64] = 0;
    return 0;
}

static node_kind kind_of(const char *k, int *ok) {
    static const struct { const char *name; node_kind kind; } kinds[] = {
        {"source", NODE_SOURCE}, {"map", NODE_MAP}, {"filter", NODE_FILTER},
        {"flat_map", NODE_FLAT_MAP}, {"key_by", NODE_KEY_BY}, {"union", NODE_UNION},
        {"sink", NODE_SINK}, {"window", NODE_WINDOW}, {"side", NODE_SIDE},
        {"process", NODE_PROCESS}, {"dedup", NODE_DEDUP}, {"join", NODE_JOIN}, {"global_table", NODE_GLOBAL_TABLE},
    };
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strcmp(k, kinds[i].name) == 0) { *ok = 1; return kinds[i].kind; }
    *ok = 0;
    return NODE_MAP;
}

/* Reads the node list eddy.runtime.plan returned.
 * Lua stack on entry: ... nodes   (unchanged on return) */
static int read_nodes(lua_State *L, plan *p, char *err, size_t errlen) {
    int n = (int)lua_objlen(L, -1);
    p->nodes = calloc(n > 0 ? n : 1, sizeof *p->nodes);
    if (!p->nodes) { snprintf(err, errlen, "out of memory"); return -1; }
    p->nnodes = n;
    for (int i = 1; i <= n; i++) {
        node *nd = &p->nodes[i - 1];
        nd->id = i;
        nd->stage_out = -1;
        lua_rawgeti(L, -1, i);                                  /* nodes node */
        lua_getfield(L, -1, "kind");
        int ok;
        nd->kind_name = xstrdup(lua_tostring(L, -1));
        nd->kind = kind_of(nd->kind_name ? nd->kind_name : "", &ok);
        lua_pop(L, 1);
        if (!ok) { snprintf(err, errlen, "unknown operator kind '%s'", nd->kind_name); lua_pop(L, 1); return -1; }
        lua_getfield(L, -1, "name");  nd->name = xstrdup(lua_tostring(L, -1));  lua_pop(L, 1);
        lua_getfield(L, -1, "uid");   nd->uid = xstrdup(lua_tostring(L, -1));   lua_pop(L, 1);
        lua_getfield(L, -1, "where"); nd->where = xstrdup(lua_tostring(L, -1)); lua_pop(L, 1);
        lua_getfield(L, -1, "inputs");                          /* nodes node inputs */
        nd->ninputs = (int)lua_objlen(L, -1);
        nd->inputs = calloc(nd->ninputs + 1, sizeof *nd->inputs);
        for (int j = 1; j <= nd->ninputs; j++) {
            lua_rawgeti(L, -1, j);
            nd->inputs[j - 1] = (int)lua_tointeger(L, -1);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);                                          /* nodes node */
        lua_getfield(L, -1, "opts");                            /* nodes node opts */
        lua_pushnil(L);
        while (lua_next(L, -2)) {                               /* nodes node opts k v */
            const char *k = lua_tostring(L, -2);
            int t = lua_type(L, -1);
            if (k && t == LUA_TBOOLEAN) opt_set(&nd->opts, k, OPT_BOOL, NULL, 0, lua_toboolean(L, -1));
            else if (k && t == LUA_TNUMBER) opt_set(&nd->opts, k, OPT_NUMBER, NULL, lua_tonumber(L, -1), 0);
            else if (k && t == LUA_TSTRING) opt_set(&nd->opts, k, OPT_STRING, lua_tostring(L, -1), 0, 0);
            lua_pop(L, 1);                                      /* nodes node opts k */
        }
        lua_pop(L, 2);                                          /* nodes */
    }
    return 0;
}

static const char *const source_override_keys[] = {"file", "stdin", "format", "follow", "header", "delimiter",
                                                    "kafka", "start", NULL};
static const char *const sink_override_keys[] = {"file", "stdout", "format", "kafka", NULL};

static int apply_overrides(plan *p, const config *cfg, char *err, size_t errlen) {
    for (int pass = 0; pass < 2; pass++) {
        int ngroups = pass == 0 ? cfg->nsources : cfg->nsinks;
        const opt_group *groups = pass == 0 ? cfg->sources : cfg->sinks;
        const char *what = pass == 0 ? "sources" : "sinks";
        const char *const *allowed = pass == 0 ? source_override_keys : sink_override_keys;
        node_kind kind = pass == 0 ? NODE_SOURCE : NODE_SINK;
        for (int g = 0; g < ngroups; g++) {
            node *target = NULL;
            for (int i = 0; i < p->nnodes; i++)
                if (p->nodes[i].kind == kind && p->nodes[i].name && strcmp(p->nodes[i].name, groups[g].name) == 0)
                    target = &p->nodes[i];
            if (!target) {
                snprintf(err, errlen, "%s.%s: the pipeline %s has no %s named '%s'", what, groups[g].name,
                         p->script_rel, pass == 0 ? "source" : "sink", groups[g].name);
                return -1;
            }
            for (int j = 0; j < groups[g].opts.n; j++) {
                const opt *o = &groups[g].opts.items[j];
                int known = 0;
                for (int k = 0; allowed[k]; k++) if (strcmp(allowed[k], o->key) == 0) known = 1;
                if (pass == 1 && strchr(o->key, '.')) known = 1;   /* a librdkafka property of a Kafka sink */
                if (!known) {
                    snprintf(err, errlen, "%s.%s.%s: unknown option", what, groups[g].name, o->key);
                    return -1;
                }
                opt_set(&target->opts, o->key, o->type, o->s, o->n, o->b);
            }
        }
    }
    return 0;
}

/* A path from the pipeline script resolves against the script's folder
 * (config overrides arrive absolute already).  Returns an owned string. */
static char *resolve(const char *dir, const char *path) {
    if (!path) return NULL;
    if (path[0] == '/') return strdup(path);
    char *out = malloc(strlen(dir) + strlen(path) + 2);
    if (out) sprintf(out, "%s/%s", dir, path);
    return out;
}

static int build_sources(plan *p, const config *cfg, char *err, size_t errlen) {
    for (int i = 0; i < p->nnodes; i++) if (p->nodes[i].kind == NODE_SOURCE) p->nsources++;
    p->sources = calloc(p->nsources + 1, sizeof *p->sources);
    int s = 0;
    for (int i = 0; i < p->nnodes; i++) {
        node *nd = &p->nodes[i];
        if (nd->kind != NODE_SOURCE) continue;
        source_info *si = &p->sources[s++];
        si->node = nd->id;
        si->name = strdup(nd->name);
        si->format = strdup(node_opt(nd, "format") ? node_opt(nd, "format") : "json");
        if (strcmp(si->format, "json") && strcmp(si->format, "lines") && strcmp(si->format, "raw") &&
            strcmp(si->format, "csv")) {
            snprintf(err, errlen, "source '%s': unknown format '%s' (json, lines, raw, csv)", si->name, si->format);
            return -1;
        }
        si->follow = node_opt_bool(nd, "follow");
        si->bootstrap = node_opt_bool(nd, "bootstrap");
        si->bounded = node_opt_bool(nd, "bounded");
        const opt *idle = opt_find(&nd->opts, "idle_ms");
        si->idle_ms = idle && idle->type == OPT_NUMBER ? (int64_t)idle->n : 0;
        si->header = node_opt_bool(nd, "header");
        const opt *mb = opt_find(&nd->opts, "max_bytes");
        si->max_bytes = 16 << 20;                  /* files and stdin; Kafka's is read in daemon.c */
        if (mb && mb->type == OPT_NUMBER) si->max_bytes = (int64_t)mb->n;
        else if (mb && mb->type == OPT_STRING && config_parse_size(mb->s, &si->max_bytes) < 0) {
            snprintf(err, errlen, "source '%s' (%s): max_bytes: expected a size like \"16MB\", got \"%s\"", si->name,
                     nd->where, mb->s);
            return -1;
        }
        if (si->max_bytes < 1) {
            snprintf(err, errlen, "source '%s' (%s): max_bytes must be at least 1 byte", si->name, nd->where);
            return -1;
        }
        const char *d = node_opt(nd, "delimiter");
        si->delimiter = d && *d ? d[0] : ',';
        const char *file = node_opt(nd, "file");
        const char *topics = node_opt(nd, "kafka");
        if (topics && !file) {
            si->kind = SRC_KAFKA;
            si->start = strdup(node_opt(nd, "start") ? node_opt(nd, "start") : "earliest");
            char *list = strdup(topics), *save = NULL;
            for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                char **nt = realloc(si->topics, sizeof *nt * (si->ntopics + 1));
                if (!nt) { free(list); snprintf(err, errlen, "out of memory"); return -1; }
                si->topics = nt;
                si->topics[si->ntopics++] = strdup(t);
            }
            free(list);
            continue;           /* partitions: plan_resolve_kafka */
        }
        if (cfg->testing) {            /* eddy test: partitions in memory (plan_set_memory_partitions) */
            si->kind = node_opt_bool(nd, "stdin") && !file ? SRC_STDIN : SRC_FILE;
            continue;
        }
        if (node_opt_bool(nd, "stdin") && !file) {
            si->kind = SRC_STDIN;
            si->nfiles = 1;
            si->files = calloc(1, sizeof *si->files);
            si->files[0] = strdup("-");
            continue;
        }
        si->kind = SRC_FILE;
        char *pattern = resolve(p->dir, file);
        glob_t g;
        int rc = glob(pattern, GLOB_ERR, NULL, &g);
        if (rc != 0 || g.gl_pathc == 0) {
            snprintf(err, errlen, "source '%s' (%s): no file matches '%s'", si->name, nd->where, pattern);
            if (rc == 0) globfree(&g);
            free(pattern);
            return -1;
        }
        free(pattern);
        si->nfiles = (int)g.gl_pathc;
        si->files = calloc(si->nfiles, sizeof *si->files);
        for (size_t j = 0; j < g.gl_pathc; j++) si->files[j] = strdup(g.gl_pathv[j]);
        globfree(&g);
    }
    return 0;
}

/* path with symlinks resolved when it exists, else as given.  Owned. */
static char *real_or_same(const char *path) {
    char *r = realpath(path, NULL);
    return r ? r : strdup(path);
}

/* A file sink writing into a folder a file source reads: its part files
 * sit beside the input, and a glob that matches them (say in/ with every file) reads the
 * output as input the next run (or at once, with follow).  A warning: the
 * glob may well not match them. */
static void warn_sink_in_input(const plan *p, const node *snk, const char *sink_dir) {
    char *sd = real_or_same(sink_dir);
    for (int s = 0; sd && s < p->nsources; s++) {
        const source_info *si = &p->sources[s];
        if (si->kind != SRC_FILE) continue;
        for (int j = 0; j < si->nfiles; j++) {
            char *f = real_or_same(si->files[j]);
            char *slash = f ? strrchr(f, '/') : NULL;
            int same = slash && (*slash = 0, strcmp(f, sd) == 0);
            free(f);
            if (same) {
                log_warn("sink '%s' (%s) writes its part files into %s, the folder source '%s' reads its input from "
                         "(%s): a later run, or this one with follow, may read the output as input; give the sink "
                         "a folder of its own", snk->name, snk->where, sd, si->name, node_opt(&p->nodes[si->node - 1], "file"));
                break;
            }
        }
    }
    free(sd);
}

/* Two file sinks in one folder would write the same part files. */
static int check_sinks(const plan *p, char *err, size_t errlen) {
    for (int i = 0; i < p->nnodes; i++) {
        const node *a = &p->nodes[i];
        if (a->kind != NODE_SINK || !node_opt(a, "file")) continue;
        char *da = resolve(p->dir, node_opt(a, "file"));
        if (da) warn_sink_in_input(p, a, da);
        for (int j = i + 1; j < p->nnodes && da; j++) {
            const node *b = &p->nodes[j];
            if (b->kind != NODE_SINK || !node_opt(b, "file")) continue;
            char *db = resolve(p->dir, node_opt(b, "file"));
            int same = db && strcmp(da, db) == 0;
            free(db);
            if (same) {
                snprintf(err, errlen, "sinks '%s' (%s) and '%s' (%s) write to the same folder %s: give each its own",
                         a->name, a->where, b->name, b->where, da);
                free(da);
                return -1;
            }
        }
        free(da);
    }
    return 0;
}

/* Cuts the graph into stages.  Source stages: one per source.  Keyed stages:
 * one per key_by, merged (union-find) when their outputs meet downstream.  A
 * node runs in every stage whose records reach it without crossing a key_by. */
static int find(int *parent, int x) {
    while (parent[x] != x) x = parent[x] = parent[parent[x]];
    return x;
}

static int build_stages(plan *p, const config *cfg, char *err, size_t errlen) {
    int n = p->nnodes;
    int *parent = calloc(n + 1, sizeof *parent);
    /* reach[i][j]: node j+1 is reached from origin i without crossing a key_by;
     * origins are nodes (sources and key_bys), by id. */
    unsigned char *reach = calloc((size_t)(n + 1) * (n + 1), 1);
    int rc = -1;
    if (!parent || !reach) { snprintf(err, errlen, "out of memory"); goto err; }
    for (int i = 0; i <= n; i++) parent[i] = i;
#define R(o, id) reach[(size_t)(o) * (n + 1) + (id)]
    for (int id = 1; id <= n; id++) {
        node *nd = &p->nodes[id - 1];
        if (nd->kind == NODE_SOURCE) { R(id, id) = 1; continue; }
        for (int k = 0; k < nd->ninputs; k++) {
            int in = nd->inputs[k];
            if (in < 1 || in >= id) { snprintf(err, errlen, "operator %d has a bad input", id); goto err; }
            node *ind = &p->nodes[in - 1];
            if (ind->kind == NODE_KEY_BY) { R(in, id) = 1; continue; }
            for (int o = 1; o <= n; o++) if (R(o, in)) R(o, id) = 1;
        }
        /* a node reached from several key_bys merges their keyed stages */
        int first = 0;
        for (int o = 1; o <= n; o++) {
            if (!R(o, id) || p->nodes[o - 1].kind != NODE_KEY_BY) continue;
            if (!first) first = o;
            else parent[find(parent, o)] = find(parent, first);
        }
        if (nd->kind == NODE_SINK || nd->kind == NODE_KEY_BY) {
            int has_keyed = 0, has_src = 0;
            for (int o = 1; o <= n; o++) if (R(o, id)) {
                if (p->nodes[o - 1].kind == NODE_KEY_BY) has_keyed = 1; else has_src = 1;
            }
            (void)has_keyed; (void)has_src;
        }
    }
    /* stages: sources first (in source order), then keyed groups */
    int *stage_of_origin = calloc(n + 1, sizeof *stage_of_origin);
    if (!stage_of_origin) { snprintf(err, errlen, "out of memory"); goto err; }
    p->stages = calloc(n + 1, sizeof *p->stages);
    for (int s = 0; s < p->nsources; s++) {
        stage *st = &p->stages[p->nstages];
        st->id = p->nstages;
        st->source = s;
        st->name = strdup(p->sources[s].name);
        st->ntasks = p->sources[s].nfiles;
        st->roots = calloc(1, sizeof *st->roots);
        st->roots[st->nroots++] = p->sources[s].node;
        stage_of_origin[p->sources[s].node] = p->nstages++;
    }
    for (int id = 1; id <= n; id++) {
        if (p->nodes[id - 1].kind != NODE_KEY_BY) continue;
        int r = find(parent, id);
        if (r == id) {
            stage *st = &p->stages[p->nstages];
            st->id = p->nstages;
            st->keyed = 1;
            st->source = -1;
            char name[64];
            snprintf(name, sizeof name, "keyed%d", st->id);
            st->name = strdup(name);
            st->ntasks = cfg->parallelism;
            st->roots = calloc(n, sizeof *st->roots);
            stage_of_origin[id] = p->nstages++;
        }
    }
    for (int id = 1; id <= n; id++) {
        node *nd = &p->nodes[id - 1];
        if (nd->kind != NODE_KEY_BY) continue;
        int s = stage_of_origin[find(parent, id)];
        stage_of_origin[id] = s;
        nd->stage_out = s;
        stage *st = &p->stages[s];
        st->roots[st->nroots++] = id;
        const opt *par = opt_find(&nd->opts, "parallelism");
        if (par && par->type == OPT_NUMBER && (int)par->n > 0) {
            if ((int)par->n > cfg->max_parallelism) {
                snprintf(err, errlen, "key_by (%s): parallelism %d is above max_parallelism %d", nd->where,
                         (int)par->n, cfg->max_parallelism);
                free(stage_of_origin);
                goto err;
            }
            st->ntasks = (int)par->n;
        }
    }
    for (int id = 1; id <= n; id++) {
        node *nd = &p->nodes[id - 1];
        nd->in_stage = calloc(p->nstages, 1);
        for (int o = 1; o <= n; o++) if (R(o, id)) nd->in_stage[stage_of_origin[o]] = 1;
        for (int s = 0; s < p->nstages; s++) if (nd->in_stage[s]) {
            stage *st = &p->stages[s];
            int *nn = realloc(st->nodes, sizeof *nn * (st->nnodes + 1));
            if (!nn) { free(stage_of_origin); snprintf(err, errlen, "out of memory"); goto err; }
            st->nodes = nn;
            st->nodes[st->nnodes++] = id;
        }
    }
#undef R
    free(stage_of_origin);
    /* keyed operators need a keyed stage */
    for (int id = 1; id <= n; id++) {
        node *nd = &p->nodes[id - 1];
        if (nd->kind != NODE_WINDOW && nd->kind != NODE_PROCESS && nd->kind != NODE_DEDUP && nd->kind != NODE_JOIN) continue;
        if (nd->kind == NODE_JOIN && node_opt(nd, "global")) continue;    /* a global table: any task joins it */
        for (int s = 0; s < p->nstages; s++)
            if (nd->in_stage[s] && !p->stages[s].keyed) {
                snprintf(err, errlen, "%s: %s needs a keyed stream: add key_by before it "
                         "(records from source '%s' reach it unkeyed)", nd->where,
                         nd->kind == NODE_WINDOW ? "a window" : nd->kind == NODE_PROCESS ? "process"
                         : nd->kind == NODE_JOIN ? "join (its stream and its table)" : "dedup",
                         p->stages[s].name);
                goto err;
            }
    }
    for (int s = 0; s < p->nstages; s++) p->ntasks += p->stages[s].ntasks;
    rc = 0;
err:
    free(parent);
    free(reach);
    return rc;
}

int plan_push_runtime(vm *v, const plan *p, const config *cfg, const char *fn, int nrec, char *err, size_t errlen) {
    lua_State *L = vm_state(v);
    int top = lua_gettop(L);
    lua_getglobal(L, "require");                               /* require */
    lua_pushstring(L, "eddy.runtime");
    if (lua_pcall(L, 1, 1, 0) != 0) {                          /* runtime | err */
        snprintf(err, errlen, "%s", vm_errstr(L, -1));
        lua_settop(L, top);
        return -1;
    }
    lua_getfield(L, -1, fn);                                   /* runtime fn */
    lua_createtable(L, 0, 5 + nrec);                           /* runtime fn args */
    lua_pushstring(L, p->script_rel); lua_setfield(L, -2, "script");
    lua_pushstring(L, p->dir);        lua_setfield(L, -2, "dir");
    if (p->text) { lua_pushstring(L, p->text); lua_setfield(L, -2, "text"); }
    lua_pushboolean(L, cfg->sandbox_ffi); lua_setfield(L, -2, "ffi");
    lua_pushboolean(L, cfg->sandbox_os);  lua_setfield(L, -2, "os");
    return 0;
}

void plan_describe_input(const plan *p, uint32_t source, int32_t partition, int64_t line, int64_t offset, char *out,
                         size_t n) {
    const source_info *si = source < (uint32_t)p->nsources ? &p->sources[source] : NULL;
    int known = si && partition >= 0 && partition < si->nfiles;
    if (known && si->kind == SRC_KAFKA) {
        snprintf(out, n, "%s topic %s partition %d offset %lld", si->name, si->topics[si->ktopic[partition]],
                 si->kpart[partition], (long long)offset);
        return;
    }
    char at[64] = "";
    if (line > 0) snprintf(at, sizeof at, ":%lld", (long long)line);
    snprintf(out, n, "%s%s%s%s (byte %lld)", si ? si->name : "?", known ? " " : "", known ? si->files[partition] : "",
             at, (long long)offset);
}

plan *plan_create(const config *cfg, const char *lua_dir, char *err, size_t errlen) {
    return plan_create_text(cfg, lua_dir, NULL, err, errlen);
}

plan *plan_create_text(const config *cfg, const char *lua_dir, const char *text, char *err, size_t errlen) {
    plan *p = calloc(1, sizeof *p);
    vm *v = NULL;
    if (!p) { snprintf(err, errlen, "out of memory"); return NULL; }
    p->script = strdup(cfg->pipeline);
    char *tmp = strdup(cfg->pipeline);
    p->dir = strdup(dirname(tmp));
    free(tmp);
    tmp = strdup(cfg->pipeline);
    p->script_rel = strdup(basename(tmp));
    free(tmp);
    if (text && !(p->text = strdup(text))) { snprintf(err, errlen, "out of memory"); goto err; }
    if (plan_hash_text(text ? text : p->script, p->script, p->hash, err, errlen) < 0) goto err;

    vm_opts vo = { .memory_limit = cfg->limit_memory, .instructions = cfg->limit_instructions,
                   .lua_dir = lua_dir, .pipeline_dir = p->dir };
    v = vm_create(&vo, err, errlen);
    if (!v) goto err;
    lua_State *L = vm_state(v);
    char lerr[2048];
    if (plan_push_runtime(v, p, cfg, "plan", 0, lerr, sizeof lerr) < 0) {   /* runtime plan args */
        snprintf(err, errlen, "cannot load the eddy runtime from %s: %s", lua_dir, lerr);
        goto err;
    }
    if (vm_pcall_bounded(v, 1, 1, cfg->limit_time_ms) != 0) {  /* runtime nodes | err */
        snprintf(err, errlen, "%s", vm_errstr(L, -1));
        goto err;
    }
    if (read_nodes(L, p, err, errlen) < 0) goto err;
    vm_destroy(v);
    v = NULL;
    if (apply_overrides(p, cfg, err, errlen) < 0) goto err;
    if (build_sources(p, cfg, err, errlen) < 0) goto err;
    if (check_sinks(p, err, errlen) < 0) goto err;
    if (build_stages(p, cfg, err, errlen) < 0) goto err;
    if (shuffle_plan(p, cfg, err, errlen) < 0) goto err;
    return p;
err:
    vm_destroy(v);
    plan_destroy(p);
    return NULL;
}

void plan_destroy(plan *p) {
    if (!p) return;
    for (int i = 0; i < p->nnodes; i++) {
        node *nd = &p->nodes[i];
        free(nd->kind_name); free(nd->name); free(nd->uid); free(nd->where);
        free(nd->inputs); free(nd->in_stage);
        opts_free(&nd->opts);
    }
    free(p->nodes);
    for (int s = 0; s < p->nstages; s++) {
        free(p->stages[s].name); free(p->stages[s].roots); free(p->stages[s].nodes);
    }
    free(p->stages);
    for (int s = 0; s < p->nsources; s++) {
        source_info *si = &p->sources[s];
        for (int j = 0; j < si->nfiles; j++) free(si->files[j]);
        free(si->files); free(si->name); free(si->format);
        for (int j = 0; j < si->ntopics; j++) free(si->topics[j]);
        free(si->topics); free(si->ktopic); free(si->kpart); free(si->start);
    }
    free(p->sources);
    free(p->script); free(p->script_rel); free(p->dir); free(p->text);
    free(p);
}

static void print_node(const plan *p, const node *nd, FILE *out) {
    fprintf(out, "    %-8s uid=%s", nd->kind_name, nd->uid);
    if (nd->name) fprintf(out, " name=%s", nd->name);
    if (nd->kind == NODE_SINK) {
        const char *f = node_opt(nd, "file"), *topic = node_opt(nd, "kafka");
        if (topic) fprintf(out, " kafka topic %s", topic);
        else fprintf(out, " %s", f ? f : "stdout");
        fprintf(out, " format=%s", node_opt(nd, "format") ? node_opt(nd, "format") : "json");
    }
    if (nd->kind == NODE_WINDOW) {
        const char *adv = node_opt(nd, "advance"), *size = node_opt(nd, "size");
        fprintf(out, " %s(%s%s%s) %s", node_opt(nd, "assigner"), size,
                adv && size && strcmp(adv, size) ? ", " : "", adv && size && strcmp(adv, size) ? adv : "",
                node_opt(nd, "agg"));
    }
    if (nd->kind == NODE_KEY_BY) {
        const char *k = node_opt(nd, "key");
        fprintf(out, " key=%s -> stage %d (%s)", k ? k : "?", nd->stage_out, p->stages[nd->stage_out].name);
    }
    fprintf(out, "  [%s]\n", nd->where ? nd->where : "?");
}

void plan_print(const plan *p, const config *cfg, FILE *out) {
    fprintf(out, "pipeline %s (sha256 %.12s)\n", p->script, p->hash);
    fprintf(out, "name %s, threads %d, parallelism %d, max_parallelism %d, %d stages, %d tasks\n",
            cfg->name, cfg->threads, cfg->parallelism, cfg->max_parallelism, p->nstages, p->ntasks);
    for (int s = 0; s < p->nstages; s++) {
        const stage *st = &p->stages[s];
        if (st->keyed && st->source >= 0) {
            fprintf(out, "stage %d %s: keyed, parallelism %d, through Kafka topic %s\n", st->id, st->name,
                    st->ntasks, p->sources[st->source].topics[0]);
        } else if (st->keyed) {
            fprintf(out, "stage %d %s: keyed, parallelism %d\n", st->id, st->name, st->ntasks);
        } else {
            const source_info *si = &p->sources[st->source];
            if (si->kind == SRC_KAFKA && si->nfiles == 0) {
                fprintf(out, "stage %d %s: source (kafka", st->id, st->name);
                for (int t = 0; t < si->ntopics; t++) fprintf(out, "%s%s", t ? ", " : " topic ", si->topics[t]);
                fprintf(out, ", format %s, start %s), partitions from the brokers at start\n", si->format, si->start);
            } else {
                fprintf(out, "stage %d %s: source (%s, format %s), %d partition%s\n", st->id, st->name,
                        si->kind == SRC_STDIN ? "stdin" : si->kind == SRC_KAFKA ? "kafka" : "file", si->format,
                        st->ntasks, st->ntasks == 1 ? "" : "s");
            }
        }
        for (int t = 0; t < st->ntasks; t++) {
            fprintf(out, "  task %s-%d", st->name, t);
            if (!st->keyed) fprintf(out, "  %s", p->sources[st->source].files[t]);
            fprintf(out, "\n");
        }
        fprintf(out, "  operators:\n");
        for (int i = 0; i < st->nnodes; i++) print_node(p, &p->nodes[st->nodes[i] - 1], out);
    }
}

/* ---- Kafka partitions --------------------------------------------------- */

int node_has_state(const node *n) {
    return n->uid && (n->kind == NODE_PROCESS || n->kind == NODE_DEDUP || n->kind == NODE_JOIN ||
                      n->kind == NODE_GLOBAL_TABLE || n->kind == NODE_WINDOW);
}

int plan_has_keyed_state(const plan *p) {
    for (int i = 0; i < p->nnodes; i++)
        if (node_has_state(&p->nodes[i])) return 1;
    return 0;
}

int plan_has_kafka_sources(const plan *p) {
    for (int s = 0; s < p->nsources; s++) if (p->sources[s].kind == SRC_KAFKA) return 1;
    return 0;
}

static void recount_tasks(plan *p) {
    p->ntasks = 0;
    for (int s = 0; s < p->nstages; s++) {
        stage *st = &p->stages[s];
        if (!st->keyed) st->ntasks = p->sources[st->source].nfiles;
        p->ntasks += st->ntasks;
    }
}

/* Appends partition `part` of topic index ti to Kafka source si. */
static int add_partition(source_info *si, int ti, int part) {
    int n = si->nfiles + 1;
    char **f = realloc(si->files, sizeof *f * n);
    if (f) si->files = f;
    int *kt = realloc(si->ktopic, sizeof *kt * n), *kp = realloc(si->kpart, sizeof *kp * n);
    if (kt) si->ktopic = kt;
    if (kp) si->kpart = kp;
    if (!f || !kt || !kp) return -1;
    char label[320];
    snprintf(label, sizeof label, "%s/%d", si->topics[ti], part);
    si->files[si->nfiles] = strdup(label);
    si->ktopic[si->nfiles] = ti;
    si->kpart[si->nfiles] = part;
    si->nfiles = n;
    return si->files[n - 1] ? 0 : -1;
}

int plan_resolve_kafka(plan *p, partition_count_fn count, void *ud, char *err, size_t errlen) {
    for (int s = 0; s < p->nsources; s++) {
        source_info *si = &p->sources[s];
        if (si->kind != SRC_KAFKA || si->nfiles > 0) continue;
        for (int t = 0; t < si->ntopics; t++) {
            char e[512];
            int n = count(ud, si->topics[t], e, sizeof e);
            if (n < 0) {
                snprintf(err, errlen, "source '%s' (%s): topic '%s': %s", si->name, p->nodes[si->node - 1].where,
                         si->topics[t], e);
                return -1;
            }
            for (int j = 0; j < n; j++)
                if (add_partition(si, t, j) < 0) { snprintf(err, errlen, "out of memory"); return -1; }
        }
    }
    recount_tasks(p);
    return 0;
}

int plan_set_memory_partitions(plan *p, int source, int n) {
    source_info *si = &p->sources[source];
    for (int j = si->nfiles; j < n; j++) {
        if (si->kind == SRC_KAFKA) {
            if (add_partition(si, 0, j) < 0) return -1;
            continue;
        }
        char **f = realloc(si->files, sizeof *f * (si->nfiles + 1));
        if (!f) return -1;
        si->files = f;
        if (asprintf(&si->files[si->nfiles], "%s/%d", si->name, j) < 0) return -1;
        si->nfiles++;
    }
    recount_tasks(p);
    return 0;
}

int plan_copy_kafka(plan *p, const plan *from) {
    for (int s = 0; s < p->nsources && s < from->nsources; s++) {
        source_info *si = &p->sources[s];
        const source_info *fi = &from->sources[s];
        if (si->memory == NULL && fi->memory && si->kind == fi->kind && si->nfiles == 0) {
            si->memory = fi->memory;          /* eddy test: the same in-memory partitions */
            if (plan_set_memory_partitions(p, s, fi->nfiles) < 0) return -1;
            continue;
        }
        if (si->kind != SRC_KAFKA || fi->kind != SRC_KAFKA || si->nfiles > 0) continue;
        for (int j = 0; j < fi->nfiles; j++) {
            int ti = -1;
            for (int t = 0; t < si->ntopics; t++) if (strcmp(si->topics[t], fi->topics[fi->ktopic[j]]) == 0) ti = t;
            if (ti < 0) continue;       /* a topic the new version dropped: plan_compatible refuses it */
            if (add_partition(si, ti, fi->kpart[j]) < 0) return -1;
        }
    }
    recount_tasks(p);
    return 0;
}
