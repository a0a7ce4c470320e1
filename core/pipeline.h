/* pipeline — the plan: loads the user's script in a control VM (through
 * eddy.runtime.plan), reads back its operator graph, merges the config's
 * per-source and per-sink overrides, and cuts it into stages (a key_by ends
 * a stage), each with its tasks: one per source partition, or `parallelism`
 * for a keyed stage.  Operators of a stage are chained in its tasks; a
 * stateless operator after a union of two stages runs in both.  Calls vm,
 * config and LuaJIT; `eddy check` prints what it builds. */
#ifndef EDDY_PIPELINE_H
#define EDDY_PIPELINE_H

#include <stdio.h>
#include "config.h"

typedef enum { NODE_SOURCE, NODE_MAP, NODE_FILTER, NODE_FLAT_MAP, NODE_KEY_BY,
               NODE_UNION, NODE_SINK, NODE_WINDOW, NODE_SIDE, NODE_PROCESS, NODE_DEDUP,
               NODE_JOIN, NODE_GLOBAL_TABLE } node_kind;

typedef struct node {
    int id;                 /* 1-based, as in the script */
    node_kind kind;
    char *kind_name;
    char *name;             /* sources and sinks */
    char *uid;
    char *where;            /* "pipeline.lua:12" */
    int *inputs; int ninputs;
    opt_list opts;          /* scalar options, config overrides applied */
    int stage_out;          /* key_by: the keyed stage it feeds */
    unsigned char *in_stage;/* [nstages]: 1 when the node runs in that stage */
} node;

typedef enum { SRC_FILE, SRC_STDIN, SRC_KAFKA,
               SRC_MEMORY /* eddy test's in-memory partitions (source_memory.h): a kind of source_ops, never a source_info's */ } source_kind;

typedef struct source_info {
    int node;               /* node id */
    char *name;
    source_kind kind;
    char *format;           /* json, lines, raw, csv */
    char **files; int nfiles;   /* one partition per file; Kafka: "topic/partition" labels */
    char **topics; int ntopics; /* Kafka sources: their topics */
    int *ktopic, *kpart;        /* Kafka: partition j is partition kpart[j] of topics[ktopic[j]] */
    char *start;                /* Kafka: "earliest", "latest" or "committed" */
    int follow, header;
    char delimiter;
    int64_t idle_ms;        /* idle = d: after d without records the partition stops holding watermarks back; 0 = never */
    int bootstrap;          /* bootstrap = true: read to its end before any other source reads */
    int bounded;            /* bounded = true (Kafka): read to the end offsets as of the start, then end */
    int64_t max_bytes;      /* files and stdin: the longest record (max_bytes; SOURCE_FILE_MAX_BYTES) */
    int repartition;        /* shuffle = "kafka": a keyed stage's repartition topic (shuffle.c), not a user's source */
    void *memory;           /* eddy test: its partitions are the driver's (a mem_input, source_memory.h), whatever its kind */
} source_info;

typedef struct stage {
    int id;
    int keyed;
    int source;             /* source stage: index into plan.sources; a keyed stage under shuffle = "kafka":
                             * its repartition topic's (plan.sources[source].repartition); else -1 */
    int ntasks;
    char *name;             /* source name, or "keyed<N>" */
    int *roots; int nroots; /* source node, or the key_by nodes feeding it */
    int *nodes; int nnodes; /* every node that runs in it */
} stage;

typedef struct plan {
    char *script;           /* absolute path */
    char *script_rel;       /* as the user knows it: relative to dir */
    char *dir;              /* the pipeline's folder */
    char *text;             /* NULL, or where the script's text is read from instead of `script` (a kept
                             * version, reload --to): every path in it still resolves against dir */
    char hash[65];          /* sha-256 of the script, hex */
    node *nodes; int nnodes;     /* nodes[id - 1] */
    stage *stages; int nstages;
    source_info *sources; int nsources;
    int ntasks;
} plan;

/* Plans the pipeline the config names.  Returns an owned plan, or NULL with
 * err naming the file:line or config key at fault. */
plan *plan_create(const config *cfg, const char *lua_dir, char *err, size_t errlen);
/* The same, with the script's text read from the file `text` (a kept copy)
 * instead of the config's pipeline: the plan is the config's pipeline in
 * its folder (file = paths, require, io.open resolve there, error messages
 * name the script as the user knows it); only the script's bytes differ. */
plan *plan_create_text(const config *cfg, const char *lua_dir, const char *text, char *err, size_t errlen);
/* Starts eddy.runtime in VM v and pushes its entry point `fn` ("plan",
 * "task") with an args table holding what every entry point takes from the
 * plan and config (script, dir, ffi, os), room made for nrec more fields
 * the caller sets before it calls fn: the one place the runtime is started,
 * for the plan's control VM and every task's VM alike.  Lua stack:
 * ... -> ... runtime fn args.  0, or -1 with the Lua error in err and the
 * stack as it was. */
struct vm;
int plan_push_runtime(struct vm *v, const plan *p, const config *cfg, const char *fn, int nrec, char *err,
                      size_t errlen);
/* The content hash of a version (plan->hash): sha-256 of the script, then
 * of every .lua file beside it in name order, as hex.  0, or -1 with err. */
int plan_hash(const char *script, char hex[65], char *err, size_t errlen);
/* 1 for a file name eddy test runs (`*_test.lua`): it sits beside the
 * pipeline but is no part of a version (not hashed, kept or watched). */
int plan_is_test_file(const char *name);
/* The same hash with the script's bytes read from `text` instead. */
int plan_hash_text(const char *text, const char *script, char hex[65], char *err, size_t errlen);
/* The same hash with the modules read from the folder `modules` (a kept
 * copy), each named as if it were beside script; NULL: beside script. */
int plan_hash_files(const char *text, const char *script, const char *modules, char hex[65], char *err,
                    size_t errlen);
void plan_destroy(plan *p);          /* NULL is a no-op */
/* Where an input record came from, for messages: "SOURCE FILE:LINE (byte
 * N)" (no ":LINE" when line is 0), or "SOURCE topic T partition P offset N"
 * for Kafka.  The watchdog and crash messages and the error policy's
 * (runtime.lua's position()) say it the same way. */
void plan_describe_input(const plan *p, uint32_t source, int32_t partition, int64_t line, int64_t offset, char *out,
                         size_t n);
/* Whether a running plan `old` can swap to `p` by a reload: the same sources
 * (files, formats), stages, channels and sinks; every window uid of old kept
 * with the same assigner unless allow_dropped_state.  0, or -1 with err. */
int plan_compatible(const plan *old, const plan *p, int allow_dropped_state, char *err, size_t errlen);
void plan_print(const plan *p, const config *cfg, FILE *out);
/* Kafka sources learn their partitions from the brokers, at start: `count`
 * answers a topic's partition count (-1 with err when it cannot).  Fills the
 * sources' partitions and the source stages' task counts.  0, or -1 with err. */
typedef int (*partition_count_fn)(void *ud, const char *topic, char *err, size_t errlen);
int plan_resolve_kafka(plan *p, partition_count_fn count, void *ud, char *err, size_t errlen);
/* The same partitions as a running plan (a reload keeps them).  0, or -1. */
int plan_copy_kafka(plan *p, const plan *from);
/* eddy test (config.testing): source `source` has n in-memory partitions
 * (Kafka: partitions 0..n-1 of its first topic; a file or stdin source:
 * labels "<name>/<j>").  0, or -1 out of memory. */
int plan_set_memory_partitions(plan *p, int source, int n);
int plan_has_kafka_sources(const plan *p);
int plan_has_keyed_state(const plan *p);    /* stateful operators: the state store opens */
int node_has_state(const node *n);          /* process, dedup, join, window, global table */
const char *node_opt(const node *n, const char *key);   /* string value or NULL */
int node_opt_bool(const node *n, const char *key);

#endif
