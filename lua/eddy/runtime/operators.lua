-- eddy.runtime.operators — builds a task's operator chain: op() makes the
-- function one operator runs per value, from a table of kind → builder;
-- build() chains an operator to the operators of this task it feeds (no
-- queues between chained operators).  The stateless kinds (map, filter,
-- flat_map, union, side, key_by), global tables, dedup and sinks are here;
-- process, joins and windows have files of their own.
-- Calls: eddy.runtime.process, .joins, .windows; rt.native (shuffle,
-- state_put/del, dedup, json_encode, json_write); eddy.runtime.c (sinks).
local ffi = require("ffi")
local cjson = require("cjson")
local C = require("eddy.runtime.c")
local values = require("eddy.runtime.values")
local process = require("eddy.runtime.process")
local joins = require("eddy.runtime.joins")
local windows = require("eddy.runtime.windows")

local NONE, key_string, number_text = values.NONE, values.key_string, values.number_text
local ffi_string = ffi.string
local O = {}
local builders = {}           -- kind → function(rt, id, parent) returning the operator's function

function builders.map(rt, id)
  local tio, cin, cout, ctx, fn = rt.tio, rt.cin, rt.cout, rt.ctx, rt.nodes[id].fn
  local nxt = rt.build(id)
  return function(v)
    tio.cur_node = id; cin[id] = cin[id] + 1
    local r = fn(v, ctx)
    if r ~= nil then cout[id] = cout[id] + 1; nxt(r) end
  end
end

function builders.filter(rt, id)
  local tio, cin, cout, ctx, fn = rt.tio, rt.cin, rt.cout, rt.ctx, rt.nodes[id].fn
  local nxt = rt.build(id)
  return function(v)
    tio.cur_node = id; cin[id] = cin[id] + 1
    if fn(v, ctx) then cout[id] = cout[id] + 1; nxt(v) end
  end
end

function builders.flat_map(rt, id)
  local tio, cin, cout, ctx, fn = rt.tio, rt.cin, rt.cout, rt.ctx, rt.nodes[id].fn
  local nxt = rt.build(id)
  return function(v)
    tio.cur_node = id; cin[id] = cin[id] + 1
    local arr = fn(v, ctx)
    if arr ~= nil then
      if type(arr) ~= "table" then error("flat_map must return an array or nil, got " .. type(arr), 0) end
      for i = 1, #arr do cout[id] = cout[id] + 1; nxt(arr[i]) end
    end
  end
end

function builders.union(rt, id)
  local cin, cout = rt.cin, rt.cout
  local nxt = rt.build(id)
  return function(v) cin[id] = cin[id] + 1; cout[id] = cout[id] + 1; nxt(v) end
end
-- a side output passes its values on; under eddy test's driver
-- (args.testing) d:side(name) also reads them
function builders.side(rt, id)
  if not rt.args.testing then return builders.union(rt, id) end
  local cin, cout, tap, name = rt.cin, rt.cout, rt.native.test_side, rt.nodes[id].name
  local nxt = rt.build(id)
  return function(v) cin[id] = cin[id] + 1; cout[id] = cout[id] + 1; tap(name, v); nxt(v) end
end

function builders.key_by(rt, id)
  local node, tio, cin, cout, ctx = rt.nodes[id], rt.tio, rt.cin, rt.cout, rt.ctx
  local field, kfn, shuffle = node.opts.field, node.key, rt.native.shuffle
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
    shuffle(id, key_string(k), v, rt.cur_ts, rt.out_wm, rt.firing == nil)
    cout[id] = cout[id] + 1
  end
end

-- every row once in the daemon's state store (key group 0): every task reads it
function builders.global_table(rt, id)
  local node, tio, cin, ctx = rt.nodes[id], rt.tio, rt.cin, rt.ctx
  local uid, put, del = node.uid, rt.native.state_put, rt.native.state_del
  return function(v)
    tio.cur_node = id; cin[id] = cin[id] + 1
    local k = ctx.key
    if k == nil then error("global table '" .. node.name .. "': a record without a key (set the key option)", 0) end
    if v == nil or v == cjson.null then del(uid, 0, k, "t", "row") else put(uid, 0, k, "t", "row", nil, v) end
  end
end

function builders.dedup(rt, id)
  local node, tio, cin, cout = rt.nodes[id], rt.tio, rt.cin, rt.cout
  local nxt, uid, ttl, dedup = rt.build(id), node.uid, node.opts.ttl_ms, rt.native.dedup
  local current_key = rt.current_key
  return function(v)
    tio.cur_node = id; cin[id] = cin[id] + 1
    local k, kg = current_key()
    local cur_ts = rt.cur_ts
    local t = cur_ts ~= NONE and cur_ts or tonumber(C.eddy_now_ms())
    if dedup(uid, kg, k, t, ttl) then cout[id] = cout[id] + 1; nxt(v) end
  end
end

builders.process = function(rt, id) return process.build(rt, id) end
builders.window = function(rt, id) return windows.build(rt, id) end
builders.join = function(rt, id, parent) return joins.build(rt, id, parent) end

-- a sink's encoder: a value → the text it writes
local function encoder(rt, node)
  local fmt, name = node.opts.format, node.name
  if fmt == "json" then
    return rt.native.json_encode   -- core/codec_json.cc: the rules in docs/contract.md ("JSON")
  end
  return function(v)
    local t = type(v)
    if t == "string" then return v end
    if t == "number" then return number_text(v) end
    error("sink '" .. name .. "': format " .. fmt .. " needs a string or number, got " .. t, 0)
  end
end

-- a Kafka record: its key (a field or a function) and the event time
local function kafka_sink(rt, id, sidx, enc)
  local node, task, tio, cin, cout, ctx = rt.nodes[id], rt.task, rt.tio, rt.cin, rt.cout, rt.ctx
  local name = node.name
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
    local cur_ts = rt.cur_ts
    local rc = C.eddy_sink_write_kv(task, sidx, k, k and #k or 0, s, s and #s or 0, cur_ts == NONE and -1 or cur_ts,
                                    rt.firing == nil and 1 or 0)
    if rc == -2 then error("sink '" .. name .. "': Kafka refused the record: " .. ffi_string(C.eddy_sink_error(task, sidx)), 0) end
    if rc ~= 0 then error({ fatal = "sink '" .. name .. "' failed (see the log)" }) end
    cout[id] = cout[id] + 1
  end
end

function builders.sink(rt, id)
  local node, task, tio, cin, cout = rt.nodes[id], rt.task, rt.tio, rt.cin, rt.cout
  local sidx, name = rt.args.sinks[id], node.name
  local enc = encoder(rt, node)
  if node.opts.kafka then return kafka_sink(rt, id, sidx, enc) end
  if node.opts.format == "json" then
    local json_write = rt.native.json_write           -- encoded into the sink, in C
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

-- The function operator id runs per value; parent: the operator feeding it
-- (a join's two inputs get different functions).
function O.op(rt, id, parent)
  local kind = rt.nodes[id].kind
  local b = builders[kind]
  if not b then error("eddy: no runtime for operator kind " .. tostring(kind)) end
  return b(rt, id, parent)
end

-- The function that passes a value from operator id to the operators of
-- this task it feeds (side outputs are fed by their operator, not here).
function O.build(rt, id)
  local nodes, inset = rt.nodes, rt.inset
  local fns = {}
  for _, c in ipairs(rt.children[id] or {}) do
    if inset[c] and nodes[c].kind ~= "side" then fns[#fns + 1] = rt.op(c, id) end
  end
  if #fns == 0 then return function() end end
  if #fns == 1 then return fns[1] end
  return function(v) for i = 1, #fns do fns[i](v) end end
end

return O
