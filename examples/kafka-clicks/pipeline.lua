-- kafka-clicks: page views per minute of event time, read from a Kafka
-- topic by a consumer group.  The "feed" source writes the sample input into
-- the topic (keyed by user, so each user's clicks stay in order in one
-- partition); the "clicks" source reads it back, and the counts go to part
-- files under out/.  Windows close as the watermark passes them; the last
-- minute stays open across a stop (kept in the state store) until later
-- clicks move the watermark past it.
local eddy = require("eddy")
local p = eddy.pipeline()

p:source("feed", { file = "input/clicks.jsonl", format = "json" })
 :sink("to-kafka", { kafka = "clicks", key = "user" })

p:source("clicks", { kafka = "clicks", format = "json",
                     timestamp = "ts", watermark = eddy.watermark.bounded("10s"), idle = "5s" })
 :key_by("page")
 :window(eddy.window.tumbling("1m"))
 :count()
 :map(function(n, ctx)
   return { minute = os.date("!%H:%M", ctx.window.start / 1000), page = ctx.key, views = n }
 end)
 :sink("views", { file = "out" })

return p
