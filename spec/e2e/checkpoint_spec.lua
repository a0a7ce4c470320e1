-- Checkpoints and exactly-once, end to end, with real crashes: a file → file
-- exactly_once job (dedup by id, a running total per user in value state,
-- tumbling one-minute counts per user) over 4 generated partitions of 80K
-- records (and ~5% duplicates), SIGKILLed at random moments at least 20 times and made to kill
-- itself at each fault-injection point (EDDY_CRASH_AT: prepared, manifest,
-- committed, post_commit), restarted each time: the committed output (the
-- visible part files) equals that of a run without crashes, row for row.
-- Then a run killed between the commit point and the renames (the post-commit
-- step is redone on restart), and /status + /metrics of a running job.

local E = require("support.eddy")
local cjson = require("cjson")

-- The guarantee the crash tests run under.  (The harness can be checked
-- against a binary without checkpoints by setting it to "at_least_once" with
-- KILLS = 0 and CRASH_POINTS = {}: the crash test then runs the job once to
-- its end and compares.)
local GUARANTEE = "exactly_once"
local KILLS = 20                                 -- random SIGKILLs, at least
local CRASH_POINTS = { [3] = "prepared:1", [7] = "manifest:2", [11] = "committed:1", [15] = "post_commit:1" }

local FILES, USERS = 4, 1000
local PER_FILE = 80000                           -- records a file (and ~5% duplicates)
local PER_FILE_SMALL = 15000                     -- for the commit-point test
local T0 = 1700000000000                         -- event times in ms
local SINKS = { "dedup", "totals", "windows" }
local C = require("support.crash")
local rng, last_committed, restored, tail = C.rng, C.last_committed, C.restored, C.tail
local function hidden(dir) return C.hidden(dir, SINKS) end
local function differences(expected, got) return C.differences(expected, got, SINKS) end

-- The pipeline.  Every output is a multiset that does not depend on how the
-- 4 partitions interleave:
--   dedup:   one row per distinct id (an id's copies are all in one file)
--   totals:  per input record (duplicates too), the user's running count and
--            sum of x; a user's records are all in one file (user u in file
--            u % 4), and the shuffle straight from the source keeps a
--            partition's order, so each prefix is fixed
--   windows: per user and event-time minute, the count of distinct ids; input
--            timestamps only go back by less than the watermark's bound, so
--            no record is late
local PIPELINE = [[
local eddy = require("eddy")
local p = eddy.pipeline()
local src = p:source("in", { file = "in/*.jsonl", format = "json", timestamp = "ts",
                             watermark = eddy.watermark.bounded("30s") })

local deduped = src:key_by("id"):dedup{ ttl = "1h" }:uid("seen-ids")
deduped:sink("dedup", { file = "out/dedup", format = "json" })

src:key_by("user")
 :process{ process = function(v, ctx)
   local s = ctx.state:value("total")
   local t = s:get() or { n = 0, sum = 0 }
   t.n, t.sum = t.n + 1, t.sum + v.x
   s:set(t)
   return { user = ctx.key, n = t.n, total = t.sum }
 end }:uid("user-total")
 :sink("totals", { file = "out/totals", format = "json" })

deduped:key_by("user")
 :window(eddy.window.tumbling("1m")):count():uid("per-minute")
 :map(function(n, ctx) return { user = ctx.key, start = ctx.window.start, count = n } end)
 :sink("windows", { file = "out/windows", format = "json" })

return p
]]

-- ---- input ------------------------------------------------------------------

-- inputs(per_file): { [filename] = content }, the same on every run: FILES
-- files of per_file records {"id","user","ts","x"} and ~5% duplicates.
-- Timestamps increase within a file; a duplicate (the same line) follows its
-- original within 21 records, so less than 21 s of event time later.
local INPUTS = {}
local function inputs(per_file)
  if INPUTS[per_file] then return INPUTS[per_file] end
  local files = {}
  local rnd = rng(20240601)
  for f = 0, FILES - 1 do
    local out, pending = {}, {}
    local ts = T0 + rnd(1000)
    for i = 1, per_file + 21 do
      for _, l in ipairs(pending[i] or {}) do out[#out + 1] = l end
      pending[i] = nil
      if i <= per_file then
        ts = ts + rnd(1000)
        local user = f + FILES * rnd(USERS / FILES)
        local line = string.format('{"id":"e%d-%06d","user":"u%d","ts":%d,"x":%d}', f, i, user, ts, 1 + rnd(100))
        out[#out + 1] = line
        if rnd(100) < 5 then
          local at = i + 1 + rnd(20)
          pending[at] = pending[at] or {}
          table.insert(pending[at], line)
        end
      end
    end
    files[string.format("in/p%d.jsonl", f)] = table.concat(out, "\n") .. "\n"
  end
  INPUTS[per_file] = files
  return files
end

-- ---- a job ------------------------------------------------------------------

-- setup(dir, per_file[, config]): the inputs, the pipeline and the config in
-- dir; returns the config's path and the state folder
local function setup(dir, per_file, config)
  for name, content in pairs(inputs(per_file)) do E.write(dir .. "/" .. name, content) end
  E.write(dir .. "/pipeline.lua", PIPELINE)
  local c = { name = "cp", threads = 2, parallelism = 2, guarantee = GUARANTEE,
              checkpoint = { interval = "300ms", retain = 2 } }
  for k, v in pairs(config or {}) do c[k] = v end
  return E.write_config(dir, c), dir .. "/state/cp"
end

-- row(line): a canonical text of a flat JSON object line (its "key":value
-- pairs sorted), so that rows compare whatever order the keys were written in
local pairs_buf = {}
local function row(line)
  local k, len = 0, 1
  for pair in line:gmatch('"[^"]*":[^,}]+') do
    k = k + 1
    pairs_buf[k] = pair
    len = len + #pair + 1
  end
  for j = k + 1, #pairs_buf do pairs_buf[j] = nil end
  if len ~= #line or line:sub(1, 1) ~= "{" then return E.canon(cjson.decode(line)) end  -- not flat
  table.sort(pairs_buf)
  return "{" .. table.concat(pairs_buf, ",") .. "}"
end

-- committed(dir): { [sink] = { rows = { [row] = times }, n = rows } }: the
-- rows of each sink's visible part files (part-*), as a multiset
local function committed(dir)
  local out = {}
  for _, s in ipairs(SINKS) do
    local rows, n = {}, 0
    for _, path in ipairs(E.part_files(dir .. "/out/" .. s)) do
      for l in io.lines(path) do
        if l ~= "" then
          local r = row(l)
          rows[r] = (rows[r] or 0) + 1
          n = n + 1
        end
      end
    end
    out[s] = { rows = rows, n = n }
  end
  return out
end

local function assert_same_output(expected, got, context)
  local d = differences(expected, got)
  if d ~= "" then
    error("the committed output differs from the run without crashes\n" .. d .. "\n" .. (context or ""), 2)
  end
end

-- reference(per_file): the committed output of a run without crashes (made
-- once per input size), and the seconds it took
local REFERENCE = {}
local function reference(per_file)
  if REFERENCE[per_file] then return REFERENCE[per_file] end
  local dir = E.tmpdir()
  local conf = setup(dir, per_file)
  local t = E.now()
  local r = E.run({ "run", conf }, { timeout = 240 })
  local secs = E.now() - t
  assert(r.code == 0, "the reference run (no crashes) exited " .. tostring(r.code) .. ":\n" .. tail(r.stderr))
  local out = committed(dir)
  out.seconds = secs
  for _, s in ipairs(SINKS) do assert(out[s].n > 0, "the reference run wrote nothing to sink " .. s) end
  local h = hidden(dir)
  assert(#h == 0, "the reference run left hidden files: " .. table.concat(h, " "))
  REFERENCE[per_file] = out
  return out
end

-- ---- specs ------------------------------------------------------------------

describe("checkpoints (exactly_once, file to file)", function()
  after_each(E.cleanup)

  it("a job killed at random moments at least 20 times, and at each crash point, commits the same rows as a run without crashes", function()
    local ref = reference(PER_FILE)
    -- the reference itself: one row per distinct id, one total per input record
    local n_in = 0
    for _, content in pairs(inputs(PER_FILE)) do n_in = n_in + select(2, content:gsub("\n", "")) end
    assert.are.equal(FILES * PER_FILE, ref.dedup.n)
    assert.are.equal(n_in, ref.totals.n)

    local dir = E.tmpdir()
    local conf, state_dir = setup(dir, PER_FILE)
    local rnd = rng(777)
    local runs, kills, points_done, n_points = {}, 0, 0, 0
    for _ in pairs(CRASH_POINTS) do n_points = n_points + 1 end

    -- a run started after a committed checkpoint logs "restored checkpoint <its id>"
    local function check_restore(run)
      if run.after == nil then return end
      local id = restored(run.log)
      assert(id ~= nil, string.format("run %d started after checkpoint %s had committed but did not log "
        .. "'restored checkpoint'; its log:\n%s", run.n, tostring(run.after), tail(run.log)))
      assert(id == run.after, string.format("run %d restored checkpoint %s, but the newest committed one "
        .. "was %s; its log:\n%s", run.n, tostring(id), tostring(run.after), tail(run.log)))
    end

    local n = 0
    while kills < KILLS or points_done < n_points do
      n = n + 1
      assert(n <= 200, "200 runs and still not done")
      local point = CRASH_POINTS[n]
      local run = { n = n, after = last_committed(state_dir), point = point }
      runs[n] = run
      local d = E.start({ "run", conf }, { timeout = 60, env = point and { EDDY_CRASH_AT = point } or nil })
      local code
      if point then
        -- it kills itself at the crash point
        code = d:wait(30)
        if code == nil then d:stop() end
        run.log = d:stderr()
        check_restore(run)
        assert(code ~= 0, string.format("run %d (EDDY_CRASH_AT=%s) finished the job (exit 0) before "
          .. "reaching its crash point: make the input larger", n, point))
        assert(code == 137, string.format("run %d (EDDY_CRASH_AT=%s) should have killed itself with "
          .. "SIGKILL (status 137), got %s; its log:\n%s", n, point, tostring(code), tail(run.log)))
        points_done = points_done + 1
        run.how = point
      else
        -- 0.15 s to 0.15 s + span, more of them short (mean 0.15 + span/3):
        -- the job must not end before the kills do, so the span follows the
        -- time the run without crashes took (a fast machine gets short ones)
        local span = math.min(1.05, math.max(0.25, ref.seconds * 1.5 / KILLS))
        local u = rnd(1001) / 1000
        local delay = 0.15 + span * u * u
        code = d:wait(delay)
        if code == nil and run.after ~= nil then
          -- not before it has said which checkpoint it restored
          E.wait_for(function() return restored(d:stderr()) or not d:alive() end, 10)
          code = d:code()
        end
        if code == nil then
          d:kill("KILL")
          code = d:wait(10)
          assert(code == 137 or code == 0, string.format("run %d: status %s after SIGKILL", n, tostring(code)))
          if code == 137 then kills = kills + 1 end
        end
        run.how = string.format("killed at %.2fs", delay)
        run.log = d:stderr()
        check_restore(run)
        assert(code ~= 0, string.format("the job finished (run %d exited 0) after only %d random kills and "
          .. "%d of %d crash points (the run without crashes took %.1f s): make the input larger",
          n, kills, points_done, n_points, ref.seconds))
        assert(code == 137, string.format("run %d exited %s; its log:\n%s", n, tostring(code), tail(run.log)))
      end
    end

    -- then to the end without kills
    local final = { n = n + 1, after = last_committed(state_dir) }
    local r = E.run({ "run", conf }, { timeout = 240 })
    final.log = r.stderr
    assert(r.code == 0, "the last run (no kills) exited " .. tostring(r.code) .. ":\n" .. tail(r.stderr))
    check_restore(final)

    local restores, story = final.after and 1 or 0, {}
    for _, run in ipairs(runs) do
      if run.after ~= nil then restores = restores + 1 end
      story[#story + 1] = string.format("  run %d: after checkpoint %s, %s", run.n, tostring(run.after), run.how)
    end
    story[#story + 1] = string.format("  run %d: after checkpoint %s, to the end", final.n, tostring(final.after))
    assert_same_output(ref, committed(dir), string.format("%d runs: %d random kills, %d crash points, "
      .. "%d restores of a committed checkpoint:\n%s", n + 1, kills, points_done, restores, table.concat(story, "\n")))
    local h = hidden(dir)
    assert(#h == 0, "in-progress files left after the last run exited 0: " .. table.concat(h, " "))
    if GUARANTEE == "exactly_once" then
      assert(restores >= KILLS / 2, string.format("only %d of %d runs restored a committed checkpoint: "
        .. "the crashes did not test much", restores, n + 1))
    end
  end)

  it("a run killed after the commit point, before the renames, gets that checkpoint's part files on restart", function()
    local ref = reference(PER_FILE_SMALL)
    local dir = E.tmpdir()
    local conf, state_dir = setup(dir, PER_FILE_SMALL)
    local d = E.start({ "run", conf }, { timeout = 60, env = { EDDY_CRASH_AT = "committed:1" } })
    local code = d:wait(30)
    if code == nil then d:stop() end
    assert(code == 137, "with EDDY_CRASH_AT=committed:1 eddy should kill itself (status 137), got "
      .. tostring(code) .. ":\n" .. tail(d:stderr()))

    -- committed, not renamed yet: its part files are hidden
    local id = last_committed(state_dir)
    assert(id ~= nil, "no committed manifest under " .. state_dir .. "/checkpoints after the commit point")
    local pending = {}
    for _, s in ipairs(SINKS) do
      for _, name in ipairs(E.ls(dir .. "/out/" .. s) or {}) do
        local task, cp, ext = name:match("^%.part%-(%d+)%-(%d+)%.(%w+)%.inprogress$")
        if cp and tonumber(cp) == id then
          pending[#pending + 1] = { sink = s, hidden = name, visible = ("part-%s-%s.%s"):format(task, cp, ext),
                                    bytes = E.read(dir .. "/out/" .. s .. "/" .. name) }
        end
        local vcp = name:match("^part%-%d+%-(%d+)%.")
        assert(not (vcp and tonumber(vcp) == id), "part file " .. s .. "/" .. name .. " of checkpoint "
          .. id .. " is visible before the post-commit renames")
      end
    end
    assert(#pending > 0, "no hidden .part-<task>-" .. id .. ".<ext>.inprogress after checkpoint " .. id
      .. " committed; hidden files: " .. table.concat(hidden(dir), " "))

    -- the restart restores it and finishes its renames
    local d2 = E.start({ "run", conf }, { timeout = 60 })
    local ok = E.wait_for(function()
      for _, p in ipairs(pending) do
        if not E.exists(dir .. "/out/" .. p.sink .. "/" .. p.visible) then return false end
      end
      return true
    end, 15)
    assert(ok, "checkpoint " .. id .. "'s part files did not appear after the restart; its log:\n" .. tail(d2:stderr()))
    for _, p in ipairs(pending) do
      assert(E.read(dir .. "/out/" .. p.sink .. "/" .. p.visible) == p.bytes,
        p.sink .. "/" .. p.visible .. " is not the " .. p.hidden .. " it should have been renamed from")
    end
    local code2 = d2:wait(60)
    assert(code2 == 0, "the restart exited " .. tostring(code2) .. ":\n" .. tail(d2:stderr()))
    assert(restored(d2:stderr()) == id, "the restart should log 'restored checkpoint " .. id .. "'; its log:\n"
      .. tail(d2:stderr()))
    assert_same_output(ref, committed(dir))
    local h = hidden(dir)
    assert(#h == 0, "in-progress files left after the restart exited 0: " .. table.concat(h, " "))
  end)
end)

local metrics = E.metrics

describe("checkpoints on the admin server", function()
  after_each(E.cleanup)

  it("/status has last_checkpoint with an id that increases while a followed job runs; /metrics counts them", function()
    local dir = E.tmpdir()
    E.write(dir .. "/in.jsonl", '{"user":"a","n":1}\n')
    E.write(dir .. "/pipeline.lua", [[
local eddy = require("eddy")
local p = eddy.pipeline()
p:source("in", { file = "in.jsonl", follow = true })
 :key_by("user")
 :process{ process = function(v, ctx)
   local s = ctx.state:value("n")
   s:set((s:get() or 0) + v.n)
   return { user = ctx.key, n = s:get() }
 end }:uid("sum")
 :sink("out", { file = "out", format = "json" })
return p
]])
    E.write_config(dir, { name = "cpa", guarantee = "exactly_once", admin = { listen = "127.0.0.1:0" },
                          checkpoint = { interval = "300ms", retain = 2 } })
    local d = E.start({ "run", dir .. "/eddy.conf.lua" }, { timeout = 40 })
    E.wait_for(function() return E.exists(dir .. "/state/cpa/admin.addr") or not d:alive() end, 10)
    local addr = d:alive() and E.admin_addr(dir .. "/state/cpa", 1)
    assert(addr, "no admin.addr; stderr:\n" .. tail(d:stderr()))

    local function last_checkpoint()
      local code, body = E.curl("http://" .. addr .. "/status")
      if code ~= 200 then return nil end
      local ok, st = pcall(cjson.decode, body)
      if ok and type(st) == "table" and type(st.last_checkpoint) == "table"
          and type(st.last_checkpoint.id) == "number" then
        return st.last_checkpoint
      end
    end
    local first = E.wait_for(last_checkpoint, 10)
    assert(first, "/status has no last_checkpoint object with a numeric id: " .. select(2, E.curl("http://" .. addr .. "/status")))
    E.append(dir .. "/in.jsonl", '{"user":"a","n":2}\n')
    local later = E.wait_for(function()
      local c = last_checkpoint()
      return c and c.id > first.id and c
    end, 10)
    assert(later, "last_checkpoint.id stayed at " .. first.id .. " for 10 s (interval 300ms)")

    local _, body = E.curl("http://" .. addr .. "/metrics")
    local m = metrics(body)
    assert.is_number(m["eddy_checkpoint_last_id"], "no eddy_checkpoint_last_id in /metrics")
    assert.is_true(m["eddy_checkpoint_last_id"] >= later.id)
    local completed = m['eddy_checkpoints_total{result="completed"}']
    assert.is_number(completed, 'no eddy_checkpoints_total{result="completed"} in /metrics')
    assert.is_true(completed >= 2, "eddy_checkpoints_total{result=\"completed\"} is " .. completed)

    d:kill("TERM")
    assert.are.equal(0, d:wait(15), d:stderr())
    assert.are.same(E.canon_all({ { user = "a", n = 1 }, { user = "a", n = 3 } }), E.sink_json(dir .. "/out"))
  end)
end)
