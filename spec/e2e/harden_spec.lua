-- Hardening (issue 19): what a user's script, a second process, a damaged
-- checkpoint, a full disk or a browser does must end in a clear error (or
-- be handled), never in a hang, a crash or duplicated output.  Each case
-- runs the real bin/eddy; every wait is bounded.

local E = require("support.eddy")
local cjson = E.cjson

-- a followed input, keyed, mapped, sunk: a daemon that keeps running
local function running_script(extra_map)
  return table.concat({
    'local eddy = require("eddy")',
    'local p = eddy.pipeline()',
    'p:source("in", { file = "in.txt", format = "lines", follow = true, timestamp = "ingest" })',
    '  :map(function(v, ctx) ' .. (extra_map or "") .. ' return v end)',
    '  :sink("out", { file = "out", format = "lines" })',
    'return p',
  }, "\n") .. "\n"
end

local function daemon(dir, script, extra)
  E.write(dir .. "/pipeline.lua", script)
  E.write(dir .. "/in.txt", "a\nb\n")
  local c = { name = "h", state = { dir = "state" }, admin = { listen = "127.0.0.1:0" }, reload = { watch = false } }
  for k, v in pairs(extra or {}) do c[k] = v end
  E.write_config(dir, c)
  local d = E.start({ "run", dir .. "/eddy.conf.lua" })
  local addr = E.admin_addr(dir .. "/state", 20)
  assert.is_truthy(addr, "no admin address: " .. d:stderr())
  return d, addr
end

describe("hardening", function()
  local dir
  before_each(function() dir = E.tmpdir() end)
  after_each(function() E.cleanup() end)

  describe("a script that never finishes building", function()
    local RUNAWAY = table.concat({
      'local eddy = require("eddy")',
      'local p = eddy.pipeline()',
      'p:source("in", { file = "in.txt", format = "lines" }):sink("out", { file = "out" })',
      'while true do pcall(function() while true do end end) end',
      'return p',
    }, "\n") .. "\n"

    it("eddy check exits 2 after limits.time, naming the limit and the line", function()
      E.write(dir .. "/pipeline.lua", RUNAWAY)
      E.write_config(dir, { limits = { time = "300ms" } })
      local r = E.run({ "check", dir .. "/eddy.conf.lua" }, { timeout = 20 })
      assert.is_false(r.timed_out, "eddy check hung")
      assert.equal(2, r.code, r.stderr)
      assert.matches("building the pipeline ran longer than 300 ms (limits.time) (at pipeline.lua:4)", r.stderr, 1, true)
    end)

    it("a reload of it is refused (422), the running version keeps going, /health answers and SIGTERM stops eddy", function()
      local d, addr = daemon(dir, running_script())
      assert.is_truthy(E.wait_for(function() return #E.sink_lines(dir .. "/out") >= 2 end, 20), d:stderr())
      E.write(dir .. "/pipeline.lua", RUNAWAY)
      local code, body = E.curl("http://" .. addr .. "/reload", "POST")
      assert.equal(422, code, "reload answered " .. tostring(code) .. ": " .. tostring(body))
      assert.matches("limits.time", cjson.decode(body).error, 1, true)
      assert.equal(200, (E.curl("http://" .. addr .. "/health")))
      E.append(dir .. "/in.txt", "c\n")
      assert.is_truthy(E.wait_for(function() return #E.sink_lines(dir .. "/out") >= 3 end, 20), d:stderr())
      d:kill("TERM")
      assert.equal(0, d:wait(20), d:stderr())
    end)
  end)

  describe("unbounded recursion through coroutines", function()
    local RECURSE = "local function f() return coroutine.wrap(f)() end; f()"

    it("in a user function is a Lua error that goes to the error policy (dead_letter)", function()
      E.write(dir .. "/pipeline.lua", table.concat({
        'local eddy = require("eddy")',
        'local p = eddy.pipeline()',
        'p:source("in", { file = "in.txt", format = "lines" })',
        '  :map(function(v) if v == "boom" then ' .. RECURSE .. ' end return v end)',
        '  :sink("out", { file = "out", format = "lines" })',
        'return p',
      }, "\n") .. "\n")
      E.write(dir .. "/in.txt", "a\nboom\nb\n")
      E.write_config(dir, { on_error = "dead_letter", state = { dir = "state" } })
      local r = E.run_config(dir)
      assert.equal(0, r.code, r.stderr)
      assert.same({ "a", "b" }, E.sink_lines(dir .. "/out"))
      local dl = E.json_lines(dir .. "/state/dead-letter.jsonl")
      assert.equal(1, #dl)
      assert.equal("boom", dl[1].record)
      assert.matches("coroutines nested more than", dl[1].error, 1, true)
    end)

    it("at a reloaded script's top level is a refused reload, and the daemon keeps running", function()
      local d, addr = daemon(dir, running_script())
      assert.is_truthy(E.wait_for(function() return #E.sink_lines(dir .. "/out") >= 2 end, 20), d:stderr())
      E.write(dir .. "/pipeline.lua", RECURSE .. "\n" .. running_script())
      local code, body = E.curl("http://" .. addr .. "/reload", "POST")
      assert.equal(422, code, tostring(body))
      assert.matches("coroutines nested more than", body, 1, true)
      assert.equal(200, (E.curl("http://" .. addr .. "/health")))
      d:kill("TERM")
      assert.equal(0, d:wait(20), d:stderr())
    end)
  end)

  describe("state.dir", function()
    it("a second eddy run on a state.dir in use is refused (exit 1, naming the folder and the pid), and the first runs on", function()
      local d = daemon(dir, running_script())
      assert.is_truthy(E.wait_for(function() return #E.sink_lines(dir .. "/out") >= 2 end, 20), d:stderr())
      local r = E.run_config(dir, { timeout = 30 })
      assert.equal(1, r.code, r.stderr)
      assert.matches("state.dir " .. dir .. "/state is in use by another eddy (pid " .. d.pid .. " holds "
        .. dir .. "/state/lock)", r.stderr, 1, true)
      E.append(dir .. "/in.txt", "c\n")
      assert.is_truthy(E.wait_for(function() return #E.sink_lines(dir .. "/out") >= 3 end, 20), d:stderr())
      assert.same({ "a", "b", "c" }, E.sink_lines(dir .. "/out"))
      d:kill("TERM")
      assert.equal(0, d:wait(20), d:stderr())
      assert.not_matches("did not stop cleanly", d:stderr(), 1, true)
    end)
  end)

  describe("config mistakes", function()
    it("a pipeline that names a folder is an error naming it, not a runtime traceback", function()
      E.mkdirs(dir .. "/pl.lua")
      E.write_config(dir, { pipeline = "pl.lua" })
      local r = E.run({ "check", dir .. "/eddy.conf.lua" })
      assert.equal(2, r.code)
      assert.matches("pl.lua", r.stderr, 1, true)
      assert.matches("is a folder", r.stderr, 1, true)
      assert.not_matches("sandbox.lua", r.stderr, 1, true)
    end)
  end)
end)
