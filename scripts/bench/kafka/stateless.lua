-- The stateless benchmark's job (scripts/bench/stateless/pipeline.lua)
-- from a Kafka topic to a Kafka topic: decode, filter, map, encode.
-- scripts/bench.sh (bench_kafka) writes the topics' names for @IN@ and
-- @OUT@; the peers' versions are in scripts/bench/peers/.
local eddy = require("eddy")
local p = eddy.pipeline()

p:source("in", { kafka = "@IN@", format = "json" })
 :filter(function(v) return v.amount >= 10 end)
 :map(function(v)
   return { id = v.id, user = v.user, word = string.upper(v.word), cents = v.amount * 100, ts = v.ts }
 end)
 :sink("out", { kafka = "@OUT@", format = "json" })

return p
