/* config: durations, sizes, and config files written to a temporary folder
 * (defaults, every key, unknown keys, wrong types, relative paths, the
 * sandbox the file runs in). */
#include "test.h"

#include <ftw.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

static char tmp[256];        /* the realpath of the temporary folder */
static char err[512];

/* Writes text to tmp/rel (making its folders); returns the path (static). */
static const char *write_file(const char *rel, const char *text)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tmp, rel);
    for (char *p = path + strlen(tmp) + 1; (p = strchr(p, '/')); p++) {
        *p = '\0';
        mkdir(path, 0755);
        *p = '/';
    }
    FILE *f = fopen(path, "w");
    if (!f)
        return NULL;
    fputs(text, f);
    fclose(f);
    return path;
}

/* Loads text as tmp/app/eddy.conf.lua. */
static config *load(const char *text)
{
    err[0] = '\0';
    return config_load(write_file("app/eddy.conf.lua", text), err, sizeof err);
}

/* Loads text and expects exactly the error `want`. */
static int load_fails_with(const char *text, const char *want)
{
    config *c = load(text);
    config_destroy(c);
    if (c || strcmp(err, want) != 0) {
        printf("  want error: %s\n  got: %s\n", want, c ? "(loaded)" : err);
        return 0;
    }
    return 1;
}

/* Loads text and expects an error containing `part`. */
static int load_fails_containing(const char *text, const char *part)
{
    config *c = load(text);
    config_destroy(c);
    if (c || !strstr(err, part)) {
        printf("  want error containing: %s\n  got: %s\n", part, c ? "(loaded)" : err);
        return 0;
    }
    return 1;
}

static const char *in_tmp(const char *rel)
{
    static char buf[4][512];
    static int i;
    char *b = buf[i++ % 4];
    snprintf(b, sizeof buf[0], "%s/%s", tmp, rel);
    return b;
}

/* ---- durations and sizes ---- */

TEST(duration_accepts_each_unit)
{
    int64_t ms = -1;
    CHECK(config_parse_duration("250ms", &ms) == 0 && ms == 250);
    CHECK(config_parse_duration("5s", &ms) == 0 && ms == 5000);
    CHECK(config_parse_duration("1m", &ms) == 0 && ms == 60000);
    CHECK(config_parse_duration("2h", &ms) == 0 && ms == 7200000);
    CHECK(config_parse_duration("1d", &ms) == 0 && ms == 86400000);
    CHECK(config_parse_duration("0s", &ms) == 0 && ms == 0);
}

TEST(duration_accepts_a_decimal_amount)
{
    int64_t ms = -1;
    CHECK(config_parse_duration("1.5s", &ms) == 0 && ms == 1500);
    CHECK(config_parse_duration("0.1s", &ms) == 0 && ms == 100);
    CHECK(config_parse_duration("1.25m", &ms) == 0 && ms == 75000);
}

TEST(duration_without_unit_is_milliseconds)
{
    int64_t ms = -1;
    CHECK(config_parse_duration("250", &ms) == 0 && ms == 250);
    CHECK(config_parse_duration("0", &ms) == 0 && ms == 0);
}

TEST(duration_rejects_bad_text)
{
    const char *bad[] = { "ten", "5x", "", "-1s", "5 s", " 5s", ".5s", "5.s", "1e3", "5S",
                          "0x10", "5sec", "s", "inf", "99999999999999999999d" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t ms = 42;
        int rc = config_parse_duration(bad[i], &ms);
        if (rc != -1)
            printf("  accepted \"%s\"\n", bad[i]);
        CHECK(rc == -1);
    }
    int64_t ms;
    CHECK(config_parse_duration(NULL, &ms) == -1);
}

TEST(size_accepts_each_unit)
{
    int64_t b = -1;
    CHECK(config_parse_size("64KB", &b) == 0 && b == 64 * 1024);
    CHECK(config_parse_size("64MB", &b) == 0 && b == 64LL * 1024 * 1024);
    CHECK(config_parse_size("1GB", &b) == 0 && b == 1024LL * 1024 * 1024);
    CHECK(config_parse_size("2TB", &b) == 0 && b == 2LL << 40);
    CHECK(config_parse_size("10B", &b) == 0 && b == 10);
    CHECK(config_parse_size("1K", &b) == 0 && b == 1024);
    CHECK(config_parse_size("3M", &b) == 0 && b == 3LL << 20);
    CHECK(config_parse_size("1G", &b) == 0 && b == 1LL << 30);
    CHECK(config_parse_size("64mb", &b) == 0 && b == 64LL << 20);
    CHECK(config_parse_size("1.5GB", &b) == 0 && b == 3LL << 29);
}

TEST(size_without_unit_is_bytes)
{
    int64_t b = -1;
    CHECK(config_parse_size("4096", &b) == 0 && b == 4096);
    CHECK(config_parse_size("0", &b) == 0 && b == 0);
}

TEST(size_rejects_bad_text)
{
    const char *bad[] = { "lots", "64XB", "", "-1MB", "64 MB", "MB", "1.MB", "64MiB", "1PB",
                          "99999999999TB" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t b = 42;
        int rc = config_parse_size(bad[i], &b);
        if (rc != -1)
            printf("  accepted \"%s\"\n", bad[i]);
        CHECK(rc == -1);
    }
}

/* ---- config files ---- */

TEST(full_config_sets_every_key)
{
    config *c = load(
        "return {\n"
        "  name = \"wordcount\",\n"
        "  pipeline = \"pipeline.lua\",\n"
        "  threads = 2,\n"
        "  parallelism = 4,\n"
        "  max_parallelism = 256,\n"
        "  guarantee = \"exactly_once\",\n"
        "  state = { dir = \"state/wc\", cache = \"32MB\" },\n"
        "  checkpoint = { interval = \"5s\", retain = 5 },\n"
        "  sources = { words = { topic = \"words\", start = \"earliest\", partitions = 4, follow = true } },\n"
        "  sinks   = { counts = { file = \"out\" } },\n"
        "  admin  = { listen = \"0.0.0.0:0\" },\n"
        "  reload = { watch = false },\n"
        "  on_error = \"dead_letter\",\n"
        "  dead_letter = { file = \"dl/dead.jsonl\" },\n"
        "  limits = { memory = \"128MB\", instructions = 5000, time = \"250ms\" },\n"
        "  log = { level = \"debug\", format = \"json\" },\n"
        "  sandbox = { ffi = true, os = true },\n"
        "  tuning = { batch = 512, channel = 4 },\n"
        "}\n");
    CHECK(c != NULL);
    if (!c) {
        printf("  %s\n", err);
        return;
    }
    CHECK_STR(c->path, in_tmp("app/eddy.conf.lua"));
    CHECK_STR(c->dir, in_tmp("app"));
    CHECK_STR(c->name, "wordcount");
    CHECK_STR(c->pipeline, in_tmp("app/pipeline.lua"));
    CHECK(c->threads == 2);
    CHECK(c->parallelism == 4);
    CHECK(c->max_parallelism == 256);
    CHECK(c->guarantee == GUARANTEE_EXACTLY_ONCE);
    CHECK_STR(c->state_dir, in_tmp("app/state/wc"));
    CHECK(c->state_cache == 32LL << 20);
    CHECK(c->checkpoint_interval_ms == 5000);
    CHECK(c->checkpoint_retain == 5);
    CHECK(c->nsources == 1 && c->nsinks == 1);
    const opt_group *g = config_source(c, "words");
    CHECK(g != NULL && g->opts.n == 4);
    if (g) {
        const opt *o = opt_find(&g->opts, "topic");
        CHECK(o && o->type == OPT_STRING && strcmp(o->s, "words") == 0);
        o = opt_find(&g->opts, "partitions");
        CHECK(o && o->type == OPT_NUMBER && o->n == 4 && strcmp(o->s, "4") == 0);
        o = opt_find(&g->opts, "follow");
        CHECK(o && o->type == OPT_BOOL && o->b == 1 && strcmp(o->s, "true") == 0);
        CHECK(opt_find(&g->opts, "nope") == NULL);
    }
    CHECK(config_source(c, "counts") == NULL);
    g = config_sink(c, "counts");
    CHECK(g != NULL);
    if (g)
        CHECK_STR(opt_find(&g->opts, "file")->s, in_tmp("app/out"));
    CHECK(c->admin_enabled == 1);
    CHECK_STR(c->admin_listen, "0.0.0.0:0");
    CHECK(c->reload_watch == 0);
    CHECK(c->on_error == ON_ERROR_DEAD_LETTER);
    CHECK_STR(c->dead_letter_file, in_tmp("app/dl/dead.jsonl"));
    CHECK(c->dead_letter_kafka == NULL);
    CHECK(c->limit_memory == 128LL << 20);
    CHECK(c->limit_instructions == 5000);
    CHECK(c->limit_time_ms == 250);
    CHECK(c->log_level == LOG_DEBUG);
    CHECK(c->log_format == LOGFMT_JSON);
    CHECK(c->sandbox_ffi == 1 && c->sandbox_os == 1);
    CHECK(c->batch_size == 512);
    CHECK(c->channel_capacity == 4);
    CHECK(c->kafka.n == 0 && c->kafka_embedded == 0);
    config_destroy(c);
}

TEST(minimal_config_gets_every_default)
{
    config *c = load("return { pipeline = \"pipeline.lua\" }");
    CHECK(c != NULL);
    if (!c) {
        printf("  %s\n", err);
        return;
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    CHECK_STR(c->name, "app");                 /* eddy.conf.lua: the folder's name */
    CHECK(c->threads == (int)cores);
    CHECK(c->parallelism == (cores < 128 ? (int)cores : 128));
    CHECK(c->max_parallelism == 128);
    CHECK(c->guarantee == GUARANTEE_AT_LEAST_ONCE);
    CHECK_STR(c->state_dir, in_tmp("app/state/app"));
    CHECK(c->state_cache == 64LL << 20);
    CHECK(c->checkpoint_interval_ms == 10000);
    CHECK(c->checkpoint_retain == 3);
    CHECK(c->kafka.n == 0 && c->kafka_embedded == 0 && c->kafka_embedded_topics.n == 0);
    CHECK(c->nsources == 0 && c->nsinks == 0);
    CHECK(c->admin_enabled == 1);
    CHECK_STR(c->admin_listen, "127.0.0.1:8600");
    CHECK(c->reload_watch == 1);
    CHECK(c->reload_probation_ms == 0 && c->reload_error_rate_set == 0 && c->reload_hold_commits == 0);
    CHECK(c->on_error == ON_ERROR_FAIL);
    CHECK_STR(c->dead_letter_file, in_tmp("app/state/app/dead-letter.jsonl"));
    CHECK(c->dead_letter_kafka == NULL);
    CHECK(c->limit_memory == 256LL << 20);
    CHECK(c->limit_instructions == 10000000);
    CHECK(c->limit_time_ms == 1000);
    CHECK(c->log_level == LOG_INFO);
    CHECK(c->log_format == LOGFMT_TEXT);
    CHECK(c->sandbox_ffi == 0 && c->sandbox_os == 0);
    CHECK(c->batch_size == 1024);
    CHECK(c->channel_capacity == 8);
    config_destroy(c);
}

TEST(reload_probation_keys)
{
    config *c = load("return { pipeline = 'p.lua', guarantee = 'exactly_once', reload = { probation = '2m', "
                     "max_error_rate = 0.01, hold_commits = true } }");
    CHECK(c != NULL);
    if (!c) { printf("  %s\n", err); return; }
    CHECK(c->reload_probation_ms == 120000);
    CHECK(c->reload_error_rate_set == 1 && c->reload_max_error_rate == 0.01);
    CHECK(c->reload_hold_commits == 1);
    config_destroy(c);
    c = load("return { pipeline = 'p.lua', reload = { probation = 500, max_error_rate = '2.5%' } }");
    CHECK(c != NULL && c->reload_probation_ms == 500 && c->reload_max_error_rate == 0.025);
    config_destroy(c);
    c = load("return { pipeline = 'p.lua', reload = { probation = '1m', max_error_rate = 0 } }");
    CHECK(c != NULL && c->reload_error_rate_set == 1 && c->reload_max_error_rate == 0);
    config_destroy(c);
    CHECK(load_fails_containing("return { pipeline = 'p.lua', reload = { probation = '1m', max_error_rate = 1.5 } }",
                                "reload.max_error_rate: expected a fraction of the records from 0 to 1"));
    CHECK(load_fails_containing("return { pipeline = 'p.lua', reload = { probation = '1m', max_error_rate = '5' } }",
                                "reload.max_error_rate: expected a fraction"));
    CHECK(load_fails_containing("return { pipeline = 'p.lua', reload = { max_error_rate = 0.1 } }",
                                "reload.max_error_rate: it is watched during reload.probation, which is 0 (off)"));
    CHECK(load_fails_containing("return { pipeline = 'p.lua', reload = { probation = '1m', hold_commits = true } }",
                                "reload.hold_commits: only under guarantee = \"exactly_once\""));
    CHECK(load_fails_containing("return { pipeline = 'p.lua', guarantee = 'exactly_once', reload = { "
                                "probation = '2h', hold_commits = true } }", "at most 1h"));
}

TEST(default_name_is_file_name_up_to_first_dot)
{
    config *c = config_load(write_file("app/prod.conf.lua", "return { pipeline = 'p.lua' }"),
                            err, sizeof err);
    CHECK(c && strcmp(c->name, "prod") == 0);
    config_destroy(c);
    c = config_load(write_file("app/staging.lua", "return { pipeline = 'p.lua' }"), err, sizeof err);
    CHECK(c && strcmp(c->name, "staging") == 0);
    config_destroy(c);
}

TEST(default_name_of_generic_file_is_folder_name)
{
    config *c = config_load(write_file("word count/eddy.conf.lua", "return { pipeline = 'p.lua' }"),
                            err, sizeof err);
    CHECK(c != NULL);
    if (c)
        CHECK_STR(c->name, "word-count");     /* a space cannot be in a topic name */
    config_destroy(c);
    c = config_load(write_file("wordcount/config.lua", "return { pipeline = 'p.lua' }"), err, sizeof err);
    CHECK(c && strcmp(c->name, "wordcount") == 0);
    config_destroy(c);
}

TEST(explicit_name_must_suit_a_topic_name)
{
    CHECK(load_fails_with("return { pipeline = 'p.lua', name = 'my app' }",
                          "name: expected up to 128 letters, digits, '.', '_' or '-' (it names Kafka "
                          "topics and the state folder), got \"my app\""));
    CHECK(load_fails_with("return { pipeline = 'p.lua', name = '' }",
                          "name: expected a non-empty string, got \"\""));
}

TEST(missing_pipeline_is_an_error)
{
    CHECK(load_fails_containing("return { name = 'x' }", "pipeline: missing"));
}

TEST(unknown_top_level_key_is_an_error)
{
    CHECK(load_fails_with("return { pipeline = 'p.lua', colour = 'blue' }", "colour: unknown key"));
    CHECK(load_fails_with("return { pipeline = 'p.lua', thread = 2 }",
                          "thread: unknown key (did you mean threads?)"));
    CHECK(load_fails_with("return { 'p.lua' }", "[1]: unknown key"));
}

TEST(unknown_nested_key_names_its_full_path)
{
    CHECK(load_fails_with("return { pipeline = 'p.lua', checkpoint = { intervall = '5s' } }",
                          "checkpoint.intervall: unknown key (did you mean checkpoint.interval?)"));
    const char *sections[] = { "state", "checkpoint", "admin", "reload", "dead_letter", "limits",
                               "log", "sandbox", "tuning" };
    for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++) {
        char text[256], want[128];
        snprintf(text, sizeof text, "return { pipeline = 'p.lua', %s = { zzz = 1 } }", sections[i]);
        snprintf(want, sizeof want, "%s.zzz: unknown key", sections[i]);
        CHECK(load_fails_with(text, want));
    }
    CHECK(load_fails_with("return { pipeline = 'p.lua', kafka = { embedded = { broker = 2 } } }",
                          "kafka.embedded.broker: unknown key (did you mean kafka.embedded.brokers?)"));
}

TEST(unknown_key_error_does_not_depend_on_table_order)
{
    CHECK(load_fails_with("return { pipeline = 'p.lua', zeta = 1, alpha = 2, mid = 3, "
                          "log = { b = 1 } }", "alpha: unknown key"));
}

TEST(wrong_types_name_key_and_value)
{
    CHECK(load_fails_with("return { pipeline = 'p.lua', threads = 'two' }",
                          "threads: expected an integer, got string \"two\""));
    CHECK(load_fails_with("return { pipeline = 'p.lua', threads = 3.5 }",
                          "threads: expected an integer, got 3.5"));
    CHECK(load_fails_with("return { pipeline = 'p.lua', threads = 0 }",
                          "threads: expected an integer from 1 to 1024, got 0"));
    CHECK(load_fails_with("return { pipeline = 42 }",
                          "pipeline: expected a non-empty string, got number 42"));
    CHECK(load_fails_with("return { pipeline = 'p.lua', reload = { watch = 'yes' } }",
                          "reload.watch: expected true or false, got string \"yes\""));
    CHECK(load_fails_with("return { pipeline = 'p.lua', checkpoint = 5 }",
                          "checkpoint: expected a table, got number 5"));
    CHECK(load_fails_with("return { pipeline = 'p.lua', admin = true }",
                          "admin: expected a table or false, got boolean true"));
    CHECK(load_fails_with("return { pipeline = 'p.lua', limits = { instructions = 10 } }",
                          "limits.instructions: expected an integer of at least 1000, got 10"));
    CHECK(load_fails_with("return { pipeline = 'p.lua', tuning = { batch = 100000 } }",
                          "tuning.batch: expected an integer from 1 to 65536, got 100000"));
    CHECK(load_fails_with("return { pipeline = 'p.lua', log = { level = {} } }",
                          "log.level: expected \"debug\", \"info\", \"warn\" or \"error\", got a table"));
}

TEST(bad_duration_names_key_and_value)
{
    CHECK(load_fails_with("return { pipeline = 'p.lua', checkpoint = { interval = \"ten\" } }",
                          "checkpoint.interval: expected a duration like \"10s\", got \"ten\""));
    CHECK(load_fails_with("return { pipeline = 'p.lua', limits = { time = true } }",
                          "limits.time: expected a duration like \"10s\", got boolean true"));
    CHECK(load_fails_with("return { pipeline = 'p.lua', checkpoint = { interval = -5 } }",
                          "checkpoint.interval: expected a duration like \"10s\", got -5"));
    CHECK(load_fails_with("return { pipeline = 'p.lua', checkpoint = { interval = '0s' } }",
                          "checkpoint.interval: expected a duration of at least 1ms, got \"0s\""));
}

TEST(duration_and_size_keys_take_numbers_too)
{
    config *c = load("return { pipeline = 'p.lua', checkpoint = { interval = 2500 }, "
                     "state = { cache = 1048576 }, limits = { memory = 0 } }");
    CHECK(c && c->checkpoint_interval_ms == 2500 && c->state_cache == 1048576 && c->limit_memory == 0);
    config_destroy(c);
}

TEST(bad_size_names_key_and_value)
{
    CHECK(load_fails_with("return { pipeline = 'p.lua', state = { cache = 'lots' } }",
                          "state.cache: expected a size like \"64MB\", got \"lots\""));
    CHECK(load_fails_with("return { pipeline = 'p.lua', limits = { memory = 1.5 } }",
                          "limits.memory: expected a size like \"64MB\", got 1.5"));
    CHECK(load_fails_with("return { pipeline = 'p.lua', limits = { memory = '10KB' } }",
                          "limits.memory: expected 0 (no limit) or at least \"1MB\", got 10240 bytes"));
}

TEST(bad_enum_lists_the_choices)
{
    CHECK(load_fails_with("return { pipeline = 'p.lua', guarantee = 'maybe' }",
                          "guarantee: expected \"at_least_once\" or \"exactly_once\", got \"maybe\""));
    CHECK(load_fails_with("return { pipeline = 'p.lua', on_error = 'ignore' }",
                          "on_error: expected \"fail\", \"skip\" or \"dead_letter\", got \"ignore\""));
    CHECK(load_fails_with("return { pipeline = 'p.lua', log = { format = 'xml' } }",
                          "log.format: expected \"text\" or \"json\", got \"xml\""));
}

TEST(parallelism_above_max_parallelism_is_an_error)
{
    CHECK(load_fails_containing("return { pipeline = 'p.lua', parallelism = 200 }",
                                "parallelism: 200 is more than max_parallelism (128)"));
    CHECK(load_fails_with("return { pipeline = 'p.lua', max_parallelism = 40000 }",
                          "max_parallelism: expected an integer from 1 to 32768, got 40000"));
    config *c = load("return { pipeline = 'p.lua', threads = 8, max_parallelism = 4 }");
    CHECK(c && c->parallelism == 4);           /* the default is capped too */
    config_destroy(c);
}

TEST(relative_paths_resolve_against_config_folder)
{
    char cwd[512];
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    write_file("rel/sub/eddy.conf.lua",
               "return { pipeline = './jobs/p.lua', state = { dir = '/var/lib/eddy' },\n"
               "         dead_letter = { file = 'dl.jsonl' },\n"
               "         sources = { logs = { file = 'in/*.log', dir = '/abs' } } }");
    CHECK(chdir(in_tmp("rel")) == 0);          /* load by a relative path from another folder */
    config *c = config_load("sub/eddy.conf.lua", err, sizeof err);
    CHECK(chdir(cwd) == 0);
    CHECK(c != NULL);
    if (!c) {
        printf("  %s\n", err);
        return;
    }
    CHECK_STR(c->path, in_tmp("rel/sub/eddy.conf.lua"));
    CHECK_STR(c->dir, in_tmp("rel/sub"));
    CHECK_STR(c->pipeline, in_tmp("rel/sub/jobs/p.lua"));
    CHECK_STR(c->state_dir, "/var/lib/eddy");
    CHECK_STR(c->dead_letter_file, in_tmp("rel/sub/dl.jsonl"));
    const opt_group *g = config_source(c, "logs");
    CHECK(g != NULL);
    if (g) {
        CHECK_STR(opt_find(&g->opts, "file")->s, in_tmp("rel/sub/in/*.log"));
        CHECK_STR(opt_find(&g->opts, "dir")->s, "/abs");
    }
    config_destroy(c);
}

TEST(syntax_error_names_file_and_line)
{
    config *c = load("return {\n  pipeline = 'p.lua'\n  threads = 2,\n}\n");
    CHECK(c == NULL);
    config_destroy(c);
    CHECK(strstr(err, "eddy.conf.lua:3:") != NULL);
    if (!strstr(err, "eddy.conf.lua:3:"))
        printf("  got: %s\n", err);
}

TEST(runtime_error_names_file_and_line)
{
    CHECK(load_fails_containing("local x = 1\nerror('boom')\nreturn {}", "eddy.conf.lua:2: boom"));
}

TEST(config_must_return_a_table)
{
    CHECK(load_fails_containing("return 5", "must return a table"));
    CHECK(load_fails_containing("local t = { pipeline = 'p.lua' }", "it returned nil"));
}

TEST(missing_config_file_is_an_error)
{
    config *c = config_load(in_tmp("nope/eddy.conf.lua"), err, sizeof err);
    CHECK(c == NULL);
    CHECK(strstr(err, "nope/eddy.conf.lua") && strstr(err, "No such file"));
}

TEST(sandbox_denies_os_execute_io_and_require)
{
    CHECK(load_fails_containing("os.execute('touch /tmp/eddy-pwned')\nreturn { pipeline = 'p.lua' }",
                                "eddy.conf.lua:1: os.execute is not available in a config file"));
    CHECK(load_fails_containing("local f = io.open('/etc/passwd')\nreturn { pipeline = 'p.lua' }",
                                "eddy.conf.lua:1: io is not available in a config file"));
    CHECK(load_fails_containing("\nlocal m = require('os')\nreturn { pipeline = 'p.lua' }",
                                "eddy.conf.lua:2: require is not available in a config file"));
    CHECK(load_fails_containing("return { pipeline = loadstring('return 1') }", "loadstring is not available"));
    CHECK(load_fails_containing("return { pipeline = dofile('x') }", "dofile is not available"));
    CHECK(load_fails_containing("os.exit(1)", "os.exit is not available"));
}

TEST(sandbox_allows_getenv_and_the_listed_libraries)
{
    setenv("EDDY_TEST_PIPELINE", "from-env.lua", 1);
    config *c = load("local t = {}\n"
                     "for _, w in ipairs({ 'a', 'b' }) do t[#t + 1] = string.upper(w) end\n"
                     "assert(table.concat(t) == 'AB' and math.floor(2.5) == 2 and type(os.time()) == 'number')\n"
                     "assert(pcall(error, 'x') == false and select('#', unpack({ 1, 2 })) == 2)\n"
                     "return { pipeline = os.getenv('EDDY_TEST_PIPELINE'),\n"
                     "         threads = tonumber('3'), name = 'n' .. tostring(os.date('!%Y') ~= nil) }");
    CHECK(c != NULL);
    if (!c) {
        printf("  %s\n", err);
        return;
    }
    CHECK_STR(c->pipeline, in_tmp("app/from-env.lua"));
    CHECK(c->threads == 3);
    CHECK_STR(c->name, "ntrue");
    config_destroy(c);
}

TEST(endless_loop_in_config_is_stopped)
{
    CHECK(load_fails_containing("while true do end", "endless loop"));
}

TEST(source_option_that_is_a_table_is_an_error)
{
    CHECK(load_fails_with("return { pipeline = 'p.lua', sources = { words = { topic = { 'a' } } } }",
                          "sources.words.topic: expected a string, number or boolean, got a table"));
    CHECK(load_fails_with("return { pipeline = 'p.lua', sinks = { out = 'stdout' } }",
                          "sinks.out: expected a table of options, got string \"stdout\""));
    CHECK(load_fails_with("return { pipeline = 'p.lua', sources = 'words' }",
                          "sources: expected a table of name = { options }, got string \"words\""));
}

TEST(kafka_properties_pass_through)
{
    config *c = load("return { pipeline = 'p.lua', kafka = { ['bootstrap.servers'] = '127.0.0.1:9092',\n"
                     "  ['queue.buffering.max.ms'] = 5, ['enable.idempotence'] = true } }");
    CHECK(c != NULL);
    if (!c) {
        printf("  %s\n", err);
        return;
    }
    CHECK(c->kafka.n == 3 && c->kafka_embedded == 0);
    const opt *o = opt_find(&c->kafka, "bootstrap.servers");
    CHECK(o && strcmp(o->s, "127.0.0.1:9092") == 0);
    o = opt_find(&c->kafka, "queue.buffering.max.ms");
    CHECK(o && o->type == OPT_NUMBER && strcmp(o->s, "5") == 0);
    o = opt_find(&c->kafka, "enable.idempotence");
    CHECK(o && o->type == OPT_BOOL && strcmp(o->s, "true") == 0);
    CHECK(strcmp(c->kafka.items[0].key, "bootstrap.servers") == 0);   /* sorted */
    config_destroy(c);
    CHECK(load_fails_with("return { pipeline = 'p.lua', kafka = { ['sasl.x'] = {} } }",
                          "kafka[\"sasl.x\"]: expected a string, number or boolean, got a table"));
}

TEST(kafka_embedded_sets_brokers_and_topics)
{
    config *c = load("return { pipeline = 'p.lua', kafka = { embedded = { brokers = 3, "
                     "topics = { words = 4, counts = 1 } } } }");
    CHECK(c != NULL);
    if (!c) {
        printf("  %s\n", err);
        return;
    }
    CHECK(c->kafka_embedded == 1 && c->kafka_embedded_brokers == 3 && c->kafka.n == 0);
    CHECK(c->kafka_embedded_topics.n == 2);
    const opt *o = opt_find(&c->kafka_embedded_topics, "words");
    CHECK(o && o->type == OPT_NUMBER && o->n == 4);
    config_destroy(c);

    c = load("return { pipeline = 'p.lua', kafka = { embedded = {} } }");
    CHECK(c && c->kafka_embedded == 1 && c->kafka_embedded_brokers == 1);
    config_destroy(c);
    CHECK(load_fails_with("return { pipeline = 'p.lua', kafka = { embedded = { topics = { words = 0 } } } }",
                          "kafka.embedded.topics.words: expected an integer from 1 to 4096, got 0"));
    CHECK(load_fails_containing("return { pipeline = 'p.lua', kafka = { embedded = {}, "
                                "['bootstrap.servers'] = 'x:1' } }", "kafka.embedded: remove"));
}

TEST(admin_false_turns_admin_off)
{
    config *c = load("return { pipeline = 'p.lua', admin = false }");
    CHECK(c && c->admin_enabled == 0);
    config_destroy(c);
    CHECK(load_fails_with("return { pipeline = 'p.lua', admin = { listen = 'localhost' } }",
                          "admin.listen: expected \"host:port\" like \"127.0.0.1:8600\", got \"localhost\""));
    CHECK(load_fails_containing("return { pipeline = 'p.lua', admin = { listen = 'h:70000' } }",
                                "admin.listen: expected"));
}

TEST(dead_letter_to_kafka)
{
    config *c = load("return { pipeline = 'p.lua', on_error = 'dead_letter', dead_letter = { kafka = 'dlq' } }");
    CHECK(c && strcmp(c->dead_letter_kafka, "dlq") == 0 && c->dead_letter_file != NULL);
    config_destroy(c);
    CHECK(load_fails_with("return { pipeline = 'p.lua', dead_letter = { kafka = 'dlq', file = 'x' } }",
                          "dead_letter: set either file or kafka, not both"));
}

TEST(default_for_pipeline_uses_script_name_and_folder)
{
    write_file("scripts/wordcount.lua", "return nil");
    config *c = config_default_for_pipeline(in_tmp("scripts/wordcount.lua"), err, sizeof err);
    CHECK(c != NULL);
    if (!c) {
        printf("  %s\n", err);
        return;
    }
    CHECK(c->path == NULL);
    CHECK_STR(c->pipeline, in_tmp("scripts/wordcount.lua"));
    CHECK_STR(c->dir, in_tmp("scripts"));
    CHECK_STR(c->name, "wordcount");
    CHECK_STR(c->state_dir, in_tmp("scripts/state/wordcount"));
    CHECK(c->checkpoint_interval_ms == 10000 && c->max_parallelism == 128 && c->admin_enabled == 1);
    CHECK(c->threads >= 1 && c->parallelism >= 1 && c->batch_size == 1024);
    config_destroy(c);
    CHECK(config_default_for_pipeline(in_tmp("scripts/none.lua"), err, sizeof err) == NULL);
    CHECK(strstr(err, "none.lua") != NULL);
}

TEST(destroy_null_is_a_noop)
{
    config_destroy(NULL);
    CHECK(opt_find(NULL, "x") == NULL);
    CHECK(config_source(NULL, "x") == NULL);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

int main(void)
{
    char made[] = "/tmp/eddy-test-config-XXXXXX";
    if (!mkdtemp(made) || !realpath(made, tmp)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(duration_accepts_each_unit);
    RUN(duration_accepts_a_decimal_amount);
    RUN(duration_without_unit_is_milliseconds);
    RUN(duration_rejects_bad_text);
    RUN(size_accepts_each_unit);
    RUN(size_without_unit_is_bytes);
    RUN(size_rejects_bad_text);
    RUN(full_config_sets_every_key);
    RUN(minimal_config_gets_every_default);
    RUN(default_name_is_file_name_up_to_first_dot);
    RUN(default_name_of_generic_file_is_folder_name);
    RUN(explicit_name_must_suit_a_topic_name);
    RUN(missing_pipeline_is_an_error);
    RUN(unknown_top_level_key_is_an_error);
    RUN(unknown_nested_key_names_its_full_path);
    RUN(unknown_key_error_does_not_depend_on_table_order);
    RUN(wrong_types_name_key_and_value);
    RUN(bad_duration_names_key_and_value);
    RUN(duration_and_size_keys_take_numbers_too);
    RUN(bad_size_names_key_and_value);
    RUN(bad_enum_lists_the_choices);
    RUN(parallelism_above_max_parallelism_is_an_error);
    RUN(relative_paths_resolve_against_config_folder);
    RUN(syntax_error_names_file_and_line);
    RUN(runtime_error_names_file_and_line);
    RUN(config_must_return_a_table);
    RUN(missing_config_file_is_an_error);
    RUN(sandbox_denies_os_execute_io_and_require);
    RUN(sandbox_allows_getenv_and_the_listed_libraries);
    RUN(endless_loop_in_config_is_stopped);
    RUN(source_option_that_is_a_table_is_an_error);
    RUN(kafka_properties_pass_through);
    RUN(kafka_embedded_sets_brokers_and_topics);
    RUN(admin_false_turns_admin_off);
    RUN(dead_letter_to_kafka);
    RUN(default_for_pipeline_uses_script_name_and_folder);
    RUN(destroy_null_is_a_noop);
    RUN(reload_probation_keys);
    nftw(tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return TEST_END();
}
