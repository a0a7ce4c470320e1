/* The Kafka tools of `make bench` (scripts/bench.sh, bench_kafka), on
 * librdkafka and jansson:
 *
 *   kbench topic BROKERS TOPIC PARTITIONS
 *       creates TOPIC (replication 1, retention.ms -1: the records carry
 *       event times of 2023, which time-based retention would delete).
 *   kbench load BROKERS TOPIC FILE...
 *       writes each JSON line of the files as one message, keyed by its
 *       "word" and timestamped with its "ts" (so every system keys and
 *       windows by the message's key and timestamp), then one end marker per
 *       partition, a record of amount 0 (the stateless job drops it) an hour
 *       after the last record, which moves every partition's event time past
 *       all windows of the input; prints the records written (without the
 *       markers) and the last event time.
 *   kbench copy BROKERS IN OUT GROUP
 *       the copy ceiling: reads IN from the start in a fresh consumer group
 *       and writes each message to OUT unchanged (key, value, timestamp), no
 *       processing; exits once every partition was read to its end and
 *       everything was delivered.
 *   kbench count BROKERS TOPIC TARGET STALL_S
 *       reads TOPIC from the start (read_committed, no group) and counts its
 *       messages: with TARGET > 0 until there are TARGET, or until none came
 *       for STALL_S seconds; with TARGET 0 up to the end of every partition.
 *       Prints "first S" when the first message came, "mark S" when a tenth
 *       of TARGET had come, and "count N S" at the end, S in seconds since it
 *       started (for a target reached: when the last message came); exit 0 when TARGET was reached
 *       (or was 0), 3 otherwise.
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void die(const char *what, const char *detail) {
    fprintf(stderr, "kbench: %s: %s\n", what, detail);
    exit(1);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void set(rd_kafka_conf_t *conf, const char *k, const char *v) {
    char e[512];
    if (rd_kafka_conf_set(conf, k, v, e, sizeof e) != RD_KAFKA_CONF_OK) die(k, e);
}

static rd_kafka_t *client(rd_kafka_type_t type, rd_kafka_conf_t *conf) {
    char e[512];
    rd_kafka_t *rk = rd_kafka_new(type, conf, e, sizeof e);
    if (!rk) die("rd_kafka_new", e);
    return rk;
}

static int partitions_of(rd_kafka_t *rk, const char *topic) {
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, t, &md, 10000);
    if (err) die(topic, rd_kafka_err2str(err));
    int n = md->topic_cnt == 1 && !md->topics[0].err ? md->topics[0].partition_cnt : -1;
    if (n <= 0)
        die(topic, md->topic_cnt == 1 ? rd_kafka_err2str(md->topics[0].err) : "not in the metadata");
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(t);
    return n;
}

static int cmd_topic(const char *brokers, const char *topic, int parts) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    set(conf, "bootstrap.servers", brokers);
    rd_kafka_t *rk = client(RD_KAFKA_PRODUCER, conf);
    char e[512];
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(topic, parts, 1, e, sizeof e);
    if (!nt) die(topic, e);
    rd_kafka_NewTopic_set_config(nt, "retention.ms", "-1");
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000);
    if (!ev) die(topic, "CreateTopics timed out");
    if (rd_kafka_event_error(ev)) die(topic, rd_kafka_event_error_string(ev));
    size_t n;
    const rd_kafka_topic_result_t **res =
        rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);
    for (size_t i = 0; i < n; i++)
        if (rd_kafka_topic_result_error(res[i]))
            die(topic, rd_kafka_topic_result_error_string(res[i]));
    rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_NewTopic_destroy(nt);
    /* wait until the topic is in the metadata with its partitions */
    for (int i = 0; i < 100; i++) {
        const struct rd_kafka_metadata *md;
        rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topic, NULL);
        int ok = rd_kafka_metadata(rk, 0, t, &md, 5000) == 0 && md->topic_cnt == 1 &&
                 !md->topics[0].err && md->topics[0].partition_cnt == parts;
        if (ok) {
            for (int p = 0; p < parts; p++) ok = ok && md->topics[0].partitions[p].leader >= 0;
        }
        if (md) rd_kafka_metadata_destroy(md);
        rd_kafka_topic_destroy(t);
        if (ok) break;
        struct timespec d = {0, 100000000};
        nanosleep(&d, NULL);
    }
    rd_kafka_destroy(rk);
    return 0;
}

static long failed;
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk, (void)opaque;
    if (m->err && failed++ == 0) fprintf(stderr, "kbench: delivery failed: %s\n", rd_kafka_err2str(m->err));
}

static rd_kafka_t *producer(const char *brokers) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    set(conf, "bootstrap.servers", brokers);
    set(conf, "linger.ms", "20");
    set(conf, "batch.size", "1000000");
    set(conf, "queue.buffering.max.kbytes", "262144");
    set(conf, "enable.idempotence", "true");
    set(conf, "partitioner", "murmur2_random"); /* the Java client's default */
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    return client(RD_KAFKA_PRODUCER, conf);
}

/* produce, waiting for room when the queue is full */
static void produce(rd_kafka_t *rk, const char *topic, int32_t part, const void *key, size_t klen,
                    const void *val, size_t vlen, int64_t ts) {
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(part), RD_KAFKA_V_KEY((void *)key, klen),
            RD_KAFKA_V_VALUE((void *)val, vlen), RD_KAFKA_V_TIMESTAMP(ts), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_END);
        if (!err) return;
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) die("produce", rd_kafka_err2str(err));
        rd_kafka_poll(rk, 100);
    }
}

static void flush_all(rd_kafka_t *rk) {
    while (rd_kafka_outq_len(rk) > 0) rd_kafka_flush(rk, 1000);
    if (failed) {
        fprintf(stderr, "kbench: %ld messages were not delivered\n", failed);
        exit(1);
    }
}

static int cmd_load(const char *brokers, const char *topic, int nfiles, char **files) {
    rd_kafka_t *rk = producer(brokers);
    int parts = partitions_of(rk, topic);
    long n = 0;
    int64_t last_ts = 0;
    char *line = NULL;
    size_t cap = 0;
    for (int i = 0; i < nfiles; i++) {
        FILE *f = fopen(files[i], "r");
        if (!f) die(files[i], strerror(errno));
        ssize_t len;
        long lineno = 0;
        while ((len = getline(&line, &cap, f)) > 0) {
            lineno++;
            while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
            if (len == 0) continue;
            json_error_t je;
            json_t *v = json_loadb(line, len, 0, &je);
            const char *word = v ? json_string_value(json_object_get(v, "word")) : NULL;
            json_t *tsv = v ? json_object_get(v, "ts") : NULL;
            if (!word || !json_is_integer(tsv)) {
                fprintf(stderr, "kbench: %s:%ld: %s\n", files[i], lineno,
                        v ? "no string \"word\" or integer \"ts\"" : je.text);
                exit(1);
            }
            int64_t ts = json_integer_value(tsv);
            if (ts > last_ts) last_ts = ts;
            produce(rk, topic, RD_KAFKA_PARTITION_UA, word, strlen(word), line, len, ts);
            json_decref(v);
            n++;
            rd_kafka_poll(rk, 0);
        }
        fclose(f);
    }
    free(line);
    /* the end markers go after everything else: flush first */
    flush_all(rk);
    int64_t end_ts = last_ts + 3600000;
    for (int p = 0; p < parts; p++) {
        char buf[256];
        int len = snprintf(buf, sizeof buf,
                           "{\"id\":0,\"ts\":%" PRId64 ",\"user\":\"u0\",\"word\":\"~end\",\"amount\":0,"
                           "\"tags\":[],\"country\":\"--\"}",
                           end_ts);
        produce(rk, topic, p, "~end", 4, buf, len, end_ts);
    }
    flush_all(rk);
    rd_kafka_destroy(rk);
    printf("%ld %" PRId64 "\n", n, last_ts);
    return 0;
}

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig, stop = 1; }

static int cmd_copy(const char *brokers, const char *in, const char *out, const char *group) {
    rd_kafka_t *p = producer(brokers);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    set(conf, "bootstrap.servers", brokers);
    set(conf, "group.id", group);
    set(conf, "auto.offset.reset", "earliest");
    set(conf, "enable.partition.eof", "true");
    rd_kafka_t *c = client(RD_KAFKA_CONSUMER, conf);
    rd_kafka_poll_set_consumer(c);
    int parts = partitions_of(c, in);
    rd_kafka_topic_partition_list_t *tl = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(tl, in, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(c, tl);
    if (err) die("subscribe", rd_kafka_err2str(err));
    rd_kafka_topic_partition_list_destroy(tl);
    char *at_end = calloc(parts, 1);
    int ends = 0;
    long n = 0;
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    while (!stop && ends < parts) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
        rd_kafka_poll(p, 0);
        if (!m) continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (m->partition < parts && !at_end[m->partition]) at_end[m->partition] = 1, ends++;
        } else if (m->err) {
            die("consume", rd_kafka_message_errstr(m));
        } else {
            rd_kafka_timestamp_type_t tt;
            produce(p, out, RD_KAFKA_PARTITION_UA, m->key, m->key_len, m->payload, m->len,
                    rd_kafka_message_timestamp(m, &tt));
            n++;
        }
        rd_kafka_message_destroy(m);
    }
    flush_all(p);
    rd_kafka_commit(c, NULL, 0);
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    rd_kafka_destroy(p);
    free(at_end);
    printf("copied %ld%s\n", n, stop ? " (stopped)" : "");
    return 0;
}

static int cmd_count(const char *brokers, const char *topic, long target, double stall) {
    double t0 = now_s();
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    set(conf, "bootstrap.servers", brokers);
    set(conf, "group.id", "kbench-count"); /* required by librdkafka; nothing is committed */
    set(conf, "enable.auto.commit", "false");
    set(conf, "isolation.level", "read_committed");
    set(conf, "enable.partition.eof", "true");
    set(conf, "fetch.wait.max.ms", "100");
    rd_kafka_t *c = client(RD_KAFKA_CONSUMER, conf);
    rd_kafka_poll_set_consumer(c);
    int parts = partitions_of(c, topic);
    rd_kafka_topic_partition_list_t *tl = rd_kafka_topic_partition_list_new(parts);
    for (int i = 0; i < parts; i++)
        rd_kafka_topic_partition_list_add(tl, topic, i)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_resp_err_t err = rd_kafka_assign(c, tl);
    if (err) die("assign", rd_kafka_err2str(err));
    rd_kafka_topic_partition_list_destroy(tl);
    char *at_end = calloc(parts, 1);
    int ends = 0;
    long n = 0;
    double last = now_s();
    int first = 0, marked = 0;
    signal(SIGTERM, on_signal);
    while (!stop) {
        if (target > 0 && n >= target) break;
        if (target == 0 && ends == parts) break;
        if (target > 0 && now_s() - last > stall) break;
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
        if (!m) continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (m->partition < parts && !at_end[m->partition]) at_end[m->partition] = 1, ends++;
        } else if (m->err) {
            die("consume", rd_kafka_message_errstr(m));
        } else {
            if (!first++) {
                printf("first %.2f\n", now_s() - t0);
                fflush(stdout);
            }
            if (m->partition < parts && at_end[m->partition]) at_end[m->partition] = 0, ends--;
            n++;
            last = now_s();
            if (target > 0 && !marked && n * 10 >= target) {
                marked = 1;
                printf("mark %.2f\n", last - t0);
                fflush(stdout);
            }
        }
        rd_kafka_message_destroy(m);
    }
    printf("count %ld %.2f\n", n, (target > 0 && n >= target ? last : now_s()) - t0);
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    free(at_end);
    return target == 0 || n >= target ? 0 : 3;
}

int main(int argc, char **argv) {
    if (argc == 5 && !strcmp(argv[1], "topic")) return cmd_topic(argv[2], argv[3], atoi(argv[4]));
    if (argc >= 5 && !strcmp(argv[1], "load")) return cmd_load(argv[2], argv[3], argc - 4, argv + 4);
    if (argc == 6 && !strcmp(argv[1], "copy")) return cmd_copy(argv[2], argv[3], argv[4], argv[5]);
    if (argc == 6 && !strcmp(argv[1], "count"))
        return cmd_count(argv[2], argv[3], atol(argv[4]), atof(argv[5]));
    fprintf(stderr, "usage: kbench topic BROKERS TOPIC PARTITIONS | load BROKERS TOPIC FILE... |\n"
                    "       copy BROKERS IN OUT GROUP | count BROKERS TOPIC TARGET STALL_S\n");
    return 2;
}
