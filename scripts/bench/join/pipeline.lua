-- Join benchmark: orders left-joined with a customers table (RocksDB state
-- of the join's uid).  scripts/bench/join/hashjoin.c is the ceiling.
local eddy = require("eddy")
local p = eddy.pipeline()

local customers = p:table("customers", { file = "input/customers.jsonl", key = "id" })
p:source("orders", { file = "input/orders.jsonl", format = "json" })
 :key_by("customer")
 :join(customers, function(o, c, ctx)
   return { order = o.id, customer = ctx.key, amount = o.amount, tier = c and c.tier }
 end, { type = "left" })
 :sink("out", { file = "out", format = "json" })

return p
