-- lua/eddy/init.lua: the pipeline API builds a graph of operator nodes, checks
-- what the user asked for, refuses what this version cannot do, and reports
-- mistakes at the line of the user's call.

local eddy = require("eddy")

local THIS = debug.getinfo(1, "S").source:gsub("^@", "")

-- the line this is called from
local function here() return debug.getinfo(2, "l").currentline end

-- fn must raise; returns the message
local function err_of(fn, ...)
  local ok, e = pcall(fn, ...)
  assert(not ok, "expected an error, got none")
  return tostring(e)
end

-- fn must raise a message that contains text (plain)
local function raises(text, fn, ...)
  local e = err_of(fn, ...)
  assert(e:find(text, 1, true), "expected an error containing \"" .. text .. "\", got \"" .. e .. "\"")
  return e
end

local function noop(v) return v end

local function src(p, name) return p:source(name or "in", { file = "in.jsonl" }) end

describe("eddy.pipeline", function()
  it("returns an empty pipeline that is_pipeline recognises", function()
    local p = eddy.pipeline()
    assert.is_true(eddy.is_pipeline(p))
    assert.same({}, p.nodes)
  end)

  it("gives each call a new pipeline", function()
    local a, b = eddy.pipeline(), eddy.pipeline()
    src(a)
    assert.are_not.equal(a, b)
    assert.equal(0, #b.nodes)
    src(b) -- the same source name in another pipeline is fine
    assert.equal(1, #b.nodes)
  end)

  it("is_pipeline is false for other values, including a stream", function()
    assert.is_false(eddy.is_pipeline(nil))
    assert.is_false(eddy.is_pipeline({}))
    assert.is_false(eddy.is_pipeline({ nodes = {}, is_pipeline = true }))
    assert.is_false(eddy.is_pipeline(src(eddy.pipeline())))
  end)

  it("has a version string", function()
    assert.is_string(eddy.VERSION)
  end)
end)

describe("p:source", function()
  local p
  before_each(function() p = eddy.pipeline() end)

  it("adds a source node with defaults for format, follow, header, delimiter", function()
    src(p, "words")
    local n = p.nodes[1]
    assert.equal(1, n.id)
    assert.equal("source", n.kind)
    assert.equal("words", n.name)
    assert.equal("words", n.uid)
    assert.same({}, n.inputs)
    assert.same({ file = "in.jsonl", format = "json", follow = false, header = false, delimiter = "," }, n.opts)
    assert.is_nil(n.key)
  end)

  it("accepts stdin = true", function()
    p:source("in", { stdin = true, format = "lines" })
    assert.same({ stdin = true, format = "lines", follow = false, header = false, delimiter = "," }, p.nodes[1].opts)
  end)

  it("counts a false stdin as absent", function()
    p:source("in", { file = "x", stdin = false })
    assert.equal("x", p.nodes[1].opts.file)
  end)

  it("accepts the formats json, lines, raw and csv", function()
    for _, f in ipairs({ "json", "lines", "raw", "csv" }) do
      p:source("in-" .. f, { file = "x", format = f })
      assert.equal(f, p.nodes[#p.nodes].opts.format)
    end
  end)

  it("keeps follow, header and a one-character delimiter", function()
    p:source("in", { file = "x.csv", format = "csv", follow = true, header = true, delimiter = ";" })
    local o = p.nodes[1].opts
    assert.is_true(o.follow)
    assert.is_true(o.header)
    assert.equal(";", o.delimiter)
  end)

  it("keeps a key that is a field name or a function", function()
    local f = function(v) return v.id end
    p:source("a", { file = "x", key = "id" })
    p:source("b", { file = "x", key = f })
    assert.equal("id", p.nodes[1].key)
    assert.equal(f, p.nodes[2].key)
  end)

  it("accepts names of letters, digits, '_', '.', '-'", function()
    p:source("A-b_c.9", { file = "x" })
    assert.equal("A-b_c.9", p.nodes[1].name)
  end)

  it("refuses a name that is not a non-empty string of letters, digits, '_', '.', '-'", function()
    raises("source name must be a non-empty string", function() eddy.pipeline():source(1, { file = "x" }) end)
    raises("source name must be a non-empty string", function() eddy.pipeline():source("", { file = "x" }) end)
    raises("source name must be a non-empty string", function() eddy.pipeline():source("a b", { file = "x" }) end)
    raises("source name must be a non-empty string", function() eddy.pipeline():source("a/b", { file = "x" }) end)
    raises("source name must be a non-empty string", function() eddy.pipeline():source(nil, { file = "x" }) end)
  end)

  it("refuses options that are not a table", function()
    raises("source 'in': options must be a table", function() eddy.pipeline():source("in", "in.jsonl") end)
  end)

  it("refuses an unknown option", function()
    raises("source 'in': unknown option 'bogus'", function() eddy.pipeline():source("in", { file = "x", bogus = 1 }) end)
    raises("source 'in': unknown option '1'", function() eddy.pipeline():source("in", { "x", file = "x" }) end)
  end)

  it("refuses an option of the wrong type", function()
    raises("source 'in': option 'file' must be a string, got number", function() eddy.pipeline():source("in", { file = 1 }) end)
    raises("option 'stdin' must be a boolean, got string", function() eddy.pipeline():source("in", { stdin = "yes" }) end)
    raises("option 'follow' must be a boolean, got number", function() eddy.pipeline():source("in", { file = "x", follow = 1 }) end)
    raises("option 'format' must be a string, got table", function() eddy.pipeline():source("in", { file = "x", format = {} }) end)
    raises("option 'delimiter' must be a string", function() eddy.pipeline():source("in", { file = "x", delimiter = 44 }) end)
    raises("option 'start' must be a string", function() eddy.pipeline():source("in", { file = "x", start = 0 }) end)
  end)

  it("needs exactly one of file, stdin, kafka", function()
    local msg = "source 'in' needs exactly one of file, stdin, kafka"
    raises(msg, function() eddy.pipeline():source("in", {}) end)
    raises(msg, function() eddy.pipeline():source("in") end)
    raises(msg, function() eddy.pipeline():source("in", { format = "lines" }) end)
    raises(msg, function() eddy.pipeline():source("in", { file = "x", stdin = true }) end)
    raises(msg, function() eddy.pipeline():source("in", { file = "x", kafka = "t" }) end)
  end)

  it("takes a kafka topic or a list of topics, with start and max_bytes", function()
    local q = eddy.pipeline()
    q:source("a", { kafka = "words", start = "latest", max_bytes = "64KB", timestamp = "kafka" })
    q:source("b", { kafka = { "t1", "t2" } })
    assert.equal("words", q.nodes[1].opts.kafka)
    assert.equal("latest", q.nodes[1].opts.start)
    assert.equal("64KB", q.nodes[1].opts.max_bytes)
    assert.equal("kafka", q.nodes[1].opts.timestamp)
    assert.equal("t1,t2", q.nodes[2].opts.kafka)
    assert.is_nil(q.nodes[2].opts.start)
  end)

  it("refuses a bad topic, a bad start, and file options on a kafka source", function()
    raises("source 'in': kafka must be a topic name or a list of them",
      function() eddy.pipeline():source("in", { kafka = {} }) end)
    raises("kafka topic names are letters, digits, '_', '.', '-', got a b",
      function() eddy.pipeline():source("in", { kafka = "a b" }) end)
    raises("source 'in': start must be \"earliest\", \"latest\" or \"committed\", got soon",
      function() eddy.pipeline():source("in", { kafka = "t", start = "soon" }) end)
    raises("source 'in': follow is for file sources",
      function() eddy.pipeline():source("in", { kafka = "t", follow = true }) end)
    raises("source 'in': csv is for file sources",
      function() eddy.pipeline():source("in", { kafka = "t", format = "csv" }) end)
    raises("source 'in': max_bytes must be a size",
      function() eddy.pipeline():source("in", { kafka = "t", max_bytes = true }) end)
  end)

  it("refuses start on a file source; keeps max_bytes and idle, and refuses a bad one", function()
    raises("source 'in': start is for kafka sources",
      function() eddy.pipeline():source("in", { file = "x", start = "earliest" }) end)
    assert.equal("1MB", eddy.pipeline():source("in", { file = "x", max_bytes = "1MB" }).p.nodes[1].opts.max_bytes)
    raises("source 'in': max_bytes must be a size",
      function() eddy.pipeline():source("in", { file = "x", max_bytes = true }) end)
    local q = eddy.pipeline()
    q:source("in", { file = "x", idle = "1m" })
    assert.equal("1m", q.nodes[1].opts.idle)
    raises("source 'in': idle: expected a duration like \"10s\", got soon",
      function() eddy.pipeline():source("in", { file = "x", idle = "soon" }) end)
  end)

  it("keeps a timestamp field with a watermark bound, as written", function()
    p:source("in", { file = "x", timestamp = "ts", watermark = eddy.watermark.bounded("5s") })
    local n = p.nodes[1]
    assert.equal("ts", n.opts.timestamp)
    assert.equal("ts", n.timestamp)
    assert.equal("5s", n.opts.watermark_bound)
  end)

  it("keeps a timestamp function out of opts, and a timestamp alone gets a bound of 0", function()
    local f = function(v) return v.t end
    p:source("in", { file = "x", timestamp = f })
    assert.equal(f, p.nodes[1].timestamp)
    assert.is_nil(p.nodes[1].opts.timestamp)
    assert.equal("0", p.nodes[1].opts.watermark_bound)
    p:source("in2", { file = "x", timestamp = "ingest", watermark = eddy.watermark.monotonic() })
    assert.equal("ingest", p.nodes[2].opts.timestamp)
    assert.equal("0", p.nodes[2].opts.watermark_bound)
  end)

  it("leaves timestamp and watermark_bound out without a timestamp", function()
    src(p)
    assert.is_nil(p.nodes[1].opts.timestamp)
    assert.is_nil(p.nodes[1].opts.watermark_bound)
  end)

  it("refuses a timestamp that is not a field name or a function", function()
    raises("source 'in': timestamp must be a field name, a function, \"kafka\" or \"ingest\"",
      function() eddy.pipeline():source("in", { file = "x", timestamp = 5 }) end)
  end)

  it("refuses timestamp = \"kafka\" on a source that is not kafka", function()
    raises("source 'in': timestamp = \"kafka\" needs a kafka source",
      function() eddy.pipeline():source("in", { file = "x", timestamp = "kafka" }) end)
  end)

  it("refuses a watermark that is not an eddy.watermark value or a function; keeps a function", function()
    local msg = "source 'in': watermark must be eddy.watermark.bounded(d), eddy.watermark.monotonic() or a function"
    raises(msg, function() eddy.pipeline():source("in", { file = "x", timestamp = "ts", watermark = "5s" }) end)
    local f = function() end
    local q = eddy.pipeline()
    q:source("in", { file = "x", timestamp = "ts", watermark = f })
    assert.equal(f, q.nodes[1].watermark_fn)
    assert.is_nil(q.nodes[1].opts.watermark_bound)
  end)

  it("refuses a watermark without a timestamp", function()
    raises("source 'in': a watermark needs a timestamp option",
      function() eddy.pipeline():source("in", { file = "x", watermark = eddy.watermark.bounded("1s") }) end)
  end)

  it("refuses an unknown format", function()
    raises("source 'in': unknown format 'xml' (json, lines, raw, csv)",
      function() eddy.pipeline():source("in", { file = "x", format = "xml" }) end)
  end)

  it("refuses a delimiter that is not one character", function()
    raises("source 'in': delimiter must be one character", function() eddy.pipeline():source("in", { file = "x", delimiter = ";;" }) end)
    raises("source 'in': delimiter must be one character", function() eddy.pipeline():source("in", { file = "x", delimiter = "" }) end)
  end)

  it("refuses a key that is neither a field name nor a function", function()
    raises("source 'in': key must be a field name or a function", function() eddy.pipeline():source("in", { file = "x", key = 1 }) end)
    raises("source 'in': key must be a field name or a function", function() eddy.pipeline():source("in", { file = "x", key = {} }) end)
  end)

  it("refuses a source name declared twice", function()
    src(p, "in")
    raises("source 'in' is declared twice", function() p:source("in", { file = "y" }) end)
    assert.equal(1, #p.nodes)
  end)

  it("adds no node when it refuses", function()
    pcall(p.source, p, "in", { kafka = "t", follow = true })
    pcall(p.source, p, "in", { file = "x", bogus = true })
    assert.equal(0, #p.nodes)
  end)

  it("leaves the name of a refused source free", function()
    pcall(p.source, p, "in", { kafka = "t", start = "soon" })
    local ok, e = pcall(p.source, p, "in", { file = "x" })
    assert(ok, e)
    assert.equal(1, #p.nodes)
  end)
end)

describe("map, filter, flat_map", function()
  for _, op in ipairs({ "map", "filter", "flat_map" }) do
    it(op .. " adds a node fed by the stream it is called on and returns a new stream", function()
      local p = eddy.pipeline()
      local s = src(p)
      local f = function() end
      local t = s[op](s, f)
      assert.are_not.equal(s, t)
      local n = p.nodes[2]
      assert.equal(2, n.id)
      assert.equal(op, n.kind)
      assert.equal(f, n.fn)
      assert.same({ 1 }, n.inputs)
      assert.same({}, n.opts)
      assert.equal(n, t.node)
    end)

    it(op .. " needs a function", function()
      local p = eddy.pipeline()
      local s = src(p)
      raises(op .. " needs a function, got number", function() s[op](s, 1) end)
      raises(op .. " needs a function, got nil", function() s[op](s) end)
      raises(op .. " needs a function, got string", function() s[op](s, "v.x > 1") end)
      raises(op .. " needs a function, got table", function() s[op](s, {}) end)
      assert.equal(1, #p.nodes)
    end)
  end

  it("lets a stream feed several operators (fan-out)", function()
    local p = eddy.pipeline()
    local s = src(p)
    s:map(noop)
    s:filter(noop)
    assert.same({ 1 }, p.nodes[2].inputs)
    assert.same({ 1 }, p.nodes[3].inputs)
  end)

  it("chains: each node's input is the node before it", function()
    local p = eddy.pipeline()
    src(p):map(noop):filter(noop):flat_map(noop)
    for i = 2, 4 do assert.same({ i - 1 }, p.nodes[i].inputs) end
    assert.same({ "source", "map", "filter", "flat_map" },
      { p.nodes[1].kind, p.nodes[2].kind, p.nodes[3].kind, p.nodes[4].kind })
  end)
end)

describe("key_by", function()
  local p, s
  before_each(function() p = eddy.pipeline(); s = src(p) end)

  it("by field name: keeps the field in opts and as the key", function()
    s:key_by("word")
    local n = p.nodes[2]
    assert.equal("key_by", n.kind)
    assert.equal("word", n.key)
    assert.same({ field = "word" }, n.opts)
    assert.same({ 1 }, n.inputs)
  end)

  it("by function: keeps the function and no field", function()
    local f = function(v) return v.w end
    s:key_by(f)
    local n = p.nodes[2]
    assert.equal(f, n.key)
    assert.is_nil(n.opts.field)
  end)

  it("keeps a parallelism option", function()
    s:key_by("word", { parallelism = 4 })
    assert.equal(4, p.nodes[2].opts.parallelism)
  end)

  it("accepts empty options", function()
    s:key_by("word", {})
    assert.is_nil(p.nodes[2].opts.parallelism)
  end)

  it("needs a field name or a function", function()
    raises("key_by needs a field name or a function, got number", function() s:key_by(1) end)
    raises("key_by needs a field name or a function, got nil", function() s:key_by() end)
    raises("key_by needs a field name or a function, got table", function() s:key_by({ "a" }) end)
  end)

  it("refuses options that are not a table", function()
    raises("key_by options must be a table", function() s:key_by("k", 4) end)
  end)

  it("refuses an unknown option", function()
    raises("key_by: unknown option 'parallel'", function() s:key_by("k", { parallel = 2 }) end)
  end)

  it("refuses a parallelism that is not a positive integer", function()
    for _, bad in ipairs({ 0, -1, 1.5, "2", true, 0 / 0 }) do
      raises("key_by: parallelism must be a positive integer", function() s:key_by("k", { parallelism = bad }) end)
    end
  end)
end)

describe("window", function()
  local p, s
  before_each(function() p = eddy.pipeline(); s = src(p) end)

  it("tumbling + count adds one window node fed by the stream, declared at the aggregate's line", function()
    local w = s:window(eddy.window.tumbling("1m")); local out = w:count(); local l = here()
    local n = p.nodes[2]
    assert.equal(n, out.node)
    assert.equal("window", n.kind)
    assert.same({ 1 }, n.inputs)
    assert.same({ assigner = "tumbling", size = "1m", advance = "1m", offset = "0", agg = "count", lateness = "0",
                  trigger = "event_time" }, n.opts)
    assert.equal(THIS .. ":" .. l, n.where)
  end)

  it("hopping keeps size and advance; sum, min, max, avg take a field or a function", function()
    local f = function(v) return v.x end
    s:window(eddy.window.hopping("10s", "5s")):sum("amount")
    s:window(eddy.window.tumbling(60000, 1000)):min(f)
    s:window(eddy.window.tumbling("1h")):avg()
    assert.same({ assigner = "hopping", size = "10s", advance = "5s", offset = "0", agg = "sum", field = "amount",
                  lateness = "0", trigger = "event_time" }, p.nodes[2].opts)
    assert.same({ assigner = "tumbling", size = "60000", advance = "60000", offset = "1000", agg = "min",
                  lateness = "0", trigger = "event_time" }, p.nodes[3].opts)
    assert.equal(f, p.nodes[3].fn)
    assert.equal("avg", p.nodes[4].opts.agg)
    assert.is_nil(p.nodes[4].fn)
  end)

  it("accepts the event_time trigger", function()
    s:window(eddy.window.tumbling("1m"), { trigger = eddy.trigger.event_time() }):max("v")
    assert.equal("max", p.nodes[2].opts.agg)
  end)

  it("adds no node until an aggregate is chosen", function()
    s:window(eddy.window.tumbling("1m"))
    assert.equal(1, #p.nodes)
  end)

  it("needs an assigner", function()
    raises("window needs an assigner such as eddy.window.tumbling(\"1m\")", function() s:window("1m") end)
    raises("window needs an assigner", function() s:window() end)
  end)

  it("refuses options that are not a table, unknown options, and a trigger that is not an eddy.trigger", function()
    raises("window options must be a table", function() s:window(eddy.window.tumbling("1m"), "x") end)
    raises("window: unknown option 'size'", function() s:window(eddy.window.tumbling("1m"), { size = 1 }) end)
    raises("window: trigger must be an eddy.trigger value", function() s:window(eddy.window.tumbling("1m"), { trigger = "event_time" }) end)
  end)

  it("refuses an aggregate argument that is not a field name or a function", function()
    local w = s:window(eddy.window.tumbling("1m"))
    raises("sum needs a field name or a function", function() w:sum(5) end)
  end)

  it("refuses durations that are not like \"10s\" or a whole number of ms", function()
    raises("eddy.window.tumbling size: expected a duration like \"10s\", got ten", function() eddy.window.tumbling("ten") end)
    raises("eddy.window.hopping advance: expected a duration like \"10s\", got nil", function() eddy.window.hopping("10s") end)
    raises("eddy.watermark.bounded must be a whole, non-negative number of ms", function() eddy.watermark.bounded(-1) end)
    raises("eddy.watermark.bounded must be a whole, non-negative number of ms", function() eddy.watermark.bounded(1.5) end)
  end)
end)

describe("union", function()
  it("adds a node whose inputs are this stream and the others, in order", function()
    local p = eddy.pipeline()
    local a, b, c = src(p, "a"), src(p, "b"), src(p, "c")
    local u = a:union(b, c)
    local n = p.nodes[4]
    assert.equal("union", n.kind)
    assert.same({ 1, 2, 3 }, n.inputs)
    assert.equal(n, u.node)
  end)

  it("needs at least one other stream", function()
    local p = eddy.pipeline()
    local a = src(p)
    raises("union needs at least one other stream", function() a:union() end)
  end)

  it("refuses a stream of another pipeline and values that are not streams", function()
    local p, q = eddy.pipeline(), eddy.pipeline()
    local a, b = src(p), src(q)
    raises("union needs streams of the same pipeline", function() a:union(b) end)
    raises("union needs streams of the same pipeline", function() a:union({}) end)
    raises("union needs streams of the same pipeline", function() a:union(nil) end)
    raises("union needs streams of the same pipeline", function() a:union(p) end)
  end)
end)

describe("uid", function()
  it("names the node of the stream it is called on and returns that stream", function()
    local p = eddy.pipeline()
    local m = src(p):map(noop)
    assert.equal(m, m:uid("parse"))
    assert.equal("parse", p.nodes[2].uid)
  end)

  it("leaves other nodes without a uid (the runtime derives one)", function()
    local p = eddy.pipeline()
    src(p):map(noop)
    assert.is_nil(p.nodes[2].uid)
  end)

  it("may be set again on the same node", function()
    local p = eddy.pipeline()
    local m = src(p):map(noop):uid("a")
    m:uid("a")
    m:uid("b")
    assert.equal("b", p.nodes[2].uid)
  end)

  it("needs a non-empty string", function()
    local p = eddy.pipeline()
    local m = src(p):map(noop)
    raises("uid needs a non-empty string", function() m:uid("") end)
    raises("uid needs a non-empty string", function() m:uid(1) end)
    raises("uid needs a non-empty string", function() m:uid() end)
  end)

  it("refuses a uid that another operator has; sources and sinks have names of their own", function()
    local p = eddy.pipeline()
    local s = src(p, "in")
    s:map(noop):uid("parse")
    local m2 = s:map(noop)
    raises("uid 'parse' is used twice", function() m2:uid("parse") end)
    assert.is_nil(p.nodes[3].uid)
    m2:uid("in")                                  -- the source's name: another namespace
    assert.are.equal("in", p.nodes[3].uid)
  end)
end)

describe("sink", function()
  local p, s
  before_each(function() p = eddy.pipeline(); s = src(p) end)

  it("adds a sink node and returns the stream it was called on", function()
    local m = s:map(noop)
    local r = m:sink("out", { file = "out" })
    assert.equal(m, r)
    local n = p.nodes[3]
    assert.equal("sink", n.kind)
    assert.equal("out", n.name)
    assert.equal("out", n.uid)
    assert.same({ 2 }, n.inputs)
    assert.same({ file = "out", format = "json" }, n.opts)
  end)

  it("chains: several sinks on one stream", function()
    s:sink("a", { stdout = true }):sink("b", { file = "dir" })
    assert.same({ 1 }, p.nodes[2].inputs)
    assert.same({ 1 }, p.nodes[3].inputs)
    assert.same({ stdout = true, format = "json" }, p.nodes[2].opts)
  end)

  it("accepts the formats json, lines and raw", function()
    for _, f in ipairs({ "json", "lines", "raw" }) do
      s:sink("out-" .. f, { stdout = true, format = f })
      assert.equal(f, p.nodes[#p.nodes].opts.format)
    end
  end)

  it("refuses a bad name", function()
    raises("sink name must be a non-empty string", function() src(eddy.pipeline()):sink("", { stdout = true }) end)
    raises("sink name must be a non-empty string", function() src(eddy.pipeline()):sink("a b", { stdout = true }) end)
    raises("sink name must be a non-empty string", function() src(eddy.pipeline()):sink(nil, { stdout = true }) end)
  end)

  it("refuses options that are not a table", function()
    raises("sink 'out': options must be a table", function() src(eddy.pipeline()):sink("out", "dir") end)
  end)

  it("refuses an unknown option", function()
    raises("sink 'out': unknown option 'path'", function() src(eddy.pipeline()):sink("out", { path = "x" }) end)
    raises("sink 'out': unknown option 'follow'", function() src(eddy.pipeline()):sink("out", { file = "x", follow = true }) end)
  end)

  it("refuses an option of the wrong type", function()
    raises("sink 'out': option 'stdout' must be a boolean, got string", function() src(eddy.pipeline()):sink("out", { stdout = "yes" }) end)
    raises("sink 'out': option 'file' must be a string, got boolean", function() src(eddy.pipeline()):sink("out", { file = true }) end)
  end)

  it("needs exactly one of file, stdout, kafka", function()
    local msg = "sink 'out' needs exactly one of file, stdout, kafka"
    raises(msg, function() src(eddy.pipeline()):sink("out", {}) end)
    raises(msg, function() src(eddy.pipeline()):sink("out") end)
    raises(msg, function() src(eddy.pipeline()):sink("out", { file = "x", stdout = true }) end)
  end)

  it("takes a kafka topic with a key field or function; refuses a key on other sinks and a bad topic", function()
    local q = eddy.pipeline()
    src(q):sink("out", { kafka = "topic", key = "id" })
    local n = q.nodes[2]
    assert.equal("topic", n.opts.kafka)
    assert.equal("id", n.opts.key_field)
    local f = function() end
    local q2 = eddy.pipeline()
    src(q2):sink("out", { kafka = "topic", key = f })
    assert.equal(f, q2.nodes[2].key)
    raises("sink 'out': key is for kafka sinks", function() src(eddy.pipeline()):sink("out", { stdout = true, key = "id" }) end)
    raises("sink 'out': kafka must be a topic name", function() src(eddy.pipeline()):sink("out", { kafka = "" }) end)
    raises("sink 'out': key must be a field name or a function",
      function() src(eddy.pipeline()):sink("out", { kafka = "t", key = 5 }) end)
  end)

  it("refuses csv and unknown formats", function()
    raises("sink 'out': unknown format 'csv' (json, lines, raw)", function() src(eddy.pipeline()):sink("out", { stdout = true, format = "csv" }) end)
    raises("sink 'out': unknown format 'xml' (json, lines, raw)", function() src(eddy.pipeline()):sink("out", { stdout = true, format = "xml" }) end)
  end)

  it("refuses a sink name declared twice", function()
    s:sink("out", { stdout = true })
    raises("sink 'out' is declared twice", function() s:map(noop):sink("out", { file = "x" }) end)
  end)

  it("leaves the name of a refused sink free", function()
    pcall(s.sink, s, "out", { kafka = "t", stdout = true })
    local ok, e = pcall(s.sink, s, "out", { stdout = true })
    assert(ok, e)
    assert.equal(2, #p.nodes)
  end)
end)

describe("operators of later versions", function()
  it("window lateness and late are kept on the window node; p:side adds a side node", function()
    local p = eddy.pipeline()
    src(p):key_by("k"):window(eddy.window.tumbling("1m"), { lateness = "30s", late = "late" }):count()
    local side = p:side("late")
    assert.equal("30s", p.nodes[3].opts.lateness)
    assert.equal("late", p.nodes[3].opts.late)
    assert.equal("side", side.node.kind)
    assert.equal("late", side.node.name)
    assert.same({}, side.node.inputs)
  end)
  it("eddy.window.count(n[, slide]) counts records; it takes no trigger or lateness", function()
    local p = eddy.pipeline()
    local n = src(p):window(eddy.window.count(10, 5)):count().node
    assert.equal("count", n.opts.assigner)
    assert.equal(10, n.opts.count_n)
    assert.equal(5, n.opts.count_slide)
    assert.equal(3, src(eddy.pipeline()):window(eddy.window.count(3)):count().node.opts.count_slide)
    raises("eddy.window.count needs a positive whole number of records", function() eddy.window.count(0) end)
    raises("slide must be a whole number from 1 to n", function() eddy.window.count(3, 4) end)
    raises("count windows fire by their record count", function()
      src(eddy.pipeline()):window(eddy.window.count(3), { lateness = "1s" }) end)
  end)
  it("eddy.window.sliding(size) makes a sliding assigner that takes event_time and every triggers", function()
    local n = src(eddy.pipeline()):window(eddy.window.sliding("5m")):count().node
    assert.equal("sliding", n.opts.assigner)
    assert.equal("5m", n.opts.size)
    raises("sliding windows take the event_time and every triggers (not count)",
      function() src(eddy.pipeline()):window(eddy.window.sliding("5m"), { trigger = eddy.trigger.count(2) }) end)
  end)
  it("triggers: processing_time, count(n), every(d) and tables of callbacks are kept on the window node", function()
    local p = eddy.pipeline()
    local s = src(p)
    local function node(t) return s:window(eddy.window.tumbling("1m"), { trigger = t }):count().node end
    assert.equal("processing_time", node(eddy.trigger.processing_time()).opts.trigger)
    local c = node(eddy.trigger.count(5))
    assert.equal("count", c.opts.trigger)
    assert.equal(5, c.opts.trigger_count)
    assert.equal("30s", node(eddy.trigger.every("30s")).opts.trigger_every)
    local f = function() end
    local custom = node({ on_element = f })
    assert.equal("custom", custom.opts.trigger)
    assert.equal(f, custom.trigger_fns.on_element)
    assert.equal("global", s:window(eddy.window.global()):count().node.opts.assigner)
    raises("eddy.trigger.count needs a positive whole number", function() eddy.trigger.count(0) end)
    raises("unknown field 'on_tick'", function() node({ on_tick = f }) end)
    raises("on_element must be a function", function() node({ on_element = 1 }) end)
    raises("session windows take the event_time and every triggers (not count)",
      function() s:window(eddy.window.session("1m"), { trigger = eddy.trigger.count(2) }) end)
  end)
  it("eddy.window.session(gap) makes a session assigner; an aggregate over it needs merge", function()
    local p = eddy.pipeline()
    local w = src(p):window(eddy.window.session("30s"))
    local f = function() end
    local n = w:aggregate({ init = f, add = f, merge = f }).node
    assert.equal("session", n.opts.assigner)
    assert.equal("30s", n.opts.size)
    raises("aggregate over session windows needs a merge function", function() w:aggregate({ init = f, add = f }) end)
    assert.equal("count", w:count().node.opts.agg)
  end)

  it("window:reduce and window:apply take a function; window:aggregate a table with init and add", function()
    local p = eddy.pipeline()
    local w = src(p):window(eddy.window.tumbling("1m"))
    local f = function() end
    assert.equal(f, w:reduce(f).node.fn)
    assert.equal("apply", w:apply(f).node.opts.agg)
    local fns = { init = f, add = f, result = f }
    assert.equal(fns, w:aggregate(fns).node.fns)
    raises("reduce needs a function", function() w:reduce("x") end)
    raises("aggregate needs a table { init, add, merge, result }", function() w:aggregate(f) end)
    raises("aggregate needs init and add functions", function() w:aggregate({ add = f }) end)
    raises("aggregate: unknown field 'combine' (init, add, merge, result)", function() w:aggregate({ init = f, add = f, combine = f }) end)
    raises("aggregate: add must be a function", function() w:aggregate({ init = f, add = 1 }) end)
  end)
  it("process keeps its functions and refuses unknown fields, non-functions and a missing process", function()
    local p = eddy.pipeline()
    local f = function() end
    local n = src(p):key_by("k"):process{ process = f, on_timer = f }.node
    assert.equal("process", n.kind)
    assert.equal(f, n.fns.process)
    raises("process: unknown field 'bogus' (open, process, on_timer, migrate)", function() src(p, "b"):process{ process = f, bogus = f } end)
    raises("process: open must be a function, got number", function() src(p, "c"):process{ process = f, open = 1 } end)
    raises("process: migrate must be a function, got table", function() src(p, "m"):process{ process = f, migrate = {} } end)
    assert.equal(f, src(p, "n"):key_by("k"):process{ process = f, migrate = f }.node.fns.migrate)
    raises("process needs a process function", function() src(p, "d"):process{ on_timer = f } end)
    raises("process needs a table", function() src(p, "e"):process(f) end)
  end)
  it("dedup keeps its ttl as written and refuses a missing or bad one", function()
    local p = eddy.pipeline()
    assert.equal("24h", src(p):key_by("k"):dedup{ ttl = "24h" }.node.opts.ttl)
    raises("dedup needs a ttl", function() src(p, "b"):dedup{} end)
    raises("dedup ttl: expected a duration", function() src(p, "c"):dedup{ ttl = "soon" } end)
    raises("dedup: unknown option 'x' (ttl)", function() src(p, "d"):dedup{ ttl = "1h", x = 1 } end)
  end)
  it("p:table is a source and a key_by by its key; join takes it with a function and a type", function()
    local p = eddy.pipeline()
    local t = p:table("customers", { file = "c.jsonl", key = "id" })
    assert.equal("source", p.nodes[1].kind)
    assert.equal("key_by", t.node.kind)
    local s = src(p, "orders"):key_by("customer")
    local f = function() end
    local j = s:join(t, f, { type = "left" }).node
    assert.equal("join", j.kind)
    assert.same({ s.node.id, t.node.id }, j.inputs)
    assert.equal("left", j.opts.type)
    assert.equal("inner", s:join(s:to_table(), f).node.opts.type)
  end)
  it("join refuses a bad type or option, a stream, a missing function, and what later versions add", function()
    local p = eddy.pipeline()
    local t = p:table("t", { file = "c.jsonl", key = "id" })
    local s = src(p):key_by("k")
    local f = function() end
    raises("join needs a function, got nil", function() s:join(t) end)
    raises("join: type must be \"inner\" or \"left\"", function() s:join(t, f, { type = "outer" }) end)
    raises("join: unknown option 'x' (type; as_of and retention for a temporal join)", function() s:join(t, f, { x = 1 }) end)
    raises("a temporal join needs retention = d", function() s:join(t, f, { as_of = "event_time" }) end)
    raises("join: as_of must be \"event_time\"", function() s:join(t, f, { as_of = "now", retention = "1d" }) end)
    assert.is_true(s:join(t, f, { as_of = "event_time", retention = "7d" }).node.opts.temporal)
    raises("a join of two streams needs within = d, or before = d and after = d", function() s:join(s, f) end)
    raises("join: give within, or before and after, not both", function() s:join(s, f, { within = "1m", before = "1m" }) end)
    raises("join: type must be \"inner\", \"left\" or \"outer\" for two streams", function() s:join(s, f, { within = "1m", type = "x" }) end)
    assert.equal("5m", s:join(s, f, { within = "5m", type = "outer" }).node.opts.before)
    raises("join needs a table of the same pipeline", function() s:join({}, f) end)
    raises("table 'u' needs a key option", function() p:table("u", { file = "c.jsonl" }) end)
    raises("global_table 'g' needs a key option", function() p:global_table("g", { file = "c.jsonl" }) end)
    local g = p:global_table("g2", { file = "c.jsonl", key = "code" })
    assert.equal("global_table", g.node.kind)
    assert.equal("global-g2", s:join(g, f, { key = "country" }).node.opts.global)
    raises("a join with a global table needs key =", function() s:join(g, f) end)
  end)
end)

describe("node ids, inputs and where", function()
  it("numbers nodes 1, 2, 3 ... in declaration order", function()
    local p = eddy.pipeline()
    local a = src(p, "a")
    local b = src(p, "b")
    a:union(b):key_by("k"):map(noop):sink("out", { stdout = true })
    for i, n in ipairs(p.nodes) do assert.equal(i, n.id) end
    assert.same({ "source", "source", "union", "key_by", "map", "sink" },
      (function() local k = {} for i, n in ipairs(p.nodes) do k[i] = n.kind end return k end)())
    assert.same({ 3 }, p.nodes[4].inputs)
    assert.same({ 5 }, p.nodes[6].inputs)
  end)

  it("records where each operator was declared: the caller's file and line", function()
    local p = eddy.pipeline()
    local s = p:source("in", { file = "x" }); local l1 = here()
    local m = s:map(noop); local l2 = here()
    m:key_by("k", { parallelism = 2 }); local l3 = here()
    m:filter(noop):sink("out", { stdout = true }); local l4 = here()
    s:union(m); local l5 = here()
    assert.equal(THIS .. ":" .. l1, p.nodes[1].where)
    assert.equal(THIS .. ":" .. l2, p.nodes[2].where)
    assert.equal(THIS .. ":" .. l3, p.nodes[3].where)
    assert.equal(THIS .. ":" .. l4, p.nodes[4].where)
    assert.equal(THIS .. ":" .. l4, p.nodes[5].where)
    assert.equal(THIS .. ":" .. l5, p.nodes[6].where)
  end)
end)

-- Every refusal raises with level 3, so the message starts with the file and
-- line of the user's call: "<file>:<line>: eddy: ...".  Each case below calls
-- the API on the line its function is defined on.
describe("errors point at the caller's line", function()
  local cases = {
    { "a bad source name", function(p) p:source("a b", { file = "x" }) end },
    { "source options that are not a table", function(p) p:source("in", "x") end },
    { "an unknown source option", function(p) p:source("in", { file = "x", bogus = 1 }) end },
    { "a source option of the wrong type", function(p) p:source("in", { file = 1 }) end },
    { "a source without file, stdin or kafka", function(p) p:source("in", {}) end },
    { "a kafka source with a bad start", function(p) p:source("in", { kafka = "t", start = "x" }) end },
    { "a source start option", function(p) p:source("in", { file = "x", start = "earliest" }) end },
    { "a bad source format", function(p) p:source("in", { file = "x", format = "xml" }) end },
    { "a bad delimiter", function(p) p:source("in", { file = "x", delimiter = ";;" }) end },
    { "a bad source key", function(p) p:source("in", { file = "x", key = 1 }) end },
    { "a duplicate source", function(p) src(p); p:source("in", { file = "y" }) end },
    { "map without a function", function(p) src(p):map(1) end },
    { "filter without a function", function(p) src(p):filter(nil) end },
    { "flat_map without a function", function(p) src(p):flat_map("x") end },
    { "key_by without a key", function(p) src(p):key_by(1) end },
    { "a bad key_by option", function(p) src(p):key_by("k", { bogus = 1 }) end },
    { "a bad parallelism", function(p) src(p):key_by("k", { parallelism = 0 }) end },
    { "union without streams", function(p) src(p):union() end },
    { "an empty uid", function(p) src(p):map(noop):uid("") end },
    { "a duplicate uid", function(p) src(p):uid("u"); src(p, "b"):uid("u") end },
    { "a bad sink name", function(p) src(p):sink("", { stdout = true }) end },
    { "an unknown sink option", function(p) src(p):sink("out", { path = "x" }) end },
    { "a sink option of the wrong type", function(p) src(p):sink("out", { stdout = "yes" }) end },
    { "a sink without file, stdout or kafka", function(p) src(p):sink("out", {}) end },
    { "a kafka sink with a bad key", function(p) src(p):sink("out", { kafka = "t", key = 5 }) end },
    { "a sink key", function(p) src(p):sink("out", { stdout = true, key = "k" }) end },
    { "a bad sink format", function(p) src(p):sink("out", { stdout = true, format = "csv" }) end },
    { "a duplicate sink", function(p) src(p):sink("o", { stdout = true }):sink("o", { stdout = true }) end },
    { "window without an assigner", function(p) src(p):window("1m") end },
    { "an unknown window option", function(p) src(p):window(eddy.window.tumbling("1m"), { size = 1 }) end },
    { "window lateness", function(p) src(p):window(eddy.window.tumbling("1m"), { lateness = "soon" }) end },
    { "eddy.window.sliding", function() eddy.window.sliding("soon") end },
    { "a session aggregate without merge", function(p) src(p):window(eddy.window.session("5m")):aggregate({ init = noop, add = noop }) end },
    { "eddy.trigger.every", function() eddy.trigger.every("soon") end },
    { "window:reduce", function(p) src(p):window(eddy.window.tumbling("1m")):reduce("x") end },
    { "a bad window aggregate argument", function(p) src(p):window(eddy.window.tumbling("1m")):sum(5) end },
    { "a bad window size", function() eddy.window.tumbling("ten") end },
    { "a bad watermark bound", function() eddy.watermark.bounded(-1) end },
    { "a watermark without a timestamp", function(p) p:source("in", { file = "x", watermark = eddy.watermark.monotonic() }) end },
    { "process", function(p) src(p):process({}) end },
    { "p:side", function(p) p:side(5) end },
    { "p:table", function(p) p:table("t", {}) end },
  }
  for _, c in ipairs(cases) do
    local desc, fn = c[1], c[2]
    it("for " .. desc, function()
      local e = err_of(fn, eddy.pipeline())
      local want = THIS .. ":" .. debug.getinfo(fn, "S").linedefined .. ": eddy: "
      assert.equal(want, e:sub(1, #want))
    end)
  end
end)
