-- Event time that depends on neither parallelism nor stops: a keyed task
-- sees its source's watermark as it stood before each record (whichever task
-- the records in between went to), a SIGTERM never advances event time, and
-- stop-with-savepoint makes the savepoint the final state.
local E = require("support.eddy")
local crash = require("support.crash")

local T0 = 1700000000000

-- runs dir's config to its end; its stdout lines, sorted
local function run_sorted(dir)
  local r = E.run_config(dir, { timeout = 240 })
  assert(r.code == 0, "eddy failed (" .. tostring(r.code) .. "): " .. crash.tail(r.stderr))
  return E.sorted(E.lines(r.stdout))
end

describe("event time across keyed tasks", function()
  local dir
  before_each(function() dir = E.tmpdir() end)
  after_each(E.cleanup)

  it("gives the contract's firings for a@0 e@15000 a@5000 at parallelism 1, 2 and 4", function()
    E.write(dir .. "/in.jsonl", string.format('{"t":%d,"k":"a"}\n{"t":%d,"k":"e"}\n{"t":%d,"k":"a"}\n',
      T0, T0 + 15000, T0 + 5000))
    E.write(dir .. "/pipeline.lua", [[
local eddy = require("eddy")
local p = eddy.pipeline()
p:source("ev", { file = "in.jsonl", timestamp = "t", watermark = eddy.watermark.monotonic() })
 :key_by("k")
 :window(eddy.window.tumbling("10s"), { lateness = "10s" })
 :count()
 :map(function(n, ctx) return ctx.key .. " " .. ctx.window.firing .. " " .. n end)
 :sink("out", { stdout = true, format = "lines" })
return p
]])
    for _, par in ipairs({ 1, 2, 4 }) do
      E.write_config(dir, { parallelism = par, threads = 2 })
      os.execute("rm -rf " .. dir .. "/state")
      assert.are.same({ "a late 2", "a on_time 1", "e on_time 1" }, run_sorted(dir), "parallelism " .. par)
    end
  end)

  it("shows a keyed record the watermark before it, and fires an event-time timer before the record it passes", function()
    E.write(dir .. "/in.jsonl", string.format('{"t":%d,"k":"a"}\n{"t":%d,"k":"e"}\n{"t":%d,"k":"a"}\n',
      T0, T0 + 15000, T0 + 5000))
    E.write(dir .. "/pipeline.lua", string.format([[
local eddy = require("eddy")
local p = eddy.pipeline()
local T0 = %d
local function wm(ctx) return ctx.watermark == -math.huge and "none" or tostring(ctx.watermark - T0) end
p:source("ev", { file = "in.jsonl", timestamp = "t", watermark = eddy.watermark.monotonic() })
 :key_by("k")
 :process{
   process = function(v, ctx)
     if ctx.ts == T0 then ctx.timers:event(T0 + 10000) end
     return "record " .. ctx.key .. " " .. (ctx.ts - T0) .. " wm " .. wm(ctx)
   end,
   on_timer = function(ts, ctx) return "timer " .. ctx.key .. " " .. (ts - T0) .. " wm " .. wm(ctx) end,
 }
 :uid("proc")
 :filter(function(s, ctx) return ctx.key == "a" end)
 :sink("out", { stdout = true, format = "lines" })
return p
]], T0))
    for _, par in ipairs({ 1, 2, 4 }) do
      E.write_config(dir, { parallelism = par, threads = 2 })
      os.execute("rm -rf " .. dir .. "/state")
      local r = E.run_config(dir, { timeout = 60 })
      assert.are.equal(0, r.code, r.stderr)
      -- in this order: key a's outputs all come from one task
      assert.are.same({ "record a 0 wm none", "timer a 10000 wm 14999", "record a 5000 wm 14999" },
        E.lines(r.stdout), "parallelism " .. par)
    end
  end)

  -- a clickstream from several users in one file, up to 8 s out of order
  -- against a 2 s bound, so some records are late (within the lateness or
  -- past it): the firings, late ones included, are the same at every
  -- parallelism; with no late record they are the oracle's sessions
  local function clicks(rng, n, jitter)
    local rows, t = {}, T0
    for i = 1, n do
      t = t + rng(400)
      if rng(50) == 0 then t = t + 4000 + rng(6000) end      -- a pause: sessions end
      local ts = t - rng(jitter + 1)
      rows[i] = { user = "u" .. rng(37), ts = ts }
    end
    return rows
  end

  local SESSIONS = [[
local eddy = require("eddy")
local p = eddy.pipeline()
local w = p:source("clicks", { file = "in.jsonl", timestamp = "ts", watermark = eddy.watermark.bounded("2s") })
 :key_by("user")
 :window(eddy.window.session("3s"), { lateness = "%s", late = "late" })
w:count()
 :map(function(n, ctx) return table.concat({ ctx.key, ctx.window.start, ctx.window["end"], ctx.window.firing, n }, " ") end)
 :sink("out", { stdout = true, format = "lines" })
p:side("late"):map(function(v) return "late " .. v.user .. " " .. v.ts end):sink("late", { stdout = true, format = "lines" })
return p
]]

  local function write_clicks(rows)
    local lines = {}
    for i, r in ipairs(rows) do lines[i] = string.format('{"user":"%s","ts":%d}', r.user, r.ts) end
    E.write(dir .. "/in.jsonl", table.concat(lines, "\n") .. "\n")
  end

  it("gives session windows over a clickstream equal to an oracle at parallelism 1, 2, 4 and 8", function()
    local rows = clicks(crash.rng(7), 3000, 1500)          -- out of order within the bound: none late
    write_clicks(rows)
    E.write(dir .. "/pipeline.lua", string.format(SESSIONS, "0s"))
    -- the oracle: per user, times sorted, split where the gap is 3 s or more
    local by_user = {}
    for _, r in ipairs(rows) do
      by_user[r.user] = by_user[r.user] or {}
      table.insert(by_user[r.user], r.ts)
    end
    local want = {}
    for user, ts in pairs(by_user) do
      table.sort(ts)
      local start, last, n = ts[1], ts[1], 0
      for _, t in ipairs(ts) do
        if t - last >= 3000 then
          want[#want + 1] = table.concat({ user, start, last + 3000, "on_time", n }, " ")
          start, n = t, 0
        end
        last, n = t, n + 1
      end
      want[#want + 1] = table.concat({ user, start, last + 3000, "on_time", n }, " ")
    end
    table.sort(want)
    for _, par in ipairs({ 1, 2, 4, 8 }) do
      E.write_config(dir, { parallelism = par, threads = 2 })
      os.execute("rm -rf " .. dir .. "/state")
      local got = run_sorted(dir)
      if table.concat(got, "\n") ~= table.concat(want, "\n") then
        local first
        for i = 1, math.max(#got, #want) do
          if got[i] ~= want[i] then first = tostring(got[i]) .. " vs " .. tostring(want[i]); break end
        end
        error("parallelism " .. par .. ": " .. #got .. " firings, the oracle has " .. #want
          .. "; first difference: " .. first)
      end
    end
  end)

  it("gives the same session firings, late ones and late records included, at parallelism 1, 2, 4 and 8", function()
    write_clicks(clicks(crash.rng(11), 3000, 8000))         -- up to 8 s out of order: some late
    E.write(dir .. "/pipeline.lua", string.format(SESSIONS, "2s"))
    local ref
    for _, par in ipairs({ 1, 2, 4, 8 }) do
      E.write_config(dir, { parallelism = par, threads = 2 })
      os.execute("rm -rf " .. dir .. "/state")
      local got = run_sorted(dir)
      if not ref then
        ref = got
        local late, firings = 0, 0
        for _, l in ipairs(got) do if l:match("^late ") then late = late + 1 elseif l:match(" late ") then firings = firings + 1 end end
        assert(late > 0 and firings > 0, "the input should have late records and late firings")
      else
        local diff = {}
        local a, b = {}, {}
        for _, l in ipairs(ref) do a[l] = (a[l] or 0) + 1 end
        for _, l in ipairs(got) do b[l] = (b[l] or 0) + 1 end
        for l, c in pairs(a) do if (b[l] or 0) ~= c then diff[#diff + 1] = "-" .. l end end
        for l, c in pairs(b) do if (a[l] or 0) ~= c then diff[#diff + 1] = "+" .. l end end
        table.sort(diff)
        assert(#diff == 0, "parallelism " .. par .. " differs from 1 in " .. #diff .. " lines: "
          .. table.concat(diff, "\n", 1, math.min(#diff, 10)))
      end
    end
  end)
end)

describe("a stop", function()
  local dir
  before_each(function() dir = E.tmpdir() end)
  after_each(E.cleanup)

  -- two files with the same timestamps, one read slower (longer lines): at
  -- any moment the fast partition's watermark is ahead of the slow one's
  -- slow: every record costs ~0.1 ms of CPU (the job lasts seconds however
  -- fast eddy is, so a request can come in the middle of it)
  local function two_partitions(n, slow)
    local pad = string.rep("x", 600)
    local a, b = {}, {}
    for i = 1, n do
      local ts = T0 + i * 10
      a[i] = string.format('{"ts":%d,"k":"k%d"}', ts, i % 7)
      b[i] = string.format('{"ts":%d,"k":"k%d","pad":"%s"}', ts, i % 5, pad)
    end
    E.write(dir .. "/in/a.jsonl", table.concat(a, "\n") .. "\n")
    E.write(dir .. "/in/b.jsonl", table.concat(b, "\n") .. "\n")
    E.write(dir .. "/pipeline.lua", [[
local eddy = require("eddy")
local p = eddy.pipeline()
p:source("ev", { file = "in/*.jsonl", timestamp = "ts", watermark = eddy.watermark.bounded("1s") })
 ]] .. (slow and ":map(function(v) local t = os.clock() + 0.0001; while os.clock() < t do end; return v end)" or "") .. [[
 :key_by("k")
 :window(eddy.window.tumbling("1s"))
 :count()
 :map(function(n, ctx) return ctx.key .. " " .. ctx.window.start .. " " .. n end)
 :uid("counts")
 :sink("out", { file = "out", format = "lines" })
return p
]])
  end

  -- every window of the job exactly once: the same rows as a run without stops
  local function same_rows(want, got, what)
    local d = crash.differences({ out = want }, { out = got }, { "out" })
    assert(d == "", what .. ":\n" .. d)
  end

  local function rows(lines)
    local r = { rows = {}, n = 0 }
    for _, l in ipairs(lines) do r.rows[l] = (r.rows[l] or 0) + 1; r.n = r.n + 1 end
    return r
  end

  for _, guarantee in ipairs({ "at_least_once", "exactly_once" }) do
    it("never advances event time, so SIGTERM at many points and a restart emit each window once (" .. guarantee .. ")", function()
      two_partitions(40000)
      local conf = { parallelism = 2, threads = 2, guarantee = guarantee, checkpoint = { interval = "300ms" } }
      E.write_config(dir, conf)
      local t0 = E.now()
      local r = E.run_config(dir, { timeout = 240 })
      assert.are.equal(0, r.code, r.stderr)
      local took = E.now() - t0
      local want = rows(E.sink_lines(dir .. "/out"))
      assert(want.n > 1000, "the reference run wrote " .. want.n .. " rows")
      os.execute("rm -rf " .. dir .. "/out " .. dir .. "/state")
      -- stops at moments spread over the reference run's length
      local rng, stopped = crash.rng(20), 0
      for _ = 1, 6 do
        local d = E.start({ "run", dir .. "/eddy.conf.lua" }, { timeout = 240 })
        E.sleep(took * (0.15 + rng(50) / 100))
        if d:alive() then stopped = stopped + 1 end
        d:kill("TERM")
        local code = d:wait(120)
        assert(code == 0, "a SIGTERM stop exited " .. tostring(code) .. ": " .. crash.tail(d:stderr()))
        if E.exists(dir .. "/state/spec/finished") then break end
      end
      assert(stopped > 0, "no run was stopped before it finished")
      if not E.exists(dir .. "/state/spec/finished") then
        r = E.run_config(dir, { timeout = 240 })
        assert.are.equal(0, r.code, r.stderr)
      end
      same_rows(want, rows(E.sink_lines(dir .. "/out")), stopped .. " stops")
      -- a finished job run again is a new job: its output replaces the last one's
      r = E.run_config(dir, { timeout = 240 })
      assert.are.equal(0, r.code, r.stderr)
      same_rows(want, rows(E.sink_lines(dir .. "/out")), "the job run again")
    end)
  end

  it("with a savepoint (--stop) makes the savepoint the final state: resuming from it repeats and loses nothing", function()
    two_partitions(20000, true)
    E.write_config(dir, { parallelism = 2, threads = 2, guarantee = "exactly_once", checkpoint = { interval = "300ms" },
                          admin = { listen = "127.0.0.1:0" } })
    local r = E.run_config(dir, { timeout = 240 })
    assert.are.equal(0, r.code, r.stderr)
    local want = rows(E.sink_lines(dir .. "/out"))
    os.execute("rm -rf " .. dir .. "/out " .. dir .. "/state")
    local d = E.start({ "run", dir .. "/eddy.conf.lua" }, { timeout = 240 })
    local addr = E.admin_addr(dir .. "/state/spec", 30) or E.admin_addr(dir .. "/state", 1)
    assert(addr, "no admin address: " .. d:stderr())
    E.sleep(0.5)
    local sp = E.run({ "savepoint", "--admin", addr, "--stop" }, { timeout = 120 })
    assert(sp.code == 0, "savepoint --stop: " .. sp.stderr)
    local path = sp.stdout:match("(%S+)")
    assert.are.equal(0, d:wait(120))
    local before = #E.sink_lines(dir .. "/out")
    assert(before < want.n, "the job finished before the savepoint")
    r = E.run({ "run", dir .. "/eddy.conf.lua", "--from-savepoint", path }, { timeout = 240 })
    assert.are.equal(0, r.code, r.stderr)
    same_rows(want, rows(E.sink_lines(dir .. "/out")), "after resuming from " .. path)
  end)

  it("a second SIGTERM stops at once, even inside a long batch", function()
    local lines = {}
    for i = 1, 3000 do lines[i] = string.format('{"ts":%d}', T0 + i) end
    E.write(dir .. "/in.jsonl", table.concat(lines, "\n") .. "\n")
    E.write(dir .. "/pipeline.lua", [[
local eddy = require("eddy")
local p = eddy.pipeline()
p:source("ev", { file = "in.jsonl" })
 :map(function(v) local t = os.clock() + 0.05; while os.clock() < t do end; return v end)
 :sink("out", { file = "out", format = "json" })
return p
]])
    E.write_config(dir, {})
    local d = E.start({ "run", dir .. "/eddy.conf.lua" }, { timeout = 240 })
    assert(E.wait_for(function() return d:stderr():find("running spec") end, 30), d:stderr())
    E.sleep(0.5)
    d:kill("TERM")
    E.sleep(0.3)
    d:kill("TERM")
    -- the batch in progress has ~50 s of work left: a bound far below that,
    -- not a speed limit
    local code = d:wait(20)
    assert(code ~= nil, "still running 20 s after the second SIGTERM:\n" .. d:stderr())
    assert.are.equal(1, code)
    assert.truthy(d:stderr():find("stopping now without draining", 1, true))
  end)
end)
