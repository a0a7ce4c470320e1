-- Tests of the filter-enrich pipeline: `bin/eddy test examples/filter-enrich`.
-- The config's on_error = "dead_letter" holds; the dead letters the
-- daemon would append to dead-letter.jsonl come back from d:dead_letters().
local T = require("eddy.testing")

T.test("keeps purchases, enriched from countries.lua and keyed by user", function()
  local d = T.driver("eddy.conf.lua")
  d:input("events", { ts = 1700000000000, user = "ada", action = "view", amount = 0, country = "DE" })
  d:input("events", { ts = 1700000001000, user = "ada", action = "purchase", amount = 12.5, country = "DE" })
  d:input("events", { ts = 1700000000500, user = "eve", action = "purchase", amount = 19.99, country = "JP" })
  T.eq(d:output("purchases"), {
    { user = "ada", ts = 1700000001000, cents = 1250, country = "Germany", region = "EU", user_key = "ada" },
    { user = "eve", ts = 1700000000500, cents = 1999, country = "Japan", region = "APAC", user_key = "eve" },
  })
  T.eq(d:dead_letters(), {})
end)

T.test("a purchase from an unknown country becomes a dead letter with its record and error", function()
  local d = T.driver("eddy.conf.lua")
  local line = '{"ts":1700000005000,"user":"dan","action":"purchase","amount":7,"country":"XX"}'
  d:input("events", line)
  d:input("events", { ts = 1700000002000, user = "bob", action = "purchase", amount = 3.99, country = "US" })
  T.eq(d:output("purchases"), {
    { user = "bob", ts = 1700000002000, cents = 399, country = "United States", region = "NA", user_key = "bob" } })
  local dl = d:dead_letters()
  T.eq(#dl, 1, "dead letters")
  T.eq(dl[1].source, "events")
  T.eq(dl[1].operator_kind, "map")
  T.eq(dl[1].record, line)
  assert(dl[1].error:find("unknown country code XX", 1, true), dl[1].error)
  T.eq(d:metrics().dead_letters, 1, "metrics.dead_letters")
end)

T.test("a malformed line becomes a dead letter too", function()
  local d = T.driver("eddy.conf.lua")
  local line = '{"ts":1700000002500,"user":"fay","action":"purchase","amount":1.05,"country":"BR"'
  d:input("events", line)
  T.eq(d:output("purchases"), {})
  local dl = d:dead_letters()
  T.eq(#dl, 1, "dead letters")
  T.eq(dl[1].record, line)
  assert(dl[1].error:find("malformed json", 1, true), dl[1].error)
end)

T.test("with on_error = fail, the unknown country stops the pipeline", function()
  local d = T.driver("eddy.conf.lua", { on_error = "fail" })
  local ok, err = pcall(d.input, d, "events", { ts = 1, user = "dan", action = "purchase", amount = 7, country = "XX" })
  T.eq(ok, false, "pcall of the failing input")
  assert(tostring(err):find("task %S+ failed: .*unknown country code XX"), tostring(err))
end)
