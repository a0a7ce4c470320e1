/* canary — a new version on some tasks only (`eddy reload --canary K`,
 * `--canary-partitions`, `--canary-tasks`), then `--promote` (the rest
 * switch) or `--rollback` (the canaries go back).  The new version passes
 * every check a reload makes (reload_prepare), and must keep every key_by
 * as it is (field, function's code): both versions route records to the
 * same keyed tasks.  Each roll-out offers every running task either a
 * version or a pass (task_offer, task_pass): every source task sends the
 * roll-out's barrier, so a keyed task that switches does so once it arrived
 * on every input (docs/contract.md, "Hot reload").  One of the daemon's
 * modules (daemon_state.h): the event loop's.  Calls reload, task, pipeline. */
#ifndef EDDY_CANARY_H
#define EDDY_CANARY_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "pipeline.h"

/* How the canary tasks are chosen. */
typedef enum {
    CANARY_COUNT,        /* "K": the K lowest task indexes of each stage */
    CANARY_PARTITIONS,   /* "0,3": the tasks of those indexes in every stage (a source stage's task j reads its
                          * partition j; a keyed stage's task j owns its j-th share of the key groups) */
    CANARY_TASKS         /* "in-0,keyed1-2": those tasks by name */
} canary_kind;

/* Pure: which of ntasks tasks (task i in stage stage_of[i], index
 * index_of[i] within it, named names[i]) a selection picks: on[i] = 1.
 * Returns how many, or -1 with err (malformed, out of range, unknown task,
 * none or every task picked). */
int canary_pick(int ntasks, const int *stage_of, const int *index_of, const char *const *names, canary_kind kind,
                const char *arg, unsigned char *on, char *err, size_t errlen);

/* Whether plan p routes records as `old` does: the same key_by operators,
 * each with the same field or the same function (its bytecode and scalar
 * upvalues, plan.lua's key_code).  0, or -1 with err naming the key_by. */
int canary_same_routing(const plan *old, const plan *p, char *err, size_t errlen);

/* Whether plan p brings no new state migration: every process operator
 * with a migrate has the same migrate (bytecode, scalar upvalues) in `old`.
 * 0, or -1 with err naming the operator. */
int canary_same_migrations(const plan *old, const plan *p, char *err, size_t errlen);

/* A canary in progress (daemon_state.canary). */
typedef struct canary_run {
    int version, from;            /* the canary's version, and the one the other tasks run */
    const plan *p, *from_p;       /* borrowed from daemon_state.plans */
    unsigned char *on;            /* [ntasks]: 1 for a canary task */
    struct task_vm **ready;       /* [ntasks]: the other tasks' VMs of the canary's version, prepared with the
                                   * canary's (the script as it was then): what --promote offers them */
    char how[256];                /* the selection as asked: "--canary 1" */
    int64_t started_ms;           /* wall clock */
} canary_run;

struct daemon_state;
/* The version number a new version gets (never one given before, even to
 * a canary rolled back). */
int reload_next_version(struct daemon_state *d);
/* eddy reload --canary / --canary-partitions / --canary-tasks; --promote;
 * --rollback.  HTTP-like status (200 with the version in msg; 400 a bad
 * selection; 409 no canary, or one already running; 422 refused; 503 busy)
 * with msg.  Event loop. */
int canary_request(struct daemon_state *d, const char *trigger, canary_kind kind, const char *arg, char *msg,
                   size_t len);
int canary_promote(struct daemon_state *d, const char *trigger, char *msg, size_t len);
int canary_rollback(struct daemon_state *d, const char *trigger, char *msg, size_t len);
/* /status pipeline.canary: { version, from_version, tasks, selected_by, started_at }, or JSON null. */
json_t *canary_status_json(const struct daemon_state *d);
void canary_free(struct daemon_state *d);

/* POST /reload?canary=K | canary_partitions=L | canary_tasks=L | promote=1 | rollback=1:
 * 1 when query asks one of them (then *status and the answer are set). */
int canary_http(struct daemon_state *d, const char *query, int *status, json_t **answer);
/* `eddy reload` with --canary*, --promote or --rollback among argv: 1 when
 * one is there (then *rc is the command's exit status), else 0. */
int canary_cli(int argc, char **argv, int *rc);

#endif
