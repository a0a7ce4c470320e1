-- Windows benchmark: a count per key in tumbling 1h windows over input where
-- every record has its own key and all fall in the same hour, so every
-- window is open at once until the end of input fires them all.
-- scripts/bench/windows/baseline.lua does the same with a Lua table.
local eddy = require("eddy")
local p = eddy.pipeline()

p:source("in", { file = "input/*.jsonl", format = "json",
                 timestamp = "ts", watermark = eddy.watermark.bounded("1s") })
 :key_by("k")
 :window(eddy.window.tumbling("1h"))
 :count()
 :map(function(n, ctx) return { k = ctx.key, n = n } end)
 :sink("out", { file = "out", format = "json" })

return p
