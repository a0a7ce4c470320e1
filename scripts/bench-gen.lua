#!/usr/bin/env luajit
-- Writes benchmark input: N JSON lines, one record per line, deterministic
-- for a given seed (LuaJIT's PRNG is the same on every platform).
--
--   luajit scripts/bench-gen.lua OUT [N] [SEED]
--
-- N defaults to 1,000,000 and SEED to 1. Ids run from (SEED-1)*N + 1, so
-- files written with seeds 1, 2, ... hold distinct ids. About 60% of the
-- records have amount >= 10 (what the stateless benchmark keeps).
local out_path, n, seed = arg[1], tonumber(arg[2] or 1000000), tonumber(arg[3] or 1)
if not out_path or not n or not seed then
  io.stderr:write("usage: luajit scripts/bench-gen.lua OUT [N] [SEED]\n")
  os.exit(2)
end

local WORDS = { "river", "stone", "cloud", "ember", "maple", "harbor", "falcon", "meadow",
  "lantern", "copper", "willow", "glacier", "thunder", "orchid", "canyon", "velvet",
  "saffron", "tundra", "quartz", "breeze", "cobalt", "dune", "fjord", "grove", "island",
  "jasper", "kelp", "lagoon", "mosaic", "nectar", "onyx", "prairie", "quill", "reef",
  "summit", "timber", "umber", "valley", "wren", "yarrow", "zephyr", "a", "eddy",
  "stream", "window", "watermark", "checkpoint", "barrier", "partition", "offset" }
local TAGS = { "a", "b", "c", "new", "promo", "mobile", "web", "retry", "vip", "eu" }
local COUNTRIES = { "DE", "FR", "US", "GB", "NL", "SE", "JP", "BR", "IN", "ES", "IT", "PL" }

math.randomseed(seed)
local random, format, concat = math.random, string.format, table.concat

local f = assert(io.open(out_path, "wb"))
local buf, nbuf = {}, 0
local first_id = (seed - 1) * n
local ts = 1700000000000 + (seed - 1) * 86400000

for i = 1, n do
  ts = ts + random(0, 40)                      -- mostly ordered, like real event time
  local amount
  if random() < 0.4 then
    amount = random(0, 999) / 100              -- 0 .. 9.99: dropped by the filter
  else
    amount = random(1000, 50000) / 100         -- 10 .. 500
  end
  local ntags = random(0, 3)
  local tags = ""
  if ntags > 0 then
    local t = {}
    for j = 1, ntags do t[j] = '"' .. TAGS[random(#TAGS)] .. '"' end
    tags = concat(t, ",")
  end
  nbuf = nbuf + 1
  buf[nbuf] = format('{"id":%d,"ts":%d,"user":"u%d","word":"%s","amount":%s,"tags":[%s],"country":"%s"}',
    first_id + i, ts, random(1, 100000), WORDS[random(#WORDS)], tostring(amount), tags,
    COUNTRIES[random(#COUNTRIES)])
  if nbuf == 4096 then
    f:write(concat(buf, "\n", 1, nbuf), "\n")
    nbuf = 0
  end
end
if nbuf > 0 then f:write(concat(buf, "\n", 1, nbuf), "\n") end
assert(f:close())
