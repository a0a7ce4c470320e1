-- eddy.runtime.ctx — the ctx every user function gets: its fields are read
-- on demand from the task's runtime state (rt): the record being processed,
-- or the window or timer firing; ctx.state / timers / emit / side are the
-- process operator's being called (rt.cur_proc).  Also current_key: the key
-- being processed and its key group.
-- Calls: rt.native (headers, keygroup); eddy.runtime.c (eddy_now_ms).
local ffi = require("ffi")
local values = require("eddy.runtime.values")
local C = require("eddy.runtime.c")

local NONE = values.NONE
local ffi_string = ffi.string
local X = {}

-- the Kafka partition of record r of rt's batch (nil for other sources)
local function kafka_of(rt, r)
  local s = rt.args.sources[tonumber(r.source) + 1]
  return s and s.kafka and s.kafka[tonumber(r.partition) + 1]
end

local function getters_of(rt)
  local args, native = rt.args, rt.native
  return {
    ts = function() if rt.cur_ts == NONE then return nil end return rt.cur_ts end,
    partition = function()
      if not rt.cur then return nil end
      local r = rt.recs[rt.cur]
      local kp = kafka_of(rt, r)
      if kp then return kp.partition end
      return tonumber(r.partition)
    end,
    topic = function()
      if not rt.cur then return nil end
      local kp = kafka_of(rt, rt.recs[rt.cur])
      return kp and kp.topic
    end,
    timestamp = function() if rt.cur and rt.cur_kts ~= NONE then return rt.cur_kts end end,
    offset = function() if rt.cur then return tonumber(rt.recs[rt.cur].offset) end end,
    line = function() if rt.cur then local l = rt.recs[rt.cur].line; if l > 0 then return tonumber(l) end end end,
    source = function()
      if not rt.cur then return nil end
      local s = args.sources[tonumber(rt.recs[rt.cur].source) + 1]
      return s and s.name
    end,
    key = function()
      if rt.firing then return rt.firing.key end
      if args.keyed and rt.cur then local r = rt.recs[rt.cur]; return ffi_string(rt.data + r.key_off, r.key_len) end
      return rt.cur_key
    end,
    window = function() return rt.firing and rt.firing.window end,
    watermark = function() if rt.wm == NONE then return -math.huge end return rt.wm end,   -- -inf before the first
    headers = function() if rt.cur and rt.firing == nil then return native.headers(rt.cur) end return {} end,
    version = function() return args.version end,
    task = function() return args.name end,
    now = function() return tonumber(C.eddy_now_ms()) end,     -- processing time (eddy test: the virtual clock)
    state = function() return rt.cur_proc and rt.cur_proc.state end,
    timers = function() return rt.cur_proc and rt.cur_proc.timers end,
    emit = function() return rt.cur_proc and rt.cur_proc.emit end,
    side = function() return rt.cur_proc and rt.cur_proc.side end,
  }
end

-- The ctx of the task rt: a table whose fields are its getters' values.
function X.new(rt)
  local getters = getters_of(rt)
  return setmetatable({}, { __index = function(_, k) local g = getters[k]; if g then return g() end end })
end

-- The key being processed and its key group: a record's, or a firing's (window, timer).
function X.current_key(rt)
  local f = rt.firing
  if f then return f.key, tonumber(rt.native.keygroup(f.key)) end
  local r = rt.recs[rt.cur]
  return ffi_string(rt.data + r.key_off, r.key_len), tonumber(r.kg)
end

return X
