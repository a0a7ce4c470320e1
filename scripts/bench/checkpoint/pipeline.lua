-- Checkpoint benchmark, event time: the wordcount of the README at scale —
-- records of scripts/bench-gen.lua with their event time and a bounded
-- watermark, counted per word in tumbling 1m windows into a file sink.
-- scripts/bench.sh runs it under at_least_once (alo.conf.lua) and under
-- exactly_once with a checkpoint every 10 s (eo.conf.lua).
local eddy = require("eddy")
local p = eddy.pipeline()

p:source("in", { file = "input/*.jsonl", format = "json",
                 timestamp = "ts", watermark = eddy.watermark.bounded("5s") })
 :key_by("word")
 :window(eddy.window.tumbling("1m"))
 :count()
 :uid("word-minute")
 :map(function(n, ctx) return { word = ctx.key, start = ctx.window.start, n = n } end)
 :sink("out", { file = "out", format = "json" })

return p
