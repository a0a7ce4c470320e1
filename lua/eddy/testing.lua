-- eddy.testing — unit tests for pipelines, run by `eddy test`.  A test file
-- registers tests with T.test; T.driver builds a pipeline in-process (the
-- real planner, runtime, operators, windows, state and error policy; in-memory
-- sources and sinks; a virtual clock: core/testing.c), and T.eq compares
-- what came out with what was expected, showing where they differ.  The
-- runner (run_file, called by core/testing.c for each file) prints a line
-- per test.  docs/contract.md ("Testing pipelines: eddy test") is the API.
-- Calls: eddy.testing.native (core/testing.c).
local N = require("eddy.testing.native")

local T = {}
local tests, live, file_dir = {}, {}, "."

-- ---- T.eq: deep equality with a readable difference -----------------------

local NULL_TEXT = "null"

-- JSON null inside decoded values (cjson.null: a NULL light userdata)
T.null = N.null
local function is_null(v) return v == N.null end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return ta < tb end
    if ta == "number" or ta == "string" then return a < b end
    return tostring(a) < tostring(b)
  end)
  return keys
end

local function is_array(t)
  local n = #t
  if n == 0 then return next(t) == nil end
  local count = 0
  for _ in pairs(t) do count = count + 1 end
  return count == n
end

local function scalar(v)
  local t = type(v)
  if t == "string" then return string.format("%q", v):gsub("\\\n", "\\n") end
  if t == "number" then
    if v == math.floor(v) and v > -2^53 and v < 2^53 then return string.format("%d", v) end
    return string.format("%.17g", v)
  end
  if t == "userdata" and is_null(v) then return NULL_TEXT end
  return tostring(v)
end

local KEYWORDS = {}
for w in ("and break do else elseif end false for function goto if in local nil not or repeat return then true until while"):gmatch("%a+") do
  KEYWORDS[w] = true
end
-- a key written as a name (k = ...) rather than as [k]
local function is_name(k) return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil and not KEYWORDS[k] end

-- v as Lua-like text, keys sorted, at most `depth` levels deep
local function show(v, indent, seen)
  if type(v) ~= "table" then return scalar(v) end
  seen = seen or {}
  if seen[v] then return "<cycle>" end
  seen[v] = true
  indent = indent or ""
  local inner = indent .. "  "
  local parts = {}
  if is_array(v) then
    for i = 1, #v do parts[#parts + 1] = show(v[i], inner, seen) end
  else
    for _, k in ipairs(sorted_keys(v)) do
      local ks = is_name(k) and k or "[" .. scalar(k) .. "]"
      parts[#parts + 1] = ks .. " = " .. show(v[k], inner, seen)
    end
  end
  seen[v] = nil
  if #parts == 0 then return "{}" end
  local one = "{ " .. table.concat(parts, ", ") .. " }"
  if #one <= 72 and not one:find("\n") then return one end
  return "{\n" .. inner .. table.concat(parts, ",\n" .. inner) .. "\n" .. indent .. "}"
end
T.show = show

local function key_path(path, k)
  if is_name(k) then return path .. "." .. k end
  return path .. "[" .. scalar(k) .. "]"
end

-- the first place where a and b differ: path, what was expected there, what came
local function diff(a, b, path)
  if type(a) ~= "table" or type(b) ~= "table" then
    if a == b or (is_null(a) and is_null(b)) then return nil end
    return path, b, a
  end
  for _, k in ipairs(sorted_keys(b)) do
    local p, e, g = diff(a[k], b[k], key_path(path, k))
    if p then return p, e, g end
  end
  for _, k in ipairs(sorted_keys(a)) do
    if b[k] == nil then return key_path(path, k), nil, a[k] end
  end
  return nil
end

-- Raises (at the caller's line) when actual and expected differ in content.
function T.eq(actual, expected, what)
  local p, e, g = diff(actual, expected, "")
  if not p then return true end
  local where = p == "" and "" or " at " .. p:gsub("^%.", "")
  local msg = string.format("%sT.eq%s: expected %s, got %s\n  expected: %s\n  got:      %s",
    what and (tostring(what) .. ": ") or "", where, e == nil and "nothing" or show(e, "  "),
    g == nil and "nothing" or show(g, "  "), show(expected, "  "), show(actual, "  "))
  error(msg, 2)
end

-- ---- T.driver ---------------------------------------------------------------

local Driver = {}
Driver.__index = Driver

-- a path as the test file names it: relative to the test file's folder
local function resolve(path)
  if type(path) ~= "string" then error("a path (string) is needed, got " .. type(path), 3) end
  if path:sub(1, 1) == "/" then return path end
  return file_dir .. "/" .. path
end

local UNITS = { ms = 1, s = 1000, m = 60000, h = 3600000, d = 86400000 }
local function to_ms(v, what)
  if type(v) == "number" then return v end
  if type(v) == "string" then
    local n, u = v:match("^%s*([%d%.]+)%s*(%a*)%s*$")
    if n and UNITS[u ~= "" and u or "ms"] then return tonumber(n) * UNITS[u ~= "" and u or "ms"] end
  end
  error(what .. ": expected ms or a duration like \"5s\", got " .. tostring(v), 3)
end

-- calls a native function; its error is raised at the test's line
local function call(fn, ...)
  local r = { pcall(fn, ...) }
  if not r[1] then error(r[2], 3) end
  return unpack(r, 2, table.maxn(r))
end

local DRIVER_ONLY = { partitions = true, clock = true }

-- processing time when a driver starts, unless opts.clock says: 2024-01-01
-- 00:00:00 UTC (a time, not 0: numbers below 10^11 are read as seconds)
T.CLOCK_START = 1704067200000

-- T.driver(path, opts): path a pipeline script or a config file (relative to
-- the test file); opts: config keys over the config's, partitions, clock.
function T.driver(path, opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("T.driver: opts must be a table", 2) end
  local conf = {}
  for k, v in pairs(opts) do if not DRIVER_ONLY[k] then conf[k] = v end end
  -- eddy test logs errors only, unless the test asks for more
  local log = type(opts.log) == "table" and opts.log or {}
  conf.log = { level = log.level or "error", format = log.format }
  local clock = opts.clock ~= nil and to_ms(opts.clock, "T.driver: clock") or T.CLOCK_START
  local h = call(N.open, resolve(path), conf, opts.partitions, clock)
  local d = setmetatable({ h = h }, Driver)
  live[#live + 1] = h
  return d
end

local INPUT_OPTS = { partition = true, key = true, headers = true, ts = true }

function Driver:input(source, value, o)
  o = o or {}
  for k in pairs(o) do
    if not INPUT_OPTS[k] then error("d:input: unknown option '" .. tostring(k) .. "' (partition, key, headers, ts)", 2) end
  end
  local key = o.key
  if key ~= nil and type(key) ~= "string" then key = tostring(key) end
  call(N.input, self.h, source, value, o.partition, key, o.ts, o.headers)
end

function Driver:advance_watermark(source, ts, partition)
  call(N.watermark, self.h, source, to_ms(ts, "d:advance_watermark"), partition)
end

function Driver:advance_clock(ms) call(N.advance_clock, self.h, to_ms(ms, "d:advance_clock")) end
function Driver:now() return call(N.now, self.h) end
function Driver:version() return call(N.version, self.h) end
function Driver:output(sink) return call(N.output, self.h, sink, false) end
function Driver:records(sink) return call(N.output, self.h, sink, true) end
function Driver:side(name) return call(N.side, self.h, name) end
function Driver:state(uid, key) return call(N.state, self.h, uid, tostring(key)) end
function Driver:dead_letters() return call(N.dead_letters, self.h) end
function Driver:metrics() return call(N.metrics, self.h) end
function Driver:close() call(N.close, self.h) end

function Driver:reload(path, o)
  o = o or {}
  return call(N.reload, self.h, resolve(path), o.allow_dropped_state and true or false)
end

-- ---- the runner -------------------------------------------------------------

function T.test(name, fn)
  if type(name) ~= "string" then error("T.test: a name (string) first", 2) end
  if type(fn) ~= "function" then error("T.test: a function after the name", 2) end
  tests[#tests + 1] = { name = name, fn = fn }
end

-- frees the drivers made after the first `keep` (a test's; the file's own
-- stay until its last test ended)
local function free_drivers(keep)
  for i = #live, (keep or 0) + 1, -1 do N.free(live[i]); live[i] = nil end
end

-- the error and the frames of the test's own code (not this file's, not C's)
local function handler(err)
  local msg = type(err) == "string" and err or show(err)
  local tb = debug.traceback("", 2)
  local keep = {}
  for line in tb:gmatch("[^\n]+") do
    if line:find("_test%.lua:%d+:") and not line:find("eddy/testing%.lua") then
      keep[#keep + 1] = "  " .. line:gsub("^%s+", "")
    end
  end
  if #keep > 0 then msg = msg .. "\n  traceback:\n" .. table.concat(keep, "\n  ") end
  return msg
end

local function indent(s) return "  " .. tostring(s):gsub("\n", "\n  ") end

-- Runs the tests of the file at path, numbering them from index.  Returns
-- passed, failed; or nil and the error when the file does not load.
function T.run_file(path, index)
  tests = {}
  file_dir = path:match("^(.*)/[^/]*$") or "."
  local chunk, err = loadfile(path)
  if not chunk then return nil, err end
  local ok, lerr = xpcall(chunk, handler)
  if not ok then free_drivers(); return nil, lerr end
  local file_drivers = #live
  local passed, failed = 0, 0
  for _, t in ipairs(tests) do
    local t0 = os.clock()
    local tok, terr = xpcall(t.fn, handler)
    free_drivers(file_drivers)
    collectgarbage()
    local ms = (os.clock() - t0) * 1000
    if tok then
      passed = passed + 1
      io.write(string.format("ok %d - %s: %s (%d ms)\n", index, path, t.name, ms))
    else
      failed = failed + 1
      io.write(string.format("not ok %d - %s: %s\n%s\n", index, path, t.name, indent(terr)))
    end
    index = index + 1
  end
  free_drivers()
  if #tests == 0 then io.write(string.format("# %s: no T.test in it\n", path)) end
  return passed, failed
end

return T
