/* plan_compat — whether a new version of the pipeline may replace the
 * running one on a reload (plan_compatible, see pipeline.h): the same
 * sources and sinks, key_bys where they were, every stateful operator's uid
 * kept (or allow_dropped_state).  Split from pipeline.c, which builds plans.
 * Calls: pipeline (node_opt). */
#include "pipeline.h"
#include <stdio.h>
#include <string.h>

static int same_str(const char *a, const char *b) {
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* The operator with that uid (sources and sinks, whose uids are their names,
 * are a namespace of their own and never match). */
static const node *find_uid(const plan *p, const char *uid) {
    for (int i = 0; i < p->nnodes; i++)
        if (p->nodes[i].uid && strcmp(p->nodes[i].uid, uid) == 0 && p->nodes[i].kind != NODE_SINK &&
            p->nodes[i].kind != NODE_SOURCE)
            return &p->nodes[i];
    return NULL;
}

/* 1 when stage s of p has a sink named name with the same options as nd. */
static int stage_has_sink(const plan *p, int s, const node *nd) {
    for (int i = 0; i < p->stages[s].nnodes; i++) {
        const node *x = &p->nodes[p->stages[s].nodes[i] - 1];
        if (x->kind == NODE_SINK && strcmp(x->name, nd->name) == 0 && same_str(node_opt(x, "file"), node_opt(nd, "file")) &&
            node_opt_bool(x, "stdout") == node_opt_bool(nd, "stdout") && same_str(node_opt(x, "format"), node_opt(nd, "format")))
            return 1;
    }
    return 0;
}

static int count_kind(const plan *p, int s, node_kind k) {
    int n = 0;
    for (int i = 0; i < p->stages[s].nnodes; i++) if (p->nodes[p->stages[s].nodes[i] - 1].kind == k) n++;
    return n;
}

int plan_compatible(const plan *old, const plan *p, int allow_dropped_state, char *err, size_t errlen) {
    if (old->nsources != p->nsources) {
        snprintf(err, errlen, "the sources changed (%d before, %d now): that needs a restart", old->nsources, p->nsources);
        return -1;
    }
    for (int s = 0; s < old->nsources; s++) {
        const source_info *a = &old->sources[s], *b = &p->sources[s];
        const node *bn = &p->nodes[b->node - 1];
        if (strcmp(a->name, b->name) != 0 || a->kind != b->kind || a->nfiles != b->nfiles ||
            strcmp(a->format, b->format) != 0 || a->follow != b->follow || a->header != b->header ||
            a->delimiter != b->delimiter) {
            snprintf(err, errlen, "%s: source '%s' changed its input (name, files, format or follow): that needs a restart",
                     bn->where, b->name);
            return -1;
        }
        int same_topics = a->ntopics == b->ntopics && same_str(a->start, b->start);
        for (int t = 0; same_topics && t < a->ntopics; t++) same_topics = strcmp(a->topics[t], b->topics[t]) == 0;
        if (!same_topics) {
            snprintf(err, errlen, "%s: source '%s' changed its topics or start: that needs a restart", bn->where, b->name);
            return -1;
        }
        for (int j = 0; j < a->nfiles; j++)
            if (strcmp(a->files[j], b->files[j]) != 0) {
                snprintf(err, errlen, "%s: source '%s' now reads other files: that needs a restart", bn->where, b->name);
                return -1;
            }
    }
    if (old->nstages != p->nstages) {
        char where[512] = "";
        for (int i = 0; i < p->nnodes; i++)
            if (p->nodes[i].kind == NODE_KEY_BY && strlen(where) + strlen(p->nodes[i].where) + 3 < sizeof where) {
                if (where[0]) strcat(where, ", ");
                strcat(where, p->nodes[i].where);
            }
        snprintf(err, errlen, "the new version has key_by at %s, where the running one has %d keyed stage%s: "
                 "adding or removing a key_by needs a restart", where[0] ? where : "no line (none)",
                 old->nstages - old->nsources, old->nstages - old->nsources == 1 ? "" : "s");
        return -1;
    }
    for (int s = 0; s < p->nstages; s++) {
        const stage *a = &old->stages[s], *b = &p->stages[s];
        if (a->keyed != b->keyed || a->ntasks != b->ntasks) {
            const node *kb = b->nroots > 0 ? &p->nodes[b->roots[0] - 1] : NULL;
            snprintf(err, errlen, "%s: the keyed stage after it now has parallelism %d, the running one %d: "
                     "changing parallelism needs a restart (or a savepoint)", kb ? kb->where : p->script_rel,
                     b->ntasks, a->ntasks);
            return -1;
        }
        for (int d = 0; d < p->nstages; d++) {
            int fa = 0, fb = 0;
            for (int i = 0; i < a->nnodes; i++) { const node *x = &old->nodes[a->nodes[i] - 1]; if (x->kind == NODE_KEY_BY && x->stage_out == d) fa = 1; }
            for (int i = 0; i < b->nnodes; i++) { const node *x = &p->nodes[b->nodes[i] - 1]; if (x->kind == NODE_KEY_BY && x->stage_out == d) fb = 1; }
            if (fa != fb) {
                snprintf(err, errlen, "stage %d now %s stage %d: the channels would change, that needs a restart",
                         s, fb ? "feeds" : "no longer feeds", d);
                return -1;
            }
        }
        if (count_kind(old, s, NODE_SINK) != count_kind(p, s, NODE_SINK)) {
            for (int i = 0; i < a->nnodes; i++) {       /* a sink that is gone */
                const node *x = &old->nodes[a->nodes[i] - 1];
                if (x->kind == NODE_SINK && !stage_has_sink(p, s, x)) {
                    snprintf(err, errlen, "sink '%s' (%s in the running version) is gone: removing a sink needs a restart",
                             x->name, x->where);
                    return -1;
                }
            }
        }
        for (int i = 0; i < b->nnodes; i++) {
            const node *x = &p->nodes[b->nodes[i] - 1];
            if (x->kind == NODE_SINK && !stage_has_sink(old, s, x)) {
                snprintf(err, errlen, "%s: sink '%s' is new or changed its options: that needs a restart", x->where, x->name);
                return -1;
            }
        }
    }
    for (int i = 0; i < old->nnodes; i++) {
        const node *a = &old->nodes[i];
        if (a->kind == NODE_PROCESS || a->kind == NODE_DEDUP || a->kind == NODE_JOIN || a->kind == NODE_GLOBAL_TABLE) {
            const node *b = find_uid(p, a->uid);
            if ((!b || b->kind != a->kind) && !allow_dropped_state) {
                snprintf(err, errlen, "the %s operator with uid '%s' (%s before) is gone, and its state with it; "
                         "keep the uid, or reload with allow_dropped_state", a->kind_name, a->uid, a->where);
                return -1;
            }
            continue;
        }
        if (a->kind != NODE_WINDOW) continue;
        const node *b = find_uid(p, a->uid);
        if (!b || b->kind != NODE_WINDOW) {
            if (allow_dropped_state) continue;
            snprintf(err, errlen, "the window with uid '%s' (%s before) is gone, and its state with it; "
                     "keep the uid, or reload with allow_dropped_state", a->uid, a->where);
            return -1;
        }
        if (!same_str(node_opt(a, "size_ms"), node_opt(b, "size_ms")) ||
            !same_str(node_opt(a, "lateness_ms"), node_opt(b, "lateness_ms")) ||
            !same_str(node_opt(a, "advance_ms"), node_opt(b, "advance_ms")) ||
            !same_str(node_opt(a, "offset_ms"), node_opt(b, "offset_ms"))) {
            snprintf(err, errlen, "%s: the window with uid '%s' changed its size, advance, offset or lateness; its state "
                     "cannot carry over: give it a new uid (and reload with allow_dropped_state)", b->where, b->uid);
            return -1;
        }
    }
    return 0;
}
