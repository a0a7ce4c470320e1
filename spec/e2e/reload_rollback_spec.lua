-- Automatic rollback end to end (reload.probation, reload.max_error_rate,
-- reload.hold_commits; core/probation.c): a real `eddy run` over a followed
-- input file that a writer process appends "line<N>" lines to.  Version A
-- of the pipeline writes "line<N> A", version B "line<N> B" and raises on
-- some lines (every 20th: 5%, or every 500th: 0.2%, or one line under
-- on_error = "fail").  Every wait is bounded; after_each kills the writer
-- and the daemons even when a spec failed.

local E = require("support.eddy")
local cjson = E.cjson

-- ---- pipeline scripts ---------------------------------------------------------

-- script(tag, raise): a map that tags each line, raising on the lines
-- `raise` (a Lua condition over n, the line's number) picks
local function script(tag, raise, sink)
  return table.concat({
    'local eddy = require("eddy")',
    'local p = eddy.pipeline()',
    'p:source("in", { file = "in.txt", format = "lines", follow = true, timestamp = "ingest" })',
    '  :map(function(v, ctx)',
    '    local n = tonumber(v:match("^line(%d+)$"))',
    raise and ('    if ' .. raise .. ' then error("version ' .. tag .. ' cannot take line " .. n) end') or '',
    '    return v .. " ' .. tag .. '"',
    '  end)',
    sink or '  :sink("out", { file = "out", format = "lines" })',
    'return p',
  }, "\n") .. "\n"
end

local A = script("A")

local function config(dir, extra)
  local c = {
    name = "rb", pipeline = "pipeline.lua", threads = 2, parallelism = 1,
    state = { dir = "state" }, admin = { listen = "127.0.0.1:0" }, reload = { watch = false },
  }
  for k, v in pairs(extra or {}) do
    if type(v) == "table" and type(c[k]) == "table" then for kk, vv in pairs(v) do c[k][kk] = vv end
    else c[k] = v end
  end
  return E.write_config(dir, c)
end

local status = E.status

local function metric(addr, series)
  local code, body = E.curl("http://" .. addr .. "/metrics")
  assert.are.equal(200, code)
  return E.metrics(body)[series]
end

local ROLLED_BACK = 'eddy_reloads_total{result="rolled_back"}'

local function start(dir)
  local d = E.start({ "run", dir .. "/eddy.conf.lua" }, { timeout = 120 })
  local addr = E.admin_addr(dir .. "/state", 10)
  assert(addr, "no admin.addr; stderr:\n" .. d:stderr())
  return d, addr
end

-- new_addr(dir, old): the admin address of the process that replaced the
-- one listening at old (a restart re-execs eddy; admin.listen port 0)
local function new_addr(dir, old)
  return E.wait_for(function()
    local t = E.read(dir .. "/state/admin.addr")
    local a = t and t:match("^(%S+:%d+)\n")
    if a and a ~= old and status(a) then return a end
  end, 20)
end

local function source_in(st)
  local n = 0
  for _, t in ipairs(st.tasks) do if t.source then n = n + t.records_in end end
  return n
end

local function wait_progress(addr, n)
  local from = source_in(status(addr))
  assert(E.wait_for(function() local st = status(addr); return st and source_in(st) >= from + n end, 15),
    "no progress: the source did not read " .. n .. " more records")
end

-- stop_clean(d): SIGTERM, and the run ends cleanly (exit 0)
local function stop_clean(d)
  d:kill("TERM")
  assert.are.equal(0, d:wait(30), "eddy did not stop cleanly; stderr:\n" .. d:stderr())
end

-- reload(addr): `eddy reload`, again while eddy answers 503 because a
-- checkpoint is in progress (every 300 ms in the exactly_once specs)
local function reload(addr)
  local r
  E.wait_for(function()
    r = E.run({ "reload", "--admin", addr }, { timeout = 60 })
    return r.code == 0 or not r.stderr:find("a checkpoint is in progress", 1, true)
  end, 15, 0.05)
  assert.are.equal(0, r.code, "eddy reload: " .. r.stdout .. r.stderr)
  return r
end

-- ---- the writer ---------------------------------------------------------------------

-- Appends "line<N>" lines in batches until the stop file appears or `max`
-- lines were written, then writes the number of lines to the count file.
local WRITER = [[
local ffi = require("ffi")
ffi.cdef("int usleep(unsigned int usec);")
local path, stop, count = arg[1], arg[2], arg[3]
local batch, usec, max = tonumber(arg[4]), tonumber(arg[5]), tonumber(arg[6])
local f = assert(io.open(path, "ab"))
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

local function start_writer(dir, batch, usec, max)
  local input = dir .. "/in.txt"
  dir = E.tmpdir()
  local w = { dir = dir, stop = dir .. "/writer.stop", count = dir .. "/writer.count" }
  E.write(dir .. "/writer.lua", WRITER)
  os.execute(string.format("timeout -k 2 120 luajit %s %s %s %s %d %d %d </dev/null >%s 2>&1 & echo $! >%s",
    E.quote(dir .. "/writer.lua"), E.quote(input), E.quote(w.stop), E.quote(w.count),
    batch, usec, max or 1e9, E.quote(dir .. "/writer.log"), E.quote(dir .. "/writer.pid")))
  w.pid = tonumber((E.wait_for(function() return E.read(dir .. "/writer.pid") end, 5) or ""):match("%d+"))
  assert(w.pid, "the writer did not start")
  writers[#writers + 1] = w
  return w
end

local function stop_writer(w)
  E.write(w.stop, "")
  local s = E.wait_for(function() return E.read(w.count) end, 30)
  assert(s, "the writer did not stop: " .. tostring(E.read(w.dir .. "/writer.log")))
  w.done = true
  return tonumber(s:match("%d+"))
end

-- ---- output -------------------------------------------------------------------------

-- output(dir): { [n] = tag } of the sink's visible part files; a line that
-- came out twice fails
local function output(dir)
  local by_n, count = {}, 0
  for _, path in ipairs(E.part_files(dir .. "/out")) do
    for _, l in ipairs(E.lines(E.read(path))) do
      local n, tag = l:match("^line(%d+) (%u)$")
      assert(n, "unexpected output line in " .. path .. ": " .. l)
      n = tonumber(n)
      assert(not by_n[n], "line" .. n .. " came out twice")
      by_n[n] = tag
      count = count + 1
    end
  end
  return by_n, count
end

local function wait_output(dir, total, timeout)
  local by_n, count
  E.wait_for(function() by_n, count = output(dir); return count >= total end, timeout or 20)
  return by_n, count
end

-- dead(dir): { [n] = true } of the lines in the dead-letter file
local function dead(dir)
  local out = {}
  for _, r in ipairs(E.json_lines(dir .. "/state/dead-letter.jsonl") or {}) do
    local n = tostring(r.record or ""):match("^line(%d+)")
    assert(n, "a dead letter without its record: " .. cjson.encode(r))
    out[tonumber(n)] = r
  end
  return out
end

-- the committed output is that of version A alone: every line once, tagged A
local function assert_a_alone(by_n, count, total)
  assert.are.equal(total, count, "lines in the committed output")
  for n = 1, total do
    assert(by_n[n] == "A", "line" .. n .. ": " .. tostring(by_n[n]) .. " (version A alone tags every line A)")
  end
end

-- ---- the specs ----------------------------------------------------------------------

describe("automatic rollback", function()
  local dir

  before_each(function() dir = E.tmpdir() end)

  after_each(function()
    for _, w in ipairs(writers) do
      if not w.done then os.execute("kill -TERM " .. w.pid .. " 2>/dev/null") end
    end
    writers = {}
    E.cleanup()
  end)

  it("rolls back a version whose error rate (5% dead-lettered) passes max_error_rate = 0.01 within the "
    .. "probation, at a barrier: later lines are version A's again; /status last_rollback, the metric and "
    .. "the log say why; the dead letters stay", function()
    E.write(dir .. "/in.txt", "")
    E.write(dir .. "/pipeline.lua", A)
    config(dir, { on_error = "dead_letter", reload = { probation = "30s", max_error_rate = 0.01 } })
    local d, addr = start(dir)
    local w = start_writer(dir, 20, 10000)
    wait_progress(addr, 500)
    E.write(dir .. "/pipeline.lua", script("B", "n % 20 == 0"))
    local t0 = E.now()
    reload(addr)
    local st = E.wait_for(function()
      local s = status(addr)
      return s and s.pipeline.last_rollback ~= cjson.null and s
    end, 30)
    assert(st, "no rollback within the probation; stderr:\n" .. d:stderr())
    assert(E.now() - t0 < 30, "the rollback came after the probation")
    local rb = st.pipeline.last_rollback
    assert.are.equal(2, rb.from)
    assert.are.equal(1, rb.to)
    assert.are.equal(3, rb.version)
    assert.are.equal(3, st.pipeline.version)
    assert.truthy(rb.reason:find("reload.max_error_rate", 1, true), rb.reason)
    assert(rb.at > 0)
    assert.are.equal(cjson.null, st.pipeline.probation)   -- a rollback is not put on probation
    assert.are.equal(1, metric(addr, ROLLED_BACK))
    assert.are.equal(1, metric(addr, 'eddy_reloads_total{result="ok"}'))
    wait_progress(addr, 500)
    local total = stop_writer(w)
    local by_n, count = wait_output(dir, total - 1)   -- (the dead letters are not in it)
    stop_clean(d)
    assert.truthy(d:stderr():find("rollback: version 2 went back to version 1", 1, true), d:stderr())
    by_n, count = output(dir)
    local dl = dead(dir)
    -- every line once: in the output, or (version B raised on it) a dead letter
    local last_b, first_b, ndead = 0, nil, 0
    for n = 1, total do
      if dl[n] then
        ndead = ndead + 1
        assert(not by_n[n], "line" .. n .. " is both an output and a dead letter")
        assert(n % 20 == 0, "line" .. n .. " is a dead letter, but version B raises only on every 20th")
        assert.truthy(tostring(dl[n].error):find("version B cannot take", 1, true))
        last_b = n
        first_b = first_b or n
      else
        assert(by_n[n], "line" .. n .. " is missing")
        if by_n[n] == "B" then last_b = math.max(last_b, n); first_b = first_b or n end
      end
    end
    assert(first_b and ndead > 0, "version B never ran")
    assert.are.equal(count + ndead, total)
    -- after version B's last line, every line is A's: the rollback held
    for n = last_b + 1, total do assert.are.equal("A", by_n[n], "line" .. n .. " after the rollback") end
    assert(total - last_b >= 500, "too few lines after the rollback: " .. (total - last_b))
  end)

  it("after a rollback at a barrier, a SIGKILL and a new start do not bring the rejected version back: the "
    .. "start runs the previous version's kept copy, not the files", function()
    E.write(dir .. "/in.txt", "")
    E.write(dir .. "/pipeline.lua", A)
    config(dir, { on_error = "dead_letter", reload = { probation = "30s", max_error_rate = 0.01 } })
    local d, addr = start(dir)
    local w = start_writer(dir, 20, 10000, 6000)
    wait_progress(addr, 300)
    E.write(dir .. "/pipeline.lua", script("B", "n % 20 == 0"))
    reload(addr)
    assert(E.wait_for(function()
      local st = status(addr)
      return st and st.pipeline.last_rollback ~= cjson.null
    end, 30), "no rollback; stderr:\n" .. d:stderr())
    d:kill("KILL")
    d:wait(10)
    local d2 = E.start({ "run", dir .. "/eddy.conf.lua" }, { timeout = 120 })
    local addr2 = new_addr(dir, addr)
    assert(addr2, "eddy did not start again; stderr:\n" .. d2:stderr())
    local rb = status(addr2).pipeline.last_rollback
    assert(rb ~= cjson.null, "the new start does not report the rollback")
    assert.are.equal(2, rb.from)
    assert.truthy(d2:stderr():find("not the pipeline's files", 1, true), d2:stderr())
    local total = stop_writer(w)
    wait_output(dir, total, 30)
    stop_clean(d2)
    -- at_least_once after a crash: the file is read again from its start and
    -- the sink's output replaced, all of it by the previous version
    local by_n, count = output(dir)
    assert_a_alone(by_n, count, total)
    assert.truthy(d2:stderr():find("the next run runs the pipeline's files, which still hold the version rolled "
      .. "back", 1, true), d2:stderr())
  end)

  it("keeps a version whose error rate (0.2%) stays within max_error_rate once the probation is over",
    function()
    E.write(dir .. "/in.txt", "")
    E.write(dir .. "/pipeline.lua", A)
    config(dir, { on_error = "dead_letter", reload = { probation = "3s", max_error_rate = 0.01 } })
    local d, addr = start(dir)
    local w = start_writer(dir, 20, 10000)
    wait_progress(addr, 200)
    E.write(dir .. "/pipeline.lua", script("B", "n % 500 == 0"))
    reload(addr)
    local st = status(addr)
    assert.are.equal(2, st.pipeline.probation.version)
    assert.are.equal(1, st.pipeline.probation.rolls_back_to)
    assert(E.wait_for(function()
      local s = status(addr)
      return s and s.pipeline.probation == cjson.null
    end, 15), "the probation did not end")
    st = status(addr)
    assert.are.equal(2, st.pipeline.version)
    assert.are.equal(cjson.null, st.pipeline.last_rollback)
    assert.are.equal(0, metric(addr, ROLLED_BACK))
    local total = stop_writer(w)
    local _, count = wait_output(dir, total - 20)
    stop_clean(d)
    assert.truthy(d:stderr():find("version 2 passed its probation", 1, true), d:stderr())
    assert(not E.exists(dir .. "/state/probation"), "the probation's files stayed")
    local by_n
    by_n, count = output(dir)
    local dl = dead(dir)
    local nb = 0
    for n = 1, total do
      assert(by_n[n] or dl[n], "line" .. n .. " is missing")
      if by_n[n] == "B" then nb = nb + 1 end
    end
    assert(nb > 1000, "version B wrote " .. nb .. " lines")
  end)

  it("rolls back a version whose task fails during the probation: eddy restarts on the previous version "
    .. "(at_least_once: the files are read again, the output is version A's)", function()
    E.write(dir .. "/in.txt", "")
    E.write(dir .. "/pipeline.lua", A)
    config(dir, { reload = { probation = "30s" } })
    local d, addr = start(dir)
    local w = start_writer(dir, 20, 10000, 6000)
    wait_progress(addr, 500)
    local at = source_in(status(addr))
    -- version B fails on a line a little ahead of the reader
    E.write(dir .. "/pipeline.lua", script("B", "n == " .. (at + 1500)))
    reload(addr)
    local addr2 = new_addr(dir, addr)
    assert(addr2, "eddy did not restart; stderr:\n" .. d:stderr())
    local st = status(addr2)
    local rb = st.pipeline.last_rollback
    assert(rb ~= cjson.null, "no last_rollback after the restart")
    assert.are.equal(2, rb.from)
    assert.are.equal(1, rb.to)
    assert.truthy(rb.reason:find("failed on it", 1, true), rb.reason)
    assert.truthy(rb.reason:find("version B cannot take line " .. (at + 1500), 1, true), rb.reason)
    assert.are.equal(1, st.pipeline.version)
    assert.are.equal(1, metric(addr2, ROLLED_BACK))
    assert.truthy(d:stderr():find("rollback: version 2 goes back to version 1", 1, true), d:stderr())
    local total = stop_writer(w)
    local by_n, count = wait_output(dir, total)
    assert(d:alive(), "eddy stopped; stderr:\n" .. d:stderr())
    stop_clean(d)
    by_n, count = output(dir)
    assert_a_alone(by_n, count, total)
    assert(not E.exists(dir .. "/state/probation"), "a clean stop leaves no rollback behind")
  end)

  it("rolls back a version whose task fails during the probation under exactly_once (no hold_commits): eddy "
    .. "restarts on the previous version from the last committed checkpoint; each line once, none of version B's "
    .. "after the failing line", function()
    E.write(dir .. "/in.txt", "")
    E.write(dir .. "/pipeline.lua", A)
    config(dir, { guarantee = "exactly_once", checkpoint = { interval = "300ms" },
                  restart = { strategy = "none" }, reload = { probation = "30s" } })
    local d, addr = start(dir)
    local w = start_writer(dir, 20, 10000, 10000)
    wait_progress(addr, 500)
    local bad = source_in(status(addr)) + 1500
    E.write(dir .. "/pipeline.lua", script("B", "n == " .. bad))
    reload(addr)
    local addr2 = new_addr(dir, addr)
    assert(addr2, "eddy did not restart (restart.strategy = none does not stop a rollback); stderr:\n" .. d:stderr())
    local rb = status(addr2).pipeline.last_rollback
    assert(rb ~= cjson.null)
    assert.truthy(rb.reason:find("version B cannot take line " .. bad, 1, true), rb.reason)
    assert.truthy(d:stderr():find("from the last committed checkpoint", 1, true), d:stderr())
    local total = stop_writer(w)
    wait_output(dir, total, 30)
    stop_clean(d)
    local by_n, count = output(dir)
    assert.are.equal(total, count)
    local nb = 0
    for n = 1, total do
      assert(by_n[n], "line" .. n .. " is missing")
      if by_n[n] == "B" then nb = nb + 1; assert(n < bad, "line" .. n .. " was committed by version B") end
    end
    assert(nb > 0, "no committed line of version B (the test proves less than it says)")
  end)

  -- exactly_once with reload.hold_commits: the committed output (the file
  -- sink's visible part files) is that of version A alone, row for row
  local function hold_config(probation)
    config(dir, { guarantee = "exactly_once", on_error = "dead_letter", checkpoint = { interval = "300ms" },
                  reload = { probation = probation, max_error_rate = 0.01, hold_commits = true } })
  end

  it("with hold_commits under exactly_once, a version rolled back for its error rate leaves no committed "
    .. "output: the committed output equals a run of version A alone", function()
    E.write(dir .. "/in.txt", "")
    E.write(dir .. "/pipeline.lua", A)
    hold_config("30s")
    local d, addr = start(dir)
    local w = start_writer(dir, 20, 10000, 10000)
    wait_progress(addr, 500)
    -- version B raises only from 1500 lines ahead of the reader on: checkpoints
    -- every 300 ms would commit some of its output before its errors begin
    local at = source_in(status(addr))
    E.write(dir .. "/pipeline.lua", script("B", "n > " .. (at + 1500) .. " and n % 20 == 0"))
    reload(addr)
    local addr2 = new_addr(dir, addr)
    assert(addr2, "eddy did not restart; stderr:\n" .. d:stderr())
    local rb = status(addr2).pipeline.last_rollback
    assert(rb ~= cjson.null)
    assert.truthy(rb.reason:find("reload.max_error_rate", 1, true), rb.reason)
    assert.truthy(d:stderr():find("committed at the reload's barrier", 1, true), d:stderr())
    local total = stop_writer(w)
    wait_output(dir, total, 30)
    stop_clean(d)
    local by_n, count = output(dir)
    assert_a_alone(by_n, count, total)
    assert(next(dead(dir)), "version B's dead letters stay in the dead-letter file")
  end)

  it("with hold_commits, nothing is committed during the probation, and a version that passes it has its "
    .. "output committed after it: each line once", function()
    E.write(dir .. "/in.txt", "")
    E.write(dir .. "/pipeline.lua", A)
    hold_config("6s")
    local d, addr = start(dir)
    local w = start_writer(dir, 20, 10000, 10000)
    wait_progress(addr, 500)
    E.write(dir .. "/pipeline.lua", script("B"))
    reload(addr)
    local st = status(addr)
    assert(st.pipeline.probation ~= cjson.null, "no probation")
    local _, held = output(dir)
    local ckpt = st.last_checkpoint and st.last_checkpoint.id
    E.sleep(1.5)                                         -- within the probation: 5 checkpoint intervals
    st = status(addr)
    assert(st.pipeline.probation ~= cjson.null, "the probation ended early")
    local _, later = output(dir)
    assert.are.equal(held, later, "output was committed during the probation")
    assert.are.equal(ckpt, st.last_checkpoint and st.last_checkpoint.id, "a checkpoint ran during the probation")
    assert(E.wait_for(function()
      local s2 = status(addr)
      return s2 and s2.pipeline.probation == cjson.null
    end, 15), "the probation did not end")
    local total = stop_writer(w)
    wait_output(dir, total, 30)
    stop_clean(d)
    local by_n, count = output(dir)
    assert.are.equal(total, count)
    local nb = 0
    for n = 1, total do
      assert(by_n[n], "line" .. n .. " is missing")
      if by_n[n] == "B" then nb = nb + 1 end
    end
    assert(nb > 0, "version B's output was never committed")
    assert.truthy(d:stderr():find("version 2 passed its probation", 1, true), d:stderr())
  end)

  it("with hold_commits, a SIGKILL during the probation: the next start runs the previous version from the "
    .. "checkpoint at the reload's barrier; the committed output equals a run of version A alone", function()
    E.write(dir .. "/in.txt", "")
    E.write(dir .. "/pipeline.lua", A)
    hold_config("60s")
    local d, addr = start(dir)
    local w = start_writer(dir, 20, 10000, 8000)
    wait_progress(addr, 500)
    E.write(dir .. "/pipeline.lua", script("B"))      -- a version that raises on nothing
    reload(addr)
    wait_progress(addr, 1000)
    local st = status(addr)
    assert.are.equal(2, st.pipeline.probation.version)
    assert.is_true(st.pipeline.probation.hold_commits)
    d:kill("KILL")
    d:wait(10)
    local d2 = E.start({ "run", dir .. "/eddy.conf.lua" }, { timeout = 120 })
    local addr2 = new_addr(dir, addr)
    assert(addr2, "eddy did not start again; stderr:\n" .. d2:stderr())
    local rb = status(addr2).pipeline.last_rollback
    assert(rb ~= cjson.null, "no last_rollback after the start")
    assert.truthy(rb.reason:find("crash or a kill", 1, true), rb.reason)
    assert.truthy(d2:stderr():find("not the pipeline's files", 1, true), d2:stderr())
    local total = stop_writer(w)
    wait_output(dir, total, 30)
    stop_clean(d2)
    local by_n, count = output(dir)
    assert_a_alone(by_n, count, total)
  end)
  it("with hold_commits under exactly_once and a Kafka sink (a real broker), a rolled-back version's records "
    .. "are never seen by a read_committed reader: it reads a run of version A alone", function()
    local boot = E.kafka_broker()
    local topic = "rb-" .. E.run_id()
    E.create_topic(boot, topic, 1)
    local sink = '  :sink("out", { kafka = "' .. topic .. '", format = "lines" })'
    E.write(dir .. "/in.txt", "")
    E.write(dir .. "/pipeline.lua", script("A", nil, sink))
    config(dir, { name = "rbk-" .. E.run_id(), guarantee = "exactly_once", on_error = "dead_letter",
                  checkpoint = { interval = "300ms" },
                  kafka = { ["bootstrap.servers"] = boot },
                  reload = { probation = "20s", max_error_rate = 0.01, hold_commits = true } })
    local d, addr = start(dir)
    assert(E.wait_for(function() local st = status(addr); return st and st.state == "running" end, 30),
      "eddy did not start; stderr:\n" .. d:stderr())
    local w = start_writer(dir, 20, 10000, 10000)
    wait_progress(addr, 500)
    local at = source_in(status(addr))
    E.write(dir .. "/pipeline.lua", script("B", "n > " .. (at + 1500) .. " and n % 20 == 0", sink))
    reload(addr)
    local addr2 = new_addr(dir, addr)
    assert(addr2, "eddy did not restart; stderr:\n" .. d:stderr())
    local rb = status(addr2).pipeline.last_rollback
    assert(rb ~= cjson.null)
    assert.truthy(rb.reason:find("reload.max_error_rate", 1, true), rb.reason)
    local total = stop_writer(w)
    local function read(isolation)
      local rc, out = E.shell(string.format("timeout 60 kcat -C -b %s -t %s -X isolation.level=%s -o beginning "
        .. "-e -q -f '%%s\\n' 2>&1", boot, topic, isolation))
      assert.are.equal(0, rc, "kcat could not read " .. topic .. ": " .. out)
      return E.lines(out)
    end
    assert(E.wait_for(function() return #read("read_committed") >= total end, 60),
      "the committed output did not reach " .. total .. " lines")
    stop_clean(d)
    local by_n, count = {}, 0
    for _, l in ipairs(read("read_committed")) do
      local n, tag = l:match("^line(%d+) (%u)$")
      assert(n, "unexpected record: " .. l)
      n = tonumber(n)
      assert(not by_n[n], "line" .. n .. " was committed twice")
      by_n[n], count = tag, count + 1
    end
    assert_a_alone(by_n, count, total)
    -- version B did write to the topic: its aborted records are there for a read_uncommitted reader
    local b = 0
    for _, l in ipairs(read("read_uncommitted")) do if l:match(" B$") then b = b + 1 end end
    assert(b > 0, "version B wrote nothing to the topic (the test proves nothing)")
  end)
end)
