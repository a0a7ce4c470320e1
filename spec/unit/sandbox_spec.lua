-- lua/eddy/sandbox.lua: the environment user code runs in.  Each test builds
-- a fresh sandbox over a fresh temporary folder.

local sandbox = require("eddy.sandbox")
local H = require("unit.helpers")

local real_string_upper, real_table_insert, real_math_floor = string.upper, table.insert, math.floor

describe("eddy.sandbox", function()
  local dir, logged

  -- a sandbox over dir; extra options merged in
  local function new(opts)
    local o = { dir = dir, log = function(msg) logged[#logged + 1] = msg end }
    for k, v in pairs(opts or {}) do o[k] = v end
    return sandbox.new(o)
  end

  -- runs src in env and returns what it returns (errors propagate)
  local function run(env, src, ...)
    local f = assert(loadstring(src, "=user"))
    return setfenv(f, env)(...)
  end

  -- runs src in env; it must fail; returns the message
  local function fails(env, src)
    local ok, e = pcall(run, env, src)
    assert(not ok, "expected an error from: " .. src)
    return tostring(e)
  end

  before_each(function()
    dir = H.tmpdir()
    logged = {}
  end)
  after_each(function() H.rmdir(dir) end)

  it("returns an environment, load_user_file and loadin", function()
    local env, load_user_file, loadin = new()
    assert.is_table(env)
    assert.is_function(load_user_file)
    assert.is_function(loadin)
  end)

  describe("globals", function()
    it("has the base library", function()
      local env = new()
      for _, name in ipairs({ "assert", "error", "ipairs", "next", "pairs", "pcall", "xpcall", "select",
          "tonumber", "tostring", "type", "unpack", "rawget", "rawset", "rawequal", "setmetatable",
          "getmetatable", "collectgarbage", "print", "require", "loadstring", "load", "loadfile", "dofile" }) do
        assert.is_function(env[name], name)
      end
      for _, name in ipairs({ "string", "table", "math", "bit", "coroutine", "os", "io" }) do
        assert.is_table(env[name], name)
      end
      assert.equal(env, env._G)
      assert.equal("HELLO", run(env, "return string.upper('hello')"))
      assert.equal(3, run(env, "return math.max(1, 3, 2)"))
      assert.equal(6, run(env, "return bit.bor(2, 4)"))
    end)

    it("has os.time, os.clock, os.date, os.difftime, os.getenv", function()
      local env = new()
      for _, name in ipairs({ "time", "clock", "date", "difftime", "getenv" }) do
        assert.is_function(env.os[name], name)
      end
    end)

    it("has no os.execute, os.exit, os.remove, os.rename, os.tmpname, io.popen, debug, getfenv, setfenv", function()
      local env = new()
      assert.is_nil(env.os.execute)
      assert.is_nil(env.os.exit)
      assert.is_nil(env.os.remove)
      assert.is_nil(env.os.rename)
      assert.is_nil(env.os.tmpname)
      assert.is_nil(env.io.popen)
      assert.is_nil(env.io.write)
      assert.is_nil(env.io.stdout)
      assert.is_nil(env.debug)
      assert.is_nil(env.getfenv)
      assert.is_nil(env.setfenv)
      assert.is_nil(env.module)
      assert.is_nil(env.newproxy)
      assert.is_nil(env.package)
      assert.is_nil(env.jit)
      assert.is_nil(run(env, "return os.execute"))
      assert.is_nil(run(env, "return debug"))
    end)

    it("with os = true has os.execute, os.exit, os.remove and the whole io library", function()
      local env = new({ os = true })
      assert.equal(os.execute, env.os.execute)
      assert.equal(os.exit, env.os.exit)
      assert.equal(os.remove, env.os.remove)
      assert.equal(io.popen, env.io.popen)
      assert.equal(io.open, env.io.open)
    end)

    it("with os = true still has no debug, getfenv, setfenv", function()
      local env = new({ os = true })
      assert.is_nil(env.debug)
      assert.is_nil(env.getfenv)
      assert.is_nil(env.setfenv)
    end)

    it("refuses assignment to a global that belongs to the sandbox", function()
      local env = new()
      for _, name in ipairs({ "string", "print", "require", "os", "io", "pairs", "_G" }) do
        local e = fails(env, name .. " = nil")
        assert.matches("cannot assign to global '" .. name .. "': it belongs to the sandbox", e, 1, true)
      end
      assert.is_function(env.print)
    end)

    it("points the refusal at the user's line", function()
      local env = new()
      local e = fails(env, "local x = 1\nprint = function() end")
      assert.matches("^user:2: ", e)
    end)

    it("allows new globals, and reassigning them", function()
      local env = new()
      run(env, "counter = 1; counter = counter + 1; function helper() return counter end")
      assert.equal(2, env.counter)
      assert.equal(2, run(env, "return helper()"))
    end)

    it("keeps new globals to its own environment", function()
      local a = new()
      local b = new()
      run(a, "shared_name = 'a'")
      assert.is_nil(b.shared_name)
      assert.is_nil(rawget(_G, "shared_name"))
    end)

    it("hides its metatable", function()
      local env = new()
      assert.is_false(run(env, "return getmetatable(_G)"))
      assert.has_error(function() run(env, "setmetatable(_G, {})") end)
    end)
  end)

  describe("library copies", function()
    it("string.upper = nil inside does not change the runtime's string.upper", function()
      local env = new()
      run(env, "string.upper = nil; string.extra = 1")
      assert.equal(real_string_upper, string.upper)
      assert.is_nil(string.extra)
      assert.equal("A", ("a"):upper())
    end)

    it("string methods on values keep working after the copy is changed", function()
      local env = new()
      assert.equal("X", run(env, "string.upper = nil; return ('x'):upper()"))
    end)

    it("table, math, bit and coroutine are copies too", function()
      local env = new()
      run(env, "table.insert = nil; math.floor = nil; bit.band = nil; coroutine.wrap = nil")
      assert.equal(real_table_insert, table.insert)
      assert.equal(real_math_floor, math.floor)
      assert.is_function(bit.band)
      assert.is_function(coroutine.wrap)
    end)

    it("os and io are the sandbox's own tables", function()
      local env = new()
      run(env, "os.time = nil; io.open = nil")
      assert.is_function(os.time)
      assert.is_function(io.open)
    end)

    it("one sandbox's changes do not reach another", function()
      local a, b = new(), new()
      run(a, "string.upper = nil")
      assert.equal(real_string_upper, b.string.upper)
    end)

    it("getmetatable('') does not reveal the string metatable", function()
      local env = new()
      assert.is_false(run(env, "return getmetatable('')"))
    end)
  end)

  describe("print", function()
    it("goes to the log function, arguments joined by tabs", function()
      local env = new()
      run(env, "print('hello', 1, nil, true)")
      assert.same({ "hello\t1\tnil\ttrue" }, logged)
    end)

    it("with no arguments logs an empty line", function()
      local env = new()
      run(env, "print()")
      assert.same({ "" }, logged)
    end)

    it("uses tostring, including __tostring", function()
      local env = new()
      run(env, "print(setmetatable({}, { __tostring = function() return 'obj' end }))")
      assert.same({ "obj" }, logged)
    end)
  end)

  describe("require", function()
    it("loads a module from the pipeline's folder, in the sandbox", function()
      H.write(dir, "util.lua", "helper_global = true\nreturn { twice = function(x) return 2 * x end, name = ... }")
      local env = new()
      assert.equal(8, run(env, "return require('util').twice(4)"))
      assert.equal("util", run(env, "return require('util').name"))
      assert.is_true(env.helper_global)
      assert.is_nil(rawget(_G, "helper_global"))
    end)

    it("loads a dotted name from a subfolder", function()
      H.write(dir, "lib/fmt.lua", "return { id = 'lib.fmt' }")
      local env = new()
      assert.equal("lib.fmt", run(env, "return require('lib.fmt').id"))
    end)

    it("loads a module once and returns the same value", function()
      H.write(dir, "once.lua", "loads = (loads or 0) + 1\nreturn {}")
      local env = new()
      assert.is_true(run(env, "return require('once') == require('once')"))
      assert.equal(1, env.loads)
    end)

    it("returns true for a module that returns nothing", function()
      H.write(dir, "side.lua", "x = 1")
      local env = new()
      assert.is_true(run(env, "return require('side')"))
    end)

    it("gives each sandbox its own loaded modules", function()
      H.write(dir, "m.lua", "return {}")
      local a, b = new(), new()
      assert.are_not.equal(run(a, "return require('m')"), run(b, "return require('m')"))
    end)

    it("module globals cannot overwrite sandbox names either", function()
      H.write(dir, "bad.lua", "string = {}\nreturn 1")
      local env = new()
      assert.matches("cannot assign to global 'string'", fails(env, "return require('bad')"), 1, true)
    end)

    it("reports a module that is not in the folder", function()
      local env = new()
      local e = fails(env, "require('missing')")
      assert.matches("module 'missing' not found in the pipeline's folder", e, 1, true)
    end)

    it("refuses names that reach outside the folder", function()
      H.write(dir, "x.lua", "return 1")
      local env = new()
      for _, name in ipairs({ "../x", "/etc/passwd", "./x", "a/../x", ".x", "x.lua/.." }) do
        local e = fails(env, "require('" .. name .. "')")
        assert.matches("bad module name '" .. name .. "'", e, 1, true)
      end
      assert.matches("require needs a module name", fails(env, "require(1)"), 1, true)
    end)

    it("does not reach Lua's own module path", function()
      local env = new()
      -- lua/eddy/sandbox.lua is on package.path but not in the folder
      assert.matches("not found in the pipeline's folder", fails(env, "require('eddy.sandbox')"), 1, true)
      assert.matches("not found in the pipeline's folder", fails(env, "require('os')"), 1, true)
      assert.matches("not found in the pipeline's folder", fails(env, "require('io')"), 1, true)
      assert.matches("not found in the pipeline's folder", fails(env, "require('debug')"), 1, true)
    end)

    it("gives the built-in eddy, cjson, and the sandbox's own string, table, math, bit", function()
      local env = new()
      assert.equal(require("eddy"), run(env, "return require('eddy')"))
      assert.equal(require("cjson"), run(env, "return require('cjson')"))
      assert.equal(env.string, run(env, "return require('string')"))
      assert.equal(env.table, run(env, "return require('table')"))
      assert.equal(env.math, run(env, "return require('math')"))
      assert.equal(env.bit, run(env, "return require('bit')"))
    end)

    it("refuses ffi unless the config allows it", function()
      local env = new()
      local e = fails(env, "require('ffi')")
      assert.matches("require 'ffi' is not allowed in the sandbox", e, 1, true)
    end)

    it("gives ffi with ffi = true", function()
      local env = new({ ffi = true })
      assert.equal(require("ffi"), run(env, "return require('ffi')"))
    end)
  end)

  describe("io.open", function()
    it("reads a file in the folder, by relative or absolute path", function()
      H.write(dir, "data/words.txt", "alpha\nbeta\n")
      local env = new()
      assert.equal("alpha\nbeta\n", run(env, "local f = assert(io.open('data/words.txt')); local s = f:read('*a'); f:close(); return s"))
      assert.equal("alpha", run(env, "local f = assert(io.open('" .. dir .. "/data/words.txt', 'rb')); local s = f:read('*l'); f:close(); return s"))
    end)

    it("io.lines reads a file in the folder", function()
      H.write(dir, "l.txt", "a\nb\n")
      local env = new()
      assert.equal("a,b", run(env, "local t = {}; for l in io.lines('l.txt') do t[#t+1] = l end; return table.concat(t, ',')"))
    end)

    it("refuses to open for writing", function()
      H.write(dir, "w.txt", "keep")
      local env = new()
      for _, mode in ipairs({ "w", "a", "r+", "w+", "a+", "rb+", "wb" }) do
        local f, err = run(env, "return io.open('w.txt', '" .. mode .. "')")
        assert.is_nil(f, mode)
        assert.equal("the sandbox opens files read-only", err)
      end
      assert.is_false(H.exists(dir .. "/new.txt"))
      local f = io.open(dir .. "/w.txt"); assert.equal("keep", f:read("*a")); f:close()
    end)

    it("refuses files outside the folder", function()
      local env = new()
      for _, path in ipairs({ "/etc/passwd", "../x", "sub/../../x", dir .. "/../x", dir .. "-other/x" }) do
        local f, err = run(env, "return io.open('" .. path .. "')")
        assert.is_nil(f, path)
        assert.matches("the sandbox reads only inside", err, 1, true)
      end
      assert.has_error(function() run(env, "for l in io.lines('/etc/passwd') do end") end)
    end)
  end)

  describe("loadstring, load, loadfile, dofile", function()
    it("loadstring chunks run in the sandbox environment", function()
      local env = new()
      run(env, "local f = assert(loadstring('made_here = os.execute == nil; return debug'))\nresult = f()")
      assert.is_true(env.made_here)
      assert.is_nil(env.result)
      assert.is_nil(rawget(_G, "made_here"))
    end)

    it("loadstring chunks cannot assign sandbox globals", function()
      local env = new()
      assert.matches("cannot assign to global 'print'", fails(env, "loadstring('print = 1')()"), 1, true)
    end)

    it("loadstring returns nil and the message on a syntax error", function()
      local env = new()
      local f, err = run(env, "return loadstring('x = = 1', '=chunk')")
      assert.is_nil(f)
      assert.matches("^chunk:1:", err)
    end)

    it("load with a function runs in the sandbox environment", function()
      local env = new()
      run(env, [[
        local parts, i = { "via_load = ", "getfenv == nil" }, 0
        local f = assert(load(function() i = i + 1; return parts[i] end))
        f()]])
      assert.is_true(env.via_load)
    end)

    it("loadstring refuses precompiled bytecode (string.dump output)", function()
      -- LuaJIT does not verify bytecode: loading crafted bytecode reads and
      -- writes memory outside the sandbox.
      local env = new()
      local f, err = run(env, "return loadstring(string.dump(function() return 1 end))")
      assert.is_nil(f)
      assert.is_string(err)
    end)

    it("loadfile and dofile reach only the folder", function()
      H.write(dir, "conf.lua", "return { n = 7, no_exec = os.execute == nil }")
      local env = new()
      assert.equal(7, run(env, "return dofile('conf.lua').n"))
      assert.is_true(run(env, "return dofile('" .. dir .. "/conf.lua').no_exec"))
      local f, err = run(env, "return loadfile('/etc/passwd')")
      assert.is_nil(f)
      assert.matches("the sandbox loads files only inside", err, 1, true)
      assert.is_nil((run(env, "return loadfile('../conf.lua')")))
      assert.has_error(function() run(env, "dofile('/etc/passwd')") end)
    end)
  end)

  describe("symlinks out of the folder", function()
    local outside
    before_each(function()
      outside = H.tmpdir()
      H.write(outside, "secret.txt", "top secret\n")
      H.write(outside, "evil.lua", "return 'evil'\n")
      os.execute("ln -s '" .. outside .. "' '" .. dir .. "/out'")
      os.execute("ln -s '" .. outside .. "/evil.lua' '" .. dir .. "/evil.lua'")
      H.write(dir, "mine/data.txt", "mine\n")
      os.execute("ln -s mine '" .. dir .. "/alias'")
    end)
    after_each(function() H.rmdir(outside) end)

    it("io.open and io.lines refuse a file whose real place is outside, naming it", function()
      local env = new()
      local f, err = run(env, "return io.open('out/secret.txt')")
      assert.is_nil(f)
      assert.matches("out/secret.txt leads outside", err, 1, true)
      assert.matches("symlink", err)
      assert.matches("leads outside", fails(env, "for l in io.lines('out/secret.txt') do end"), 1, true)
      assert.is_nil((run(env, "return io.open(...)", dir .. "/out/secret.txt")))
    end)

    it("io.open and require refuse a FIFO (its open would wait for a writer forever)", function()
      os.execute("mkfifo '" .. dir .. "/pipe' '" .. dir .. "/fifo.lua'")
      local env = new()
      local f, err = run(env, "return io.open('pipe')")
      assert.is_nil(f)
      assert.matches("pipe is not a regular file", err, 1, true)
      assert.matches("fifo.lua is not a regular file", fails(env, "return require('fifo')"), 1, true)
    end)

    it("io.open follows a symlink that stays inside the folder", function()
      local env = new()
      assert.equal("mine\n", run(env, "local f = assert(io.open('alias/data.txt')); local s = f:read('*a'); f:close(); return s"))
    end)

    it("require, loadfile and dofile refuse a module that is a symlink to a file outside", function()
      local env = new()
      assert.matches("evil.lua leads outside", fails(env, "return require('evil')"), 1, true)
      local f, err = run(env, "return loadfile('evil.lua')")
      assert.is_nil(f)
      assert.matches("leads outside", err)
      assert.matches("leads outside", fails(env, "return dofile('evil.lua')"))
      assert.matches("leads outside", fails(env, "return require('out.evil')"))
    end)
  end)

  describe("coroutines", function()
    it("unbounded recursion through coroutine.wrap is a Lua error, not a crash", function()
      local env = new()
      local e = fails(env, "local function f() return coroutine.wrap(f)() end; f()")
      assert.matches("coroutines nested more than " .. sandbox.MAX_RESUME_DEPTH .. " deep", e, 1, true)
      e = fails(env, "local function f() local co = coroutine.create(f); local ok, e = coroutine.resume(co); error(e, 0) end; f()")
      assert.matches("nested more than", e)
    end)

    it("counts only what is nested: deep but bounded nesting works after a refusal, and yields pass through", function()
      local env = new()
      fails(env, "local function f() return coroutine.wrap(f)() end; f()")
      assert.equal(150, run(env, [[
        local function g(n) if n == 0 then return 0 end return coroutine.wrap(function() return 1 + g(n - 1) end)() end
        return g(150)]]))
      assert.same({ 1, 2, 3 }, run(env, [[
        local out = {}
        for v in coroutine.wrap(function() for i = 1, 3 do coroutine.yield(i) end end) do out[#out + 1] = v end
        return out]]))
      local ok, msg = run(env, "return coroutine.resume(coroutine.create(function() error('boom', 0) end))")
      assert.is_false(ok)
      assert.equal("boom", msg)
      assert.equal("boom", fails(env, "coroutine.wrap(function() error('boom', 0) end)()"))
    end)
  end)

  describe("load_user_file and loadin", function()
    it("load_user_file names a folder where a Lua file is expected", function()
      os.execute("mkdir -p '" .. dir .. "/pl.lua'")
      local _, load_user_file = new()
      local f, err = load_user_file("pl.lua", true)
      assert.is_nil(f)
      assert.matches("cannot read pl.lua: ", err, 1, true)
    end)

    it("load_user_file loads a file of the folder in the sandbox, named by its relative path", function()
      H.write(dir, "p.lua", "answer = 42\nreturn debug")
      local env, load_user_file = new()
      local f = assert(load_user_file("p.lua"))
      assert.is_nil(f())
      assert.equal(42, env.answer)
      assert.equal("@p.lua", debug.getinfo(f, "S").source)
    end)

    it("load_user_file reports a syntax error as file:line", function()
      H.write(dir, "bad.lua", "local a = 1\nlocal = 2\n")
      local _, load_user_file = new()
      local f, err = load_user_file("bad.lua")
      assert.is_nil(f)
      assert.matches("^bad%.lua:2:", err)
    end)

    it("load_user_file reports a missing file", function()
      local _, load_user_file = new()
      local f, err = load_user_file("nope.lua")
      assert.is_nil(f)
      assert.equal("cannot open nope.lua", err)
    end)

    it("loadin loads a file by path in the sandbox and names errors by chunkname", function()
      local path = H.write(dir, "ok.lua", "loaded_by_loadin = true")
      local bad = H.write(dir, "bad.lua", "x = = 1")
      local env, _, loadin = new()
      assert(loadin(path, "ok.lua"))()
      assert.is_true(env.loaded_by_loadin)
      local f, err = loadin(bad, "bad.lua")
      assert.is_nil(f)
      assert.matches("^bad%.lua:1:", err)
    end)
  end)
end)
