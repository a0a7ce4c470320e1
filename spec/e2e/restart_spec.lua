-- Restart strategies (exactly_once): a failed task restarts eddy, which
-- recovers from its last committed checkpoint, after restart.delay (fixed,
-- or doubling up to restart.max_delay); a transient failure costs nothing
-- in the output, and once restart.attempts are used up under on_error =
-- "fail" eddy exits 1 saying it gave up.

local E = require("support.eddy")

local function pipeline()
  -- fails on n == 500 while the file "broken" exists beside the pipeline
  return [[
local eddy = require("eddy")
local p = eddy.pipeline()
p:source("in", { file = "in.jsonl", follow = true })
 :key_by("k")
 :process{ process = function(v, ctx)
   if v.n == 500 then
     local f = io.open("broken")
     if f then f:close(); error("the disk is broken") end
   end
   local s = ctx.state:value("sum")
   local t = (s:get() or 0) + v.n
   s:set(t)
   return ctx.key .. " " .. v.n .. " " .. t
 end }:uid("sum")
 :sink("out", { file = "out", format = "lines" })
return p
]]
end

local function input(from, to)
  local t = {}
  for n = from, to do t[#t + 1] = string.format('{"k":"k%d","n":%d}', n % 3, n) end
  return table.concat(t, "\n") .. "\n"
end

describe("restart strategies", function()
  local dir
  before_each(function() dir = E.tmpdir() end)
  after_each(E.cleanup)

  local function setup(restart)
    E.write(dir .. "/pipeline.lua", pipeline())
    E.write(dir .. "/in.jsonl", input(1, 1000))
    E.write_config(dir, { name = "rs", guarantee = "exactly_once", parallelism = 2,
                          checkpoint = { interval = "100ms" }, restart = restart })
  end

  it("a transient failure restarts eddy from the last checkpoint: every record is in the output once", function()
    setup({ strategy = "fixed", attempts = 5, delay = "300ms" })
    E.write(dir .. "/in.jsonl", input(1, 400))
    local d = E.start({ "run", dir .. "/eddy.conf.lua" }, { timeout = 40 })
    -- a checkpoint with the first 400, then the failure
    assert.truthy(E.wait_for(function() return E.exists(dir .. "/state/rs/checkpoints/last-id") end, 10), d:stderr())
    E.write(dir .. "/broken", "")
    E.append(dir .. "/in.jsonl", input(401, 1000))
    assert.truthy(E.wait_for(function() return d:stderr():find("restarting in 0.3 s", 1, true) end, 10), d:stderr())
    os.remove(dir .. "/broken")
    -- the restarted daemon (the same process) takes the rest
    assert.truthy(E.wait_for(function() return d:stderr():find("restored checkpoint", 1, true) end, 10), d:stderr())
    E.append(dir .. "/in.jsonl", input(1001, 1200))
    assert.truthy(E.wait_for(function() return #E.sink_lines(dir .. "/out") == 1200 end, 15),
      #E.sink_lines(dir .. "/out") .. " lines\n" .. d:stderr())
    d:kill("TERM")
    assert.are.equal(0, d:wait(15), d:stderr())
    -- each n exactly once, and each key's sums as a run without the failure has them
    local seen, sums = {}, {}
    for _, l in ipairs(E.sink_lines(dir .. "/out")) do
      local k, n, t = l:match("^(%S+) (%d+) (%d+)$")
      n = tonumber(n)
      assert(not seen[n], "record " .. n .. " is in the output twice")
      seen[n] = true
      sums[#sums + 1] = { k = k, n = n, t = tonumber(t) }
    end
    table.sort(sums, function(a, b) return a.n < b.n end)
    local run = {}
    for _, s in ipairs(sums) do
      run[s.k] = (run[s.k] or 0) + s.n
      assert.are.equal(run[s.k], s.t, "the sum of " .. s.k .. " at " .. s.n)
    end
    assert.matches("the disk is broken", d:stderr(), 1, true)
  end)

  it("gives up after restart.attempts, exiting 1 with the reason (exponential delays up to max_delay)", function()
    setup({ strategy = "exponential", attempts = 3, delay = "100ms", max_delay = "300ms" })
    E.write(dir .. "/broken", "")
    local d = E.start({ "run", dir .. "/eddy.conf.lua" }, { timeout = 40 })
    assert.are.equal(1, d:wait(30), d:stderr())
    local err = d:stderr()
    -- 100 ms, doubled, then held at max_delay
    assert.matches("restarting in 0.1 s from the last committed checkpoint (restart 1 of 3", err, 1, true)
    assert.matches("restarting in 0.2 s from the last committed checkpoint (restart 2 of 3", err, 1, true)
    assert.matches("restarting in 0.3 s from the last committed checkpoint (restart 3 of 3", err, 1, true)
    assert.matches("gave up after 3 restarts (restart.attempts = 3)", err, 1, true)
    assert.matches("the disk is broken", err, 1, true)
  end)

  it("restart.strategy = \"none\" exits 1 at the first failure", function()
    setup({ strategy = "none" })
    E.write(dir .. "/broken", "")
    local r = E.run_config(dir)
    assert.are.equal(1, r.code, r.stderr)
    assert.falsy(r.stderr:find("restarting", 1, true))
  end)
end)

describe("a stop while starting", function()
  local dir
  before_each(function() dir = E.tmpdir() end)
  after_each(E.cleanup)

  it("SIGTERM while eddy builds its pipeline (a script that takes 0.6 s of CPU) is a graceful stop once it has started (exit 0, not the default action's 143)", function()
    E.write(dir .. "/pipeline.lua", "local t0 = os.clock(); while os.clock() - t0 < 0.6 do end\n" .. pipeline())
    E.write(dir .. "/in.jsonl", input(1, 1000))
    E.write_config(dir, { name = "ss", guarantee = "exactly_once", parallelism = 2, checkpoint = { interval = "100ms" },
                          limits = { time = "10s" } })
    for i = 1, 2 do
      local d = E.start({ "run", dir .. "/eddy.conf.lua" })
      -- eddy holds the stop signals from the start of its main (the
      -- harness's shell has exec'd it and the dynamic loader has run: on a
      -- loaded machine that takes longer than the sleep below): SigBlk of
      -- its main thread has SIGTERM (15, bit 14)
      assert(E.wait_for(function()
        local st = E.read("/proc/" .. d.pid .. "/status") or ""
        local blk = st:match("SigBlk:%s*(%x+)")
        return (blk and bit.band(tonumber(blk:sub(-8), 16), 0x4000) ~= 0) or not d:alive()
      end, 10, 0.001), "eddy did not start")
      E.sleep(0.15 * i)      -- inside the script's build
      d:kill("TERM")
      local code = d:wait(60)
      assert(code == 0, "a SIGTERM while starting exited " .. tostring(code) .. ": " .. d:stderr())
    end
    -- a run that is left alone reads everything
    local d = E.start({ "run", dir .. "/eddy.conf.lua" })
    assert(E.wait_for(function() return #E.sink_lines(dir .. "/out") >= 1000 end, 60), "the output did not reach 1000 lines")
    d:kill("TERM")
    assert.are.equal(0, d:wait(60), d:stderr())
  end)
end)
