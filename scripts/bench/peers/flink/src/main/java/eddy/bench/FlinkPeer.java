package eddy.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Locale;
import java.util.Properties;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.AggregateFunction;
import org.apache.flink.api.common.serialization.SimpleStringSchema;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.connector.base.DeliveryGuarantee;
import org.apache.flink.connector.kafka.sink.KafkaRecordSerializationSchema;
import org.apache.flink.connector.kafka.sink.KafkaSink;
import org.apache.flink.connector.kafka.source.KafkaSource;
import org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer;
import org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema;
import org.apache.flink.contrib.streaming.state.EmbeddedRocksDBStateBackend;
import org.apache.flink.streaming.api.CheckpointingMode;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.windowing.ProcessWindowFunction;
import org.apache.flink.streaming.api.windowing.assigners.TumblingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.windows.TimeWindow;
import org.apache.flink.util.Collector;

/**
 * The Flink peer of eddy's Kafka benchmarks (scripts/bench.sh, bench_kafka):
 * a DataStream job in Flink's local MiniCluster (one JVM), with the Kafka
 * connector and the RocksDB state backend; the same jobs as
 * scripts/bench/kafka/*.lua.
 *
 * <pre>
 *   FlinkPeer JOB GUARANTEE BROKERS IN OUT APP_ID PARALLELISM INTERVAL_MS STATE_DIR
 * </pre>
 *
 * JOB is "stateless" (JSON in, keep amount >= 10, map to {id, user, word in
 * upper case, cents, ts}, JSON out) or "keyed" (a count per message key in
 * tumbling 1-minute windows of the message timestamp, watermarks 5 s behind,
 * one {word, start, n} record per window when it fires).  GUARANTEE
 * "at_least_once" takes at-least-once checkpoints every INTERVAL_MS (they
 * commit the source's offsets and flush the sink); "exactly_once" takes
 * exactly-once checkpoints every INTERVAL_MS and writes through
 * transactions committed with them.  Runs until SIGTERM.
 */
public final class FlinkPeer {
    public static void main(String[] args) throws Exception {
        if (args.length != 9) {
            System.err.println("usage: FlinkPeer JOB GUARANTEE BROKERS IN OUT APP_ID PARALLELISM INTERVAL_MS STATE_DIR");
            System.exit(2);
        }
        String job = args[0], guarantee = args[1], brokers = args[2], in = args[3], out = args[4], app = args[5];
        int parallelism = Integer.parseInt(args[6]);
        long interval = Long.parseLong(args[7]);
        boolean exactlyOnce = switch (guarantee) {
            case "at_least_once" -> false;
            case "exactly_once" -> true;
            default -> throw new IllegalArgumentException("guarantee: " + guarantee);
        };

        StreamExecutionEnvironment env =
                StreamExecutionEnvironment.createLocalEnvironment(parallelism, new Configuration());
        env.setStateBackend(new EmbeddedRocksDBStateBackend(true));
        env.enableCheckpointing(interval, exactlyOnce ? CheckpointingMode.EXACTLY_ONCE : CheckpointingMode.AT_LEAST_ONCE);
        env.getCheckpointConfig().setCheckpointStorage("file://" + args[8] + "/checkpoints");

        KafkaSource<String> source = KafkaSource.<String>builder()
                .setBootstrapServers(brokers)
                .setTopics(in)
                .setGroupId(app)
                .setStartingOffsets(OffsetsInitializer.earliest())
                .setDeserializer(job.equals("keyed") ? new KeyOnly() : KafkaRecordDeserializationSchema.valueOnly(new SimpleStringSchema()))
                .build();
        Properties producer = new Properties();
        producer.setProperty("transaction.timeout.ms", "60000");
        KafkaSink<String> sink = KafkaSink.<String>builder()
                .setBootstrapServers(brokers)
                .setKafkaProducerConfig(producer)
                .setRecordSerializer(KafkaRecordSerializationSchema.builder()
                        .setTopic(out)
                        .setValueSerializationSchema(new SimpleStringSchema())
                        .build())
                .setDeliveryGuarantee(exactlyOnce ? DeliveryGuarantee.EXACTLY_ONCE : DeliveryGuarantee.AT_LEAST_ONCE)
                .setTransactionalIdPrefix(app)
                .build();

        DataStream<String> result;
        switch (job) {
            case "stateless" -> {
                DataStream<String> lines = env.fromSource(source, WatermarkStrategy.noWatermarks(), "in");
                result = lines.flatMap(new Stateless()).returns(Types.STRING);
            }
            case "keyed" -> {
                DataStream<String> keys = env.fromSource(source,
                        WatermarkStrategy.<String>forBoundedOutOfOrderness(Duration.ofSeconds(5)), "in");
                result = keys.keyBy(k -> k)
                        .window(TumblingEventTimeWindows.of(Duration.ofMinutes(1)))
                        .aggregate(new Count(), new Emit());
            }
            default -> throw new IllegalArgumentException("job: " + job);
        }
        result.sinkTo(sink).name("out");
        env.execute("bench-" + job);
    }

    /** The message key as a string: the keyed job reads nothing else (the timestamp comes along). */
    static final class KeyOnly implements KafkaRecordDeserializationSchema<String> {
        @Override
        public void deserialize(org.apache.kafka.clients.consumer.ConsumerRecord<byte[], byte[]> r, Collector<String> out) {
            out.collect(new String(r.key(), StandardCharsets.UTF_8));
        }

        @Override
        public org.apache.flink.api.common.typeinfo.TypeInformation<String> getProducedType() {
            return Types.STRING;
        }
    }

    static final class Stateless implements org.apache.flink.api.common.functions.FlatMapFunction<String, String> {
        private transient ObjectMapper json;

        @Override
        public void flatMap(String line, Collector<String> out) throws Exception {
            if (json == null) json = new ObjectMapper();
            JsonNode v = json.readTree(line);
            if (v.get("amount").asDouble() < 10) return;
            ObjectNode o = json.createObjectNode();
            o.set("id", v.get("id"));
            o.set("user", v.get("user"));
            o.put("word", v.get("word").asText().toUpperCase(Locale.ROOT));
            o.put("cents", v.get("amount").asDouble() * 100);
            o.set("ts", v.get("ts"));
            out.collect(o.toString());
        }
    }

    static final class Count implements AggregateFunction<String, Long, Long> {
        @Override public Long createAccumulator() { return 0L; }
        @Override public Long add(String k, Long n) { return n + 1; }
        @Override public Long getResult(Long n) { return n; }
        @Override public Long merge(Long a, Long b) { return a + b; }
    }

    static final class Emit extends ProcessWindowFunction<Long, String, String, TimeWindow> {
        private transient ObjectMapper json;

        @Override
        public void process(String key, Context ctx, Iterable<Long> counts, Collector<String> out) {
            if (json == null) json = new ObjectMapper();
            ObjectNode o = json.createObjectNode();
            o.put("word", key);
            o.put("start", ctx.window().getStart());
            o.put("n", counts.iterator().next());
            out.collect(o.toString());
        }
    }
}
