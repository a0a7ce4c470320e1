-- Stateless benchmark: decode, filter, map, encode; no keys, no state.
-- scripts/bench/baseline.lua does the same work without the runtime.
local eddy = require("eddy")
local p = eddy.pipeline()

p:source("in", { file = "input/*.jsonl", format = "json" })
 :filter(function(v) return v.amount >= 10 end)
 :map(function(v)
   return { id = v.id, user = v.user, word = string.upper(v.word), cents = v.amount * 100, ts = v.ts }
 end)
 :sink("out", { file = "out", format = "json" })

return p
