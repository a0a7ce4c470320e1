/* config — the daemon's configuration: a Lua file returning a table, evaluated
 * in a restricted environment, then checked key by key against one schema
 * table (name, type, default, check).  Owns config_t and the duration/size
 * parsers; calls nothing of the runtime (LuaJIT only, for the evaluation).
 * Modules (config_internal.h): config.c the schema and its walk,
 * config_eval.c the restricted evaluation, config_value.c values in messages
 * and the duration/size/path parsers, config_options.c the option maps
 * (kafka, state.rocksdb, sources, sinks), config_checks.c the cross-checks. */
#ifndef EDDY_CONFIG_H
#define EDDY_CONFIG_H

#include <stdint.h>
#include <stddef.h>

enum { GUARANTEE_AT_LEAST_ONCE = 0, GUARANTEE_EXACTLY_ONCE = 1 };
enum { SHUFFLE_LOCAL = 0, SHUFFLE_KAFKA = 1 };
enum { RESTART_NONE = 0, RESTART_FIXED = 1, RESTART_EXPONENTIAL = 2 };
enum { ON_ERROR_FAIL = 0, ON_ERROR_SKIP = 1, ON_ERROR_DEAD_LETTER = 2 };
enum { LOGFMT_TEXT = 0, LOGFMT_JSON = 1 };

/* One scalar option: per-source/per-sink overrides and librdkafka properties. */
typedef enum { OPT_STRING, OPT_NUMBER, OPT_BOOL } opt_type;
typedef struct opt {
    char *key;
    opt_type type;
    char *s;          /* OPT_STRING (also set for numbers and bools: their text) */
    double n;         /* OPT_NUMBER */
    int b;            /* OPT_BOOL */
} opt;

typedef struct opt_list {
    opt *items;
    int n;
} opt_list;

/* A named group of options: config.sources.<name>, config.sinks.<name>. */
typedef struct opt_group {
    char *name;
    opt_list opts;
} opt_group;

typedef struct config {
    char *path;              /* absolute path of the config file; NULL from config_default_for_pipeline */
    char *dir;               /* its folder; relative paths resolve against it */
    char *name;              /* app id; default: config file name up to its first '.'
                              * ("prod.conf.lua" -> "prod"), or the folder's name when
                              * that is "eddy" or "config" (wordcount/eddy.conf.lua ->
                              * "wordcount"); characters other than [A-Za-z0-9._-] -> '-' */
    char *pipeline;          /* absolute path of the pipeline script (required) */
    int threads;             /* default: number of online cores */
    int parallelism;         /* default: threads */
    int max_parallelism;     /* default 128, 1..32768 */
    int guarantee;           /* GUARANTEE_* ; default at_least_once */
    int shuffle;             /* SHUFFLE_*: where a key_by sends records; default local (inside this process) */
    int standby;             /* warm copies of each keyed task's state on other instances (shuffle = kafka); default 0 */
    char *state_dir;         /* absolute; default <dir>/state/<name> */
    int64_t state_cache;     /* bytes; default 64MB */
    opt_list state_rocksdb;  /* RocksDB options passed through (state.rocksdb) */
    int64_t checkpoint_interval_ms;   /* default 10000 */
    int checkpoint_retain;            /* default 3 */
    int restart_strategy;    /* RESTART_* (exactly_once: a failed task restarts eddy from its last checkpoint) */
    int restart_attempts;    /* default 3 */
    int64_t restart_delay_ms, restart_max_delay_ms;   /* default 1s; exponential doubles up to max (1m) */
    opt_list kafka;          /* librdkafka properties, passed through (not `embedded`) */
    int kafka_embedded;      /* 1 when kafka.embedded is set */
    int kafka_embedded_brokers;       /* default 1 */
    opt_list kafka_embedded_topics;   /* name -> partitions (OPT_NUMBER) */
    opt_group *sources; int nsources; /* per-source overrides */
    opt_group *sinks;   int nsinks;   /* per-sink overrides */
    int admin_enabled;       /* admin = false turns it off; default on */
    char *admin_listen;      /* default "127.0.0.1:8600" */
    char *admin_token;       /* bearer token POST /reload and /savepoint need; NULL = none */
    char *admin_hosts;       /* more names Host may carry, comma-separated; NULL = none */
    int reload_watch;        /* default 1 */
    int reload_keep_versions;/* accepted versions kept in state.dir/versions; default 5 */
    int reload_dry_run_records; /* records kept per source partition for dry runs (replay.c); 0: off; default 1000 */
    int64_t reload_probation_ms;     /* automatic rollback (probation.c): how long a new version is watched; 0 = off */
    double reload_max_error_rate;    /* errors / records in on the new version past which it is rolled back; set or not */
    int reload_error_rate_set;       /* reload.max_error_rate was given (else only a failed task rolls back) */
    int reload_hold_commits;         /* exactly_once: no checkpoint commits during probation; default 0 */
    int on_error;            /* ON_ERROR_* ; default fail */
    char *dead_letter_file;  /* absolute; default <state_dir>/dead-letter.jsonl (set even
                              * when dead_letter_kafka is, which then takes precedence) */
    char *dead_letter_kafka; /* topic, or NULL */
    int64_t limit_memory;    /* bytes per VM; default 256MB; 0 = unlimited */
    int64_t limit_instructions;  /* per record call once the watchdog arms the hook; default 10000000 */
    int64_t limit_time_ms;   /* wall-clock bound of one record call; default 1000 */
    int log_level;           /* LOG_* from log.h; default info */
    int log_format;          /* LOGFMT_* ; default text */
    int sandbox_ffi;         /* sandbox.ffi: user code may require("ffi"); default 0 */
    int sandbox_os;          /* sandbox.os: os.execute, io.popen, os.exit allowed; default 0 */
    int64_t batch_size;      /* tuning.batch: records per batch; default 1024 */
    int64_t channel_capacity;/* tuning.channel: batches per channel; default 8 */
    int testing;             /* set by eddy test's driver, never by a file: sources are in memory
                              * (the plan globs no file and asks Kafka nothing) */
} config;

/* Loads and validates the config file at `path`.  Returns an owned config, or
 * NULL with a message in err naming the key path and the bad value
 * ("checkpoint.interval: expected a duration like \"10s\", got \"ten\""). */
config *config_load(const char *path, char *err, size_t errlen);

/* A config with every default, for `eddy check PIPELINE.lua` (no config file):
 * pipeline = the given script, dir = its folder.  Returns an owned config. */
config *config_default_for_pipeline(const char *pipeline_path, char *err, size_t errlen);

/* eddy test's driver: the config file at `path` (or, when pipeline is
 * set, every default for that pipeline script, path NULL) with the table
 * at stack index `over` of L merged over it (tables key by key, anything
 * else replaced), checked as config_load checks a file.  Returns an owned
 * config, or NULL with err naming the key at fault. */
struct lua_State;
config *config_load_over(const char *path, const char *pipeline, struct lua_State *L, int over, char *err,
                         size_t errlen);
void config_destroy(config *c);   /* NULL is a no-op */

/* Durations: a number of ms, or "250ms", "5s", "1m", "2h", "1d" (integer or
 * decimal amount).  Returns 0 and sets *ms, or -1. */
int config_parse_duration(const char *s, int64_t *ms);
/* Sizes: bytes, or "64KB", "64MB", "1GB" (also "B", "K", "M", "G", "TB"; 1KB = 1024). */
int config_parse_size(const char *s, int64_t *bytes);

/* Finds an override option; borrowed, or NULL. */
const opt *opt_find(const opt_list *l, const char *key);
const opt_group *config_source(const config *c, const char *name);
const opt_group *config_sink(const config *c, const char *name);

#endif
