-- eddy.runtime.task — one task's runtime: new() builds its state (rt, the
-- one table every part of the runtime shares), its operator chain, and
-- returns the functions C calls: batch (once per batch of input records),
-- inputs_changed (an input ended, went idle, or sent a watermark), finish
-- (all input ended, or eddy stops) and tick (processing time).  The batch
-- loop merges input watermarks at keyed tasks, fires what they complete
-- (advance), and applies the error policy record by record.
-- Calls: eddy.runtime.plan, .ctx, .errors, .operators, .source; rt.native
-- (state_mark/undo); eddy.runtime.c (eddy_log, eddy_now_ms).
local ffi = require("ffi")
local C = require("eddy.runtime.c")
local values = require("eddy.runtime.values")
local plan = require("eddy.runtime.plan")
local context = require("eddy.runtime.ctx")
local errors = require("eddy.runtime.errors")
local operators = require("eddy.runtime.operators")
local source = require("eddy.runtime.source")

local NONE, INF = values.NONE, values.INF
local K = {}

-- The task's runtime state.  The fields that change as records go by:
--   recs, data    the batch being processed (tio.recs, tio.data)
--   cur           its record index, or nil outside a record
--   cur_key       key of the current record, when the source sets one
--   cur_ts        event time of what is being processed
--   cur_kts       the Kafka timestamp of the message being processed (source tasks)
--   wm, maxts     this task's watermark, and a source's largest timestamp:
--                 both kept in C (tio.wm, tio.maxts) so they survive reloads
--   out_wm        the watermark the records this task sends downstream carry:
--                 the one that stood before what is being processed (a record,
--                 or the advance that fires windows and timers), so a task
--                 downstream applies it before that record, whichever task the
--                 records in between went to
--   pending_wm    a source: the watermark its current record moves it to
--   firing        while a window's result goes downstream: {key, window}
--   cur_proc      the process operator being called: its ctx.state, timers, emit, side
--   stopping      finish() at a stop: timers are kept, not fired
--   last_tb       the traceback of the last error (errors.lua)
-- and what stays: args, task, tio, native, nodes, inset (the task's nodes),
-- children, cin/cout (records in and out per node), ctx, windows (what
-- advance and tick call: {id, advance = fn(i), tick = fn(now) or nil}),
-- shared (a join's state common to its two inputs), handler, on_error, log,
-- op, build, current_key.
local function new_rt(args)
  local rt = {
    args = args, task = args.task, tio = ffi.cast("eddy_io *", args.io), native = args.native,
    cur_ts = NONE, cur_kts = NONE, wm = NONE, maxts = NONE, out_wm = NONE, stopping = false,
    windows = {}, shared = {}, cin = {}, cout = {}, inset = {}, children = {}, starting = {},
  }
  rt.log = function(level, limited, msg) C.eddy_log(rt.task, level, limited and 1 or 0, msg) end
  args.log = function(msg) rt.log(1, false, msg) end
  local p = plan.load_pipeline(args)
  rt.nodes = p.nodes
  for _, id in ipairs(args.stage_nodes) do rt.inset[id] = true end
  for _, n in ipairs(rt.nodes) do
    plan.resolve_durations(n)
    for _, i in ipairs(n.inputs) do
      rt.children[i] = rt.children[i] or {}
      table.insert(rt.children[i], n.id)
    end
    rt.cin[n.id] = 0; rt.cout[n.id] = 0
  end
  rt.ctx = context.new(rt)
  rt.current_key = function() return context.current_key(rt) end
  rt.op = function(id, parent) return operators.op(rt, id, parent) end
  rt.build = function(id) return operators.build(rt, id) end
  errors.install(rt)
  return rt
end

-- fires what the watermark completed; i is the record that moved it (or nil)
-- before: the watermark before this advance (the records its firings
-- send carry it: a task downstream applies the new one after them)
local function advance(rt, i, before)
  rt.out_wm = before
  local windows = rt.windows
  for k = 1, #windows do windows[k].advance(i) end
  rt.out_wm = rt.wm
end

-- keyed tasks: the watermark of each input channel (kept in C, tio.chan_wm);
-- the task's is the minimum over inputs that are not idle; an ended input
-- counts as +inf but does not count as active.  With every input idle
-- nothing holds the watermark back: it moves to the highest of the idle
-- inputs' (as Flink's valve does), so which input went idle last does not
-- decide what fires.  Ended inputs are left out of that (only the end of
-- every input makes the watermark +inf, in finish).  True when it moved.
local function merge_watermark(rt)
  local tio, ninputs = rt.tio, rt.args.ninputs or 0
  local cw, cidle = tio.chan_wm, tio.chan_idle
  local m, active, idle_max = INF, false, nil
  for c = 0, ninputs - 1 do
    local w = tonumber(cw[c])
    if cidle[c] == 0 then
      if w < m then m = w end
      if w < INF then active = true end
    elseif w < INF and (idle_max == nil or w > idle_max) then
      idle_max = w
    end
  end
  if not active then m = idle_max end
  if m and m > rt.wm then rt.wm = m; tio.wm = m; return true end
  return false
end

-- operators with keyed state: each record's writes can be undone when it fails
local function has_state(rt)
  for _, n in ipairs(rt.nodes) do
    if (n.kind == "process" or n.kind == "dedup" or n.kind == "join" or n.kind == "global_table" or n.kind == "window")
      and rt.inset[n.id] then
      return true
    end
  end
  return false
end

-- the functions C calls for this task (rt built, its chain in process)
local function entry_points(rt, process)
  local tio, native, nodes, cin, cout = rt.tio, rt.native, rt.nodes, rt.cin, rt.cout
  local node_in = ffi.cast("uint64_t *", rt.args.node_in)
  local node_out = ffi.cast("uint64_t *", rt.args.node_out)
  local keyed, has_windows, stateful = rt.args.keyed, #rt.windows > 0, has_state(rt)
  local state_mark, state_undo = native.state_mark, native.state_undo
  local handler, on_error = rt.handler, rt.on_error
  local function flush_counts()
    for id = 1, #nodes do node_in[id] = cin[id]; node_out[id] = cout[id] end
  end
  -- what operators do on the task's thread before its first record
  -- (rt.starting: a state migration's start), once
  local function first()
    local s = rt.starting
    if not s then return end
    rt.starting = nil
    for i = 1, #s do s[i]() end
  end

  local function batch()
    if rt.starting then first() end
    local recs = tio.recs
    rt.recs, rt.data = recs, tio.data
    rt.wm, rt.maxts = tonumber(tio.wm), tonumber(tio.maxts)
    rt.out_wm = rt.wm
    local n = tio.n
    local ch = tio.channel
    local cw = tio.chan_wm
    for i = 0, n - 1 do
      rt.cur = i
      tio.cur = i
      rt.last_tb = nil
      rt.cur_proc = nil
      if keyed then
        -- the watermark its source had before this record: what it completes
        -- fires before the record is processed
        local w = tonumber(recs[i].wm)
        if w > tonumber(cw[ch]) and w < INF then
          cw[ch] = w
          local before = rt.wm
          if merge_watermark(rt) and has_windows then advance(rt, i, before) end
          rt.out_wm = rt.wm
        end
        rt.cur_ts = tonumber(recs[i].ts)
        rt.cur = i; tio.cur = i; rt.last_tb = nil
      end
      if stateful then state_mark() end
      local ok, err = xpcall(process, handler, i)
      if not ok then
        if stateful then state_undo() end     -- a failed record's state writes do not count
        on_error(err, i)
      end
      local pending = rt.pending_wm
      if pending then                         -- a source: the record's own watermark
        if pending > rt.wm then rt.wm = pending; tio.wm = pending; rt.out_wm = pending end
        rt.pending_wm = nil
      end
    end
    rt.cur = nil
    flush_counts()
  end

  -- an input ended, went idle, or sent a watermark without records
  local function inputs_changed()
    if rt.starting then first() end
    rt.wm = tonumber(tio.wm)
    rt.out_wm = rt.wm
    local before = rt.wm
    if merge_watermark(rt) and has_windows then advance(rt, nil, before) end
    flush_counts()
  end

  -- stopped: eddy stops (SIGTERM), the input did not end: event-time timers
  -- and open windows stay in the store for the next run
  local function finish(stopped)
    if rt.starting then first() end
    rt.stopping = stopped == 1
    if rt.stopping then flush_counts(); return end
    local before = rt.wm
    rt.wm = INF
    tio.wm = INF
    if has_windows then advance(rt, nil, before) end
    flush_counts()
  end

  -- processing-time triggers (the task calls this every few ms when asked to)
  local function tick()
    if rt.starting then first() end
    local now = tonumber(C.eddy_now_ms())
    local windows = rt.windows
    for k = 1, #windows do
      local win = windows[k]
      if win.tick then
        rt.last_tb = nil
        local ok, err = xpcall(win.tick, handler, now)
        if not ok then on_error(err, nil) end
        rt.firing = nil
      end
    end
    flush_counts()
  end

  return { batch = batch, inputs_changed = inputs_changed, finish = finish, tick = tick }
end

-- args: script, dir, ffi, os, task (lightuserdata), io (lightuserdata),
-- node_in, node_out (lightuserdata: uint64_t per node), name (task name),
-- stage_nodes = {ids}, roots = {ids}, keyed = bool, ninputs (keyed tasks),
-- sinks = {[node id] = sink index}, sources = {[index] = {name, format,
-- files, kafka}}, on_error, version, native = {shuffle, unpack, ...}.
-- Returns { batch = fn, inputs_changed = fn, finish = fn, tick = fn }.
function K.new(args)
  local rt = new_rt(args)
  local process = source.build(rt)
  return entry_points(rt, process), rt
end

return K
