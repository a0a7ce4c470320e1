-- support.eddy — helpers for the end-to-end specs: they run the real
-- bin/eddy as a process, in a temporary folder, and read what it wrote.
--
--   local E = require("support.eddy")
--   local dir = E.tmpdir()                      -- removed by E.cleanup()
--   E.write(dir .. "/in/a.jsonl", '{"n":1}\n')   -- makes parent folders
--   E.write_config(dir, { name = "t", pipeline = "pipeline.lua" })
--   local r = E.run({ "run", dir .. "/eddy.conf.lua" })   -- r.code, r.stdout, r.stderr
--   local lines = E.sink_lines(dir .. "/out")  -- every part file's lines, sorted
--   local d = E.start({ "run", conf })         -- background daemon: d.pid
--   E.wait_for(function() return E.exists(addr) end, 10)
--   local status, body = E.curl("http://" .. addr .. "/health")
--   d:kill("TERM"); local code = d:wait(10)
--
-- Nothing here sleeps or waits without a bound: every wait has a timeout in
-- seconds, and every command runs under timeout(1).
--
-- Only what Debian's lua-busted pulls in is used: lfs, luasystem, lua-cjson.

local lfs = require("lfs")
local system = require("system")
local cjson = require("cjson")

local M = {}

M.bin = os.getenv("EDDY_BIN") or "bin/eddy"
M.root = os.getenv("EDDY_ROOT") or "."
M.cjson = cjson

-- seconds one eddy command may run before timeout(1) kills it
M.RUN_TIMEOUT = 60
-- EDDY_TEST_SLOW: a factor for every timeout below (run, start, wait_for),
-- for builds that run several times slower (make tsan sets 3)
M.SLOW = tonumber(os.getenv("EDDY_TEST_SLOW") or "") or 1

local tmpdirs, daemons = {}, {}

-- ---- shell ------------------------------------------------------------------

-- q(s): s quoted for sh
local function q(s)
  s = tostring(s)
  if s:match("^[%w%./_=:,+%-@]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end
M.quote = q

-- sh(cmd): runs a shell command, returns its exit status (a number)
local function sh(cmd)
  local f = io.popen("( " .. cmd .. " ) >/dev/null 2>&1; echo $?")
  local out = f:read("*a")
  f:close()
  return tonumber(out:match("(%d+)")) or -1
end
M.sh = sh

-- capture(cmd): runs a shell command, returns its stdout
function M.capture(cmd)
  local f = io.popen(cmd)
  local out = f:read("*a")
  f:close()
  return out
end

-- shell(cmd): runs a shell command; returns its exit status and its stdout
function M.shell(cmd)
  local f = io.popen(cmd .. "; echo \"rc=$?\"")
  local out = f:read("*a")
  f:close()
  return tonumber(out:match("rc=(%d+)%s*$")), (out:gsub("rc=%d+%s*$", ""))
end

-- poll(seconds, fn): calls fn every 50 ms until it returns a value, which
-- poll returns; nil after `seconds`
function M.poll(seconds, fn)
  for _ = 1, math.ceil(seconds * 20) do
    local v = fn()
    if v then return v end
    system.sleep(0.05)
  end
  return nil
end

function M.sleep(seconds) system.sleep(seconds) end
function M.now() return system.monotime() end

-- ---- files ------------------------------------------------------------------

function M.exists(path) return lfs.attributes(path, "mode") ~= nil end
function M.isdir(path) return lfs.attributes(path, "mode") == "directory" end

function M.mkdirs(path)
  local acc = path:sub(1, 1) == "/" and "" or "."
  for part in path:gmatch("[^/]+") do
    acc = acc .. "/" .. part
    if not M.isdir(acc) then
      local ok, err = lfs.mkdir(acc)
      if not ok and not M.isdir(acc) then error("mkdir " .. acc .. ": " .. tostring(err), 2) end
    end
  end
end

local function dirname(path) return path:match("^(.*)/[^/]*$") or "." end
M.dirname = dirname

-- write(path, content): writes content (a string) to path, making the folders
function M.write(path, content)
  M.mkdirs(dirname(path))
  local f = assert(io.open(path, "wb"))
  f:write(content)
  f:close()
  return path
end

-- append(path, content)
function M.append(path, content)
  local f = assert(io.open(path, "ab"))
  f:write(content)
  f:close()
end

-- read(path): the file's bytes, or nil when it does not exist
function M.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

-- lines(s): the lines of a string (without their "\n"); a last line without
-- "\n" counts too
function M.lines(s)
  local out = {}
  if not s or s == "" then return out end
  if s:sub(-1) ~= "\n" then s = s .. "\n" end
  for l in s:gmatch("(.-)\n") do out[#out + 1] = l end
  return out
end

-- ls(dir): the names in dir, sorted (nil when dir does not exist)
function M.ls(dir)
  if not M.isdir(dir) then return nil end
  local out = {}
  for name in lfs.dir(dir) do
    if name ~= "." and name ~= ".." then out[#out + 1] = name end
  end
  table.sort(out)
  return out
end

-- tmpdir(): a fresh folder under /tmp, removed by cleanup()
function M.tmpdir()
  local path = M.capture("mktemp -d /tmp/eddy-spec.XXXXXXXX"):gsub("%s+$", "")
  assert(path:match("^/tmp/eddy%-spec%.") and M.isdir(path), "mktemp failed: " .. path)
  -- the real path: eddy prints resolved paths
  path = M.capture("realpath " .. q(path)):gsub("%s+$", "")
  tmpdirs[#tmpdirs + 1] = path
  return path
end

-- rmtree(path): removes a folder this module made (only under /tmp)
function M.rmtree(path)
  assert(path:match("^/tmp/eddy%-spec%.[%w]+$"), "refusing to remove " .. path)
  sh("rm -rf " .. q(path))
end

-- ---- output of sinks --------------------------------------------------------

-- part_files(dir): the visible part files of a file sink's folder, sorted
function M.part_files(dir)
  local out = {}
  for _, name in ipairs(M.ls(dir) or {}) do
    if name:match("^part%-") then out[#out + 1] = dir .. "/" .. name end
  end
  return out
end

-- sink_lines(dir): every line of every part file in dir, SORTED (the order
-- across tasks is not deterministic)
function M.sink_lines(dir)
  local out = {}
  for _, path in ipairs(M.part_files(dir)) do
    for _, l in ipairs(M.lines(M.read(path))) do out[#out + 1] = l end
  end
  table.sort(out)
  return out
end

-- canon(v): a JSON text of v with object keys sorted, so that decoded JSON
-- compares as strings whatever order lua-cjson wrote the keys in
local function canon(v)
  local t = type(v)
  if t == "number" then
    -- all the digits (cjson.encode keeps only 14 significant ones)
    if v == math.floor(v) and math.abs(v) < 2^63 then return string.format("%d", v) end
    return string.format("%.17g", v)
  end
  if t ~= "table" then return cjson.encode(v) end
  local n = #v
  local keys, isarray = {}, true
  for k in pairs(v) do
    keys[#keys + 1] = k
    if type(k) ~= "number" or k < 1 or k > n or k % 1 ~= 0 then isarray = false end
  end
  if isarray and (n > 0 or (cjson.array_mt ~= nil and getmetatable(v) == cjson.array_mt)) then
    local parts = {}
    for i = 1, n do parts[i] = canon(v[i]) end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  if #keys == 0 then return "{}" end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local parts = {}
  for i, k in ipairs(keys) do parts[i] = cjson.encode(tostring(k)) .. ":" .. canon(v[k]) end
  return "{" .. table.concat(parts, ",") .. "}"
end
M.canon = canon

-- sink_json(dir): the JSON values of every line in dir's part files, each as
-- canon() text, sorted
function M.sink_json(dir)
  local out = {}
  for _, path in ipairs(M.part_files(dir)) do
    for _, l in ipairs(M.lines(M.read(path))) do out[#out + 1] = canon(cjson.decode(l)) end
  end
  table.sort(out)
  return out
end

-- canon_all(values): canon() of each value, sorted — the expected side of a
-- sink_json() comparison
function M.canon_all(values)
  local out = {}
  for i, v in ipairs(values) do out[i] = canon(v) end
  table.sort(out)
  return out
end

-- sorted(t): a sorted copy
function M.sorted(t)
  local c = {}
  for i, v in ipairs(t) do c[i] = v end
  table.sort(c)
  return c
end

-- json_lines(path): the decoded JSON documents of a file's lines
function M.json_lines(path)
  local out = {}
  for _, l in ipairs(M.lines(M.read(path) or "")) do
    if l ~= "" then out[#out + 1] = cjson.decode(l) end
  end
  return out
end

-- ---- configs ----------------------------------------------------------------

local KEYWORDS = {}
for w in ("and break do else elseif end false for function goto if in local nil not or "
    .. "repeat return then true until while"):gmatch("%a+") do KEYWORDS[w] = true end

-- lua_literal(v): v (strings, numbers, booleans, tables of these) as Lua source
local function lua_literal(v, indent)
  indent = indent or ""
  local t = type(v)
  if t == "string" then return string.format("%q", v) end
  if t == "number" or t == "boolean" or t == "nil" then return tostring(v) end
  assert(t == "table", "cannot write a " .. t .. " into a config")
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local parts = {}
  for _, k in ipairs(keys) do
    local ks = type(k) == "string" and k:match("^[%a_][%w_]*$") and not KEYWORDS[k] and k or ("[" .. lua_literal(k) .. "]")
    parts[#parts + 1] = indent .. "  " .. ks .. " = " .. lua_literal(v[k], indent .. "  ")
  end
  if #parts == 0 then return "{}" end
  return "{\n" .. table.concat(parts, ",\n") .. "\n" .. indent .. "}"
end
M.lua_literal = lua_literal

-- write_config(dir, t[, name]): writes dir/eddy.conf.lua returning t.  The
-- admin server is off unless t says otherwise (its default port would clash
-- between specs).  Returns the config's path.
function M.write_config(dir, t, name)
  local c = {}
  for k, v in pairs(t or {}) do c[k] = v end
  if c.admin == nil then c.admin = false end
  if c.name == nil then c.name = "spec" end
  if c.pipeline == nil then c.pipeline = "pipeline.lua" end
  return M.write(dir .. "/" .. (name or "eddy.conf.lua"), "return " .. lua_literal(c) .. "\n")
end

-- ---- running eddy -----------------------------------------------------------

local function cmdline(args)
  local parts = {}
  for i, a in ipairs(args) do parts[i] = q(a) end
  return table.concat(parts, " ")
end

-- run(args[, opts]): runs eddy with args (a list) to its end.
-- opts: stdin (a string fed to its standard input), timeout (seconds,
-- default RUN_TIMEOUT), cwd, env (a table of NAME = value).
-- Returns { code, stdout, stderr, timed_out }.
function M.run(args, opts)
  opts = opts or {}
  local work = M.capture("mktemp -d /tmp/eddy-run.XXXXXXXX"):gsub("%s+$", "")
  assert(work:match("^/tmp/eddy%-run%."))
  local input = "/dev/null"
  if opts.stdin then input = M.write(work .. "/stdin", opts.stdin) end
  local env = ""
  for k, v in pairs(opts.env or {}) do env = env .. k .. "=" .. q(v) .. " " end
  local cmd = string.format("%s%stimeout -k 5 %d %s %s <%s >%s/stdout 2>%s/stderr; echo $? >%s/rc",
    opts.cwd and ("cd " .. q(opts.cwd) .. " && ") or "", env, (opts.timeout or M.RUN_TIMEOUT) * M.SLOW,
    q(M.bin), cmdline(args), q(input), q(work), q(work), q(work))
  sh(cmd)
  local r = {
    code = tonumber((M.read(work .. "/rc") or ""):match("%d+")),
    stdout = M.read(work .. "/stdout") or "",
    stderr = M.read(work .. "/stderr") or "",
  }
  r.timed_out = r.code == 124
  sh("rm -rf " .. q(work))
  return r
end

-- run_config(dir[, opts]): run dir/eddy.conf.lua
function M.run_config(dir, opts)
  return M.run({ "run", dir .. "/eddy.conf.lua" }, opts)
end

-- wait_for(fn, timeout[, interval]): calls fn until it returns a truthy value
-- or timeout seconds pass; returns fn's value (or nil, false on timeout)
function M.wait_for(fn, timeout, interval)
  local deadline = M.now() + (timeout or 10) * M.SLOW
  repeat
    local v = fn()
    if v then return v end
    M.sleep(interval or 0.05)
  until M.now() > deadline
  return fn()
end

local Daemon = {}
Daemon.__index = Daemon

-- start(args[, opts]): starts eddy in the background.  Returns a daemon
-- object: d.pid, d:stdout(), d:stderr(), d:alive(), d:kill(sig),
-- d:wait(timeout) → exit code (nil on timeout), d:stop() (SIGKILL + reap).
-- opts: stdin (a string), stdin_open (standard input is a pipe that gives
-- opts.stdin and stays open until eddy ends), timeout (seconds the process
-- may live, default RUN_TIMEOUT: a daemon a failed spec left behind dies by
-- itself), env (a table of NAME = value set for eddy).
function M.start(args, opts)
  opts = opts or {}
  local work = M.capture("mktemp -d /tmp/eddy-run.XXXXXXXX"):gsub("%s+$", "")
  assert(work:match("^/tmp/eddy%-run%."))
  local input = "/dev/null"
  if opts.stdin then input = M.write(work .. "/stdin", opts.stdin) end
  local T = (opts.timeout or M.RUN_TIMEOUT) * M.SLOW
  -- stdin_open: standard input is a pipe that gives opts.stdin and then stays
  -- open (as `tail -f x | eddy` would) until eddy ends
  local writer = ""
  if opts.stdin_open then
    local fifo = work .. "/stdin.fifo"
    writer = string.format("mkfifo %s; sh -c %s >%s & echo $! >%s/writer; ", q(fifo),
      q("cat " .. q(input) .. "; exec sleep " .. T), q(fifo), q(work))
    input = fifo
  end
  -- timeout(1) bounds its life; the inner shell records its pid and then
  -- becomes eddy (exec), so the pid is eddy's; the outer shell records the
  -- exit status.  The whole thing is detached from us.
  local env = ""
  for k, v in pairs(opts.env or {}) do env = env .. "export " .. k .. "=" .. q(v) .. "; " end
  local exec = string.format("%s%secho $$ >%s/pid.tmp; mv %s/pid.tmp %s/pid; exec %s %s <%s >%s/stdout 2>%s/stderr",
    writer, env, q(work), q(work), q(work), q(M.bin), cmdline(args), q(input), q(work), q(work))
  local inner = string.format("timeout -k 5 %d sh -c %s; echo $? >%s/rc.tmp; "
      .. "[ -f %s/writer ] && kill $(cat %s/writer); mv %s/rc.tmp %s/rc",
    T, q(exec), q(work), q(work), q(work), q(work), q(work))
  os.execute("sh -c " .. q(inner) .. " >/dev/null 2>&1 </dev/null &")
  local pidtext = M.wait_for(function() return M.read(work .. "/pid") end, 10)
  local d = setmetatable({ work = work, pid = tonumber(pidtext and pidtext:match("%d+")) }, Daemon)
  assert(d.pid, "eddy did not start")
  daemons[#daemons + 1] = d
  return d
end

function Daemon:stdout() return M.read(self.work .. "/stdout") or "" end
function Daemon:stderr() return M.read(self.work .. "/stderr") or "" end

-- the exit status once it has ended, else nil
function Daemon:code()
  if self.exit_code then return self.exit_code end
  local rc = M.read(self.work .. "/rc")
  if rc then self.exit_code = tonumber(rc:match("%d+")) end
  return self.exit_code
end

function Daemon:alive() return self:code() == nil end

function Daemon:kill(sig)
  if self:alive() then sh("kill -" .. (sig or "TERM") .. " " .. self.pid) end
end

-- wait(timeout): the exit status, or nil when it is still running after
-- timeout seconds
function Daemon:wait(timeout)
  return M.wait_for(function() return self:code() end, timeout or 10)
end

-- stop(): SIGKILL unless it has ended; waits for it
function Daemon:stop()
  if self:alive() then
    self:kill("KILL")
    self:wait(5)
  end
end

-- cleanup(): kills the daemons started here and removes the temp folders;
-- call it from after_each
function M.cleanup()
  for _, d in ipairs(daemons) do
    d:stop()
    sh("rm -rf " .. q(d.work))
  end
  daemons = {}
  for _, p in ipairs(tmpdirs) do M.rmtree(p) end
  tmpdirs = {}
end

-- ---- admin HTTP -------------------------------------------------------------

-- admin_addr(state_dir[, timeout]): "host:port" from state_dir/admin.addr,
-- once the daemon has written it
function M.admin_addr(state_dir, timeout)
  local s = M.wait_for(function()
    local t = M.read(state_dir .. "/admin.addr")
    return t and t:match("^(%S+:%d+)\n") or nil
  end, timeout or 10)
  return s
end

-- curl(url[, method]): HTTP status (a number) and body
function M.curl(url, method)
  local work = M.capture("mktemp /tmp/eddy-curl.XXXXXXXX"):gsub("%s+$", "")
  local code = M.capture(string.format("curl -s -m 5 -X %s -o %s -w '%%{http_code}' %s",
    method or "GET", q(work), q(url)))
  local body = M.read(work) or ""
  os.remove(work)
  return tonumber(code), body
end

-- status(addr): GET /status decoded, or nil (and the HTTP status and body)
-- when it did not answer 200
function M.status(addr)
  local code, body = M.curl("http://" .. addr .. "/status")
  if code ~= 200 then return nil, code, body end
  return cjson.decode(body)
end

-- ---- a real Kafka broker ---------------------------------------------------

-- kafka_broker(): the bootstrap address of the real Kafka broker the
-- exactly-once and consumer-group specs run against (EDDY_TEST_KAFKA, which
-- scripts/test.sh sets after starting one with scripts/kafka-broker.sh).
-- Without one the calling spec fails with the reason: it never skips.
function M.kafka_broker()
  local b = os.getenv("EDDY_TEST_KAFKA")
  if b and b ~= "" then return b end
  error("no real Kafka broker for this spec: " .. (os.getenv("EDDY_TEST_KAFKA_ERROR")
    or "EDDY_TEST_KAFKA is not set (make test starts one; by hand: "
    .. "scripts/kafka-broker.sh start DIR, then EDDY_TEST_KAFKA=<the address it printed>)"), 2)
end

-- kafka_tool(args): runs spec/support/kafka_tool.py with args (a list):
-- create, alter, committed, fence (see there); its stdout, or an error with
-- its message
function M.kafka_tool(args)
  local rc, out = M.shell("timeout 60 " .. q(M.root .. "/spec/support/kafka_tool.py") .. " " .. cmdline(args) .. " 2>&1")
  if rc ~= 0 then error("kafka_tool.py " .. table.concat(args, " ") .. ": " .. out, 2) end
  return out
end

-- create_topic(boot, name, partitions[, configs]): a new topic on the real
-- broker (configs: a list of "key=value")
function M.create_topic(boot, name, partitions, configs)
  local args = { "create", boot, name, tostring(partitions) }
  for _, c in ipairs(configs or {}) do args[#args + 1] = c end
  M.kafka_tool(args)
end

-- committed_offsets(boot, group, topic): { [partition] = offset } of what
-- the group committed (-1: nothing), offsets of open transactions left out
function M.committed_offsets(boot, group, topic)
  local out = {}
  for p, o in M.kafka_tool({ "committed", boot, group, topic }):gmatch("(%d+) (%-?%d+)\n") do
    out[tonumber(p)] = tonumber(o)
  end
  return out
end

-- run_id(): a text unique to this process, for topic and group names on a
-- broker that outlives a run
local RUN_ID
function M.run_id()
  if not RUN_ID then
    RUN_ID = M.capture("date +%s%N"):gsub("%s+$", ""):sub(-10) .. tostring(math.random(1000, 9999))
  end
  return RUN_ID
end

-- ---- generated inputs -------------------------------------------------------

-- a deterministic pseudo-random generator (the same numbers on every run)
-- metrics(text): the samples of a Prometheus text page, { ["series{labels}"] = value }
function M.metrics(text)
  local out = {}
  for line in text:gmatch("[^\n]+") do
    if line:sub(1, 1) ~= "#" then
      local series, value = line:match("^(%S+)%s+(%S+)$")
      if series then out[series] = tonumber(value) end
    end
  end
  return out
end

-- metric_sum(text, family): the sum of a family's samples over all labels,
-- and how many samples it had
function M.metric_sum(text, family)
  local sum, n = 0, 0
  for series, v in pairs(M.metrics(text or "")) do
    if series == family or series:sub(1, #family + 1) == family .. "{" then sum, n = sum + v, n + 1 end
  end
  return sum, n
end

function M.rng(seed)
  local x = seed or 12345
  return function(n)
    x = (x * 1103515245 + 12345) % 2147483648
    return x % n
  end
end

return M
