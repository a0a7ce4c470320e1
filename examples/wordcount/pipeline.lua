-- wordcount: count words per one-minute window of event time and print the
-- counts.  Records carry their time in "ts" (ms since the epoch); the
-- watermark trails the largest time seen by 5 s, so records up to 5 s out of
-- order still count.  At the end of the input every window fires.
local eddy = require("eddy")
local p = eddy.pipeline()

p:source("words", { file = "input/*.jsonl", format = "json",
                    timestamp = "ts", watermark = eddy.watermark.bounded("5s") })
 :filter(function(v) return type(v.word) == "string" and v.word ~= "" end)
 :map(function(v) v.word = v.word:lower(); return v end)
 :key_by("word")
 :window(eddy.window.tumbling("1m"))
 :count()
 :map(function(n, ctx)
   return string.format("%s  %-8s %d", os.date("!%H:%M", ctx.window.start / 1000), ctx.key, n)
 end)
 :sink("counts", { stdout = true, format = "lines" })

return p
