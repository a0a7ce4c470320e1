-- eddy — the pipeline API.  A pipeline script builds a graph of operator
-- nodes with these functions and returns it; the runtime (eddy.runtime) plans
-- stages from the graph and runs each task's part of it in the task's VM.
-- Nothing here processes records: it only records what the user asked for,
-- checks it, and remembers where in the script each operator was declared.

local M = { VERSION = "0.1.0" }

local Watermark = {}
Watermark.__index = Watermark
local Assigner = {}
Assigner.__index = Assigner
local Trigger = {}
Trigger.__index = Trigger
local Windowed = {}
Windowed.__index = Windowed

local Pipeline = {}
Pipeline.__index = Pipeline
local Stream = {}
Stream.__index = Stream
local Table = {}
Table.__index = Table

local FORMATS_IN = { json = true, lines = true, raw = true, csv = true }
local FORMATS_OUT = { json = true, lines = true, raw = true }

local THIS = debug.getinfo(1, "S").source

-- The stack level (counted from the caller of this function) of the first
-- frame outside this file: the user's line that called the API.
local function user_level()
  for level = 3, 50 do
    local info = debug.getinfo(level, "S")
    if not info then return 2 end
    if info.source ~= THIS then return level - 1 end
  end
  return 2
end

-- where: "pipeline.lua:12" of the user's call that declared an operator.
local function where()
  local info = debug.getinfo(user_level(), "Sl")
  if not info then return "?" end
  local src = info.source or "?"
  if src:sub(1, 1) == "@" then src = src:sub(2) end
  return src .. ":" .. tostring(info.currentline or 0)
end

-- Raises an error that points at the user's line that called the API.
local function fail(msg)
  error("eddy: " .. msg, user_level())
end

local function check_name(kind, name)
  if type(name) ~= "string" or name == "" or not name:match("^[%w_%.%-]+$") then
    fail(kind .. " name must be a non-empty string of letters, digits, '_', '.', '-', got " .. tostring(name))
  end
end

local function add(p, kind, inputs, fields)
  local node = fields or {}
  node.id = #p.nodes + 1
  node.kind = kind
  node.inputs = inputs
  node.where = where()
  node.opts = node.opts or {}
  p.nodes[node.id] = node
  return setmetatable({ p = p, node = node }, Stream)
end

function M.pipeline()
  return setmetatable({ nodes = {}, names = {}, is_pipeline = true }, Pipeline)
end

function M.is_pipeline(x)
  return type(x) == "table" and getmetatable(x) == Pipeline
end

-- Durations are kept as written ("5s", 250) and converted by the runtime,
-- which uses the same parser as the config file.
local function check_duration(what, d)
  if type(d) == "number" then
    if d < 0 or d % 1 ~= 0 then fail(what .. " must be a whole, non-negative number of ms") end
    return tostring(d)
  end
  if type(d) ~= "string" or not d:match("^%d+%.?%d*%a*$") then
    fail(what .. ": expected a duration like \"10s\", got " .. tostring(d))
  end
  return d
end

local SOURCE_OPTS = { file = "string", stdin = "boolean", kafka = "any", format = "string",
  key = "any", follow = "boolean", header = "boolean", delimiter = "string",
  timestamp = "any", watermark = "any", idle = "any", start = "string", max_bytes = "any",
  bootstrap = "boolean", bounded = "boolean" }
local SINK_OPTS = { file = "string", stdout = "boolean", kafka = "any", format = "string", key = "any" }

local function check_opts(kind, name, opts, allowed)
  if type(opts) ~= "table" then fail(kind .. " '" .. name .. "': options must be a table") end
  for k, v in pairs(opts) do
    local t = allowed[k]
    if not t then fail(kind .. " '" .. name .. "': unknown option '" .. tostring(k) .. "'") end
    if t ~= "any" and type(v) ~= t then
      fail(kind .. " '" .. name .. "': option '" .. k .. "' must be a " .. t .. ", got " .. type(v))
    end
  end
end

-- Options that need a later part of eddy are refused, never silently ignored.
local function refuse_unsupported(kind, name, opts, list)
  for _, k in ipairs(list) do
    if opts[k] ~= nil then fail(kind .. " '" .. name .. "': option '" .. k .. "' is not supported by this version of eddy") end
  end
end

function Pipeline:source(name, opts)
  check_name("source", name)
  opts = opts or {}
  check_opts("source", name, opts, SOURCE_OPTS)
  if self.names["source:" .. name] then fail("source '" .. name .. "' is declared twice") end
  local n = (opts.file and 1 or 0) + (opts.stdin and 1 or 0) + (opts.kafka and 1 or 0)
  if n ~= 1 then fail("source '" .. name .. "' needs exactly one of file, stdin, kafka") end
  local topics
  if opts.kafka ~= nil then
    topics = type(opts.kafka) == "string" and { opts.kafka } or opts.kafka
    if type(topics) ~= "table" or #topics == 0 then fail("source '" .. name .. "': kafka must be a topic name or a list of them") end
    for _, t in ipairs(topics) do
      if type(t) ~= "string" or not t:match("^[%w_%.%-]+$") then
        fail("source '" .. name .. "': kafka topic names are letters, digits, '_', '.', '-', got " .. tostring(t))
      end
    end
    if opts.follow ~= nil then fail("source '" .. name .. "': follow is for file sources (a Kafka source never ends)") end
    if opts.header ~= nil or opts.delimiter ~= nil or opts.format == "csv" then
      fail("source '" .. name .. "': csv is for file sources (a Kafka message is one record: json, lines or raw)")
    end
  end
  if opts.max_bytes ~= nil then
    if type(opts.max_bytes) ~= "number" and type(opts.max_bytes) ~= "string" then
      fail("source '" .. name .. "': max_bytes must be a size like \"1MB\" or a number of bytes")
    end
  end
  if opts.start ~= nil then
    if not opts.kafka then fail("source '" .. name .. "': start is for kafka sources") end
    if opts.start ~= "earliest" and opts.start ~= "latest" and opts.start ~= "committed" then
      fail("source '" .. name .. "': start must be \"earliest\", \"latest\" or \"committed\", got " .. tostring(opts.start))
    end
  end
  if opts.idle ~= nil then check_duration("source '" .. name .. "': idle", opts.idle) end
  if opts.bounded and not opts.kafka then
    fail("source '" .. name .. "': bounded is for kafka sources (a file without follow ends by itself)")
  end
  if opts.bootstrap and opts.stdin then
    fail("source '" .. name .. "': bootstrap needs an end to read to (a file or a kafka topic, not stdin)")
  end
  local ts = opts.timestamp
  if ts ~= nil and type(ts) ~= "string" and type(ts) ~= "function" then
    fail("source '" .. name .. "': timestamp must be a field name, a function, \"kafka\" or \"ingest\"")
  end
  if ts == "kafka" and not opts.kafka then fail("source '" .. name .. "': timestamp = \"kafka\" needs a kafka source") end
  local wm = opts.watermark
  if wm ~= nil and getmetatable(wm) ~= Watermark and type(wm) ~= "function" then
    fail("source '" .. name .. "': watermark must be eddy.watermark.bounded(d), eddy.watermark.monotonic() or a function")
  end
  if wm ~= nil and ts == nil then fail("source '" .. name .. "': a watermark needs a timestamp option") end
  local format = opts.format or "json"
  if not FORMATS_IN[format] then fail("source '" .. name .. "': unknown format '" .. tostring(format) .. "' (json, lines, raw, csv)") end
  if opts.delimiter and #opts.delimiter ~= 1 then fail("source '" .. name .. "': delimiter must be one character") end
  local key = opts.key
  if key ~= nil and type(key) ~= "string" and type(key) ~= "function" then
    fail("source '" .. name .. "': key must be a field name or a function")
  end
  self.names["source:" .. name] = true
  local s = add(self, "source", {}, { name = name, uid = name, opts = {
      file = opts.file, stdin = opts.stdin, format = format, follow = opts.follow or false,
      kafka = topics and table.concat(topics, ",") or nil, start = opts.start, max_bytes = opts.max_bytes,
      header = opts.header or false, delimiter = opts.delimiter or ",",
      timestamp = type(ts) == "string" and ts or nil,
      watermark_bound = type(wm) == "table" and wm.bound or (ts ~= nil and wm == nil and "0" or nil),
      idle = opts.idle, bootstrap = opts.bootstrap or nil, bounded = opts.bounded or nil,
    }, key = key, timestamp = ts, watermark_fn = type(wm) == "function" and wm or nil })
  return s
end

local function check_fn(what, fn)
  if type(fn) ~= "function" then fail(what .. " needs a function, got " .. type(fn)) end
end

function Stream:map(fn) check_fn("map", fn); local s = add(self.p, "map", { self.node.id }, { fn = fn }); return s end
function Stream:filter(fn) check_fn("filter", fn); local s = add(self.p, "filter", { self.node.id }, { fn = fn }); return s end
function Stream:flat_map(fn) check_fn("flat_map", fn); local s = add(self.p, "flat_map", { self.node.id }, { fn = fn }); return s end

function Stream:key_by(key, opts)
  if type(key) ~= "string" and type(key) ~= "function" then
    fail("key_by needs a field name or a function, got " .. type(key))
  end
  opts = opts or {}
  if type(opts) ~= "table" then fail("key_by options must be a table") end
  for k in pairs(opts) do
    if k ~= "parallelism" then fail("key_by: unknown option '" .. tostring(k) .. "'") end
  end
  local par = opts.parallelism
  if par ~= nil and (type(par) ~= "number" or par < 1 or par % 1 ~= 0) then
    fail("key_by: parallelism must be a positive integer")
  end
  local s = add(self.p, "key_by", { self.node.id }, {
    key = key, opts = { field = type(key) == "string" and key or nil, parallelism = par } })
  return s
end

function Stream:union(...)
  local inputs = { self.node.id }
  for i = 1, select("#", ...) do
    local other = select(i, ...)
    if getmetatable(other) ~= Stream or other.p ~= self.p then fail("union needs streams of the same pipeline") end
    inputs[#inputs + 1] = other.node.id
  end
  if #inputs < 2 then fail("union needs at least one other stream") end
  local s = add(self.p, "union", inputs, {})
  return s
end

-- sources and sinks are known by their names: their uids are a namespace
-- of their own (a window may take the name of the sink it feeds)
local function uid_space(n) return (n.kind == "source" or n.kind == "sink") and n.kind or "" end

function Stream:uid(s)
  if type(s) ~= "string" or s == "" then fail("uid needs a non-empty string") end
  for _, node in ipairs(self.p.nodes) do
    if node.uid == s and node ~= self.node and uid_space(node) == uid_space(self.node) then
      fail("uid '" .. s .. "' is used twice")
    end
  end
  self.node.uid = s
  return self
end

function Stream:sink(name, opts)
  check_name("sink", name)
  opts = opts or {}
  check_opts("sink", name, opts, SINK_OPTS)
  if self.p.names["sink:" .. name] then fail("sink '" .. name .. "' is declared twice") end
  local n = (opts.file and 1 or 0) + (opts.stdout and 1 or 0) + (opts.kafka and 1 or 0)
  if n ~= 1 then fail("sink '" .. name .. "' needs exactly one of file, stdout, kafka") end
  if opts.kafka ~= nil and (type(opts.kafka) ~= "string" or opts.kafka == "") then
    fail("sink '" .. name .. "': kafka must be a topic name")
  end
  local key = opts.key
  if key ~= nil and not opts.kafka then fail("sink '" .. name .. "': key is for kafka sinks") end
  if key ~= nil and type(key) ~= "string" and type(key) ~= "function" then
    fail("sink '" .. name .. "': key must be a field name or a function")
  end
  local format = opts.format or "json"
  if not FORMATS_OUT[format] then fail("sink '" .. name .. "': unknown format '" .. tostring(format) .. "' (json, lines, raw)") end
  self.p.names["sink:" .. name] = true
  add(self.p, "sink", { self.node.id }, { name = name, uid = name, key = key,
    opts = { file = opts.file, stdout = opts.stdout, kafka = opts.kafka, format = format,
             key_field = type(key) == "string" and key or nil } })
  return self
end

M.watermark = {}
function M.watermark.bounded(d)
  return setmetatable({ bound = check_duration("eddy.watermark.bounded", d) }, Watermark)
end
function M.watermark.monotonic() return setmetatable({ bound = "0" }, Watermark) end

M.window = {}
function M.window.tumbling(size, offset)
  return setmetatable({ kind = "tumbling", size = check_duration("eddy.window.tumbling size", size),
    advance = nil, offset = offset ~= nil and check_duration("eddy.window.tumbling offset", offset) or "0" }, Assigner)
end
function M.window.hopping(size, advance)
  return setmetatable({ kind = "hopping", size = check_duration("eddy.window.hopping size", size),
    advance = check_duration("eddy.window.hopping advance", advance), offset = "0" }, Assigner)
end
function M.window.session(gap)
  return setmetatable({ kind = "session", size = check_duration("eddy.window.session gap", gap), offset = "0" }, Assigner)
end
-- One window per key that never ends: it fires only through its trigger
-- (with the default event_time trigger, when all input has ended).
function M.window.global() return setmetatable({ kind = "global", size = "0", offset = "0" }, Assigner) end
-- Windows of record counts, per key: every `slide` records (default n) the
-- last n records of the key.
function M.window.count(n, slide)
  if type(n) ~= "number" or n < 1 or n % 1 ~= 0 then fail("eddy.window.count needs a positive whole number of records") end
  slide = slide or n
  if type(slide) ~= "number" or slide < 1 or slide % 1 ~= 0 or slide > n then
    fail("eddy.window.count: slide must be a whole number from 1 to n")
  end
  return setmetatable({ kind = "count", size = "0", offset = "0", n = n, slide = slide }, Assigner)
end
-- Kafka Streams' sliding windows: each record at t ends a window [t - size, t]
-- holding the key's records within `size` before it (inclusive).
function M.window.sliding(size)
  return setmetatable({ kind = "sliding", size = check_duration("eddy.window.sliding size", size), offset = "0" }, Assigner)
end

M.trigger = {}
function M.trigger.event_time() return setmetatable({ kind = "event_time" }, Trigger) end
function M.trigger.processing_time() return setmetatable({ kind = "processing_time" }, Trigger) end
function M.trigger.count(n)
  if type(n) ~= "number" or n < 1 or n % 1 ~= 0 then fail("eddy.trigger.count needs a positive whole number") end
  return setmetatable({ kind = "count", n = n }, Trigger)
end
function M.trigger.every(d)
  return setmetatable({ kind = "every", every = check_duration("eddy.trigger.every", d) }, Trigger)
end

local TRIGGER_FNS = { on_element = true, on_event_time = true, on_processing_time = true, on_merge = true }

-- A trigger option: an eddy.trigger value, or a table of Lua callbacks.
local function check_trigger(t)
  if getmetatable(t) == Trigger then return t end
  if type(t) ~= "table" then fail("window: trigger must be an eddy.trigger value or a table of functions") end
  local n = 0
  for k, v in pairs(t) do
    if not TRIGGER_FNS[k] then
      fail("window: trigger table: unknown field '" .. tostring(k) .. "' (on_element, on_event_time, on_processing_time, on_merge)")
    end
    if type(v) ~= "function" then fail("window: trigger table: " .. k .. " must be a function") end
    n = n + 1
  end
  if n == 0 then fail("window: a trigger table needs at least one of on_element, on_event_time, on_processing_time, on_merge") end
  return setmetatable({ kind = "custom", fns = t }, Trigger)
end

function Stream:window(assigner, opts)
  if getmetatable(assigner) ~= Assigner then
    fail("window needs an assigner such as eddy.window.tumbling(\"1m\")")
  end
  opts = opts or {}
  if type(opts) ~= "table" then fail("window options must be a table") end
  for k, v in pairs(opts) do
    if k == "trigger" then
      check_trigger(v)
    elseif k == "lateness" then
      check_duration("window lateness", v)
    elseif k == "late" then
      if type(v) ~= "string" or v == "" then fail("window: late must be the name of a side output") end
    else
      fail("window: unknown option '" .. tostring(k) .. "'")
    end
  end
  local trigger = opts.trigger and check_trigger(opts.trigger) or M.trigger.event_time()
  if assigner.kind == "count" and (opts.trigger or opts.lateness or opts.late) then
    fail("window: count windows fire by their record count; they take no trigger, lateness or late")
  end
  if (assigner.kind == "session" or assigner.kind == "sliding") and trigger.kind ~= "event_time" and trigger.kind ~= "every" then
    fail("window: " .. assigner.kind .. " windows take the event_time and every triggers (not " .. trigger.kind .. ")")
  end
  return setmetatable({ stream = self, assigner = assigner, where = where(), trigger = trigger,
    lateness = opts.lateness ~= nil and check_duration("window lateness", opts.lateness) or "0",
    late = opts.late }, Windowed)
end

local function aggregate(w, agg, f)
  local fns
  if agg == "reduce" or agg == "apply" then
    if type(f) ~= "function" then fail(agg .. " needs a function") end
  elseif agg == "aggregate" then
    if type(f) ~= "table" then fail("aggregate needs a table { init, add, merge, result }") end
    for k, v in pairs(f) do
      if k ~= "init" and k ~= "add" and k ~= "merge" and k ~= "result" then
        fail("aggregate: unknown field '" .. tostring(k) .. "' (init, add, merge, result)")
      end
      if type(v) ~= "function" then fail("aggregate: " .. k .. " must be a function") end
    end
    if not f.init or not f.add then fail("aggregate needs init and add functions") end
    if w.assigner.kind == "session" and not f.merge then
      fail("aggregate over session windows needs a merge function: sessions merge when a record bridges them")
    end
    fns, f = f, nil
  elseif agg ~= "count" and type(f) ~= "string" and type(f) ~= "function" and f ~= nil then
    fail(agg .. " needs a field name or a function (or nothing, for numeric values)")
  end
  local a = w.assigner
  local s = add(w.stream.p, "window", { w.stream.node.id }, {
    fn = type(f) == "function" and f or nil, fns = fns,
    opts = { assigner = a.kind, size = a.size, advance = a.advance or a.size, offset = a.offset,
             agg = agg, field = type(f) == "string" and f or nil, lateness = w.lateness, late = w.late,
             trigger = w.trigger.kind, trigger_count = w.trigger.n, trigger_every = w.trigger.every,
             count_n = a.n, count_slide = a.slide },
    trigger_fns = w.trigger.fns })
  return s
end
for _, agg in ipairs({ "count", "sum", "min", "max", "avg", "reduce", "aggregate", "apply" }) do
  Windowed[agg] = function(self, f)
    local s = aggregate(self, agg, f)
    s.node.where = where()
    return s
  end
end

-- process{ open, process, on_timer, migrate }: a keyed operator with state and
-- timers (ctx.state, ctx.timers, ctx.emit, ctx.side).
function Stream:process(spec)
  if type(spec) ~= "table" then fail("process needs a table { process = fn[, open = fn][, on_timer = fn] }") end
  for k, v in pairs(spec) do
    if k ~= "open" and k ~= "process" and k ~= "on_timer" and k ~= "migrate" then
      fail("process: unknown field '" .. tostring(k) .. "' (open, process, on_timer, migrate)")
    end
    if type(v) ~= "function" then fail("process: " .. tostring(k) .. " must be a function, got " .. type(v)) end
  end
  if not spec.process then fail("process needs a process function") end
  local s = add(self.p, "process", { self.node.id }, { fns = { open = spec.open, process = spec.process, on_timer = spec.on_timer,
                                                                    migrate = spec.migrate } })
  return s
end

-- dedup{ ttl }: a keyed operator that drops a value whose key was seen
-- within ttl (of event time, or processing time for records without one).
function Stream:dedup(opts)
  if type(opts) ~= "table" then fail("dedup needs a table { ttl = duration }") end
  for k in pairs(opts) do
    if k ~= "ttl" then fail("dedup: unknown option '" .. tostring(k) .. "' (ttl)") end
  end
  if opts.ttl == nil then fail("dedup needs a ttl") end
  local ttl = check_duration("dedup ttl", opts.ttl)
  local s = add(self.p, "dedup", { self.node.id }, { opts = { ttl = ttl } })
  return s
end

-- A table: the latest value per key of a changelog.  stream:to_table() on
-- a keyed stream; p:table(name, source options) reads a topic or a file.
function Stream:to_table()
  return setmetatable({ p = self.p, node = self.node }, Table)
end

-- stream:join(table, fn(left, right, ctx), { type = "inner" | "left" }):
-- each record of the keyed stream joins the table's row for its key as it
-- is when the record is processed (right is nil on a left-join miss).
function Stream:join(other, fn, opts)
  check_fn("join", fn)
  opts = opts or {}
  if type(opts) ~= "table" then fail("join options must be a table") end
  if getmetatable(other) == Stream then
    -- an interval join of two keyed streams by event time
    if other.p ~= self.p then fail("join needs a stream of the same pipeline") end
    for k in pairs(opts) do
      if k ~= "within" and k ~= "before" and k ~= "after" and k ~= "type" then
        fail("join: unknown option '" .. tostring(k) .. "' (within, or before and after; type)")
      end
    end
    local before, after
    if opts.within ~= nil then
      if opts.before ~= nil or opts.after ~= nil then fail("join: give within, or before and after, not both") end
      before = check_duration("join within", opts.within)
      after = before
    else
      if opts.before == nil or opts.after == nil then
        fail("a join of two streams needs within = d, or before = d and after = d")
      end
      before, after = check_duration("join before", opts.before), check_duration("join after", opts.after)
    end
    local jtype = opts.type or "inner"
    if jtype ~= "inner" and jtype ~= "left" and jtype ~= "outer" then
      fail("join: type must be \"inner\", \"left\" or \"outer\" for two streams, got " .. tostring(jtype))
    end
    local s = add(self.p, "join", { self.node.id, other.node.id },
      { fn = fn, opts = { type = jtype, interval = true, before = before, after = after } })
    return s
  end
  if getmetatable(other) ~= Table or other.p ~= self.p then
    fail("join needs a table of the same pipeline (p:table(...) or stream:to_table())")
  end
  if opts.as_of ~= nil then
    -- temporal: the table's row as it was at the stream record's event time
    if other.global then fail("a temporal join needs a table, not a global table") end
    if opts.as_of ~= "event_time" then fail("join: as_of must be \"event_time\", got " .. tostring(opts.as_of)) end
    for k in pairs(opts) do
      if k ~= "as_of" and k ~= "retention" and k ~= "type" then
        fail("join: unknown option '" .. tostring(k) .. "' (as_of, retention, type)")
      end
    end
    if opts.retention == nil then fail("a temporal join needs retention = d: how long the table keeps old versions") end
    local retention = check_duration("join retention", opts.retention)
    local jtype = opts.type or "inner"
    if jtype ~= "inner" and jtype ~= "left" then
      fail("join: type must be \"inner\" or \"left\" for a temporal join, got " .. tostring(jtype))
    end
    local s = add(self.p, "join", { self.node.id, other.node.id },
      { fn = fn, opts = { type = jtype, temporal = true, retention = retention } })
    return s
  end
  if other.global then
    for k in pairs(opts) do
      if k ~= "type" and k ~= "key" then fail("join: unknown option '" .. tostring(k) .. "' (key, type)") end
    end
    local key = opts.key
    if type(key) ~= "string" and type(key) ~= "function" then
      fail("a join with a global table needs key = a field name or a function of the stream's value")
    end
    local jtype = opts.type or "inner"
    if jtype ~= "inner" and jtype ~= "left" then
      fail("join: type must be \"inner\" or \"left\" for a global table, got " .. tostring(jtype))
    end
    local s = add(self.p, "join", { self.node.id }, { fn = fn, key = key,
      opts = { type = jtype, global = other.node.uid, key_field = type(key) == "string" and key or nil } })
    return s
  end
  for k in pairs(opts) do
    if k ~= "type" then fail("join: unknown option '" .. tostring(k) .. "' (type; as_of and retention for a temporal join)") end
  end
  local jtype = opts.type or "inner"
  if jtype ~= "inner" and jtype ~= "left" then
    fail("join: type must be \"inner\" or \"left\" for a stream-table join, got " .. tostring(jtype))
  end
  local s = add(self.p, "join", { self.node.id, other.node.id }, { fn = fn, opts = { type = jtype } })
  return s
end
-- The stream of a side output: records too late for a window whose `late`
-- option names it.  Declare it after that window.
function Pipeline:side(name)
  check_name("side output", name)
  local s = add(self, "side", {}, { name = name, uid = "side-" .. name })
  return s
end

-- table:join(table2, fn(left_row, right_row, ctx)): a changelog stream of
-- the joined rows: an update on either side emits the new joined row (when
-- both sides have one), a delete that breaks a pair emits the key with a
-- nil value (a tombstone).
function Table:join(other, fn, opts)
  check_fn("join", fn)
  if getmetatable(other) ~= Table or other.p ~= self.p then
    fail("a table joins another table of the same pipeline")
  end
  if self.global or other.global then fail("a join of two tables needs tables, not global tables") end
  if opts ~= nil and (type(opts) ~= "table" or next(opts) ~= nil) then
    fail("a join of two tables takes no options")
  end
  local s = add(self.p, "join", { self.node.id, other.node.id }, { fn = fn, opts = { tables = true } })
  return s
end

-- p:table(name, opts): a source read as a changelog; opts are a source's,
-- and its key (the `key` option, or a Kafka message's key) is the table's.
-- A Kafka tombstone deletes the key's row.
-- The source of a table (kind "table" or "global_table"), its options checked.
local function table_source(p, kind, name, opts)
  opts = opts or {}
  if type(opts) ~= "table" then fail(kind .. " '" .. tostring(name) .. "': options must be a table") end
  if opts.key == nil and not opts.kafka then
    fail(kind .. " '" .. tostring(name) .. "' needs a key option (a field name or a function)")
  end
  local s = p:source(name, opts)
  s.node.where = where()
  return s
end

function Pipeline:table(name, opts)
  local s = table_source(self, "table", name, opts)
  local k = add(self, "key_by", { s.node.id }, {
    key = function(_, ctx) return ctx.key end, opts = { table_key = true } })
  k.node.where = where()
  return setmetatable({ p = self, node = k.node, name = name }, Table)
end

-- p:global_table(name, opts): the same changelog, every row visible to
-- every task (the daemon's one state store holds it once): joined through
-- `key` on the stream side, with no co-partitioning.
function Pipeline:global_table(name, opts)
  local s = table_source(self, "global_table", name, opts)
  local w = add(self, "global_table", { s.node.id }, { name = name, uid = "global-" .. name })
  w.node.where = where()
  return setmetatable({ p = self, node = w.node, name = name, global = true }, Table)
end

return M
