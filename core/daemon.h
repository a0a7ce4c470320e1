/* daemon — the lifecycle of `eddy run` and `eddy check`: load the config,
 * plan, create tasks and channels, start the workers, and run the event loop
 * (signals, admin HTTP, the watchdog, polling of followed inputs) until every
 * task has ended or a signal stops it.  Calls config, pipeline, task, sched,
 * admin, metrics and vm. */
#ifndef EDDY_DAEMON_H
#define EDDY_DAEMON_H

typedef struct run_opts {
    const char *from_savepoint;      /* --from-savepoint DIR, or NULL */
    int allow_non_restored;          /* --allow-non-restored-state */
    char **argv;                     /* the command line, to restart with (restart.*) */
} run_opts;

/* `eddy run CONFIG [...]`: returns the process exit code (0, 1, 2). */
int daemon_run(const char *config_path, const run_opts *o);
/* `eddy check CONFIG|PIPELINE.lua`: prints the plan; returns 0 or 2. */
int daemon_check(const char *path);
/* The install's lua/ folder (EDDY_LUA_DIR, or ../lua beside the binary). */
const char *daemon_lua_dir(void);
/* 1 when the file at path requires "eddy" (a pipeline script), 0 for
 * anything else (a config file). */
int daemon_looks_like_pipeline(const char *path);

#endif
