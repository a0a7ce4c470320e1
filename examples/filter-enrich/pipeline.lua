-- filter-enrich: keep purchases, enrich them from a lookup module, re-key by
-- user and write JSON lines.  A purchase with an unknown country raises an
-- error, which the config sends to the dead-letter file with the record.
local eddy = require("eddy")
local countries = require("countries")

local p = eddy.pipeline()

p:source("events", { file = "input/*.jsonl", format = "json" })
 :filter(function(e) return e.action == "purchase" end)
 :map(function(e)
   local c = countries[e.country]
   if not c then error("unknown country code " .. tostring(e.country)) end
   return { user = e.user, ts = e.ts, cents = math.floor(e.amount * 100 + 0.5),
            country = c.name, region = c.region }
 end)
 :key_by("user")
 :map(function(v, ctx) v.user_key = ctx.key; return v end)
 :sink("purchases", { file = "out", format = "json" })

return p
