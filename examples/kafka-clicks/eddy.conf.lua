-- Runs with no Kafka installation: kafka.embedded starts librdkafka's mock
-- broker inside the daemon with a 4-partition topic "clicks".
--   bin/eddy run examples/kafka-clicks/eddy.conf.lua      (Ctrl-C stops it)
-- Against a real cluster, replace `embedded` with the brokers' address:
--   kafka = { ["bootstrap.servers"] = "broker1:9092,broker2:9092" },
-- create the topic "clicks" there, and drop the "feed" source from the
-- pipeline (it only loads the sample input into the topic).
return {
  name = "clicks",                         -- the consumer group
  pipeline = "pipeline.lua",
  parallelism = 2,
  kafka = { embedded = { brokers = 1, topics = { clicks = 4 } } },
  admin = { listen = "127.0.0.1:0" },      -- a free port, written to state/clicks/admin.addr
  reload = { watch = false },
}
