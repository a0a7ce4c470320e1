-- Reload benchmark: 2 followed files (2 source tasks) -> key_by -> 2 keyed
-- tasks (4 tasks in all).  scripts/bench/reload-pause.py swaps this file
-- between two versions that tag records differently (TAG is replaced).
local eddy = require("eddy")
local p = eddy.pipeline()
p:source("in", { file = "in-*.txt", format = "lines", follow = true })
 :map(function(v) return { line = v, n = #v } end)
 :key_by("line")
 :map(function(v, ctx) return v.line .. " v" .. ctx.version .. " TAG" end)
 :sink("out", { file = "out", format = "lines" })
return p
