-- Limits and the sandbox: limits.memory and limits.time turn a runaway user
-- function into an error for the error policy; a loop that cannot be
-- interrupted stops eddy and is remembered in poison.json for the next run;
-- user code runs without os.execute, io.popen, os.exit, FFI (unless
-- allowed), and reads files only inside the pipeline's folder.

local E = require("support.eddy")

local function pipeline(body)
  return 'local eddy = require("eddy")\nlocal p = eddy.pipeline()\n' .. body .. '\nreturn p\n'
end

-- input: records n = 1..count, the one with n == bad carries bad = true
local function input(count, bad)
  local out = {}
  for i = 1, count do
    out[i] = i == bad and ('{"n":' .. i .. ',"bad":true}') or ('{"n":' .. i .. '}')
  end
  return table.concat(out, "\n") .. "\n"
end

local function expected_without(count, bad)
  local out = {}
  for i = 1, count do if i ~= bad then out[#out + 1] = '{"n":' .. i .. '}' end end
  table.sort(out)
  return out
end

-- a map (uid "runaway", declared on line 4) that runs `code` for the bad
-- record and passes the others through
local function runaway(code)
  return pipeline([[
p:source("in", { file = "in.jsonl" })
 :map(function(v)
   if v.bad then
     ]] .. code .. [[

   end
   return v
 end):uid("runaway")
 :sink("out", { file = "out" })]])
end

describe("limits", function()
  local dir

  before_each(function() dir = E.tmpdir() end)
  after_each(E.cleanup)

  local function setup(script, config, count, bad)
    E.write(dir .. "/pipeline.lua", script)
    E.write(dir .. "/in.jsonl", input(count, bad))
    E.write_config(dir, config)
  end

  describe("limits.memory", function()
    local HOG = 'local t, i = {}, 0\n     while true do i = i + 1; t[i] = string.rep("x", 100) .. i end'

    it("a function allocating without bound gets 'not enough memory'; under 'skip' the record is skipped, the rest written, exit 0", function()
      setup(runaway(HOG), { on_error = "skip", limits = { memory = "32MB" } }, 60, 10)
      local r = E.run_config(dir)
      assert.are.equal(0, r.code, r.stderr)
      assert.are.same(expected_without(60, 10), E.sink_lines(dir .. "/out"))
      assert.matches("skipped", r.stderr, 1, true)
      assert.matches("operator map (uid runaway, pipeline.lua:4)", r.stderr, 1, true)
      assert.matches("not enough memory", r.stderr, 1, true)
      assert.matches("in.jsonl:10 ", r.stderr, 1, true)
    end)

    it("the VM stays usable after an out-of-memory error: a second runaway record is caught too", function()
      E.write(dir .. "/pipeline.lua", runaway(HOG))
      E.write(dir .. "/in.jsonl", '{"n":1}\n{"n":2,"bad":true}\n{"n":3}\n{"n":4,"bad":true}\n{"n":5}\n')
      E.write_config(dir, { on_error = "dead_letter", limits = { memory = "32MB" } })
      local r = E.run_config(dir)
      assert.are.equal(0, r.code, r.stderr)
      assert.are.same({ '{"n":1}', '{"n":3}', '{"n":5}' }, E.sink_lines(dir .. "/out"))
      local dl = E.json_lines(dir .. "/state/spec/dead-letter.jsonl")
      assert.are.equal(2, #dl)
      for _, d in ipairs(dl) do
        assert.matches("not enough memory", d.error, 1, true)
        assert.are.equal("runaway", d.operator)
      end
    end)

    it("under 'fail' an out-of-memory error exits 1 naming the operator and the input", function()
      setup(runaway(HOG), { limits = { memory = "32MB" } }, 5, 3)
      local r = E.run_config(dir)
      assert.are.equal(1, r.code)
      assert.matches("operator map (uid runaway, pipeline.lua:4)", r.stderr, 1, true)
      assert.matches("not enough memory", r.stderr, 1, true)
      assert.matches("in.jsonl:3 (byte 16)", r.stderr, 1, true)
    end)
  end)

  describe("limits.time", function()
    -- a loop the JIT does not compile (it unwinds through error() on every
    -- turn), so it runs in the interpreter, where the watchdog's hook runs
    local INTERPRETED = 'while true do pcall(error, "again") end'

    it("an endless interpreted loop is interrupted after limits.time; under 'skip' the record is skipped and eddy exits 0", function()
      setup(runaway(INTERPRETED), { on_error = "skip", limits = { time = "300ms" } }, 20, 5)
      local t0 = E.now()
      local r = E.run_config(dir)
      local took = E.now() - t0
      assert.are.equal(0, r.code, r.stderr)
      assert.are.same(expected_without(20, 5), E.sink_lines(dir .. "/out"))
      assert.matches("ran longer than 300 ms (limits.time)", r.stderr, 1, true)
      assert.matches("operator map (uid runaway, pipeline.lua:4)", r.stderr, 1, true)
      assert.is_true(took >= 0.3 and took < 30, "took " .. took .. " s")  -- limits.time is CPU time: a loaded machine stretches it
      assert.is_false(E.exists(dir .. "/state/spec/poison.json"))
    end)

    it("under 'dead_letter' the interrupted record is dead-lettered with the limits.time error", function()
      setup(runaway(INTERPRETED), { on_error = "dead_letter", limits = { time = "300ms" } }, 3, 2)
      local r = E.run_config(dir)
      assert.are.equal(0, r.code, r.stderr)
      local dl = E.json_lines(dir .. "/state/spec/dead-letter.jsonl")
      assert.are.equal(1, #dl)
      assert.matches("ran longer than 300 ms (limits.time)", dl[1].error, 1, true)
      assert.are.equal('{"n":2,"bad":true}', dl[1].record)
      assert.are.equal("runaway", dl[1].operator)
    end)

    it("a function that runs long but ends within limits.time is not interrupted", function()
      setup(runaway('local t0 = os.clock(); while os.clock() - t0 < 0.15 do pcall(error, "x") end'),
        { limits = { time = "1s" } }, 3, 2)
      local r = E.run_config(dir)
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal(3, #E.sink_lines(dir .. "/out"))
    end)

    it("a record that armed the watchdog does not lend its count to the records after it: limits apply per record", function()
      -- record 1 runs 150 ms (past the watchdog's 100 ms, so the count hook
      -- is armed and the JIT is off); each later record costs ~1.8M
      -- interpreted instructions: counted together they would pass the limit
      E.write(dir .. "/pipeline.lua", pipeline([[
p:source("in", { file = "in.jsonl" })
 :map(function(v)
   if v.n == 1 then local t0 = os.clock(); while os.clock() - t0 < 0.15 do end end
   local x = 0; for i = 1, 300000 do x = x + i % 7 end; v.x = x; return v
 end)
 :sink("out", { file = "out" })]]))
      E.write(dir .. "/in.jsonl", input(200))
      E.write_config(dir, { limits = { instructions = 3000000, time = "1s" }, threads = 1 })
      local r = E.run_config(dir)
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal(200, #E.sink_lines(dir .. "/out"))
    end)

    it("counts CPU time, not wall-clock time: two calls of ~75 ms on a core eddy barely gets (a busy loop beside it) are not cut short", function()
      -- eddy at nice 12 on core 0 beside a busy loop at nice 0 gets ~5%
      -- of it: each call of ~75 ms of CPU takes seconds of wall-clock time,
      -- past limits.time + 1 s
      E.write(dir .. "/pipeline.lua", pipeline([[
p:source("in", { file = "in.jsonl" })
 :map(function(v)
   local x = 0; for i = 1, 20000000 do x = x + i % 7 end; v.x = x; return v
 end)
 :sink("out", { file = "out" })]]))
      E.write(dir .. "/in.jsonl", input(2))
      E.write_config(dir, { limits = { time = "300ms" }, threads = 1 })
      local hogs = "taskset -c 0 sh -c 'while :; do :; done' & h1=$!; "
      local cmd = string.format("cd %s; %s timeout -k 5 120 taskset -c 0 nice -n 12 %s run eddy.conf.lua 2>stderr; echo $? >rc; kill $h1",
        E.quote(dir), hogs, E.quote(E.bin))
      local t0 = E.now()
      E.sh(cmd)
      local took = E.now() - t0
      local stderr = E.read(dir .. "/stderr") or ""
      assert.are.equal("0", (E.read(dir .. "/rc") or ""):match("%d+"), stderr)
      assert.is_nil(stderr:find("limits.time", 1, true), stderr)
      assert.are.equal(2, #E.sink_lines(dir .. "/out"))
      assert.is_true(took > 1.3, "the busy loops did not slow eddy down (" .. took .. " s): the spec tested nothing")
    end)

    describe("a JIT-compiled endless loop", function()
      it("cannot be interrupted: eddy exits 1 after limits.time + 1s naming the operator and the input, and writes poison.json", function()
        setup(runaway("while true do end"), { on_error = "skip", limits = { time = "300ms" } }, 5, 3)
        local t0 = E.now()
        local r = E.run_config(dir, { timeout = 20 })
        local took = E.now() - t0
        assert.are.equal(1, r.code, r.stderr)
        assert.matches("cannot be interrupted", r.stderr, 1, true)
        assert.matches("operator map (uid runaway, pipeline.lua:4)", r.stderr, 1, true)
        assert.matches("in " .. dir .. "/in.jsonl:3 (byte 16)", r.stderr, 1, true)
        assert.is_true(took >= 1.3 and took < 30, "took " .. took .. " s")  -- CPU time: a loaded machine stretches it
        local text = E.read(dir .. "/state/spec/poison.json")
        assert.is_string(text, "no poison.json")
        local poison = E.cjson.decode(text)
        assert.are.equal("in", poison.source)
        assert.are.equal(0, poison.partition)
        assert.are.equal(16, poison.offset)
        assert.are.equal(3, poison.line)
        assert.are.equal("runaway", poison.operator)
      end)

      it("the next run hands the poisoned record to the error policy: under 'skip' it completes with exit 0 without that record", function()
        setup(runaway("while true do end"), { on_error = "skip", limits = { time = "300ms" } }, 5, 3)
        local first = E.run_config(dir, { timeout = 20 })
        assert.are.equal(1, first.code)
        assert.is_true(E.exists(dir .. "/state/spec/poison.json"))
        E.sh("rm -rf " .. E.quote(dir .. "/out"))   -- what the first run wrote is replayed
        local r = E.run_config(dir, { timeout = 20 })
        assert.are.equal(0, r.code, r.stderr)
        assert.are.same(expected_without(5, 3), E.sink_lines(dir .. "/out"))
        assert.matches("poison.json", r.stderr, 1, true)
        -- handled: a third run would not skip it again
        assert.is_false(E.exists(dir .. "/state/spec/poison.json"))
      end)

      it("the next run under 'dead_letter' dead-letters the poisoned record with its bytes", function()
        setup(runaway("while true do end"), { on_error = "dead_letter", limits = { time = "300ms" } }, 4, 2)
        assert.are.equal(1, E.run_config(dir, { timeout = 20 }).code)
        local r = E.run_config(dir, { timeout = 20 })
        assert.are.equal(0, r.code, r.stderr)
        local dl = E.json_lines(dir .. "/state/spec/dead-letter.jsonl")
        assert.are.equal(1, #dl)
        assert.are.equal('{"n":2,"bad":true}', dl[1].record)
        assert.are.equal(2, dl[1].line)
        assert.matches("cannot be interrupted", dl[1].error, 1, true)
      end)
    end)
  end)
end)

describe("the sandbox", function()
  local dir

  before_each(function()
    dir = E.tmpdir()
    E.write(dir .. "/in.jsonl", '{"n":21}\n')
    E.write(dir .. "/data.txt", "inside\n")
    E.write(dir .. "/lib/util.lua", "return { twice = function(x) return 2 * x end }\n")
    E.write(dir .. "/../" .. dir:match("[^/]+$") .. "-outside.txt", "secret\n")
  end)
  after_each(function()
    os.remove(dir .. "-outside.txt")
    E.cleanup()
  end)

  -- probe(code, config): runs a map whose function returns the table `code`
  -- builds (as `r`), and gives back that table
  local function probe(code, config)
    E.write(dir .. "/pipeline.lua", pipeline([[
p:source("in", { file = "in.jsonl" })
 :map(function(v)
   local r = {}
   ]] .. code .. [[

   return r
 end)
 :sink("out", { file = "out" })]]))
    E.write_config(dir, config or {})
    local res = E.run_config(dir)
    assert.are.equal(0, res.code, res.stderr)
    local out = E.json_lines(E.part_files(dir .. "/out")[1])
    assert.are.equal(1, #out)
    return out[1]
  end

  it("user functions have no os.execute, io.popen or os.exit, and calling them is an error", function()
    local r = probe([[
   r.execute, r.popen, r.exit = type(os.execute), type(io.popen), type(os.exit)
   r.call_ok, r.call_err = pcall(function() return os.execute("touch pwned") end)]])
    assert.are.equal("nil", r.execute)
    assert.are.equal("nil", r.popen)
    assert.are.equal("nil", r.exit)
    assert.is_false(r.call_ok)
    assert.matches("nil value", r.call_err, 1, true)
    assert.is_false(E.exists(dir .. "/pwned"))
  end)

  it("os.execute at the top of the script is an error: exit 2 naming pipeline.lua:LINE", function()
    E.write(dir .. "/pipeline.lua", 'local eddy = require("eddy")\nos.execute("touch pwned")\n'
      .. 'local p = eddy.pipeline()\np:source("in", { file = "in.jsonl" }):sink("out", { file = "out" })\nreturn p\n')
    E.write_config(dir, {})
    local r = E.run_config(dir)
    assert.are.equal(2, r.code)
    assert.matches("pipeline.lua:2:", r.stderr, 1, true)
    assert.is_false(E.exists(dir .. "/pwned"))
  end)

  it("require('ffi') is refused, saying how to allow it", function()
    local r = probe([[r.ok, r.err = pcall(require, "ffi")]])
    assert.is_false(r.ok)
    assert.matches("sandbox.ffi = true", r.err, 1, true)
  end)

  it("require('ffi') works with sandbox = { ffi = true }", function()
    local r = probe([[
   local ffi = require("ffi")
   r.sizeof = ffi.sizeof("int32_t")]], { sandbox = { ffi = true } })
    assert.are.equal(4, r.sizeof)
  end)

  it("assigning to a sandbox-owned global at the top of the script exits 2", function()
    for _, name in ipairs({ "string", "print" }) do
      E.write(dir .. "/pipeline.lua", 'local eddy = require("eddy")\n' .. name .. ' = nil\n'
        .. 'local p = eddy.pipeline()\np:source("in", { file = "in.jsonl" }):sink("out", { file = "out" })\nreturn p\n')
      E.write_config(dir, {})
      local r = E.run_config(dir)
      assert.are.equal(2, r.code, name)
      assert.matches("pipeline.lua:2: cannot assign to global '" .. name .. "': it belongs to the sandbox", r.stderr, 1, true)
      assert.is_false(E.exists(dir .. "/out"))
    end
  end)

  it("assigning to a sandbox-owned global inside a function is an error; the user's own globals are fine", function()
    local r = probe([[
   r.ok, r.err = pcall(function() string = nil end)
   mine = 42
   r.mine = mine
   r.string_ok = type(string.format)]])
    assert.is_false(r.ok)
    assert.matches("cannot assign to global 'string': it belongs to the sandbox", r.err, 1, true)
    assert.are.equal(42, r.mine)
    assert.are.equal("function", r.string_ok)
  end)

  it("require finds a module in the pipeline's folder (dotted names are subfolders)", function()
    E.write(dir .. "/pipeline.lua", pipeline([[
local util = require("lib.util")
p:source("in", { file = "in.jsonl" })
 :map(function(v) return { n = util.twice(v.n) } end)
 :sink("out", { file = "out" })]]))
    E.write_config(dir, {})
    local r = E.run_config(dir)
    assert.are.equal(0, r.code, r.stderr)
    assert.are.same({ '{"n":42}' }, E.sink_lines(dir .. "/out"))
  end)

  it("require does not find modules outside the pipeline's folder", function()
    local r = probe([[r.ok, r.err = pcall(require, "support.eddy")]])
    assert.is_false(r.ok)
    assert.matches("not found in the pipeline's folder", r.err, 1, true)
  end)

  it("io.open reads inside the pipeline's folder", function()
    local r = probe([[
   local f = io.open("data.txt")
   r.rel = f and f:read("*l")
   local g = io.open("]] .. dir .. [[/data.txt")
   r.abs = g and g:read("*l")]])
    assert.are.equal("inside", r.rel)
    assert.are.equal("inside", r.abs)
  end)

  it("io.open refuses paths outside the folder (absolute, or with ..) and opening for writing", function()
    local outside = dir .. "-outside.txt"
    local r = probe([[
   local f, err = io.open("]] .. outside .. [[")
   r.abs = f and "opened" or err
   local g, err2 = io.open("../]] .. outside:match("[^/]+$") .. [[")
   r.dotdot = g and "opened" or err2
   local h, err3 = io.open("/etc/passwd")
   r.etc = h and "opened" or err3
   local w, err4 = io.open("data.txt", "w")
   r.write = w and "opened" or err4
   local a, err5 = io.open("data.txt", "r+")
   r.update = a and "opened" or err5]])
    assert.matches("only inside", r.abs, 1, true)
    assert.matches("only inside", r.dotdot, 1, true)
    assert.matches("only inside", r.etc, 1, true)
    assert.matches("read-only", r.write, 1, true)
    assert.matches("read-only", r.update, 1, true)
    assert.are.equal("inside\n", E.read(dir .. "/data.txt"))
  end)

  it("dofile and loadfile are limited to the pipeline's folder too", function()
    local r = probe([[
   r.dofile_ok, r.dofile_err = pcall(dofile, "/etc/passwd")
   local f, err = loadfile("/etc/passwd")
   r.loadfile = f and "loaded" or err]])
    assert.is_false(r.dofile_ok)
    assert.matches("only inside", r.dofile_err, 1, true)
    assert.matches("only inside", r.loadfile, 1, true)
  end)

  it("the debug library, setfenv and getfenv are not there", function()
    local r = probe([[r.debug, r.setfenv, r.getfenv = type(debug), type(setfenv), type(getfenv)]])
    assert.are.equal("nil", r.debug)
    assert.are.equal("nil", r.setfenv)
    assert.are.equal("nil", r.getfenv)
  end)
end)
