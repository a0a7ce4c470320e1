-- The in-memory reference for the windows benchmark: a count per key in a
-- plain Lua table (every input record has its own key, and all fall in one
-- 1h window), written out at the end of input as eddy's windows fire then.
-- Its RSS grows with the number of keys.
--
--   luajit scripts/bench/windows/baseline.lua INPUT... OUTPUT
local cjson = require("cjson")
local decode, encode = cjson.decode, cjson.encode

local inputs, out = dofile(arg[0]:match("^(.*scripts/bench/)") .. "baseline_io.lua")(...)

local counts = {}
for _, path in ipairs(inputs) do
  for line in io.lines(path) do
    local k = decode(line).k
    counts[k] = (counts[k] or 0) + 1
  end
end
for k, n in pairs(counts) do
  out:write(encode({ k = k, n = n }), "\n")
end
assert(out:close())
