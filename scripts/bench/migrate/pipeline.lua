-- Migration benchmark (scripts/reload-migrate.py): a followed file of
-- "key x" lines -> key_by -> a running total per key in a process
-- operator's state.  The script swaps MIGRATE for a migrate function (a new
-- one each reload, so each runs) or for nothing, and TAG for the version.
local eddy = require("eddy")
local p = eddy.pipeline()
p:source("in", { file = "in.txt", format = "lines", follow = true })
 :map(function(v) local k, x = v:match("^(%S+) (%d+)$"); return { k = k, x = tonumber(x) } end)
 :key_by("k")
 :process{
   process = function(v, ctx)
     local s = ctx.state:value("agg")
     local a = s:get() or { sum = 0, n = 0 }
     a.sum, a.n = a.sum + v.x, a.n + 1
     s:set(a)
     if a.n % 1000 == 0 then return ctx.key .. " " .. a.sum .. " TAG" end
   end,
   MIGRATE
 }
 :uid("totals")
 :sink("out", { file = "out", format = "lines" })
return p
