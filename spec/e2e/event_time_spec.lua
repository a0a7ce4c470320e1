-- Event time: timestamps from fields (ms, seconds, ISO-8601), watermarks that
-- advance record by record, tumbling windows that fire when the watermark
-- reaches end - 1, and results that do not depend on batch size or threads.
local E = require("support.eddy")
local write, run, eventually = E.write, E.shell, E.poll
local eddy_bin = assert(os.getenv("EDDY_BIN"), "EDDY_BIN must be set")



local PIPELINE = [[
local eddy = require("eddy")
local p = eddy.pipeline()
p:source("ev", { file = "in.jsonl", timestamp = "t", watermark = eddy.watermark.bounded("%s") })
 :key_by("k")
 :window(eddy.window.tumbling("10s"))
 :%s
 :map(function(n, ctx) return ctx.key .. " " .. (ctx.window.start - 1700000000000) .. " " .. n end)
 :sink("out", { stdout = true, format = "lines" })
return p
]]

describe("event time", function()
  local dir
  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p " .. dir)
  end)
  after_each(function() os.execute("rm -rf " .. dir) end)

  -- same_windows(expected, out): the same lines, and out fires windows in
  -- the order of their start (at one end, windows come by key group then
  -- key, an order tests need not spell out)
  local function same_windows(expected, out)
    local function lines(s) local t = {}; for l in s:gmatch("[^\n]+") do t[#t + 1] = l end; return t end
    local a, b = lines(expected), lines(out)
    local last = -math.huge
    for _, l in ipairs(b) do
      local start = tonumber(l:match("^%S+ (%-?%d+)"))
      if start and not l:find(" late ") then
        assert(start >= last, "windows fired out of order:\n" .. out)
        last = start
      end
    end
    table.sort(a); table.sort(b)
    assert.are.same(a, b)
  end

  local function go(input, bound, agg, conf)
    write(dir .. "/in.jsonl", input)
    write(dir .. "/pipeline.lua", string.format(PIPELINE, bound, agg or "count()"))
    write(dir .. "/eddy.conf.lua", "return { pipeline = 'pipeline.lua', admin = false, on_error = 'skip', "
      .. (conf or "") .. " }")
    return run("cd " .. dir .. " && " .. eddy_bin .. " run eddy.conf.lua 2>" .. dir .. "/err.log")
  end

  -- one partition: a record 12 s behind the newest is late once the watermark
  -- (newest - 1s) has passed its window's end
  local input = table.concat({
    '{"t":1700000001000,"k":"a"}', '{"t":1700000004000,"k":"a"}', '{"t":1700000009500,"k":"b"}',
    '{"t":1700000012000,"k":"a"}',   -- watermark 11000: window [0,10000) fires
    '{"t":1700000008000,"k":"a"}',    -- late: its window fired
    '{"t":1700000010500,"k":"b"}', '{"t":1700000025000,"k":"a"}', "" }, "\n")

  it("fires windows by the watermark and drops a record whose window has fired", function()
    local rc, out = go(input, "1s")
    assert.are.equal(0, rc)
    same_windows("a 0 2\nb 0 1\na 10000 1\nb 10000 1\na 20000 1\n", out)
  end)

  it("gives the same output, late records included, for batches of 1 and 1000 records and 1 or 2 threads", function()
    local _, a = go(input, "1s", nil, "tuning = { batch = 1 }, threads = 1")
    local _, b = go(input, "1s", nil, "tuning = { batch = 1000 }, threads = 2, parallelism = 2")
    local sorted = function(s)
      local t = {}
      for l in s:gmatch("[^\n]+") do t[#t + 1] = l end
      table.sort(t)
      return table.concat(t, "\n")
    end
    assert.are.equal(sorted(a), sorted(b))
  end)

  it("a larger bound keeps the out-of-order record in its window", function()
    local rc, out = go(input, "5s")
    assert.are.equal(0, rc)
    same_windows("a 0 3\nb 0 1\na 10000 1\nb 10000 1\na 20000 1\n", out)
  end)

  it("reads timestamps in seconds and ISO-8601, and sums a field", function()
    local rc, out = go(table.concat({
      '{"t":1700000001,"k":"a","x":2}', '{"t":"2023-11-14T22:13:25.500Z","k":"a","x":3}',
      '{"t":"2023-11-14T23:13:32+01:00","k":"a","x":4}', "" }, "\n"), "0s", "sum('x')")
    assert.are.equal(0, rc)
    assert.are.equal("a 0 5\na 10000 4\n", out)
  end)

  it("takes numeric strings (as CSV gives them) in sum, min, max and avg, and names a string that is no number", function()
    local input = table.concat({
      '{"t":1700000001000,"k":"a","x":"2"}', '{"t":1700000002000,"k":"a","x":" 3.5"}',
      '{"t":1700000003000,"k":"a","x":"1e1"}', '{"t":1700000004000,"k":"a","x":"zebra"}', "" }, "\n")
    for agg, want in pairs({ ["sum('x')"] = 15.5, ["min('x')"] = 2, ["max('x')"] = 10, ["avg('x')"] = 15.5 / 3 }) do
      local rc, out = go(input, "0s", agg)
      assert.are.equal(0, rc)
      local got = tonumber(out:match("^a 0 (%S+)\n$"))
      assert(got and math.abs(got - want) < 1e-9, agg .. ": " .. out)
      assert.matches("needs a number, got the string \"zebra\" in field 'x'", E.read(dir .. "/err.log"), 1, true)
    end
  end)

  it("lets a window take the name of the sink it feeds as its uid", function()
    write(dir .. "/in.jsonl", '{"t":1700000001000,"k":"a"}\n')
    write(dir .. "/pipeline.lua", [[
local eddy = require("eddy")
local p = eddy.pipeline()
p:source("counts", { file = "in.jsonl", timestamp = "t" })
 :key_by("k")
 :window(eddy.window.tumbling("10s")):count():uid("counts")
 :map(function(n, ctx) return ctx.key .. " " .. n end)
 :sink("counts", { stdout = true, format = "lines" })
return p
]])
    write(dir .. "/eddy.conf.lua", "return { pipeline = 'pipeline.lua', admin = false }")
    local rc, out = run("cd " .. dir .. " && " .. eddy_bin .. " run eddy.conf.lua 2>" .. dir .. "/err.log")
    assert.are.equal(0, rc, E.read(dir .. "/err.log"))
    assert.are.equal("a 1\n", out)
  end)

  it("takes the watermark from a Lua function when the source gives one", function()
    write(dir .. "/in.jsonl", table.concat({
      '{"t":1700000001000,"k":"a"}', '{"t":1700000012000,"k":"a","wm":1700000005000}',
      '{"t":1700000008000,"k":"a"}',   -- not late: the function kept the watermark at 5000
      '{"t":1700000013000,"k":"a","wm":1700000011000}',   -- now [0,10s) fires with 2
      '{"t":1700000009000,"k":"a"}', "" }, "\n"))   -- too late: dropped
    write(dir .. "/pipeline.lua", [[
local eddy = require("eddy")
local p = eddy.pipeline()
p:source("ev", { file = "in.jsonl", timestamp = "t", watermark = function(ts, v) return v.wm end })
 :key_by("k")
 :window(eddy.window.tumbling("10s"))
 :count()
 :map(function(n, ctx) return ctx.key .. " " .. (ctx.window.start - 1700000000000) .. " " .. n end)
 :sink("out", { stdout = true, format = "lines" })
return p
]])
    write(dir .. "/eddy.conf.lua", "return { pipeline = 'pipeline.lua', admin = false }")
    local rc, out = run("cd " .. dir .. " && " .. eddy_bin .. " run eddy.conf.lua 2>" .. dir .. "/err.log")
    assert.are.equal(0, rc)
    assert.are.equal("a 0 2\na 10000 2\n", out)
  end)

  it("counts in-order records that share a window's last millisecond: none of them is late", function()
    write(dir .. "/in.jsonl", '{"t":1700000000998,"k":"a"}\n{"t":1700000000999,"k":"a"}\n'
      .. '{"t":1700000000999,"k":"a"}\n{"t":1700000001500,"k":"a"}\n')
    write(dir .. "/pipeline.lua", [[
local eddy = require("eddy")
local p = eddy.pipeline()
p:source("ev", { file = "in.jsonl", timestamp = "t" })
 :key_by("k")
 :window(eddy.window.tumbling("1s")):count()
 :map(function(n, ctx) return (ctx.window.start - 1700000000000) .. " " .. n end)
 :sink("out", { stdout = true, format = "lines" })
return p
]])
    write(dir .. "/eddy.conf.lua", "return { pipeline = 'pipeline.lua', admin = false }")
    local rc, out = run("cd " .. dir .. " && " .. eddy_bin .. " run eddy.conf.lua 2>" .. dir .. "/err.log")
    assert.are.equal(0, rc)
    assert.are.equal("0 3\n1000 1\n", out)
  end)

  it("sends a record without a usable timestamp to the error policy", function()
    local rc, out = go('{"k":"a"}\n{"t":"yesterday","k":"a"}\n{"t":1700000003000,"k":"a"}\n', "0s")
    assert.are.equal(0, rc)
    assert.are.equal("a 0 1\n", out)
    local f = io.open(dir .. "/err.log")
    local log = f:read("*a")
    f:close()
    assert.truthy(log:find("no usable timestamp in field 't' (got nil)", 1, true))
    assert.truthy(log:find("no usable timestamp in field 't' (got yesterday)", 1, true))
  end)

  describe("allowed lateness", function()
    local LATE = [[
local eddy = require("eddy")
local p = eddy.pipeline()
p:source("ev", { file = "in.jsonl", timestamp = "t", watermark = eddy.watermark.bounded("1s") })
 :key_by("k")
 :window(eddy.window.tumbling("10s"), { lateness = "5s"%s })
 :count()
 :map(function(n, ctx)
   return ctx.key .. " " .. (ctx.window.start - 1700000000000) .. " " .. n .. " " .. ctx.window.firing
 end)
 :sink("out", { file = "out", format = "lines" })
%s
return p
]]
    local lines = {
      '{"t":1700000001000,"k":"a"}', '{"t":1700000004000,"k":"a"}',
      '{"t":1700000012000,"k":"a"}',   -- watermark 11000: [0,10s) fires on time with 2
      '{"t":1700000008000,"k":"a"}',   -- within lateness (until 9999 + 5000): fires late with 3
      '{"t":1700000016000,"k":"a"}',   -- watermark 15000: [0,10s) is freed
      '{"t":1700000009000,"k":"a"}',   -- too late: the side output, or dropped
      '{"t":1700000030000,"k":"a"}', "" }

    local function read_dir(d)
      local _, out = run("cat " .. d .. "/part-* 2>/dev/null")
      return out
    end

    it("fires on time, then late for a record within the lateness, and sends later records to the side output", function()
      write(dir .. "/in.jsonl", table.concat(lines, "\n"))
      write(dir .. "/pipeline.lua", string.format(LATE, ', late = "too-late"', [[
p:side("too-late")
 :map(function(v, ctx) return "late " .. (v.t - 1700000000000) .. " " .. ctx.key end)
 :sink("late", { file = "late", format = "lines" })]]))
      write(dir .. "/eddy.conf.lua", "return { pipeline = 'pipeline.lua', admin = false }")
      local rc = run("cd " .. dir .. " && " .. eddy_bin .. " run eddy.conf.lua 2>" .. dir .. "/err.log")
      assert.are.equal(0, rc)
      assert.are.equal("a 0 2 on_time\na 0 3 late\na 10000 2 on_time\na 30000 1 on_time\n", read_dir(dir .. "/out"))
      assert.are.equal("late 9000 a\n", read_dir(dir .. "/late"))
    end)

    it("drops a record past the lateness when no side output takes it, and counts it", function()
      write(dir .. "/in.jsonl", table.concat(lines, "\n"))
      write(dir .. "/pipeline.lua", (string.format(LATE, "", ""):gsub('file = "in.jsonl"', 'file = "in.jsonl", follow = true')))
      write(dir .. "/eddy.conf.lua", "return { pipeline = 'pipeline.lua', name = 'late', state = { dir = 'state' }, "
        .. "parallelism = 1, admin = { listen = '127.0.0.1:0' } }")
      assert(os.execute("cd " .. dir .. " && (" .. eddy_bin .. " run eddy.conf.lua 2>err.log; echo $? > rc) &") == 0
        or true)
      local addr
      for _ = 1, 100 do
        local f = io.open(dir .. "/state/admin.addr")
        if f then addr = f:read("*l"); f:close() end
        if addr then break end
        os.execute("sleep 0.05")
      end
      assert.truthy(addr, "the daemon did not start")
      local metrics
      for _ = 1, 100 do
        local _, m = run("curl -s http://" .. addr .. "/metrics")
        metrics = m
        if m:find('eddy_late_records_dropped_total{task="keyed1%-0",operator="window%-3"} 1') then break end
        os.execute("sleep 0.05")
      end
      run("pkill -TERM -f '" .. eddy_bin .. " run eddy.conf.lua'")
      for _ = 1, 100 do
        local f = io.open(dir .. "/rc")
        if f then f:close(); break end
        os.execute("sleep 0.05")
      end
      assert.truthy(metrics:find('eddy_late_records_dropped_total{task="keyed1-0",operator="window-3"} 1', 1, true), metrics)
      assert.truthy(metrics:find('eddy_open_windows{task="keyed1-0",operator="window-3"}', 1, true))
      assert.truthy(metrics:find("eddy_watermark_lag_ms{task=\"keyed1-0\"}", 1, true))
    end)

    it("refuses a side output that no window feeds, and one declared before its window", function()
      write(dir .. "/in.jsonl", table.concat(lines, "\n"))
      write(dir .. "/pipeline.lua", string.format(LATE, "", 'p:side("nobody"):sink("x", { stdout = true })'))
      write(dir .. "/eddy.conf.lua", "return { pipeline = 'pipeline.lua', admin = false }")
      local rc, out = run("cd " .. dir .. " && " .. eddy_bin .. " check eddy.conf.lua 2>&1")
      assert.are.equal(2, rc)
      assert.truthy(out:find("pipeline.lua:11: nothing sends records to side output 'nobody'", 1, true), out)
    end)
  end)

  it("reduce, aggregate and apply run the user's functions over each window, state kept outside the VM", function()
    write(dir .. "/in.jsonl", table.concat({
      '{"t":1700000001000,"k":"a","x":1}', '{"t":1700000004000,"k":"a","x":2}', '{"t":1700000006000,"k":"b","x":5}',
      '{"t":1700000012000,"k":"a","x":3}', '{"t":1700000008000,"k":"a","x":4}',   -- within lateness: late firing
      '{"t":1700000030000,"k":"a","x":6}', "" }, "\n"))
    write(dir .. "/pipeline.lua", [[
local eddy = require("eddy")
local p = eddy.pipeline()
local s = p:source("ev", { file = "in.jsonl", timestamp = "t", watermark = eddy.watermark.bounded("1s") }):key_by("k")
local function w(ctx) return ctx.key .. " " .. (ctx.window.start - 1700000000000) .. " " .. ctx.window.firing end
s:window(eddy.window.tumbling("10s"), { lateness = "5s" })
 :reduce(function(a, b) return { x = a.x + b.x } end)
 :map(function(v, ctx) return w(ctx) .. " sum=" .. v.x end)
 :sink("reduce", { file = "reduce", format = "lines" })
s:window(eddy.window.tumbling("10s"))
 :aggregate{ init = function() return { n = 0, xs = {} } end,
             add = function(acc, v) acc.n = acc.n + 1; acc.xs[#acc.xs + 1] = v.x; return acc end,
             result = function(acc, ctx) return w(ctx) .. " n=" .. acc.n .. " xs=" .. table.concat(acc.xs, ",") end }
 :sink("aggregate", { file = "aggregate", format = "lines" })
s:window(eddy.window.tumbling("10s"))
 :apply(function(values, ctx)
   if ctx.key == "b" then return nil end          -- nothing is emitted for nil
   local xs = {}
   for i, v in ipairs(values) do xs[i] = v.x end
   return w(ctx) .. " values=" .. table.concat(xs, ",")
 end)
 :sink("apply", { file = "apply", format = "lines" })
return p
]])
    write(dir .. "/eddy.conf.lua", "return { pipeline = 'pipeline.lua', admin = false, parallelism = 1 }")
    local rc = run("cd " .. dir .. " && " .. eddy_bin .. " run eddy.conf.lua 2>" .. dir .. "/err.log")
    assert.are.equal(0, rc)
    local function out(d) local _, o = run("cat " .. dir .. "/" .. d .. "/part-*"); return o end
    same_windows("a 0 on_time sum=3\nb 0 on_time sum=5\na 0 late sum=7\na 10000 on_time sum=3\na 30000 on_time sum=6\n",
      out("reduce"))
    assert.truthy(out("reduce"):find("sum=5\n.*a 0 late sum=7\n"), "the late firing comes after both on-time ones")
    same_windows("a 0 on_time n=2 xs=1,2\nb 0 on_time n=1 xs=5\na 10000 on_time n=1 xs=3\na 30000 on_time n=1 xs=6\n",
      out("aggregate"))
    assert.are.equal("a 0 on_time values=1,2\na 10000 on_time values=3\na 30000 on_time values=6\n", out("apply"))
  end)

  it("session windows grow, merge when an out-of-order record bridges them, and fire at their end", function()
    write(dir .. "/in.jsonl", table.concat({
      '{"t":1700000001000,"k":"a","x":1}', '{"t":1700000003000,"k":"a","x":2}',   -- a: [1000,7000)
      '{"t":1700000010000,"k":"a","x":3}',   -- watermark 9000: [1000,7000) fires; a: [10000,14000)
      '{"t":1700000005000,"k":"b","x":4}',   -- b: [5000,9000) is already past the watermark: fires late
      '{"t":1700000006500,"k":"a","x":5}',   -- joins [1000,7000) and [10000,14000): [1000,14000)
      '{"t":1700000030000,"k":"a","x":6}', "" }, "\n"))
    write(dir .. "/pipeline.lua", [[
local eddy = require("eddy")
local p = eddy.pipeline()
local s = p:source("ev", { file = "in.jsonl", timestamp = "t", watermark = eddy.watermark.bounded("1s") }):key_by("k")
local function w(ctx)
  return ctx.key .. " [" .. (ctx.window.start - 1700000000000) .. "," .. (ctx.window["end"] - 1700000000000) .. ") "
    .. ctx.window.firing
end
s:window(eddy.window.session("4s"), { lateness = "10s" }):count()
 :map(function(n, ctx) return w(ctx) .. " " .. n end)
 :sink("count", { file = "count", format = "lines" })
s:window(eddy.window.session("4s"), { lateness = "10s" })
 :aggregate{ init = function() return { xs = {} } end,
             add = function(a, v) a.xs[#a.xs + 1] = v.x; return a end,
             merge = function(a, b) for _, x in ipairs(b.xs) do a.xs[#a.xs + 1] = x end; return a end,
             result = function(a, ctx) table.sort(a.xs); return w(ctx) .. " " .. table.concat(a.xs, ",") end }
 :sink("aggregate", { file = "aggregate", format = "lines" })
return p
]])
    write(dir .. "/eddy.conf.lua", "return { pipeline = 'pipeline.lua', admin = false, parallelism = 1 }")
    local rc = run("cd " .. dir .. " && " .. eddy_bin .. " run eddy.conf.lua 2>" .. dir .. "/err.log")
    assert.are.equal(0, rc)
    local function out(d) local _, o = run("cat " .. dir .. "/" .. d .. "/part-*"); return o end
    assert.are.equal("a [1000,7000) on_time 2\nb [5000,9000) late 1\na [1000,14000) on_time 4\na [30000,34000) on_time 1\n",
      out("count"))
    assert.are.equal("a [1000,7000) on_time 1,2\nb [5000,9000) late 4\na [1000,14000) on_time 1,2,3,5\n"
      .. "a [30000,34000) on_time 6\n", out("aggregate"))
  end)

  it("sliding windows end at each record and hold the key's records within size before it", function()
    write(dir .. "/in.jsonl", table.concat({
      '{"t":1700000001000,"k":"a"}', '{"t":1700000003000,"k":"a"}', '{"t":1700000008000,"k":"a"}',
      '{"t":1700000004000,"k":"a"}',   -- its own window is past the watermark; it joins [3s,8s]
      '{"t":1700000020000,"k":"a"}', "" }, "\n"))
    write(dir .. "/pipeline.lua", [[
local eddy = require("eddy")
local p = eddy.pipeline()
p:source("ev", { file = "in.jsonl", timestamp = "t", watermark = eddy.watermark.bounded("2s") }):key_by("k")
 :window(eddy.window.sliding("5s"))
 :apply(function(values, ctx)
   local ts = {}
   for i, v in ipairs(values) do ts[i] = (v.t - 1700000000000) / 1000 end
   table.sort(ts)
   return ((ctx.window.start - 1700000000000) / 1000) .. ".." .. ((ctx.window["end"] - 1700000000001) / 1000)
     .. " " .. table.concat(ts, ",")
 end)
 :sink("out", { stdout = true, format = "lines" })
return p
]])
    write(dir .. "/eddy.conf.lua", "return { pipeline = 'pipeline.lua', admin = false, parallelism = 1 }")
    local rc, out = run("cd " .. dir .. " && " .. eddy_bin .. " run eddy.conf.lua 2>" .. dir .. "/err.log")
    assert.are.equal(0, rc)
    assert.are.equal("-4..1 1\n-2..3 1,3\n3..8 3,4,8\n15..20 20\n", out)
  end)

  it("refuses a window on an unkeyed stream before processing", function()
    write(dir .. "/in.jsonl", '{"t":1700000000001}\n')
    write(dir .. "/pipeline.lua", [[
      local eddy = require("eddy")
      local p = eddy.pipeline()
      p:source("ev", { file = "in.jsonl", timestamp = "t" })
       :window(eddy.window.tumbling("10s")):count()
       :sink("out", { stdout = true, format = "lines" })
      return p
    ]])
    write(dir .. "/eddy.conf.lua", "return { pipeline = 'pipeline.lua', admin = false }")
    local rc = run("cd " .. dir .. " && " .. eddy_bin .. " run eddy.conf.lua 2>" .. dir .. "/err.log")
    assert.are.equal(2, rc)
    local f = io.open(dir .. "/err.log")
    local log = f:read("*a")
    f:close()
    assert.truthy(log:find("pipeline.lua:4: a window needs a keyed stream", 1, true))
  end)
end)
