/* config_internal.h — what the config modules share, for config*.c only: the
 * schema's key description (struct key), the error helper, and the functions
 * one module offers another.  config.c owns the schema table and its walk;
 * config_value.c values in messages, durations, sizes and paths;
 * config_options.c the free-form option maps (kafka, state.rocksdb, sources,
 * sinks, admin.hosts); config_checks.c the checks and the defaults that
 * depend on other keys; config_eval.c the restricted evaluation of the file.
 * Calls: LuaJIT (lua_State in the prototypes); nothing of the runtime. */
#ifndef EDDY_CONFIG_INTERNAL_H
#define EDDY_CONFIG_INTERNAL_H

#include "config.h"

#include <stdarg.h>
#include <stdio.h>

#include <lua.h>

#define MAX_THREADS 1024
#define MAX_NAME 128
#define MAX_PARTITIONS 4096

/* ---- the schema's key (config.c) ------------------------------------------ */

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

/* Sets err to the message; returns -1. */
static inline int fail(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static inline int fail(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static inline int fail(char *err, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && n)
        vsnprintf(err, n, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- config.c -------------------------------------------------------------- */

/* An integer for key k (min..max) at idx; path names it in the error. */
int config_read_int(lua_State *L, int idx, const key *k, const char *path, int64_t *out,
                    char *err, size_t n);

/* ---- config_value.c: values in messages, durations, sizes, paths ----------- */

/* `s` between double quotes, escaped, cut at 60 bytes, into buf. */
void config_quote(char *buf, size_t n, const char *s, size_t len);
/* The value at idx for an error message, in buf (returned). */
const char *config_describe(lua_State *L, int idx, int same, char *buf, size_t n);
/* The path of the key at idx inside `prefix`, into buf. */
void config_child_path(char *buf, size_t n, const char *prefix, lua_State *L, int idx);
/* `p` as an absolute path against `dir`.  Owned, or NULL. */
char *config_path_resolve(const char *dir, const char *p);

/* ---- config_options.c: free-form option maps -------------------------------- */

int config_load_kafka(lua_State *, int, const key *, config *, char *, size_t);
int config_load_embedded(lua_State *, int, const key *, config *, char *, size_t);
int config_load_rocksdb(lua_State *, int, const key *, config *, char *, size_t);
int config_load_topics(lua_State *, int, const key *, config *, char *, size_t);
int config_load_sources(lua_State *, int, const key *, config *, char *, size_t);
int config_load_sinks(lua_State *, int, const key *, config *, char *, size_t);
int config_load_admin(lua_State *, int, const key *, config *, char *, size_t);
int config_load_error_rate(lua_State *, int, const key *, config *, char *, size_t);
int config_load_hosts(lua_State *, int, const key *, config *, char *, size_t);
/* Frees what a list or the groups own (the groups' array too). */
void config_opt_list_free(opt_list *l);
void config_groups_free(opt_group *g, int n);

/* ---- config_checks.c: checks, and defaults that depend on other keys -------- */

int config_check_name(config *, const key *, char *, size_t);
int config_check_listen(config *, const key *, char *, size_t);
int config_check_memory(config *, const key *, char *, size_t);
int config_check_token(config *, const key *, char *, size_t);
/* A default name from a file name.  Owned, or NULL. */
char *config_name_from(const char *s, size_t len);
/* Fills the defaults no schema entry can name alone; checks the rules that
 * tie keys together. */
int config_finish(config *c, char *err, size_t n);

/* ---- config_eval.c: the restricted evaluation ------------------------------- */

/* Pushes the table the config file at `path` returns.
 * Stack: ... -> ... table   (unchanged on error) */
int config_eval_file(lua_State *L, const char *path, char *err, size_t n);

#endif
