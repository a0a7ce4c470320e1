-- The scale-out benchmark's job (scripts/bench.sh, bench_scaleout): a
-- running count per user in value state (RocksDB), one {user, n} per input
-- record, from a Kafka topic not keyed by the user to a Kafka topic.  With
-- shuffle = "kafka" the key_by goes through its repartition topic and the
-- count through its changelog.  bench.sh writes the topics for @IN@ and @OUT@.
local eddy = require("eddy")
local p = eddy.pipeline()

p:source("in", { kafka = "@IN@", format = "json" })
 :key_by("user")
 :process{ process = function(v, ctx)
   local s = ctx.state:value("n")
   local n = (s:get() or 0) + 1
   s:set(n)
   return { user = ctx.key, n = n }
 end }
 :uid("count")
 :sink("out", { kafka = "@OUT@", format = "json" })

return p
