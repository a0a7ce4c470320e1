-- eddy.runtime.process — process operators: the user's process(value, ctx)
-- per record and on_timer(ts, ctx) per timer, with keyed state (ctx.state:
-- value, list, map handles) and timers (ctx.timers) in RocksDB (state.c)
-- under the operator's uid, so they outlive this VM.  Also fire_timers, which
-- the joins use for their cleanup timers too.
-- Calls: rt.native (state_*, timer_*, timers_due, keygroup, state_mark/undo);
-- eddy.runtime.c (eddy_task_wants_ticks).
local C = require("eddy.runtime.c")
local values = require("eddy.runtime.values")
local migration = require("eddy.runtime.migrate")

local NONE, to_ms, duration_ms = values.NONE, values.to_ms, values.duration_ms
local P = {}

-- Fires the timers of operator id (uid) of one kind ("e", "p") due at
-- upto, in time order, each through call(key, kg, ts) with ctx.key its
-- key; a timer set meanwhile that is due too fires in the same round.  A
-- failing call's state writes are undone and the error policy has it.
function P.fire_timers(rt, id, uid, kind, upto, call)
  local native, tio = rt.native, rt.tio
  local due = native.timers_due
  while true do
    local tss, keys = due(uid, kind, upto)
    if #tss == 0 then return end
    for j = 1, #tss do
      local key = keys[j]
      rt.firing = { key = key }
      local saved_ts = rt.cur_ts
      tio.cur_node = id
      rt.last_tb = nil
      native.state_mark()
      local ok, err = xpcall(call, rt.handler, key, tonumber(native.keygroup(key)), tss[j])
      rt.firing, rt.cur_ts, rt.cur_proc = nil, saved_ts, nil
      if not ok then native.state_undo(); rt.on_error(err, nil) end
    end
  end
end

-- ctx.state of a process operator: handles on the state of the key that
-- where() returns (key, kg), made once per name and kind
local function state_api(rt, uid, where, at)
  local native = rt.native
  local get, put, del, entries = native.state_get, native.state_put, native.state_del, native.state_entries
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
        get = function() return get(uid, at.kg, at.key, "v", name) end,
        set = function(_, x) put(uid, at.kg, at.key, "v", name, nil, x, ttl) end,
        clear = function() del(uid, at.kg, at.key, "v", name) end,
      }
    end)
  end
  function state:list(name)
    return handle("l", name, function()
      return {
        add = function(_, x)
          if x == nil then error("ctx.state list '" .. name .. "': cannot add nil", 2) end
          local l = get(uid, at.kg, at.key, "l", name) or {}
          l[#l + 1] = x
          put(uid, at.kg, at.key, "l", name, nil, l)
        end,
        get = function() return get(uid, at.kg, at.key, "l", name) or {} end,
        clear = function() del(uid, at.kg, at.key, "l", name) end,
      }
    end)
  end
  function state:map(name)
    return handle("m", name, function()
      return {
        get = function(_, k) return get(uid, at.kg, at.key, "m", name, k) end,
        put = function(_, k, x) put(uid, at.kg, at.key, "m", name, k, x) end,
        remove = function(_, k) del(uid, at.kg, at.key, "m", name, k) end,
        pairs = function() return next, entries(uid, at.kg, at.key, "m", name), nil end,
      }
    end)
  end
  return state
end

-- ctx.timers of a process operator
local function timers_api(rt, uid, fns, at)
  local timer_set, timer_del = rt.native.timer_set, rt.native.timer_del
  local function timer_at(kind, ts)
    if not fns.on_timer then error("ctx.timers: this process operator has no on_timer to call", 3) end
    local t = to_ms(ts)
    if not t then error("ctx.timers: a timer needs a time in ms, got " .. tostring(ts), 3) end
    timer_set(uid, at.kg, at.key, kind, t)
  end
  return {
    event = function(_, ts) timer_at("e", ts) end,
    processing = function(_, ts) timer_at("p", ts) end,
    delete = function(_, ts) timer_del(uid, at.kg, at.key, to_ms(ts) or ts) end,
  }
end

-- Builds process operator id: returns its function per record, and
-- registers its timers with the task (rt.windows: advance, tick).
function P.build(rt, id)
  local nodes, cout, ctx, tio, cin = rt.nodes, rt.cout, rt.ctx, rt.tio, rt.cin
  local node = nodes[id]
  local fns, uid, where = node.fns, node.uid, node.where
  local nxt = rt.build(id)
  local sides = {}
  for _, c in ipairs(rt.children[id] or {}) do
    if nodes[c].kind == "side" and rt.inset[c] then sides[nodes[c].name] = rt.op(c) end
  end
  local at = {}                    -- the key being processed: at.key, at.kg
  local Pr = {
    state = state_api(rt, uid, where, at), timers = timers_api(rt, uid, fns, at),
    emit = function(v) if v ~= nil then cout[id] = cout[id] + 1; nxt(v) end end,
    side = function(name, v)
      local s = sides[name]
      if not s then error("ctx.side: no p:side(\"" .. tostring(name) .. "\") is declared after this process operator", 2) end
      if v ~= nil then s(v) end
    end,
  }
  if fns.open then
    rt.cur_proc = Pr
    local ok, err = pcall(fns.open, ctx)
    rt.cur_proc = nil
    if not ok then error(where .. ": process open failed: " .. tostring(err), 0) end
  end
  -- migrate: a key's states written before a reload pass through it first
  local mig = migration.build(rt, id, uid, fns.migrate, where)
  local before = mig and mig.before
  if mig then rt.starting[#rt.starting + 1] = mig.start end
  -- on_timer for each due timer; as with process, a return value is emitted
  local function fire_due(kind, upto)
    P.fire_timers(rt, id, uid, kind, upto, function(k, g, ts)
      at.key, at.kg = k, g
      if before then before(k, g) end
      rt.cur_ts = kind == "e" and ts or NONE
      rt.cur_proc = Pr
      local out = fns.on_timer(ts, ctx)
      rt.cur_proc = nil
      if out ~= nil then cout[id] = cout[id] + 1; nxt(out) end
    end)
  end
  local entry = { id = id }
  entry.advance = function() if fns.on_timer and rt.wm ~= NONE and not rt.stopping then fire_due("e", rt.wm) end end
  if fns.on_timer or mig then
    C.eddy_task_wants_ticks(rt.task)     -- (a migration starts at the task's first call: a tick at the latest)
    entry.tick = function(now)
      if fns.on_timer then fire_due("p", now) end
      if mig then mig.tick() end
    end
  end
  rt.windows[#rt.windows + 1] = entry
  local process, current_key = fns.process, rt.current_key
  return function(v)
    tio.cur_node = id; cin[id] = cin[id] + 1
    at.key, at.kg = current_key()
    if before then before(at.key, at.kg) end
    rt.cur_proc = Pr
    local out = process(v, ctx)
    rt.cur_proc = nil
    if out ~= nil then cout[id] = cout[id] + 1; nxt(out) end
  end
end

return P
