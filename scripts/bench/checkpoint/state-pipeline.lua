-- Checkpoint benchmark, state size: one value state per key (a ~200-byte
-- string), written by every record and never emitted.  The input file is
-- followed, so the job runs until SIGTERM; scripts/bench/checkpoint/state-size.py
-- loads every key, then rewrites 1% of them, and times the checkpoints.
local eddy = require("eddy")
local p = eddy.pipeline()

p:source("in", { file = "input/in.jsonl", format = "json", follow = true })
 :key_by("k")
 :process{
   process = function(v, ctx) ctx.state:value("v"):set(v.v) end,
 }
 :uid("big-state")
 :sink("out", { file = "out", format = "json" })

return p
