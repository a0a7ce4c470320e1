#!/usr/bin/env luajit
-- Writes the keyed state benchmark's input: N records over KEYS users,
-- dealt round-robin over 2 files (one partition each). Deterministic.
--
--   luajit scripts/bench/state/gen.lua DIR [N] [KEYS]
local dir, n, keys = arg[1], tonumber(arg[2] or 5000000), tonumber(arg[3] or 1000000)
if not dir or not n or not keys then
  io.stderr:write("usage: luajit scripts/bench/state/gen.lua DIR [N] [KEYS]\n")
  os.exit(2)
end
local FILES = 2
math.randomseed(11)
local random, format, concat = math.random, string.format, table.concat
local outs, bufs = {}, {}
for f = 1, FILES do
  outs[f] = assert(io.open(format("%s/part-%d.jsonl", dir, f), "wb"))
  bufs[f] = {}
end
for i = 1, n do
  local f = i % FILES + 1
  local buf = bufs[f]
  buf[#buf + 1] = format('{"id":%d,"user":"u%d","amount":%.2f}\n', i, random(keys), random(1, 100000) / 100)
  if #buf == 8192 then outs[f]:write(concat(buf)); bufs[f] = {} end
end
for f = 1, FILES do
  outs[f]:write(concat(bufs[f]))
  assert(outs[f]:close())
end
