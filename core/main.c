/* main — the command line: run, check, version, help (and the subcommands
 * later parts of eddy add).  Exit codes: 0 success, 1 runtime failure, 2
 * usage, configuration or pipeline-script error. */
#include "daemon.h"
#include <stdio.h>
#include <string.h>

#define EDDY_VERSION "0.1.0"

static void usage(FILE *out) {
    fprintf(out,
        "eddy " EDDY_VERSION " — a stream processor whose pipelines are Lua\n"
        "\n"
        "usage:\n"
        "  eddy run CONFIG                 run the pipeline the config names\n"
        "  eddy check CONFIG|PIPELINE.lua  compile and plan; print the topology\n"
        "  eddy version                    print the version\n"
        "  eddy help                       this text\n"
        "\n"
        "exit codes: 0 success, 1 runtime failure, 2 usage, config or pipeline error\n"
        "docs: docs/contract.md (what you type and see), docs/architecture.md\n");
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
        for (int i = 3; i < argc; i++) {
            fprintf(stderr, "eddy run: unknown or unsupported argument '%s'\n", argv[i]);
            return 2;
        }
        return daemon_run(argv[2]);
    }
    if (strcmp(cmd, "check") == 0) {
        if (argc != 3) { fprintf(stderr, "eddy check: needs one CONFIG or PIPELINE.lua\n"); return 2; }
        return daemon_check(argv[2]);
    }
    fprintf(stderr, "eddy: unknown command '%s' (eddy help lists them)\n", cmd);
    return 2;
}
