-- eddy.runtime.plan — loads the user's script in a sandbox, checks the graph
-- it built (side outputs' inputs, uids, a source), converts the durations its
-- nodes were given into ms, and describes the graph as plain data for
-- core/pipeline.c (plan).  Each task loads the script again (load_pipeline).
-- Calls: eddy (is_pipeline), eddy.sandbox, eddy.runtime.values.
local eddy = require("eddy")
local sandbox = require("eddy.sandbox")
local values = require("eddy.runtime.values")

local duration_ms = values.duration_ms
local P = {}

local function load_pipeline(args)
  local env, load_user_file = sandbox.new({ dir = args.dir, ffi = args.ffi, os = args.os,
    log = args.log or function(msg) io.stderr:write(msg, "\n") end })
  local f, err = load_user_file(args.script, true, args.text)
  if not f then error(err, 0) end
  local ok, p = xpcall(f, function(e) return tostring(e) end)
  if not ok then error(p, 0) end
  if not eddy.is_pipeline(p) then
    error(args.script .. ": the script must end with 'return p', returning the pipeline it built", 0)
  end
  -- a side output's inputs are the windows that send their late records to
  -- it, and the process operators before it (ctx.side(name, value))
  for _, n in ipairs(p.nodes) do
    if n.kind == "side" then
      for _, w in ipairs(p.nodes) do
        if w.kind == "process" and w.id < n.id then n.inputs[#n.inputs + 1] = w.id end
        if w.kind == "window" and w.opts.late == n.name then
          if w.id > n.id then
            error(n.where .. ": p:side(\"" .. n.name .. "\") must come after the window that sends late records to it ("
              .. w.where .. ")", 0)
          end
          n.inputs[#n.inputs + 1] = w.id
        end
      end
      if #n.inputs == 0 then
        error(n.where .. ": nothing sends records to side output '" .. n.name .. "': declare it after a process "
          .. "operator, or after a window with late = \"" .. n.name .. "\"", 0)
      end
    end
  end
  local has_source = false
  local seen = {}
  for _, n in ipairs(p.nodes) do
    if n.kind == "source" then has_source = true end
    n.uid = n.uid or (n.kind .. "-" .. n.id)
    -- sources and sinks are named, and their names are a namespace of their
    -- own: a window may take the name of the sink it feeds as its uid
    local space = (n.kind == "source" or n.kind == "sink") and (n.kind .. ":") or ""
    local other = seen[space .. n.uid]
    if other then
      error(n.where .. ": uid '" .. n.uid .. "' is already the uid of the " .. other.kind .. " at " .. other.where, 0)
    end
    seen[space .. n.uid] = n
  end
  if not has_source then error(args.script .. ": the pipeline has no source", 0) end
  return p, env
end
P.load_pipeline = load_pipeline

-- Converts the durations a node was given into ms (in place).
local function resolve_durations(n)
  local o = n.opts
  if n.kind == "window" and (o.assigner == "global" or o.assigner == "count") then
    -- one window [-2^60, 2^60) per key: it ends only when the watermark does (+inf)
    o.size_ms, o.advance_ms, o.offset_ms = 2 ^ 61, 2 ^ 61, -(2 ^ 60)
    o.lateness_ms = 0
    if o.trigger_every then o.trigger_every_ms = duration_ms(o.trigger_every, "trigger every", n.where) end
  elseif n.kind == "window" then
    o.size_ms = duration_ms(o.size, "window size", n.where)
    o.advance_ms = o.assigner == "session" and o.size_ms or duration_ms(o.advance, "window advance", n.where)
    if o.assigner == "sliding" then
      -- windows [t - size, t] are kept in C as [t - size, t + 1): one ms longer
      o.sliding_ms = o.size_ms
      o.size_ms, o.advance_ms = o.size_ms + 1, 1
    end
    o.offset_ms = duration_ms(o.offset, "window offset", n.where)
    o.lateness_ms = duration_ms(o.lateness, "window lateness", n.where)
    if o.trigger_every then o.trigger_every_ms = duration_ms(o.trigger_every, "trigger every", n.where) end
    if o.size_ms <= 0 or o.advance_ms <= 0 then error(n.where .. ": window size and advance must be above 0", 0) end
    if o.advance_ms > o.size_ms then error(n.where .. ": a hopping window's advance cannot exceed its size", 0) end
  elseif n.kind == "dedup" then
    o.ttl_ms = duration_ms(o.ttl, "dedup ttl", n.where)
  elseif n.kind == "join" and o.temporal then
    o.retention_ms = duration_ms(o.retention, "join retention", n.where)
  elseif n.kind == "join" and o.interval then
    o.before_ms = duration_ms(o.before, "join before", n.where)
    o.after_ms = duration_ms(o.after, "join after", n.where)
  elseif n.kind == "source" then
    if o.watermark_bound then o.bound_ms = duration_ms(o.watermark_bound, "watermark bound", n.where) end
    if o.idle then o.idle_ms = duration_ms(o.idle, "idle", n.where) end
  end
end
P.resolve_durations = resolve_durations

-- What a key_by function computes, as far as eddy can tell without running
-- it: its bytecode (no line numbers, so moving it keeps it) and its scalar
-- upvalues, as hex.  A canary refuses a version whose key_code differs
-- (core/canary.c): the two versions would route records differently.
local function key_code(fn)
  local ok, code = pcall(string.dump, fn, true)
  local parts = { ok and code or "a C function" }
  local i = 1
  while true do
    local name, v = debug.getupvalue(fn, i)
    if name == nil then break end
    local t = type(v)
    if t == "string" or t == "number" or t == "boolean" or t == "nil" then
      parts[#parts + 1] = name .. "=" .. t .. ":" .. tostring(v)
    end
    i = i + 1
  end
  return (table.concat(parts, "\0"):gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

-- The graph as plain data: { {id, kind, name, uid, where, inputs = {..}, opts = {scalars}} }.
function P.plan(args)
  local p = load_pipeline(args)
  local out = {}
  for i, n in ipairs(p.nodes) do
    resolve_durations(n)
    local opts = {}
    for k, v in pairs(n.opts) do
      local t = type(v)
      if t == "string" or t == "number" or t == "boolean" then opts[k] = v end
    end
    if n.key ~= nil then opts.key = type(n.key) == "function" and "<function>" or tostring(n.key) end
    if n.kind == "key_by" and type(n.key) == "function" then opts.key_code = key_code(n.key) end
    if n.kind == "process" and n.fns and type(n.fns.migrate) == "function" then
      opts.migrate_code = key_code(n.fns.migrate)      -- (a canary refuses a new migrate)
    end
    if type(n.timestamp) == "function" then opts.timestamp = "<function>" end
    out[i] = { id = n.id, kind = n.kind, name = n.name, uid = n.uid, where = n.where,
               inputs = n.inputs, opts = opts }
  end
  return out
end

return P
