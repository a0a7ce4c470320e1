-- A keyed task of the Lua runtime without a daemon, for the unit specs of
-- windows, triggers and joins (spec/unit/runtime_*_spec.lua).  Not a spec
-- itself.  What is faked, all in Lua:
--   * eddy.runtime.c (the FFI's C functions): durations ("10s", "500ms"),
--     the clock (F.now), the log, the sinks, and the window store
--     (eddy_window_*): a model of core/window.c's documented behaviour
--     (window.h) for tumbling and hopping windows -- assign, add, add_at,
--     store, fire, advance (fires windows with end - 1 <= wm once, frees
--     them at end - 1 + lateness <= wm), list, mark, keep_unfired.  Not
--     session windows.
--   * native (lua_api.c): keyed state in a Lua table, event-time timers,
--     pack/unpack (values kept in a registry, their "bytes" are ids, so
--     appending concatenates), json_write collecting what a sink gets.
-- What is real: every file of lua/eddy/runtime/ and lua/eddy/init.lua, the
-- user's script in the sandbox, the eddy_io / eddy_rec structs (eddy.ffi).
--
--   local F = require("unit.fake_native")
--   local t = F.task(dir, script, { stage = {3, 4}, roots = {2}, sinks = {[4] = 0} })
--   t:records({ {key = "a", ts = 1000, wm = 0, value = 1}, ... })
--   t:watermark(5000); t:finish(); t.out  -- what sink 0 received

local ffi = require("ffi")
local H = require("unit.helpers")
H.require_eddy_ffi()

local F = {}
local NONE = -2 ^ 63

local function parse_duration(s)
  s = tostring(s)
  local n, unit = s:match("^(%d+)(%a*)$")
  if not n then return nil end
  local mult = ({ [""] = 1, ms = 1, s = 1000, m = 60000, h = 3600000, d = 86400000 })[unit]
  return mult and tonumber(n) * mult
end

-- ---- the window store model (core/window.c, window.h) ---------------------

local Store = {}
Store.__index = Store

local function new_store(size, advance, offset, lateness)
  return setmetatable({ size = size, advance = advance, offset = offset, lateness = lateness, wm = NONE,
    wins = {}, fired = {}, keep = false, dropped = 0 }, Store)
end

function Store:expired(stop, wm) return wm ~= NONE and stop - 1 + self.lateness <= wm end

function Store:starts(ts)
  local out = {}
  local last = math.floor((ts - self.offset) / self.advance) * self.advance + self.offset
  local s = last
  while s > ts - self.size do
    if not self:expired(s + self.size, self.wm) then out[#out + 1] = s end
    s = s - self.advance
  end
  return out
end

function Store:get(key, start, create)
  local id = key .. "\0" .. start
  local x = self.wins[id]
  if not x and create then
    x = { key = key, start = start, stop = start + self.size, count = 0, sum = 0, min = 0, max = 0,
          state = "", fired = false, dirty = false, mark = 0 }
    self.wins[id] = x
  end
  return x
end

local function copy(x)
  return { key = x.key, klen = #x.key, start = x.start, ["end"] = x.stop, count = x.count, sum = x.sum,
           min = x.min, max = x.max, state = x.state, state_len = #x.state }
end

local function accumulate(x, v)
  if x.count == 0 then x.min, x.max = v, v end
  x.count = x.count + 1
  x.sum = x.sum + v
  if v < x.min then x.min = v end
  if v > x.max then x.max = v end
  x.dirty = true
end

function Store:sorted()
  local list = {}
  for _, x in pairs(self.wins) do list[#list + 1] = x end
  table.sort(list, function(a, b)
    if a.stop ~= b.stop then return a.stop < b.stop end
    if a.key ~= b.key then return a.key < b.key end
    return a.start < b.start
  end)
  return list
end

local function fake_c(F_)
  local C = {}
  function C.eddy_parse_duration(s, box)
    local ms = parse_duration(s)
    if not ms then return -1 end
    box[0] = ms
    return 0
  end
  function C.eddy_parse_time() return -1 end
  function C.eddy_now_ms() return F_.now end
  function C.eddy_log(_, level, _, msg) F_.logged[#F_.logged + 1] = { level = level, msg = msg } end
  function C.eddy_task_wants_ticks() F_.wants_ticks = true end
  function C.eddy_sink_write(_, sidx, p, n) F_.written[#F_.written + 1] = { sink = sidx, text = p:sub(1, n) }; return 0 end
  function C.eddy_window_open(_, uid, size, advance, offset, lateness)
    if advance < 0 then error("the fake window store has no session windows") end
    local s = new_store(tonumber(size), tonumber(advance), tonumber(offset), tonumber(lateness))
    F_.stores[uid] = s
    return s
  end
  function C.eddy_window_drop_late(w) w.dropped = w.dropped + 1 end
  function C.eddy_window_keep_unfired(w) w.keep = true end
  function C.eddy_window_add(w, key, _, ts, v)
    w.fired = {}
    local starts = w:starts(tonumber(ts))
    if #starts == 0 then return -2 end
    for _, s in ipairs(starts) do
      local x = w:get(key, s, true)
      accumulate(x, v)
      if x.fired then w.fired[#w.fired + 1] = copy(x) end
    end
    return #w.fired
  end
  function C.eddy_window_assign(w, ts, starts, max)
    local list = w:starts(tonumber(ts))
    for i = 1, math.min(#list, max) do starts[i - 1] = list[i] end
    return math.min(#list, max)
  end
  function C.eddy_window_state(w, key, _, start, len)
    local x = w:get(key, tonumber(start), false)
    if not x or x.state == "" then len[0] = 0; return nil end
    len[0] = #x.state
    return x.state
  end
  function C.eddy_window_store(w, key, _, start, p, n, mode, count)
    w.fired = {}
    local x = w:get(key, tonumber(start), true)
    p = p:sub(1, n)
    if mode == 2 then x.state = x.state .. p else x.state = p end
    x.count = x.count + 1
    x.dirty = true
    if count ~= nil then count[0] = x.count end
    if x.fired then w.fired[1] = copy(x); return 1 end
    return 0
  end
  function C.eddy_window_add_at(w, key, _, start, v, count)
    w.fired = {}
    local x = w:get(key, tonumber(start), true)
    accumulate(x, v)
    count[0] = x.count
    return x.fired and 1 or 0
  end
  function C.eddy_window_fire(w, key, _, start, purge)
    w.fired = {}
    local x = w:get(key, tonumber(start), false)
    if not x then return 0 end
    w.fired[1] = copy(x)
    x.dirty = false
    if purge ~= 0 then x.count, x.sum, x.min, x.max, x.state = 0, 0, 0, 0, "" end
    return 1
  end
  function C.eddy_window_fired(w, i) return w.fired[i + 1] end
  function C.eddy_window_advance(w, wm)
    wm = tonumber(wm)
    w.fired = {}
    if wm > w.wm then w.wm = wm end
    for _, x in ipairs(w:sorted()) do
      if not x.fired and x.stop - 1 <= wm then
        x.fired = true
        w.fired[#w.fired + 1] = copy(x)
        if not w.keep then x.dirty = false end
      end
      if w:expired(x.stop, wm) and not (w.keep and x.dirty) then w.wins[x.key .. "\0" .. x.start] = nil end
    end
    return #w.fired
  end
  function C.eddy_window_list(w, info, max)
    local n = 0
    F_.anchor = {}
    for _, x in ipairs(w:sorted()) do
      if n == max then break end
      local i = info[n]
      local k = ffi.new("char[?]", #x.key + 1, x.key)
      F_.anchor[#F_.anchor + 1] = k
      i.key, i.klen, i.start, i["end"], i.mark, i.count = k, #x.key, x.start, x.stop, x.mark, x.count
      i.dirty, i.due = x.dirty and 1 or 0, x.fired and 1 or 0
      n = n + 1
    end
    return n
  end
  function C.eddy_window_mark(w, key, _, start, mark)
    local x = w:get(key, tonumber(start), false)
    if x then x.mark = tonumber(mark) end
  end
  return C
end

-- ---- native (lua_api.c) -----------------------------------------------------

local function fake_native(F_, t)
  local N = {}
  local reg, nreg = {}, 0
  function N.pack(v)
    nreg = nreg + 1
    reg[nreg] = v
    return "<" .. nreg .. ">"
  end
  function N.unpack_all(s, one)
    local out = {}
    for id in s:gmatch("<(%d+)>") do out[#out + 1] = reg[tonumber(id)] end
    if one then return out[1] end
    return out
  end
  local store = F_.state
  local function skey(uid, kg, key, kind, name) return table.concat({ uid, kg, key, kind, name }, "\1") end
  function N.state_get(uid, kg, key, kind, name, sub)
    local s = store[skey(uid, kg, key, kind, name)]
    if s == nil then return nil end
    if kind == "m" then return s[sub] end
    return s
  end
  function N.state_put(uid, kg, key, kind, name, sub, v)
    local k = skey(uid, kg, key, kind, name)
    if kind == "m" then store[k] = store[k] or {}; store[k][sub] = v else store[k] = v end
  end
  function N.state_del(uid, kg, key, kind, name, sub)
    local k = skey(uid, kg, key, kind, name)
    if kind == "m" and sub ~= nil then
      if store[k] then store[k][sub] = nil; if next(store[k]) == nil then store[k] = nil end end
    else
      store[k] = nil
    end
  end
  function N.state_entries(uid, kg, key, kind, name, from, to)
    local out = {}
    for sub, v in pairs(store[skey(uid, kg, key, kind, name)] or {}) do
      if (from == nil or sub >= from) and (to == nil or sub < to) then out[sub] = v end
    end
    return out
  end
  function N.state_mark() end
  function N.state_undo() end
  function N.keygroup() return 0 end
  function N.timer_set(uid, kg, key, kind, ts)
    F_.timers[#F_.timers + 1] = { uid = uid, kg = kg, key = key, kind = kind, ts = ts }
  end
  function N.timer_del(uid, _, key, ts)
    for i = #F_.timers, 1, -1 do
      local x = F_.timers[i]
      if x.uid == uid and x.key == key and x.ts == ts then table.remove(F_.timers, i) end
    end
  end
  function N.timers_due(uid, kind, upto)
    local due, keep = {}, {}
    for _, x in ipairs(F_.timers) do
      if x.uid == uid and x.kind == kind and x.ts <= upto then due[#due + 1] = x else keep[#keep + 1] = x end
    end
    F_.timers = keep
    table.sort(due, function(a, b) if a.ts ~= b.ts then return a.ts < b.ts end return a.key < b.key end)
    local tss, keys, seen = {}, {}, {}
    for _, x in ipairs(due) do
      local id = x.key .. "\0" .. x.ts
      if not seen[id] then seen[id] = true; tss[#tss + 1] = x.ts; keys[#keys + 1] = x.key end
    end
    return tss, keys
  end
  function N.unpack(i) return t.values[i] end
  function N.json_write(sidx, v) F_.out[#F_.out + 1] = v; F_.out_sink[#F_.out] = sidx; return true end
  function N.json_encode(v) return require("cjson").encode(v) end
  function N.dead_letter(entry) F_.dead[#F_.dead + 1] = entry; return true end
  function N.headers() return {} end
  function N.shuffle() error("the fake task has no key_by inside its stage") end
  return N
end

-- ---- the task ----------------------------------------------------------------

local Task = {}
Task.__index = Task

-- F.task(dir, script_text, opts): a keyed task running script's nodes
-- opts.stage (ids), fed at opts.roots (key_by ids: a record's port),
-- with sinks opts.sinks = {[node id] = index}; opts.on_error (default "fail").
function F.task(dir, script, opts)
  H.write(dir, "pipeline.lua", script)
  local t = setmetatable({ port = opts.roots[1], now = opts.now or 1000000, logged = {}, written = {}, stores = {}, state = {}, timers = {},
    out = {}, out_sink = {}, dead = {}, values = {} }, Task)
  -- every runtime file loads again, taking its C functions from the fake
  for name in pairs(package.loaded) do
    if name == "eddy.runtime" or name:match("^eddy%.runtime%.") then package.loaded[name] = nil end
  end
  package.loaded["eddy.runtime.c"] = fake_c(t)
  local runtime = require("eddy.runtime")
  t.io = ffi.new("eddy_io")
  t.chan_wm = ffi.new("int64_t[1]", NONE)
  t.chan_idle = ffi.new("uint8_t[1]")
  t.io.chan_wm, t.io.chan_idle, t.io.wm, t.io.maxts = t.chan_wm, t.chan_idle, NONE, NONE
  t.node_in, t.node_out = ffi.new("uint64_t[64]"), ffi.new("uint64_t[64]")
  t.fns = runtime.task({
    script = "pipeline.lua", dir = dir, task = nil, io = t.io, node_in = t.node_in, node_out = t.node_out,
    name = "keyed0-0", stage_nodes = opts.stage, roots = opts.roots, keyed = true, ninputs = 1,
    sinks = opts.sinks or {}, sources = {}, on_error = opts.on_error or "fail", version = 1,
    native = fake_native(t, t),
  })
  return t
end

-- Feeds a batch of records {key, ts, value, wm = the watermark before it
-- (default: unchanged), port = the key_by id it came through (default the
-- first root)}.
function Task:records(list)
  local n = #list
  local keys = {}
  local off = 0
  for i, r in ipairs(list) do keys[i] = r.key; off = off + #r.key end
  self.data = ffi.new("char[?]", off + 1)
  self.recs = ffi.new("eddy_rec[?]", n)
  self.values = {}
  off = 0
  for i, r in ipairs(list) do
    local x = self.recs[i - 1]
    ffi.copy(self.data + off, r.key, #r.key)
    x.key_off, x.key_len, x.kg = off, #r.key, 0
    off = off + #r.key
    x.ts = r.ts or NONE
    x.wm = r.wm or NONE
    x.port = r.port or self.port
    self.values[i - 1] = r.value
  end
  self.io.recs, self.io.data, self.io.n, self.io.channel = self.recs, self.data, n, 0
  self.fns.batch()
end

-- The input's watermark moves to wm without a record.
function Task:watermark(wm)
  self.chan_wm[0] = wm
  self.fns.inputs_changed()
end

-- All input ended (the watermark becomes +inf); stopped: eddy stops instead.
function Task:finish(stopped) self.fns.finish(stopped and 1 or 0) end

-- Processing time moves to now and the task ticks.
function Task:tick(now)
  self.now = now
  self.fns.tick()
end

return F
