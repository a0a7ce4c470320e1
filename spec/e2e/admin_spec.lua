-- The admin HTTP server of a running daemon (a followed file keeps it up):
-- /health, /status, /metrics, unknown paths; then SIGTERM and SIGINT stop it
-- gracefully with everything read written and exit 0.

local E = require("support.eddy")
local cjson = require("cjson")

-- line 3 the source (followed), line 4 the map "checker" that raises on n == 0
local PIPELINE = [[
local eddy = require("eddy")
local p = eddy.pipeline()
p:source("in", { file = "in.jsonl", follow = true })
 :map(function(v) if v.n == 0 then error("zero") end return v end):uid("checker")
 :key_by("n", { parallelism = 2 }):uid("by-n")
 :sink("out", { file = "out" })
return p
]]

local metrics = E.metrics

describe("the admin server", function()
  local dir, daemon, addr

  -- start(n): a daemon over n records (every 5th one has n == 0 and is skipped)
  local function start(n, extra)
    dir = E.tmpdir()
    local lines = {}
    for i = 1, n do lines[i] = '{"n":' .. (i % 5 == 0 and 0 or i) .. '}' end
    E.write(dir .. "/in.jsonl", table.concat(lines, "\n") .. "\n")
    E.write(dir .. "/pipeline.lua", PIPELINE)
    local config = { name = "adm", admin = { listen = "127.0.0.1:0" }, on_error = "skip" }
    for k, v in pairs(extra or {}) do config[k] = v end
    E.write_config(dir, config)
    daemon = E.start({ "run", dir .. "/eddy.conf.lua" })
    addr = E.admin_addr(dir .. "/state/adm", 10)
    assert.is_string(addr, "no admin.addr; stderr: " .. daemon:stderr())
  end

  local function get(path) return E.curl("http://" .. addr .. path) end

  -- waits until the source task has read n records (per /metrics)
  local function wait_read(n)
    return E.wait_for(function()
      local _, body = get("/metrics")
      return metrics(body)['eddy_records_in_total{task="in-0",version="1"}'] == n
    end, 10)
  end

  after_each(E.cleanup)

  it("with listen port 0 picks a free port and writes host:port to state.dir/admin.addr", function()
    start(3)
    assert.matches("^127%.0%.0%.1:%d+$", addr)
    assert.are_not.equal("127.0.0.1:0", addr)
    assert.are.equal(addr .. "\n", E.read(dir .. "/state/adm/admin.addr"))
    assert.matches("listening on http://" .. addr, daemon:stderr(), 1, true)
  end)

  it("GET /health answers 200 ok", function()
    start(3)
    local code, body = get("/health")
    assert.are.equal(200, code)
    assert.matches("^ok\n?$", body)
  end)

  it("GET /status gives the app, the pipeline's path, version and hashes, and each task's counters", function()
    start(10)
    assert.is_truthy(wait_read(10))
    local code, body = get("/status")
    assert.are.equal(200, code)
    local s = cjson.decode(body)
    assert.are.equal("adm", s.app)
    assert.are.equal("running", s.state)
    assert.are.equal(dir .. "/pipeline.lua", s.pipeline.path)
    assert.are.equal(1, s.pipeline.version)
    assert.matches("^%x+$", s.pipeline.sha256)
    assert.are.equal(64, #s.pipeline.sha256)
    assert.are.equal(s.pipeline.sha256:sub(1, #s.pipeline.hash), s.pipeline.hash)
    assert.are.equal(cjson.null, s.pipeline.last_reload_error)
    assert.are.equal(3, #s.tasks)
    local by = {}
    for _, t in ipairs(s.tasks) do by[t.name] = t end
    local src = by["in-0"]
    assert.is_table(src)
    assert.are.equal("in", src.stage)
    assert.are.equal("running", src.status)
    assert.are.equal("in", src.source)
    assert.are.equal(0, src.partition)
    assert.are.equal(dir .. "/in.jsonl", src.file)
    assert.are.equal(#E.read(dir .. "/in.jsonl"), src.position)
    assert.are.equal(10, src.records_in)
    assert.are.equal(2, src.errors)
    assert.are.equal(2, src.skipped)
    assert.are.equal(0, src.dead_letters)
    local keyed_in = 0
    for i = 0, 1 do
      local t = by["keyed1-" .. i]
      assert.is_table(t, "no task keyed1-" .. i)
      assert.are.equal("keyed1", t.stage)
      assert.are.equal("number", type(t.queue))
      assert.is_nil(t.source)
      keyed_in = keyed_in + t.records_in
    end
    assert.is_truthy(E.wait_for(function()
      local _, b = get("/status")
      local n = 0
      for _, t in ipairs(cjson.decode(b).tasks) do if t.stage == "keyed1" then n = n + t.records_in end end
      return n == 8
    end, 5), "the keyed tasks did not take in the 8 good records")
  end)

  it("GET /metrics gives Prometheus text with eddy_ names whose counters match the records processed", function()
    start(10)
    assert.is_truthy(wait_read(10))
    local code, body = get("/metrics")
    assert.are.equal(200, code)
    for _, name in ipairs({ "eddy_records_in_total", "eddy_operator_records_in_total", "eddy_errors_total",
        "eddy_records_skipped_total", "eddy_dead_letters_total", "eddy_channel_queue_depth",
        "eddy_vm_memory_bytes", "eddy_tasks" }) do
      assert.matches("# TYPE " .. name .. " ", body, 1, true)
    end
    for line in body:gmatch("[^\n]+") do
      assert.is_truthy(line:match("^# ") or line:match("^eddy_[%w_]+{[^}]*} %-?[%d%.e+]+$")
        or line:match("^eddy_[%w_]+ %-?[%d%.e+]+$"), "not a sample line: " .. line)
    end
    local m = metrics(body)
    assert.are.equal(10, m['eddy_records_in_total{task="in-0",version="1"}'])
    assert.are.equal(2, m['eddy_errors_total{task="in-0",version="1"}'])
    assert.are.equal(2, m['eddy_records_skipped_total{task="in-0",version="1"}'])
    assert.are.equal(0, m['eddy_dead_letters_total{task="in-0",version="1"}'])
    assert.are.equal(10, m['eddy_operator_records_in_total{task="in-0",operator="checker",kind="map",version="1"}'])
    assert.are.equal(8, m['eddy_operator_records_in_total{task="in-0",operator="by-n",kind="key_by",version="1"}'])
    assert.is_true(m['eddy_vm_memory_bytes{task="in-0"}'] > 0)
    assert.are.equal(3, m['eddy_tasks{state="running"}'])
    assert.is_number(m['eddy_channel_queue_depth{from="in-0",to="keyed1-0"}'])
    -- the sinks of both keyed tasks together took in the 8 good records
    assert.is_truthy(E.wait_for(function()
      local mm = metrics(select(2, get("/metrics")))
      return (mm['eddy_operator_records_in_total{task="keyed1-0",operator="out",kind="sink",version="1"}'] or 0)
        + (mm['eddy_operator_records_in_total{task="keyed1-1",operator="out",kind="sink",version="1"}'] or 0) == 8
    end, 5))
  end)

  it("an unknown path answers 404", function()
    start(1)
    local code = get("/no/such/thing")
    assert.are.equal(404, code)
  end)

  it("a followed file's new lines are read and written while the daemon runs", function()
    start(2)
    assert.is_truthy(wait_read(2))
    E.append(dir .. "/in.jsonl", '{"n":101}\n{"n":102}\n')
    local t0 = E.now()
    assert.is_truthy(E.wait_for(function() return #E.sink_lines(dir .. "/out") == 4 end, 5),
      "the appended lines did not reach the sink")
    assert.is_true(E.now() - t0 < 2, "took " .. (E.now() - t0) .. " s")
    assert.are.same(E.sorted({ '{"n":1}', '{"n":2}', '{"n":101}', '{"n":102}' }), E.sink_lines(dir .. "/out"))
  end)

  it("a line appended to a followed file in two pieces is read once, whole, with its own position", function()
    start(1)
    assert.is_truthy(wait_read(1))
    E.append(dir .. "/in.jsonl", '{"n":')
    E.sleep(0.3)
    E.append(dir .. "/in.jsonl", '42}\n')
    assert.is_truthy(E.wait_for(function() return #E.sink_lines(dir .. "/out") == 2 end, 5))
    assert.are.same({ '{"n":1}', '{"n":42}' }, E.sink_lines(dir .. "/out"))
    local _, body = get("/metrics")
    assert.are.equal(2, metrics(body)['eddy_records_in_total{task="in-0",version="1"}'])
    assert.are.equal(0, metrics(body)['eddy_errors_total{task="in-0",version="1"}'])
  end)

  for _, sig in ipairs({ "TERM", "INT" }) do
    it("SIG" .. sig .. " stops it gracefully: exit 0, and every record read is written", function()
      start(10)
      assert.is_truthy(wait_read(10))
      E.append(dir .. "/in.jsonl", '{"n":11}\n')
      assert.is_truthy(wait_read(11))
      daemon:kill(sig)
      local code = daemon:wait(10)
      assert.are.equal(0, code, daemon:stderr())
      local expected = {}
      for i = 1, 11 do if i % 5 ~= 0 then expected[#expected + 1] = '{"n":' .. i .. '}' end end
      assert.are.same(E.sorted(expected), E.sink_lines(dir .. "/out"))
      assert.matches("SIG" .. sig .. ": stopping", daemon:stderr(), 1, true)
    end)
  end

  it("SIGTERM in the middle of a large input drains what is in flight: every record read is written", function()
    dir = E.tmpdir()
    local lines = {}
    for i = 1, 20000 do lines[i] = '{"n":' .. i .. '}' end
    E.write(dir .. "/in.jsonl", table.concat(lines, "\n") .. "\n")
    E.write(dir .. "/pipeline.lua", [[
local eddy = require("eddy")
local p = eddy.pipeline()
p:source("in", { file = "in.jsonl", follow = true })
 :map(function(v) local s = 0; for i = 1, 2000 do s = s + i end; return v end)
 :key_by("n", { parallelism = 3 })
 :map(function(v) return v.n end)
 :sink("out", { file = "out", format = "lines" })
return p
]])
    E.write_config(dir, { name = "drain", admin = false, threads = 2 })
    daemon = E.start({ "run", dir .. "/eddy.conf.lua" })
    assert.is_truthy(E.wait_for(function() return #E.part_files(dir .. "/out") > 0 end, 10))
    daemon:kill("TERM")
    assert.are.equal(0, daemon:wait(10), daemon:stderr())
    local read = tonumber(daemon:stderr():match("stopped: (%d+) records read"))
    assert.is_number(read, daemon:stderr())
    if os.getenv("EDDY_SPEC_DEBUG") then io.stderr:write("drain: read ", read, "\n") end
    local got = E.sink_lines(dir .. "/out")
    assert.are.equal(read, #got)
    -- the records read are the first `read` lines of the file, each written once
    local seen = {}
    for _, l in ipairs(got) do
      local n = tonumber(l)
      assert.is_nil(seen[n], "written twice: " .. l)
      seen[n] = true
    end
    for i = 1, read do assert.is_true(seen[i], "record " .. i .. " is missing") end
  end)

  it("SIGTERM stops a daemon reading a standard input that stays open: exit 0, the records written", function()
    dir = E.tmpdir()
    E.write(dir .. "/pipeline.lua", [[
local eddy = require("eddy")
local p = eddy.pipeline()
p:source("in", { stdin = true, format = "lines" })
 :map(function(v) return v:upper() end)
 :sink("out", { file = "out", format = "lines" })
return p
]])
    E.write_config(dir, { name = "stdin", admin = false })
    daemon = E.start({ "run", dir .. "/eddy.conf.lua" }, { stdin = "one\ntwo\n", stdin_open = true })
    assert.is_truthy(E.wait_for(function() return #E.sink_lines(dir .. "/out") == 2 end, 10), daemon:stderr())
    assert.is_true(daemon:alive(), "eddy ended although its standard input is still open")
    daemon:kill("TERM")
    assert.are.equal(0, daemon:wait(10), daemon:stderr())
    assert.are.same({ "ONE", "TWO" }, E.sink_lines(dir .. "/out"))
  end)

  it("admin = false starts no server and writes no admin.addr", function()
    dir = E.tmpdir()
    E.write(dir .. "/in.jsonl", '{"n":1}\n')
    E.write(dir .. "/pipeline.lua", PIPELINE)
    E.write_config(dir, { name = "adm", admin = false })
    daemon = E.start({ "run", dir .. "/eddy.conf.lua" })
    assert.is_truthy(E.wait_for(function() return #E.sink_lines(dir .. "/out") == 1 end, 10))
    assert.is_false(E.exists(dir .. "/state/adm/admin.addr"))
    assert.is_nil(daemon:stderr():find("listening", 1, true))
    daemon:kill("TERM")
    assert.are.equal(0, daemon:wait(10))
  end)
end)
