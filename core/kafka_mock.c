#include "kafka_mock.h"
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct topic_arg {
    char name[256];
    int partitions;
} topic_arg;

static int usage(const char *msg, const char *arg) {
    fprintf(stderr, "eddy kafka-mock: %s%s%s\n"
            "usage: eddy kafka-mock [--brokers N] [--topic NAME:PARTITIONS]...\n", msg, arg ? ": " : "", arg ? arg : "");
    return 2;
}

int kafka_mock_main(int argc, char **argv) {
    int brokers = 1;
    topic_arg *topics = calloc(argc > 0 ? argc : 1, sizeof *topics);
    int ntopics = 0, rc = 1;
    rd_kafka_t *rk = NULL;
    rd_kafka_mock_cluster_t *mc = NULL;
    if (!topics) return 1;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--brokers") == 0 && v) {
            char *end;
            long n = strtol(v, &end, 10);
            if (*end || n < 1 || n > 64) { rc = usage("--brokers needs a number from 1 to 64, got", v); goto out; }
            brokers = (int)n;
            i++;
        } else if (strcmp(a, "--topic") == 0 && v) {
            const char *colon = strrchr(v, ':');
            char *end = NULL;
            long n = colon ? strtol(colon + 1, &end, 10) : 0;
            if (!colon || colon == v || (size_t)(colon - v) >= sizeof topics[0].name || *end || n < 1 || n > 10000) {
                rc = usage("--topic needs NAME:PARTITIONS, got", v);
                goto out;
            }
            memcpy(topics[ntopics].name, v, colon - v);
            topics[ntopics].partitions = (int)n;
            ntopics++;
            i++;
        } else if (strcmp(a, "--port") == 0) {
            /* librdkafka 2.0 gives its mock brokers ports of its own choosing */
            rc = usage("--port is not available with this librdkafka: the mock brokers pick their ports; "
                       "read the bootstrap servers from the first line of output", NULL);
            goto out;
        } else {
            rc = usage("unknown argument", a);
            goto out;
        }
    }
    /* SIGTERM/SIGINT are waited for with sigwait: block them before any thread starts */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk) { fprintf(stderr, "eddy kafka-mock: %s\n", err); goto out; }
    mc = rd_kafka_mock_cluster_new(rk, brokers);
    if (!mc) { fprintf(stderr, "eddy kafka-mock: cannot start the mock cluster\n"); goto out; }
    for (int t = 0; t < ntopics; t++) {
        rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(mc, topics[t].name, topics[t].partitions, 1);
        if (e) {
            fprintf(stderr, "eddy kafka-mock: topic %s: %s\n", topics[t].name, rd_kafka_err2str(e));
            goto out;
        }
    }
    printf("%s\n", rd_kafka_mock_cluster_bootstraps(mc));
    fflush(stdout);
    fprintf(stderr, "eddy kafka-mock: %d broker%s at %s; SIGTERM or SIGINT stops it\n", brokers,
            brokers == 1 ? "" : "s", rd_kafka_mock_cluster_bootstraps(mc));
    int sig;
    sigwait(&set, &sig);
    rc = 0;
out:
    if (mc) rd_kafka_mock_cluster_destroy(mc);
    if (rk) rd_kafka_destroy(rk);
    free(topics);
    return rc;
}
