/* follow.c: a change to a followed file wakes its tasks at once (inotify),
 * a change to another file in the same folder does not, a new file in it
 * does (a glob may take it in), and a plan that follows nothing watches
 * nothing. */
#include "test.h"
#include "follow.h"
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int woken;
static void on_wake(void *ud) { (void)ud; woken++; }

static void append(const char *path, const char *text) {
    FILE *f = fopen(path, "a");
    if (f) { fputs(text, f); fclose(f); }
}

/* Runs the event loop until nothing is pending for 200 ms (inotify's
 * events are there at once: the bound is only for a machine under load). */
static void settle(struct event_base *base) {
    struct timeval tv = { 0, 200 * 1000 };
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

TEST(a_followed_file_that_changes_wakes_its_tasks_and_others_do_not) {
    char dir[] = "/tmp/eddy-test-follow.XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char in[128], other[128], fresh[128];
    snprintf(in, sizeof in, "%s/in.jsonl", dir);
    snprintf(other, sizeof other, "%s/out.jsonl", dir);
    snprintf(fresh, sizeof fresh, "%s/in-2.jsonl", dir);
    append(in, "");
    append(other, "");
    char *files[] = { in };
    source_info si = { .name = "in", .kind = SRC_FILE, .files = files, .nfiles = 1, .follow = 1 };
    plan p = { .sources = &si, .nsources = 1 };
    struct event_base *base = event_base_new();
    follow *f = follow_open(base, &p, on_wake, NULL);
    CHECK(f != NULL);
    woken = 0;
    append(in, "{\"a\":1}\n");
    settle(base);
    CHECK(woken >= 1);
    woken = 0;
    append(other, "{\"b\":2}\n");                 /* a sink's file beside it */
    settle(base);
    CHECK(woken == 0);
    append(fresh, "{\"c\":3}\n");                 /* a new file in the folder */
    settle(base);
    CHECK(woken >= 1);
    follow_close(f);
    si.follow = 0;                                /* read to its end: nothing to watch */
    CHECK(follow_open(base, &p, on_wake, NULL) == NULL);
    event_base_free(base);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) printf("  cannot remove %s\n", dir);
}

int main(void) {
    RUN(a_followed_file_that_changes_wakes_its_tasks_and_others_do_not);
    return TEST_END();
}
