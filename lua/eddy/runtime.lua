-- eddy.runtime — what C calls in a VM.  plan(): load the user's script in a
-- sandbox and describe its graph as plain data for core/pipeline.c.
-- task(): build one task's operator chain (closures, no queues between
-- chained operators) and return the functions C calls: once per batch, when
-- an input channel ends, and when all input has ended.  They walk the batch
-- through the FFI, stamp event time and watermarks at sources, merge input
-- watermarks at keyed tasks, fire windows, and apply the error policy
-- record by record.

local ffi = require("ffi")
local cjson = require("cjson")
local eddy = require("eddy")
local sandbox = require("eddy.sandbox")
local effi = require("eddy.ffi")
local C = ffi.C

local M = {}
local ffi_string, band = ffi.string, bit.band
local tonumber, type, tostring, error, xpcall = tonumber, type, tostring, error, xpcall

local NONE = -2 ^ 63          -- no timestamp / no watermark yet (INT64_MIN)
local INF = 2 ^ 62            -- the watermark once input has ended
M.NONE, M.INF = NONE, INF

local function load_pipeline(args)
  local env, load_user_file = sandbox.new({ dir = args.dir, ffi = args.ffi, os = args.os,
    log = args.log or function(msg) io.stderr:write(msg, "\n") end })
  local f, err = load_user_file(args.script, true)
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

local ms_box = ffi.new("int64_t[1]")
-- "5s" -> 5000, through the config's parser; raises naming where it was written.
local function duration_ms(spec, what, where)
  if spec == nil then return nil end
  if C.eddy_parse_duration(tostring(spec), ms_box) ~= 0 then
    error(where .. ": " .. what .. ": expected a duration like \"10s\", got " .. tostring(spec), 0)
  end
  return tonumber(ms_box[0])
end

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

-- The graph as plain data: { {id, kind, name, uid, where, inputs = {..}, opts = {scalars}} }.
function M.plan(args)
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
    if type(n.timestamp) == "function" then opts.timestamp = "<function>" end
    out[i] = { id = n.id, kind = n.kind, name = n.name, uid = n.uid, where = n.where,
               inputs = n.inputs, opts = opts }
  end
  return out
end

-- key → the string that is hashed and that keyed operators see as ctx.key
local function key_string(k)
  local t = type(k)
  if t == "string" then return k end
  if t == "number" then
    if k == math.floor(k) and k >= -2^53 and k <= 2^53 then return string.format("%d", k) end
    return string.format("%.17g", k)
  end
  if t == "boolean" then return tostring(k) end
  error("a key must be a string, number or boolean, got " .. t, 0)
end
M.key_string = key_string

-- A number as text: integers exactly, other numbers as Lua prints them.
local function number_text(n)
  if n == math.floor(n) and n >= -2^63 and n < 2^63 then return string.format("%d", n) end
  return tostring(n)
end
M.number_text = number_text

-- A timestamp value → ms since the epoch, or nil.  Numbers below 1e11 are
-- seconds (1e11 ms is 1973; 1e11 s is the year 5138), strings are numbers or
-- ISO-8601 date-times.
local function to_ms(x)
  local t = type(x)
  if t == "number" then
    if x ~= x or x == math.huge or x == -math.huge then return nil end
    if x < 1e11 and x > -1e11 then x = x * 1000 end
    x = math.floor(x)
    -- years 1 to 9999 (EDDY_TS_MIN/MAX in core/ffi_api.h): 1e300 is no time
    if x < -62135596800000 or x > 253402300799999 then return nil end
    return x
  end
  if t == "string" then
    local n = tonumber(x)
    if n then return to_ms(n) end
    if C.eddy_parse_time(x, #x, ms_box) == 0 then return tonumber(ms_box[0]) end
  end
  return nil
end
M.to_ms = to_ms

-- args: script, dir, ffi, os, task (lightuserdata), io (lightuserdata),
-- name (task name), stage_nodes = {ids}, roots = {ids}, keyed = bool,
-- ninputs (keyed tasks), sinks = {[node id] = sink index},
-- sources = {[index] = {name, format, files}}, on_error, version,
-- native = {shuffle, unpack}.  Returns { batch = fn, inputs_changed = fn, finish = fn }.
function M.task(args)
  local task = args.task
  local tio = ffi.cast("eddy_io *", args.io)
  local native = args.native
  local shuffle, unpack_value = native.shuffle, native.unpack
  local json_encode = native.json_encode
  local log = function(level, limited, msg) C.eddy_log(task, level, limited and 1 or 0, msg) end
  args.log = function(msg) log(1, false, msg) end
  local p = load_pipeline(args)
  local nodes = p.nodes
  local inset, children = {}, {}
  for _, id in ipairs(args.stage_nodes) do inset[id] = true end
  for _, n in ipairs(nodes) do
    resolve_durations(n)
    for _, i in ipairs(n.inputs) do
      children[i] = children[i] or {}
      table.insert(children[i], n.id)
    end
  end
  local cin, cout = {}, {}
  for _, n in ipairs(nodes) do cin[n.id] = 0; cout[n.id] = 0 end

  local DECODING = -1           -- tio.cur_node while a source decodes its input
  local recs, data              -- the batch being processed
  local cur                     -- its record index, or nil outside a record
  local cur_key                 -- key of the current record, when the source sets one
  local cur_ts = NONE           -- event time of what is being processed
  local cur_kts = NONE          -- the Kafka timestamp of the message being processed (source tasks)
  local wm = NONE               -- this task's watermark, and a source's largest timestamp:
  local maxts = NONE            -- both kept in C (tio.wm, tio.maxts) so they survive reloads
  -- the watermark the records this task sends downstream carry: the one that
  -- stood before what is being processed (a record, or the advance that fires
  -- windows and timers), so a task downstream applies it before that record,
  -- whichever task the records in between went to
  local out_wm = NONE
  local pending_wm              -- a source: the watermark its current record moves it to
  local firing                  -- while a window's result goes downstream: {key, window}
  local ctx = {}
  local getters = {
    ts = function() if cur_ts == NONE then return nil end return cur_ts end,
    partition = function()
      if not cur then return nil end
      local r = recs[cur]
      local s = args.sources[tonumber(r.source) + 1]
      local kp = s and s.kafka and s.kafka[tonumber(r.partition) + 1]
      if kp then return kp.partition end
      return tonumber(r.partition)
    end,
    topic = function()
      if not cur then return nil end
      local r = recs[cur]
      local s = args.sources[tonumber(r.source) + 1]
      local kp = s and s.kafka and s.kafka[tonumber(r.partition) + 1]
      return kp and kp.topic
    end,
    timestamp = function() if cur and cur_kts ~= NONE then return cur_kts end end,
    offset = function() if cur then return tonumber(recs[cur].offset) end end,
    line = function() if cur then local l = recs[cur].line; if l > 0 then return tonumber(l) end end end,
    source = function()
      if not cur then return nil end
      local s = args.sources[tonumber(recs[cur].source) + 1]
      return s and s.name
    end,
    key = function()
      if firing then return firing.key end
      if args.keyed and cur then local r = recs[cur]; return ffi_string(data + r.key_off, r.key_len) end
      return cur_key
    end,
    window = function() return firing and firing.window end,
    watermark = function() if wm == NONE then return -math.huge end return wm end,   -- -inf before the first
    headers = function() if cur and firing == nil then return native.headers(cur) end return {} end,
    version = function() return args.version end,
    task = function() return args.name end,
  }
  setmetatable(ctx, { __index = function(_, k) local g = getters[k]; if g then return g() end end })

  local windows = {}            -- { {w = handle, id = node id, advance = fn(i), tick = fn(now) or nil} }
  local build, op
  local window_op               -- builds a window operator (below)
  local process_op              -- builds a process operator (below)
  local interval_join_op        -- builds one side of a join of two streams (below)
  local temporal_join_op        -- builds one side of a temporal (as-of) join (below)
  local cur_proc                -- the process operator being called: its ctx.state, timers, emit, side
  local stopping = false        -- finish() at a stop: timers are kept, not fired
  getters.state = function() return cur_proc and cur_proc.state end
  getters.timers = function() return cur_proc and cur_proc.timers end
  getters.emit = function() return cur_proc and cur_proc.emit end
  getters.side = function() return cur_proc and cur_proc.side end
  -- the key being processed and its key group: a record's, or a firing's (window, timer)
  local function current_key()
    if firing then return firing.key, tonumber(native.keygroup(firing.key)) end
    local r = recs[cur]
    return ffi_string(data + r.key_off, r.key_len), tonumber(r.kg)
  end
  local last_tb, handler, on_error   -- the error policy (below)
  -- Fires the timers of operator id (uid) of one kind ("e", "p") due at
  -- upto, in time order, each through call(key, kg, ts) with ctx.key its
  -- key; a timer set meanwhile that is due too fires in the same round.  A
  -- failing call's state writes are undone and the error policy has it.
  local function fire_timers(id, uid, kind, upto, call)
    local due = native.timers_due
    while true do
      local tss, keys = due(uid, kind, upto)
      if #tss == 0 then return end
      for j = 1, #tss do
        local key = keys[j]
        firing = { key = key }
        local saved_ts = cur_ts
        tio.cur_node = id
        last_tb = nil
        native.state_mark()
        local ok, err = xpcall(call, handler, key, tonumber(native.keygroup(key)), tss[j])
        firing, cur_ts, cur_proc = nil, saved_ts, nil
        if not ok then native.state_undo(); on_error(err, nil) end
      end
    end
  end

  op = function(id, parent)
    local node = nodes[id]
    local kind, fn = node.kind, node.fn
    if kind == "map" then
      local nxt = build(id)
      return function(v)
        tio.cur_node = id; cin[id] = cin[id] + 1
        local r = fn(v, ctx)
        if r ~= nil then cout[id] = cout[id] + 1; nxt(r) end
      end
    elseif kind == "filter" then
      local nxt = build(id)
      return function(v)
        tio.cur_node = id; cin[id] = cin[id] + 1
        if fn(v, ctx) then cout[id] = cout[id] + 1; nxt(v) end
      end
    elseif kind == "flat_map" then
      local nxt = build(id)
      return function(v)
        tio.cur_node = id; cin[id] = cin[id] + 1
        local arr = fn(v, ctx)
        if arr ~= nil then
          if type(arr) ~= "table" then error("flat_map must return an array or nil, got " .. type(arr), 0) end
          for i = 1, #arr do cout[id] = cout[id] + 1; nxt(arr[i]) end
        end
      end
    elseif kind == "union" or kind == "side" then
      local nxt = build(id)
      return function(v) cin[id] = cin[id] + 1; cout[id] = cout[id] + 1; nxt(v) end
    elseif kind == "key_by" then
      local field, kfn = node.opts.field, node.key
      return function(v)
        tio.cur_node = id; cin[id] = cin[id] + 1
        local k
        if field then
          if type(v) ~= "table" then error("key_by '" .. field .. "': the value is a " .. type(v) .. ", not a table", 0) end
          k = v[field]
          if k == nil then error("key_by '" .. field .. "': the record has no field '" .. field .. "'", 0) end
        else
          k = kfn(v, ctx)
          if k == nil then error("key_by: the key function returned nil", 0) end
        end
        shuffle(id, key_string(k), v, cur_ts, out_wm, firing == nil)
        cout[id] = cout[id] + 1
      end
    elseif kind == "window" then
      return window_op(id)
    elseif kind == "process" then
      return process_op(id)
    elseif kind == "global_table" then
      -- every row once in the daemon's state store (key group 0): every task reads it
      local uid, put, del = node.uid, native.state_put, native.state_del
      return function(v)
        tio.cur_node = id; cin[id] = cin[id] + 1
        local k = ctx.key
        if k == nil then error("global table '" .. node.name .. "': a record without a key (set the key option)", 0) end
        if v == nil or v == cjson.null then del(uid, 0, k, "t", "row") else put(uid, 0, k, "t", "row", nil, v) end
      end
    elseif kind == "join" and node.opts.interval then
      return interval_join_op(id, parent)
    elseif kind == "join" and node.opts.temporal then
      return temporal_join_op(id, parent)
    elseif kind == "join" and node.opts.tables then
      -- table-table: each side's row per key; a change emits the joined row,
      -- or a tombstone (cjson.null) when a pair that was emitted broke up
      local nxt, uid = build(id), node.uid
      local get, put, del = native.state_get, native.state_put, native.state_del
      local mine = (parent == node.inputs[1]) and "L" or "R"
      return function(v)
        tio.cur_node = id; cin[id] = cin[id] + 1
        local key, kg = current_key()
        if v == nil or v == cjson.null then del(uid, kg, key, "t", mine) else put(uid, kg, key, "t", mine, nil, v) end
        local l, r = get(uid, kg, key, "t", "L"), get(uid, kg, key, "t", "R")
        local out
        if l ~= nil and r ~= nil then out = fn(l, r, ctx) end
        if out ~= nil then
          put(uid, kg, key, "v", "joined", nil, true)
          cout[id] = cout[id] + 1; nxt(out)
        elseif get(uid, kg, key, "v", "joined") then
          del(uid, kg, key, "v", "joined")
          cout[id] = cout[id] + 1; nxt(cjson.null)
        end
      end
    elseif kind == "join" and node.opts.global then
      local nxt, guid, inner, get = build(id), node.opts.global, node.opts.type ~= "left", native.state_get
      local kfield, kfn = node.opts.key_field, type(node.key) == "function" and node.key or nil
      return function(v)
        tio.cur_node = id; cin[id] = cin[id] + 1
        local k
        if kfield then
          if type(v) ~= "table" then error("join key '" .. kfield .. "': the value is a " .. type(v) .. ", not a table", 0) end
          k = v[kfield]
        else
          k = kfn(v, ctx)
        end
        local right = k ~= nil and get(guid, 0, key_string(k), "t", "row", nil, true) or nil
        if right == nil and inner then return end
        local out = fn(v, right, ctx)
        if out ~= nil then cout[id] = cout[id] + 1; nxt(out) end
      end
    elseif kind == "join" then
      -- stream-table: the table's side keeps the latest row per key (a nil
      -- value, a Kafka tombstone, deletes it); the stream's side joins it
      local nxt, uid, inner = build(id), node.uid, node.opts.type ~= "left"
      local get, put, del = native.state_get, native.state_put, native.state_del
      if parent == node.inputs[2] and parent ~= node.inputs[1] then
        return function(v)
          tio.cur_node = id; cin[id] = cin[id] + 1
          local k, kg = current_key()
          if v == nil or v == cjson.null then del(uid, kg, k, "t", "row") else put(uid, kg, k, "t", "row", nil, v) end
        end
      end
      return function(v)
        tio.cur_node = id; cin[id] = cin[id] + 1
        local k, kg = current_key()
        local right = get(uid, kg, k, "t", "row")
        if right == nil and inner then return end
        local out = fn(v, right, ctx)
        if out ~= nil then cout[id] = cout[id] + 1; nxt(out) end
      end
    elseif kind == "dedup" then
      local nxt, uid, ttl, dedup = build(id), node.uid, node.opts.ttl_ms, native.dedup
      return function(v)
        tio.cur_node = id; cin[id] = cin[id] + 1
        local k, kg = current_key()
        local t = cur_ts ~= NONE and cur_ts or tonumber(C.eddy_now_ms())
        if dedup(uid, kg, k, t, ttl) then cout[id] = cout[id] + 1; nxt(v) end
      end
    elseif kind == "sink" then
      local sidx, fmt, name = args.sinks[id], node.opts.format, node.name
      local enc
      if fmt == "json" then
        enc = json_encode         -- core/codec_json.cc: the rules in docs/contract.md ("JSON")
      else
        enc = function(v)
          local t = type(v)
          if t == "string" then return v end
          if t == "number" then return number_text(v) end
          error("sink '" .. name .. "': format " .. fmt .. " needs a string or number, got " .. t, 0)
        end
      end
      if node.opts.kafka then
        -- a Kafka record: its key (a field or a function) and the event time
        local kfield, kfn = node.opts.key_field, type(node.key) == "function" and node.key or nil
        return function(v)
          tio.cur_node = id; cin[id] = cin[id] + 1
          local k
          if kfield then
            if type(v) == "table" and v[kfield] ~= nil then k = key_string(v[kfield]) end
          elseif kfn then
            local x = kfn(v, ctx)
            if x ~= nil then k = key_string(x) end
          elseif ctx.key ~= nil then
            k = ctx.key                              -- after key_by, the record's key
          end
          local s = v ~= cjson.null and enc(v) or nil          -- a nil value (cjson.null) is a tombstone
          local rc = C.eddy_sink_write_kv(task, sidx, k, k and #k or 0, s, s and #s or 0, cur_ts == NONE and -1 or cur_ts,
                                          firing == nil and 1 or 0)
          if rc == -2 then error("sink '" .. name .. "': Kafka refused the record: " .. ffi_string(C.eddy_sink_error(task, sidx)), 0) end
          if rc ~= 0 then error({ fatal = "sink '" .. name .. "' failed (see the log)" }) end
          cout[id] = cout[id] + 1
        end
      end
      if fmt == "json" then
        local json_write = native.json_write           -- encoded into the sink, in C
        return function(v)
          tio.cur_node = id; cin[id] = cin[id] + 1
          if not json_write(sidx, v) then error({ fatal = "sink '" .. name .. "' failed (see the log)" }) end
          cout[id] = cout[id] + 1
        end
      end
      return function(v)
        tio.cur_node = id; cin[id] = cin[id] + 1
        local s = enc(v)
        if C.eddy_sink_write(task, sidx, s, #s) ~= 0 then
          error({ fatal = "sink '" .. name .. "' failed (see the log)" })
        end
        cout[id] = cout[id] + 1
      end
    end
    error("eddy: no runtime for operator kind " .. tostring(kind))
  end

  -- A process operator: the user's process(value, ctx) per record and
  -- on_timer(ts, ctx) per timer, with keyed state and timers in RocksDB
  -- (state.c) under the operator's uid, so they outlive this VM.
  process_op = function(id)
    local node = nodes[id]
    local fns, uid, where = node.fns, node.uid, node.where
    local nxt = build(id)
    local sides = {}
    for _, c in ipairs(children[id] or {}) do
      if nodes[c].kind == "side" and inset[c] then sides[nodes[c].name] = op(c) end
    end
    local get, put, del, entries = native.state_get, native.state_put, native.state_del, native.state_entries
    local key, kg                  -- the key being processed
    local handles = {}
    local function handle(kind, name, make)
      if type(name) ~= "string" or name == "" then error("ctx.state: a state needs a name (a non-empty string)", 3) end
      local h = handles[kind .. name]
      if not h then h = make(); handles[kind .. name] = h end
      return h
    end
    local state = {}
    function state:value(name, o)
      local ttl = o and o.ttl and duration_ms(o.ttl, "state ttl", where) or 0
      return handle("v" .. ttl .. ":", name, function()
        return {
          get = function() return get(uid, kg, key, "v", name) end,
          set = function(_, x) put(uid, kg, key, "v", name, nil, x, ttl) end,
          clear = function() del(uid, kg, key, "v", name) end,
        }
      end)
    end
    function state:list(name)
      return handle("l", name, function()
        return {
          add = function(_, x)
            if x == nil then error("ctx.state list '" .. name .. "': cannot add nil", 2) end
            local l = get(uid, kg, key, "l", name) or {}
            l[#l + 1] = x
            put(uid, kg, key, "l", name, nil, l)
          end,
          get = function() return get(uid, kg, key, "l", name) or {} end,
          clear = function() del(uid, kg, key, "l", name) end,
        }
      end)
    end
    function state:map(name)
      return handle("m", name, function()
        return {
          get = function(_, k) return get(uid, kg, key, "m", name, k) end,
          put = function(_, k, x) put(uid, kg, key, "m", name, k, x) end,
          remove = function(_, k) del(uid, kg, key, "m", name, k) end,
          pairs = function() return next, entries(uid, kg, key, "m", name), nil end,
        }
      end)
    end
    local timer_set, timer_del = native.timer_set, native.timer_del
    local function timer_at(kind, ts)
      if not fns.on_timer then error("ctx.timers: this process operator has no on_timer to call", 3) end
      local t = to_ms(ts)
      if not t then error("ctx.timers: a timer needs a time in ms, got " .. tostring(ts), 3) end
      timer_set(uid, kg, key, kind, t)
    end
    local timers = {
      event = function(_, ts) timer_at("e", ts) end,
      processing = function(_, ts) timer_at("p", ts) end,
      delete = function(_, ts) timer_del(uid, kg, key, to_ms(ts) or ts) end,
    }
    local P = {
      state = state, timers = timers,
      emit = function(v) if v ~= nil then cout[id] = cout[id] + 1; nxt(v) end end,
      side = function(name, v)
        local s = sides[name]
        if not s then error("ctx.side: no p:side(\"" .. tostring(name) .. "\") is declared after this process operator", 2) end
        if v ~= nil then s(v) end
      end,
    }
    if fns.open then
      cur_proc = P
      local ok, err = pcall(fns.open, ctx)
      cur_proc = nil
      if not ok then error(where .. ": process open failed: " .. tostring(err), 0) end
    end
    -- on_timer for each due timer; as with process, a return value is emitted
    local function fire_due(kind, upto)
      fire_timers(id, uid, kind, upto, function(k, g, ts)
        key, kg = k, g
        cur_ts = kind == "e" and ts or NONE
        cur_proc = P
        local out = fns.on_timer(ts, ctx)
        cur_proc = nil
        if out ~= nil then cout[id] = cout[id] + 1; nxt(out) end
      end)
    end
    local entry = { id = id }
    entry.advance = function() if fns.on_timer and wm ~= NONE and not stopping then fire_due("e", wm) end end
    if fns.on_timer then
      C.eddy_task_wants_ticks(task)
      entry.tick = function(now) fire_due("p", now) end
    end
    windows[#windows + 1] = entry
    local process = fns.process
    return function(v)
      tio.cur_node = id; cin[id] = cin[id] + 1
      key, kg = current_key()
      cur_proc = P
      local out = process(v, ctx)
      cur_proc = nil
      if out ~= nil then cout[id] = cout[id] + 1; nxt(out) end
    end
  end

  -- A join of two keyed streams by event time: a left record at tl matches
  -- a right one at tr when tl - before <= tr <= tl + after.  Each side's
  -- records wait in keyed state (maps "L" and "R" of the join's uid) until
  -- the watermark passes the last time a match could come (tl + after,
  -- tr + before); an event-time timer then frees them and, for left and
  -- outer joins, emits those that never matched with nil on the other side.
  -- the keys of a table of map entries, sorted (their names sort by time)
  local function sorted_keys(t)
    local ks = {}
    for k in pairs(t) do ks[#ks + 1] = k end
    table.sort(ks)
    return ks
  end
  local interval_shared = {}
  interval_join_op = function(id, parent)
    local node = nodes[id]
    local o, uid, fn = node.opts, node.uid, node.fn
    local before, after, jtype = o.before_ms, o.after_ms, o.type
    local left_side = parent == node.inputs[1]
    local get, put, del, entries = native.state_get, native.state_put, native.state_del, native.state_entries
    local sh = interval_shared[id]
    if not sh then
      sh = { nxt = build(id) }
      interval_shared[id] = sh
      -- cleanup: every entry whose wait is over goes, unmatched ones emitted first
      local function sweep(key, kg, now)
        local left = 0
        for _, side in ipairs({ "L", "R" }) do
          local wait = side == "L" and after or before
          local emit_unmatched = (side == "L" and jtype ~= "inner") or (side == "R" and jtype == "outer")
          local es = entries(uid, kg, key, "m", side)
          for _, sub in ipairs(sorted_keys(es)) do
            local e = es[sub]
            if e.ts + wait <= now then
              if emit_unmatched and not e.m then
                cur_ts = e.ts
                local out
                if side == "L" then out = fn(e.v, nil, ctx) else out = fn(nil, e.v, ctx) end
                if out ~= nil then cout[id] = cout[id] + 1; sh.nxt(out) end
              end
              del(uid, kg, key, "m", side, sub)
            else
              left = left + 1
            end
          end
        end
        if left == 0 then del(uid, kg, key, "v", "seq") end    -- nothing waits: the key has no state
      end
      local entry = { id = id }
      entry.advance = function()
        if wm ~= NONE and not stopping then fire_timers(id, uid, "e", wm, sweep) end
      end
      windows[#windows + 1] = entry
    end
    local nxt = sh.nxt
    local mine, theirs = left_side and "L" or "R", left_side and "R" or "L"
    return function(v)
      tio.cur_node = id; cin[id] = cin[id] + 1
      if cur_ts == NONE then error("a join of two streams needs event time: set the timestamp option of the sources", 0) end
      local key, kg = current_key()
      local t = cur_ts
      local seq = (get(uid, kg, key, "v", "seq") or 0) + 1
      put(uid, kg, key, "v", "seq", nil, seq)
      local matched = false
      local es = entries(uid, kg, key, "m", theirs)
      for _, sub in ipairs(sorted_keys(es)) do
        local e = es[sub]
        local tl, tr = left_side and t or e.ts, left_side and e.ts or t
        if tr >= tl - before and tr <= tl + after then
          matched = true
          if not e.m then e.m = true; put(uid, kg, key, "m", theirs, sub, e) end
          local saved = cur_ts
          cur_ts = tl > tr and tl or tr
          local out
          if left_side then out = fn(v, e.v, ctx) else out = fn(e.v, v, ctx) end
          cur_ts = saved
          if out ~= nil then cout[id] = cout[id] + 1; nxt(out) end
        end
      end
      -- wait for matches until the watermark passes the last possible one
      put(uid, kg, key, "m", mine, string.format("%020.0f:%d", t + 2 ^ 62, seq), { v = v, ts = t, m = matched })
      native.timer_set(uid, kg, key, "e", t + (left_side and after or before))
    end
  end

  -- A temporal join: the table side keeps every version of a key's row by
  -- its event time (map "V"); a stream record waits (map "S") until the
  -- watermark -- the minimum over both inputs -- has passed its event time,
  -- then joins the version valid at that time: the latest at or before it.
  -- So the result does not depend on how the two inputs interleave.
  -- Versions older than the watermark minus retention go, except the one
  -- still valid then.
  local temporal_shared = {}
  local function time_sub(t, seq) return string.format("%020.0f:%010d", t + 2 ^ 62, seq or 0) end
  temporal_join_op = function(id, parent)
    local node = nodes[id]
    local o, uid, fn = node.opts, node.uid, node.fn
    local retention, inner = o.retention_ms, o.type ~= "left"
    local get, put, del, entries = native.state_get, native.state_put, native.state_del, native.state_entries
    local sh = temporal_shared[id]
    if not sh then
      sh = { nxt = build(id) }
      temporal_shared[id] = sh
      -- the records of key whose time the watermark passed join their versions
      -- Each key keeps floors ("v" "sfloor", "vfloor"): the sub keys below
      -- which its waiting records and its versions are all gone, so a
      -- release reads from there and never walks what it deleted before.
      local function release(key, kg, now)
        -- sub keys hold times rounded to 1024 ms (doubles past 2^62): read
        -- a bucket further, and compare the times themselves
        local upto = time_sub(now + 1)          -- every record after now is at or above this
        local reach = time_sub(now + 2049)
        local vfloor = get(uid, kg, key, "v", "vfloor")
        local versions = entries(uid, kg, key, "m", "V", vfloor, reach)
        local vkeys = sorted_keys(versions)
        local sfloor = get(uid, kg, key, "v", "sfloor")
        local waiting = entries(uid, kg, key, "m", "S", sfloor, reach)
        for _, sub in ipairs(sorted_keys(waiting)) do
          local e = waiting[sub]
          if e.ts <= now then                   -- (later ones in the bucket wait)
            local row
            for _, vk in ipairs(vkeys) do
              local ver = versions[vk]
              if ver.ts <= e.ts then row = ver.row else break end
            end
            if row == cjson.null then row = nil end       -- deleted at that time
            if row ~= nil or not inner then
              cur_ts = e.ts
              local out = fn(e.v, row, ctx)
              if out ~= nil then cout[id] = cout[id] + 1; sh.nxt(out) end
            end
            del(uid, kg, key, "m", "S", sub)
          end
        end
        put(uid, kg, key, "v", "sfloor", nil, upto)
        -- none waits any more: the sequence starts again (the floor stays)
        if next(entries(uid, kg, key, "m", "S", upto, nil)) == nil then del(uid, kg, key, "v", "seq") end
        -- old versions: keep the last one at or before the cutoff (still valid then)
        local cutoff = now - retention
        local keep
        for i, vk in ipairs(vkeys) do if versions[vk].ts <= cutoff then keep = i end end
        for i = 1, (keep or 1) - 1 do del(uid, kg, key, "m", "V", vkeys[i]) end
        if keep and keep > 1 then put(uid, kg, key, "v", "vfloor", nil, vkeys[keep]) end
      end
      local entry = { id = id }
      entry.advance = function()
        if wm ~= NONE and not stopping then
          fire_timers(id, uid, "e", wm, function(key, kg) release(key, kg, wm) end)
        end
      end
      windows[#windows + 1] = entry
    end
    local table_side = parent == node.inputs[2] and parent ~= node.inputs[1]
    return function(v)
      tio.cur_node = id; cin[id] = cin[id] + 1
      if cur_ts == NONE then error("a temporal join needs event time on both inputs: set the timestamp option", 0) end
      local key, kg = current_key()
      if table_side then
        -- a version of the row from cur_ts on (nil: deleted from then on)
        local sub = time_sub(cur_ts)
        put(uid, kg, key, "m", "V", sub, { ts = cur_ts, row = v == nil and cjson.null or v })
        local floor = get(uid, kg, key, "v", "vfloor")
        if floor and sub < floor then put(uid, kg, key, "v", "vfloor", nil, sub) end   -- an older version came late
        native.timer_set(uid, kg, key, "e", cur_ts + retention)   -- old versions are swept then
      else
        local seq = (get(uid, kg, key, "v", "seq") or 0) + 1
        put(uid, kg, key, "v", "seq", nil, seq)
        local sub = time_sub(cur_ts, seq)
        put(uid, kg, key, "m", "S", sub, { v = v, ts = cur_ts })
        local floor = get(uid, kg, key, "v", "sfloor")
        if floor and sub < floor then put(uid, kg, key, "v", "sfloor", nil, sub) end   -- behind the watermark
        native.timer_set(uid, kg, key, "e", cur_ts)
      end
    end
  end

  -- A window operator.  Its state is in C (window.c) so that it outlives this
  -- VM; the trigger decides when a window's result goes downstream:
  --   event_time (default): when the watermark passes the window's end, and
  --     again for a record within the lateness ("late");
  --   every(d): the same, plus early firings every d of processing time
  --     while the window changes;
  --   processing_time(): when the processing-time clock passes the end;
  --   count(n): every n records of a window;
  --   a table of callbacks returning "continue" | "fire" | "fire_and_purge" | "purge".
  window_op = function(id)
    local node = nodes[id]
    local o = node.opts
    local sessions = o.assigner == "session"
    local global = o.assigner == "global"
    local w = C.eddy_window_open(task, node.uid, o.size_ms, sessions and -1 or o.advance_ms, o.offset_ms, o.lateness_ms)
    if w == nil then error(node.where .. ": window '" .. node.uid .. "' has state from another assigner", 0) end
    local agg, field, xfn, fns = o.agg, o.field, node.fn, node.fns
    local in_lua = agg == "reduce" or agg == "aggregate" or agg == "apply"
    local trig, tfns = o.trigger or "event_time", node.trigger_fns or {}
    local per_window = trig == "count" or trig == "processing_time" or trig == "custom"
    local nxt = build(id)
    local late_out                 -- the side output's chain, when this task runs it
    for _, c in ipairs(children[id] or {}) do
      if nodes[c].kind == "side" and inset[c] then late_out = op(c) end
    end
    local pack, unpack_all = native.pack, native.unpack_all
    local function state_of(f) return ffi_string(f.state, f.state_len) end
    local counted = o.assigner == "count"
    local result
    if counted then
      -- count windows keep { seen = records so far, values = the last n } per key
      local function fold(values)
        if agg == "apply" then return xfn(values, ctx) end
        if agg == "reduce" then
          local acc = values[1]
          for i = 2, #values do acc = xfn(acc, values[i], ctx) end
          return acc
        end
        if agg == "aggregate" then
          local acc = fns.init(ctx)
          for i = 1, #values do acc = fns.add(acc, values[i], ctx) end
          if fns.result then return fns.result(acc, ctx) end
          return acc
        end
        if agg == "count" then return #values end
        local sum, mn, mx = 0, math.huge, -math.huge
        for i = 1, #values do
          local x = values[i]
          sum = sum + x
          if x < mn then mn = x end
          if x > mx then mx = x end
        end
        if agg == "sum" then return sum elseif agg == "min" then return mn elseif agg == "max" then return mx end
        return sum / #values
      end
      result = function(f)
        local st = unpack_all(state_of(f), true)
        -- at the end of input: only records that no firing covered yet
        if #st.values == 0 or st.fired == st.seen then return nil end
        firing.window.count = #st.values
        return fold(st.values)
      end
    elseif agg == "count" then result = function(f) return f.count end
    elseif agg == "sum" then result = function(f) return f.sum end
    elseif agg == "min" then result = function(f) return f.min end
    elseif agg == "max" then result = function(f) return f.max end
    elseif agg == "avg" then result = function(f) return f.sum / f.count end
    elseif agg == "reduce" then result = function(f) return unpack_all(state_of(f), true) end
    elseif agg == "aggregate" then
      result = function(f)
        local acc = unpack_all(state_of(f), true)
        if fns.result then return fns.result(acc, ctx) end
        return acc
      end
    else
      result = function(f) return xfn(unpack_all(state_of(f), false), ctx) end
    end
    local function window_of(start, stop, how, count)
      if global or counted then return { firing = how, count = count } end
      return { start = start, ["end"] = stop, firing = how, count = count }
    end
    local function emit(f, how)
      if f.count == 0 then return end            -- purged, or never held anything
      tio.seq = tio.seq + 1                      -- progress, for the watchdog: each firing is a call of its own
      local start, stop = tonumber(f.start), tonumber(f["end"])
      firing = { key = ffi_string(f.key, f.klen), window = window_of(start, stop, how, f.count) }
      cur_ts = stop - 1
      local r = result(f)
      if r ~= nil then cout[id] = cout[id] + 1; nxt(r) end
    end
    local function too_late(v)
      if late_out then late_out(v) else C.eddy_window_drop_late(w) end
    end
    local function need_time()
      if cur_ts == NONE then error("a window needs event time: set the timestamp option of the source", 0) end
    end
    -- carries out a trigger's answer for the window (key, start)
    local function act(action, k, start, how)
      if action == nil or action == "continue" then return end
      if action ~= "fire" and action ~= "fire_and_purge" and action ~= "purge" then
        error("window trigger returned " .. tostring(action) .. " (continue, fire, fire_and_purge or purge)", 0)
      end
      local r = C.eddy_window_fire(w, k, #k, start, action == "fire" and 0 or 1)
      if r == 1 and action ~= "purge" then emit(C.eddy_window_fired(w, 0), how) end
    end
    -- calls a trigger callback with ctx.window set to the window
    local function ask(fn, arg, k, start, stop, count)
      local saved_ts, saved = cur_ts, firing
      firing = { key = k, window = window_of(start, stop, nil, count) }
      local ok, action = pcall(fn, arg, ctx)
      firing, cur_ts = saved, saved_ts
      if not ok then error(action, 0) end
      return action
    end

    local entry = { w = w, id = id }
    windows[#windows + 1] = entry

    -- the watermark moved: windows whose end it passed are due
    -- at the end of input every remaining window fires: for triggers the
    -- watermark does not drive, fire what changed since it last fired
    -- every open window, copied out of the store (acting on one changes the store)
    local info_cap, info = 256, nil
    local function open_windows()
      info = info or ffi.new("eddy_window_info[?]", info_cap)
      local n = C.eddy_window_list(w, info, info_cap)
      while n == info_cap do
        info_cap = info_cap * 4
        info = ffi.new("eddy_window_info[?]", info_cap)
        n = C.eddy_window_list(w, info, info_cap)
      end
      local list = {}
      for j = 0, n - 1 do
        local x = info[j]
        list[j + 1] = { key = ffi_string(x.key, x.klen), start = tonumber(x.start), stop = tonumber(x["end"]),
                        mark = tonumber(x.mark), dirty = x.dirty ~= 0, due = x.due ~= 0, count = tonumber(x.count) }
      end
      return list
    end

    local function fire_changed()
      for _, d in ipairs(open_windows()) do
        if d.dirty then act("fire", d.key, d.start, "on_time") end
      end
      firing = nil
    end

    entry.advance = function(i)
      if wm >= INF and (trig == "processing_time" or trig == "count") then
        last_tb = nil
        local ok, err = xpcall(fire_changed, handler)
        if not ok then on_error(err, i) end
      end
      -- the store fires a few thousand windows a call: call until none is left
      local n = C.eddy_window_advance(w, wm)
      if n < 0 then error("window " .. node.uid .. ": cannot fire its windows", 0) end
      if n == 0 then return end
      if trig == "event_time" or trig == "every" then
        while n > 0 do
          for j = 0, n - 1 do
            last_tb = nil
            local ok, err = xpcall(emit, handler, C.eddy_window_fired(w, j), "on_time")
            if not ok then on_error(err, i) end
          end
          n = C.eddy_window_advance(w, wm)
        end
        firing = nil
        return
      end
      if trig ~= "custom" then                 -- count, processing_time: the watermark only frees state
        while n > 0 do n = C.eddy_window_advance(w, wm) end
        return
      end
      while n > 0 do
        -- custom: the due windows may be freed by this very advance (lateness 0),
        -- so fire from the copies it returned; purge the ones still kept afterwards
        -- (purging calls into the window store, which drops those copies)
        local purges = {}
        for j = 0, n - 1 do
          local f = C.eddy_window_fired(w, j)
          last_tb = nil
          local ok, err = xpcall(function()
            local action = "fire"
            if tfns.on_event_time then
              local k = ffi_string(f.key, f.klen)
              action = ask(tfns.on_event_time, tonumber(f["end"]) - 1, k, tonumber(f.start), tonumber(f["end"]), tonumber(f.count))
            end
            if action ~= "continue" and action ~= "fire" and action ~= "fire_and_purge" and action ~= "purge" then
              error("window trigger returned " .. tostring(action) .. " (continue, fire, fire_and_purge or purge)", 0)
            end
            if action == "fire" or action == "fire_and_purge" then emit(f, "on_time") end
            if action == "purge" or action == "fire_and_purge" then
              purges[#purges + 1] = { ffi_string(f.key, f.klen), tonumber(f.start) }
            end
          end, handler)
          if not ok then on_error(err, i) end
        end
        firing = nil
        for _, d in ipairs(purges) do C.eddy_window_fire(w, d[1], #d[1], d[2], 1) end
        n = C.eddy_window_advance(w, wm)
      end
    end

    -- processing-time triggers: called every few ms by the task (eddy_task_wants_ticks)
    local every_ms = o.trigger_every_ms
    if trig == "every" or trig == "processing_time" or (trig == "custom" and tfns.on_processing_time) then
      C.eddy_task_wants_ticks(task)
      -- processing time, not the watermark, fires these windows: the watermark
      -- must not free one whose changes have not fired yet
      if trig == "processing_time" then C.eddy_window_keep_unfired(w) end
      entry.tick = function(now)
        for _, d in ipairs(open_windows()) do
          local k, start, stop, mark, dirty, due, count = d.key, d.start, d.stop, d.mark, d.dirty, d.due, d.count
          if trig == "every" then
            -- early results while the window is open and changing
            if not due and dirty then
              if mark == 0 then C.eddy_window_mark(w, k, #k, start, now)
              elseif now - mark >= every_ms then
                act("fire", k, start, "early")
                C.eddy_window_mark(w, k, #k, start, now)
              end
            end
          elseif stop - 1 <= now and (mark == 0 or (dirty and trig == "processing_time")) then
            C.eddy_window_mark(w, k, #k, start, now)
            if trig == "processing_time" then
              act("fire", k, start, mark == 0 and "on_time" or "late")
            else
              act(ask(tfns.on_processing_time, stop - 1, k, start, stop, count), k, start, "on_time")
            end
          end
        end
        firing = nil
      end
    end

    local starts = ffi.new("int64_t[64]")
    local len_box = ffi.new("size_t[1]")
    local count_box = ffi.new("double[1]")
    -- after a record went into window (k, start): what the trigger says
    local function on_element(v, k, start, due)
      local count = count_box[0]
      if trig == "count" then
        if count % o.trigger_count == 0 then act("fire", k, start, due and "late" or "early") end
      elseif trig == "custom" and tfns.on_element then
        local stop = start + o.size_ms
        act(ask(tfns.on_element, v, k, start, stop, count), k, start, due and "late" or "early")
      end
    end

    -- the number a built-in aggregate adds for a record
    local function number_of(v)
      if agg == "count" then return 1 end
      local x
      if xfn then x = xfn(v, ctx) elseif field then x = type(v) == "table" and v[field] or nil else x = v end
      if type(x) == "number" then return x end
      -- a numeric string (CSV fields are strings) counts as its number
      local n = type(x) == "string" and tonumber(x) or nil
      if n == nil or n ~= n then
        error(agg .. " needs a number, got " .. (type(x) == "string" and ("the string \"" .. x:sub(1, 40) .. "\"")
          or type(x)) .. (field and (" in field '" .. field .. "'") or ""), 0)
      end
      return n
    end

    -- the state a Lua window function keeps for window (k, start), with v added
    local function updated_state(v, k, start)
      if agg == "apply" then return pack(v), 2 end
      local p = C.eddy_window_state(w, k, #k, start, len_box)
      local acc
      if agg == "reduce" then
        if p == nil then acc = v else acc = xfn(unpack_all(ffi_string(p, len_box[0]), true), v, ctx) end
      else
        if p == nil then acc = fns.init(ctx) else acc = unpack_all(ffi_string(p, len_box[0]), true) end
        acc = fns.add(acc, v, ctx)
      end
      return pack(acc), 1
    end

    -- adds one record's item (its value for Lua functions, its number for the
    -- built-in aggregates) to window (k, start); true when the watermark had
    -- already passed the window's end
    local function add_to(k, start, item)
      local r
      if in_lua then
        local b, mode = updated_state(item, k, start)
        r = C.eddy_window_store(w, k, #k, start, b, #b, mode, count_box)
      else
        r = C.eddy_window_add_at(w, k, #k, start, item, count_box)
      end
      if r < 0 then error("out of memory in window " .. node.uid, 0) end
      return r == 1
    end

    if o.assigner == "sliding" then
      -- each key keeps its recent records ({ts, item}) in a buffer (C, like
      -- all window state); a record joins the windows of buffered records
      -- that end within `size` after it, and ends a window of its own made
      -- of the buffered records within `size` before it
      local size, BUF = o.sliding_ms, -(2 ^ 60)
      local keep = size + o.lateness_ms
      -- the buffers live in a store of their own (one window per key that
      -- never ends, and is never advanced: it only holds bytes)
      local bufs = C.eddy_window_open(task, node.uid .. "#records", 2 ^ 61, 2 ^ 61, -(2 ^ 60), 0)
      if bufs == nil then error(node.where .. ": cannot open the record buffer of window '" .. node.uid .. "'", 0) end
      local item_of = function(v) if in_lua then return v end return number_of(v) end
      return function(v)
        tio.cur_node = id; cin[id] = cin[id] + 1
        need_time()
        local k, t = ctx.key, cur_ts
        local item = item_of(v)
        local p = C.eddy_window_state(bufs, k, #k, BUF, len_box)
        local buf = p ~= nil and unpack_all(ffi_string(p, len_box[0]), true) or {}
        local live, ends, took = {}, {}, false
        for _, e in ipairs(buf) do
          if wm == NONE or e[1] + keep > wm then       -- still inside a window that can change
            live[#live + 1] = e
            ends[e[1]] = true
          end
        end
        local ts = cur_ts
        -- windows of later records that this one falls in (and its own, if a
        -- record with the same time made it already)
        local lates = {}
        for u in pairs(ends) do
          if u >= t and u - size <= t and not (wm ~= NONE and u + o.lateness_ms <= wm) then
            if add_to(k, u - size, item) then lates[#lates + 1] = u - size end
            took = true
          end
        end
        -- its own window: the buffered records within size before it, and itself
        if not ends[t] and not (wm ~= NONE and t + o.lateness_ms <= wm) then
          local due = false
          for _, e in ipairs(live) do
            if e[1] <= t and e[1] >= t - size then due = add_to(k, t - size, e[2]) or due end
          end
          due = add_to(k, t - size, item) or due
          if due then lates[#lates + 1] = t - size end
          took = true
        end
        if not took then return too_late(v) end
        live[#live + 1] = { t, item }
        local b = pack(live)
        C.eddy_window_store(bufs, k, #k, BUF, b, #b, 1, nil)
        -- a window whose end the watermark had passed changed: it fires late
        for _, start in ipairs(lates) do
          if C.eddy_window_fire(w, k, #k, start, 0) == 1 then emit(C.eddy_window_fired(w, 0), "late") end
        end
        firing, cur_ts = nil, ts
      end
    end

    if counted then
      local n_, slide = o.count_n, o.count_slide
      local START = -(2 ^ 60)                   -- the key's one window (global)
      return function(v)
        tio.cur_node = id; cin[id] = cin[id] + 1
        local k = ctx.key
        local p = C.eddy_window_state(w, k, #k, START, len_box)
        local st = p ~= nil and unpack_all(ffi_string(p, len_box[0]), true) or { seen = 0, values = {} }
        local values = st.values
        values[#values + 1] = (agg == "reduce" or agg == "aggregate" or agg == "apply") and v or number_of(v)
        while #values > n_ do table.remove(values, 1) end
        st.seen = st.seen + 1
        local fire = st.seen >= n_ and (st.seen - n_) % slide == 0
        local b = pack(st)
        if C.eddy_window_store(w, k, #k, START, b, #b, 1, count_box) < 0 then error("out of memory in window " .. node.uid, 0) end
        if fire then
          local ts = cur_ts
          if C.eddy_window_fire(w, k, #k, START, 0) == 1 then emit(C.eddy_window_fired(w, 0), "on_time") end
          firing, cur_ts = nil, ts
          st.fired = st.seen
          if slide == n_ then st.values = {} end    -- tumbling: the next window starts empty
          b = pack(st)
          C.eddy_window_store(w, k, #k, START, b, #b, 1, count_box)
        end
      end
    end

    if not in_lua and not per_window then
      -- built-in aggregates fired by the watermark: one call adds to every window
      return function(v)
        tio.cur_node = id; cin[id] = cin[id] + 1
        need_time()
        local x = number_of(v)
        local k = ctx.key
        local r = C.eddy_window_add(w, k, #k, cur_ts, x)
        if r > 0 then
          -- the record changed windows that had fired: each fires again, late
          local ts = cur_ts
          for j = 0, r - 1 do emit(C.eddy_window_fired(w, j), "late") end
          firing, cur_ts = nil, ts
        elseif r == -2 then
          too_late(v)
        elseif r < 0 then
          error("out of memory in window " .. node.uid, 0)
        end
      end
    end

    if sessions then
      -- the sessions the record joins are merged with the user's functions
      -- (aggregate's merge, the reducer, or by concatenating values)
      local range = ffi.new("int64_t[2]")
      return function(v)
        tio.cur_node = id; cin[id] = cin[id] + 1
        need_time()
        local k = ctx.key
        local n = C.eddy_window_session_find(w, k, #k, cur_ts, starts, 64, range)
        if n == -2 then return too_late(v) end
        if n < 0 then error("a record bridges more than 64 sessions", 0) end
        local b
        if agg == "apply" then
          local parts = {}
          for j = 0, n - 1 do
            local p = C.eddy_window_state(w, k, #k, starts[j], len_box)
            if p ~= nil then parts[#parts + 1] = ffi_string(p, len_box[0]) end
          end
          parts[#parts + 1] = pack(v)
          b = table.concat(parts)
        else
          local acc, have = nil, false
          for j = 0, n - 1 do
            local p = C.eddy_window_state(w, k, #k, starts[j], len_box)
            if p ~= nil then
              local st = unpack_all(ffi_string(p, len_box[0]), true)
              if not have then acc, have = st, true
              elseif agg == "reduce" then acc = xfn(acc, st, ctx)
              else acc = fns.merge(acc, st, ctx) end
            end
          end
          if agg == "reduce" then
            if have then acc = xfn(acc, v, ctx) else acc = v end
          else
            if not have then acc = fns.init(ctx) end
            acc = fns.add(acc, v, ctx)
          end
          b = pack(acc)
        end
        local ts = cur_ts
        local r = C.eddy_window_session_put(w, k, #k, starts, n, range[0], range[1], b, #b)
        if r == 1 then
          emit(C.eddy_window_fired(w, 0), "late")
          firing, cur_ts = nil, ts
        elseif r < 0 then
          error("out of memory in window " .. node.uid, 0)
        end
      end
    end

    -- one window at a time: Lua window functions, and triggers that look at each window
    return function(v)
      tio.cur_node = id; cin[id] = cin[id] + 1
      need_time()
      local k = ctx.key
      local x = (not in_lua) and number_of(v) or nil
      local n = C.eddy_window_assign(w, cur_ts, starts, 64)
      if n == 0 then return too_late(v) end
      local ts = cur_ts
      for j = 0, n - 1 do
        local start = starts[j]
        local due = add_to(k, start, in_lua and v or x)
        if per_window then
          on_element(v, k, start, due)
        elseif due then
          emit(C.eddy_window_fired(w, 0), "late")       -- event time: a change after the end fires late
        end
        firing, cur_ts = nil, ts
      end
    end
  end

  build = function(id)
    local fns = {}
    for _, c in ipairs(children[id] or {}) do
      if inset[c] and nodes[c].kind ~= "side" then fns[#fns + 1] = op(c, id) end
    end
    if #fns == 0 then return function() end end
    if #fns == 1 then return fns[1] end
    return function(v) for i = 1, #fns do fns[i](v) end end
  end

  -- what one input record goes through
  local process
  local decode_error_prefix
  if args.keyed then
    local roots = {}
    for _, id in ipairs(args.roots) do roots[id] = build(id) end
    process = function(i)
      local r = recs[i]
      local v = unpack_value(i)
      roots[r.port](v)
    end
  else
    local src = nodes[args.roots[1]]
    local sid = src.id
    local root = build(sid)
    local fmt = src.opts.format
    local skey = src.key
    local tsopt = src.timestamp
    local bound = src.opts.bound_ms or 0
    local wmfn = src.watermark_fn
    local decode
    local json_decode_rec = native.json_decode_rec
    decode_error_prefix = "malformed " .. fmt .. ": "
    if fmt == "json" then
      decode = nil            -- json_decode_rec decodes the record where it lies in the batch
    elseif fmt == "lines" then decode = function(s) if s:byte(-1) == 13 then return s:sub(1, -2) end return s end
    else decode = function(s) return s end end
    local is_kafka = false
    for _, s in ipairs(args.sources) do if s.name == src.name and s.kafka then is_kafka = true end end
    local REC_KEY, TOMBSTONE = effi.REC_KEY, effi.REC_TOMBSTONE
    local stamp
    if tsopt == "kafka" then
      stamp = function()
        if cur_kts == NONE then error("the Kafka message has no timestamp", 0) end
        return cur_kts
      end
    elseif tsopt == "ingest" then
      stamp = function() return tonumber(C.eddy_now_ms()) end
    elseif type(tsopt) == "string" then
      stamp = function(v)
        local raw = type(v) == "table" and v[tsopt] or nil
        local ms = to_ms(raw)
        if not ms then error("no usable timestamp in field '" .. tsopt .. "' (got " .. tostring(raw) .. ")", 0) end
        return ms
      end
    elseif type(tsopt) == "function" then
      stamp = function(v)
        local raw = tsopt(v, ctx)
        local ms = to_ms(raw)
        if not ms then error("the timestamp function returned no usable timestamp (got " .. tostring(raw) .. ")", 0) end
        return ms
      end
    end
    process = function(i)
      local r = recs[i]
      if is_kafka then cur_kts = tonumber(r.ts) end
      tio.cur_node = sid; cin[sid] = cin[sid] + 1
      if band(r.flags, effi.REC_MALFORMED) ~= 0 then
        error(ffi_string(data + r.key_off, r.key_len), 0)
      end
      local v
      local flags = r.flags
      if band(flags, effi.REC_PACKED) ~= 0 then v = unpack_value(i)
      elseif band(flags, TOMBSTONE) ~= 0 then v = fmt == "json" and cjson.null or ""   -- a Kafka message without a value
      else
        tio.cur_node = DECODING
        if decode then v = decode(ffi_string(data + r.val_off, r.val_len)) else v = json_decode_rec(i) end
        tio.cur_node = sid
      end
      if skey ~= nil then
        local k
        if type(skey) == "function" then k = skey(v, ctx) elseif type(v) == "table" then k = v[skey] end
        cur_key = k ~= nil and key_string(k) or nil
      elseif is_kafka then
        -- the message's key (nil for a message without one)
        if band(flags, REC_KEY) ~= 0 then cur_key = ffi_string(data + r.key_off, r.key_len) else cur_key = nil end
      end
      if stamp then
        local ts = stamp(v)
        cur_ts = ts
        if ts > maxts then maxts = ts; tio.maxts = ts end
        -- the record carries the watermark as it stood before it; the one it
        -- moves the partition to applies after it (batch, below), so every
        -- task downstream sees the same watermark before this record
        if wmfn then
          local w = wmfn(ts, v, ctx)
          if w ~= nil then
            w = to_ms(w)
            if not w then error("the watermark function returned no usable time", 0) end
            pending_wm = w
          end
        else pending_wm = maxts - bound - 1 end
        r.ts = ts
        r.wm = wm
      end
      cout[sid] = cout[sid] + 1
      root(v)
    end
  end

  -- error policy
  local policy = args.on_error
  local OOM = "not enough memory"
  handler = function(e)
    -- no traceback for a memory error: building one would need the memory that ran out
    if type(e) == "string" and e ~= OOM then last_tb = debug.traceback(e, 2) end
    return e
  end
  local function node_desc(id)
    local n = nodes[id]
    if not n then return "?" end
    local label = n.kind .. (n.name and (" " .. n.name) or "")
    return label .. " (uid " .. n.uid .. ", " .. n.where .. ")"
  end
  local function position(r)
    if not r then
      if firing then
        return "window [" .. firing.window.start .. ", " .. firing.window["end"] .. ") of key " .. firing.key
      end
      return "(end of input)"
    end
    local s = args.sources[tonumber(r.source) + 1]
    local pos = s and s.name or "?"
    local kp = s and s.kafka and s.kafka[tonumber(r.partition) + 1]
    if kp then return pos .. " topic " .. kp.topic .. " partition " .. kp.partition .. " offset " .. tostring(tonumber(r.offset)) end
    local file = s and s.files and s.files[tonumber(r.partition) + 1]
    if file then pos = pos .. " " .. file end
    if r.line > 0 then pos = pos .. ":" .. tostring(tonumber(r.line)) end
    return pos .. " (byte " .. tostring(tonumber(r.offset)) .. ")"
  end
  -- i: index of the input record at fault, or nil (a window firing at the end)
  on_error = function(err, i)
    if type(err) == "table" and err.fatal then error(err.fatal, 0) end
    -- LuaJIT has no emergency collection: free what the failed call left behind
    -- before this handler allocates anything
    if err == OOM then collectgarbage("collect"); err = OOM .. " (limits.memory)" end
    -- an error raised inside eddy's own Lua files (a sink's encoder, a key) is
    -- the user's problem, not a place in eddy: drop that location
    local msg = tostring(err):gsub("^[^:\n]*/lua/eddy/[%w_]+%.lua:%d+: ", "")
    local id = tio.cur_node
    if id == DECODING then
      msg = decode_error_prefix .. msg:gsub("^[^:]*:%d+: ", "")
      id = args.roots[1]; tio.cur_node = id; last_tb = nil
    end
    local r = i and recs[i] or nil
    tio.errors = tio.errors + 1
    if policy == "fail" then
      error("operator " .. node_desc(id) .. " failed on input " .. position(r) .. ": " .. msg, 0)
    end
    if policy == "dead_letter" then
      local s = r and args.sources[tonumber(r.source) + 1]
      local raw, rec_i
      if r and band(r.flags, effi.REC_PACKED) ~= 0 then
        local ok, v = pcall(unpack_value, i)
        raw = ok and (select(2, pcall(json_encode, v))) or nil
      elseif r then
        rec_i = i             -- its bytes go in as they are, in C (native.dead_letter)
      end
      local ok = native.dead_letter({
        time = tonumber(C.eddy_now_ms()), task = args.name,
        source = s and s.name, file = s and s.files and s.files[tonumber(r.partition) + 1],
        topic = s and s.kafka and s.kafka[tonumber(r.partition) + 1] and s.kafka[tonumber(r.partition) + 1].topic,
        partition = r and (s and s.kafka and s.kafka[tonumber(r.partition) + 1]
                           and s.kafka[tonumber(r.partition) + 1].partition or tonumber(r.partition)),
        offset = r and tonumber(r.offset),
        line = r and r.line > 0 and tonumber(r.line) or nil,
        window = firing and firing.window, key = firing and firing.key,
        operator = nodes[id] and nodes[id].uid, operator_kind = nodes[id] and nodes[id].kind,
        operator_where = nodes[id] and nodes[id].where,
        error = msg, traceback = last_tb, record = raw,
      }, rec_i)
      if not ok then error("cannot write the dead-letter file (see the log)", 0) end
      tio.dead_letters = tio.dead_letters + 1
    else
      tio.skipped = tio.skipped + 1
    end
    log(2, true, (policy == "skip" and "record skipped" or "record dead-lettered") .. ": operator "
      .. node_desc(id) .. " on input " .. position(r) .. ": " .. msg)
  end

  -- fires what the watermark completed; i is the record that moved it (or nil)
  -- before: the watermark before this advance (the records its firings
  -- send carry it: a task downstream applies the new one after them)
  local function advance(i, before)
    out_wm = before
    for k = 1, #windows do windows[k].advance(i) end
    out_wm = wm
  end

  -- keyed tasks: the watermark of each input channel (kept in C); the task's is their minimum
  local ninputs = args.ninputs or 0
  local cw, cidle = tio.chan_wm, tio.chan_idle
  -- the minimum over inputs that are not idle; an ended input counts as +inf
  -- but does not count as active.  With every input idle nothing holds the
  -- watermark back: it moves to the highest of the idle inputs' (as
  -- Flink's valve does), so which input went idle last does not decide
  -- what fires.  Ended inputs are left out of that (only the end of every
  -- input makes the watermark +inf, in finish).
  local function merge_watermark()
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
    if m and m > wm then wm = m; tio.wm = m; return true end
    return false
  end

  local node_in = ffi.cast("uint64_t *", args.node_in)
  local node_out = ffi.cast("uint64_t *", args.node_out)
  local keyed, has_windows = args.keyed, #windows > 0
  -- operators with keyed state: each record's writes can be undone when it fails
  local stateful = false
  for _, n in ipairs(nodes) do
    if (n.kind == "process" or n.kind == "dedup" or n.kind == "join" or n.kind == "global_table" or n.kind == "window")
      and inset[n.id] then
      stateful = true
    end
  end
  local state_mark, state_undo = native.state_mark, native.state_undo
  local function flush_counts()
    for id = 1, #nodes do node_in[id] = cin[id]; node_out[id] = cout[id] end
  end

  local function batch()
    recs, data = tio.recs, tio.data
    wm, maxts = tonumber(tio.wm), tonumber(tio.maxts)
    out_wm = wm
    local n = tio.n
    local ch = tio.channel
    for i = 0, n - 1 do
      cur = i
      tio.cur = i
      last_tb = nil
      cur_proc = nil
      local r = recs[i]
      if keyed then
        -- the watermark its source had before this record: what it completes
        -- fires before the record is processed
        local w = tonumber(r.wm)
        if w > tonumber(cw[ch]) and w < INF then
          cw[ch] = w
          local before = wm
          if merge_watermark() and has_windows then advance(i, before) end
          out_wm = wm
        end
        cur_ts = tonumber(r.ts)
        cur = i; tio.cur = i; last_tb = nil
      end
      if stateful then state_mark() end
      local ok, err = xpcall(process, handler, i)
      if not ok then
        if stateful then state_undo() end     -- a failed record's state writes do not count
        on_error(err, i)
      end
      if pending_wm then                      -- a source: the record's own watermark
        if pending_wm > wm then wm = pending_wm; tio.wm = wm; out_wm = wm end
        pending_wm = nil
      end
    end
    cur = nil
    flush_counts()
  end

  -- an input ended, went idle, or sent a watermark without records
  local function inputs_changed()
    wm = tonumber(tio.wm)
    out_wm = wm
    local before = wm
    if merge_watermark() and has_windows then advance(nil, before) end
    flush_counts()
  end

  -- stopped: eddy stops (SIGTERM), the input did not end: event-time timers
  -- and open windows stay in the store for the next run
  local function finish(stopped)
    stopping = stopped == 1
    if stopping then flush_counts(); return end
    local before = wm
    wm = INF
    tio.wm = INF
    if has_windows then advance(nil, before) end
    flush_counts()
  end

  -- processing-time triggers (the task calls this every few ms when asked to)
  local function tick()
    local now = tonumber(C.eddy_now_ms())
    for k = 1, #windows do
      local win = windows[k]
      if win.tick then
        last_tb = nil
        local ok, err = xpcall(win.tick, handler, now)
        if not ok then on_error(err, nil) end
        firing = nil
      end
    end
    flush_counts()
  end

  return { batch = batch, inputs_changed = inputs_changed, finish = finish, tick = tick }
end

return M
