-- Savepoints: POST /savepoint and `eddy savepoint [--stop]` write a
-- self-contained folder (copies, not links) and print its path; `eddy run
-- --from-savepoint DIR` starts from it with a changed pipeline (a stateless
-- operator inserted, stateful operators matched by uid) and a changed
-- parallelism (key groups redistributed); a uid the new pipeline lacks is
-- refused unless --allow-non-restored-state, and so is another
-- max_parallelism.

local E = require("support.eddy")
local cjson = require("cjson")

local T = 1700000000000

local function pipeline(body)
  return 'local eddy = require("eddy")\nlocal p = eddy.pipeline()\n' .. body .. '\nreturn p\n'
end

-- a running total per user (uid "tot") and 10 s window counts per user (uid "per-10s")
local function script(extra)
  return pipeline([[
local keyed = p:source("in", { file = "in.jsonl", follow = true, timestamp = "ts" })
]] .. (extra or "") .. [[
 :key_by("u")
keyed:process{ process = function(v, ctx)
   local s = ctx.state:value("t")
   local t = (s:get() or 0) + v.n
   s:set(t)
   return ctx.key .. " total " .. t
 end }:uid("tot")
 :sink("totals", { file = "out/totals", format = "lines" })
keyed:window(eddy.window.tumbling("10s")):count():uid("per-10s")
 :map(function(n, ctx) return ctx.key .. " window " .. (ctx.window.start - ]] .. T .. [[) .. " " .. n end)
 :sink("windows", { file = "out/windows", format = "lines" })]])
end

local function rec(u, n, t) return string.format('{"u":"%s","n":%d,"ts":%d}\n', u, n, T + t) end

describe("savepoints", function()
  local dir, state_dir

  before_each(function()
    dir = E.tmpdir()
    state_dir = dir .. "/state/sp"
  end)
  after_each(E.cleanup)

  local function config(parallelism, extra)
    local c = { name = "sp", parallelism = parallelism, admin = { listen = "127.0.0.1:0" } }
    for k, v in pairs(extra or {}) do c[k] = v end
    E.write_config(dir, c)
  end

  local function start(args)
    local argv = { "run", dir .. "/eddy.conf.lua" }
    for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
    local d = E.start(argv, { timeout = 40 })
    local addr = E.admin_addr(state_dir)
    assert.truthy(addr, d:stderr())
    return d, addr
  end

  local function lines(sink)
    local t = E.sink_lines(dir .. "/out/" .. sink)
    table.sort(t)
    return t
  end

  -- the first run: totals and an open window, then a savepoint
  local function first_run()
    E.write(dir .. "/pipeline.lua", script())
    E.write(dir .. "/in.jsonl", rec("a", 1, 0) .. rec("b", 2, 1000) .. rec("a", 3, 2000))
    config(2)
    local d, addr = start()
    assert.truthy(E.wait_for(function() return #E.sink_lines(dir .. "/out/totals") == 3 end, 10), d:stderr())
    return d, addr
  end

  it("POST /savepoint answers the path of a self-contained folder: a manifest and copies of the state, no links", function()
    local d, addr = first_run()
    local code, body = E.curl("http://" .. addr .. "/savepoint", "POST")
    assert.are.equal(200, code, body)
    local path = cjson.decode(body).path
    assert.truthy(path and path:find("^/"), body)
    local m = cjson.decode(E.read(path .. "/manifest.json"))
    assert.is_true(m.savepoint)
    assert.is_true(m.committed)
    table.sort(m.uids)
    assert.are.same({ "per-10s", "tot" }, m.uids)
    -- every file of the state is a copy: its link count is 1
    local rc, out = E.shell("find " .. path .. "/db -type f -links +1 | wc -l")
    assert.are.equal(0, rc)
    assert.are.equal("0", out:match("%d+"))
    local _, n = E.shell("ls " .. path .. "/db | wc -l")
    assert.is_true(tonumber(n:match("%d+")) > 3)
    d:kill("TERM")
    assert.are.equal(0, d:wait(15), d:stderr())
  end)

  it("eddy savepoint --stop prints the folder and stops; a changed pipeline with another parallelism continues from it", function()
    local d, addr = first_run()
    local r = E.run({ "savepoint", "--admin", addr, "--stop" })
    assert.are.equal(0, r.code, r.stderr)
    local path = r.stdout:gsub("%s+$", "")
    assert.truthy(E.exists(path .. "/manifest.json"), r.stdout)
    assert.are.equal(0, d:wait(15), d:stderr())
    assert.are.same({ "a total 1", "a total 4", "b total 2" }, lines("totals"))
    assert.are.same({}, lines("windows"))                -- [0,10s) is open in the savepoint

    -- version 2: a stateless map inserted before the key_by, 3 keyed tasks;
    -- new input, and a record that closes [0,10s)
    E.write(dir .. "/pipeline.lua", script(" :map(function(v) v.n = v.n * 10; return v end)\n"))
    config(3)
    E.append(dir .. "/in.jsonl", rec("a", 1, 3000) .. rec("b", 1, 4000) .. rec("c", 1, 30000))
    local d2 = start({ "--from-savepoint", path })
    assert.truthy(E.wait_for(function() return #E.sink_lines(dir .. "/out/totals") == 6 end, 10), d2:stderr())
    assert.truthy(E.wait_for(function() return #E.sink_lines(dir .. "/out/windows") == 2 end, 10), d2:stderr())
    d2:kill("TERM")
    assert.are.equal(0, d2:wait(15), d2:stderr())
    assert.matches("restored savepoint " .. path, d2:stderr(), 1, true)
    -- no line read twice, the totals go on from the savepoint's
    assert.are.same({ "a total 1", "a total 14", "a total 4", "b total 12", "b total 2", "c total 10" }, lines("totals"))
    -- the window kept in the savepoint fired in the new run, with both runs' records
    assert.are.same({ "a window 0 3", "b window 0 2" }, lines("windows"))
  end)

  it("refuses a pipeline without an operator uid the savepoint has state of, naming it, unless --allow-non-restored-state", function()
    local d, addr = first_run()
    local r = E.run({ "savepoint", "--admin", addr, "--stop" })
    assert.are.equal(0, r.code, r.stderr)
    local path = r.stdout:gsub("%s+$", "")
    assert.are.equal(0, d:wait(15), d:stderr())

    E.write(dir .. "/pipeline.lua", (script():gsub(':uid%("per%-10s"%)', ':uid("per-minute")')))
    local refused = E.run({ "run", dir .. "/eddy.conf.lua", "--from-savepoint", path }, { timeout = 20 })
    assert.are.equal(2, refused.code, refused.stderr)
    assert.matches("operator uid 'per-10s'", refused.stderr, 1, true)
    assert.matches("--allow-non-restored-state", refused.stderr, 1, true)

    E.append(dir .. "/in.jsonl", rec("a", 5, 3000))
    local d2 = start({ "--from-savepoint", path, "--allow-non-restored-state" })
    assert.truthy(E.wait_for(function() return #E.sink_lines(dir .. "/out/totals") == 4 end, 10), d2:stderr())
    d2:kill("TERM")
    assert.are.equal(0, d2:wait(15), d2:stderr())
    assert.are.same({ "a total 1", "a total 4", "a total 9", "b total 2" }, lines("totals"))
  end)

  it("refuses a savepoint taken with another max_parallelism, saying so", function()
    local d, addr = first_run()
    local r = E.run({ "savepoint", "--admin", addr, "--stop" })
    assert.are.equal(0, r.code, r.stderr)
    local path = r.stdout:gsub("%s+$", "")
    assert.are.equal(0, d:wait(15), d:stderr())
    config(2, { max_parallelism = 64 })
    local refused = E.run({ "run", dir .. "/eddy.conf.lua", "--from-savepoint", path }, { timeout = 20 })
    assert.are.equal(2, refused.code, refused.stderr)
    assert.matches("taken with max_parallelism 128 and the config says 64", refused.stderr, 1, true)
  end)

  it("eddy savepoint exits 1 with a message when nothing listens at --admin", function()
    local r = E.run({ "savepoint", "--admin", "127.0.0.1:1" })
    assert.are.equal(1, r.code)
    assert.matches("no answer from 127.0.0.1:1", r.stderr, 1, true)
  end)
end)
