-- eddy.runtime — what C calls in a VM.  plan(): load the user's script in a
-- sandbox and describe its graph as plain data for core/pipeline.c.
-- task(): build one task's operator chain (closures, no queues between
-- chained operators) and return the function C calls once per batch; it
-- walks the batch through the FFI, calls the user's functions, and applies
-- the error policy record by record.

local ffi = require("ffi")
local cjson = require("cjson")
local eddy = require("eddy")
local sandbox = require("eddy.sandbox")
local effi = require("eddy.ffi")
local C = ffi.C

local M = {}
local ffi_string, band = ffi.string, bit.band
local cjson_decode, cjson_encode = cjson.decode, cjson.encode

local function load_pipeline(args)
  local env, load_user_file = sandbox.new({ dir = args.dir, ffi = args.ffi, os = args.os,
    log = args.log or function(msg) io.stderr:write(msg, "\n") end })
  local f, err = load_user_file(args.script)
  if not f then error(err, 0) end
  local ok, p = xpcall(f, function(e) return tostring(e) end)
  if not ok then error(p, 0) end
  if not eddy.is_pipeline(p) then
    error(args.script .. ": the script must end with 'return p', returning the pipeline it built", 0)
  end
  local has_source = false
  for _, n in ipairs(p.nodes) do
    if n.kind == "source" then has_source = true end
    n.uid = n.uid or (n.kind .. "-" .. n.id)
  end
  if not has_source then error(args.script .. ": the pipeline has no source", 0) end
  return p, env
end

-- The graph as plain data: { {id, kind, name, uid, where, inputs = {..}, opts = {scalars}} }.
function M.plan(args)
  local p = load_pipeline(args)
  local out = {}
  for i, n in ipairs(p.nodes) do
    local opts = {}
    for k, v in pairs(n.opts) do
      local t = type(v)
      if t == "string" or t == "number" or t == "boolean" then opts[k] = v end
    end
    if n.key ~= nil then opts.key = type(n.key) == "function" and "<function>" or tostring(n.key) end
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

-- args: script, dir, ffi, os, task (lightuserdata), io (lightuserdata),
-- name (task name), stage_nodes = {ids}, roots = {ids}, keyed = bool,
-- sinks = {[node id] = sink index}, sources = {[index] = {name, format, files}},
-- source_index (source tasks), on_error, version, native = {shuffle, unpack}
function M.task(args)
  local task = args.task
  local tio = ffi.cast("eddy_io *", args.io)
  local native = args.native
  local shuffle, unpack_value = native.shuffle, native.unpack
  local log = function(level, limited, msg) C.eddy_log(task, level, limited and 1 or 0, msg) end
  args.log = function(msg) log(1, false, msg) end
  local p = load_pipeline(args)
  local nodes = p.nodes
  local inset, children = {}, {}
  for _, id in ipairs(args.stage_nodes) do inset[id] = true end
  for _, n in ipairs(nodes) do
    for _, i in ipairs(n.inputs) do
      children[i] = children[i] or {}
      table.insert(children[i], n.id)
    end
  end
  local cin, cout = {}, {}
  for _, n in ipairs(nodes) do cin[n.id] = 0; cout[n.id] = 0 end

  local DECODING = -1           -- tio.cur_node while a source decodes its input
  local src_node, decode_error_prefix
  local recs, data             -- the batch being processed
  local cur                    -- its record index
  local cur_key                -- key of the current record, when the source sets one
  local ctx = {}
  local getters = {
    ts = function() local ts = recs[cur].ts; if ts == -9223372036854775807LL - 1 then return nil end return tonumber(ts) end,
    partition = function() return tonumber(recs[cur].partition) end,
    offset = function() return tonumber(recs[cur].offset) end,
    line = function() local l = recs[cur].line; if l == 0 then return nil end return tonumber(l) end,
    source = function() local s = args.sources[tonumber(recs[cur].source) + 1]; return s and s.name end,
    key = function()
      if args.keyed then local r = recs[cur]; return ffi_string(data + r.key_off, r.key_len) end
      return cur_key
    end,
    headers = function() return {} end,
    version = function() return args.version end,
    task = function() return args.name end,
  }
  setmetatable(ctx, { __index = function(_, k) local g = getters[k]; if g then return g() end end })

  local build
  local function op(id)
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
    elseif kind == "union" then
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
        shuffle(id, key_string(k), v)
        cout[id] = cout[id] + 1
      end
    elseif kind == "sink" then
      local sidx, fmt, name = args.sinks[id], node.opts.format, node.name
      local enc
      if fmt == "json" then
        enc = cjson_encode
      else
        enc = function(v)
          local t = type(v)
          if t == "string" then return v end
          if t == "number" then return tostring(v) end
          error("sink '" .. name .. "': format " .. fmt .. " needs a string or number, got " .. t, 0)
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

  build = function(id)
    local fns = {}
    for _, c in ipairs(children[id] or {}) do
      if inset[c] then fns[#fns + 1] = op(c) end
    end
    if #fns == 0 then return function() end end
    if #fns == 1 then return fns[1] end
    return function(v) for i = 1, #fns do fns[i](v) end end
  end

  -- what one input record goes through
  local process
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
    src_node = DECODING
    decode_error_prefix = "malformed " .. fmt .. ": "
    local decode
    if fmt == "json" then decode = cjson_decode
    elseif fmt == "lines" then decode = function(s) if s:byte(-1) == 13 then return s:sub(1, -2) end return s end
    else decode = function(s) return s end end
    process = function(i)
      local r = recs[i]
      tio.cur_node = sid; cin[sid] = cin[sid] + 1
      if band(r.flags, effi.REC_MALFORMED) ~= 0 then
        error(ffi_string(data + r.key_off, r.key_len), 0)
      end
      local v
      if band(r.flags, effi.REC_PACKED) ~= 0 then v = unpack_value(i)
      else
        tio.cur_node = DECODING
        v = decode(ffi_string(data + r.val_off, r.val_len))
        tio.cur_node = sid
      end
      if skey ~= nil then
        local k
        if type(skey) == "function" then k = skey(v, ctx) elseif type(v) == "table" then k = v[skey] end
        cur_key = k ~= nil and key_string(k) or nil
      end
      cout[sid] = cout[sid] + 1
      root(v)
    end
  end

  -- error policy
  local policy = args.on_error
  local last_tb
  local OOM = "not enough memory"
  local function handler(e)
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
    local s = args.sources[tonumber(r.source) + 1]
    local pos = s and s.name or "?"
    local file = s and s.files and s.files[tonumber(r.partition) + 1]
    if file then pos = pos .. " " .. file end
    if r.line > 0 then pos = pos .. ":" .. tostring(tonumber(r.line)) end
    return pos .. " (byte " .. tostring(tonumber(r.offset)) .. ")"
  end
  local function on_error(err, i)
    if type(err) == "table" and err.fatal then error(err.fatal, 0) end
    -- LuaJIT has no emergency collection: free what the failed call left behind
    -- before this handler allocates anything
    if err == OOM then collectgarbage("collect"); err = OOM .. " (limits.memory)" end
    local msg = tostring(err)
    if tio.cur_node == src_node and decode_error_prefix then
      msg = decode_error_prefix .. msg:gsub("^[^:]*:%d+: ", "")
    end
    local r = recs[i]
    local id = tio.cur_node
    if id == DECODING then id = args.roots[1]; tio.cur_node = id; last_tb = nil end
    tio.errors = tio.errors + 1
    if policy == "fail" then
      error("operator " .. node_desc(id) .. " failed on input " .. position(r) .. ": " .. msg, 0)
    end
    if policy == "dead_letter" then
      local s = args.sources[tonumber(r.source) + 1]
      local raw
      if band(r.flags, effi.REC_PACKED) ~= 0 then
        local ok, v = pcall(unpack_value, i)
        raw = ok and (select(2, pcall(cjson_encode, v))) or nil
      else
        raw = ffi_string(data + r.val_off, r.val_len)
      end
      local line = cjson_encode({
        time = os.time() * 1000, task = args.name,
        source = s and s.name, file = s and s.files and s.files[tonumber(r.partition) + 1],
        partition = tonumber(r.partition), offset = tonumber(r.offset),
        line = r.line > 0 and tonumber(r.line) or nil,
        operator = nodes[id] and nodes[id].uid, operator_kind = nodes[id] and nodes[id].kind,
        operator_where = nodes[id] and nodes[id].where,
        error = msg, traceback = last_tb, record = raw,
      })
      if C.eddy_dead_letter(task, line, #line) ~= 0 then error("cannot write the dead-letter file (see the log)", 0) end
      tio.dead_letters = tio.dead_letters + 1
    else
      tio.skipped = tio.skipped + 1
    end
    log(2, true, (policy == "skip" and "record skipped" or "record dead-lettered") .. ": operator " .. node_desc(id) .. " on input " .. position(r) .. ": " .. msg)
  end

  local node_in, node_out = tio.node_in, tio.node_out
  local xpcall = xpcall
  return function()
    recs, data = tio.recs, tio.data
    local n = tio.n
    for i = 0, n - 1 do
      cur = i
      tio.cur = i
      last_tb = nil
      local ok, err = xpcall(process, handler, i)
      if not ok then on_error(err, i) end
    end
    for id = 1, #nodes do node_in[id] = cin[id]; node_out[id] = cout[id] end
  end
end

return M
