package eddy.bench;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.time.Duration;
import java.util.Locale;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicBoolean;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.Suppressed;
import org.apache.kafka.streams.kstream.TimeWindows;

/**
 * The Kafka Streams peer of eddy's Kafka benchmarks (scripts/bench.sh,
 * bench_kafka); the same jobs as scripts/bench/kafka/*.lua.
 *
 * <pre>
 *   StreamsPeer JOB GUARANTEE BROKERS IN OUT APP_ID THREADS COMMIT_MS STATE_DIR
 * </pre>
 *
 * JOB is "stateless" (JSON in, keep amount >= 10, map to {id, user, word in
 * upper case, cents, ts}, JSON out) or "keyed" (a count per message key in
 * tumbling 1-minute windows of the message timestamp, 5 s grace, one
 * {word, start, n} record per window when it closes, the count in a RocksDB
 * window store); GUARANTEE is "at_least_once" or "exactly_once"
 * (exactly_once_v2); COMMIT_MS the commit interval.  Runs until SIGTERM.
 */
public final class StreamsPeer {
    public static void main(String[] args) throws Exception {
        if (args.length != 9) {
            System.err.println("usage: StreamsPeer JOB GUARANTEE BROKERS IN OUT APP_ID THREADS COMMIT_MS STATE_DIR");
            System.exit(2);
        }
        String job = args[0], guarantee = args[1], in = args[3], out = args[4];
        Properties props = new Properties();
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args[2]);
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, args[5]);
        props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, Integer.parseInt(args[6]));
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, Long.parseLong(args[7]));
        props.put(StreamsConfig.STATE_DIR_CONFIG, args[8]);
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG,
                switch (guarantee) {
                    case "at_least_once" -> StreamsConfig.AT_LEAST_ONCE;
                    case "exactly_once" -> StreamsConfig.EXACTLY_ONCE_V2;
                    default -> throw new IllegalArgumentException("guarantee: " + guarantee);
                });
        props.put(StreamsConfig.consumerPrefix("auto.offset.reset"), "earliest");
        props.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);
        // eddy's and the Flink peer's: Kafka Streams' own default (10 s) had
        // the broker abort its transactions on one busy core (producer
        // fenced, tasks migrated and restored, no output for minutes)
        props.put(StreamsConfig.producerPrefix("transaction.timeout.ms"), 60000);

        ObjectMapper json = new ObjectMapper();
        StreamsBuilder b = new StreamsBuilder();
        KStream<String, String> src = b.stream(in, Consumed.with(Serdes.String(), Serdes.String()));
        switch (job) {
            case "stateless" -> src
                    .mapValues(v -> {
                        try {
                            return json.readTree(v);
                        } catch (Exception e) {
                            throw new RuntimeException(e);
                        }
                    })
                    .filter((k, v) -> v.get("amount").asDouble() >= 10)
                    .mapValues(v -> {
                        ObjectNode o = json.createObjectNode();
                        o.set("id", v.get("id"));
                        o.set("user", v.get("user"));
                        o.put("word", v.get("word").asText().toUpperCase(Locale.ROOT));
                        o.put("cents", v.get("amount").asDouble() * 100);
                        o.set("ts", v.get("ts"));
                        return o.toString();
                    })
                    .to(out, Produced.with(Serdes.String(), Serdes.String()));
            case "keyed" -> src
                    .groupByKey()
                    .windowedBy(TimeWindows.ofSizeAndGrace(Duration.ofMinutes(1), Duration.ofSeconds(5)))
                    .count()
                    .suppress(Suppressed.untilWindowCloses(Suppressed.BufferConfig.unbounded()))
                    .toStream()
                    .map((w, n) -> {
                        ObjectNode o = json.createObjectNode();
                        o.put("word", w.key());
                        o.put("start", w.window().start());
                        o.put("n", n);
                        return new org.apache.kafka.streams.KeyValue<>(w.key(), o.toString());
                    })
                    .to(out, Produced.with(Serdes.String(), Serdes.String()));
            default -> throw new IllegalArgumentException("job: " + job);
        }

        KafkaStreams streams = new KafkaStreams(b.build(), props);
        CountDownLatch done = new CountDownLatch(1);
        AtomicBoolean failed = new AtomicBoolean();
        streams.setUncaughtExceptionHandler(e -> {
            e.printStackTrace();
            failed.set(true);
            done.countDown();
            return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse
                    .SHUTDOWN_CLIENT;
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            streams.close(Duration.ofSeconds(30));
            done.countDown();
        }));
        streams.start();
        done.await();
        if (failed.get()) {
            streams.close(Duration.ofSeconds(10));
            System.exit(1);
        }
    }
}
