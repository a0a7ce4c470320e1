-- eddy.runtime — what C calls in a VM (core/pipeline.c, core/task.c).
-- plan(): load the user's script in a sandbox and describe its graph as
-- plain data for core/pipeline.c.  task(): build one task's operator chain
-- (closures, no queues between chained operators) and return the functions
-- C calls: once per batch, when an input channel ends, when all input has
-- ended, and on processing-time ticks.  The parts, one file each:
--   plan.lua      load_pipeline, durations, plan()
--   values.lua    keys, numbers, timestamps, durations; NONE and INF
--   task.lua      the task's state (rt) and its batch loop, watermark merge
--   ctx.lua       the ctx user functions get
--   source.lua    decode, event time and watermarks at a source
--   operators.lua the operator dispatch (kind → builder), stateless kinds, sinks
--   process.lua   process operators, their state and timers
--   joins.lua     table, interval and temporal joins
--   windows.lua   window operators (assigners, aggregates, emit)
--   triggers.lua  when windows fire
--   errors.lua    the error policy
--   c.lua         the C functions (ffi.C), replaceable in unit specs
-- Calls: eddy.runtime.plan, eddy.runtime.task, eddy.runtime.values.
local values = require("eddy.runtime.values")
local plan = require("eddy.runtime.plan")
local task = require("eddy.runtime.task")

local M = {}
M.NONE, M.INF = values.NONE, values.INF
M.key_string, M.number_text, M.to_ms = values.key_string, values.number_text, values.to_ms
M.plan = plan.plan

-- See eddy.runtime.task's new() for args and what it returns.
function M.task(args)
  return (task.new(args))
end

return M
