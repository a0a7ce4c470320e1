-- The ceiling for the keyed state benchmark: the same running totals in a
-- plain Lua table (in memory, nothing durable), with lua-cjson.
--
--   luajit scripts/bench/state/baseline.lua INPUT... OUTPUT
local cjson = require("cjson")
local decode, encode = cjson.decode, cjson.encode

local inputs, out = dofile(arg[0]:match("^(.*scripts/bench/)") .. "baseline_io.lua")(...)

local totals = {}
for _, path in ipairs(inputs) do
  for line in io.lines(path) do
    local v = decode(line)
    local t = (totals[v.user] or 0) + v.amount
    totals[v.user] = t
    out:write(encode({ user = v.user, total = t }), "\n")
  end
end
assert(out:close())
