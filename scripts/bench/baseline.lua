-- The ceiling for per-record Lua work: the stateless benchmark's filter and
-- map as a plain LuaJIT loop with lua-cjson, no runtime around it.
--
--   luajit scripts/bench/baseline.lua INPUT... OUTPUT
local cjson = require("cjson")
local decode, encode, upper = cjson.decode, cjson.encode, string.upper

local inputs, out = dofile(arg[0]:match("^(.*scripts/bench/)") .. "baseline_io.lua")(...)

-- The same functions as stateless/pipeline.lua.
local function keep(v) return v.amount >= 10 end
local function shape(v)
  return { id = v.id, user = v.user, word = upper(v.word), cents = v.amount * 100, ts = v.ts }
end

for _, path in ipairs(inputs) do
  for line in io.lines(path) do
    local v = decode(line)
    if keep(v) then
      out:write(encode(shape(v)), "\n")
    end
  end
end
assert(out:close())
