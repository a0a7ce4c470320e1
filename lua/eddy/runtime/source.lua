-- eddy.runtime.source — what one input record goes through first.  At a
-- source task: the record's decode (json, lines, raw, csv; Kafka tombstones
-- and keys), its event time (a field, a function, the Kafka timestamp, or
-- ingest time) and the watermark it moves the partition to (a bound, or the
-- user's watermark function), then the source's chain.  At a keyed task:
-- the record's value into the chain of the port it came in on.
-- Calls: rt.native (unpack, json_decode_rec); eddy.runtime.c (eddy_now_ms).
local ffi = require("ffi")
local cjson = require("cjson")
local effi = require("eddy.ffi")
local C = require("eddy.runtime.c")
local values = require("eddy.runtime.values")

local NONE, to_ms, key_string = values.NONE, values.to_ms, values.key_string
local ffi_string, band = ffi.string, bit.band
local S = {}
S.DECODING = -1                 -- tio.cur_node while a source decodes its input

-- function(v): the event time of value v at source node src, or nil when
-- the source has none
local function stamper(rt, src)
  local tsopt, ctx = src.timestamp, rt.ctx
  if tsopt == "kafka" then
    return function()
      if rt.cur_kts == NONE then error("the Kafka message has no timestamp", 0) end
      return rt.cur_kts
    end
  elseif tsopt == "ingest" then
    return function() return tonumber(C.eddy_now_ms()) end
  elseif type(tsopt) == "string" then
    return function(v)
      local raw = type(v) == "table" and v[tsopt] or nil
      local ms = to_ms(raw)
      if not ms then error("no usable timestamp in field '" .. tsopt .. "' (got " .. tostring(raw) .. ")", 0) end
      return ms
    end
  elseif type(tsopt) == "function" then
    return function(v)
      local raw = tsopt(v, ctx)
      local ms = to_ms(raw)
      if not ms then error("the timestamp function returned no usable timestamp (got " .. tostring(raw) .. ")", 0) end
      return ms
    end
  end
end

-- function(s): a record's bytes → its value (nil for json: json_decode_rec
-- decodes the record where it lies in the batch)
local function decoder(fmt)
  if fmt == "json" then return nil end
  if fmt == "lines" then return function(s) if s:byte(-1) == 13 then return s:sub(1, -2) end return s end end
  return function(s) return s end
end

-- at a keyed task: each record goes to the chain of its port
local function keyed_process(rt)
  local args, unpack_value = rt.args, rt.native.unpack
  local roots = {}
  for _, id in ipairs(args.roots) do roots[id] = rt.build(id) end
  return function(i)
    local r = rt.recs[i]
    local v = unpack_value(i)
    roots[r.port](v)
  end
end

-- at a source task: decode, key, stamp, watermark, then the chain
local function source_process(rt)
  local args, tio, cin, cout, ctx = rt.args, rt.tio, rt.cin, rt.cout, rt.ctx
  local src = rt.nodes[args.roots[1]]
  local sid = src.id
  local root = rt.build(sid)
  local fmt, skey, wmfn = src.opts.format, src.key, src.watermark_fn
  local bound = src.opts.bound_ms or 0
  local decode = decoder(fmt)
  local unpack_value, json_decode_rec = rt.native.unpack, rt.native.json_decode_rec
  rt.decode_error_prefix = "malformed " .. fmt .. ": "
  local is_kafka = false
  for _, s in ipairs(args.sources) do if s.name == src.name and s.kafka then is_kafka = true end end
  local REC_KEY, TOMBSTONE, MALFORMED, PACKED = effi.REC_KEY, effi.REC_TOMBSTONE, effi.REC_MALFORMED, effi.REC_PACKED
  local DECODING = S.DECODING
  local stamp = stamper(rt, src)
  return function(i)
    local r = rt.recs[i]
    if is_kafka then rt.cur_kts = tonumber(r.ts) end
    tio.cur_node = sid; cin[sid] = cin[sid] + 1
    if band(r.flags, MALFORMED) ~= 0 then
      error(ffi_string(rt.data + r.key_off, r.key_len), 0)
    end
    local v
    local flags = r.flags
    if band(flags, PACKED) ~= 0 then v = unpack_value(i)
    elseif band(flags, TOMBSTONE) ~= 0 then v = fmt == "json" and cjson.null or ""   -- a Kafka message without a value
    else
      tio.cur_node = DECODING
      if decode then v = decode(ffi_string(rt.data + r.val_off, r.val_len)) else v = json_decode_rec(i) end
      tio.cur_node = sid
    end
    if skey ~= nil then
      local k
      if type(skey) == "function" then k = skey(v, ctx) elseif type(v) == "table" then k = v[skey] end
      rt.cur_key = k ~= nil and key_string(k) or nil
    elseif is_kafka then
      -- the message's key (nil for a message without one)
      if band(flags, REC_KEY) ~= 0 then rt.cur_key = ffi_string(rt.data + r.key_off, r.key_len) else rt.cur_key = nil end
    end
    if stamp then
      local ts = stamp(v)
      rt.cur_ts = ts
      if ts > rt.maxts then rt.maxts = ts; tio.maxts = ts end
      -- the record carries the watermark as it stood before it; the one it
      -- moves the partition to applies after it (the batch loop), so every
      -- task downstream sees the same watermark before this record
      if wmfn then
        local w = wmfn(ts, v, ctx)
        if w ~= nil then
          w = to_ms(w)
          if not w then error("the watermark function returned no usable time", 0) end
          rt.pending_wm = w
        end
      else rt.pending_wm = rt.maxts - bound - 1 end
      r.ts = ts
      r.wm = rt.wm
    end
    cout[sid] = cout[sid] + 1
    root(v)
  end
end

-- The function the batch loop calls for input record i (through xpcall).
function S.build(rt)
  if rt.args.keyed then return keyed_process(rt) end
  return source_process(rt)
end

return S
