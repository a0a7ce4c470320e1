/* test_io — the source and sink interfaces (core/source.c, core/sink.c)
 * through their file kinds: a file source saved mid-file continues from
 * its entry; stdin is polled and cannot continue where it stopped; every
 * source kind is in the table; an exactly-once file sink prepares a hidden
 * part file per checkpoint, lists it for the manifest, forgets it once
 * committed and deletes what no checkpoint committed when aborted. */
#include "test.h"

#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "sink.h"
#include "source.h"

static char dir[] = "/tmp/eddy-test-io-XXXXXX";

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static source_info file_source(char **files, source_kind kind) {
    source_info si;
    memset(&si, 0, sizeof si);
    si.name = "in";
    si.kind = kind;
    si.format = "lines";
    si.files = files;
    si.nfiles = 1;
    si.delimiter = ',';
    si.max_bytes = 1 << 20;
    return si;
}

TEST(a_file_source_saved_mid_file_continues_from_its_entry)
{
    char path[256], err[512];
    snprintf(path, sizeof path, "%s/in.txt", dir);
    write_file(path, "one\ntwo\nthree\n");
    char *files[] = { path };
    source_info si = file_source(files, SRC_FILE);
    source *s = source_open(&si, 0, 0, err, sizeof err);
    CHECK(s != NULL);
    if (!s) return;
    CHECK(source_resumes(s) && !source_live(s) && !source_marks(s));
    CHECK(source_state(s) == SOURCE_READING && source_bound_left(s) == INT64_MAX);
    batch *b = batch_create(4);
    int eof = 0;
    CHECK(source_read(s, b, 2, &eof, err, sizeof err) == 2 && !eof);
    CHECK(source_position(s) == 8);
    source_mark m = { 5, 7, 0 };
    json_t *e = source_save(s, &m);
    CHECK(e != NULL);
    CHECK_STR(json_string_value(json_object_get(e, "source")), "in");
    CHECK_STR(source_entry_label(e), path);
    CHECK(json_integer_value(json_object_get(e, "offset")) == 8 && json_integer_value(json_object_get(e, "line")) == 2);
    CHECK(json_integer_value(json_object_get(e, "watermark")) == 5 && json_is_false(json_object_get(e, "ended")));
    source_close(s);

    s = source_open(&si, 0, 0, err, sizeof err);
    CHECK(s && source_restore(s, e, err, sizeof err) == 0);
    batch_clear(b);
    CHECK(s && source_read(s, b, 4, &eof, err, sizeof err) == 1);
    CHECK(b->n == 1 && b->recs[0].val_len == 5 && memcmp(b->data + b->recs[0].val_off, "three", 5) == 0);
    CHECK(b->n == 1 && b->recs[0].offset == 8);
    batch_clear(b);
    CHECK(s && source_read(s, b, 4, &eof, err, sizeof err) == 0 && eof);
    CHECK(s && source_caught_up(s) && source_ended(s) == 0);
    json_decref(e);
    source_close(s);
    batch_destroy(b);
}

TEST(stdin_is_polled_and_cannot_continue_where_it_stopped)
{
    char err[512] = "";
    char *files[] = { "-" };
    source_info si = file_source(files, SRC_STDIN);
    source *s = source_open(&si, 0, 0, err, sizeof err);
    CHECK(s != NULL);
    if (!s) return;
    CHECK(source_live(s) && !source_resumes(s));
    json_t *e = json_pack("{s:s, s:s, s:I, s:I}", "source", "in", "file", "-", "offset", (json_int_t)4, "line", (json_int_t)1);
    CHECK(source_restore(s, e, err, sizeof err) == -1 && strstr(err, "stdin") != NULL);
    json_decref(e);
    source_close(s);
}

TEST(every_source_kind_is_in_the_table_with_its_callbacks)
{
    source_kind kinds[] = { SRC_FILE, SRC_STDIN, SRC_KAFKA };
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++) {
        const source_ops *o = source_ops_of(kinds[i]);
        CHECK(o != NULL);
        if (!o) continue;
        CHECK(o->kind == kinds[i] && o->name && o->options && o->options[0]);
        CHECK(o->open && o->read && o->position && o->save && o->restore && o->status && o->close);
    }
}

static node sink_node(opt *items, int n) {
    node nd;
    memset(&nd, 0, sizeof nd);
    nd.name = "out";
    nd.opts.items = items;
    nd.opts.n = n;
    return nd;
}

TEST(an_exactly_once_file_sink_prepares_commits_and_aborts_part_files)
{
    char out[256], err[512], hidden[512];
    snprintf(out, sizeof out, "%s/out", dir);
    opt items[] = { { "file", OPT_STRING, out, 0, 0 } };
    node nd = sink_node(items, 1);
    sink_args a = { .nd = &nd, .dir = dir, .task_id = 3, .txn = 1 };
    sink *s = sink_open(&a, err, sizeof err);
    CHECK(s != NULL);
    if (!s) return;
    CHECK(sink_kafka(s) == NULL);
    CHECK(sink_write(s, "x", 1) == 0 && sink_flush(s) == 0);
    CHECK(sink_prepare(s, 1) == 0);
    json_t *parts = json_array();
    sink_prepared(s, parts);
    CHECK(json_array_size(parts) == 1);
    snprintf(hidden, sizeof hidden, "%s/.part-3-1.jsonl.inprogress", out);
    CHECK_STR(json_string_value(json_object_get(json_array_get(parts, 0), "hidden")), hidden);
    CHECK(access(hidden, F_OK) == 0);
    sink_committed(s);
    json_array_clear(parts);
    sink_prepared(s, parts);
    CHECK(json_array_size(parts) == 0);
    CHECK(sink_write(s, "y", 1) == 0 && sink_flush(s) == 0);
    snprintf(hidden, sizeof hidden, "%s/.part-3-2.jsonl.inprogress", out);
    CHECK(access(hidden, F_OK) == 0);
    sink_abort(s);
    CHECK(access(hidden, F_OK) != 0);
    CHECK(sink_records(s) == 2);
    json_decref(parts);
    sink_destroy(s);
}

TEST(a_kafka_sink_without_a_kafka_connection_is_refused_by_name)
{
    char err[512] = "";
    opt items[] = { { "kafka", OPT_STRING, "topic", 0, 0 } };
    node nd = sink_node(items, 1);
    sink_args a = { .nd = &nd, .dir = dir, .task_id = 0 };
    CHECK(sink_open(&a, err, sizeof err) == NULL);
    CHECK(strstr(err, "sink 'out'") != NULL);
}

int main(void)
{
    if (!mkdtemp(dir)) return 1;
    RUN(a_file_source_saved_mid_file_continues_from_its_entry);
    RUN(stdin_is_polled_and_cannot_continue_where_it_stopped);
    RUN(every_source_kind_is_in_the_table_with_its_callbacks);
    RUN(an_exactly_once_file_sink_prepares_commits_and_aborts_part_files);
    RUN(a_kafka_sink_without_a_kafka_connection_is_refused_by_name);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) return 1;
    return TEST_END();
}
