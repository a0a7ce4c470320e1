-- Chaos: a file → keyed window → file job under exactly_once, run through
-- everything at once — SIGKILLs at random moments, a full disk (its
-- state.dir and output live on a small tmpfs that a filler file fills up),
-- a flood of idle admin connections and of admin requests, and a storm of
-- reloads (good versions, broken ones, and one that never finishes
-- building).  Whatever happens, every run of eddy ends (no hang: each wait
-- is bounded, and a run that outlives its bound fails the spec), a run
-- that fails says why, the committed output never holds a row twice or a
-- row the job would not write, and the last run, left alone, ends the job
-- with its output exact, row for row.

local E = require("support.eddy")
local C = require("support.crash")
local cjson = E.cjson

local FILES, PER_FILE, KEYS = 2, 12000, 16
local T0 = 1700000000000
local WINDOW_MS = 10000

-- the pipeline; `tag` only changes a comment (each version is a real new
-- version with the same results), `fault` a line that breaks it
local function script(tag, fault)
  return table.concat({
    '-- version ' .. tag,
    'local eddy = require("eddy")',
    'local p = eddy.pipeline()',
    'p:source("in", { file = "in/*.jsonl", format = "json", timestamp = "ts", watermark = eddy.watermark.bounded("1s") })',
    '  :map(function(v) local t = os.clock() + 0.0005 while os.clock() < t do end return v end)',
    '  :key_by("k")',
    '  :window(eddy.window.tumbling("10s")):sum("x"):uid("sums")',
    '  :map(function(n, ctx) return { k = ctx.key, start = ctx.window.start, sum = n } end)',
    '  :sink("out", { file = "mnt/out", format = "json" })',
    fault or '',
    'return p',
  }, "\n") .. "\n"
end

-- the inputs, and the rows the job must commit: { rows = { canon = 1 }, n }
local function inputs(dir)
  local want, n = {}, 0
  local sums = {}
  local rnd = C.rng(1919)
  for f = 0, FILES - 1 do
    local lines = {}
    for i = 1, PER_FILE do
      local k = "k" .. rnd(KEYS)
      local ts = T0 + i * 100 + f * 7
      local x = rnd(1000)
      lines[i] = string.format('{"k":"%s","ts":%d,"x":%d}', k, ts, x)
      local start = ts - ts % WINDOW_MS
      local id = k .. "|" .. start
      sums[id] = (sums[id] or 0) + x
    end
    E.write(dir .. "/in/part-" .. f .. ".jsonl", table.concat(lines, "\n") .. "\n")
  end
  for id, s in pairs(sums) do
    local k, start = id:match("^(.-)|(%d+)$")
    want[E.canon({ k = k, start = tonumber(start), sum = s })] = 1
    n = n + 1
  end
  return { rows = want, n = n }
end

local function committed(dir)
  local rows, n = {}, 0
  for _, r in ipairs(E.sink_json(dir .. "/mnt/out")) do rows[r] = (rows[r] or 0) + 1; n = n + 1 end
  return { rows = rows, n = n }
end

-- what the committed output may be at any moment: no row twice, no row the job does not write
local function no_duplicates(expected, got)
  local bad = {}
  for r, c in pairs(got.rows) do
    if c > 1 or not expected.rows[r] then bad[#bad + 1] = c .. "x " .. r end
  end
  table.sort(bad)
  return table.concat(bad, "\n", 1, math.min(#bad, 10))
end

describe("chaos", function()
  local dir, mnt
  after_each(function()
    if mnt then E.sh("umount -l " .. E.quote(mnt)) end
    E.sh("[ -f " .. E.quote(dir .. "/holder.pid") .. " ] && kill $(cat " .. E.quote(dir .. "/holder.pid") .. ")")
    E.cleanup()
  end)

  it("a keyed window job under exactly_once through SIGKILLs, a full disk, an admin flood and a reload storm: "
    .. "its committed output is exact, or a run stops saying why; nothing hangs or is written twice", function()
    dir = E.tmpdir()
    mnt = dir .. "/mnt"
    E.mkdirs(mnt)
    local rc, out = E.shell("mount -t tmpfs -o size=48m eddy-spec-chaos " .. E.quote(mnt) .. " 2>&1")
    if rc ~= 0 then mnt = nil end
    assert(rc == 0, "cannot mount a tmpfs at " .. dir .. "/mnt (the full-disk part of this spec needs root, as CI runs "
      .. "it): " .. tostring(out))
    local expected = inputs(dir)
    E.write(dir .. "/pipeline.lua", script("1"))
    local token = "chaos-token-0123456789"
    E.write_config(dir, {
      name = "chaos", guarantee = "exactly_once", threads = 2, parallelism = 2,
      state = { dir = "mnt/state" }, checkpoint = { interval = "150ms", retain = 3 },
      restart = { strategy = "fixed", attempts = 2, delay = "100ms" },
      admin = { listen = "127.0.0.1:0", token = token },
      limits = { time = "300ms" },
      reload = { watch = true },
    })
    local rnd = C.rng(4242)
    local version = 1
    local finished = false
    local disk_filled = false
    local log = {}

    -- one reload of the storm: a good version, a broken one or a runaway one
    local function reload_once(addr)
      local pick = rnd(6)
      version = version + 1
      if pick == 0 then
        E.write(dir .. "/pipeline.lua", script(version, "local x = = 1"))
      elseif pick == 1 then
        E.write(dir .. "/pipeline.lua", script(version, "while true do end"))
      else
        E.write(dir .. "/pipeline.lua", script(version))
      end
      E.capture(string.format("curl -s -m 3 -X POST -H %s http://%s/reload >/dev/null 2>&1",
        E.quote("Authorization: Bearer " .. token), addr))
    end

    for round = 1, 8 do
      os.remove(dir .. "/mnt/state/admin.addr")      -- a restarted run (exec) of the round before left its own
      log[#log + 1] = "round " .. round .. " starts with " .. E.read(dir .. "/pipeline.lua"):match("^[^\n]*")
      local d = E.start({ "run", dir .. "/eddy.conf.lua" }, { timeout = 120 })
      local addr = E.admin_addr(dir .. "/mnt/state", 20)
      if not addr then
        -- a run may end (or fail) before its admin server is up: it must say why
        local code = d:wait(60)
        assert(code ~= nil, "round " .. round .. ": eddy neither started nor ended:\n" .. C.tail(d:stderr()))
        os.remove(dir .. "/mnt/state/admin.addr")
        if code == 0 then finished = true break end
        assert.matches("[Nn]o space left on device", d:stderr())
      else
        os.remove(dir .. "/mnt/state/admin.addr")      -- the next run writes its own
        -- an admin flood: idle connections held open, and requests
        local holder = dir .. "/holder.pid"
        os.execute("bash -c " .. E.quote("echo $$ > " .. holder .. "; for i in $(seq 150); do exec {fd}<>/dev/tcp/"
          .. addr:gsub(":", "/") .. " || break; done; exec sleep 60") .. " >/dev/null 2>&1 &")
        os.execute("bash -c " .. E.quote("for i in $(seq 40); do curl -s -m 2 http://" .. addr .. "/status; curl -s -m 2 "
          .. "-X POST -H 'Origin: http://evil.example' http://" .. addr .. "/savepoint?stop=1; done") .. " >/dev/null 2>&1 &")
        -- a reload storm while it runs
        local stop_at = E.now() + 0.6 + rnd(150) / 100
        while E.now() < stop_at and d:alive() do
          reload_once(addr)
          E.sleep(0.1 + rnd(20) / 100)
        end
        local hpid = E.wait_for(function() return (E.read(holder) or ""):match("%d+") end, 5)
        if round == 4 and d:alive() then
          -- the disk fills up: the run must stop by itself, saying so
          E.sh("dd if=/dev/zero of=" .. E.quote(mnt .. "/filler") .. " bs=1M")
          disk_filled = true
          local code = d:wait(90)
          assert(code ~= nil, "round 4: eddy hangs on a full disk:\n" .. C.tail(d:stderr()))
          if code ~= 0 then
            -- 1, or 2 when the restart after it found a broken version of the storm on disk
            assert(code == 1 or code == 2, "round 4: exit " .. code .. ":\n" .. C.tail(d:stderr()))
            assert.matches("[Nn]o space left on device", d:stderr())
          else
            finished = true
          end
          os.remove(mnt .. "/filler")
        elseif d:alive() then
          d:kill("KILL")
          assert(d:wait(20), "round " .. round .. ": SIGKILL did not end eddy")
        end
        if hpid then E.sh("kill " .. hpid) end
        os.remove(holder)
        local code = d:code()
        log[#log + 1] = string.format("round %d: exit %s", round, tostring(code))
        if code == 0 then finished = true end
        -- exit 2: a restart after a failed task (exactly_once restarts in the same process) builds the
        -- script on disk again, and the storm may have left a broken version there: it must say so
        if code == 2 then
          -- (or, after the full disk, it could not write state.dir/admin.addr: exit 2 too)
          assert(d:stderr():match("pipeline%.lua:%d+") or d:stderr():match("No space left on device"),
            "round " .. round .. ": exit 2 without a reason:\n" .. C.tail(d:stderr()))
          log[#log + 1] = "round " .. round .. ": a restart found a broken version on disk: " .. C.tail(d:stderr(), 1)
        end
        assert(code == 0 or code == 1 or code == 2 or code == 137, "round " .. round .. ": eddy ended with " .. tostring(code)
          .. " (a crash?):\n" .. C.tail(d:stderr(), 40) .. "\n" .. table.concat(log, "\n"))
        if code == 1 then
          assert(d:stderr():match("[Nn]o space left on device") or d:stderr():match("gave up after"),
            "round " .. round .. ": exit 1 without a reason:\n" .. C.tail(d:stderr()))
        end
      end
      local bad = no_duplicates(expected, committed(dir))
      assert(bad == "", "round " .. round .. ": committed rows twice, or rows the job never writes:\n" .. bad)
      if finished then break end
      -- the script goes back to a good version before the next start (a broken one would not start)
      E.write(dir .. "/pipeline.lua", script(version .. "-start"))
    end
    assert.is_true(disk_filled or finished, "the run never got as far as the full disk")
    -- the last run, left alone, ends the job
    if not finished then
      local r = E.run_config(dir, { timeout = 120 })
      assert.equal(0, r.code, C.tail(r.stderr))
    end
    local diff = C.differences({ out = expected }, { out = committed(dir) }, { "out" })
    assert(diff == "", diff .. "\n" .. table.concat(log, "\n"))
  end)
end)
