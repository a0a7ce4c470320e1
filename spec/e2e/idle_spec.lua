-- Idleness and watermark explanations, on a processing-time clock the test
-- controls (EDDY_TEST_CLOCK_FILE): a partition without records for `idle`
-- stops holding the watermark back; /status and /explain say what holds a
-- window back.
local E = require("support.eddy")
local write, run, eventually = E.write, E.shell, E.poll
local cjson = require("cjson")
local eddy_bin = assert(os.getenv("EDDY_BIN"), "EDDY_BIN must be set")




local T = 1700000000000

describe("idle partitions", function()
  local dir, addr
  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p " .. dir)
  end)
  after_each(function()
    run("pkill -TERM -f '^" .. eddy_bin .. " run " .. dir .. "/eddy.conf.lua'")
    eventually(5, function() local f = io.open(dir .. "/rc"); if f then f:close() return true end end)
    os.execute("rm -rf " .. dir)
  end)

  local function get(path)
    local _, out = run("curl -s http://" .. addr .. path)
    return cjson.decode(out)
  end

  local function output()
    local _, out = run("cat " .. dir .. "/out/part-* 2>/dev/null")
    return out
  end

  it("a quiet partition holds the window back until it is idle, then stops counting until it produces again", function()
    write(dir .. "/clock", "1000000")
    write(dir .. "/a.jsonl", '{"t":' .. (T + 1000) .. ',"k":"x"}\n{"t":' .. (T + 25000) .. ',"k":"x"}\n')
    write(dir .. "/b.jsonl", '{"t":' .. (T + 2000) .. ',"k":"x"}\n')
    write(dir .. "/pipeline.lua", [[
      local eddy = require("eddy")
      local p = eddy.pipeline()
      p:source("ev", { file = "*.jsonl", follow = true, timestamp = "t", idle = "5s" })
       :key_by("k")
       :window(eddy.window.tumbling("10s")):count():uid("counts")
       :map(function(n, ctx) return (ctx.window.start - 1700000000000) .. " " .. n end)
       :sink("out", { file = "out", format = "lines" })
      return p
    ]])
    write(dir .. "/eddy.conf.lua", "return { pipeline = 'pipeline.lua', name = 'idle', state = { dir = 'state' }, "
      .. "threads = 2, parallelism = 1, admin = { listen = '127.0.0.1:0' } }")
    assert(os.execute(string.format("cd %s && (EDDY_TEST_CLOCK_FILE=%s/clock %s run %s/eddy.conf.lua 2>err.log; "
      .. "echo $? > rc) &", dir, dir, eddy_bin, dir)))
    addr = eventually(5, function()
      local f = io.open(dir .. "/state/admin.addr")
      if f then local a = f:read("*l"); f:close(); return a end
    end)
    assert.truthy(addr, "the daemon did not start")

    -- b's watermark (2000 - 1) holds the keyed task back: [0,10s) cannot fire
    local ex = eventually(5, function()
      local e = get("/explain/counts")
      local t = e.tasks and e.tasks[1]
      if t and t.held_back_by and t.held_back_by.watermark == T + 1999 then return e end
    end)
    assert.truthy(ex, "explain never named the partition holding the watermark")
    local t1 = ex.tasks[1]
    assert.are.equal(T + 10000, t1.oldest_window["end"])
    assert.are.equal(T + 9999, t1.fires_at_watermark)
    assert.are.equal("ev", t1.held_back_by.source)
    assert.truthy(t1.held_back_by.file:find("b.jsonl", 1, true))
    assert.truthy(t1.why:find("holds the watermark at " .. (T + 1999), 1, true))
    local st = get("/status")
    local keyed
    for _, t in ipairs(st.tasks) do if t.stage ~= "ev" then keyed = t end end
    assert.are.equal("ev-1", keyed.held_back_by)
    assert.are.equal("", output())

    -- 6 s of processing time pass: both partitions are idle, and with every
    -- input idle the watermark is the highest of theirs (a's, 25000 - 1),
    -- whichever went idle last: [0,10s) fires
    write(dir .. "/clock", "1006000")
    assert.truthy(eventually(5, function()
      for _, t in ipairs(get("/status").tasks) do
        if t.inputs and t.inputs[1].idle and t.inputs[2].idle then return true end
      end
    end), "the partitions never went idle")
    local out = eventually(5, function() local o = output(); if o ~= "" then return o end end)
    assert.are.equal("0 2\n", out)          -- [0,10s): 1000 from a, 2000 from b
    -- a produces again, and alone moves the watermark on
    E.append(dir .. "/a.jsonl", '{"t":' .. (T + 26000) .. ',"k":"x"}\n')

    -- b produces again: it counts in the minimum again (its new record is at 21000)
    E.append(dir .. "/b.jsonl", '{"t":' .. (T + 21000) .. ',"k":"x"}\n')
    assert.truthy(eventually(5, function()
      local s2 = get("/status")
      for _, t in ipairs(s2.tasks) do
        if t.inputs then
          for _, i in ipairs(t.inputs) do if i.file and i.file:find("b.jsonl") and not i.idle then return true end end
        end
      end
    end), "b never came back from idle")
    -- [10s,20s) is empty; [20s,30s) holds 21000, 25000 and 26000 and waits for the watermark
    assert.are.equal("0 2\n", output())
    local open = get("/state/counts/x")
    assert.are.same({ { start = T + 20000, ["end"] = T + 30000, value = 3 } }, open.windows)
    run("pkill -TERM -f '^" .. eddy_bin .. " run " .. dir .. "/eddy.conf.lua'")
    assert.truthy(eventually(5, function() local f = io.open(dir .. "/rc"); if f then local r = f:read("*l"); f:close(); return r end end))
    assert.are.equal("0 2\n", output())   -- a stop keeps the open window for the next run
  end)

  local function start_daemon(pipeline, conf)
    write(dir .. "/pipeline.lua", pipeline)
    write(dir .. "/eddy.conf.lua", "return { pipeline = 'pipeline.lua', name = 'idle', state = { dir = 'state' }, "
      .. "admin = { listen = '127.0.0.1:0' }" .. (conf or "") .. " }")
    assert(os.execute(string.format("cd %s && (%s run %s/eddy.conf.lua 2>err.log; echo $? > rc) &", dir, eddy_bin, dir)))
    addr = eventually(5, function()
      local f = io.open(dir .. "/state/admin.addr")
      if f then local a = f:read("*l"); f:close(); return a end
    end)
    assert.truthy(addr, "the daemon did not start")
  end

  it("a source's watermark reaches every keyed task, not only those its records' keys go to", function()
    -- keys a..h at 1 s; then only key "a" moves on: every task's [0,10s) window must fire
    local lines = {}
    for _, k in ipairs({ "a", "b", "c", "d", "e", "f", "g", "h" }) do lines[#lines + 1] = '{"t":' .. (T + 1000) .. ',"k":"' .. k .. '"}' end
    lines[#lines + 1] = '{"t":' .. (T + 20000) .. ',"k":"a"}'
    write(dir .. "/a.jsonl", table.concat(lines, "\n") .. "\n")
    start_daemon([[
      local eddy = require("eddy")
      local p = eddy.pipeline()
      p:source("ev", { file = "a.jsonl", follow = true, timestamp = "t" })
       :key_by("k")
       :window(eddy.window.tumbling("10s")):count()
       :map(function(n, ctx) return ctx.key .. " " .. n end)
       :sink("out", { file = "out", format = "lines" })
      return p
    ]], ", threads = 2, parallelism = 2")
    local got = eventually(5, function()
      local _, out = run("cat " .. dir .. "/out/part-* 2>/dev/null | sort")
      local n = select(2, out:gsub("\n", ""))
      if n == 8 then return out end
    end)
    assert.are.equal("a 1\nb 1\nc 1\nd 1\ne 1\nf 1\ng 1\nh 1\n", got)
  end)

  it("an ended input does not let the idle ones move the watermark to +inf", function()
    write(dir .. "/a.jsonl", '{"t":' .. (T + 1000) .. ',"k":"x"}\n')
    write(dir .. "/b.jsonl", '{"t":' .. (T + 2000) .. ',"k":"x"}\n')
    start_daemon([[
      local eddy = require("eddy")
      local p = eddy.pipeline()
      local a = p:source("a", { file = "a.jsonl", timestamp = "t" })
      local b = p:source("b", { file = "b.jsonl", follow = true, timestamp = "t", idle = "200ms" })
      a:union(b):key_by("k")
       :window(eddy.window.tumbling("10s")):count()
       :map(function(n, ctx) return (ctx.window.start - 1700000000000) .. " " .. n end)
       :sink("out", { file = "out", format = "lines" })
      return p
    ]], ", parallelism = 1")
    -- a has ended and b is idle: the watermark must stay where b left it
    assert.truthy(eventually(5, function()
      local _, st = run("curl -s http://" .. addr .. "/status")
      return st:find('"idle": ?true') and st:find('"ended": ?true')
    end), "b never went idle after a ended")
    os.execute("sleep 0.3")
    local _, st = run("curl -s http://" .. addr .. "/status")
    for _, t in ipairs(cjson.decode(st).tasks) do
      if t.name == "keyed2-0" then assert.are.equal(T + 1999, t.watermark) end
    end
    -- b produces again, in the same window: counted, not late
    E.append(dir .. "/b.jsonl", '{"t":' .. (T + 3000) .. ',"k":"x"}\n')
    os.execute("sleep 0.3")
    local _, m = run("curl -s http://" .. addr .. "/metrics")
    assert.truthy(m:find('eddy_late_records_dropped_total{task="keyed2-0",operator="window-5"} 0', 1, true), m)
    local _, body = run("curl -s http://" .. addr .. "/state/window-5/x")
    assert.are.same({ windows = { { start = T, ["end"] = T + 10000, value = 3 } } }, cjson.decode(body))
    run("pkill -TERM -f '^" .. eddy_bin .. " run " .. dir .. "/eddy.conf.lua'")
    assert.truthy(eventually(5, function() local f = io.open(dir .. "/rc"); if f then f:close() return true end end))
    local _, out = run("cat " .. dir .. "/out/part-*")
    assert.are.equal("", out)           -- the window waits (kept in the store) for b's watermark
  end)

  it("explain answers 404 for an operator that is not a window here", function()
    write(dir .. "/a.jsonl", "")
    write(dir .. "/pipeline.lua", [[
      local eddy = require("eddy")
      local p = eddy.pipeline()
      p:source("ev", { file = "a.jsonl", follow = true }):sink("out", { file = "out" })
      return p
    ]])
    write(dir .. "/eddy.conf.lua", "return { pipeline = 'pipeline.lua', name = 'idle', state = { dir = 'state' }, "
      .. "admin = { listen = '127.0.0.1:0' } }")
    assert(os.execute(string.format("cd %s && (%s run %s/eddy.conf.lua 2>err.log; echo $? > rc) &", dir, eddy_bin, dir)))
    addr = eventually(5, function()
      local f = io.open(dir .. "/state/admin.addr")
      if f then local a = f:read("*l"); f:close(); return a end
    end)
    local _, code = run("curl -s -o /dev/null -w '%{http_code}' http://" .. addr .. "/explain/nope")
    assert.are.equal("404", code)
  end)
end)
