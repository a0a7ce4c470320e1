-- One key, one event-time timer per record: the cost of a timer must not
-- grow with the number of timers set before it.
local eddy = require("eddy")
local p = eddy.pipeline()
p:source("ev", { file = "input/timers.jsonl", timestamp = "t", watermark = eddy.watermark.monotonic() })
 :key_by("k")
 :process{ process = function(v, ctx) ctx.timers:event(ctx.ts + 500) end,
           on_timer = function(ts, ctx) return ctx.key .. " " .. ts end }
 :uid("timers")
 :sink("out", { file = "out", format = "lines" })
return p
