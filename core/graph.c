/* graph — see graph.h. */
#include "graph.h"
#include "shuffle.h"
#include <stdlib.h>
#include <string.h>

typedef struct graph {
    task **tasks; int ntasks;
    channel **chans; int nchans;
} graph;

/* shuffle = "kafka": every task of stage u writes to the repartition
 * topic of keyed stage ds, whose tasks count it as one more input. */
static int connect_remote(graph *g, const plan *p, const int *first, int u, int ds, char *err, size_t errlen) {
    const stage *down = &p->stages[ds];
    task *d0 = g->tasks[first[ds]];
    for (int ui = 0; ui < p->stages[u].ntasks; ui++) {
        task *up = g->tasks[first[u] + ui];
        uint32_t input = (uint32_t)task_ninputs(d0);
        for (int di = 0; di < down->ntasks; di++)
            if (task_add_remote_input(g->tasks[first[ds] + di], NULL, up) < 0) { snprintf(err, errlen, "out of memory"); return -1; }
        if (task_add_remote_output(up, ds, down->ntasks, input, shuffle_stage_topic(p, down), err, errlen) < 0) return -1;
    }
    return 0;
}

static int build(graph *g, task_shared *sh, const plan *p, char *err, size_t errlen) {
    g->tasks = calloc(p->ntasks, sizeof *g->tasks);
    int *first = calloc(p->nstages, sizeof *first);       /* first task id of each stage */
    int rc = -1;
    if (!g->tasks || !first) { snprintf(err, errlen, "out of memory"); goto err; }
    for (int s = 0; s < p->nstages; s++) {
        first[s] = g->ntasks;
        for (int i = 0; i < p->stages[s].ntasks; i++) {
            task *t = task_create(sh, &p->stages[s], i, g->ntasks, err, errlen);
            if (!t) goto err;
            g->tasks[g->ntasks++] = t;
            if (p->stages[s].source >= 0 && p->sources[p->stages[s].source].bootstrap &&
                task_bootstrap_add(sh, t) < 0) {
                snprintf(err, errlen, "out of memory");
                goto err;
            }
        }
    }
    /* channels: every task of a stage holding a key_by into stage D, to every task of D */
    for (int u = 0; u < p->nstages; u++) {
        for (int ds = 0; ds < p->nstages; ds++) {
            int feeds = 0;
            for (int k = 0; k < p->stages[u].nnodes; k++) {
                const node *nd = &p->nodes[p->stages[u].nodes[k] - 1];
                if (nd->kind == NODE_KEY_BY && nd->stage_out == ds) feeds = 1;
            }
            if (!feeds) continue;
            int nt = p->stages[ds].ntasks;
            if (p->stages[ds].source >= 0) {          /* shuffle = "kafka": through its repartition topic */
                if (connect_remote(g, p, first, u, ds, err, errlen) < 0) goto err;
                continue;
            }
            for (int ui = 0; ui < p->stages[u].ntasks; ui++) {
                task *up = g->tasks[first[u] + ui];
                channel **targets = calloc(nt, sizeof *targets);
                if (!targets) { snprintf(err, errlen, "out of memory"); goto err; }
                for (int di = 0; di < nt; di++) {
                    task *down = g->tasks[first[ds] + di];
                    channel *c = channel_create((int)sh->cfg->channel_capacity, up, down);
                    channel **cs = realloc(g->chans, sizeof *cs * (g->nchans + 1));
                    if (!c || !cs) { channel_destroy(c); free(targets); snprintf(err, errlen, "out of memory"); goto err; }
                    g->chans = cs;
                    g->chans[g->nchans++] = c;
                    targets[di] = c;
                    if (task_add_input(down, c) < 0) { free(targets); snprintf(err, errlen, "out of memory"); goto err; }
                }
                if (task_add_output(up, ds, targets, nt) < 0) { snprintf(err, errlen, "out of memory"); goto err; }
            }
        }
    }
    for (int i = 0; i < g->ntasks; i++) {
        char terr[2048];
        if (task_start(g->tasks[i], terr, sizeof terr) < 0) {
            snprintf(err, errlen, "task %s: %s", task_name(g->tasks[i]), terr);
            goto err;
        }
    }
    rc = 0;
err:
    free(first);
    return rc;
}

int graph_build(task_shared *sh, const plan *p, task ***tasks, int *ntasks, channel ***chans, int *nchans, char *err,
                size_t errlen) {
    graph g = { 0 };
    int rc = build(&g, sh, p, err, errlen);
    *tasks = g.tasks;
    *ntasks = g.ntasks;
    *chans = g.chans;
    *nchans = g.nchans;
    return rc;
}
