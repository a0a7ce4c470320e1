-- Canary versions end to end: a running `eddy run` over two followed files
-- (two source tasks) keyed to four tasks, while a writer keeps appending.
-- `eddy reload --canary 1` puts the new version on the lowest task of each
-- stage, `--rollback` takes it back, `--canary-partitions 2` puts the next
-- one on keyed task 2, `--promote` switches the rest.  Every output row
-- carries the version of the source task that read it (s<V>), of the keyed
-- task that processed it (k<V>), the script's tag, the task and the key, so
-- the checks are an oracle over the input: each line exactly once; per key
-- one task; per task and input file, versions switch only at the roll-outs
-- (and go back only at the rollback); exactly the keys of the canary task
-- ran the canary.  Then the refusals.
--
-- Every wait here is bounded; after_each kills the writer and the daemon.

local E = require("support.eddy")
local cjson = E.cjson

-- keys k0..k15 from both files (line N is in file N % 2; its key is floor(N / 2) % 16)
local KEY = 'function(v) return "k" .. (math.floor(tonumber(v:match("%d+")) / 2) % 16) end'

-- script(tag[, key]): the pipeline; key replaces the key_by's function
local function script(tag, key)
  return table.concat({
    'local eddy = require("eddy")',                                                          -- 1
    'local p = eddy.pipeline()',                                                             -- 2
    'p:source("in", { file = "in*.txt", format = "lines", follow = true })',                  -- 3
    '  :map(function(v, ctx) return v .. " s" .. ctx.version end)',                         -- 4
    '  :key_by(' .. (key or KEY) .. ', { parallelism = 4 })',                                -- 5
    '  :map(function(v, ctx) return v .. " k" .. ctx.version .. " ' .. tag .. ' " .. ctx.task .. " " .. ctx.key end)',
    '  :sink("out", { file = "out", format = "lines" })',                                    -- 7
    'return p',                                                                              -- 8
  }, "\n") .. "\n"
end

local function config(dir, admin, extra)
  admin = admin or {}
  admin.listen = "127.0.0.1:0"
  local c = {
    name = "canary", pipeline = "pipeline.lua", threads = 2,
    state = { dir = "state" }, admin = admin, reload = { watch = false },
  }
  for k, v in pairs(extra or {}) do c[k] = v end
  return E.write_config(dir, c)
end

local function start(dir)
  local d = E.start({ "run", dir .. "/eddy.conf.lua" }, { timeout = 120 })
  local addr = E.admin_addr(dir .. "/state", 10)
  assert(addr, "no admin.addr; stderr:\n" .. d:stderr())
  return d, addr
end

local function status(addr)
  local code, body = E.curl("http://" .. addr .. "/status")
  assert.are.equal(200, code, "GET /status: " .. tostring(body))
  return cjson.decode(body)
end

local function metrics(addr)
  local code, body = E.curl("http://" .. addr .. "/metrics")
  assert.are.equal(200, code)
  return E.metrics(body)
end

-- reload(addr, ...): `eddy reload --admin addr ...`: { code, stdout, stderr }
local function reload(addr, ...)
  return E.run({ "reload", "--admin", addr, ... }, { timeout = 30 })
end

local function versions_of(st)
  local v = {}
  for _, t in ipairs(st.tasks) do v[t.name] = t.version end
  return v
end

-- wait_versions(addr, want): waits until the roll-out is over and each
-- task runs want[name]; the last status
local function wait_versions(addr, want)
  local st
  local ok = E.wait_for(function()
    st = status(addr)
    if st.pipeline.reloading then return false end
    local v = versions_of(st)
    for name, ver in pairs(want) do if v[name] ~= ver then return false end end
    return true
  end, 15)
  assert(ok, "the tasks did not reach " .. cjson.encode(want) .. "; status: " .. cjson.encode(st))
  return st
end

local function records_read(st)
  local n = 0
  for _, t in ipairs(st.tasks) do if t.source then n = n + t.records_in end end
  return n
end

local function wait_progress(addr, n)
  local from = records_read(status(addr))
  assert(E.wait_for(function() return records_read(status(addr)) >= from + n end, 15),
    "the sources did not read " .. n .. " more records")
end

-- ---- the writer: line<N> to in<N % 2>.txt, in batches ------------------------

local WRITER = [[
local ffi = require("ffi")
ffi.cdef("int usleep(unsigned int usec);")
local dir, stop, count = arg[1], arg[2], arg[3]
local batch, usec = tonumber(arg[4]), tonumber(arg[5])
local f = { [0] = assert(io.open(dir .. "/in0.txt", "ab")), [1] = assert(io.open(dir .. "/in1.txt", "ab")) }
local n = 0
while true do
  local s = io.open(stop, "rb")
  if s then s:close() break end
  local t = { [0] = {}, [1] = {} }
  for i = n + 1, n + batch do local p = t[i % 2]; p[#p + 1] = "line" .. i .. "\n" end
  n = n + batch
  for k = 0, 1 do f[k]:write(table.concat(t[k])); f[k]:flush() end
  ffi.C.usleep(usec)
end
f[0]:close(); f[1]:close()
local c = assert(io.open(count .. ".tmp", "wb"))
c:write(n, "\n")
c:close()
assert(os.rename(count .. ".tmp", count))
]]

local writers = {}

local function start_writer(dir, batch, usec)
  local wdir = E.tmpdir()         -- not beside the script
  local w = { dir = wdir, stop = wdir .. "/stop", count = wdir .. "/count" }
  E.write(wdir .. "/writer.lua", WRITER)
  os.execute(string.format("timeout -k 2 110 luajit %s %s %s %s %d %d </dev/null >%s 2>&1 & echo $! >%s",
    E.quote(wdir .. "/writer.lua"), E.quote(dir), E.quote(w.stop), E.quote(w.count), batch, usec,
    E.quote(wdir .. "/writer.log"), E.quote(wdir .. "/writer.pid")))
  w.pid = tonumber((E.wait_for(function() return E.read(wdir .. "/writer.pid") end, 5) or ""):match("%d+"))
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

-- output(dir): the rows of out/, { n, s, k, tag, task, key }
local function output(dir)
  local out = {}
  for _, path in ipairs(E.part_files(dir .. "/out")) do
    for _, l in ipairs(E.lines(E.read(path))) do
      local n, s, k, tag, task, key = l:match("^line(%d+) s(%d+) k(%d+) (%u) (keyed1%-%d) (k%d+)$")
      assert(n, "unexpected output line in " .. path .. ": " .. l)
      out[#out + 1] = { n = tonumber(n), s = tonumber(s), k = tonumber(k), tag = tag, task = task, key = key }
    end
  end
  return out
end

-- runs(list): the values of a list with repeats collapsed: {1,1,2,2,1} -> {1,2,1}
local function runs(list)
  local out = {}
  for _, v in ipairs(list) do if out[#out] ~= v then out[#out + 1] = v end end
  return out
end

describe("canary reload", function()
  local dir

  before_each(function() dir = E.tmpdir() end)

  after_each(function()
    for _, w in ipairs(writers) do
      if not w.done then os.execute("kill -TERM " .. w.pid .. " 2>/dev/null") end
    end
    writers = {}
    E.cleanup()
  end)

  it("a canary on 1 of 4 keyed tasks processes exactly that task's keys; rollback; a canary by partition; "
    .. "promote: every line exactly once, versions per task and input change only at the roll-outs", function()
    E.write(dir .. "/in0.txt", "")
    E.write(dir .. "/in1.txt", "")
    E.write(dir .. "/pipeline.lua", script("A"))
    config(dir)
    local _, addr = start(dir)
    local w = start_writer(dir, 20, 10000)
    wait_versions(addr, { ["in-0"] = 1, ["in-1"] = 1, ["keyed1-0"] = 1 })
    wait_progress(addr, 300)

    -- v2 on the lowest task of each stage: in-0 and keyed1-0
    E.write(dir .. "/pipeline.lua", script("B"))
    local r = reload(addr, "--canary", "1")
    assert.are.equal(0, r.code, r.stderr)
    local answer = cjson.decode(r.stdout)
    assert.are.equal(2, answer.version)
    assert.are.same({ "in-0", "keyed1-0" }, answer.canary.tasks)
    local st = wait_versions(addr, { ["in-0"] = 2, ["in-1"] = 1, ["keyed1-0"] = 2, ["keyed1-1"] = 1,
                                     ["keyed1-2"] = 1, ["keyed1-3"] = 1 })
    assert.are.equal(1, st.pipeline.version)
    assert.are.equal(2, st.pipeline.canary.version)
    assert.are.equal(1, st.pipeline.canary.from_version)
    assert.are.same({ "in-0", "keyed1-0" }, st.pipeline.canary.tasks)
    assert.are.equal("--canary 1", st.pipeline.canary.selected_by)
    wait_progress(addr, 400)

    -- the two versions side by side in /metrics
    local m = metrics(addr)
    assert.is_true((m['eddy_operator_records_in_total{task="keyed1-0",operator="map-4",kind="map",version="2"}'] or 0) > 0)
    assert.is_true((m['eddy_operator_records_in_total{task="keyed1-1",operator="map-4",kind="map",version="1"}'] or 0) > 0)
    assert.is_nil(m['eddy_operator_records_in_total{task="keyed1-1",operator="map-4",kind="map",version="2"}'])
    assert.is_true((m['eddy_records_in_total{task="keyed1-0",version="2"}'] or 0) > 0)
    assert.is_true((m['eddy_records_in_total{task="keyed1-0",version="1"}'] or 0) > 0)
    assert.is_nil(m['eddy_records_in_total{task="keyed1-1",version="2"}'])
    assert.are.equal(0, m['eddy_errors_total{task="keyed1-0",version="2"}'])

    -- while it runs: no plain reload, no second canary
    r = reload(addr)
    assert.are_not.equal(0, r.code)
    assert.matches("409: a canary of version 2 is running %(%-%-canary 1%)", r.stderr)
    r = reload(addr, "--canary", "2")
    assert.are_not.equal(0, r.code)
    assert.matches("409", r.stderr)

    -- rollback: the canaries go back to version 1
    r = reload(addr, "--rollback")
    assert.are.equal(0, r.code, r.stderr)
    st = wait_versions(addr, { ["in-0"] = 1, ["in-1"] = 1, ["keyed1-0"] = 1, ["keyed1-1"] = 1,
                               ["keyed1-2"] = 1, ["keyed1-3"] = 1 })
    assert.are.equal(cjson.null, st.pipeline.canary)
    assert.are.equal(1, st.pipeline.version)
    wait_progress(addr, 300)

    -- v3 (never 2 again) on the tasks of partition 2: keyed1-2 only (the source has 0 and 1)
    E.write(dir .. "/pipeline.lua", script("C"))
    r = reload(addr, "--canary-partitions", "2")
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(3, cjson.decode(r.stdout).version)
    st = wait_versions(addr, { ["in-0"] = 1, ["in-1"] = 1, ["keyed1-0"] = 1, ["keyed1-1"] = 1,
                               ["keyed1-2"] = 3, ["keyed1-3"] = 1 })
    assert.are.same({ "keyed1-2" }, st.pipeline.canary.tasks)
    wait_progress(addr, 300)

    -- promote: everything on 3
    r = reload(addr, "--promote")
    assert.are.equal(0, r.code, r.stderr)
    st = wait_versions(addr, { ["in-0"] = 3, ["in-1"] = 3, ["keyed1-0"] = 3, ["keyed1-1"] = 3,
                               ["keyed1-2"] = 3, ["keyed1-3"] = 3 })
    assert.are.equal(3, st.pipeline.version)
    assert.are.equal(cjson.null, st.pipeline.canary)
    wait_progress(addr, 300)

    local total = stop_writer(w)
    local rows
    assert(E.wait_for(function() rows = output(dir); return #rows >= total end, 20),
      "only " .. #(rows or {}) .. " of " .. total .. " lines came out")

    -- every line exactly once
    local seen = {}
    for _, row in ipairs(rows) do
      assert(not seen[row.n], "line" .. row.n .. " came out twice")
      assert(row.n >= 1 and row.n <= total, "line" .. row.n .. " was never written")
      seen[row.n] = row
    end
    for n = 1, total do assert(seen[n], "line" .. n .. " is missing") end

    local tags = { [1] = "A", [2] = "B", [3] = "C" }
    local task_of, by = {}, {}
    for n = 1, total do
      local row = seen[n]
      assert.are.equal(tags[row.k], row.tag, "line" .. n .. ": version " .. row.k .. " is script " .. tags[row.k])
      -- a key has one task (the versions route alike)
      task_of[row.key] = task_of[row.key] or row.task
      assert.are.equal(task_of[row.key], row.task, "key " .. row.key .. " went to two tasks")
      -- per keyed task and input file (partition), the keyed versions in input order;
      -- per input file, the source versions
      local f = n % 2
      local kt = row.task .. "/" .. f
      by[kt] = by[kt] or {}
      by[kt][#by[kt] + 1] = row.k
      by["in-" .. f] = by["in-" .. f] or {}
      by["in-" .. f][#by["in-" .. f] + 1] = row.s
    end
    -- versions change only at the roll-outs, and go down only at the rollback
    assert.are.same({ 1, 2, 1, 3 }, runs(by["in-0"]))
    assert.are.same({ 1, 3 }, runs(by["in-1"]))
    for f = 0, 1 do
      assert.are.same({ 1, 2, 1, 3 }, runs(by["keyed1-0/" .. f]), "keyed1-0, file " .. f)
      assert.are.same({ 1, 3 }, runs(by["keyed1-1/" .. f]), "keyed1-1, file " .. f)
      assert.are.same({ 1, 3 }, runs(by["keyed1-2/" .. f]), "keyed1-2, file " .. f)
      assert.are.same({ 1, 3 }, runs(by["keyed1-3/" .. f]), "keyed1-3, file " .. f)
    end
    -- the barrier rule: a keyed task switches once the roll-out's barrier came from every source
    -- task, so a record a source read before its barrier meets the keyed task's old version, one
    -- read after it the new.  in-0 and keyed1-0 switch at the same roll-outs (canary, rollback,
    -- promote), as do in-1, keyed1-1 and keyed1-3 (promote): their rows have s = k.
    for _, row in ipairs(rows) do
      local f = row.n % 2
      if (f == 0 and row.task == "keyed1-0") or (f == 1 and (row.task == "keyed1-1" or row.task == "keyed1-3")) then
        assert.are.equal(row.s, row.k, "line" .. row.n .. " (in-" .. f .. ", " .. row.task .. "): read by version "
          .. row.s .. " but processed by version " .. row.k .. " at the keyed task")
      end
    end
    -- exactly the keys of keyed1-0 ran version 2, each of them
    local v2keys = {}
    for _, row in ipairs(rows) do if row.k == 2 then v2keys[row.key] = true end end
    for key, task in pairs(task_of) do
      assert.are.equal(task == "keyed1-0", v2keys[key] == true, "key " .. key .. " of " .. task)
    end
    -- records crossed versions: read by a source task on one version, keyed on another
    local cross = {}
    for _, row in ipairs(rows) do cross[row.s .. ">" .. row.k] = (cross[row.s .. ">" .. row.k] or 0) + 1 end
    assert.is_true((cross["1>2"] or 0) > 0, "no record went from in-1 (v1) to keyed1-0 (v2)")
    assert.is_true((cross["2>1"] or 0) > 0, "no record went from in-0 (v2) to a keyed task on v1")
    assert.is_true((cross["1>3"] or 0) > 0, "no record reached the v3 canary keyed1-2")
  end)

  it("refuses what is not a canary: --promote or --rollback without one, K out of range, an unknown task, "
    .. "the running version again, a broken version, a changed key_by", function()
    E.write(dir .. "/in0.txt", "line0\n")
    E.write(dir .. "/in1.txt", "line1\n")
    E.write(dir .. "/pipeline.lua", script("A"))
    config(dir)
    local _, addr = start(dir)
    wait_versions(addr, { ["in-0"] = 1, ["keyed1-0"] = 1 })

    local function refused(code, pattern, ...)
      local r = reload(addr, ...)
      assert.are_not.equal(0, r.code, table.concat({ ... }, " ") .. " was accepted: " .. r.stdout)
      assert.matches("answered " .. code .. ": .*" .. pattern, r.stderr)
    end
    -- the command line takes one roll-out at a time, and no other reload option with it (exit 2)
    for _, args in ipairs({ { "--canary", "1", "--promote" }, { "--canary", "1", "--to", "1" },
                            { "--rollback", "--allow-dropped-state" }, { "--canary" } }) do
      local r = reload(addr, unpack(args))
      assert.are.equal(2, r.code, table.concat(args, " ") .. ": " .. r.stderr)
    end
    refused(409, "no canary is running: nothing to promote", "--promote")
    refused(409, "no canary is running: nothing to roll back", "--rollback")
    E.write(dir .. "/pipeline.lua", script("B"))
    refused(400, "%-%-canary 4: K is out of range: between 1 and 3", "--canary", "4")
    refused(400, "%-%-canary 0: K is out of range", "--canary", "0")
    refused(400, "%-%-canary x: K is a number of tasks per stage %(1 to 3%)", "--canary", "x")
    refused(400, "partition 7 is out of range", "--canary-partitions", "0,7")
    refused(400, "picks every task", "--canary-partitions", "0,1,2,3")
    refused(400, "no task is named 'keyed1%-9'", "--canary-tasks", "keyed1-0,keyed1-9")
    -- a changed key function, and a key_by on a field instead of the function
    E.write(dir .. "/pipeline.lua", script("B", 'function(v) return "k" .. (math.floor(tonumber(v:match("%d+")) / 2) % 8) end'))
    refused(422, "a canary cannot change how records are keyed: the key_by at pipeline.lua:5 .* its key "
      .. "function changed %(its code, or a value it reads from an enclosing local%)", "--canary", "1")
    -- a key function that reads its modulus from an enclosing local
    local moved = script("B", 'function(v) return "k" .. (math.floor(tonumber(v:match("%d+")) / 2) % MOD) end')
    E.write(dir .. "/pipeline.lua", moved:gsub("local p = eddy.pipeline%(%)", "local p = eddy.pipeline() local MOD = 8"))
    refused(422, "its key function changed", "--canary", "1")
    E.write(dir .. "/pipeline.lua", script("B", '"user"'))
    refused(422, "the key_by at pipeline.lua:5 .* it changed from a function to a field", "--canary", "1")
    -- a version that fails a reload's checks fails a canary's
    E.write(dir .. "/pipeline.lua", script("B") .. "error('broken')\n")
    refused(422, "pipeline.lua:9", "--canary", "1")
    E.write(dir .. "/pipeline.lua", script("A"))
    refused(422, "nothing changed", "--canary", "1")
    -- the same key_by moved to another line is the same routing
    E.write(dir .. "/pipeline.lua", "-- moved down a line\n" .. script("B"))
    local r = reload(addr, "--canary-tasks", "keyed1-3")
    assert.are.equal(0, r.code, r.stderr)
    local st = wait_versions(addr, { ["in-0"] = 1, ["keyed1-3"] = 2, ["keyed1-0"] = 1 })
    assert.are.same({ "keyed1-3" }, st.pipeline.canary.tasks)
    -- one request, one kind of roll-out
    local code, body = E.curl("http://" .. addr .. "/reload?canary=1&promote=1", "POST")
    assert.are.equal(400, code, body)
    -- the canary counts as a reload accepted; the four versions refused by their checks, as refused
    local m = metrics(addr)
    assert.are.equal(1, m['eddy_reloads_total{result="ok"}'])
    assert.are.equal(4, m['eddy_reloads_total{result="error"}'])
    -- no refused request changed a task
    st = status(addr)
    assert.are.equal(1, st.pipeline.version)
    for _, t in ipairs(st.tasks) do assert.are.equal(t.name == "keyed1-3" and 2 or 1, t.version, t.name) end
  end)

  it("counts errors per task and version: a canary that raises on some records shows them under its version only",
    function()
    E.write(dir .. "/in0.txt", "")
    E.write(dir .. "/in1.txt", "")
    E.write(dir .. "/pipeline.lua", script("A"))
    config(dir, nil, { on_error = "skip" })
    local _, addr = start(dir)
    local lines = {}
    for i = 1, 200 do lines[#lines + 1] = "line" .. i end
    local function feed(from, to)
      local t = { [0] = {}, [1] = {} }
      for i = from, to do t[i % 2][#t[i % 2] + 1] = "line" .. i .. "\n" end
      E.append(dir .. "/in0.txt", table.concat(t[0]))
      E.append(dir .. "/in1.txt", table.concat(t[1]))
    end
    feed(1, 200)
    assert(E.wait_for(function() return #output(dir) == 200 end, 10), "v1 did not process the first 200 lines")
    -- v2 raises at its keyed map on every line whose number ends in 0
    E.write(dir .. "/pipeline.lua", script("B"):gsub('%(function%(v, ctx%) return v %.%. " k"',
      '(function(v, ctx) if v:match("^line%%d*0 ") then error("v2 rejects " .. v) end return v .. " k"'))
    local r = reload(addr, "--canary-tasks", "keyed1-1")
    assert.are.equal(0, r.code, r.stderr)
    wait_versions(addr, { ["keyed1-1"] = 2, ["keyed1-0"] = 1 })
    feed(201, 600)
    local m
    assert(E.wait_for(function()
      m = metrics(addr)
      local n = 0
      for i = 0, 3 do n = n + (m['eddy_records_in_total{task="keyed1-' .. i .. '",version="' .. (i == 1 and 2 or 1) .. '"}'] or 0) end
      return #output(dir) + (m['eddy_errors_total{task="keyed1-1",version="2"}'] or 0) >= 600
    end, 10), "the last 400 lines were not all processed")
    local rejected = 0
    for _, row in ipairs(output(dir)) do
      if row.n > 200 and row.task == "keyed1-1" then
        assert.are.equal(2, row.k)
        assert.is_falsy(tostring(row.n):match("0$"), "line" .. row.n .. " should have been rejected by v2")
      end
      if row.n > 200 and row.n % 10 == 0 then assert.are_not.equal("keyed1-1", row.task) end
    end
    for n = 201, 600 do
      if n % 10 == 0 then rejected = rejected + 1 end
    end
    local v2_errors = m['eddy_errors_total{task="keyed1-1",version="2"}']
    assert.is_true(v2_errors > 0 and v2_errors < rejected, "v2 errors: " .. tostring(v2_errors))
    assert.are.equal(v2_errors, m['eddy_records_skipped_total{task="keyed1-1",version="2"}'])
    assert.are.equal(0, m['eddy_errors_total{task="keyed1-1",version="1"}'])
    for _, task in ipairs({ "keyed1-0", "keyed1-2", "keyed1-3" }) do
      assert.are.equal(0, m['eddy_errors_total{task="' .. task .. '",version="1"}'])
      assert.is_nil(m['eddy_errors_total{task="' .. task .. '",version="2"}'])
    end
  end)

  it("under exactly_once with checkpoints, keyed state goes on through a canary, its rollback and a promotion: "
    .. "every line once, each key's count 1..n", function()
    E.write(dir .. "/in0.txt", "")
    E.write(dir .. "/in1.txt", "")
    local function counting(tag)
      return table.concat({
        'local eddy = require("eddy")',
        'local p = eddy.pipeline()',
        'p:source("in", { file = "in*.txt", format = "lines", follow = true })',
        '  :map(function(v, ctx) return v .. " s" .. ctx.version end)',
        '  :key_by(' .. KEY .. ', { parallelism = 4 })',
        '  :process({ process = function(v, ctx)',
        '      local s = ctx.state:value("n"); local n = (s:get() or 0) + 1; s:set(n)',
        '      ctx.emit(v .. " k" .. ctx.version .. " ' .. tag .. ' " .. ctx.task .. " " .. ctx.key .. " " .. n) end })',
        '  :uid("count")',
        '  :sink("out", { file = "out", format = "lines" })',
        'return p',
      }, "\n") .. "\n"
    end
    E.write(dir .. "/pipeline.lua", counting("A"))
    config(dir, nil, { guarantee = "exactly_once", checkpoint = { interval = "200ms" } })
    local _, addr = start(dir)
    local fed = 0
    local function feed(n)
      local t = { [0] = {}, [1] = {} }
      for i = fed + 1, fed + n do t[i % 2][#t[i % 2] + 1] = "line" .. i .. "\n" end
      fed = fed + n
      E.append(dir .. "/in0.txt", table.concat(t[0]))
      E.append(dir .. "/in1.txt", table.concat(t[1]))
      assert(E.wait_for(function() return records_read(status(addr)) >= fed end, 10), "the sources did not read " .. fed)
    end
    -- a roll-out waits for a checkpoint in progress: 503, try again
    local function roll(...)
      local r
      for _ = 1, 50 do
        r = reload(addr, ...)
        if r.code == 0 or not r.stderr:match("answered 503") then break end
        E.sleep(0.1)
      end
      assert.are.equal(0, r.code, r.stderr)
    end
    feed(300)
    E.write(dir .. "/pipeline.lua", counting("B"))
    roll("--canary", "1")
    wait_versions(addr, { ["keyed1-0"] = 2, ["keyed1-1"] = 1 })
    feed(300)
    roll("--rollback")
    wait_versions(addr, { ["keyed1-0"] = 1, ["in-0"] = 1 })
    feed(300)
    E.write(dir .. "/pipeline.lua", counting("C"))
    roll("--canary-tasks", "keyed1-3,in-1")
    wait_versions(addr, { ["keyed1-3"] = 3, ["in-1"] = 3, ["keyed1-0"] = 1 })
    feed(300)
    roll("--promote")
    wait_versions(addr, { ["in-0"] = 3, ["in-1"] = 3, ["keyed1-0"] = 3, ["keyed1-1"] = 3, ["keyed1-2"] = 3,
                          ["keyed1-3"] = 3 })
    feed(300)
    local lines
    assert(E.wait_for(function() lines = E.sink_lines(dir .. "/out"); return #lines >= fed end, 15),
      "only " .. #(lines or {}) .. " of " .. fed .. " lines were committed")
    assert.are.equal(fed, #lines)
    local seen, counts, tags = {}, {}, { "A", "B", "C" }
    for _, l in ipairs(lines) do
      local n, k, tag, key, c = l:match("^line(%d+) s%d+ k(%d+) (%u) keyed1%-%d (k%d+) (%d+)$")
      assert(n, "unexpected line: " .. l)
      n = tonumber(n)
      assert(not seen[n], "line" .. n .. " came out twice")
      seen[n] = true
      assert.are.equal(tags[tonumber(k)], tag)
      counts[key] = counts[key] or {}
      counts[key][#counts[key] + 1] = tonumber(c)
    end
    for key, cs in pairs(counts) do
      table.sort(cs)
      for i, c in ipairs(cs) do assert.are.equal(i, c, "key " .. key .. ": its count skipped or repeated") end
    end
  end)

  it("refuses a canary whose version brings a new migrate", function()
    E.write(dir .. "/in0.txt", "line0\n")
    E.write(dir .. "/in1.txt", "line1\n")
    local function proc(migrate)
      return table.concat({
        'local eddy = require("eddy")',
        'local p = eddy.pipeline()',
        'p:source("in", { file = "in*.txt", format = "lines", follow = true })',
        '  :key_by(' .. KEY .. ', { parallelism = 4 })',
        '  :process({ process = function(v, ctx) ctx.state.n = (ctx.state.n or 0) + 1; ctx.emit(v) end'
          .. (migrate and ', migrate = function(old) return old end' or '') .. ' }):uid("count")',
        '  :sink("out", { file = "out", format = "lines" })',
        'return p',
      }, "\n") .. "\n"
    end
    E.write(dir .. "/pipeline.lua", proc(false))
    config(dir)
    local _, addr = start(dir)
    wait_versions(addr, { ["keyed1-0"] = 1 })
    E.write(dir .. "/pipeline.lua", proc(true))
    local r = reload(addr, "--canary", "1")
    assert.are_not.equal(0, r.code, r.stdout)
    assert.matches("answered 422: a canary cannot bring a new migrate: the process operator at pipeline.lua:5 "
      .. "%(uid count%)", r.stderr)
    assert.are.equal(cjson.null, status(addr).pipeline.canary)
  end)

  it("POST /reload?canary=K takes the admin token as POST /reload does", function()
    E.write(dir .. "/in0.txt", "line0\n")
    E.write(dir .. "/in1.txt", "line1\n")
    E.write(dir .. "/pipeline.lua", script("A"))
    config(dir, { token = "s3cret-canary-token" })
    local _, addr = start(dir)
    E.write(dir .. "/pipeline.lua", script("B"))
    local code = E.curl("http://" .. addr .. "/reload?canary=1", "POST")
    assert.are.equal(401, code)
    local r = reload(addr, "--canary", "1")
    assert.are_not.equal(0, r.code)
    assert.matches("401", r.stderr)
    assert.are.equal(cjson.null, status(addr).pipeline.canary)
    r = reload(addr, "--canary=1", "--token", "s3cret-canary-token")
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(2, cjson.decode(r.stdout).canary.version)
    r = reload(addr, "--rollback", "--token", "s3cret-canary-token")
    assert.are.equal(0, r.code, r.stderr)
  end)
end)
