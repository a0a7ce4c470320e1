#!/usr/bin/env luajit
-- Writes the windows benchmark's input: N records, each with its own key,
-- dealt round-robin over 2 files (one partition each). Timestamps rise
-- within each file and all fall in one hour [H, H + 1h), so with a tumbling
-- 1h window every key's window stays open until the end of input: N open
-- windows at once, the worst case for window memory. Deterministic.
--
--   luajit scripts/bench/windows/gen.lua DIR [N]
local dir, n = arg[1], tonumber(arg[2] or 10000000)
if not dir or not n then
  io.stderr:write("usage: luajit scripts/bench/windows/gen.lua DIR [N]\n")
  os.exit(2)
end
local FILES = 2
local H = 1700002800000              -- an hour boundary (472223 h since the epoch)
local HOUR = 3600000
local format, concat, floor = string.format, table.concat, math.floor
for f = 1, FILES do
  local out = assert(io.open(format("%s/part-%d.jsonl", dir, f), "wb"))
  local buf, nbuf = {}, 0
  for i = f - 1, n - 1, FILES do
    nbuf = nbuf + 1
    buf[nbuf] = format('{"k":"k%07d","ts":%d}\n', i, H + floor(i * HOUR / n))
    if nbuf == 8192 then
      out:write(concat(buf, "", 1, nbuf))
      nbuf = 0
    end
  end
  if nbuf > 0 then out:write(concat(buf, "", 1, nbuf)) end
  assert(out:close())
end
