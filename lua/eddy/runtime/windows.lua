-- eddy.runtime.windows — window operators.  Their state is in C (window.c,
-- through the FFI) so that it outlives this VM; Lua adds each record to its
-- windows (one function per assigner: built-in aggregates, one window at a
-- time, sessions, sliding, count windows), computes a fired window's result
-- and sends it downstream (emit).  When a window fires is the trigger's
-- business (eddy.runtime.triggers).  A window operator's parts share one
-- table W (its node, store handle, aggregate, trigger, emit).
-- Calls: eddy.runtime.c (eddy_window_*); eddy.runtime.triggers;
-- rt.native (pack, unpack_all).
local ffi = require("ffi")
local C = require("eddy.runtime.c")
local values = require("eddy.runtime.values")
local triggers = require("eddy.runtime.triggers")

local NONE = values.NONE
local ffi_string = ffi.string
local Wn = {}

-- count windows: the result of the last n values
local function fold(W, vals)
  local agg, xfn, fns, ctx = W.agg, W.xfn, W.fns, W.rt.ctx
  if agg == "apply" then return xfn(vals, ctx) end
  if agg == "reduce" then
    local acc = vals[1]
    for i = 2, #vals do acc = xfn(acc, vals[i], ctx) end
    return acc
  end
  if agg == "aggregate" then
    local acc = fns.init(ctx)
    for i = 1, #vals do acc = fns.add(acc, vals[i], ctx) end
    if fns.result then return fns.result(acc, ctx) end
    return acc
  end
  if agg == "count" then return #vals end
  local sum, mn, mx = 0, math.huge, -math.huge
  for i = 1, #vals do
    local x = vals[i]
    sum = sum + x
    if x < mn then mn = x end
    if x > mx then mx = x end
  end
  if agg == "sum" then return sum elseif agg == "min" then return mn elseif agg == "max" then return mx end
  return sum / #vals
end

-- function(f): the value fired window f (an eddy_fired) sends downstream
local function result_fn(W)
  local agg, xfn, fns, ctx, rt = W.agg, W.xfn, W.fns, W.rt.ctx, W.rt
  local unpack_all = rt.native.unpack_all
  local function state_of(f) return ffi_string(f.state, f.state_len) end
  if W.counted then
    -- count windows keep { seen = records so far, values = the last n } per key
    return function(f)
      local st = unpack_all(state_of(f), true)
      -- at the end of input: only records that no firing covered yet
      if #st.values == 0 or st.fired == st.seen then return nil end
      rt.firing.window.count = #st.values
      return fold(W, st.values)
    end
  end
  if agg == "count" then return function(f) return f.count end end
  if agg == "sum" then return function(f) return f.sum end end
  if agg == "min" then return function(f) return f.min end end
  if agg == "max" then return function(f) return f.max end end
  if agg == "avg" then return function(f) return f.sum / f.count end end
  if agg == "reduce" then return function(f) return unpack_all(state_of(f), true) end end
  if agg == "aggregate" then
    return function(f)
      local acc = unpack_all(state_of(f), true)
      if fns.result then return fns.result(acc, ctx) end
      return acc
    end
  end
  return function(f) return xfn(unpack_all(state_of(f), false), ctx) end
end

-- W.emit(f, how): sends fired window f downstream with ctx.window set
-- (how: "on_time", "early" or "late")
local function emitter(W)
  local rt, id, nxt, result = W.rt, W.id, W.nxt, W.result
  local tio, cout, window_of = rt.tio, rt.cout, W.window_of
  return function(f, how)
    if f.count == 0 then return end            -- purged, or never held anything
    tio.seq = tio.seq + 1                      -- progress, for the watchdog: each firing is a call of its own
    local start, stop = tonumber(f.start), tonumber(f["end"])
    rt.firing = { key = ffi_string(f.key, f.klen), window = window_of(start, stop, how, f.count) }
    rt.cur_ts = stop - 1
    local r = result(f)
    if r ~= nil then cout[id] = cout[id] + 1; nxt(r) end
  end
end

-- the number a built-in aggregate adds for a record
local function number_fn(W)
  local agg, xfn, field, ctx = W.agg, W.xfn, W.field, W.rt.ctx
  return function(v)
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
end

-- W.add_to(k, start, item): adds one record's item (its value for Lua
-- functions, its number for the built-in aggregates) to window (k, start);
-- true when the watermark had already passed the window's end
local function adder(W)
  local w, agg, xfn, fns, ctx = W.w, W.agg, W.xfn, W.fns, W.rt.ctx
  local pack, unpack_all = W.rt.native.pack, W.rt.native.unpack_all
  local len_box, count_box, uid = W.len_box, W.count_box, W.uid
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
  return function(k, start, item)
    local r
    if W.in_lua then
      local b, mode = updated_state(item, k, start)
      r = C.eddy_window_store(w, k, #k, start, b, #b, mode, count_box)
    else
      r = C.eddy_window_add_at(w, k, #k, start, item, count_box)
    end
    if r < 0 then error("out of memory in window " .. uid, 0) end
    return r == 1
  end
end

local function need_time(rt)
  if rt.cur_ts == NONE then error("a window needs event time: set the timestamp option of the source", 0) end
end

-- a record past every window's lateness: to the side output, or counted
local function too_late(W, v)
  if W.late_out then W.late_out(v) else C.eddy_window_drop_late(W.w) end
end

-- each key keeps its recent records ({ts, item}) in a buffer (C, like
-- all window state); a record joins the windows of buffered records
-- that end within `size` after it, and ends a window of its own made
-- of the buffered records within `size` before it
local function sliding_op(W)
  local rt, id, o, w = W.rt, W.id, W.o, W.w
  local tio, cin, ctx = rt.tio, rt.cin, rt.ctx
  local pack, unpack_all = rt.native.pack, rt.native.unpack_all
  local add_to, emit, len_box = W.add_to, W.emit, W.len_box
  local size, BUF, lateness = o.sliding_ms, -(2 ^ 60), o.lateness_ms
  local keep = size + lateness
  -- the buffers live in a store of their own (one window per key that
  -- never ends, and is never advanced: it only holds bytes)
  local bufs = C.eddy_window_open(rt.task, W.uid .. "#records", 2 ^ 61, 2 ^ 61, -(2 ^ 60), 0)
  if bufs == nil then error(W.node.where .. ": cannot open the record buffer of window '" .. W.uid .. "'", 0) end
  local number_of = W.number_of
  local item_of = function(v) if W.in_lua then return v end return number_of(v) end
  return function(v)
    tio.cur_node = id; cin[id] = cin[id] + 1
    need_time(rt)
    local k, t, wm = ctx.key, rt.cur_ts, rt.wm
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
    -- windows of later records that this one falls in (and its own, if a
    -- record with the same time made it already)
    local lates = {}
    for u in pairs(ends) do
      if u >= t and u - size <= t and not (wm ~= NONE and u + lateness <= wm) then
        if add_to(k, u - size, item) then lates[#lates + 1] = u - size end
        took = true
      end
    end
    -- its own window: the buffered records within size before it, and itself
    if not ends[t] and not (wm ~= NONE and t + lateness <= wm) then
      local due = false
      for _, e in ipairs(live) do
        if e[1] <= t and e[1] >= t - size then due = add_to(k, t - size, e[2]) or due end
      end
      due = add_to(k, t - size, item) or due
      if due then lates[#lates + 1] = t - size end
      took = true
    end
    if not took then return too_late(W, v) end
    live[#live + 1] = { t, item }
    local b = pack(live)
    C.eddy_window_store(bufs, k, #k, BUF, b, #b, 1, nil)
    -- a window whose end the watermark had passed changed: it fires late
    for _, start in ipairs(lates) do
      if C.eddy_window_fire(w, k, #k, start, 0) == 1 then emit(C.eddy_window_fired(w, 0), "late") end
    end
    rt.firing, rt.cur_ts = nil, t
  end
end

-- count windows: the last n records of a key, fired every `slide` records
local function count_op(W)
  local rt, id, o, w = W.rt, W.id, W.o, W.w
  local tio, cin, ctx = rt.tio, rt.cin, rt.ctx
  local pack, unpack_all = rt.native.pack, rt.native.unpack_all
  local len_box, count_box, emit, number_of = W.len_box, W.count_box, W.emit, W.number_of
  local n_, slide, agg = o.count_n, o.count_slide, W.agg
  local START = -(2 ^ 60)                   -- the key's one window (global)
  return function(v)
    tio.cur_node = id; cin[id] = cin[id] + 1
    local k = ctx.key
    local p = C.eddy_window_state(w, k, #k, START, len_box)
    local st = p ~= nil and unpack_all(ffi_string(p, len_box[0]), true) or { seen = 0, values = {} }
    local vals = st.values
    vals[#vals + 1] = (agg == "reduce" or agg == "aggregate" or agg == "apply") and v or number_of(v)
    while #vals > n_ do table.remove(vals, 1) end
    st.seen = st.seen + 1
    local fire = st.seen >= n_ and (st.seen - n_) % slide == 0
    local b = pack(st)
    if C.eddy_window_store(w, k, #k, START, b, #b, 1, count_box) < 0 then error("out of memory in window " .. W.uid, 0) end
    if fire then
      local ts = rt.cur_ts
      if C.eddy_window_fire(w, k, #k, START, 0) == 1 then emit(C.eddy_window_fired(w, 0), "on_time") end
      rt.firing, rt.cur_ts = nil, ts
      st.fired = st.seen
      if slide == n_ then st.values = {} end    -- tumbling: the next window starts empty
      b = pack(st)
      C.eddy_window_store(w, k, #k, START, b, #b, 1, count_box)
    end
  end
end

-- built-in aggregates fired by the watermark: one call adds to every window
local function builtin_op(W)
  local rt, id, w = W.rt, W.id, W.w
  local tio, cin, ctx = rt.tio, rt.cin, rt.ctx
  local emit, number_of = W.emit, W.number_of
  return function(v)
    tio.cur_node = id; cin[id] = cin[id] + 1
    need_time(rt)
    local x = number_of(v)
    local k = ctx.key
    local ts = rt.cur_ts
    local r = C.eddy_window_add(w, k, #k, ts, x)
    if r > 0 then
      -- the record changed windows that had fired: each fires again, late
      for j = 0, r - 1 do emit(C.eddy_window_fired(w, j), "late") end
      rt.firing, rt.cur_ts = nil, ts
    elseif r == -2 then
      too_late(W, v)
    elseif r < 0 then
      error("out of memory in window " .. W.uid, 0)
    end
  end
end

-- sessions: the state of the n sessions a record joins (starts[0..n-1]),
-- merged with the user's functions (aggregate's merge, the reducer, or by
-- concatenating values), with v added
local function merged_sessions(W, k, n, v)
  local w, agg, xfn, fns, ctx = W.w, W.agg, W.xfn, W.fns, W.rt.ctx
  local pack, unpack_all = W.rt.native.pack, W.rt.native.unpack_all
  local starts, len_box = W.starts, W.len_box
  if agg == "apply" then
    local parts = {}
    for j = 0, n - 1 do
      local p = C.eddy_window_state(w, k, #k, starts[j], len_box)
      if p ~= nil then parts[#parts + 1] = ffi_string(p, len_box[0]) end
    end
    parts[#parts + 1] = pack(v)
    return table.concat(parts)
  end
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
  return pack(acc)
end

local function session_op(W)
  local rt, id, w = W.rt, W.id, W.w
  local tio, cin, ctx = rt.tio, rt.cin, rt.ctx
  local starts, emit = W.starts, W.emit
  local range = ffi.new("int64_t[2]")
  return function(v)
    tio.cur_node = id; cin[id] = cin[id] + 1
    need_time(rt)
    local k = ctx.key
    local n = C.eddy_window_session_find(w, k, #k, rt.cur_ts, starts, 64, range)
    if n == -2 then return too_late(W, v) end
    if n < 0 then error("a record bridges more than 64 sessions", 0) end
    local b = merged_sessions(W, k, n, v)
    local ts = rt.cur_ts
    local r = C.eddy_window_session_put(w, k, #k, starts, n, range[0], range[1], b, #b)
    if r == 1 then
      emit(C.eddy_window_fired(w, 0), "late")
      rt.firing, rt.cur_ts = nil, ts
    elseif r < 0 then
      error("out of memory in window " .. W.uid, 0)
    end
  end
end

-- one window at a time: Lua window functions, and triggers that look at each window
local function each_window_op(W)
  local rt, id, w = W.rt, W.id, W.w
  local tio, cin, ctx = rt.tio, rt.cin, rt.ctx
  local starts, emit, add_to, number_of = W.starts, W.emit, W.add_to, W.number_of
  local in_lua, per_window, on_element = W.in_lua, W.per_window, triggers.on_element
  return function(v)
    tio.cur_node = id; cin[id] = cin[id] + 1
    need_time(rt)
    local k = ctx.key
    local x = (not in_lua) and number_of(v) or nil
    local ts = rt.cur_ts
    local n = C.eddy_window_assign(w, ts, starts, 64)
    if n == 0 then return too_late(W, v) end
    for j = 0, n - 1 do
      local start = starts[j]
      local due = add_to(k, start, in_lua and v or x)
      if per_window then
        on_element(W, v, k, start, due)
      elseif due then
        emit(C.eddy_window_fired(w, 0), "late")       -- event time: a change after the end fires late
      end
      rt.firing, rt.cur_ts = nil, ts
    end
  end
end

-- opens window operator id's store and gathers what its parts share
local function open(rt, id)
  local node = rt.nodes[id]
  local o = node.opts
  local sessions = o.assigner == "session"
  local w = C.eddy_window_open(rt.task, node.uid, o.size_ms, sessions and -1 or o.advance_ms, o.offset_ms, o.lateness_ms)
  if w == nil then error(node.where .. ": window '" .. node.uid .. "' has state from another assigner", 0) end
  local agg, trig = o.agg, o.trigger or "event_time"
  local W = {
    rt = rt, id = id, node = node, o = o, w = w, uid = node.uid, sessions = sessions,
    global = o.assigner == "global", counted = o.assigner == "count",
    agg = agg, field = o.field, xfn = node.fn, fns = node.fns,
    in_lua = agg == "reduce" or agg == "aggregate" or agg == "apply",
    trig = trig, tfns = node.trigger_fns or {},
    per_window = trig == "count" or trig == "processing_time" or trig == "custom",
    starts = ffi.new("int64_t[64]"), len_box = ffi.new("size_t[1]"), count_box = ffi.new("double[1]"),
  }
  W.nxt = rt.build(id)
  for _, c in ipairs(rt.children[id] or {}) do   -- the side output's chain, when this task runs it
    if rt.nodes[c].kind == "side" and rt.inset[c] then W.late_out = rt.op(c) end
  end
  -- ctx.window of a firing (global and count windows have no start and end)
  W.window_of = function(start, stop, how, count)
    if W.global or W.counted then return { firing = how, count = count } end
    return { start = start, ["end"] = stop, firing = how, count = count }
  end
  return W
end

-- Builds window operator id: returns its function per record, and
-- registers it with the task (rt.windows) through its trigger.
function Wn.build(rt, id)
  local W = open(rt, id)
  W.result = result_fn(W)
  W.emit = emitter(W)
  W.number_of = number_fn(W)
  W.add_to = adder(W)
  triggers.attach(W)
  if W.o.assigner == "sliding" then return sliding_op(W) end
  if W.counted then return count_op(W) end
  if not W.in_lua and not W.per_window then return builtin_op(W) end
  if W.sessions then return session_op(W) end
  return each_window_op(W)
end

Wn.open = open
return Wn
