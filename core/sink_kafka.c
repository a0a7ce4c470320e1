/* The Kafka sink kind (see sink.h): each record goes to the sink's producer
 * (kafka.c: one per sink, shared by its tasks; under exactly_once the
 * daemon's transaction covers it, so prepare and commit are the
 * coordinator's, not the sink's). */
#include "sink.h"
#include "kafka.h"
#include <stdio.h>

static const char *const kafka_options[] = { "kafka", "format", "key", NULL };   /* and librdkafka keys (with a dot) */

/* The producer of the sink named by the node, writing to its topic (kafka.c owns it). */
static void *kafka_open(sink *s, const sink_args *a, char *err, size_t errlen) {
    (void)s;
    if (!a->kafka) { snprintf(err, errlen, "sink '%s': no Kafka connection", a->nd->name); return NULL; }
    return kafka_sink_get(a->kafka, a->nd->name, node_opt(a->nd, "kafka"), &a->nd->opts, err, errlen);
}

static int kafka_write(sink *s, const sink_record *r) {
    char err[512];
    /* a record Kafka will not take (too large, say) is that record's error, not the sink's */
    if (kafka_sink_send(sink_impl(s), r->key, r->klen, r->val, r->vlen, r->ts, r->hdrs, r->hlen, r->origin, err,
                        sizeof err) < 0) {
        sink_fail(s, 0, "%s", err);
        return -2;
    }
    sink_count(s);
    return 0;
}

static struct kafka_sink *kafka_producer(sink *s) { return sink_impl(s); }

const sink_ops sink_kafka_ops = {
    .name = "kafka", .option = "kafka", .options = kafka_options,
    .open = kafka_open, .write = kafka_write, .producer = kafka_producer,
};
