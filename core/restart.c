#include "restart.h"
#include "daemon_state.h"
#include "log.h"
#include "probation.h"
#include "kafka.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int restart_run(daemon_state *d, const run_opts *o, int code) {
    /* exactly_once: a failed task restarts eddy, which recovers from the
     * last committed checkpoint (restart.*) */
    /* a version on probation failed (or was rolled back under
     * reload.hold_commits): restart on the previous one, under either
     * guarantee, without counting in restart.attempts (probation.c) */
    int rollback = d->cfg && d->workers_ran && probation_wants_restart(d, code);
    int restartable = rollback || (code == 1 && d->ckpt && d->cfg && d->cfg->guarantee == GUARANTEE_EXACTLY_ONCE &&
                                   d->workers_ran && !atomic_load(&d->sh.stopping));
    const config *cfg = d->cfg;
    int attempt = getenv("EDDY_RESTART_ATTEMPT") ? atoi(getenv("EDDY_RESTART_ATTEMPT")) : 0;
    /* a checkpoint refused because the group rebalanced meanwhile: rejoin
     * from the last committed one, not counted in restart.attempts (instances
     * joining and leaving would use them up) */
    int rebalanced = restartable && kafka_txn_rebalanced(d->sh.kafka) && !atomic_load(&d->failed);
    if (restartable && (rollback || (cfg->restart_strategy != RESTART_NONE && (rebalanced || attempt < cfg->restart_attempts))) &&
        o->argv) {
        int64_t delay = cfg->restart_delay_ms;
        for (int i = 0; cfg->restart_strategy == RESTART_EXPONENTIAL && i < attempt && delay < cfg->restart_max_delay_ms; i++)
            delay *= 2;
        if (cfg->restart_strategy == RESTART_EXPONENTIAL && delay > cfg->restart_max_delay_ms) delay = cfg->restart_max_delay_ms;
        if (rollback) {
            delay = 0;
            log_warn("restarting on the version a rollback went back to (not counted in restart.attempts)");
        } else if (rebalanced) {
            delay = 0;
            log_warn("the group rebalanced while a checkpoint committed: restarting from the last committed "
                     "checkpoint (not counted in restart.attempts)");
        } else {
            log_warn("restarting in %.1f s from the last committed checkpoint (restart %d of %d, restart.strategy = %s)",
                     delay / 1000.0, attempt + 1, cfg->restart_attempts,
                     cfg->restart_strategy == RESTART_FIXED ? "fixed" : "exponential");
            attempt++;
        }
        char n[16];
        snprintf(n, sizeof n, "%d", attempt);
        /* once this run committed a checkpoint, that is where the next
         * one starts: not the savepoint again */
        if (o->from_savepoint && d->ckpt && ckpt_completed(d->ckpt) > 0) {
            int k = 0;
            for (int i = 0; o->argv[i]; i++) {
                if (strcmp(o->argv[i], "--from-savepoint") == 0 && o->argv[i + 1]) { i++; continue; }
                if (strncmp(o->argv[i], "--from-savepoint=", 17) == 0 ||
                    strcmp(o->argv[i], "--allow-non-restored-state") == 0)
                    continue;
                o->argv[k++] = o->argv[i];
            }
            o->argv[k] = NULL;
        }
        daemon_free(d);
        fflush(stderr);
        usleep((useconds_t)(delay * 1000));
        setenv("EDDY_RESTART_ATTEMPT", n, 1);
        execv("/proc/self/exe", o->argv);
        fprintf(stderr, "eddy: cannot restart: %s\n", strerror(errno));
        return 1;
    }
    if (restartable && cfg->restart_strategy != RESTART_NONE && cfg->restart_attempts > 0)
        fprintf(stderr, "eddy: gave up after %d restart%s (restart.attempts = %d): the task fails again from the "
                "last committed checkpoint\n", attempt, attempt == 1 ? "" : "s", cfg->restart_attempts);
    return -1;
}
