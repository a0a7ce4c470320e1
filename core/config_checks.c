/* config_checks — see config_internal.h: the checks of single values (name,
 * admin.listen, admin.token, limits.memory) and config_finish, which fills
 * the defaults that depend on other keys (name, threads, parallelism,
 * state.dir, dead_letter.file) and checks the rules that tie keys together.
 * Calls: config_value.c (config_quote), config_options.c (opt_find). */
#include "config_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- checks ------------------------------------------------------------------ */

static int name_char_ok(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')
           || ch == '.' || ch == '_' || ch == '-';
}

/* The name prefixes Kafka topics (<name>-<uid>-changelog) and is a folder
 * under state/, so it keeps to what a topic name may hold. */
int config_check_name(config *c, const key *k, char *err, size_t n)
{
    char q[96];
    const char *s = c->name;
    int ok = strlen(s) <= MAX_NAME && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
    for (const char *p = s; ok && *p; p++)
        ok = name_char_ok(*p);
    if (ok)
        return 0;
    config_quote(q, sizeof q, s, strlen(s));
    return fail(err, n, "%s: expected up to %d letters, digits, '.', '_' or '-' (it names Kafka "
                "topics and the state folder), got %s", k->path, MAX_NAME, q);
}

/* A bearer token: at least 16 characters a header can carry (no spaces). */
int config_check_token(config *c, const key *k, char *err, size_t n)
{
    const char *s = c->admin_token;
    size_t len = strlen(s);
    int ok = len >= 16 && len <= 512;
    for (const char *p = s; ok && *p; p++)
        ok = *p > ' ' && *p < 127;
    if (ok)
        return 0;
    return fail(err, n, "%s: expected 16 to 512 printable characters without spaces (a secret the "
                "admin clients send as \"Authorization: Bearer <token>\"), got %zu characters", k->path, len);
}

/* "host:port", "[::1]:port"; port 0..65535 (0 picks a free one). */
int config_check_listen(config *c, const key *k, char *err, size_t n)
{
    char q[96];
    const char *s = c->admin_listen, *colon = strrchr(s, ':');
    char *end = NULL;
    long port = -1;
    if (colon && colon > s && colon[1]) {
        errno = 0;
        port = strtol(colon + 1, &end, 10);
        if (errno || *end || colon[1] < '0' || colon[1] > '9')
            port = -1;
    }
    if (port >= 0 && port <= 65535)
        return 0;
    config_quote(q, sizeof q, s, strlen(s));
    return fail(err, n, "%s: expected \"host:port\" like \"127.0.0.1:8600\", got %s", k->path, q);
}

int config_check_memory(config *c, const key *k, char *err, size_t n)
{
    if (c->limit_memory == 0 || c->limit_memory >= 1048576)
        return 0;
    return fail(err, n, "%s: expected 0 (no limit) or at least \"1MB\", got %lld bytes", k->path,
                (long long)c->limit_memory);
}

/* reload.probation / max_error_rate / hold_commits (automatic rollback,
 * probation.c): the rules that tie them together and to guarantee. */
static int config_check_probation(config *c, char *err, size_t n)
{
    if (c->reload_error_rate_set && c->reload_probation_ms == 0)
        return fail(err, n, "reload.max_error_rate: it is watched during reload.probation, which is 0 (off): set "
                    "reload.probation = \"2m\" too");
    if (c->reload_hold_commits && c->reload_probation_ms == 0)
        return fail(err, n, "reload.hold_commits: commits are held during reload.probation, which is 0 (off): set "
                    "reload.probation = \"2m\" too");
    if (c->reload_hold_commits && c->guarantee != GUARANTEE_EXACTLY_ONCE)
        return fail(err, n, "reload.hold_commits: only under guarantee = \"exactly_once\" are there commits to "
                    "hold (at_least_once writes at once); set guarantee = \"exactly_once\" or remove it");
    if (c->reload_hold_commits && c->reload_probation_ms > 3600 * 1000)
        return fail(err, n, "reload.hold_commits: a probation of %.0f s holds every output that long; at most 1h",
                    c->reload_probation_ms / 1000.0);
    return 0;
}

/* ---- defaults that depend on other keys ----------------------------------------- */

/* A default name from a file name: characters a topic name cannot hold
 * become '-'.  Owned, or NULL. */
char *config_name_from(const char *s, size_t len)
{
    if (len == 0)
        return NULL;
    if (len > MAX_NAME)
        len = MAX_NAME;
    char *out = strndup(s, len);
    for (char *p = out; p && *p; p++)
        if (!name_char_ok(*p))
            *p = '-';
    return out;
}

/* The default name of a config at `path` (absolute): its file name up to
 * the first '.' ("prod.conf.lua" -> "prod"), unless that names no app at all
 * ("eddy", "config": "examples/wordcount/eddy.conf.lua" -> "wordcount"); then,
 * or when the file name starts with '.', its folder's name.  Two configs
 * side by side ("prod.conf.lua", "staging.conf.lua") so get two names. */
static char *default_name(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t stem = strcspn(base, ".");
    int generic = stem == 0 || (stem == 4 && strncmp(base, "eddy", 4) == 0)
                  || (stem == 6 && strncmp(base, "config", 6) == 0);
    if (generic && base - path > 1) {           /* a folder other than "/" */
        const char *end = base - 1, *start = end;
        while (start > path && start[-1] != '/')
            start--;
        return config_name_from(start, (size_t)(end - start));
    }
    return config_name_from(base, stem ? stem : strlen(base));
}

static int online_cores(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : (int)n;
}

/* Fills the defaults no SCHEMA entry can name alone, and checks the rules
 * that tie keys together. */
int config_finish(config *c, char *err, size_t n)
{
    if (!c->pipeline)
        return fail(err, n, "pipeline: missing; set pipeline = \"pipeline.lua\" "
                    "(the script's path, relative to the config file)");
    struct stat pst;
    if (stat(c->pipeline, &pst) == 0 && S_ISDIR(pst.st_mode))
        return fail(err, n, "pipeline: %s is a folder; name the pipeline script in it "
                    "(e.g. pipeline = \"pipeline.lua\")", c->pipeline);
    if (!c->name && !(c->name = default_name(c->path ? c->path : c->pipeline)))
        return fail(err, n, "name: missing; set name = \"my-app\"");
    if (!c->threads)
        c->threads = online_cores();
    if (!c->parallelism)
        c->parallelism = c->threads < c->max_parallelism ? c->threads : c->max_parallelism;
    else if (c->parallelism > c->max_parallelism)
        return fail(err, n, "parallelism: %d is more than max_parallelism (%d); lower parallelism "
                    "or raise max_parallelism", c->parallelism, c->max_parallelism);
    if (!c->state_dir && asprintf(&c->state_dir, "%s/state/%s", c->dir, c->name) < 0) {
        c->state_dir = NULL;
        return fail(err, n, "out of memory");
    }
    if (c->dead_letter_file && c->dead_letter_kafka)
        return fail(err, n, "dead_letter: set either file or kafka, not both");
    /* Always set, so a consumer has somewhere to write; dead_letter_kafka,
     * when set, takes precedence. */
    if (!c->dead_letter_file
        && asprintf(&c->dead_letter_file, "%s/dead-letter.jsonl", c->state_dir) < 0) {
        c->dead_letter_file = NULL;
        return fail(err, n, "out of memory");
    }
    if (c->kafka_embedded && opt_find(&c->kafka, "bootstrap.servers"))
        return fail(err, n, "kafka.embedded: remove kafka[\"bootstrap.servers\"]; the embedded "
                    "cluster provides it");
    if (c->shuffle == SHUFFLE_KAFKA && c->kafka_embedded)
        return fail(err, n, "shuffle: \"kafka\" needs a real Kafka broker: the embedded one (kafka.embedded) "
                    "shows aborted transactions to read_committed readers and keeps only ~5 MB a partition, so "
                    "it cannot carry state between instances; set kafka[\"bootstrap.servers\"] instead");
    if (c->shuffle == SHUFFLE_KAFKA && !opt_find(&c->kafka, "bootstrap.servers"))
        return fail(err, n, "shuffle: \"kafka\" sends every key_by through Kafka: set "
                    "kafka[\"bootstrap.servers\"] (the brokers of the instances' group)");
    if (config_check_probation(c, err, n) < 0)
        return -1;
    if (c->standby > 0 && c->shuffle != SHUFFLE_KAFKA)
        return fail(err, n, "standby: %d warm copies live on other instances: it needs shuffle = \"kafka\"",
                    c->standby);
    return 0;
}
