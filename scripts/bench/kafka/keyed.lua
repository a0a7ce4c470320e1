-- A count per message key (the loader keys each record by its word) in
-- tumbling 1m windows of the message timestamp (the record's ts), from a
-- Kafka topic to a Kafka topic, one {word, start, n} per window when the
-- watermark (5 s behind) passes it; the counts live in RocksDB.  The value
-- is not decoded: neither do the peers (scripts/bench/peers/).
-- scripts/bench.sh (bench_kafka) writes the topics' names for @IN@ and @OUT@.
local eddy = require("eddy")
local p = eddy.pipeline()

p:source("in", { kafka = "@IN@", format = "raw",
                 timestamp = "kafka", watermark = eddy.watermark.bounded("5s") })
 :key_by(function(_, ctx) return ctx.key end)
 :window(eddy.window.tumbling("1m"))
 :count()
 :uid("word-minute")
 :map(function(n, ctx) return { word = ctx.key, start = ctx.window.start, n = n } end)
 :sink("out", { kafka = "@OUT@", format = "json" })

return p
