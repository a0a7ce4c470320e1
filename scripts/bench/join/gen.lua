#!/usr/bin/env luajit
-- Writes the join benchmark's input: KEYS customer rows and N orders whose
-- customer is one of them (deterministic).
--
--   luajit scripts/bench/join/gen.lua DIR N KEYS
local dir, n, keys = arg[1], tonumber(arg[2] or 5000000), tonumber(arg[3] or 1000000)
if not dir or not n or not keys then
  io.stderr:write("usage: luajit scripts/bench/join/gen.lua DIR N KEYS\n")
  os.exit(2)
end
local TIERS = { "bronze", "silver", "gold", "platinum" }
math.randomseed(7)
local random, format = math.random, string.format
local function write(path, count, row)
  local f = assert(io.open(path, "wb"))
  local buf = {}
  for i = 1, count do
    buf[#buf + 1] = row(i)
    if #buf == 10000 then f:write(table.concat(buf)); buf = {} end
  end
  f:write(table.concat(buf))
  f:close()
end
write(dir .. "/customers.jsonl", keys, function(i)
  return format('{"id":"c%d","tier":"%s","since":%d}\n', i, TIERS[random(4)], 2000 + random(25))
end)
write(dir .. "/orders.jsonl", n, function(i)
  return format('{"id":%d,"customer":"c%d","amount":%.2f}\n', i, random(keys), random(1, 100000) / 100)
end)
