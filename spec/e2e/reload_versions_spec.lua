-- Kept versions and `eddy reload --to` end to end: a running `eddy run`
-- keeps every accepted version of its pipeline in state.dir/versions/<N>/
-- (the script and the .lua files beside it, with their sha256), and `eddy
-- reload --to VERSION` (POST /reload?to=VERSION) goes back to one through
-- the same checks as any reload, while a writer process keeps appending to
-- a followed input file: every input line must come out exactly once,
-- tagged by the logic of the version that processed it.
--
-- Every wait is bounded (E.wait_for with a deadline), and after_each kills
-- the writer and the daemon even when a spec failed.

local E = require("support.eddy")
local cjson = E.cjson

-- ---- pipeline scripts ---------------------------------------------------------

-- script(o): one followed file, fanned out to (1) a key_by on the line's last
-- digit (2 keyed tasks) and a map that writes "line<N> v<version> <tag>" to
-- out/; (2) a key_by to one key and a 1 s tumbling window counting records
-- (uid o.uid or "w") to counts/.  o.tag is a Lua expression for the tag:
-- version A takes it from a module beside the script (require "tagger").
local function script(o)
  local L = {
    'local eddy = require("eddy")',
    o.head or '',
    'local p = eddy.pipeline()',
    'local src = p:source("in", { file = "in.txt", format = "lines", follow = true, timestamp = "ingest", '
      .. 'watermark = eddy.watermark.bounded("1ms") })',
    'src:key_by(function(v) return v:sub(-1) end)',
    '   :map(function(v, ctx) return v .. " v" .. ctx.version .. " " .. ' .. o.tag .. ' end)',
    '   :sink("out", { file = "out", format = "lines" })',
    'src:key_by(function() return "all" end)',
    '   :window(eddy.window.tumbling("1s")):count():uid("' .. (o.uid or "w") .. '")',
    '   :map(function(n, ctx) return ctx.window.start .. " " .. n end)',
    '   :sink("counts", { file = "counts", format = "lines" })',
    'return p',
  }
  return table.concat(L, "\n") .. "\n"
end

-- version A: its tag comes from tagger.lua beside it; B, C: written inline
local A = script({ head = 'local tagger = require("tagger")', tag = 'tagger.tag' })
local TAGGER = 'return { tag = "A" }\n'
local B = script({ tag = '"B"' })
local C = script({ tag = '"C"' })

-- ---- the daemon and its admin API ----------------------------------------------

-- the file watcher is off: the specs say when to reload
local function config(dir, extra)
  local c = {
    name = "rv", pipeline = "pipeline.lua", threads = 2, parallelism = 2,
    state = { dir = "state" }, admin = { listen = "127.0.0.1:0" }, reload = { watch = false },
  }
  for k, v in pairs(extra or {}) do
    if type(v) == "table" and type(c[k]) == "table" then for kk, vv in pairs(v) do c[k][kk] = vv end
    else c[k] = v end
  end
  return E.write_config(dir, c)
end

local function status(addr)
  local code, body = E.curl("http://" .. addr .. "/status")
  assert.are.equal(200, code, "GET /status: " .. tostring(body))
  return cjson.decode(body)
end

-- post(addr, path): HTTP status and the decoded JSON answer
local function post(addr, path)
  local code, body = E.curl("http://" .. addr .. path, "POST")
  local ok, doc = pcall(cjson.decode, body)
  return code, ok and doc or body
end

-- reload(addr, ...): `eddy reload --admin addr ...`: { code, stdout, stderr }
local function reload(addr, ...)
  return E.run({ "reload", "--admin", addr, ... }, { timeout = 30 })
end

local function source_in(st)
  local n = 0
  for _, t in ipairs(st.tasks) do if t.source then n = n + t.records_in end end
  return n
end

-- settled(st, v): version v is the pipeline's and every running task's
local function settled(st, v)
  if st.pipeline.version ~= v or st.pipeline.reloading ~= false then return false end
  for _, t in ipairs(st.tasks) do
    if t.status == "running" and t.version ~= v then return false end
  end
  return true
end

local function wait_settled(addr, v)
  local st
  local ok = E.wait_for(function() st = status(addr); return settled(st, v) end, 10)
  assert(ok, "version " .. v .. " did not settle; status: " .. cjson.encode(st and st.pipeline or {}))
  return st
end

-- wait_progress(addr, n): the source tasks read n more records than now
local function wait_progress(addr, n)
  local from = source_in(status(addr))
  local ok = E.wait_for(function() return source_in(status(addr)) >= from + n end, 10)
  assert(ok, "no progress: the source did not read " .. n .. " more records")
end

local function start(dir)
  local d = E.start({ "run", dir .. "/eddy.conf.lua" }, { timeout = 90 })
  local addr = E.admin_addr(dir .. "/state", 10)
  assert(addr, "no admin.addr; stderr:\n" .. d:stderr())
  return d, addr
end

-- kept(st): { [version] = sha256 } of /status pipeline.versions, and their count
local function kept(st)
  local out, n = {}, 0
  for _, v in ipairs(st.pipeline.versions) do
    assert(v.loaded_at > 0, "a kept version without its load time")
    out[v.version] = v.sha256
    n = n + 1
  end
  return out, n
end

-- folders(dir): the version numbers under dir/state/versions, sorted
local function folders(dir)
  local out = {}
  for _, name in ipairs(E.ls(dir .. "/state/versions")) do out[#out + 1] = tonumber(name) or name end
  table.sort(out, function(a, b) return tostring(a) < tostring(b) end)
  return out
end

-- ---- the writer process ---------------------------------------------------------

-- Appends "line<N>" lines to a file in batches, one write and flush per
-- batch, sleeping `usec` between batches, until the stop file appears; then
-- writes the number of lines to the count file.
local WRITER = [[
local ffi = require("ffi")
ffi.cdef("int usleep(unsigned int usec);")
local path, stop, count = arg[1], arg[2], arg[3]
local batch, usec = tonumber(arg[4]), tonumber(arg[5])
local f = assert(io.open(path, "ab"))
f:setvbuf("full", 1048576)
local n = 0
while true do
  local s = io.open(stop, "rb")
  if s then s:close() break end
  local t = {}
  for i = 1, batch do t[i] = "line" .. (n + i) .. "\n" end
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

local function start_writer(dir, batch, usec)
  local input = dir .. "/in.txt"
  dir = E.tmpdir()              -- not beside the script: a .lua file there would be part of the pipeline
  local w = { dir = dir, stop = dir .. "/writer.stop", count = dir .. "/writer.count" }
  E.write(dir .. "/writer.lua", WRITER)
  os.execute(string.format("timeout -k 2 90 luajit %s %s %s %s %d %d </dev/null >%s 2>&1 & echo $! >%s",
    E.quote(dir .. "/writer.lua"), E.quote(input), E.quote(w.stop), E.quote(w.count),
    batch, usec, E.quote(dir .. "/writer.log"), E.quote(dir .. "/writer.pid")))
  w.pid = tonumber((E.wait_for(function() return E.read(dir .. "/writer.pid") end, 5) or ""):match("%d+"))
  assert(w.pid, "the writer did not start")
  writers[#writers + 1] = w
  return w
end

local function stop_writer(w)
  E.write(w.stop, "")
  local s = E.wait_for(function() return E.read(w.count) end, 10)
  assert(s, "the writer did not stop: " .. tostring(E.read(w.dir .. "/writer.log")))
  w.done = true
  return tonumber(s:match("%d+"))
end

-- ---- reading the output ---------------------------------------------------------

-- output(dir): the records of out/: { n = line number, v = version, tag }
local function output(dir)
  local out = {}
  for _, path in ipairs(E.part_files(dir .. "/out")) do
    for _, l in ipairs(E.lines(E.read(path))) do
      local n, v, tag = l:match("^line(%d+) v(%d+) (%u)$")
      assert(n, "unexpected output line in " .. path .. ": " .. l)
      out[#out + 1] = { n = tonumber(n), v = tonumber(v), tag = tag }
    end
  end
  return out
end

-- wait_output(dir, total): the output once it has `total` lines
local function wait_output(dir, total)
  local recs
  E.wait_for(function() recs = output(dir); return #recs >= total end, 15)
  return recs
end

-- check_output(recs, total, tags): every line 1..total exactly once, each
-- tagged by the logic of the version that processed it (tags[v]), versions
-- never decreasing along the input; returns { [v] = lines it processed }
local function check_output(recs, total, tags)
  local by_n, per = {}, {}
  for _, r in ipairs(recs) do
    assert(not by_n[r.n], "line" .. r.n .. " came out twice")
    assert(r.n >= 1 and r.n <= total, "line" .. r.n .. " was never written")
    by_n[r.n] = r
    assert(tags[r.v], "line" .. r.n .. " was processed by version " .. r.v .. ", which was never accepted")
    assert(tags[r.v] == r.tag, "line" .. r.n .. ": version " .. r.v .. " should run the logic of script "
      .. tags[r.v] .. " but tagged it " .. r.tag)
    per[r.v] = (per[r.v] or 0) + 1
  end
  local last = 0
  for n = 1, total do
    local r = by_n[n]
    assert(r, "line" .. n .. " is missing from the output (" .. #recs .. " of " .. total .. " lines came out)")
    assert(r.v >= last, "line" .. n .. " was processed by version " .. r.v .. " after an earlier line by version " .. last)
    last = r.v
  end
  return per
end

-- ---- the specs --------------------------------------------------------------------

describe("kept versions and reload --to", function()
  local dir

  before_each(function() dir = E.tmpdir() end)

  after_each(function()
    for _, w in ipairs(writers) do
      if not w.done then os.execute("kill -TERM " .. w.pid .. " 2>/dev/null") end
    end
    writers = {}
    E.cleanup()
  end)

  it("goes back to version 1 with eddy reload --to 1 under a continuous writer, then forward again from the "
    .. "files on disk: each line exactly once, by the logic of its version; the version number goes up, the "
    .. "sha256 is the kept version's; each accepted version is kept with its sha256", function()
    E.write(dir .. "/in.txt", "")
    E.write(dir .. "/tagger.lua", TAGGER)
    E.write(dir .. "/pipeline.lua", A)
    config(dir)
    local d, addr = start(dir)
    local w = start_writer(dir, 20, 10000)

    local st = wait_settled(addr, 1)
    local sha1 = st.pipeline.sha256
    local k, n = kept(st)
    assert.are.equal(1, n)
    assert.are.equal(sha1, k[1])
    assert.are.equal(A, E.read(dir .. "/state/versions/1/pipeline.lua"))
    assert.are.equal(TAGGER, E.read(dir .. "/state/versions/1/tagger.lua"))
    assert.is_nil(E.read(dir .. "/state/versions/1/in.txt"))     -- data is not part of a version
    wait_progress(addr, 100)

    -- version 2: script B, by `eddy reload` from the files on disk
    E.write(dir .. "/pipeline.lua", B)
    local r = reload(addr)
    assert.are.equal(0, r.code, r.stderr)
    st = wait_settled(addr, 2)
    local sha2 = st.pipeline.sha256
    assert.are_not.equal(sha1, sha2)
    wait_progress(addr, 100)

    -- back to version 1's logic: version 3, with version 1's sha256
    r = reload(addr, "--to", "1")
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(3, cjson.decode(r.stdout).version)
    assert.are.equal(sha1, cjson.decode(r.stdout).sha256)
    st = wait_settled(addr, 3)
    assert.are.equal(sha1, st.pipeline.sha256)
    assert.are.equal(cjson.null, st.pipeline.last_reload_error)
    assert.are.equal(B, E.read(dir .. "/pipeline.lua"))          -- the folder is not touched
    k, n = kept(st)
    assert.are.equal(3, n)
    assert.are.same({ sha1, sha2, sha1 }, { k[1], k[2], k[3] })
    wait_progress(addr, 100)

    -- by a sha256 prefix, through the admin API: back to version 2's logic
    local code, doc = post(addr, "/reload?to=" .. sha2:sub(1, 8))
    assert.are.equal(200, code, cjson.encode(doc))
    assert.are.equal(4, doc.version)
    assert.are.equal(sha2, doc.sha256)
    wait_settled(addr, 4)
    wait_progress(addr, 100)

    -- --to the running version's content: nothing changed
    code, doc = post(addr, "/reload?to=2")
    assert.are.equal(200, code, cjson.encode(doc))
    assert.are.same({ version = 4, sha256 = sha2, unchanged = true }, doc)

    -- forward from the files on disk, as ever
    E.write(dir .. "/pipeline.lua", C)
    r = reload(addr)
    assert.are.equal(0, r.code, r.stderr)
    st = wait_settled(addr, 5)
    local sha5 = st.pipeline.sha256
    k, n = kept(st)
    assert.are.equal(5, n)
    assert.are.equal(sha5, k[5])
    assert.are.equal(C, E.read(dir .. "/state/versions/5/pipeline.lua"))
    wait_progress(addr, 100)

    local total = stop_writer(w)
    local recs = wait_output(dir, total)
    local per = check_output(recs, total, { "A", "B", "A", "B", "C" })
    for v = 1, 5 do assert(per[v] and per[v] > 0, "version " .. v .. " processed no line") end
    assert.is_true(d:alive())
  end)

  it("refuses --to an unknown version (404, exit 1) and a malformed one (400, exit 2) and keeps running",
    function()
    E.write(dir .. "/in.txt", "line1\n")
    E.write(dir .. "/tagger.lua", TAGGER)
    E.write(dir .. "/pipeline.lua", A)
    config(dir)
    local d, addr = start(dir)
    wait_settled(addr, 1)
    local r = reload(addr, "--to", "7")
    assert.are.equal(1, r.code)
    assert.matches("answered 404: reload %-%-to 7: no kept version is '7'; kept: 1 %(", r.stderr)
    r = reload(addr, "--to", "deadbeef")
    assert.are.equal(1, r.code)
    assert.matches("no kept version is 'deadbeef'", r.stderr)
    r = reload(addr, "--to", "v1")
    assert.are.equal(2, r.code)
    assert.matches("VERSION is a kept version number or a sha256 prefix", r.stderr)
    local code, doc = post(addr, "/reload?to=v1")
    assert.are.equal(400, code)
    assert.matches("neither a version number nor a sha256 prefix", doc.error)
    code, doc = post(addr, "/reload?to=99")
    assert.are.equal(404, code)
    assert.are.equal(1, doc.version)
    local st = status(addr)
    assert.are.equal(1, st.pipeline.version)
    assert.are.same({ "1" }, E.ls(dir .. "/state/versions"))     -- no copy left behind
    assert.is_true(d:alive())
  end)

  it("refuses --to a kept version that no longer compiles against the folder (its module was deleted) and one "
    .. "that drops a window's state: the running version keeps running, nothing lost or repeated", function()
    E.write(dir .. "/in.txt", "")
    E.write(dir .. "/tagger.lua", TAGGER)
    E.write(dir .. "/pipeline.lua", A)
    config(dir)
    local d, addr = start(dir)
    local w = start_writer(dir, 20, 10000)
    wait_settled(addr, 1)
    wait_progress(addr, 100)

    -- version 2 needs no module; the module goes
    E.write(dir .. "/pipeline.lua", B)
    os.remove(dir .. "/tagger.lua")
    local r = reload(addr)
    assert.are.equal(0, r.code, r.stderr)
    wait_settled(addr, 2)
    wait_progress(addr, 100)

    r = reload(addr, "--to", "1")
    assert.are.equal(1, r.code)
    assert.matches("answered 422: kept version 1 %(sha256 %x+%) cannot run now", r.stderr)
    assert.matches("pipeline.lua:2: module 'tagger' not found in the pipeline's folder", r.stderr)
    assert.matches("state/versions/1%)", r.stderr)
    local st = status(addr)
    assert.are.equal(2, st.pipeline.version)
    assert.matches("module 'tagger' not found", st.pipeline.last_reload_error)
    local _, n = kept(st)
    assert.are.equal(2, n)
    assert.is_nil(E.read(dir .. "/state/versions/3/pipeline.lua"))   -- the refused copy is gone
    wait_progress(addr, 100)

    -- version 3 renames the window's uid (dropping "w" is allowed explicitly);
    -- going back to version 2 would drop "w2" and is refused the same way
    E.write(dir .. "/pipeline.lua", script({ tag = '"C"', uid = "w2" }))
    r = reload(addr, "--allow-dropped-state")
    assert.are.equal(0, r.code, r.stderr)
    wait_settled(addr, 3)
    wait_progress(addr, 100)
    local code, doc = post(addr, "/reload?to=2")
    assert.are.equal(422, code)
    assert.matches("kept version 2 .* the window with uid 'w2' .* is gone", doc.error)
    assert.are.equal(3, doc.version)
    st = status(addr)
    assert.are.equal(3, st.pipeline.version)
    wait_progress(addr, 100)

    -- and with --allow-dropped-state it goes back
    r = reload(addr, "--to", "2", "--allow-dropped-state")
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(4, cjson.decode(r.stdout).version)
    wait_settled(addr, 4)
    wait_progress(addr, 100)

    local total = stop_writer(w)
    local recs = wait_output(dir, total)
    local per = check_output(recs, total, { "A", "B", "C", "B" })
    for v = 1, 4 do assert(per[v] and per[v] > 0, "version " .. v .. " processed no line") end
    assert.is_true(d:alive())
  end)

  it("goes back to a kept version's script with the folder's modules as they are now: its sha256 is then of "
    .. "what runs, not the kept version's, and the log says so", function()
    E.write(dir .. "/in.txt", "line1\nline2\n")
    E.write(dir .. "/tagger.lua", TAGGER)
    E.write(dir .. "/pipeline.lua", A)
    config(dir)
    local d, addr = start(dir)
    local st = wait_settled(addr, 1)
    local sha1 = st.pipeline.sha256
    E.wait_for(function() return #output(dir) == 2 end, 10)
    E.write(dir .. "/tagger.lua", 'return { tag = "Z" }\n')
    E.write(dir .. "/pipeline.lua", B)
    assert.are.equal(0, reload(addr).code)
    wait_settled(addr, 2)
    E.append(dir .. "/in.txt", "line3\n")
    E.wait_for(function() return #output(dir) == 3 end, 10)
    local r = reload(addr, "--to", "1")
    assert.are.equal(0, r.code, r.stderr)
    st = wait_settled(addr, 3)
    assert.are_not.equal(sha1, st.pipeline.sha256)
    local k = kept(st)
    assert.are.equal(st.pipeline.sha256, k[3])
    assert.are.equal(sha1, k[1])
    E.append(dir .. "/in.txt", "line4\n")
    local recs = wait_output(dir, 4)
    check_output(recs, 4, { "A", "B", "Z" })
    assert.is_truthy(E.wait_for(function()
      return d:stderr():find("runs kept version 1's script with the modules of .- as they are now, which differ "
        .. "from version 1's", 1) end, 5), d:stderr())
  end)

  it("POST /reload?to= needs the admin token as POST /reload does", function()
    E.write(dir .. "/in.txt", "line1\n")
    E.write(dir .. "/tagger.lua", TAGGER)
    E.write(dir .. "/pipeline.lua", A)
    local token = "a-token-of-twenty-characters"
    config(dir, { admin = { token = token } })
    local d, addr = start(dir)
    wait_settled(addr, 1)
    E.write(dir .. "/pipeline.lua", B)
    local r = E.run({ "reload", "--admin", addr }, { env = { EDDY_ADMIN_TOKEN = token } })
    assert.are.equal(0, r.code, r.stderr)
    wait_settled(addr, 2)
    local code = E.curl("http://" .. addr .. "/reload?to=1", "POST")
    assert.are.equal(401, code)
    r = reload(addr, "--to", "1")
    assert.are.equal(1, r.code)
    assert.matches("answered 401", r.stderr)
    assert.are.equal(2, status(addr).pipeline.version)
    r = reload(addr, "--to", "1", "--token", token)
    assert.are.equal(0, r.code, r.stderr)
    wait_settled(addr, 3)
    assert.is_true(d:alive())
  end)

  it("keeps the newest reload.keep_versions versions: the folder is trimmed, and --to a trimmed one is unknown",
    function()
    E.write(dir .. "/in.txt", "line1\n")
    E.write(dir .. "/tagger.lua", TAGGER)
    E.write(dir .. "/pipeline.lua", A)
    config(dir, { reload = { keep_versions = 2 } })
    local d, addr = start(dir)
    wait_settled(addr, 1)
    local tags = { "B", "C", "B", "C" }
    for i, tag in ipairs(tags) do
      E.write(dir .. "/pipeline.lua", script({ tag = '"' .. tag .. '"' }))
      local r = reload(addr)
      assert.are.equal(0, r.code, r.stderr)
      wait_settled(addr, i + 1)
    end
    local st = status(addr)
    local k, n = kept(st)
    assert.are.equal(2, n)
    assert.is_truthy(k[4] and k[5])
    assert.are.equal(st.pipeline.sha256, k[5])
    assert.are.same({ 4, 5 }, folders(dir))
    local r = reload(addr, "--to", "1")
    assert.are.equal(1, r.code)
    assert.matches("no kept version is '1'; kept: 4 %(%x+%), 5 %(%x+%)", r.stderr)
    r = reload(addr, "--to", "4")
    assert.are.equal(0, r.code, r.stderr)
    wait_settled(addr, 6)
    assert.are.same({ 5, 6 }, folders(dir))
    assert.is_true(d:alive())
  end)

  it("starts a run with only the version it started with kept (version numbers start again at 1)", function()
    E.write(dir .. "/in.txt", "line1\n")
    E.write(dir .. "/tagger.lua", TAGGER)
    E.write(dir .. "/pipeline.lua", A)
    config(dir)
    local d, addr = start(dir)
    wait_settled(addr, 1)
    E.write(dir .. "/pipeline.lua", B)
    assert.are.equal(0, reload(addr).code)
    wait_settled(addr, 2)
    assert.are.same({ 1, 2 }, folders(dir))
    d:kill("TERM")
    assert.is_truthy(d:wait(15))
    os.remove(dir .. "/state/admin.addr")
    local d2, addr2 = start(dir)
    local st = wait_settled(addr2, 1)
    assert.are.same({ 1 }, folders(dir))
    local k, n = kept(st)
    assert.are.equal(1, n)
    assert.are.equal(st.pipeline.sha256, k[1])
    assert.are.equal(B, E.read(dir .. "/state/versions/1/pipeline.lua"))
    assert.is_true(d2:alive())
  end)
end)
