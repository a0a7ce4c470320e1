-- Hardening (issue 19): what a user's script, a second process, a damaged
-- checkpoint, a full disk or a browser does must end in a clear error (or
-- be handled), never in a hang, a crash or duplicated output.  Each case
-- runs the real bin/eddy; every wait is bounded.

local E = require("support.eddy")
local cjson = E.cjson

-- a followed input, keyed, mapped, sunk: a daemon that keeps running
local function running_script(extra_map)
  return table.concat({
    'local eddy = require("eddy")',
    'local p = eddy.pipeline()',
    'p:source("in", { file = "in.txt", format = "lines", follow = true, timestamp = "ingest" })',
    '  :map(function(v, ctx) ' .. (extra_map or "") .. ' return v end)',
    '  :sink("out", { file = "out", format = "lines" })',
    'return p',
  }, "\n") .. "\n"
end

local function daemon(dir, script, extra)
  E.write(dir .. "/pipeline.lua", script)
  E.write(dir .. "/in.txt", "a\nb\n")
  local c = { name = "h", state = { dir = "state" }, admin = { listen = "127.0.0.1:0" }, reload = { watch = false } }
  for k, v in pairs(extra or {}) do c[k] = v end
  E.write_config(dir, c)
  local d = E.start({ "run", dir .. "/eddy.conf.lua" })
  local addr = E.admin_addr(dir .. "/state", 20)
  assert.is_truthy(addr, "no admin address: " .. d:stderr())
  return d, addr
end

describe("hardening", function()
  local dir
  before_each(function() dir = E.tmpdir() end)
  after_each(function() E.cleanup() end)

  describe("a script that never finishes building", function()
    local RUNAWAY = table.concat({
      'local eddy = require("eddy")',
      'local p = eddy.pipeline()',
      'p:source("in", { file = "in.txt", format = "lines" }):sink("out", { file = "out" })',
      'while true do pcall(function() while true do end end) end',
      'return p',
    }, "\n") .. "\n"

    it("eddy check exits 2 after limits.time, naming the limit and the line", function()
      E.write(dir .. "/pipeline.lua", RUNAWAY)
      E.write_config(dir, { limits = { time = "300ms" } })
      local r = E.run({ "check", dir .. "/eddy.conf.lua" }, { timeout = 20 })
      assert.is_false(r.timed_out, "eddy check hung")
      assert.equal(2, r.code, r.stderr)
      assert.matches("building the pipeline ran longer than 300 ms (limits.time) (at pipeline.lua:4)", r.stderr, 1, true)
    end)

    it("a reload of it is refused (422), the running version keeps going, /health answers and SIGTERM stops eddy", function()
      local d, addr = daemon(dir, running_script())
      assert.is_truthy(E.wait_for(function() return #E.sink_lines(dir .. "/out") >= 2 end, 20), d:stderr())
      E.write(dir .. "/pipeline.lua", RUNAWAY)
      local code, body = E.curl("http://" .. addr .. "/reload", "POST")
      assert.equal(422, code, "reload answered " .. tostring(code) .. ": " .. tostring(body))
      assert.matches("limits.time", cjson.decode(body).error, 1, true)
      assert.equal(200, (E.curl("http://" .. addr .. "/health")))
      E.append(dir .. "/in.txt", "c\n")
      assert.is_truthy(E.wait_for(function() return #E.sink_lines(dir .. "/out") >= 3 end, 20), d:stderr())
      d:kill("TERM")
      assert.equal(0, d:wait(20), d:stderr())
    end)
  end)

  describe("unbounded recursion through coroutines", function()
    local RECURSE = "local function f() return coroutine.wrap(f)() end; f()"

    it("in a user function is a Lua error that goes to the error policy (dead_letter)", function()
      E.write(dir .. "/pipeline.lua", table.concat({
        'local eddy = require("eddy")',
        'local p = eddy.pipeline()',
        'p:source("in", { file = "in.txt", format = "lines" })',
        '  :map(function(v) if v == "boom" then ' .. RECURSE .. ' end return v end)',
        '  :sink("out", { file = "out", format = "lines" })',
        'return p',
      }, "\n") .. "\n")
      E.write(dir .. "/in.txt", "a\nboom\nb\n")
      E.write_config(dir, { on_error = "dead_letter", state = { dir = "state" } })
      local r = E.run_config(dir)
      assert.equal(0, r.code, r.stderr)
      assert.same({ "a", "b" }, E.sink_lines(dir .. "/out"))
      local dl = E.json_lines(dir .. "/state/dead-letter.jsonl")
      assert.equal(1, #dl)
      assert.equal("boom", dl[1].record)
      assert.matches("coroutines nested more than", dl[1].error, 1, true)
    end)

    it("a crash inside a user call (FFI, sandbox.ffi) stops eddy saying where, and the next start hands that record to the error policy", function()
      E.write(dir .. "/pipeline.lua", table.concat({
        'local eddy = require("eddy")',
        'local ffi = require("ffi")',
        'local p = eddy.pipeline()',
        'p:source("in", { file = "in.txt", format = "lines" })',
        '  :map(function(v) if v == "boom" then return ffi.cast("int *", 0)[0] end return v end)',
        '  :sink("out", { file = "out", format = "lines" })',
        'return p',
      }, "\n") .. "\n")
      E.write(dir .. "/in.txt", "a\nboom\nb\n")
      E.write_config(dir, { on_error = "dead_letter", state = { dir = "state" }, sandbox = { ffi = true } })
      local r = E.run_config(dir)
      assert.equal(1, r.code, r.stderr)
      assert.matches("operator map (uid map-2, pipeline.lua:5) crashed the process (SIGSEGV) on input in "
        .. dir .. "/in.txt:2 (byte 2)", r.stderr, 1, true)
      assert.is_truthy(E.read(dir .. "/state/poison.json"))
      r = E.run_config(dir)
      assert.equal(0, r.code, r.stderr)
      assert.same({ "a", "b" }, E.sink_lines(dir .. "/out"))
      local dl = E.json_lines(dir .. "/state/dead-letter.jsonl")
      assert.equal(1, #dl)
      assert.equal("boom", dl[1].record)
      assert.matches("an earlier run stopped here: operator map", dl[1].error, 1, true)
      assert.is_false(E.exists(dir .. "/state/poison.json"))
    end)

    it("at a reloaded script's top level is a refused reload, and the daemon keeps running", function()
      local d, addr = daemon(dir, running_script())
      assert.is_truthy(E.wait_for(function() return #E.sink_lines(dir .. "/out") >= 2 end, 20), d:stderr())
      E.write(dir .. "/pipeline.lua", RECURSE .. "\n" .. running_script())
      local code, body = E.curl("http://" .. addr .. "/reload", "POST")
      assert.equal(422, code, tostring(body))
      assert.matches("coroutines nested more than", body, 1, true)
      assert.equal(200, (E.curl("http://" .. addr .. "/health")))
      d:kill("TERM")
      assert.equal(0, d:wait(20), d:stderr())
    end)
  end)

  describe("state.dir", function()
    it("a second eddy run on a state.dir in use is refused (exit 1, naming the folder and the pid), and the first runs on", function()
      local d = daemon(dir, running_script())
      assert.is_truthy(E.wait_for(function() return #E.sink_lines(dir .. "/out") >= 2 end, 20), d:stderr())
      local r = E.run_config(dir, { timeout = 30 })
      assert.equal(1, r.code, r.stderr)
      assert.matches("state.dir " .. dir .. "/state is in use by another eddy (pid " .. d.pid .. " holds "
        .. dir .. "/state/lock)", r.stderr, 1, true)
      E.append(dir .. "/in.txt", "c\n")
      assert.is_truthy(E.wait_for(function() return #E.sink_lines(dir .. "/out") >= 3 end, 20), d:stderr())
      assert.same({ "a", "b", "c" }, E.sink_lines(dir .. "/out"))
      d:kill("TERM")
      assert.equal(0, d:wait(20), d:stderr())
      assert.not_matches("did not stop cleanly", d:stderr(), 1, true)
    end)
  end)

  describe("admin API", function()
    -- curl with extra headers: status and body
    local function curl_h(url, method, headers)
      local hs = ""
      for _, h in ipairs(headers or {}) do hs = hs .. " -H " .. E.quote(h) end
      local out = E.capture(string.format("curl -s -m 5 -X %s%s -w '\\n%%{http_code}' %s", method or "GET", hs, E.quote(url)))
      local body, code = out:match("^(.*)\n(%d+)$")
      return tonumber(code), body
    end

    it("refuses a cross-origin POST and a request through a foreign Host name (DNS rebinding); same-origin passes", function()
      local d, addr = daemon(dir, running_script())
      local port = addr:match(":(%d+)$")
      local code, body = curl_h("http://" .. addr .. "/savepoint?stop=1", "POST", { "Origin: http://evil.example" })
      assert.equal(403, code, body)
      assert.matches("Origin", body, 1, true)
      code, body = curl_h("http://" .. addr .. "/status", "GET", { "Host: rebind.evil.example:" .. port })
      assert.equal(403, code, body)
      code = curl_h("http://" .. addr .. "/reload", "POST", { "Host: rebind.evil.example:" .. port, "Origin: http://rebind.evil.example:" .. port })
      assert.equal(403, code)
      code = curl_h("http://" .. addr .. "/health", "GET", { "Host: 127.0.0.1:" .. (tonumber(port) + 1) })
      assert.equal(403, code)
      assert.is_true(d:alive())
      assert.equal(200, (curl_h("http://" .. addr .. "/health", "GET", { "Host: localhost:" .. port })))
      assert.equal(200, (curl_h("http://" .. addr .. "/reload", "POST", { "Origin: http://127.0.0.1:" .. port })))
      d:kill("TERM")
      assert.equal(0, d:wait(20), d:stderr())
    end)

    it("admin.hosts names more host names the API answers to", function()
      local d, addr = daemon(dir, running_script(), { admin = { listen = "127.0.0.1:0", hosts = { "eddy.example.test" } } })
      local port = addr:match(":(%d+)$")
      assert.equal(200, (curl_h("http://" .. addr .. "/status", "GET", { "Host: eddy.example.test:" .. port })))
      assert.equal(200, (curl_h("http://" .. addr .. "/status", "GET", { "Host: EDDY.example.test" })))
      assert.equal(403, (curl_h("http://" .. addr .. "/status", "GET", { "Host: other.example.test:" .. port })))
      assert.equal(403, (curl_h("http://" .. addr .. "/status", "GET", { "Host: eddy.example.testx:" .. port })))
      d:kill("TERM")
      assert.equal(0, d:wait(20), d:stderr())
    end)

    it("with admin.token, POST /reload and /savepoint need the bearer token (eddy reload/savepoint --token, EDDY_ADMIN_TOKEN); GETs do not", function()
      local token = "s3cret-token-0123456789"
      local d, addr = daemon(dir, running_script(), { admin = { listen = "127.0.0.1:0", token = token } })
      local code, body = curl_h("http://" .. addr .. "/reload", "POST")
      assert.equal(401, code, body)
      assert.equal(401, (curl_h("http://" .. addr .. "/savepoint?stop=1", "POST", { "Authorization: Bearer wrong-token-0123456789" })))
      assert.equal(200, (curl_h("http://" .. addr .. "/health")))
      assert.equal(200, (curl_h("http://" .. addr .. "/status")))
      assert.equal(200, (curl_h("http://" .. addr .. "/reload", "POST", { "Authorization: Bearer " .. token })))
      local r = E.run({ "reload", "--admin", addr })
      assert.equal(1, r.code)
      assert.matches("401", r.stderr, 1, true)
      -- (503 while the version before still rolls out: asked again)
      assert.is_truthy(E.wait_for(function() return E.run({ "reload", "--admin", addr, "--token", token }).code == 0 end, 20))
      assert.is_truthy(E.wait_for(function()
        r = E.run({ "savepoint", "--admin", addr, "--stop" }, { env = { EDDY_ADMIN_TOKEN = token } })
        return r.code == 0
      end, 20), r.stderr)
      assert.equal(0, d:wait(20), d:stderr())
    end)

    it("a flood of idle connections is bounded: with few file descriptors the sink still opens its part files, and /health answers once they go", function()
      -- eddy runs with 256 file descriptors; 400 idle connections would take them all
      local wrapper = E.write(dir .. "/eddy-lowfd.sh", "#!/bin/sh\nulimit -n 256\nexec " .. E.quote(E.bin) .. ' "$@"\n')
      E.sh("chmod +x " .. E.quote(wrapper))
      local bin = E.bin
      E.bin = wrapper
      local ok, d, addr = pcall(daemon, dir, running_script(), { guarantee = "exactly_once", checkpoint = { interval = "100ms" } })
      E.bin = bin
      assert(ok, d)
      local port = addr:match(":(%d+)$")
      assert.is_truthy(E.wait_for(function() return #E.sink_lines(dir .. "/out") >= 2 end, 20), d:stderr())
      local holder = dir .. "/holder.pid"
      os.execute("bash -c " .. E.quote("echo $$ > " .. holder .. "; for i in $(seq 400); do exec {fd}<>/dev/tcp/127.0.0.1/" .. port
        .. " || break; done; exec sleep 30") .. " >/dev/null 2>&1 &")
      local hpid = E.wait_for(function() return (E.read(holder) or ""):match("%d+") end, 10)
      E.sleep(2)
      -- part files keep being made (a checkpoint every 100 ms) while the connections are held
      for i = 1, 5 do
        E.append(dir .. "/in.txt", "flood" .. i .. "\n")
        assert.is_truthy(E.wait_for(function() return #E.sink_lines(dir .. "/out") >= 2 + i end, 20),
          "output stopped during the flood: " .. d:stderr())
      end
      assert.is_true(d:alive(), d:stderr())
      E.sh("kill " .. hpid)
      assert.is_truthy(E.wait_for(function() return (curl_h("http://" .. addr .. "/health")) == 200 end, 30))
      d:kill("TERM")
      assert.equal(0, d:wait(20), d:stderr())
    end)
  end)

  describe("state.dir on a full disk", function()
    -- mount_small(dir): a 3 MB tmpfs at dir; unmounted by the caller's finally
    local function mount_small(path)
      E.mkdirs(path)
      local rc, out = E.shell("mount -t tmpfs -o size=3m eddy-spec-full " .. E.quote(path) .. " 2>&1")
      assert(rc == 0, "cannot mount a 3 MB tmpfs at " .. path .. " (this spec fills a real disk and needs root, as CI "
        .. "runs it): " .. tostring(out))
    end

    it("ends in a clear 'no space left on device' error and exit 1, not a RocksDB assertion (SIGABRT)", function()
      local mnt = dir .. "/mnt"
      mount_small(mnt)
      finally(function() E.sh("umount -l " .. E.quote(mnt)) end)
      E.write(dir .. "/pipeline.lua", table.concat({
        'local eddy = require("eddy")',
        'local p = eddy.pipeline()',
        'p:source("in", { file = "in.txt", format = "lines" })',
        '  :key_by(function(v) return v end)',
        '  :process{ process = function(v, ctx) ctx.state:value("x"):set(string.rep(v, 20)) end }',
        '  :sink("out", { file = "out", format = "lines" })',
        'return p',
      }, "\n") .. "\n")
      local lines = {}
      for i = 1, 300000 do lines[i] = tostring(i) end
      E.write(dir .. "/in.txt", table.concat(lines, "\n") .. "\n")
      E.write_config(dir, { state = { dir = "mnt/state" } })
      for run = 1, 2 do     -- the second starts on the disk the first filled
        local r = E.run_config(dir, { timeout = 120 })
        assert.equal(1, r.code, "run " .. run .. ": " .. r.stderr)
        assert.matches("state.dir: no space left on device writing to " .. mnt .. "/state/db", r.stderr, 1, true)
        assert.not_matches("Assertion", r.stderr, 1, true)
      end
    end)
  end)

  describe("a damaged manifest of the newest committed checkpoint", function()
    it("is refused, naming the file, instead of a fall back to an older checkpoint that writes committed output again", function()
      E.write(dir .. "/pipeline.lua", table.concat({
        'local eddy = require("eddy")',
        'local p = eddy.pipeline()',
        'p:source("in", { file = "in.txt", format = "lines" })',
        '  :map(function(v) local t = os.clock() + 0.0002 while os.clock() < t do end return v end)',
        '  :sink("out", { file = "out", format = "lines" })',
        'return p',
      }, "\n") .. "\n")
      local lines = {}
      for i = 1, 20000 do lines[i] = "r" .. i end
      E.write(dir .. "/in.txt", table.concat(lines, "\n") .. "\n")
      E.write_config(dir, { guarantee = "exactly_once", checkpoint = { interval = "100ms", retain = 5 },
                            state = { dir = "state" }, tuning = { batch = 64 } })
      -- killed (SIGKILL) just after its third commit renamed its first part file
      local r = E.run_config(dir, { env = { EDDY_CRASH_AT = "post_commit:3" } })
      assert.equal(137, r.code, "the run was to kill itself after its third commit: " .. r.stderr)
      local id = require("support.crash").last_committed(dir .. "/state")
      assert.is_number(id)
      local manifest = dir .. "/state/checkpoints/" .. id .. "/manifest.json"
      assert.matches('"committed": true', E.read(manifest), 1, true)
      local before = E.sink_lines(dir .. "/out")
      assert.is_true(#before > 0)
      local good = E.read(manifest)
      E.write(manifest, good:sub(1, 40))          -- damaged: cut short
      r = E.run_config(dir)
      assert.equal(1, r.code, r.stderr)
      assert.matches("checkpoint " .. id .. ": its manifest " .. manifest .. " is damaged", r.stderr, 1, true)
      assert.same(before, E.sink_lines(dir .. "/out"))          -- nothing published again
      -- once the file is put right, the job ends with every record exactly once
      E.write(manifest, good)
      r = E.run_config(dir)
      assert.equal(0, r.code, r.stderr)
      assert.matches("restored checkpoint " .. id, r.stderr, 1, true)
      assert.same(E.sorted(lines), E.sink_lines(dir .. "/out"))
    end)
  end)

  describe("a Kafka sink's delivery failures under dead_letter", function()
    it("dead letters carry the input position, eddy_dead_letters_total counts them, and the log is rate-limited", function()
      -- the sink's broker is a port nobody listens on: librdkafka gives up on
      -- every message after message.timeout.ms
      E.write(dir .. "/pipeline.lua", table.concat({
        'local eddy = require("eddy")',
        'local p = eddy.pipeline()',
        'p:source("in", { file = "in.txt", format = "lines", follow = true })',
        '  :sink("out", { kafka = "out", format = "lines" })',
        'return p',
      }, "\n") .. "\n")
      local lines = {}
      for i = 1, 60 do lines[i] = "m" .. i end
      E.write(dir .. "/in.txt", table.concat(lines, "\n") .. "\n")
      E.write_config(dir, { on_error = "dead_letter", state = { dir = "state" }, admin = { listen = "127.0.0.1:0" },
        kafka = { ["bootstrap.servers"] = "127.0.0.1:1", ["message.timeout.ms"] = "1000" } })
      local d = E.start({ "run", dir .. "/eddy.conf.lua" })
      local addr = E.admin_addr(dir .. "/state", 20)
      assert.is_truthy(addr, d:stderr())
      local dl = E.wait_for(function()
        local t = E.json_lines(dir .. "/state/dead-letter.jsonl")
        return #t >= 60 and t
      end, 30)
      assert.is_truthy(dl, "dead letters: " .. #E.json_lines(dir .. "/state/dead-letter.jsonl") .. "\n" .. d:stderr())
      assert.equal(60, #dl)
      table.sort(dl, function(a, b) return a.line < b.line end)
      for i, l in ipairs(dl) do
        assert.same({ "in", dir .. "/in.txt", 0, i, "m" .. i, "out", "out", "sink" },
          { l.source, l.file, l.partition, l.line, l.record, l.sink, l.sink_topic, l.operator_kind })
        assert.equal(#table.concat(lines, "\n", 1, i - 1) + (i > 1 and 1 or 0), l.offset)
        assert.is_string(l.task)
        assert.matches("sink 'out': Kafka refused a message for topic out", l.error, 1, true)
      end
      local _, metrics = E.curl("http://" .. addr .. "/metrics")
      assert.equal(60, (E.metric_sum(metrics, "eddy_dead_letters_total")))
      local logged = select(2, d:stderr():gsub("Kafka refused a message", ""))
      assert.is_true(logged <= 10, logged .. " log lines for 60 refused messages:\n" .. d:stderr())
      d:kill("TERM")
      assert.equal(0, d:wait(30), d:stderr())
    end)
  end)

  describe("config mistakes", function()
    it("a pipeline that names a folder is an error naming it, not a runtime traceback", function()
      E.mkdirs(dir .. "/pl.lua")
      E.write_config(dir, { pipeline = "pl.lua" })
      local r = E.run({ "check", dir .. "/eddy.conf.lua" })
      assert.equal(2, r.code)
      assert.matches("pl.lua", r.stderr, 1, true)
      assert.matches("is a folder", r.stderr, 1, true)
      assert.not_matches("sandbox.lua", r.stderr, 1, true)
    end)

    it("a file sink writing into the folder a file source reads is warned about, naming both", function()
      E.write(dir .. "/data/a.txt", "x\n")
      E.write(dir .. "/pipeline.lua", table.concat({
        'local eddy = require("eddy")',
        'local p = eddy.pipeline()',
        'p:source("in", { file = "data/*", format = "lines" }):sink("out", { file = "data", format = "lines" })',
        'return p',
      }, "\n") .. "\n")
      E.write_config(dir, {})
      local r = E.run({ "check", dir .. "/eddy.conf.lua" })
      assert.equal(0, r.code, r.stderr)
      assert.matches("sink 'out' (pipeline.lua:3) writes its part files into " .. dir .. "/data, the folder source 'in' "
        .. "reads its input from (data/*)", r.stderr, 1, true)
      E.write(dir .. "/pipeline.lua", (E.read(dir .. "/pipeline.lua"):gsub('file = "data", ', 'file = "out", ')))
      r = E.run({ "check", dir .. "/eddy.conf.lua" })
      assert.equal(0, r.code, r.stderr)
      assert.not_matches("writes its part files into", r.stderr, 1, true)
    end)
  end)
end)
