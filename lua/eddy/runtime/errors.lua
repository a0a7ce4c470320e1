-- eddy.runtime.errors — the error policy (on_error = fail, skip or
-- dead_letter) for a failed record, window firing or timer: handler is the
-- xpcall message handler (it keeps the traceback in rt.last_tb), on_error
-- raises, skips or dead-letters, names the operator and the input position,
-- and counts in tio.errors / skipped / dead_letters.
-- Calls: rt.native (dead_letter, unpack, json_encode); eddy.runtime.c
-- (eddy_now_ms); rt.log.
local effi = require("eddy.ffi")
local C = require("eddy.runtime.c")
local source = require("eddy.runtime.source")

local band = bit.band
local E = {}
local OOM = "not enough memory"

local function node_desc(rt, id)
  local n = rt.nodes[id]
  if not n then return "?" end
  local label = n.kind .. (n.name and (" " .. n.name) or "")
  return label .. " (uid " .. n.uid .. ", " .. n.where .. ")"
end

-- where input record r came from (or the window firing, when r is nil)
local function position(rt, r)
  if not r then
    local firing = rt.firing
    if firing and firing.window then
      return "window [" .. firing.window.start .. ", " .. firing.window["end"] .. ") of key " .. firing.key
    end
    if firing then return "key " .. tostring(firing.key) end      -- a timer's, a state migration's
    return "(end of input)"
  end
  local s = rt.args.sources[tonumber(r.source) + 1]
  local pos = s and s.name or "?"
  local kp = s and s.kafka and s.kafka[tonumber(r.partition) + 1]
  if kp then return pos .. " topic " .. kp.topic .. " partition " .. kp.partition .. " offset " .. tostring(tonumber(r.offset)) end
  local file = s and s.files and s.files[tonumber(r.partition) + 1]
  if file then pos = pos .. " " .. file end
  if r.line > 0 then pos = pos .. ":" .. tostring(tonumber(r.line)) end
  return pos .. " (byte " .. tostring(tonumber(r.offset)) .. ")"
end

-- writes the dead-letter entry of record i (r; nil for a firing) at operator id;
-- extra: fields that say more (a state migration's key and the state as record)
local function dead_letter(rt, id, i, r, msg, extra)
  local native, nodes, firing = rt.native, rt.nodes, rt.firing
  local s = r and rt.args.sources[tonumber(r.source) + 1]
  local raw, rec_i
  if r and band(r.flags, effi.REC_PACKED) ~= 0 then
    local ok, v = pcall(native.unpack, i)
    raw = ok and (select(2, pcall(native.json_encode, v))) or nil
  elseif r then
    rec_i = i             -- its bytes go in as they are, in C (native.dead_letter)
  end
  local ok = native.dead_letter({
    time = tonumber(C.eddy_now_ms()), task = rt.args.name,
    source = s and s.name, file = s and s.files and s.files[tonumber(r.partition) + 1],
    topic = s and s.kafka and s.kafka[tonumber(r.partition) + 1] and s.kafka[tonumber(r.partition) + 1].topic,
    partition = r and (s and s.kafka and s.kafka[tonumber(r.partition) + 1]
                       and s.kafka[tonumber(r.partition) + 1].partition or tonumber(r.partition)),
    offset = r and tonumber(r.offset),
    line = r and r.line > 0 and tonumber(r.line) or nil,
    window = firing and firing.window, key = firing and firing.key or (extra and extra.key),
    operator = nodes[id] and nodes[id].uid, operator_kind = nodes[id] and nodes[id].kind,
    operator_where = nodes[id] and nodes[id].where,
    error = msg, traceback = rt.last_tb, record = raw or (extra and extra.record),
  }, rec_i)
  if not ok then error("cannot write the dead-letter file (see the log)", 0) end
end

-- Sets rt.handler and rt.on_error(err, i[, extra]) for the task's policy
-- (rt.args.on_error); i: index of the input record at fault, or nil (a
-- window firing at the end); extra: { key, record } of what failed without
-- an input record (a state migration).
function E.install(rt)
  local policy, tio = rt.args.on_error, rt.tio
  rt.handler = function(e)
    -- no traceback for a memory error: building one would need the memory that ran out
    if type(e) == "string" and e ~= OOM then rt.last_tb = debug.traceback(e, 2) end
    return e
  end
  rt.on_error = function(err, i, extra)
    if type(err) == "table" and err.fatal then error(err.fatal, 0) end
    -- LuaJIT has no emergency collection: free what the failed call left behind
    -- before this handler allocates anything
    if err == OOM then collectgarbage("collect"); err = OOM .. " (limits.memory)" end
    -- an error raised inside eddy's own Lua files (a sink's encoder, a key) is
    -- the user's problem, not a place in eddy: drop that location
    local msg = tostring(err):gsub("^[^:\n]*/lua/eddy/[%w_/]+%.lua:%d+: ", "")
    local id = tio.cur_node
    if id == source.DECODING then
      msg = rt.decode_error_prefix .. msg:gsub("^[^:]*:%d+: ", "")
      id = rt.args.roots[1]; tio.cur_node = id; rt.last_tb = nil
    end
    local r = i and rt.recs[i] or nil
    tio.errors = tio.errors + 1
    if policy == "fail" then
      error("operator " .. node_desc(rt, id) .. " failed on input " .. position(rt, r) .. ": " .. msg, 0)
    end
    if policy == "dead_letter" then
      dead_letter(rt, id, i, r, msg, extra)
      tio.dead_letters = tio.dead_letters + 1
    else
      tio.skipped = tio.skipped + 1
    end
    rt.log(2, true, (policy == "skip" and "record skipped" or "record dead-lettered") .. ": operator "
      .. node_desc(rt, id) .. " on input " .. position(rt, r) .. ": " .. msg)
  end
end

return E
