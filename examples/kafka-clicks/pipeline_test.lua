-- Tests of the kafka-clicks pipeline: `bin/eddy test examples/kafka-clicks`.
-- No broker is needed: the Kafka source "clicks" and the Kafka sink
-- "to-kafka" are in-memory ones (partitions = { clicks = 2 } gives the
-- source two partitions), and processing time is the driver's clock.
local T = require("eddy.testing")

local T0 = 1763726400000                 -- 2025-11-21 12:00:00 UTC, a minute's start

local function by_page(list)
  table.sort(list, function(a, b) return a.page < b.page end)
  return list
end

T.test("the feed writes each click to the topic, keyed by user", function()
  local d = T.driver("eddy.conf.lua")
  d:input("feed", { ts = T0 + 1000, user = "ada", page = "/home" })
  local sent = d:records("to-kafka")
  T.eq(#sent, 1, "messages sent")
  T.eq(sent[1].value, { ts = T0 + 1000, user = "ada", page = "/home" })
  T.eq(sent[1].key, "ada")
end)

T.test("views per page and minute fire when every partition's watermark (10 s bound) has passed the minute", function()
  local d = T.driver("eddy.conf.lua", { partitions = { clicks = 2 } })
  d:input("clicks", { ts = T0 + 1000, user = "ada", page = "/home" }, { partition = 0, key = "ada" })
  d:input("clicks", { ts = T0 + 2000, user = "bob", page = "/home" }, { partition = 1, key = "bob" })
  d:input("clicks", { ts = T0 + 3000, user = "ada", page = "/cart" }, { partition = 0, key = "ada" })
  d:input("clicks", { ts = T0 + 70001, user = "ada", page = "/search" }, { partition = 0, key = "ada" })
  T.eq(d:output("views"), {})             -- partition 1 still holds the watermark back
  d:input("clicks", { ts = T0 + 70001, user = "bob", page = "/search" }, { partition = 1, key = "bob" })
  T.eq(by_page(d:output("views")), {
    { minute = "12:00", page = "/cart", views = 1 },
    { minute = "12:00", page = "/home", views = 2 },
  })
  d:close()
  T.eq(d:output("views"), { { minute = "12:01", page = "/search", views = 2 } })
end)

T.test("a partition idle for 5 s of processing time stops holding the watermark back", function()
  local d = T.driver("eddy.conf.lua", { partitions = { clicks = 2 } })
  d:input("clicks", { ts = T0 + 1000, user = "ada", page = "/home" }, { partition = 0, key = "ada" })
  d:input("clicks", { ts = T0 + 2000, user = "bob", page = "/home" }, { partition = 1, key = "bob" })
  d:advance_clock(4000)
  d:input("clicks", { ts = T0 + 70001, user = "ada", page = "/search" }, { partition = 0, key = "ada" })
  T.eq(d:output("views"), {})             -- partition 1 had a record 4 s ago
  d:advance_clock(2000)                   -- 6 s: partition 1 is idle
  T.eq(d:output("views"), { { minute = "12:00", page = "/home", views = 2 } })
end)
