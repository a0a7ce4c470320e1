-- An as-of join: 100 customers whose rows change now and then, and orders
-- joined with the row valid at their event time (versions kept for 1h).
local eddy = require("eddy")
local p = eddy.pipeline()
local customers = p:source("customers", { file = "input/customers.jsonl", timestamp = "ts" }):key_by("id"):to_table()
p:source("orders", { file = "input/orders.jsonl", timestamp = "ts" })
 :key_by("customer")
 :join(customers, function(o, c) return o.id .. " " .. (c and c.city or "-") end,
       { as_of = "event_time", retention = "1h", type = "left" })
 :sink("out", { file = "out", format = "lines" })
return p
