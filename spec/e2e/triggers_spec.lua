-- Window triggers: count(n), a table of Lua callbacks, every(d) and
-- processing_time() (on a processing-time clock the test controls with
-- EDDY_TEST_CLOCK_FILE), and the global window that only triggers fire.
local E = require("support.eddy")
local write, run, eventually = E.write, E.shell, E.poll
local eddy_bin = assert(os.getenv("EDDY_BIN"), "EDDY_BIN must be set")




local T = 1700000000000
local HEAD = [[
local eddy = require("eddy")
local p = eddy.pipeline()
local function w(ctx)
  return ctx.key .. " " .. (ctx.window.start and (ctx.window.start - 1700000000000) or "-") .. " " .. ctx.window.firing
end
]]

describe("window triggers", function()
  local dir
  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p " .. dir)
  end)
  local background                 -- a daemon started in the background by this test
  after_each(function()
    if background then
      run("pkill -TERM -f '^" .. eddy_bin .. " run " .. dir .. "/eddy.conf.lua'")
      eventually(5, function() local f = io.open(dir .. "/rc"); if f then f:close() return true end end)
      background = false
    end
    os.execute("rm -rf " .. dir)
  end)

  local function records(...)
    local lines = {}
    for i, t in ipairs({ ... }) do lines[i] = '{"t":' .. (T + t) .. ',"k":"a"}' end
    return table.concat(lines, "\n") .. "\n"
  end

  local function batch(body)
    write(dir .. "/pipeline.lua", HEAD .. body .. "\nreturn p\n")
    write(dir .. "/eddy.conf.lua", "return { pipeline = 'pipeline.lua', admin = false, parallelism = 1 }")
    local rc, out = run("cd " .. dir .. " && " .. eddy_bin .. " run eddy.conf.lua 2>" .. dir .. "/err.log")
    assert.are.equal(0, rc)
    return out
  end

  it("count(n) fires every n records of a window, early before its end and late after", function()
    write(dir .. "/in.jsonl", records(1000, 2000, 3000, 12000, 4000, 13000, 30000))
    local out = batch([[
p:source("ev", { file = "in.jsonl", timestamp = "t", watermark = eddy.watermark.bounded("1s") }):key_by("k")
 :window(eddy.window.tumbling("10s"), { trigger = eddy.trigger.count(2), lateness = "5s" }):count()
 :map(function(n, ctx) return w(ctx) .. " " .. n end)
 :sink("out", { stdout = true, format = "lines" })]])
    -- [0,10s): 1000 2000 -> early 2; 4000 arrives after the watermark passed 9999: late 4;
    -- at the end of input the window with a record no firing covered fires too
    assert.are.equal("a 0 early 2\na 0 late 4\na 10000 early 2\na 30000 on_time 1\n", out)
  end)

  it("a table of callbacks decides: fire_and_purge empties the window, on_event_time fires what is left", function()
    write(dir .. "/in.jsonl", records(1000, 2000, 3000, 5000, 12000, 30000))
    local out = batch([[
p:source("ev", { file = "in.jsonl", timestamp = "t" }):key_by("k")
 :window(eddy.window.tumbling("10s"), { trigger = {
     on_element = function(v, ctx) if ctx.window.count == 3 then return "fire_and_purge" end return "continue" end,
     on_event_time = function(time, ctx) return ctx.window.count > 0 and "fire" or "purge" end } })
 :count()
 :map(function(n, ctx) return w(ctx) .. " " .. n end)
 :sink("out", { stdout = true, format = "lines" })]])
    assert.are.equal("a 0 early 3\na 0 on_time 1\na 10000 on_time 1\na 30000 on_time 1\n", out)
  end)

  it("refuses a callback answer that is not a trigger action, through the error policy", function()
    write(dir .. "/in.jsonl", records(1000))
    write(dir .. "/pipeline.lua", HEAD .. [[
p:source("ev", { file = "in.jsonl", timestamp = "t" }):key_by("k")
 :window(eddy.window.tumbling("10s"), { trigger = { on_element = function() return "explode" end } }):count()
 :sink("out", { stdout = true, format = "lines" })
return p]])
    write(dir .. "/eddy.conf.lua", "return { pipeline = 'pipeline.lua', admin = false }")
    local rc, out = run("cd " .. dir .. " && " .. eddy_bin .. " run eddy.conf.lua 2>&1")
    assert.are.equal(1, rc)
    assert.truthy(out:find("window trigger returned explode (continue, fire, fire_and_purge or purge)", 1, true), out)
  end)

  it("a global window fires only through its trigger, and at the end of input", function()
    write(dir .. "/in.jsonl", records(1000, 50000, 90000, 130000, 170000))
    local out = batch([[
local s = p:source("ev", { file = "in.jsonl", timestamp = "t" }):key_by("k")
s:window(eddy.window.global(), { trigger = eddy.trigger.count(2) })
 :apply(function(values, ctx) return w(ctx) .. " " .. #values end)
 :sink("counted", { file = "counted", format = "lines" })
s:window(eddy.window.global()):count()
 :map(function(n, ctx) return w(ctx) .. " " .. n end)
 :sink("at_end", { file = "at_end", format = "lines" })]])
    assert.are.equal("", out)
    local _, counted = run("cat " .. dir .. "/counted/part-*")
    local _, at_end = run("cat " .. dir .. "/at_end/part-*")
    assert.are.equal("a - early 2\na - early 4\na - on_time 5\n", counted)   -- the 5th fires at the end
    assert.are.equal("a - on_time 5\n", at_end)
  end)

  it("count windows fire every n records (or every slide records over the last n), and a partial one at the end", function()
    write(dir .. "/in.jsonl", records(1000, 2000, 3000, 4000, 5000, 6000, 7000))
    local out = batch([[
local s = p:source("ev", { file = "in.jsonl" }):key_by("k")
s:window(eddy.window.count(3)):count()
 :map(function(n, ctx) return n .. " " .. ctx.window.firing end)
 :sink("tumbling", { file = "tumbling", format = "lines" })
s:window(eddy.window.count(3, 2))
 :apply(function(values, ctx)
   local ts = {}
   for i, v in ipairs(values) do ts[i] = (v.t - 1700000000000) / 1000 end
   return table.concat(ts, ",")
 end)
 :sink("sliding", { file = "sliding", format = "lines" })]])
    assert.are.equal("", out)
    local _, tumbling = run("cat " .. dir .. "/tumbling/part-*")
    local _, sliding = run("cat " .. dir .. "/sliding/part-*")
    assert.are.equal("3 on_time\n3 on_time\n1 on_time\n", tumbling)
    assert.are.equal("1,2,3\n3,4,5\n5,6,7\n", sliding)
  end)

  describe("on processing time", function()
    -- starts the daemon and waits until its keyed task has taken n records
    local function start(body, n)
      write(dir .. "/clock", "1000000")
      write(dir .. "/pipeline.lua", HEAD .. body .. "\nreturn p\n")
      write(dir .. "/eddy.conf.lua", "return { pipeline = 'pipeline.lua', name = 'trig', state = { dir = 'state' }, "
        .. "parallelism = 1, threads = 2, admin = { listen = '127.0.0.1:0' } }")
      assert(os.execute(string.format("cd %s && (EDDY_TEST_CLOCK_FILE=%s/clock %s run %s/eddy.conf.lua 2>err.log; "
        .. "echo $? > rc) &", dir, dir, eddy_bin, dir)))
      background = true
      local addr = eventually(5, function()
        local f = io.open(dir .. "/state/admin.addr")
        if f then local a = f:read("*l"); f:close(); return a end
      end)
      assert.truthy(addr, "the daemon did not start")
      assert.truthy(eventually(5, function()
        local _, st = run("curl -s http://" .. addr .. "/status")
        local keyed = st:match('"name": ?"keyed1%-0".-"records_in": ?(%d+)')
        return keyed and tonumber(keyed) >= n
      end), "the keyed task never took its records")
      os.execute("sleep 0.1")                                     -- a few ticks: the windows' clocks start
    end
    local function output()
      local _, out = run("cat " .. dir .. "/out/part-* 2>/dev/null")
      return out
    end
    local function wait_output(want)
      return eventually(5, function() if output() == want then return true end end) or output()
    end

    it("every(d) fires early results every d while a window changes, then on time at its end", function()
      write(dir .. "/in.jsonl", records(1000, 2000))
      start([[
p:source("ev", { file = "in.jsonl", follow = true, timestamp = "t" }):key_by("k")
 :window(eddy.window.tumbling("10s"), { trigger = eddy.trigger.every("5s") }):count()
 :map(function(n, ctx) return w(ctx) .. " " .. n end)
 :sink("out", { file = "out", format = "lines" })]], 2)
      write(dir .. "/clock", "1005000")
      assert.are.equal(true, wait_output("a 0 early 2\n"))
      write(dir .. "/clock", "1010000")                           -- unchanged: no early firing
      os.execute("sleep 0.3")
      E.append(dir .. "/in.jsonl", records(3000))
      os.execute("sleep 0.3")
      write(dir .. "/clock", "1016000")
      assert.are.equal(true, wait_output("a 0 early 2\na 0 early 3\n"))
      E.append(dir .. "/in.jsonl", records(25000))                -- the watermark passes the window's end
      assert.are.equal(true, wait_output("a 0 early 2\na 0 early 3\na 0 on_time 3\n"))
      run("pkill -TERM -f '^" .. eddy_bin .. " run " .. dir .. "/eddy.conf.lua'")
      assert.truthy(eventually(5, function() local f = io.open(dir .. "/rc"); if f then f:close() return true end end))
      -- a stop keeps the open window [20s, 30s) for the next run: it does not fire
      assert.are.equal("a 0 early 2\na 0 early 3\na 0 on_time 3\n", output())
    end)

    it("processing_time() fires a window when the processing-time clock passes its end", function()
      write(dir .. "/in.jsonl", '{"k":"a"}\n{"k":"a"}\n')
      start([[
p:source("ev", { file = "in.jsonl", follow = true, timestamp = "ingest" }):key_by("k")
 :window(eddy.window.tumbling("10s"), { trigger = eddy.trigger.processing_time() }):count()
 :map(function(n, ctx) return ctx.key .. " " .. ctx.window.start .. " " .. ctx.window.firing .. " " .. n end)
 :sink("out", { file = "out", format = "lines" })]], 2)
      assert.are.equal("", output())
      write(dir .. "/clock", "1009999")                           -- the window [1000000, 1010000) ends
      assert.are.equal(true, wait_output("a 1000000 on_time 2\n"))
    end)
  end)
end)
