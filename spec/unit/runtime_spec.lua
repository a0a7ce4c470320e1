-- lua/eddy/runtime (plan.lua, values.lua): plan() loads the user's pipeline script in a sandbox
-- and describes its graph as plain data; key_string() is the key that is
-- hashed and that keyed operators see.

local H = require("unit.helpers")
local runtime = H.require_runtime()

describe("runtime.plan", function()
  local dir, logged

  local function plan(script_text, extra)
    H.write(dir, "pipeline.lua", script_text)
    local args = { script = "pipeline.lua", dir = dir, log = function(m) logged[#logged + 1] = m end }
    for k, v in pairs(extra or {}) do args[k] = v end
    return runtime.plan(args)
  end

  local function plan_error(script_text, extra)
    local ok, e = pcall(plan, script_text, extra)
    assert(not ok, "expected plan to fail")
    return tostring(e)
  end

  before_each(function() dir = H.tmpdir(); logged = {} end)
  after_each(function() H.rmdir(dir) end)

  it("describes each node: id, kind, name, uid, where, inputs, opts", function()
    local nodes = plan([[
local eddy = require("eddy")
local p = eddy.pipeline()
p:source("words", { file = "in.txt", format = "lines" })
 :filter(function(v) return v ~= "" end)
 :map(function(v) return { word = v } end)
 :key_by("word", { parallelism = 3 })
 :flat_map(function(v) return { v, v } end)
 :sink("out", { file = "out", format = "json" })
return p
]])
    assert.equal(6, #nodes)
    assert.same({ id = 1, kind = "source", name = "words", uid = "words", where = "pipeline.lua:3", inputs = {},
      opts = { file = "in.txt", format = "lines", follow = false, header = false, delimiter = "," } }, nodes[1])
    assert.same({ id = 2, kind = "filter", uid = "filter-2", where = "pipeline.lua:4", inputs = { 1 }, opts = {} }, nodes[2])
    assert.same({ id = 3, kind = "map", uid = "map-3", where = "pipeline.lua:5", inputs = { 2 }, opts = {} }, nodes[3])
    assert.same({ id = 4, kind = "key_by", uid = "key_by-4", where = "pipeline.lua:6", inputs = { 3 },
      opts = { field = "word", parallelism = 3, key = "word" } }, nodes[4])
    assert.same({ id = 5, kind = "flat_map", uid = "flat_map-5", where = "pipeline.lua:7", inputs = { 4 }, opts = {} }, nodes[5])
    assert.same({ id = 6, kind = "sink", name = "out", uid = "out", where = "pipeline.lua:8", inputs = { 5 },
      opts = { file = "out", format = "json" } }, nodes[6])
  end)

  it("gives only plain data: no functions anywhere in the plan", function()
    local nodes = plan([[
local p = require("eddy").pipeline()
p:source("in", { stdin = true, key = function(v) return v.id end })
 :key_by(function(v) return v.k end)
 :sink("o", { stdout = true })
return p
]])
    local function walk(t)
      for k, v in pairs(t) do
        assert.are_not.equal("function", type(v), tostring(k))
        if type(v) == "table" then walk(v) end
      end
    end
    walk(nodes)
    assert.equal("<function>", nodes[1].opts.key)
    assert.equal("<function>", nodes[2].opts.key)
    assert.is_nil(nodes[2].opts.field)
  end)

  it("keeps a source key field name", function()
    local nodes = plan([[
local p = require("eddy").pipeline()
p:source("in", { file = "x", key = "id" }):sink("o", { stdout = true })
return p
]])
    assert.equal("id", nodes[1].opts.key)
  end)

  it("keeps an explicit uid and derives kind-id for the others", function()
    local nodes = plan([[
local p = require("eddy").pipeline()
local s = p:source("in", { file = "x" })
s:map(function(v) return v end):uid("parse"):filter(function() return true end):sink("o", { stdout = true })
return p
]])
    assert.equal("in", nodes[1].uid)
    assert.equal("parse", nodes[2].uid)
    assert.equal("filter-3", nodes[3].uid)
    assert.equal("o", nodes[4].uid)
  end)

  it("describes a union with both inputs", function()
    local nodes = plan([[
local p = require("eddy").pipeline()
local a = p:source("a", { file = "a" })
local b = p:source("b", { file = "b" })
a:union(b):sink("o", { stdout = true })
return p
]])
    assert.equal("union", nodes[3].kind)
    assert.same({ 1, 2 }, nodes[3].inputs)
    assert.equal("pipeline.lua:4", nodes[3].where)
  end)

  it("gives every node a distinct uid (an explicit uid may not take another node's derived one)", function()
    local ok, res = pcall(plan, [[
local p = require("eddy").pipeline()
local s = p:source("in", { file = "x" })
s:map(function(v) return v end)
s:map(function(v) return v end):uid("map-2")
return p
]])
    if ok then
      local seen = {}
      for _, n in ipairs(res) do
        assert.is_nil(seen[n.uid], "uid " .. n.uid .. " given to nodes " .. tostring(seen[n.uid]) .. " and " .. n.id)
        seen[n.uid] = n.id
      end
    end
  end)

  it("runs the script in the sandbox, with print going to the log", function()
    local nodes = plan([[
print("planning", os.execute == nil)
local p = require("eddy").pipeline()
p:source("in", { file = "x" }):sink("o", { stdout = true })
return p
]])
    assert.equal(2, #nodes)
    assert.same({ "planning\ttrue" }, logged)
  end)

  it("lets the script require modules from its folder", function()
    H.write(dir, "ops.lua", "return { upper = function(v) return v:upper() end }")
    local nodes = plan([[
local ops = require("ops")
local p = require("eddy").pipeline()
p:source("in", { file = "x", format = "lines" }):map(ops.upper):sink("o", { stdout = true })
return p
]])
    assert.equal("map", nodes[2].kind)
  end)

  it("passes ffi = true on to the sandbox", function()
    local script = [[
local ffi = require("ffi")
local p = require("eddy").pipeline()
p:source("in", { file = "x" }):sink("o", { stdout = true })
return p
]]
    assert.matches("require 'ffi' is not allowed", plan_error(script), 1, true)
    assert.equal(2, #plan(script, { ffi = true }))
  end)

  it("gives the same plan when called twice (fresh sandbox each time)", function()
    local script = [[
count = (count or 0) + 1
local p = require("eddy").pipeline()
p:source("in", { file = "x" }):map(function(v) return v end):sink("o", { stdout = true })
if count > 1 then error("state leaked between plans") end
return p
]]
    assert.same(plan(script), plan(script))
  end)

  -- key_code: what a canary compares to keep records routed alike (core/canary.c)
  describe("a key_by function's key_code", function()
    local function key_code(fn_text, before)
      local nodes = plan((before or "") .. [[
local p = require("eddy").pipeline()
p:source("in", { file = "x" }):key_by(]] .. fn_text .. [[):sink("o", { stdout = true })
return p
]])
      assert.equal("key_by", nodes[2].kind)
      return nodes[2].opts.key_code
    end
    local F = 'function(v) return v:sub(1, N) end'

    it("is the same for the same function, moved or reformatted", function()
      local a = key_code(F, "local N = 3\n")
      assert.is_string(a)
      assert.matches("^%x+$", a)
      assert.equal(a, key_code("\n\n  function(v)\n    return v:sub(1, N)\n  end", "-- moved\nlocal N = 3\n\n"))
    end)

    it("differs when the code changes, or a scalar it reads from an enclosing local", function()
      local a = key_code(F, "local N = 3\n")
      assert.are_not.equal(a, key_code('function(v) return v:sub(2, N) end', "local N = 3\n"))
      assert.are_not.equal(a, key_code(F, "local N = 4\n"))
      assert.are_not.equal(a, key_code(F, "local N = '3'\n"))
    end)

    it("is absent for a key_by on a field; a process's migrate has a migrate_code", function()
      local nodes = plan([[
local p = require("eddy").pipeline()
p:source("in", { file = "x" }):key_by("user")
 :process({ process = function(v, ctx) ctx.emit(v) end, migrate = function(old) return old end })
 :sink("o", { stdout = true })
return p
]])
      assert.is_nil(nodes[2].opts.key_code)
      assert.equal("user", nodes[2].opts.field)
      assert.matches("^%x+$", nodes[3].opts.migrate_code)
    end)
  end)

  describe("errors", function()
    it("refuses a script that does not return a pipeline", function()
      local e = plan_error([[
local p = require("eddy").pipeline()
p:source("in", { file = "x" }):sink("o", { stdout = true })
]])
      assert.equal("pipeline.lua: the script must end with 'return p', returning the pipeline it built", e)
      assert.matches("must end with 'return p'", plan_error("return {}"), 1, true)
      assert.matches("must end with 'return p'", plan_error("return 1"), 1, true)
      assert.matches("must end with 'return p'",
        plan_error("local p = require('eddy').pipeline(); return p:source('in', { file = 'x' })"), 1, true)
    end)

    it("refuses a pipeline without a source", function()
      assert.equal("pipeline.lua: the pipeline has no source", plan_error("return require('eddy').pipeline()"))
    end)

    it("reports a syntax error as pipeline.lua:N:", function()
      local e = plan_error("local eddy = require('eddy')\nlocal p = eddy.pipeline(\nreturn p\n")
      assert.matches("^pipeline%.lua:3:", e)
    end)

    it("reports a runtime error in the script as pipeline.lua:N:", function()
      local e = plan_error("local p = require('eddy').pipeline()\nlocal x = nil\nx.y = 1\nreturn p\n")
      assert.matches("^pipeline%.lua:3:", e)
    end)

    it("reports an API refusal at the script's line", function()
      local e = plan_error([[
local p = require("eddy").pipeline()

p:source("in", { kafka = "words", follow = true })
return p
]])
      assert.equal("pipeline.lua:3: eddy: source 'in': follow is for file sources (a Kafka source never ends)", e)
    end)

    it("reports a source option of another kind of source at the script's line", function()
      local e = plan_error([[
local p = require("eddy").pipeline()
p:source("in", { file = "x", start = "earliest" })
return p
]])
      assert.equal("pipeline.lua:2: eddy: source 'in': start is for kafka sources", e)
    end)

    it("reports a missing map function at the script's line", function()
      local e = plan_error([[
local p = require("eddy").pipeline()
local s = p:source("in", { file = "x" })
s:map(nil)
return p
]])
      assert.equal("pipeline.lua:3: eddy: map needs a function, got nil", e)
    end)

    it("reports a missing script", function()
      local ok, e = pcall(runtime.plan, { script = "nope.lua", dir = dir, log = function() end })
      assert.is_false(ok)
      assert.matches("cannot open nope.lua", tostring(e), 1, true)
    end)
  end)
end)

describe("runtime.key_string", function()
  local ks = runtime.key_string

  it("keeps strings as they are", function()
    assert.equal("abc", ks("abc"))
    assert.equal("", ks(""))
    assert.equal("a\0b", ks("a\0b"))
  end)

  it("writes integers with %d", function()
    assert.equal("0", ks(0))
    assert.equal("42", ks(42))
    assert.equal("-7", ks(-7))
    assert.equal("42", ks(42.0))
    assert.equal("1000000000000", ks(1e12))
    assert.equal("9007199254740992", ks(2 ^ 53))
    assert.equal("-9007199254740992", ks(-(2 ^ 53)))
  end)

  it("gives a number the same key as its integer string", function()
    assert.equal(ks("123"), ks(123))
  end)

  it("writes other numbers with %.17g", function()
    assert.equal("1.5", ks(1.5))
    assert.equal(string.format("%.17g", 0.1), ks(0.1))
    assert.equal(string.format("%.17g", 2 ^ 60), ks(2 ^ 60))
    assert.equal(string.format("%.17g", 1 / 0), ks(1 / 0))
  end)

  it("writes booleans as true and false", function()
    assert.equal("true", ks(true))
    assert.equal("false", ks(false))
  end)

  it("refuses tables, nil and functions", function()
    assert.has_error(function() ks({}) end, "a key must be a string, number or boolean, got table")
    assert.has_error(function() ks(nil) end, "a key must be a string, number or boolean, got nil")
    assert.has_error(function() ks(print) end, "a key must be a string, number or boolean, got function")
  end)
end)
