-- The command line: version, help, unknown commands, missing arguments, and
-- `eddy check` printing the plan of a config or of a pipeline script.

local E = require("support.eddy")

describe("eddy command line", function()
  after_each(E.cleanup)

  it("eddy version prints 'eddy 0.1.0' and exits 0", function()
    local r = E.run({ "version" })
    assert.are.equal(0, r.code)
    assert.are.equal("eddy 0.1.0\n", r.stdout)
  end)

  it("eddy help prints the usage with the run and check commands on stdout and exits 0", function()
    local r = E.run({ "help" })
    assert.are.equal(0, r.code)
    assert.matches("usage:", r.stdout)
    assert.matches("eddy run CONFIG", r.stdout, 1, true)
    assert.matches("eddy check CONFIG|PIPELINE.lua", r.stdout, 1, true)
    assert.matches("eddy version", r.stdout, 1, true)
  end)

  it("eddy without a command prints the usage on stderr and exits 2", function()
    local r = E.run({})
    assert.are.equal(2, r.code)
    assert.matches("usage:", r.stderr)
    assert.are.equal("", r.stdout)
  end)

  it("an unknown command exits 2 and names the command", function()
    local r = E.run({ "frobnicate" })
    assert.are.equal(2, r.code)
    assert.matches("unknown command 'frobnicate'", r.stderr, 1, true)
  end)

  it("eddy run without a CONFIG exits 2 saying CONFIG is missing", function()
    local r = E.run({ "run" })
    assert.are.equal(2, r.code)
    assert.matches("missing CONFIG", r.stderr, 1, true)
  end)

  it("eddy check without an argument exits 2", function()
    local r = E.run({ "check" })
    assert.are.equal(2, r.code)
    assert.matches("eddy check", r.stderr, 1, true)
  end)

  it("eddy run with an unknown extra argument exits 2 and names it", function()
    local dir = E.tmpdir()
    local r = E.run({ "run", dir .. "/eddy.conf.lua", "--bogus" })
    assert.are.equal(2, r.code)
    assert.matches("--bogus", r.stderr, 1, true)
  end)

  it("eddy run and eddy check on a config file that does not exist exit 2 naming the file", function()
    local dir = E.tmpdir()
    for _, cmd in ipairs({ "run", "check" }) do
      local r = E.run({ cmd, dir .. "/missing.conf.lua" })
      assert.are.equal(2, r.code)
      assert.matches("missing.conf.lua", r.stderr, 1, true)
    end
  end)

  it("eddy run given a pipeline script instead of a config exits 2 before processing", function()
    local dir = E.tmpdir()
    E.write(dir .. "/in.txt", "x\n")
    E.write(dir .. "/pipeline.lua", 'local eddy = require("eddy")\nlocal p = eddy.pipeline()\n'
      .. 'p:source("in", { file = "in.txt", format = "lines" }):sink("out", { file = "out" })\nreturn p\n')
    local r = E.run({ "run", dir .. "/pipeline.lua" })
    assert.are.equal(2, r.code)
    assert.matches("pipeline.lua", r.stderr, 1, true)
    assert.is_false(E.exists(dir .. "/out"))
  end)

  describe("eddy check", function()
    local dir, conf

    before_each(function()
      dir = E.tmpdir()
      E.write(dir .. "/a/1.txt", "x\n")
      E.write(dir .. "/a/2.txt", "y\n")
      E.write(dir .. "/a/3.txt", "z\n")
      E.write(dir .. "/b.csv", "k,v\n1,2\n")
      E.write(dir .. "/pipeline.lua", [[
local eddy = require("eddy")
local p = eddy.pipeline()
local a = p:source("a", { file = "a/*.txt", format = "lines" })
local b = p:source("b", { file = "b.csv", format = "csv", header = true })
local u = a:union(b):uid("both")
u:filter(function(v) return true end):sink("s1", { file = "o1", format = "lines" })
u:key_by(function(v) return v end, { parallelism = 3 }):uid("by-v")
 :map(function(v) return v end):uid("m")
 :sink("s2", { stdout = true })
return p
]])
      conf = E.write_config(dir, { name = "checked", threads = 2 })
    end)

    it("prints each stage with its kind, format and number of partitions, and exits 0", function()
      local r = E.run({ "check", conf })
      assert.are.equal(0, r.code, r.stderr)
      assert.matches("stage 0 a: source (file, format lines), 3 partitions", r.stdout, 1, true)
      assert.matches("stage 1 b: source (file, format csv), 1 partition\n", r.stdout, 1, true)
      assert.matches("stage 2 keyed2: keyed, parallelism 3", r.stdout, 1, true)
      assert.matches("name checked, threads 2", r.stdout, 1, true)
    end)

    it("prints one task per matched file with the file's absolute path, and one per keyed partition", function()
      local r = E.run({ "check", conf })
      assert.are.equal(0, r.code, r.stderr)
      assert.matches("  task a-0  " .. dir .. "/a/1.txt\n", r.stdout, 1, true)
      assert.matches("  task a-1  " .. dir .. "/a/2.txt\n", r.stdout, 1, true)
      assert.matches("  task a-2  " .. dir .. "/a/3.txt\n", r.stdout, 1, true)
      assert.matches("  task b-0  " .. dir .. "/b.csv\n", r.stdout, 1, true)
      for i = 0, 2 do assert.matches("  task keyed2-" .. i .. "\n", r.stdout, 1, true) end
      assert.is_nil(r.stdout:find("task keyed2-3", 1, true))
    end)

    it("prints each operator with its uid (given or derived) and the pipeline.lua line that declared it", function()
      local r = E.run({ "check", conf })
      assert.are.equal(0, r.code, r.stderr)
      local out = r.stdout
      assert.matches("source%s+uid=a name=a%s+%[pipeline%.lua:3%]", out)
      assert.matches("source%s+uid=b name=b%s+%[pipeline%.lua:4%]", out)
      assert.matches("union%s+uid=both%s+%[pipeline%.lua:5%]", out)
      -- no uid given: one is derived from the position
      assert.matches("filter%s+uid=filter%-%d+%s+%[pipeline%.lua:6%]", out)
      assert.matches("sink%s+uid=s1 name=s1 .*format=lines%s+%[pipeline%.lua:6%]", out)
      assert.matches("key_by%s+uid=by%-v key=<function> %-> stage 2 %(keyed2%)%s+%[pipeline%.lua:7%]", out)
      assert.matches("map%s+uid=m%s+%[pipeline%.lua:8%]", out)
      assert.matches("sink%s+uid=s2 name=s2 stdout format=json%s+%[pipeline%.lua:9%]", out)
    end)

    it("processes nothing: no sink folder and no state folder are created", function()
      local r = E.run({ "check", conf })
      assert.are.equal(0, r.code, r.stderr)
      assert.is_false(E.exists(dir .. "/o1"))
      assert.is_false(E.exists(dir .. "/state"))
    end)

    it("accepts a pipeline script directly, naming the app after the script", function()
      local r = E.run({ "check", dir .. "/pipeline.lua" })
      assert.are.equal(0, r.code, r.stderr)
      assert.matches("pipeline " .. dir .. "/pipeline.lua", r.stdout, 1, true)
      assert.matches("name pipeline,", r.stdout, 1, true)
      assert.matches("stage 0 a: source (file, format lines), 3 partitions", r.stdout, 1, true)
      assert.matches("stage 2 keyed2: keyed, parallelism 3", r.stdout, 1, true)
    end)

    it("shows key_by's field name and the keyed stage's default parallelism from the config", function()
      E.write(dir .. "/p2.lua", [[
local eddy = require("eddy")
local p = eddy.pipeline()
p:source("in", { file = "b.csv", format = "json" })
 :key_by("user")
 :sink("out", { file = "out" })
return p
]])
      local c = E.write_config(dir, { pipeline = "p2.lua", parallelism = 5 }, "p2.conf.lua")
      local r = E.run({ "check", c })
      assert.are.equal(0, r.code, r.stderr)
      assert.matches("key_by%s+uid=%S+ key=user %-> stage 1", r.stdout)
      assert.matches("stage 1 %S+: keyed, parallelism 5", r.stdout)
      assert.matches("stage 0 in: source (file, format json), 1 partition", r.stdout, 1, true)
    end)

    it("exits 2 with the error on stderr and nothing on stdout when the pipeline is wrong", function()
      E.write(dir .. "/bad.lua", [[
local eddy = require("eddy")
local p = eddy.pipeline()
p:source("in", { file = "b.csv", format = "xml" })
return p
]])
      local r = E.run({ "check", dir .. "/bad.lua" })
      assert.are.equal(2, r.code)
      assert.matches("bad.lua:3:", r.stderr, 1, true)
      assert.matches("unknown format 'xml'", r.stderr, 1, true)
      assert.are.equal("", r.stdout)
    end)

    it("refuses a bad join with exit 2, naming the line", function()
      for _, call in ipairs({
        ':key_by("a"):join(s:key_by("a"), function() end, { within = "1m", type = "full" })',
        ':key_by("a"):to_table():join(s:key_by("a"):to_table(), function() end, { type = "left" })',
      }) do
        E.write(dir .. "/u.lua", [[
local eddy = require("eddy")
local p = eddy.pipeline()
local s = p:source("in", { file = "b.csv" })
s]] .. call .. [[

return p
]])
        local r = E.run({ "check", dir .. "/u.lua" })
        assert.are.equal(2, r.code, call)
        assert.matches("eddy: .*join", r.stderr)
        assert.matches("u.lua:4", r.stderr, 1, true)
      end
    end)
  end)
end)
