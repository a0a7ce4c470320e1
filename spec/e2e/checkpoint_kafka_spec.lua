-- Checkpoints and exactly-once with a Kafka source, end to end, with real
-- crashes, against a real Apache Kafka broker (scripts/test.sh starts one;
-- without one the spec fails with the reason): an exactly_once job reading a
-- 4-partition topic into file sinks (a running total per user in value
-- state, tumbling one-minute counts per user) and into a Kafka sink (the
-- same window counts: Kafka → window → Kafka, one transaction per
-- checkpoint), SIGKILLed at random moments at least 20 times and made to
-- kill itself at each fault-injection point (EDDY_CRASH_AT: prepared,
-- manifest, txn_committed, committed, post_commit), restarted each time with
-- the same config (so the same consumer group and transactional.id): the
-- committed output (the visible part files, and what a read_committed
-- reader gets from the output topic, read with kcat) equals that of a run
-- without crashes, row for row, exactly as many, and that run's output
-- equals what the input makes (computed here).
--
-- Time: a restart after a SIGKILL joins a group where the dead consumer
-- stays until its session times out (SESSION_MS), and the rebalance waits
-- for it; so every restart costs seconds before the partitions are
-- assigned: the kill moments count from the assignment, and the kills are
-- spread over JOBS crash jobs run side by side (each its own consumer group,
-- transactional.id, state and outputs), next to the run without crashes.
--
-- Every part file is looked at as soon as it is visible (after each run):
-- one that changes or goes fails the spec there; after the runs its rows
-- are read, and a row the input does not make (or makes fewer times) fails
-- it naming the run that made the file visible (reading them between the
-- runs, in the loop that times the kills, delayed the kills by seconds on
-- a loaded machine, and a job read everything before its last runs).
-- EDDY_SPEC_KEEP=DIR keeps the jobs' folders (outputs, state, each run's
-- log) for a post-mortem; EDDY_SPEC_VERBOSE=1 prints the runs and the
-- times.
local E = require("support.eddy")
local cjson = require("cjson")
local lfs = require("lfs")

local KILLS = 20                                 -- random SIGKILLs in all (over the jobs), at least
local JOBS = 3                                   -- crash jobs run side by side
-- the crash points, dealt out to the jobs in turn; k is past the
-- checkpoints taken while the group is still being joined (one each 300 ms),
-- so that the point is reached while the job is reading (post_commit is
-- reached only by a checkpoint with output)
local CRASH_POINTS = { "prepared:13", "manifest:14", "txn_committed:13", "committed:13", "post_commit:1" }
local AT_RUNS = { 3, 7 }                         -- a job's runs that get its crash points
local KILL_MIN, KILL_MAX = 0.2, 1.5              -- seconds after the assignment
local RESTART_GAP = 0.2                          -- seconds between a kill and the restart
local SESSION_MS = 3000                          -- how long the group waits for a SIGKILLed member

local PARTITIONS, PER_PARTITION, USERS = 4, 180000, 200
local T0 = 1700000000000                         -- event times in ms
local PUSH = 3600000                             -- the watermark pushers' lead
local SINKS = { "totals", "windows" }             -- file sinks
local ALL_SINKS = { "totals", "windows", "kwindows" }    -- and the Kafka sink
local C = require("support.crash")
local rng, last_committed, restored, tail = C.rng, C.last_committed, C.restored, C.tail
local function hidden(dir) return C.hidden(dir, SINKS) end
local function differences(expected, got, sinks) return C.differences(expected, got, sinks or SINKS) end

-- The pipeline.  Both outputs are multisets that do not depend on how the
-- partitions interleave:
--   totals:  per input record, the user's running count and sum of x; a
--            user's records are all in one partition, in order, and the
--            shuffle straight from the source keeps a partition's order
--   windows: per user and event-time minute, the count of records; event
--            times never decrease within a partition, so no record is late; the
--            last record of each partition (user "push<P>", an hour after
--            the latest real one, the same time in each) moves the watermark
--            past every real window, and its own window stays open (kept in
--            the state store, never fired)
local PIPELINE_TEXT = [[
local eddy = require("eddy")
local p = eddy.pipeline()
local src = p:source("in", { kafka = "KIN", format = "json", timestamp = "ts",
                             watermark = eddy.watermark.bounded("30s") })

src:key_by("user")
 :process{ process = function(v, ctx)
   local s = ctx.state:value("total")
   local t = s:get() or { n = 0, sum = 0 }
   t.n, t.sum = t.n + 1, t.sum + v.x
   s:set(t)
   return { user = ctx.key, n = t.n, total = t.sum }
 end }:uid("user-total")
 :sink("totals", { file = "out/totals", format = "json" })

local windows = src:key_by("user")
 :window(eddy.window.tumbling("1m")):count():uid("per-minute")
 :map(function(n, ctx) return { user = ctx.key, start = ctx.window.start, count = n } end)
windows:sink("windows", { file = "out/windows", format = "json" })
windows:sink("kwindows", { kafka = "KTOPIC", key = "user" })

return p
]]
local function pipeline(kin, ktopic) return (PIPELINE_TEXT:gsub("KIN", kin):gsub("KTOPIC", ktopic)) end

-- ---- rows -----------------------------------------------------------------------

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

-- a multiset of rows: { rows = { [row] = times }, n = rows }
local function multiset() return { rows = {}, n = 0 } end
local function add(m, r)
  m.rows[r] = (m.rows[r] or 0) + 1
  m.n = m.n + 1
end

-- ---- input ----------------------------------------------------------------------

-- input(): made once: per partition its lines "key<TAB>json" (key = user;
-- user u is in partition u % 4), and the rows the sinks must hold in the
-- end, computed here (as row() writes them: keys sorted)
local INPUT
local function input()
  if INPUT then return INPUT end
  local rnd = rng(20240611)
  local parts, n, last = {}, 0, 0
  local want = { totals = multiset(), windows = multiset() }
  local minutes = {}
  for p = 0, PARTITIONS - 1 do
    local lines, acc = {}, {}
    local ts = T0 + rnd(1000)
    for i = 1, PER_PARTITION do
      ts = ts + rnd(1000)
      local user = "u" .. (p + PARTITIONS * rnd(USERS / PARTITIONS))
      local x = 1 + rnd(100)
      lines[i] = string.format('%s\t{"user":"%s","ts":%d,"x":%d}', user, user, ts, x)
      local a = acc[user] or { n = 0, sum = 0 }
      acc[user] = a
      a.n, a.sum = a.n + 1, a.sum + x
      add(want.totals, string.format('{"n":%d,"total":%d,"user":"%s"}', a.n, a.sum, user))
      local m = string.format('"start":%d,"user":"%s"}', ts - ts % 60000, user)
      minutes[m] = (minutes[m] or 0) + 1
    end
    parts[p] = lines
    last = math.max(last, ts)
  end
  -- the watermark pushers: one last record in each partition, all at the
  -- same time (so that their window is one, and stays open)
  for p = 0, PARTITIONS - 1 do
    local pusher, lines = "push" .. p, parts[p]
    lines[#lines + 1] = string.format('%s\t{"user":"%s","ts":%d,"x":0}', pusher, pusher, last + PUSH)
    add(want.totals, string.format('{"n":1,"total":0,"user":"%s"}', pusher))
    parts[p] = table.concat(lines, "\n") .. "\n"
    n = n + #lines
  end
  for m, c in pairs(minutes) do add(want.windows, string.format('{"count":%d,%s', c, m)) end
  INPUT = { parts = parts, n = n, want = want }
  return INPUT
end

-- ---- output and state -----------------------------------------------------------

-- ---- the spec -------------------------------------------------------------------

describe("checkpoints (exactly_once, Kafka source to files and to Kafka, real broker)", function()
  local dir, boot, id, topic_in
  before_each(function()
    dir = E.tmpdir()
    boot = E.kafka_broker()
    id = E.run_id()
    topic_in = "ckk-in-" .. id
    E.create_topic(boot, topic_in, PARTITIONS)
  end)
  after_each(function()
    local keep = os.getenv("EDDY_SPEC_KEEP")
    if keep and dir then E.shell("rm -rf " .. E.quote(keep) .. " && cp -a " .. dir .. " " .. E.quote(keep) .. " 2>/dev/null") end
    E.cleanup()       -- SIGKILLs the daemons it started (by pid); removes dir
  end)

  -- a job: its folder (pipeline, config, out/, state/, logs/), consumer
  -- group `name`, and its runs to come (plan: "kill" or a crash point each)
  local function job(tag, plan)
    local name = tag .. "-" .. id
    local jdir = dir .. "/" .. tag
    local ktopic = name .. "-windows"
    E.create_topic(boot, ktopic, 3)
    E.write(jdir .. "/pipeline.lua", pipeline(topic_in, ktopic))
    local conf = E.write_config(jdir, {
      name = name, threads = 2, parallelism = 2, guarantee = "exactly_once",
      checkpoint = { interval = "300ms", retain = 2 }, state = { dir = jdir .. "/state" },
      -- a fixed, small prefetch (eddy's own is 8 MB a partition for these 4
      -- partitions): the job reads at the pace the kills are spread over, a
      -- pace its input's size was chosen for
      kafka = { ["bootstrap.servers"] = boot, ["session.timeout.ms"] = tostring(SESSION_MS),
                ["heartbeat.interval.ms"] = "300",
                ["queued.max.messages.kbytes"] = "1024", ["queued.min.messages"] = "10000" } })
    return { name = name, dir = jdir, conf = conf, state_dir = jdir .. "/state", plan = plan, runs = {}, ktopic = ktopic,
             phase = "wait", at = 0, kills = 0, points = 0,
             seen = {}, files = {}, rows = { totals = 0, windows = 0 },
             got = { totals = multiset(), windows = multiset() } }
  end

  it("a job killed at random moments at least 20 times, and at each crash point, commits the same rows as a run without crashes", function()
    local t_begin = E.now()
    local inp = input()
    for p = 0, PARTITIONS - 1 do
      E.write(dir .. "/p" .. p .. ".txt", inp.parts[p])
      local rc, out = E.shell(string.format("timeout 60 kcat -P -b %s -t %s -p %d -K '\t' -z lz4 < %s/p%d.txt 2>&1",
        boot, topic_in, p, dir, p))
      assert(rc == 0, "kcat could not produce to in/" .. p .. ": " .. out)
    end
    -- every message arrived
    local _, offsets = E.shell(string.format("timeout 30 kcat -C -b %s -t %s -o beginning -e -q -f '%%p\\n' "
      .. "| sort | uniq -c", boot, topic_in))
    for p = 0, PARTITIONS - 1 do
      local c = offsets:match("(%d+) " .. p .. "\n")
      assert(tonumber(c) == PER_PARTITION + 1, string.format("in/%d holds %s messages, not %d:\n%s", p,
        tostring(c), PER_PARTITION + 1, offsets))
    end
    local t_produced = E.now() - t_begin

    -- the jobs: the run without crashes, and JOBS crash jobs, each with its
    -- share of the random kills and of the crash points
    local ref = job("ckk-ref", {})
    local jobs = { ref }
    for j = 1, JOBS do
      local kills = math.floor(KILLS / JOBS) + (j <= KILLS % JOBS and 1 or 0)
      local at, i = {}, 0
      for k = j, #CRASH_POINTS, JOBS do
        i = i + 1
        at[AT_RUNS[i] or (AT_RUNS[#AT_RUNS] + 4 * (i - #AT_RUNS))] = CRASH_POINTS[k]
      end
      local plan, n = {}, 0
      while kills > 0 or next(at) do
        n = n + 1
        if at[n] then plan[n] = at[n]; at[n] = nil
        else plan[n] = "kill"; kills = kills - 1 end
      end
      jobs[#jobs + 1] = job("ckk-" .. string.char(96 + j), plan)
    end

    local rnd = rng(4242)

    local function story_of(jb)
      local lines = {}
      for _, run in ipairs(jb.runs) do
        lines[#lines + 1] = string.format("  run %d at %.1f s: after checkpoint %s (%d totals rows committed), %s",
          run.n, run.started - t_begin, tostring(run.after), run.before, run.how or "?")
      end
      return table.concat(lines, "\n")
    end

    local function fail(jb, run, msg)
      error(string.format("%s run %d (%s): %s\n%s's runs:\n%s\nthe log of run %d:\n%s", jb.name, run.n, run.kind,
        msg, jb.name, story_of(jb), run.n, tail(run.d:stderr())), 0)
    end

    -- a run started after a committed checkpoint logs "restored checkpoint <its id>"
    local function check_restore(jb, run)
      if run.after == nil then return end
      local id = restored(run.d:stderr())
      if id == nil then fail(jb, run, "started after checkpoint " .. run.after .. " had committed, "
        .. "but did not log 'restored checkpoint'") end
      -- or the newer one whose transaction committed before its manifest said so
      local confirmed = id == run.newest and run.d:stderr():find("checkpoint " .. id .. ": its Kafka transaction "
        .. "committed before the last run stopped", 1, true)
      if id ~= run.after and not confirmed then fail(jb, run, "restored checkpoint " .. tostring(id) .. ", but the "
        .. "newest committed one was " .. run.after) end
    end

    -- look(jb, run): after each run (and every 0.25 s of a last run), the
    -- part files that became visible since the last look (during run, or at
    -- the start of the one before it, which redoes the renames of its
    -- checkpoint): their sizes and rows counted (jb.rows[sink]), each noted
    -- with the run that made it visible; a visible part file never changes
    -- nor goes.  Cheap (sizes and newlines), so that the runs' kills keep
    -- their moments: the rows themselves are read by audit() after the runs
    local function look(jb, run)
      for _, s in ipairs(SINKS) do
        local present = {}
        for _, path in ipairs(E.part_files(jb.dir .. "/out/" .. s)) do
          present[path] = true
          local size = lfs.attributes(path, "size")
          local seen = jb.seen[path]
          if seen and seen.size ~= size then
            fail(jb, run, string.format("the committed part file %s/%s changed (%d bytes, then %d)", s,
              path:match("[^/]+$"), seen.size, size))
          end
          if not seen then
            jb.seen[path] = { size = size, run = run, sink = s }
            jb.files[#jb.files + 1] = path
            jb.rows[s] = jb.rows[s] + select(2, assert(E.read(path)):gsub("\n", ""))
          end
        end
        for path, seen in pairs(jb.seen) do
          if seen.sink == s and not present[path] then
            fail(jb, run, "the committed part file " .. s .. "/" .. path:match("[^/]+$") .. " is gone")
          end
        end
      end
    end

    -- audit(jb): reads the part files look() found into jb.got: each of
    -- their rows must be one the input makes, and no more often than it
    -- makes it (a failure names the run that made the file visible)
    local function audit(jb)
      for _, path in ipairs(jb.files) do
        local seen = jb.seen[path]
        local want, got = inp.want[seen.sink].rows, jb.got[seen.sink]
        local extra = {}
        for l in io.lines(path) do
          if l ~= "" then
            local r = row(l)
            add(got, r)
            if got.rows[r] > (want[r] or 0) then extra[#extra + 1] = r end
          end
        end
        if #extra > 0 then
          fail(jb, seen.run, string.format("the committed part file %s/%s holds %d rows the input does not make "
            .. "(or makes fewer times), e.g.\n  %s", seen.sink, path:match("[^/]+$"), #extra,
            table.concat(extra, "\n  ", 1, math.min(5, #extra))))
        end
      end
    end

    -- a run is over: its log kept (for EDDY_SPEC_KEEP), its output looked at
    local function over(jb, run)
      E.write(string.format("%s/logs/run-%02d.log", jb.dir, run.n), run.d:stderr())
      look(jb, run)
      if run.kind == "kill" and run.delay then      -- totals rows committed a second of reading
        jb.rate = math.max(jb.rate or 0, (jb.rows.totals - run.before) / run.delay)
      end
    end

    -- one step of a job's runs: start, wait for the assignment, kill (or
    -- wait for the crash point, or for the end of the input and SIGTERM)
    local function step(jb, now)
      local run = jb.runs[#jb.runs]
      if jb.phase == "wait" then
        if now < jb.at then return end
        local n = #jb.runs + 1
        local kind = jb.plan[n] or "final"
        run = { n = n, kind = kind, after = last_committed(jb.state_dir), newest = C.newest(jb.state_dir),
                started = now, before = jb.rows.totals }
        jb.runs[n] = run
        run.d = E.start({ "run", jb.conf }, { timeout = kind == "final" and 400 or 120,
          env = kind:find(":", 1, true) and { EDDY_CRASH_AT = kind } or nil })
        jb.phase = "join"
        return
      end
      local code = run.d:code()
      if jb.phase == "join" then
        if run.d:stderr():find("kafka: group '" .. jb.name .. "' assigned", 1, true) then
          run.assigned = now - run.started
          check_restore(jb, run)
          if run.kind == "kill" then
            -- the job must not read everything before its last run, on a
            -- fast machine too: each run left may read at most half of
            -- what is left, at the fastest rate a killed run has shown
            local span = KILL_MAX - KILL_MIN
            if jb.rate then
              local cap = 0.5 * (inp.n - jb.rows.totals) / ((#jb.plan - run.n + 1) * jb.rate)
              span = math.max(0, math.min(span, cap - KILL_MIN))
            end
            run.delay = KILL_MIN + span * rnd(1001) / 1000
            run.kill_at = now + run.delay
            jb.phase = "run"
          else
            jb.phase = run.kind == "final" and "final" or "point"
          end
        elseif code ~= nil and run.kind:find(":", 1, true) then
          jb.phase = "point"               -- the crash point came first
        elseif code ~= nil then
          fail(jb, run, "exited " .. code .. " before its partitions were assigned")
        elseif now - run.started > 40 then
          fail(jb, run, "no partitions assigned after 40 s")
        end
        return
      end
      if jb.phase == "run" then
        if code ~= nil then fail(jb, run, "exited " .. code .. " by itself") end
        if now < run.kill_at then return end
        run.d:kill("KILL")
        code = run.d:wait(10)
        if code ~= 137 then fail(jb, run, "status " .. tostring(code) .. " after SIGKILL") end
        jb.kills = jb.kills + 1
        run.how = string.format("killed %.2f s after the assignment (%.1f s after its start)", run.delay,
          run.assigned)
      elseif jb.phase == "point" then
        if code == nil then
          if now - run.started > 90 then fail(jb, run, "did not reach its crash point in 90 s") end
          return
        end
        check_restore(jb, run)
        if code ~= 137 then fail(jb, run, "EDDY_CRASH_AT=" .. run.kind .. " should have killed it with "
          .. "SIGKILL (status 137), got " .. code) end
        if not run.d:stderr():find("EDDY_CRASH_AT=" .. run.kind .. ": killing myself", 1, true) then
          fail(jb, run, "status 137, but it did not say it killed itself at " .. run.kind)
        end
        jb.points = jb.points + 1
        run.how = "killed itself at " .. run.kind .. (run.assigned
          and string.format(" (assigned %.1f s after its start)", run.assigned) or " before the assignment")
      elseif jb.phase == "final" then
        -- until every input record's total is committed, then SIGTERM (a
        -- last checkpoint: the windows the pushers closed are in it)
        if code ~= nil then fail(jb, run, "exited " .. code .. " by itself") end
        if now < (jb.next_audit or 0) then return end
        jb.next_audit = now + 0.25
        look(jb, run)
        if jb.rows.totals < inp.n then
          if now - run.started > 300 then
            fail(jb, run, string.format("only %d of %d totals rows committed after 300 s", jb.rows.totals, inp.n))
          end
          return
        end
        run.d:kill("TERM")
        code = run.d:wait(30)
        if code ~= 0 then fail(jb, run, "exited " .. tostring(code) .. " after SIGTERM") end
        run.how = string.format("to the end (assigned %.1f s after its start), then SIGTERM", run.assigned)
        over(jb, run)
        jb.phase = "done"
        return
      end
      over(jb, run)
      jb.phase = "wait"
      jb.at = now + RESTART_GAP
    end

    local busy = true
    while busy do
      busy = false
      local now = E.now()
      assert(now - t_begin < 600, "the runs took over 600 s")
      for _, jb in ipairs(jobs) do
        if jb.phase ~= "done" then
          busy = true
          step(jb, now)
        end
      end
      E.sleep(0.05)
    end
    local t_runs = E.now() - t_begin
    for _, jb in ipairs(jobs) do audit(jb) end

    -- what a reader of a job's output topic gets: read_committed, the
    -- committed output (into jb.got.kwindows); read_uncommitted, that and the
    -- records of aborted transactions too (their number)
    local function read_topic(jb, isolation)
      local path = dir .. "/topic.out"
      local rc, out = E.shell(string.format("timeout 60 kcat -C -b %s -t %s -X isolation.level=%s -o beginning -e -q "
        .. "-f '%%s\\n' > %s 2>&1", boot, jb.ktopic, isolation, path))
      assert(rc == 0, "kcat could not read " .. jb.ktopic .. ": " .. out .. tostring(E.read(path)))
      local m = multiset()
      for l in io.lines(path) do if l ~= "" then add(m, row(l)) end end
      return m
    end
    local aborted = 0
    for _, jb in ipairs(jobs) do
      jb.got.kwindows = read_topic(jb, "read_committed")
      aborted = aborted + read_topic(jb, "read_uncommitted").n - jb.got.kwindows.n
    end
    inp.want.kwindows = inp.want.windows

    -- the run without crashes holds what the input makes
    local d = differences(inp.want, ref.got, ALL_SINKS)
    assert(d == "", "the run without crashes did not commit what the input makes:\n" .. d .. "\nits log:\n"
      .. tail(ref.runs[1].d:stderr()))
    local h = hidden(ref.dir)
    assert(#h == 0, "the run without crashes left in-progress files: " .. table.concat(h, " "))

    -- and each crash job the same rows
    local total_kills, total_points, story = 0, 0, {}
    for j = 2, #jobs do
      local jb = jobs[j]
      total_kills, total_points = total_kills + jb.kills, total_points + jb.points
      local restores = 0
      for _, run in ipairs(jb.runs) do
        if run.after ~= nil then restores = restores + 1 end
      end
      story[#story + 1] = string.format("%s: %d runs, %d random kills, %d crash points, %d restores:\n%s",
        jb.name, #jb.runs, jb.kills, jb.points, restores, story_of(jb))
      local final = jb.runs[#jb.runs]
      d = differences(ref.got, jb.got, ALL_SINKS)
      assert(d == "", "the committed output differs from the run without crashes\n" .. d .. "\n" .. story[#story]
        .. "\nthe last run's log:\n" .. tail(final.d:stderr()))
      h = hidden(jb.dir)
      assert(#h == 0, jb.name .. ": in-progress files left after the last run exited 0: " .. table.concat(h, " "))
      -- and the crashes tested something
      assert(final.before > 0, "no output was committed before " .. jb.name .. "'s last run: the kills all came "
        .. "before the job read anything\n" .. story[#story])
      assert(final.before < inp.n, jb.name .. " had committed all its output before its last run: "
        .. "the kills came after the job had read everything\n" .. story[#story])
      assert(restores >= #jb.runs / 2, string.format("only %d of %d runs restored a committed checkpoint\n%s",
        restores, #jb.runs, story[#story]))
    end
    assert(total_kills >= KILLS, total_kills .. " random kills, not " .. KILLS)
    assert(total_points == #CRASH_POINTS, total_points .. " crash points of " .. #CRASH_POINTS)
    -- and the crashes left aborted transactions in the output topics, which
    -- the read_committed reader above did not see
    assert(aborted > 0, "no record of an aborted transaction in any output topic: the crashes tested nothing there")
    if os.getenv("EDDY_SPEC_VERBOSE") then
      io.stderr:write(string.format("\ninput produced at %.1f s, runs done at %.1f s, all %.1f s\n%s\n",
        t_produced, t_runs, E.now() - t_begin, table.concat(story, "\n")))
    end
  end)
end)
