-- Tests of the wordcount pipeline: run them with `bin/eddy test examples/wordcount`.
-- The driver runs the real pipeline in-process; the file source "words"
-- and the stdout sink "counts" are replaced by in-memory ones.
local T = require("eddy.testing")

local T0 = 1700000040000                 -- 2023-11-14 22:14:00 UTC, a minute's start

-- the lines a run printed, sorted (windows of several words at one end fire
-- in key-group order, which these tests need not know)
local function sorted(lines) table.sort(lines); return lines end

T.test("counts words per minute, case-folded, without empty words", function()
  local d = T.driver("eddy.conf.lua")
  d:input("words", { word = "River", ts = T0 + 1000 })
  d:input("words", { word = "eddy", ts = T0 + 2000 })
  d:input("words", { word = "river", ts = T0 + 3000 })
  d:input("words", { word = "", ts = T0 + 4000 })
  d:input("words", { word = 42, ts = T0 + 5000 })
  T.eq(d:output("counts"), {})            -- the minute is still open
  d:close()                               -- end of input: every window fires
  T.eq(sorted(d:output("counts")), { "22:14  eddy     1", "22:14  river    2" })
end)

T.test("a minute closes when the watermark (5 s behind the latest word) passes its end", function()
  local d = T.driver("eddy.conf.lua")
  d:input("words", { word = "river", ts = T0 + 10000 })
  d:input("words", { word = "eddy", ts = T0 + 64999 })    -- watermark T0 + 59998: not yet
  T.eq(d:output("counts"), {})
  d:input("words", { word = "river", ts = T0 + 65000 })   -- watermark T0 + 59999: 22:14 is complete
  T.eq(d:output("counts"), { "22:14  river    1" })
  d:input("words", { word = "stone", ts = T0 + 58000 })   -- too late for 22:14: dropped
  d:close()
  T.eq(sorted(d:output("counts")), { "22:15  eddy     1", "22:15  river    1" })
end)

-- (the one the README shows)
T.test("a minute closes when the watermark passes its end", function()
  local d = T.driver("eddy.conf.lua")        -- or "pipeline.lua"; opts override the config
  d:input("words", { word = "River", ts = 1700000041000 })   -- one record into source "words"
  d:input("words", { word = "river", ts = 1700000043000 })
  T.eq(d:output("counts"), {})               -- the minute is still open
  d:advance_watermark("words", 1700000099999)
  T.eq(d:output("counts"), { "22:14  river    2" })
end)
