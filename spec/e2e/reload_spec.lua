-- Hot reload end to end: a running `eddy run` swaps its pipeline script for
-- a new version on a file change, SIGHUP, POST /reload and `eddy reload`,
-- while a writer process keeps appending to a followed input file.  Every
-- input line must come out exactly once, tagged by the one version that
-- processed it; refused versions never run and consume no version number.
--
-- Every wait here is bounded (E.wait_for with a deadline), and after_each
-- kills the writer and the daemon even when a spec failed.

local E = require("support.eddy")
local cjson = E.cjson

-- ---- pipeline scripts ---------------------------------------------------------

-- Every version of the script is padded to this many bytes, so that a
-- version can be written over the old one in place (see write_quietly).
local SCRIPT_SIZE = 2048

local function pad(text)
  assert(#text < SCRIPT_SIZE - 4, "script too long for SCRIPT_SIZE")
  return text .. "--" .. string.rep("-", SCRIPT_SIZE - #text - 3) .. "\n"
end

-- script(tag, o): the pipeline of these specs.  One followed file, fanned out
-- to (1) a key_by on the line's last digit and a map that tags each record
-- with ctx.version, `tag` and a count kept in a module-level local (it starts
-- again at 1 in every new VM), sunk to out/; (2) a key_by to one key and a
-- 1 s tumbling window counting records (uid "w"), sunk to counts/.  (The
-- watermark trails the ingest time by 1 ms: with the default one, equal to
-- the largest timestamp, a record sharing the last millisecond of a window
-- with the record before it is dropped as late — a bug of its own, not a
-- reload's.)
-- o (all optional) changes single lines, so that the broken versions differ
-- from the good ones in one place: line4 (free for a fault), source (its
-- name), file, format,
-- source_opts (appended to the source's options), key (the key_by of branch
-- 1, "" for none), out_sink (branch 1's sink), uid (the window's), extra (a
-- line after the branches), slow (seconds each record of branch 1 takes,
-- busy-waiting)
local function script(tag, o)
  o = o or {}
  local L = {
    'local eddy = require("eddy")',                                             -- 1
    'local p = eddy.pipeline()',                                                -- 2
    'local src = p:source("' .. (o.source or "in") .. '", { file = "' .. (o.file or "in.txt") .. '", format = "' .. (o.format or "lines")
      .. '", follow = true, timestamp = "ingest", watermark = eddy.watermark.bounded("1ms")'
      .. (o.source_opts or "") .. ' })',                                        -- 3
    o.line4 or '-- (line 4: where a broken version puts its fault)',            -- 4
    'local seen = 0',                                                           -- 5
    'src' .. (o.key or ':key_by(function(v) return v:sub(-1) end)'),            -- 6
    '   :map(function(v, ctx)',                                                 -- 7
    '     ' .. (o.slow and ('local t = os.clock() + ' .. o.slow .. ' while os.clock() < t do end') or ''), -- 8
    '     seen = seen + 1',                                                     -- 9
    '     return v .. " v" .. ctx.version .. " ' .. tag .. ' " .. seen .. " " .. ctx.ts', -- 10
    '   end)',                                                                  -- 11
    '   ' .. (o.out_sink or ':sink("out", { file = "out", format = "lines" })'), -- 12
    'src:key_by(function() return "all" end)',                                  -- 13
    '   :window(eddy.window.tumbling("1s")):count():uid("' .. (o.uid or "w") .. '")', -- 14
    '   :map(function(n, ctx) return ctx.window.start .. " " .. n end)',        -- 15
    '   :sink("counts", { file = "counts", format = "lines" })',                -- 16
    o.extra or '',                                                              -- 17
    'return p',                                                                 -- 18
  }
  return pad(table.concat(L, "\n") .. "\n")
end

-- ---- the daemon and its admin API ----------------------------------------------

local function config(dir, extra)
  local c = {
    name = "rl", pipeline = "pipeline.lua", threads = 2, parallelism = 2,
    state = { dir = "state" }, admin = { listen = "127.0.0.1:0" },
  }
  for k, v in pairs(extra or {}) do c[k] = v end
  return E.write_config(dir, c)
end

local function get_json(addr, path)
  local code, body = E.curl("http://" .. addr .. path)
  assert.are.equal(200, code, "GET " .. path .. ": " .. tostring(body))
  return cjson.decode(body)
end

local function status(addr) return get_json(addr, "/status") end

-- post(addr, path): HTTP status and the decoded JSON answer
local function post(addr, path)
  local code, body = E.curl("http://" .. addr .. path, "POST")
  local ok, doc = pcall(cjson.decode, body)
  return code, ok and doc or body
end

local function metrics(addr)
  local code, body = E.curl("http://" .. addr .. "/metrics")
  assert.are.equal(200, code)
  return body
end

-- samples(text, name): { [labels] = value } of metric `name` in /metrics text
local function samples(text, name)
  local out = {}
  for labels, v in ("\n" .. text):gmatch("\n" .. name .. "({[^}\n]*}) (%S+)") do out[labels] = tonumber(v) end
  return out
end

-- reload counts from /metrics: ok, error
local function reload_counts(addr)
  local m = samples(metrics(addr), "eddy_reloads_total")
  return m['{result="ok"}'], m['{result="error"}']
end

-- records read by the source tasks, and taken in by the keyed tasks of branch 1
local function source_in(st)
  local n = 0
  for _, t in ipairs(st.tasks) do if t.source then n = n + t.records_in end end
  return n
end
local function keyed1_in(st)
  local n = 0
  for _, t in ipairs(st.tasks) do if t.stage == "keyed1" then n = n + t.records_in end end
  return n
end

-- settled(st, v): version v is the pipeline's and every running task's, and
-- the rollout is over
local function settled(st, v)
  if st.pipeline.version ~= v or st.pipeline.reloading ~= false then return false end
  for _, t in ipairs(st.tasks) do
    if t.status == "running" and t.version ~= v then return false end
  end
  return true
end

-- wait_settled(addr, v[, timeout]): waits for settled(); the last status
local function wait_settled(addr, v, timeout)
  local st
  local ok = E.wait_for(function() st = status(addr); return settled(st, v) end, timeout or 10)
  assert(ok, "version " .. v .. " did not settle; status: " .. cjson.encode(st and st.pipeline or {}))
  return st
end

-- wait_progress(addr, n[, timeout]): waits until the source tasks have read
-- n more records than now (the running version keeps processing)
local function wait_progress(addr, n, timeout)
  local from = source_in(status(addr))
  local ok = E.wait_for(function() return source_in(status(addr)) >= from + n end, timeout or 10)
  assert(ok, "no progress: the source did not read " .. n .. " more records")
end

-- start(dir[, timeout]): the daemon on dir/eddy.conf.lua, and its admin address
local function start(dir, timeout)
  local d = E.start({ "run", dir .. "/eddy.conf.lua" }, { timeout = timeout or 60 })
  local addr = E.admin_addr(dir .. "/state", 10)
  assert(addr, "no admin.addr; stderr:\n" .. d:stderr())
  return d, addr
end

-- ---- writing the script ---------------------------------------------------------

-- Descriptors opened by write_quietly; closed in after_each, once the daemon
-- is gone (closing one would be a change the watcher reports).
local held = {}

-- write_quietly(path, text): replaces the script's bytes in place through a
-- descriptor that stays open, so that the file watcher sees no change (it
-- reacts to a file closed after writing, created, renamed or deleted — what
-- editors do — and not to each write).  This lets the specs change the
-- script under a daemon that watches its folder and trigger the reload by
-- SIGHUP or HTTP instead.  Every version has the same size (pad).
local function write_quietly(path, text)
  assert(#text == SCRIPT_SIZE)
  local f = assert(io.open(path, "r+b"))
  f:setvbuf("no")
  assert(f:seek("set", 0))
  assert(f:write(text))
  assert(f:flush())
  held[#held + 1] = f
end

-- write_renamed(path, text): what many editors do: write a temporary file
-- beside it, then rename it over the script
local function write_renamed(path, text)
  E.write(path .. ".tmp", text)
  assert(os.rename(path .. ".tmp", path))
end

-- ---- the writer process ---------------------------------------------------------

-- Appends "line<N>" lines (N = 1, 2, ...) to a file in batches of `batch`
-- lines, one write and flush per batch, sleeping `usec` between batches,
-- until the stop file appears or `max` lines are written; then writes the
-- number of lines to the count file.
local WRITER = [[
local ffi = require("ffi")
ffi.cdef("int usleep(unsigned int usec);")
local path, stop, count = arg[1], arg[2], arg[3]
local batch, usec, max = tonumber(arg[4]), tonumber(arg[5]), tonumber(arg[6])
local f = assert(io.open(path, "ab"))
f:setvbuf("full", 1048576)
local n = 0
while n < max do
  local s = io.open(stop, "rb")
  if s then s:close() break end
  local t = {}
  for i = 1, math.min(batch, max - n) do t[i] = "line" .. (n + i) .. "\n" end
  n = n + #t
  f:write(table.concat(t))
  f:flush()
  ffi.C.usleep(usec)
end
f:close()
local c = assert(io.open(count .. ".tmp", "wb"))
c:write(n, "\n")
c:close()
assert(os.rename(count .. ".tmp", count))
]]

local writers = {}

-- start_writer(dir, batch, usec, max): a writer appending to dir/in.txt (its
-- own files are in another folder)
local function start_writer(dir, batch, usec, max)
  local input = dir .. "/in.txt"
  dir = E.tmpdir()              -- not beside the script: a .lua file there would be part of the pipeline
  local w = { dir = dir, stop = dir .. "/writer.stop", count = dir .. "/writer.count" }
  E.write(dir .. "/writer.lua", WRITER)
  -- timeout(1) bounds its life should everything else fail; $! is its pid
  os.execute(string.format("timeout -k 2 90 luajit %s %s %s %s %d %d %d </dev/null >%s 2>&1 & echo $! >%s",
    E.quote(dir .. "/writer.lua"), E.quote(input), E.quote(w.stop), E.quote(w.count),
    batch, usec, max, E.quote(dir .. "/writer.log"), E.quote(dir .. "/writer.pid")))
  w.pid = tonumber((E.wait_for(function() return E.read(dir .. "/writer.pid") end, 5) or ""):match("%d+"))
  assert(w.pid, "the writer did not start")
  writers[#writers + 1] = w
  return w
end

-- stop_writer(w): stops it and returns the number of lines it wrote
local function stop_writer(w)
  E.write(w.stop, "")
  local s = E.wait_for(function() return E.read(w.count) end, 10)
  assert(s, "the writer did not stop: " .. tostring(E.read(w.dir .. "/writer.log")))
  w.done = true
  return tonumber(s:match("%d+"))
end

-- ---- reading the output ---------------------------------------------------------

-- output(dir): the records of out/, each { n = line number, v = version,
-- tag, seen = the VM's count, ts = its (ingest) timestamp, file = part file }
local function output(dir)
  local out = {}
  for _, path in ipairs(E.part_files(dir .. "/out")) do
    for _, l in ipairs(E.lines(E.read(path))) do
      local n, v, tag, seen, ts = l:match("^line(%d+) v(%d+) (%u) (%d+) (%d+)$")
      assert(n, "unexpected output line in " .. path .. ": " .. l)
      out[#out + 1] = { n = tonumber(n), v = tonumber(v), tag = tag, seen = tonumber(seen), ts = tonumber(ts),
                        file = path }
    end
  end
  return out
end

-- check_output(recs, total, tags): every line 1..total exactly once, each
-- tagged as the version that processed it was loaded (tags[v]), with
-- versions that never decrease along the input; returns the versions seen
-- (a set)
local function check_output(recs, total, tags)
  local by_n, versions = {}, {}
  for _, r in ipairs(recs) do
    assert(not by_n[r.n], "line" .. r.n .. " came out twice")
    assert(r.n >= 1 and r.n <= total, "line" .. r.n .. " was never written")
    by_n[r.n] = r
    assert(tags[r.v], "line" .. r.n .. " was processed by version " .. r.v .. ", which was never accepted")
    assert(tags[r.v] == r.tag, "line" .. r.n .. ": version " .. r.v .. " was loaded from script "
      .. tags[r.v] .. " but tagged it " .. r.tag)
    versions[r.v] = true
  end
  local last = 0
  for n = 1, total do
    local r = by_n[n]
    assert(r, "line" .. n .. " is missing from the output (" .. #recs .. " of " .. total .. " lines came out)")
    assert(r.v >= last, "line" .. n .. " was processed by version " .. r.v .. " after an earlier line by version " .. last)
    last = r.v
  end
  return versions
end

-- check_fresh_vms(recs): within each part file (one task), the module-level
-- count restarts at 1 with each version and goes up by one per record
local function check_fresh_vms(recs)
  local last = {}
  for _, r in ipairs(recs) do
    local k = r.file .. "\0" .. r.v
    assert.are.equal((last[k] or 0) + 1, r.seen,
      "the module-level count of version " .. r.v .. " in " .. r.file .. " did not start afresh")
    last[k] = r.seen
  end
end

-- ---- the specs --------------------------------------------------------------------

describe("hot reload", function()
  local dir

  before_each(function() dir = E.tmpdir() end)

  after_each(function()
    for _, w in ipairs(writers) do
      if not w.done then os.execute("kill -TERM " .. w.pid .. " 2>/dev/null") end
    end
    writers = {}
    E.cleanup()                                  -- kills the daemons, removes the folders
    for _, f in ipairs(held) do pcall(f.close, f) end
    held = {}
  end)

  it("swaps 20 versions under a continuous writer through all four triggers, refusing broken ones in between: "
    .. "each line exactly once, tagged by its version, versions non-decreasing along the input, "
    .. "window state kept", function()
    local script_path = dir .. "/pipeline.lua"
    E.write(dir .. "/in.txt", "")
    E.write(script_path, script("A"))
    config(dir)
    local d, addr = start(dir)
    local w = start_writer(dir, 40, 10000, 1000000)

    local st = wait_settled(addr, 1)
    assert.are.equal(1, st.pipeline.version)
    assert.are.equal(cjson.null, st.pipeline.last_reload_error)
    wait_progress(addr, 200)

    local broken = {
      { name = "syntax error", text = script("A", { line4 = "local x = = 1" }),
        expect = { "pipeline.lua:4:" } },
      { name = "error while building", text = script("B", { line4 = 'error("boom")' }),
        expect = { "pipeline.lua:4:", "boom" } },
      { name = "window uid gone", text = script("A", { uid = "w2" }),
        expect = { "uid 'w'", "allow_dropped_state" } },
    }
    local triggers = { "file", "SIGHUP", "POST", "cli" }

    -- the steps: 20 good versions alternating B, A, ...; after every third a
    -- broken one.  Good ones take the triggers in turn, broken ones too.
    local steps = {}
    for i = 1, 20 do
      steps[#steps + 1] = { tag = i % 2 == 1 and "B" or "A", trigger = triggers[(i - 1) % 4 + 1] }
      if i % 3 == 0 then
        local b = #steps - i + 1                 -- the how-manieth broken one
        steps[#steps + 1] = { broken = broken[(b - 1) % 3 + 1], trigger = triggers[(b - 1) % 4 + 1] }
      end
    end

    local tags = { [1] = "A" }                  -- version -> the script it was loaded from
    local sha = {}                              -- tag -> sha256
    sha.A = st.pipeline.sha256
    local version, nok, nerr = 1, 0, 0
    local loaded_at = st.pipeline.loaded_at
    local used = {}

    for k, step in ipairs(steps) do
      local text = step.broken and step.broken.text or script(step.tag)
      local what = "step " .. k .. " (" .. (step.broken and step.broken.name or ("good " .. step.tag))
        .. " by " .. step.trigger .. ")"
      used[step.trigger .. (step.broken and "-broken" or "-good")] = true
      local answer                               -- the POST/cli answer, when there is one
      if step.trigger == "file" then
        write_renamed(script_path, text)
      else
        write_quietly(script_path, text)
        if step.trigger == "SIGHUP" then
          d:kill("HUP")
        elseif step.trigger == "POST" then
          local code, body = post(addr, "/reload")
          answer = body
          assert.are.equal(step.broken and 422 or 200, code, what .. ": " .. cjson.encode(body))
        else
          local r = E.run({ "reload", "--admin", addr }, { timeout = 10 })
          assert.are.equal(step.broken and 1 or 0, r.code, what .. ": " .. r.stdout .. r.stderr)
          if step.broken then
            answer = { error = r.stderr }
          else
            answer = cjson.decode(r.stdout)
          end
        end
      end

      if step.broken then
        nerr = nerr + 1
        -- wait for the refusal to be counted (the file and SIGHUP triggers answer nobody)
        assert(E.wait_for(function() local _, e = reload_counts(addr); return e == nerr end, 5),
          what .. ": the refusal was not counted")
        st = status(addr)
        assert.are.equal(version, st.pipeline.version, what .. ": the version changed")
        assert.are.equal("string", type(st.pipeline.last_reload_error), what)
        for _, s in ipairs(step.broken.expect) do
          assert.matches(s, st.pipeline.last_reload_error, 1, true)
          if answer then assert.matches(s, answer.error, 1, true) end
        end
        if step.trigger == "POST" then assert.are.equal(version, answer.version) end
      else
        version = version + 1
        nok = nok + 1
        tags[version] = step.tag
        if answer then assert.are.equal(version, answer.version, what) end
        st = wait_settled(addr, version)
        assert.are.equal(cjson.null, st.pipeline.last_reload_error, what)
        assert.matches("^%x+$", st.pipeline.sha256)
        assert.are.equal(64, #st.pipeline.sha256)
        assert.are.equal(st.pipeline.sha256:sub(1, 12), st.pipeline.hash)
        if answer then assert.are.equal(st.pipeline.sha256, answer.sha256) end
        sha[step.tag] = sha[step.tag] or st.pipeline.sha256
        assert.are.equal(sha[step.tag], st.pipeline.sha256, what .. ": the same script has another sha256")
        assert.is_true(st.pipeline.loaded_at >= loaded_at, what .. ": loaded_at went back")
        loaded_at = st.pipeline.loaded_at
        local per_task = samples(metrics(addr), "eddy_pipeline_version")
        for _, t in ipairs(st.tasks) do
          assert.are.equal(version, t.version)
          assert.are.equal(version, per_task['{task="' .. t.name .. '"}'], what .. ": eddy_pipeline_version")
          assert.are.equal("number", type(t.last_reload_pause_ms))
        end
      end
      local ok, err = reload_counts(addr)
      assert.are.same({ nok, nerr }, { ok, err }, what .. ": eddy_reloads_total")
      wait_progress(addr, 200)                   -- the (new or kept) version processes input
    end
    assert.are.equal(21, version)
    assert.are_not.equal(sha.A, sha.B)
    assert.is_true(loaded_at > 1.5e12)           -- ms since the epoch
    for _, t in ipairs(triggers) do
      assert.is_true(used[t .. "-good"], t .. " never reloaded a good version")
      assert.is_true(used[t .. "-broken"], t .. " never met a broken version")
    end

    -- every refusal is an ERROR line on stderr naming where or what
    local errors = {}
    for _, l in ipairs(E.lines(d:stderr())) do
      if l:match("ERROR") and l:match("refused") then errors[#errors + 1] = l end
    end
    assert.are.equal(nerr, #errors, d:stderr())
    local stderr = d:stderr()
    for _, b in ipairs(broken) do
      for _, s in ipairs(b.expect) do assert.matches(s, stderr, 1, true) end
    end

    -- the end: everything written is read, SIGTERM drains it, exit 0
    local total = stop_writer(w)
    assert(E.wait_for(function() return source_in(status(addr)) >= total end, 20),
      "the source did not read all " .. total .. " lines")
    local final_metrics = metrics(addr)
    d:kill("TERM")
    assert.are.equal(0, d:wait(20), d:stderr())

    local recs = output(dir)
    local versions = check_output(recs, total, tags)
    for v = 1, version do
      assert.is_true(versions[v], "version " .. v .. " processed nothing")
    end
    check_fresh_vms(recs)

    -- the window's state lived through all the reloads: each 1 s window
    -- fired once, with the number of records whose ingest time is in it
    -- (branch 1 sees the same timestamps)
    local expected = {}
    for _, r in ipairs(recs) do
      local start = r.ts - r.ts % 1000
      expected[start] = (expected[start] or 0) + 1
    end
    -- the last window is still open at the stop: it stays in the state store
    local last = 0
    for start in pairs(expected) do if start > last then last = start end end
    expected[last] = nil
    local counted = {}
    for _, l in ipairs(E.sink_lines(dir .. "/counts")) do
      local s, n = l:match("^(%d+) (%d+)$")
      assert(s, "unexpected count line: " .. l)
      s = tonumber(s)
      assert(not counted[s], "window " .. s .. " fired twice")
      counted[s] = tonumber(n)
    end
    assert.are.same(expected, counted, "records per window; dropped as late: "
      .. cjson.encode(samples(final_metrics, "eddy_late_records_dropped_total")))
  end)

  it("completes a reload requested while a slow stage holds the pipeline under backpressure, "
    .. "and answers 503 to another until the rollout is over", function()
    E.write(dir .. "/in.txt", "")
    E.write(dir .. "/pipeline.lua", script("A", { slow = 0.001 }))
    -- a channel of 16 batches of 50: once full, the barrier waits behind
    -- ~0.6 s of the slow stage's work, longer than any reply takes to
    -- arrive even on a loaded machine (with 4 batches a fast roll-out
    -- could end before the second request came)
    config(dir, { reload = { watch = false }, tuning = { batch = 50, channel = 16 } })
    local d, addr = start(dir)
    local w = start_writer(dir, 100, 10000, 6000)   -- ~9000 lines/s; the slow stage takes ~2000/s

    -- backpressure: a keyed task's channel is (nearly) full
    local st
    assert(E.wait_for(function()
      st = status(addr)
      local full = false
      for _, t in ipairs(st.tasks) do
        if t.stage == "keyed1" and t.queue >= 12 then full = true end
      end
      return full and source_in(st) >= 500
    end, 10), "no backpressure: " .. cjson.encode(st and st.tasks or {}))

    write_quietly(dir .. "/pipeline.lua", script("B", { slow = 0.001 }))
    local code, body = post(addr, "/reload")
    assert.are.equal(200, code, cjson.encode(body))
    assert.are.equal(2, body.version)
    -- still rolling out: the barrier waits behind the queued records
    local code2, body2 = post(addr, "/reload")
    assert.are.equal(503, code2, cjson.encode(body2))
    assert.matches("rolled out", body2.error, 1, true)
    wait_settled(addr, 2, 15)

    local total = stop_writer(w)
    assert(E.wait_for(function() return keyed1_in(status(addr)) >= total end, 20),
      "the keyed tasks did not take in all " .. total .. " lines")
    local ok, err = reload_counts(addr)
    assert.are.same({ 1, 0 }, { ok, err })      -- a 503 is not a refusal
    d:kill("TERM")
    assert.are.equal(0, d:wait(20), d:stderr())
    local recs = output(dir)
    local versions = check_output(recs, total, { "A", "B" })
    assert.is_true(versions[1] and versions[2])
    check_fresh_vms(recs)
  end)

  it("refuses a reload requested during shutdown with 503, and still drains everything read and exits 0", function()
    local lines = {}
    for i = 1, 6000 do lines[i] = "line" .. i end
    E.write(dir .. "/in.txt", table.concat(lines, "\n") .. "\n")
    -- the slow stage (2 ms a record) behind long channels (32 batches of 50
    -- records) makes the drain after SIGTERM last seconds
    E.write(dir .. "/pipeline.lua", script("A", { slow = 0.002 }))
    config(dir, { reload = { watch = false }, tuning = { batch = 50, channel = 32 } })
    local d, addr = start(dir)
    -- SIGTERM once more than 1000 records wait in the channels (over a second of work)
    local read
    assert(E.wait_for(function()
      local st = status(addr)
      read = source_in(st)
      local taken = keyed1_in(st)             -- taken from the channels
      return taken >= 100 and read - taken >= 1000
    end, 10), "the pipeline did not fill up")

    d:kill("TERM")
    assert(E.wait_for(function() return status(addr).state == "stopping" end, 5))
    write_quietly(dir .. "/pipeline.lua", script("B", { slow = 0.002 }))
    local code, body = post(addr, "/reload")
    assert.are.equal(503, code, cjson.encode(body))
    assert.matches("stopping", body.error, 1, true)
    assert.are.equal(1, status(addr).pipeline.version)
    local r = E.run({ "reload", "--admin", addr }, { timeout = 10 })
    assert.are.equal(1, r.code, r.stderr)
    assert.matches("stopping", r.stderr, 1, true)

    assert.are.equal(0, d:wait(30), d:stderr())
    -- what was read came out exactly once, by version 1: a prefix of the input
    local recs = output(dir)
    local n = #recs
    assert.is_true(n >= read, n .. " lines out, but " .. read .. " had been read before SIGTERM")
    check_output(recs, n, { "A" })
  end)

  it("takes a reload with nothing changed (POST, SIGHUP, the same bytes saved again) as a no-op that says so", function()
    E.write(dir .. "/in.txt", "")
    E.write(dir .. "/pipeline.lua", script("A"))
    config(dir, {})
    local d, addr = start(dir)
    local code, body = post(addr, "/reload")
    assert.are.equal(200, code, cjson.encode(body))
    assert.are.same({ 1, true }, { body.version, body.unchanged })
    d:kill("HUP")
    write_renamed(dir .. "/pipeline.lua", script("A"))   -- saved again, the same bytes
    E.sleep(0.2 + 0.8)                                   -- the debounce, and a margin
    assert.are.equal(1, status(addr).pipeline.version)
    assert(E.wait_for(function()
      local _, n = d:stderr():gsub("nothing changed", "")
      return n >= 3
    end, 10), "three no-op reloads should be logged:\n" .. d:stderr())
    assert.are.same({ 0, 0 }, { reload_counts(addr) })
    d:kill("TERM")
    assert.are.equal(0, d:wait(20), d:stderr())
  end)

  it("with reload.watch = false does not reload on a file change, but does on POST /reload", function()
    E.write(dir .. "/in.txt", "")
    E.write(dir .. "/pipeline.lua", script("A"))
    config(dir, { reload = { watch = false } })
    local d, addr = start(dir)
    local total = 0
    local function feed(n)
      local t = {}
      for i = 1, n do t[i] = "line" .. (total + i) .. "\n" end
      E.append(dir .. "/in.txt", table.concat(t))
      total = total + n
      assert(E.wait_for(function() return keyed1_in(status(addr)) >= total end, 10))
    end
    feed(100)

    write_renamed(dir .. "/pipeline.lua", script("B"))
    E.write(dir .. "/pipeline.lua", script("B"))     -- written and closed in place too
    E.write(dir .. "/helper.lua", "return {}\n")      -- and another module beside it
    E.sleep(0.2 + 0.8)                               -- the debounce, and a margin
    local st = status(addr)
    assert.are.equal(1, st.pipeline.version)
    assert.are.same({ 0, 0 }, { reload_counts(addr) })
    feed(100)

    local code, body = post(addr, "/reload")
    assert.are.equal(200, code, cjson.encode(body))
    assert.are.equal(2, body.version)
    wait_settled(addr, 2)
    feed(100)
    d:kill("TERM")
    assert.are.equal(0, d:wait(20), d:stderr())
    local recs = output(dir)
    check_output(recs, total, { "A", "B" })
    for _, r in ipairs(recs) do
      assert.are.equal(r.n <= 200 and 1 or 2, r.v, "line" .. r.n)
    end
  end)

  it("with reload.watch on, reloads when the script is written in place or another .lua file beside it changes",
    function()
    E.write(dir .. "/in.txt", "")
    E.write(dir .. "/pipeline.lua", script("A"))
    config(dir)
    local d, addr = start(dir)
    wait_settled(addr, 1)
    E.write(dir .. "/pipeline.lua", script("B"))
    local sha_b = wait_settled(addr, 2).pipeline.sha256
    E.write(dir .. "/helper.lua", "return {}\n")
    local st = wait_settled(addr, 3)
    assert.are_not.equal(sha_b, st.pipeline.sha256)   -- the hash covers the files beside the script
    E.write(dir .. "/notes.txt", "not a .lua file\n")
    E.sleep(0.2 + 0.8)                                -- the debounce, and a margin
    assert.are.equal(3, status(addr).pipeline.version)
    E.append(dir .. "/in.txt", "line1\n")
    assert(E.wait_for(function() return keyed1_in(status(addr)) >= 1 end, 10))
    d:kill("TERM")
    assert.are.equal(0, d:wait(20), d:stderr())
    assert.matches("pipeline.lua changed", d:stderr(), 1, true)
    local recs = output(dir)
    assert.are.equal(1, #recs)
    assert.are.same({ 1, 3, "B", 1 }, { recs[1].n, recs[1].v, recs[1].tag, recs[1].seen })
  end)

  describe("refuses, keeping the running version and saying why,", function()
    local d, addr, refused
    before_each(function()
      E.write(dir .. "/in.txt", "")
      E.write(dir .. "/other.txt", "")
      E.write(dir .. "/pipeline.lua", script("A"))
      config(dir, { reload = { watch = false } })
      d, addr = start(dir)
      refused = 0
    end)

    -- refuse(text, expect...): loads text, expects a 422 whose error holds
    -- every expect string, the same error on /status and as an ERROR line
    -- on stderr, counted in eddy_reloads_total{result="error"}
    local function refuse(text, ...)
      write_quietly(dir .. "/pipeline.lua", text)
      local code, body = post(addr, "/reload")
      assert.are.equal(422, code, cjson.encode(body))
      refused = refused + 1
      assert.are.equal(1, body.version)
      for _, s in ipairs({ ... }) do assert.matches(s, body.error, 1, true) end
      local st = status(addr)
      assert.are.equal(1, st.pipeline.version)
      assert.are.equal(body.error, st.pipeline.last_reload_error)
      for _, t in ipairs(st.tasks) do assert.are.equal(1, t.version) end
      assert.are.same({ 0, refused }, { reload_counts(addr) })
      assert(E.wait_for(function()
        for _, l in ipairs(E.lines(d:stderr())) do
          if l:match("ERROR") and l:find(body.error, 1, true) then return true end
        end
      end, 5), "no ERROR line with '" .. body.error .. "' on stderr:\n" .. d:stderr())
      return body.error
    end

    -- after the refusals version 1 still runs and processes input
    local function still_runs()
      E.append(dir .. "/in.txt", "line1\nline2\n")
      assert(E.wait_for(function() return keyed1_in(status(addr)) >= 2 end, 10))
      d:kill("TERM")
      assert.are.equal(0, d:wait(20), d:stderr())
      check_output(output(dir), 2, { "A" })
    end

    it("a syntax error, with pipeline.lua:LINE", function()
      local e = refuse(script("B", { line4 = "local x = = 1" }), "pipeline.lua:4:")
      assert.matches("pipeline%.lua:4: .+", e)
      still_runs()
    end)

    it("an error raised while building the pipeline, with pipeline.lua:LINE", function()
      refuse(script("B", { line4 = 'error("boom")' }), "pipeline.lua:4: boom")
      refuse(script("B", { source_opts = ', colour = "red"' }), "pipeline.lua:3:", "colour")
      still_runs()
    end)

    it("a change that needs a restart: the source's name, files or format, a key_by added or removed, "
      .. "a keyed stage's parallelism, a sink added, removed or with other options", function()
      local key = ':key_by(function(v) return v:sub(-1) end)'
      refuse(script("B", { source = "input" }), "source 'input'", "needs a restart")
      refuse(script("B", { file = "other.txt" }), "source 'in'", "needs a restart")
      refuse(script("B", { format = "raw" }), "source 'in'", "needs a restart")
      refuse(script("B", { key = "" }), "key_by", "needs a restart")
      refuse(script("B", { key = key .. ':key_by(function(v) return v:sub(-2) end)' }), "key_by", "needs a restart")
      refuse(script("B", { key = ':key_by(function(v) return v:sub(-1) end, { parallelism = 1 })' }),
        "parallelism", "needs a restart")
      refuse(script("B", { extra = 'src:sink("extra", { file = "extra", format = "lines" })' }), "sink", "needs a restart")
      refuse(script("B", { out_sink = '' }), "sink", "needs a restart")
      refuse(script("B", { out_sink = ':sink("out", { file = "out", format = "raw" })' }), "sink 'out'", "needs a restart")
      still_runs()
    end)

    -- then_forced(answer): the forced reload made version 2, which runs
    local function then_forced(answer)
      assert.are.equal(2, answer.version)
      local st = wait_settled(addr, 2)
      assert.are.equal(answer.sha256, st.pipeline.sha256)
      assert.are.equal(cjson.null, st.pipeline.last_reload_error)
      assert.are.same({ 1, 1 }, { reload_counts(addr) })
      E.append(dir .. "/in.txt", "line1\n")
      assert(E.wait_for(function() return keyed1_in(status(addr)) >= 1 end, 10))
      d:kill("TERM")
      assert.are.equal(0, d:wait(20), d:stderr())
      check_output(output(dir), 1, { "A", "B" })
      assert.are.equal(2, output(dir)[1].v)
    end

    it("a window whose uid is gone, unless POST /reload?allow_dropped_state=1", function()
      refuse(script("B", { uid = "w2" }), "uid 'w'", "allow_dropped_state")
      local code, body = post(addr, "/reload?allow_dropped_state=1")
      assert.are.equal(200, code, cjson.encode(body))
      then_forced(body)
    end)

    it("a window whose uid is gone, by eddy reload (exit 1), unless eddy reload --allow-dropped-state", function()
      write_quietly(dir .. "/pipeline.lua", script("B", { uid = "w2" }))
      local r = E.run({ "reload", "--admin", addr }, { timeout = 10 })
      assert.are.equal(1, r.code, r.stdout .. r.stderr)
      assert.matches("uid 'w'", r.stderr, 1, true)
      assert.matches("allow_dropped_state", r.stderr, 1, true)
      assert.are.equal(1, status(addr).pipeline.version)
      r = E.run({ "reload", "--admin", addr, "--allow-dropped-state" }, { timeout = 10 })
      assert.are.equal(0, r.code, r.stdout .. r.stderr)
      then_forced(cjson.decode(r.stdout))
    end)
  end)
end)

describe("eddy reload", function()
  it("exits 1 with a message when nothing listens at --admin", function()
    local r = E.run({ "reload", "--admin", "127.0.0.1:1" }, { timeout = 10 })
    assert.are.equal(1, r.code, r.stderr)
    assert.matches("127.0.0.1:1", r.stderr, 1, true)
    assert.are.equal("", r.stdout)
  end)

  it("exits 2 with a usage message for an --admin that is not HOST:PORT", function()
    for _, bad in ipairs({ "nonsense", "127.0.0.1:", ":8600", "127.0.0.1:99999" }) do
      local r = E.run({ "reload", "--admin", bad }, { timeout = 10 })
      assert.are.equal(2, r.code, bad .. ": " .. r.stderr)
      assert.matches("HOST:PORT", r.stderr, 1, true)
    end
  end)
end)
