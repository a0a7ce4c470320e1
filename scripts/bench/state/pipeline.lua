-- Keyed state benchmark: a running total per user (1M users by default) in
-- value state on RocksDB, one state read and one write per record.
-- scripts/bench/state/ceiling.c does the same in C on RocksDB directly.
local eddy = require("eddy")
local p = eddy.pipeline()

p:source("in", { file = "input/*.jsonl", format = "json" })
 :key_by("user")
 :process{
   process = function(v, ctx)
     local total = ctx.state:value("total")
     local t = (total:get() or 0) + v.amount
     total:set(t)
     return { user = ctx.key, total = t }
   end,
 }
 :sink("out", { file = "out", format = "json" })

return p
