/* test_canary — core/canary.c's pure parts: which tasks a canary selection
 * picks (--canary K, --canary-partitions, --canary-tasks) and its refusals;
 * whether a new plan keys records as the running one does. */
#include "test.h"

#include <stdlib.h>

#include "canary.h"

/* A source stage of 2 partitions (in-0, in-1), then a keyed stage of 4 tasks. */
static const int stage_of[] = {0, 0, 1, 1, 1, 1};
static const int index_of[] = {0, 1, 0, 1, 2, 3};
static const char *const names[] = {"in-0", "in-1", "keyed1-0", "keyed1-1", "keyed1-2", "keyed1-3"};
#define N 6

static int pick(canary_kind kind, const char *arg, unsigned char *on, char *err) {
    return canary_pick(N, stage_of, index_of, names, kind, arg, on, err, 512);
}

TEST(count_picks_the_lowest_indexes_of_each_stage)
{
    unsigned char on[N];
    char err[512] = "";
    CHECK(pick(CANARY_COUNT, "1", on, err) == 2);
    CHECK(on[0] && !on[1] && on[2] && !on[3] && !on[4] && !on[5]);
    /* a stage K covers switches whole: the 2 source tasks, 2 of 4 keyed */
    CHECK(pick(CANARY_COUNT, "2", on, err) == 4);
    CHECK(on[0] && on[1] && on[2] && on[3] && !on[4] && !on[5]);
    CHECK(pick(CANARY_COUNT, "3", on, err) == 5);
}

TEST(count_out_of_range_or_malformed_is_refused)
{
    unsigned char on[N];
    char err[512] = "";
    CHECK(pick(CANARY_COUNT, "0", on, err) < 0);
    CHECK(strstr(err, "between 1 and 3") != NULL);
    CHECK(pick(CANARY_COUNT, "4", on, err) < 0);
    CHECK(strstr(err, "out of range") != NULL);
    CHECK(pick(CANARY_COUNT, "-1", on, err) < 0);
    CHECK(pick(CANARY_COUNT, "1x", on, err) < 0);
    CHECK(pick(CANARY_COUNT, "", on, err) < 0);
    CHECK(pick(CANARY_COUNT, NULL, on, err) < 0);
    CHECK(pick(CANARY_COUNT, "99999999999", on, err) < 0);
}

TEST(partitions_pick_those_indexes_in_every_stage)
{
    unsigned char on[N];
    char err[512] = "";
    CHECK(pick(CANARY_PARTITIONS, "0,3", on, err) == 3);
    CHECK(on[0] && !on[1] && on[2] && !on[3] && !on[4] && on[5]);
    /* an index only the keyed stage has: a keyed task only */
    CHECK(pick(CANARY_PARTITIONS, "2", on, err) == 1);
    CHECK(!on[0] && !on[1] && !on[2] && !on[3] && on[4] && !on[5]);
    CHECK(pick(CANARY_PARTITIONS, " 1 , 1 ", on, err) == 2);
    CHECK(!on[0] && on[1] && !on[2] && on[3]);
}

TEST(partitions_refusals_name_the_item)
{
    unsigned char on[N];
    char err[512] = "";
    CHECK(pick(CANARY_PARTITIONS, "0,4", on, err) < 0);
    CHECK(strstr(err, "partition 4 is out of range") != NULL);
    CHECK(pick(CANARY_PARTITIONS, "0,a", on, err) < 0);
    CHECK(strstr(err, "'a' is not a partition number") != NULL);
    CHECK(pick(CANARY_PARTITIONS, ",", on, err) < 0);
    CHECK(pick(CANARY_PARTITIONS, "0,1,2,3", on, err) < 0);     /* every task */
    CHECK(strstr(err, "picks every task") != NULL);
}

TEST(tasks_pick_by_name)
{
    unsigned char on[N];
    char err[512] = "";
    CHECK(pick(CANARY_TASKS, "keyed1-2", on, err) == 1);
    CHECK(on[4] && !on[0] && !on[2]);
    CHECK(pick(CANARY_TASKS, "in-1,keyed1-0", on, err) == 2);
    CHECK(on[1] && on[2]);
    CHECK(pick(CANARY_TASKS, "keyed1-9", on, err) < 0);
    CHECK(strstr(err, "no task is named 'keyed1-9'") != NULL);
    CHECK(pick(CANARY_TASKS, "in-0,in-1,keyed1-0,keyed1-1,keyed1-2,keyed1-3", on, err) < 0);
}

TEST(one_task_per_stage_leaves_no_room_for_a_canary)
{
    static const int st[] = {0, 1}, ix[] = {0, 0};
    static const char *const nm[] = {"in-0", "keyed1-0"};
    unsigned char on[2];
    char err[512] = "";
    CHECK(canary_pick(2, st, ix, nm, CANARY_COUNT, "1", on, err, sizeof err) < 0);
    CHECK(strstr(err, "every stage runs one task") != NULL);
    CHECK(canary_pick(2, st, ix, nm, CANARY_TASKS, "keyed1-0", on, err, sizeof err) == 1);
}

/* ---- routing ---- */

static opt field_opts[] = {{"key", OPT_STRING, "user", 0, 0}, {"field", OPT_STRING, "user", 0, 0}};
static opt field2_opts[] = {{"key", OPT_STRING, "account", 0, 0}, {"field", OPT_STRING, "account", 0, 0}};
static opt fn_opts[] = {{"key", OPT_STRING, "<function>", 0, 0}, {"key_code", OPT_STRING, "1b4c4a02", 0, 0}};
static opt fn2_opts[] = {{"key", OPT_STRING, "<function>", 0, 0}, {"key_code", OPT_STRING, "1b4c4a03", 0, 0}};

static plan *mkplan(opt *key_opts, int nkeys) {
    plan *p = calloc(1, sizeof *p);
    p->nnodes = 3;
    p->nodes = calloc(3, sizeof *p->nodes);
    p->nodes[0] = (node){ .id = 1, .kind = NODE_SOURCE, .where = "p.lua:3" };
    p->nodes[1] = (node){ .id = 2, .kind = NODE_KEY_BY, .where = "p.lua:4", .stage_out = 1,
                          .opts = { key_opts, nkeys } };
    p->nodes[2] = (node){ .id = 3, .kind = NODE_SINK, .where = "p.lua:5" };
    return p;
}

static void freeplan(plan *p) { free(p->nodes); free(p); }

TEST(routing_same_key_by_is_accepted)
{
    char err[512] = "";
    plan *a = mkplan(field_opts, 2), *b = mkplan(field_opts, 2), *f = mkplan(fn_opts, 2), *g = mkplan(fn_opts, 2);
    CHECK(canary_same_routing(a, b, err, sizeof err) == 0);
    CHECK(canary_same_routing(f, g, err, sizeof err) == 0);
    freeplan(a); freeplan(b); freeplan(f); freeplan(g);
}

TEST(routing_changed_key_by_is_refused)
{
    char err[512] = "";
    plan *a = mkplan(field_opts, 2), *b = mkplan(field2_opts, 2), *f = mkplan(fn_opts, 2), *g = mkplan(fn2_opts, 2);
    CHECK(canary_same_routing(a, b, err, sizeof err) < 0);
    CHECK(strstr(err, "its field changed from 'user' to 'account'") != NULL);
    CHECK(strstr(err, "p.lua:4") != NULL);
    CHECK(canary_same_routing(f, g, err, sizeof err) < 0);
    CHECK(strstr(err, "its key function changed (its code, or a value it reads from an enclosing local)") != NULL);
    CHECK(canary_same_routing(a, f, err, sizeof err) < 0);
    CHECK(strstr(err, "from a field to a function") != NULL);
    b->nodes[1].kind = NODE_MAP;                      /* no key_by any more */
    CHECK(canary_same_routing(a, b, err, sizeof err) < 0);
    CHECK(strstr(err, "add or remove a key_by") != NULL);
    freeplan(a); freeplan(b); freeplan(f); freeplan(g);
}

int main(void)
{
    RUN(count_picks_the_lowest_indexes_of_each_stage);
    RUN(count_out_of_range_or_malformed_is_refused);
    RUN(partitions_pick_those_indexes_in_every_stage);
    RUN(partitions_refusals_name_the_item);
    RUN(tasks_pick_by_name);
    RUN(one_task_per_stage_leaves_no_room_for_a_canary);
    RUN(routing_same_key_by_is_accepted);
    RUN(routing_changed_key_by_is_refused);
    return TEST_END();
}
