/* main — the command line: run, check, version, help (and the subcommands
 * later parts of eddy add).  Exit codes: 0 success, 1 runtime failure, 2
 * usage, configuration or pipeline-script error. */
#include "canary.h"
#include "client.h"
#include "daemon.h"
#include "kafka_mock.h"
#include "testing.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EDDY_VERSION "0.1.0"

static void usage(FILE *out) {
    fprintf(out,
        "eddy " EDDY_VERSION " — a stream processor whose pipelines are Lua\n"
        "\n"
        "usage:\n"
        "  eddy run CONFIG                 run the pipeline the config names\n"
        "  eddy check CONFIG|PIPELINE.lua  compile and plan; print the topology\n"
        "  eddy test [PATH...]             run the pipeline tests (*_test.lua files, eddy.testing)\n"
        "                                  under PATH (default: the current folder)\n"
        "  eddy kafka-mock [--brokers N] [--port P] [--topic NAME:PARTITIONS]... [--error REQUEST:ERR[,ERR]...]...\n"
        "                                  a Kafka-protocol broker on loopback (librdkafka's mock\n"
        "                                  cluster); prints its bootstrap servers first; with --port,\n"
        "                                  listens on 127.0.0.1:P (0: any free port) and forwards\n"
        "                                  to the first broker\n"
        "  eddy reload [--admin HOST:PORT] [--allow-dropped-state] [--to VERSION] [--token T]\n"
        "                                  ask a running daemon to reload its pipeline (--to: back\n"
        "                                  to a kept version, by number or sha256 prefix)\n"
        "  eddy reload --dry-run [--records N] [--admin HOST:PORT] [--token T]\n"
        "                                  what the script on disk would do with the last N records\n"
        "                                  of each source partition, beside the running version\n"
        "  eddy reload [--admin HOST:PORT] [--token T] --canary K | --canary-partitions P,... |\n"
        "              --canary-tasks NAME,... | --promote | --rollback\n"
        "                                  the new version on some tasks only (K lowest of each\n"
        "                                  stage, those partitions, those tasks), then on all or none\n"
        "  eddy savepoint [--admin HOST:PORT] [--stop] [--token T]\n"
        "                                  ask a running daemon for a savepoint; prints its folder\n"
        "  eddy run CONFIG --from-savepoint DIR [--allow-non-restored-state]\n"
        "                                  start from a savepoint (the pipeline may have changed)\n"
        "  eddy version                    print the version\n"
        "  eddy help                       this text\n"
        "\n"
        "exit codes: 0 success, 1 runtime failure, 2 usage, config or pipeline error\n"
        "docs: docs/contract.md (what you type and see), docs/architecture.md\n");
}

/* eddy reload --dry-run [--records N] (dryrun.c answers). */
static int reload_dry_run(const char *admin, int dry, const char *records, int force, const char *to,
                          const char *token) {
    if (!dry) { fprintf(stderr, "eddy reload: --records goes with --dry-run\n"); return 2; }
    if (to) { fprintf(stderr, "eddy reload: --dry-run runs the script on disk, not --to a kept version\n"); return 2; }
    if (records && (!*records || strspn(records, "0123456789") != strlen(records) || strlen(records) > 9 ||
                    atoi(records) < 1)) {
        fprintf(stderr, "eddy reload: --records %s: expected a number of records, 1 or more\n", records);
        return 2;
    }
    char path[128];
    snprintf(path, sizeof path, "/reload?dry_run=1%s%s%s", records ? "&records=" : "", records ? records : "",
             force ? "&allow_dropped_state=1" : "");
    return client_dry_run(admin, path, token);
}

int main(int argc, char **argv) {
    if (argc < 2) { usage(stderr); return 2; }
    const char *cmd = argv[1];
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("eddy " EDDY_VERSION "\n");
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "run") == 0) {
        if (argc < 3) { fprintf(stderr, "eddy run: missing CONFIG\n"); return 2; }
        run_opts o = { .argv = argv };
        for (int i = 3; i < argc; i++) {
            if (strcmp(argv[i], "--from-savepoint") == 0 && i + 1 < argc) o.from_savepoint = argv[++i];
            else if (strncmp(argv[i], "--from-savepoint=", 17) == 0) o.from_savepoint = argv[i] + 17;
            else if (strcmp(argv[i], "--allow-non-restored-state") == 0) o.allow_non_restored = 1;
            else { fprintf(stderr, "eddy run: unknown or unsupported argument '%s'\n", argv[i]); return 2; }
        }
        return daemon_run(argv[2], &o);
    }
    if (strcmp(cmd, "check") == 0) {
        if (argc != 3) { fprintf(stderr, "eddy check: needs one CONFIG or PIPELINE.lua\n"); return 2; }
        return daemon_check(argv[2]);
    }
    if (strcmp(cmd, "test") == 0) return testing_main(argc - 2, argv + 2);
    if (strcmp(cmd, "kafka-mock") == 0) return kafka_mock_main(argc - 2, argv + 2);
    if (strcmp(cmd, "reload") == 0) {
        int canary_rc;
        if (canary_cli(argc, argv, &canary_rc)) return canary_rc;   /* --canary*, --promote, --rollback */
        const char *admin = "127.0.0.1:8600";
        const char *token = getenv("EDDY_ADMIN_TOKEN"), *to = NULL, *records = NULL;
        int force = 0, dry = 0;
        for (int i = 2; i < argc; i++) {
            if (strcmp(argv[i], "--admin") == 0 && i + 1 < argc) admin = argv[++i];
            else if (strncmp(argv[i], "--admin=", 8) == 0) admin = argv[i] + 8;
            else if (strcmp(argv[i], "--allow-dropped-state") == 0) force = 1;
            else if (strcmp(argv[i], "--to") == 0 && i + 1 < argc) to = argv[++i];
            else if (strncmp(argv[i], "--to=", 5) == 0) to = argv[i] + 5;
            else if (strcmp(argv[i], "--token") == 0 && i + 1 < argc) token = argv[++i];
            else if (strcmp(argv[i], "--dry-run") == 0) dry = 1;
            else if (strcmp(argv[i], "--records") == 0 && i + 1 < argc) records = argv[++i];
            else { fprintf(stderr, "eddy reload: unknown argument '%s'\n", argv[i]); return 2; }
        }
        if (dry || records) return reload_dry_run(admin, dry, records, force, to, token);
        if (to && (!*to || strspn(to, "0123456789abcdefABCDEF") != strlen(to) || strlen(to) > 64)) {
            fprintf(stderr, "eddy reload: --to %s: VERSION is a kept version number or a sha256 prefix\n", to);
            return 2;
        }
        char path[128];
        snprintf(path, sizeof path, "/reload%s%s%s%s", force ? "?allow_dropped_state=1" : "", to ? (force ? "&" : "?") : "",
                 to ? "to=" : "", to ? to : "");
        return client_post(admin, path, NULL, token);
    }
    if (strcmp(cmd, "savepoint") == 0) {
        const char *admin = "127.0.0.1:8600";
        const char *path = "/savepoint";
        const char *token = getenv("EDDY_ADMIN_TOKEN");
        for (int i = 2; i < argc; i++) {
            if (strcmp(argv[i], "--admin") == 0 && i + 1 < argc) admin = argv[++i];
            else if (strncmp(argv[i], "--admin=", 8) == 0) admin = argv[i] + 8;
            else if (strcmp(argv[i], "--stop") == 0) path = "/savepoint?stop=1";
            else if (strcmp(argv[i], "--token") == 0 && i + 1 < argc) token = argv[++i];
            else { fprintf(stderr, "eddy savepoint: unknown argument '%s'\n", argv[i]); return 2; }
        }
        return client_post(admin, path, "path", token);
    }
    fprintf(stderr, "eddy: unknown command '%s' (eddy help lists them)\n", cmd);
    return 2;
}
