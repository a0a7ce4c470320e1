-- Dry runs end to end (`eddy reload --dry-run`, POST /reload?dry_run=1): a
-- real daemon follows a file; the script on disk is changed without a
-- reload (reload.watch = false), and a dry run reports what the new version
-- would have done with the last records of each source partition, beside
-- what the running version does with them, from a snapshot of the state.
-- Each spec checks the answer against an oracle computed from the input,
-- and that the running version went on untouched.

local E = require("support.eddy")
local cjson = E.cjson

local function config(dir, extra)
  local c = {
    name = "dry", pipeline = "pipeline.lua", threads = 2, parallelism = 2,
    state = { dir = "state" }, admin = { listen = "127.0.0.1:0" }, reload = { watch = false },
  }
  for k, v in pairs(extra or {}) do c[k] = v end
  return E.write_config(dir, c)
end

local function get(addr, path)
  local code, body = E.curl("http://" .. addr .. path)
  local ok, doc = pcall(cjson.decode, body)
  return code, ok and doc or body
end

local function post(addr, path)
  local code, body = E.curl("http://" .. addr .. path, "POST")
  local ok, doc = pcall(cjson.decode, body)
  return code, ok and doc or body
end

local function source_in(addr)
  local _, st = get(addr, "/status")
  local n = 0
  for _, t in ipairs(st.tasks) do if t.source then n = n + t.records_in end end
  return n, st
end

local function start(dir)
  local d = E.start({ "run", dir .. "/eddy.conf.lua" }, { timeout = 90 })
  local addr = E.admin_addr(dir .. "/state", 10)
  assert(addr, "no admin.addr; stderr:\n" .. d:stderr())
  return d, addr
end

-- dry_run(addr, query): POST, then GET the result until it is there
local function dry_run(addr, query)
  local code, doc = post(addr, "/reload?dry_run=1" .. (query or ""))
  if code ~= 202 then return code, doc end
  assert.are.equal("/reload/dry-run/" .. doc.dry_run, doc.location)
  local rc, res
  assert(E.wait_for(function()
    rc, res = get(addr, doc.location)
    return rc ~= 202
  end, 30), "the dry run did not end")
  return rc, res
end

local function append_lines(path, from, to)
  local t = {}
  for i = from, to do t[#t + 1] = "line" .. i end
  E.append(path, table.concat(t, "\n") .. "\n")
end

local MAP = [[
local eddy = require("eddy")
local p = eddy.pipeline()
p:source("in", { file = "in.txt", format = "lines", follow = true })
 :map(function(v) %s end)
 :sink("out", { file = "out", format = "lines" })
return p
]]
local V1 = MAP:format('return v .. " a"')
-- v2 changes the output of every third line only
local V2 = MAP:format('local k = tonumber(v:match("%d+")) if k % 3 == 0 then return v .. " b" end return v .. " a"')
-- v3 raises on every fifth line
local V3 = MAP:format('local k = tonumber(v:match("%d+")) if k % 5 == 0 then error("five") end return v .. " a"')

describe("eddy reload --dry-run", function()
  after_each(function() E.cleanup() end)

  it("reports exactly the changed outputs of a changed map over a followed file, and the running output loses, repeats or changes no line", function()
    local dir = E.tmpdir()
    config(dir, { reload = { watch = false, dry_run_records = 200 } })
    E.write(dir .. "/pipeline.lua", V1)
    append_lines(dir .. "/in.txt", 1, 500)
    local d, addr = start(dir)
    assert(E.wait_for(function() return source_in(addr) >= 500 end, 20), "the source did not read 500 lines")
    E.write(dir .. "/pipeline.lua", V2)                  -- not reloaded: the watcher is off
    local total = 500
    for round = 1, 3 do
      append_lines(dir .. "/in.txt", total + 1, total + 100)
      total = total + 100
      assert(E.wait_for(function() return source_in(addr) >= total end, 20), "the source did not read every line")
      local n = round == 3 and 150 or 200
      local code, started = post(addr, "/reload?dry_run=1" .. (round == 3 and "&records=150" or ""))
      assert.are.equal(202, code, cjson.encode(started))
      assert.are.equal(n, started.records)
      -- the input keeps coming while the dry run runs: none of it is in the dry run
      append_lines(dir .. "/in.txt", total + 1, total + 30)
      local window_end = total
      total = total + 30
      local res
      assert(E.wait_for(function()
        code, res = get(addr, started.location)
        return code ~= 202
      end, 30), "the dry run did not end")
      assert.are.equal(200, code, cjson.encode(res))
      assert.are.equal(n, res.records)
      assert.are.equal(1, res.running_version)
      assert.are.equal(0, res.errors)
      local out = res.sinks.out
      -- the oracle: lines window_end - n + 1 .. window_end; the multiples of 3 among them change
      local want = {}
      for k = window_end - n + 1, window_end do
        if k % 3 == 0 then
          want[#want + 1] = { input = { source = "in", partition = 0, line = k, value = "line" .. k },
                              kind = "changed", old = { "line" .. k .. " a" }, new = { "line" .. k .. " b" } }
        end
      end
      assert.are.equal(#want, out.changed)
      assert.are.equal(n - #want, out.same)
      assert.are.equal(0, out.added)
      assert.are.equal(0, out.removed)
      for _, w in ipairs(want) do                 -- the byte offset of line k in the file
        local off = 0
        for i = 1, w.input.line - 1 do off = off + #("line" .. i) + 1 end
        w.input.offset = off
      end
      assert.are.same(want, out.differences)
    end
    append_lines(dir .. "/in.txt", total + 1, total + 50)
    total = total + 50
    assert(E.wait_for(function() return source_in(addr) >= total end, 20), "the source did not read every line")
    local _, st = get(addr, "/status")
    assert.are.equal(1, st.pipeline.version)            -- the running version was not touched
    d:kill("TERM")
    assert.are.equal(0, d:wait(20))
    local want = {}
    for i = 1, total do want[#want + 1] = "line" .. i .. " a" end
    table.sort(want)
    assert.are.same(want, E.sink_lines(dir .. "/out"))  -- every line once, as version 1 made it
    for _, f in ipairs(E.ls(dir .. "/state")) do assert.is_nil(f:match("^dry%-run"), f) end
  end)

  it("runs both versions from a snapshot of the keyed state: running totals continue from it in both and only the changed key differs", function()
    local dir = E.tmpdir()
    config(dir, { reload = { watch = false, dry_run_records = 30 } })
    local KEYED = [[
local eddy = require("eddy")
local p = eddy.pipeline()
p:source("in", { file = "in.txt", format = "lines", follow = true })
 :key_by(function(v) return v end)
 :process{ process = function(v, ctx)
   local total = ctx.state:value("total")
   local t = (total:get() or 0) + 1
   total:set(t)
   return ctx.key .. " " .. %s
 end }:uid("totals")
 :sink("out", { file = "out", format = "lines" })
return p
]]
    E.write(dir .. "/pipeline.lua", KEYED:format("t"))
    local keys = { "a", "b", "c" }
    local t = {}
    for i = 1, 90 do t[i] = keys[(i - 1) % 3 + 1] end
    E.write(dir .. "/in.txt", table.concat(t, "\n") .. "\n")
    local d, addr = start(dir)
    assert(E.wait_for(function() return #E.sink_lines(dir .. "/out") >= 90 end, 20), "the outputs did not come")
    assert(E.wait_for(function()
      local code, s = get(addr, "/state/totals/b")
      return code == 200 and s.total == 30
    end, 10), "the state of b is not 30")
    E.write(dir .. "/pipeline.lua", KEYED:format('(ctx.key == "b" and t * 10 or t)'))
    local code, res = dry_run(addr)
    assert.are.equal(200, code, cjson.encode(res))
    assert.are.equal(30, res.records)
    local out = res.sinks.out
    assert.are.equal(20, out.same)
    assert.are.equal(10, out.changed)
    -- the last 30 records hold 10 of each key; the totals go on from the snapshot's 30
    for i, diff in ipairs(out.differences) do
      assert.are.equal("b", diff.input.value)
      assert.are.same({ "b " .. (30 + i) }, diff.old)
      assert.are.same({ "b " .. ((30 + i) * 10) }, diff.new)
    end
    -- the daemon's state is the snapshot's, not the dry run's
    local _, s = get(addr, "/state/totals/b")
    assert.are.equal(30, s.total)
    d:kill("TERM")
    assert.are.equal(0, d:wait(20))
    assert.are.equal(90, #E.sink_lines(dir .. "/out"))
  end)

  it("replays the last records of every partition (two followed files) into keyed tasks at parallelism 2, each partition's in order", function()
    local dir = E.tmpdir()
    config(dir, { parallelism = 2, reload = { watch = false, dry_run_records = 15 } })
    local KEYED = [[
local eddy = require("eddy")
local p = eddy.pipeline()
p:source("in", { file = "in-*.txt", format = "lines", follow = true })
 :key_by(function(v) return v end)
 :process{ process = function(v, ctx)
   local total = ctx.state:value("total")
   local t = (total:get() or 0) + 1
   total:set(t)
   return ctx.key .. " " .. %s
 end }:uid("totals")
 :sink("out", { file = "out", format = "lines" })
return p
]]
    E.write(dir .. "/pipeline.lua", KEYED:format("t"))
    local function lines(keys)
      local t = {}
      for i = 1, 60 do t[i] = keys[(i - 1) % 3 + 1] end
      return table.concat(t, "\n") .. "\n"
    end
    E.write(dir .. "/in-0.txt", lines({ "a", "b", "c" }))
    E.write(dir .. "/in-1.txt", lines({ "d", "e", "f" }))
    local d, addr = start(dir)
    assert(E.wait_for(function() return #E.sink_lines(dir .. "/out") >= 120 end, 20), "the outputs did not come")
    assert(E.wait_for(function()
      local c1, b = get(addr, "/state/totals/b")
      local c2, e = get(addr, "/state/totals/e")
      return c1 == 200 and c2 == 200 and b.total == 20 and e.total == 20
    end, 10), "the totals are not 20")
    E.write(dir .. "/pipeline.lua", KEYED:format('((ctx.key == "b" or ctx.key == "e") and t * 10 or t)'))
    local code, res = dry_run(addr)
    assert.are.equal(200, code, cjson.encode(res))
    assert.are.equal(30, res.records)
    local out = res.sinks.out
    assert.are.equal(20, out.same)
    assert.are.equal(10, out.changed)
    local seen = { b = 0, e = 0 }
    local parts = {}
    for _, diff in ipairs(out.differences) do
      local k = diff.input.value
      assert.truthy(k == "b" or k == "e", k)
      seen[k] = seen[k] + 1
      parts[k] = parts[k] or diff.input.partition
      assert.are.equal(parts[k], diff.input.partition)           -- a key comes from one file
      assert.are.same({ k .. " " .. (20 + seen[k]) }, diff.old)   -- in that partition's order, from the snapshot's 20
      assert.are.same({ k .. " " .. ((20 + seen[k]) * 10) }, diff.new)
    end
    assert.are.same({ b = 5, e = 5 }, seen)
    assert.are_not.equal(parts.b, parts.e)
    d:kill("TERM")
    assert.are.equal(0, d:wait(20))
  end)

  it("replays a Kafka source's messages with their keys, headers, partitions and offsets: the running version's replayed outputs are what it printed live", function()
    local dir = E.tmpdir()
    local mock = E.start({ "kafka-mock", "--topic", "in:2" }, { timeout = 90 })
    local boot = E.wait_for(function() return mock:stdout():match("^(127%.0%.0%.1:%d+)\n") end, 10)
    assert(boot, "the mock broker did not start: " .. mock:stderr())
    local function produce(lines, partition)
      E.write(dir .. "/produce.txt", table.concat(lines, "\n") .. "\n")
      assert.are.equal(0, E.shell(string.format("timeout 20 kcat -P -b %s -t in -p %d -K '\t' -H origin=test < %s",
        boot, partition, E.quote(dir .. "/produce.txt"))))
    end
    local KAFKA = [[
local eddy = require("eddy")
local p = eddy.pipeline()
p:source("in", { kafka = "in", format = "json" })
 :map(function(v, ctx)
   local tag = %s
   return string.format("%%s|%%s|%%d|%%d|%%s|%%s", v.w, tostring(ctx.key), ctx.partition, ctx.offset,
                        tostring(ctx.headers.origin), tag)
 end)
 :sink("out", { stdout = true, format = "lines" })
return p
]]
    E.write(dir .. "/pipeline.lua", KAFKA:format('"v1"'))
    config(dir, { kafka = { ["bootstrap.servers"] = boot, ["session.timeout.ms"] = "6000",
                            ["heartbeat.interval.ms"] = "500" },
                  reload = { watch = false, dry_run_records = 10 } })
    local p0, p1 = {}, {}
    for i = 1, 12 do p0[i] = "k" .. i .. '\t{"w":"a' .. i .. '"}' end
    for i = 1, 4 do p1[i] = "j" .. i .. '\t{"w":"b' .. i .. '"}' end
    produce(p0, 0)
    produce(p1, 1)
    local d, addr = start(dir)
    local live
    assert(E.wait_for(function()
      live = E.lines(d:stdout())
      return #live >= 16
    end, 30), "the daemon did not print 16 lines: " .. d:stderr())
    local printed = {}
    for _, l in ipairs(live) do printed[l] = true end
    E.write(dir .. "/pipeline.lua", KAFKA:format('ctx.partition == 1 and "v2" or "v1"'))
    local code, res = dry_run(addr)
    assert.are.equal(200, code, cjson.encode(res))
    assert.are.equal(14, res.records)                   -- the last 10 of partition 0, the 4 of partition 1
    local out = res.sinks.out
    assert.are.equal(4, out.changed)
    assert.are.equal(10, out.same)
    for i, diff in ipairs(out.differences) do
      assert.are.equal(1, diff.input.partition)
      assert.are.equal("j" .. i, diff.input.key)
      assert.are.same({ w = "b" .. i }, diff.input.value)
      local want = string.format("b%d|j%d|1|%d|test|v1", i, i, i - 1)
      assert.are.same({ want }, diff.old)
      assert.is_true(printed[want], want .. " was not printed live")
      assert.are.same({ (want:gsub("v1$", "v2")) }, diff.new)
    end
    d:kill("TERM")
    assert.are.equal(0, d:wait(20))
  end)

  it("counts the records the new version sends to the error policy, even under on_error = fail, and fails no task", function()
    local dir = E.tmpdir()
    config(dir, { on_error = "fail", reload = { watch = false, dry_run_records = 100 } })
    E.write(dir .. "/pipeline.lua", V1)
    append_lines(dir .. "/in.txt", 1, 100)
    local d, addr = start(dir)
    assert(E.wait_for(function() return source_in(addr) >= 100 end, 20))
    E.write(dir .. "/pipeline.lua", V3)
    local r = E.run({ "reload", "--admin", addr, "--dry-run" })
    assert.are.equal(0, r.code, r.stderr)
    local res = cjson.decode(r.stdout)
    assert.are.equal(100, res.records)
    assert.are.equal(20, res.errors)
    assert.are.equal(0, res.running_errors)
    assert.are.equal(20, #res.error_records)
    for _, e in ipairs(res.error_records) do assert.are.equal(0, tonumber(e.value:match("%d+")) % 5) end
    assert.are.equal(20, res.sinks.out.removed)
    assert.are.equal(80, res.sinks.out.same)
    for _, diff in ipairs(res.sinks.out.differences) do
      assert.is_true(diff.error)
      assert.are.same({}, diff.new)
    end
    assert.is_true(d:alive())
    local _, st = get(addr, "/status")
    for _, t in ipairs(st.tasks) do assert.are.equal("running", t.status) end
    assert.are.same(cjson.null, st.pipeline.last_reload_error)
    assert.is_nil(E.exists(dir .. "/state/dead-letter.jsonl") and "dead letters written" or nil)
  end)

  it("refuses what a reload refuses (422, exit 1) and leaves the running version as it was", function()
    local dir = E.tmpdir()
    config(dir)
    E.write(dir .. "/pipeline.lua", V1)
    append_lines(dir .. "/in.txt", 1, 10)
    local d, addr = start(dir)
    assert(E.wait_for(function() return source_in(addr) >= 10 end, 20))
    -- a syntax error
    E.write(dir .. "/pipeline.lua", V1:gsub("return p", "return p end"))
    local code, res = dry_run(addr)
    assert.are.equal(422, code)
    assert.truthy(res.error:match("pipeline%.lua:%d+"), res.error)
    local r = E.run({ "reload", "--admin", addr, "--dry-run", "--records", "5" })
    assert.are.equal(1, r.code)
    assert.truthy(r.stderr:match("422"), r.stderr)
    assert.truthy(r.stderr:match("pipeline%.lua:%d+"), r.stderr)
    -- a change a reload cannot make: another input file
    E.write(dir .. "/pipeline.lua", (V1:gsub('file = "in.txt"', 'file = "other.txt"')))
    code, res = dry_run(addr)
    assert.are.equal(422, code)
    assert.truthy(res.error:match("in%.txt") or res.error:match("other%.txt"), res.error)
    -- records out of bounds
    E.write(dir .. "/pipeline.lua", V1)
    code, res = dry_run(addr, "&records=1001")
    assert.are.equal(400, code)
    assert.truthy(res.error:match("dry_run_records"), res.error)
    local _, st = get(addr, "/status")
    assert.are.equal(1, st.pipeline.version)
    assert.are.same(cjson.null, st.pipeline.last_reload_error)   -- a dry run is no reload
    assert.is_true(d:alive())
  end)

  it("is refused while a canary runs (409), and runs once it was rolled back", function()
    local dir = E.tmpdir()
    config(dir, { parallelism = 2 })
    local KEYMAP = MAP:gsub(":map", ":key_by(function(v) return v end)\n :map")
    E.write(dir .. "/pipeline.lua", KEYMAP:format('return v .. " a"'))
    append_lines(dir .. "/in.txt", 1, 10)
    local _, addr = start(dir)
    assert(E.wait_for(function() return source_in(addr) >= 10 end, 20))
    E.write(dir .. "/pipeline.lua", KEYMAP:format('local k = tonumber(v:match("%d+")) if k % 3 == 0 then return v .. " b" end return v .. " a"'))
    local code, res = post(addr, "/reload?canary=1")
    assert.are.equal(200, code, cjson.encode(res))
    code, res = dry_run(addr)
    assert.are.equal(409, code)
    assert.truthy(res.error:match("a canary of version 2 is running"), res.error)
    code, res = post(addr, "/reload?rollback=1")
    assert.are.equal(200, code, cjson.encode(res))
    code, res = dry_run(addr)
    assert.are.equal(200, code, cjson.encode(res))
    assert.are.equal(10, res.records)
    assert.are.equal(3, res.sinks.out.changed)         -- lines 3, 6 and 9
  end)

  it("is refused when reload.dry_run_records = 0 turns the ring off", function()
    local dir = E.tmpdir()
    config(dir, { reload = { watch = false, dry_run_records = 0 } })
    E.write(dir .. "/pipeline.lua", V1)
    append_lines(dir .. "/in.txt", 1, 10)
    local _, addr = start(dir)
    assert(E.wait_for(function() return source_in(addr) >= 10 end, 20))
    E.write(dir .. "/pipeline.lua", V2)
    local code, res = dry_run(addr)
    assert.are.equal(422, code)
    assert.truthy(res.error:match("reload%.dry_run_records is 0"), res.error)
    local r = E.run({ "reload", "--admin", addr, "--dry-run" })
    assert.are.equal(1, r.code)
    assert.truthy(r.stderr:match("dry runs are off"), r.stderr)
  end)

  it("needs the admin token as POST /reload does", function()
    local dir = E.tmpdir()
    local token = "0123456789abcdef-dry"
    config(dir, { admin = { listen = "127.0.0.1:0", token = token } })
    E.write(dir .. "/pipeline.lua", V1)
    append_lines(dir .. "/in.txt", 1, 10)
    local _, addr = start(dir)
    assert(E.wait_for(function() return source_in(addr) >= 10 end, 20))
    E.write(dir .. "/pipeline.lua", V2)
    local code = post(addr, "/reload?dry_run=1")
    assert.are.equal(401, code)
    local r = E.run({ "reload", "--admin", addr, "--dry-run", "--token", token })
    assert.are.equal(0, r.code, r.stderr)
    local res = cjson.decode(r.stdout)
    assert.are.equal(10, res.records)
    assert.are.equal(3, res.sinks.out.changed)
  end)
end)
