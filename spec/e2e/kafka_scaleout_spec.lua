-- Scaling out over Kafka, against a real Apache Kafka broker (scripts/test.sh
-- starts one; support.eddy's kafka_broker fails the spec when there is
-- none): several daemons with the same `name` form one consumer group
-- (cooperative-sticky) and split a 12-partition topic, with kcat producing
-- the input and reading the output back.
--   * at least once, a member SIGKILLed: its partitions go to the others,
--     which read them again from the committed offsets: every input reaches
--     the output at least once;
--   * at least once, members joining and leaving cleanly (a rebalance drains
--     and commits a revoked partition before giving it up; a stop commits
--     what was read): every input exactly once;
--   * exactly_once, a stateless job, members joining, leaving and SIGKILLed:
--     a read_committed reader sees every input exactly once (a revoked
--     partition's reads are committed by a checkpoint, whose transaction
--     carries the partitions' offsets to the group, before it is given up);
--   * exactly_once, a member frozen (SIGSTOP) past its session but not its
--     transaction timeout: the group drops it and hands its partitions on;
--     woken, it must not commit what it read before (its open transaction,
--     which the broker still keeps): it stops, aborting it, and rejoins.
local E = require("support.eddy")
local cjson = require("cjson")
local run = E.shell

local N = 600           -- records per batch
local P = 12            -- partitions of the input topic
local SESSION_MS = 4000 -- how long the group waits for a SIGKILLed member

describe("kafka scale-out (real broker)", function()
  local dir, boot, topic_in, topic_out, group, daemons
  local serial = 0
  before_each(function()
    dir = E.tmpdir()
    boot = E.kafka_broker()
    serial = serial + 1
    local id = E.run_id() .. "-" .. serial
    topic_in, topic_out, group = "scale-in-" .. id, "scale-out-" .. id, "scale-" .. id
    E.create_topic(boot, topic_in, P)
    E.create_topic(boot, topic_out, 4)
    daemons = {}
  end)
  after_each(function()
    run("pkill -KILL -f '^" .. E.bin .. " run " .. dir .. "/'")
    E.cleanup()       -- SIGKILLs the daemons it started (by pid), removes dir
  end)

  -- the pipeline sits in a folder of its own: a daemon watches the .lua
  -- files beside its pipeline, and writing the other daemon's config there
  -- would reload it
  local function pipeline()
    E.write(dir .. "/app/pipeline.lua", [[
local eddy = require("eddy")
local p = eddy.pipeline()
p:source("in", { kafka = "]] .. topic_in .. [[", format = "json" })
 :map(function(v) return v end)
 :sink("out", { kafka = "]] .. topic_out .. [[", key = "id" })
return p
]])
  end

  -- the config of daemon `tag`: the same group name, its own state dir (and
  -- under exactly_once its own transactional.id)
  local function config(tag, o)
    local kafka = { ["bootstrap.servers"] = boot, ["session.timeout.ms"] = tostring(SESSION_MS),
                    ["heartbeat.interval.ms"] = "500", ["auto.commit.interval.ms"] = tostring(o.commit_ms or 500) }
    local c = { name = group, pipeline = "app/pipeline.lua", state = { dir = dir .. "/state-" .. tag },
                admin = { listen = "127.0.0.1:0" }, kafka = kafka }
    if o.exactly_once then
      c.guarantee = "exactly_once"
      c.checkpoint = { interval = o.interval or "200ms", retain = 2 }
      kafka["transactional.id"] = group .. "-" .. tag
      -- a SIGKILLed member's open transaction holds read_committed readers
      -- back until its restart aborts it, or this long
      kafka["transaction.timeout.ms"] = o.txn_timeout or "15000"
    end
    return E.write_config(dir, c, tag .. ".conf.lua")
  end

  local function status(tag)
    local addr = E.read(dir .. "/state-" .. tag .. "/admin.addr")
    addr = addr and addr:match("^(%S+:%d+)\n")
    if not addr then return nil end
    local code, body = E.curl("http://" .. addr .. "/status")
    if code ~= 200 then return nil end
    local ok, s = pcall(cjson.decode, body)
    return ok and s or nil
  end

  -- the partitions of the input daemon `tag` holds (sorted), or nil when it does not answer
  local function assignment(tag)
    local s = status(tag)
    if not (s and s.kafka and s.kafka.assignment) then return nil end
    local a = {}
    for i, p in ipairs(s.kafka.assignment) do a[i] = p end
    table.sort(a)
    return a
  end

  local function start(tag, o)
    os.remove(dir .. "/state-" .. tag .. "/admin.addr")
    daemons[tag] = E.start({ "run", config(tag, o or {}) }, { timeout = 200 })
    return daemons[tag]
  end

  local function describe_daemons()
    local out = {}
    for tag, d in pairs(daemons) do
      out[#out + 1] = string.format("--- %s (pid %d, alive %s): /status assignment %s\n%s", tag, d.pid,
        tostring(d:alive()), cjson.encode(assignment(tag) or "?"), d:stderr():sub(-3000))
    end
    table.sort(out)
    return table.concat(out, "\n")
  end

  -- waits until the daemons in `want` (tag → number of partitions) hold that
  -- many each, and together every partition of the input once
  local function wait_assigned(want, timeout)
    local ok = E.wait_for(function()
      local seen = {}
      for tag, n in pairs(want) do
        local a = assignment(tag)
        if not a or #a ~= n then return false end
        for _, p in ipairs(a) do
          if seen[p] then return false end
          seen[p] = true
        end
      end
      for p = 0, P - 1 do if not seen[topic_in .. "/" .. p] then return false end end
      return true
    end, timeout, 0.2)
    assert(ok, "the group did not settle on " .. cjson.encode(want) .. " partitions within " .. timeout .. " s\n"
      .. describe_daemons())
  end

  -- produces {"id": i} for i = from..to, keyed "k<i>", to partition i % P
  local function produce(from, to)
    for p = 0, P - 1 do
      local lines = {}
      for i = from, to do
        if i % P == p then lines[#lines + 1] = string.format('k%d\t{"id":%d}', i, i) end
      end
      E.write(dir .. "/produce.txt", table.concat(lines, "\n") .. "\n")
      local rc, out = run(string.format("timeout 20 kcat -P -b %s -t %s -p %d -K '\t' < %s/produce.txt 2>&1",
        boot, topic_in, p, dir))
      assert.are.equal(0, rc, "kcat could not produce: " .. out)
    end
  end

  -- id → how many times a read_committed reader finds it in the output (and the number of messages)
  local function output()
    local rc, out = run("timeout 30 kcat -C -b " .. boot .. " -t " .. topic_out
      .. " -X isolation.level=read_committed -o beginning -e -q -f '%s\\n'")
    assert.are.equal(0, rc, "kcat could not read the output: " .. out)
    local count, total = {}, 0
    for l in out:gmatch("[^\n]+") do
      local ok, v = pcall(cjson.decode, l)
      assert(ok and type(v) == "table" and v.id, "not a record of ours in the output: " .. l)
      count[v.id] = (count[v.id] or 0) + 1
      total = total + 1
    end
    return count, total
  end

  -- the ids of `ranges` ({from, to} pairs) that `count` lacks
  local function missing(count, ranges)
    local m = {}
    for _, r in ipairs(ranges) do
      for i = r[1], r[2] do if not count[i] then m[#m + 1] = i end end
    end
    return m
  end

  -- waits until the output holds every id of `ranges`; returns the counts
  local function wait_output(ranges, timeout)
    local count, total
    local ok = E.wait_for(function()
      count, total = output()
      return #missing(count, ranges) == 0
    end, timeout, 0.5)
    if not ok then
      local m = missing(count, ranges)
      assert(false, string.format("%d ids never reached the output (%d messages there), e.g. %s\n%s", #m, total,
        table.concat(m, ",", 1, math.min(#m, 20)), describe_daemons()))
    end
    return count, total
  end

  local function batch(k) return { 1000 * k, 1000 * k + N - 1 } end

  local function stop(tag)
    local d = daemons[tag]
    d:kill("TERM")
    assert.are.equal(0, d:wait(30), tag .. " did not stop cleanly:\n" .. d:stderr())
    daemons[tag] = nil
  end

  local function kill(tag)
    daemons[tag]:kill("KILL")
    assert.are.equal(137, daemons[tag]:wait(10))
    daemons[tag] = nil
  end

  -- every id of `ranges` exactly once, and nothing else
  local function assert_exactly_once(ranges)
    local count, total = output()
    local twice, want = {}, 0
    for id, n in pairs(count) do
      if n ~= 1 then twice[#twice + 1] = id .. "×" .. n end
    end
    table.sort(twice)
    for _, r in ipairs(ranges) do want = want + r[2] - r[1] + 1 end
    local m = missing(count, ranges)
    assert(#m == 0, #m .. " ids are missing, e.g. " .. table.concat(m, ",", 1, math.min(#m, 20)))
    assert(#twice == 0, #twice .. " ids are in the output more than once, e.g. "
      .. table.concat(twice, ",", 1, math.min(#twice, 20)))
    assert.are.equal(want, total)
  end

  it("two daemons with the same name split a 12-partition topic; when one is killed with SIGKILL the other "
    .. "takes its partitions and every input appears in the output at least once", function()
    pipeline()
    start("a")
    start("b")
    wait_assigned({ a = 6, b = 6 }, 30)
    produce(table.unpack(batch(1)))
    wait_output({ batch(1) }, 30)

    -- A dies without a word: no last commit, no leaving the group
    kill("a")
    produce(table.unpack(batch(2)))
    -- after the session timeout the group gives A's partitions to B, which
    -- reads them from A's last committed offsets
    wait_assigned({ b = 12 }, 30)
    local count, total = wait_output({ batch(1), batch(2) }, 30)
    for id in pairs(count) do
      assert((id >= 1000 and id < 1000 + N) or (id >= 2000 and id < 2000 + N), "an id nobody produced: " .. id)
    end
    assert(total >= 2 * N)
    assert.is_true(daemons.b:alive(), "the survivor died:\n" .. daemons.b:stderr())
    stop("b")
  end)

  it("with three daemons joining and leaving cleanly, every input appears exactly once", function()
    pipeline()
    -- a long commit interval: offsets are committed only when a partition
    -- is given up in a rebalance and at a clean stop, so a commit these
    -- miss shows as records read twice
    local o = { commit_ms = 60000 }
    start("a", o)
    wait_assigned({ a = 12 }, 30)
    produce(table.unpack(batch(1)))

    -- B joins: A drains the partitions it gives up and commits them
    start("b", o)
    wait_assigned({ a = 6, b = 6 }, 30)
    produce(table.unpack(batch(2)))
    -- and C
    start("c", o)
    wait_assigned({ a = 4, b = 4, c = 4 }, 30)
    produce(table.unpack(batch(3)))
    wait_output({ batch(1), batch(2), batch(3) }, 30)

    -- B stops cleanly: it commits what it read and leaves; A and C take over
    local b_log = daemons.b
    stop("b")
    wait_assigned({ a = 6, c = 6 }, 30)
    produce(table.unpack(batch(4)))
    wait_output({ batch(1), batch(2), batch(3), batch(4) }, 30)
    -- B comes back, and C leaves
    start("b", o)
    wait_assigned({ a = 4, b = 4, c = 4 }, 30)
    stop("c")
    wait_assigned({ a = 6, b = 6 }, 30)
    produce(table.unpack(batch(5)))
    local all = { batch(1), batch(2), batch(3), batch(4), batch(5) }
    wait_output(all, 30)
    local a_log = daemons.a
    stop("a")
    stop("b")

    assert_exactly_once(all)
    -- and no partition was given up before what was read from it had been
    -- acknowledged (the warning says the next owner reads some of it again)
    for _, d in ipairs({ a_log, b_log }) do
      assert.is_nil(d:stderr():find("not drained", 1, true), "partitions given up undrained:\n" .. d:stderr())
    end
  end)

  it("exactly_once: a stateless job over three daemons joining, leaving and killed with SIGKILL writes every "
    .. "input exactly once for a read_committed reader", function()
    pipeline()
    local o = { exactly_once = true }
    start("a", o)
    wait_assigned({ a = 12 }, 30)
    produce(table.unpack(batch(1)))
    start("b", o)
    wait_assigned({ a = 6, b = 6 }, 30)
    produce(table.unpack(batch(2)))
    start("c", o)
    wait_assigned({ a = 4, b = 4, c = 4 }, 30)
    produce(table.unpack(batch(3)))
    wait_output({ batch(1), batch(2), batch(3) }, 30)

    -- B dies while records flow; A and C take its partitions from the
    -- offsets its last committed transaction carried
    produce(table.unpack(batch(4)))
    kill("b")
    produce(table.unpack(batch(5)))
    wait_assigned({ a = 6, c = 6 }, 40)
    -- B comes back (its restart aborts its open transaction) and takes a share again
    start("b", o)
    wait_assigned({ a = 4, b = 4, c = 4 }, 40)
    produce(table.unpack(batch(6)))
    -- C leaves cleanly, then A dies
    stop("c")
    wait_assigned({ a = 6, b = 6 }, 30)
    produce(table.unpack(batch(7)))
    kill("a")
    wait_assigned({ b = 12 }, 40)
    produce(table.unpack(batch(8)))
    local all = {}
    for k = 1, 8 do all[k] = batch(k) end
    wait_output(all, 60)
    stop("b")
    assert_exactly_once(all)
  end)

  it("exactly_once: a member frozen past its session and woken again commits nothing its partitions' next owner "
    .. "writes again", function()
    pipeline()
    -- A's transactions are long: when it freezes, the open one holds what
    -- it read, and the broker keeps it open through the freeze
    start("a", { exactly_once = true, interval = "4s", txn_timeout = "120000" })
    start("b", { exactly_once = true })
    wait_assigned({ a = 6, b = 6 }, 30)
    produce(table.unpack(batch(1)))
    wait_output({ batch(1) }, 30)
    produce(table.unpack(batch(2)))
    -- A has read its share of batch 2 (into its open transaction)
    local function read_by(tag)
      local s = status(tag)
      local n = 0
      for _, p in ipairs(s and s.kafka and s.kafka.partitions or {}) do
        if p.assigned then n = n + (type(p.position) == "number" and p.position or 0) end
      end
      return n
    end
    assert(E.wait_for(function() return read_by("a") >= N end, 20, 0.2),
      "A did not read its share of two batches\n" .. describe_daemons())
    run("kill -STOP " .. daemons.a.pid)
    -- B takes A's partitions from the group's offsets (its output waits
    -- behind A's open transaction for a read_committed reader) and reads on
    wait_assigned({ b = 12 }, 30)
    produce(table.unpack(batch(3)))
    assert(E.wait_for(function() return read_by("b") >= 3 * N end, 30, 0.2),
      "B did not read all three batches\n" .. describe_daemons())
    run("kill -CONT " .. daemons.a.pid)
    -- woken, A finds its partitions lost (or its transaction's offsets
    -- refused: its generation is gone), stops, aborting the transaction,
    -- and comes back (restart)
    assert(E.wait_for(function() return daemons.a:stderr():find("restarting", 1, true) end, 30),
      "A did not notice it was dropped\n" .. describe_daemons())
    wait_assigned({ a = 6, b = 6 }, 60)
    produce(table.unpack(batch(4)))
    local all = { batch(1), batch(2), batch(3), batch(4) }
    wait_output(all, 60)
    stop("a")
    stop("b")
    assert_exactly_once(all)
  end)
end)
