-- exactly_once against a real Apache Kafka broker (scripts/test.sh starts
-- one; without one these fail with the reason): what the embedded broker
-- cannot show, since it shows aborted transactions to read_committed
-- readers and applies no offsets sent to transactions.
--   * an abortable error, a real one: the broker refuses a record as too
--     large for the topic, the transaction is aborted, and a read_committed
--     reader sees none of its records (a read_uncommitted one does);
--   * fencing, a real one: another producer takes the transactional.id
--     (init_transactions, through python3-confluent-kafka); eddy restarts,
--     fences it in turn, and loses and repeats nothing;
--   * the commit point commits the source offsets to the consumer group
--     inside the transaction: after a crash just after the commit (its
--     manifest not yet marked), after a random SIGKILL and after a clean
--     stop, the group's committed offsets are those of the checkpoint whose
--     transaction committed last.
local E = require("support.eddy")
local cjson = require("cjson")

describe("exactly_once against a real Kafka broker", function()
  local dir, boot, id
  local serial = 0
  before_each(function()
    dir = E.tmpdir()
    boot = E.kafka_broker()
    serial = serial + 1
    id = E.run_id() .. "-" .. serial
  end)
  after_each(function() E.cleanup() end)

  local function config(t)
    local c = { name = "eo-" .. id, pipeline = "pipeline.lua", guarantee = "exactly_once",
                checkpoint = { interval = t.interval or "100ms", retain = 3 }, state = { dir = "state" },
                restart = { strategy = "fixed", delay = "100ms", attempts = t.attempts or 3 },
                kafka = { ["bootstrap.servers"] = boot, ["session.timeout.ms"] = "3000",
                          ["heartbeat.interval.ms"] = "300" } }
    for k, v in pairs(t.kafka or {}) do c.kafka[k] = v end
    return E.write_config(dir, c)
  end

  -- a topic read to its end: { lines }, as the isolation level lets a reader see it
  local function read(topic, isolation)
    local rc, out = E.shell(string.format("timeout 60 kcat -C -b %s -t %s -X isolation.level=%s -o beginning -e -q "
      .. "-f '%%s\\n' 2>&1", boot, topic, isolation or "read_committed"))
    assert.are.equal(0, rc, "kcat could not read " .. topic .. ": " .. out)
    return E.lines(out)
  end

  -- i → how often a read_committed reader sees record i, and in all
  local function seen(topic, isolation)
    local count, total = {}, 0
    for _, l in ipairs(read(topic, isolation)) do
      local v = cjson.decode(l)
      count[v.i] = (count[v.i] or 0) + 1
      total = total + 1
    end
    return count, total
  end

  -- each of 1..n exactly once, and nothing else
  local function assert_exactly(topic, n)
    local count, total = seen(topic)
    local bad = {}
    for i = 1, n do
      if count[i] ~= 1 then bad[#bad + 1] = i .. "×" .. (count[i] or 0) end
    end
    assert(#bad == 0, #bad .. " records not seen exactly once by a read_committed reader, e.g. "
      .. table.concat(bad, " ", 1, math.min(10, #bad)))
    assert.are.equal(n, total)
  end

  it("an abortable error (the broker refuses a record as too large) aborts the transaction: a read_committed reader "
    .. "sees none of its records, and once the topic takes it a run gives each record exactly once", function()
    local N, BIG = 20000, 12000
    local out = "eo-big-" .. id
    E.create_topic(boot, out, 1, { "max.message.bytes=100000" })
    local lines = {}
    for i = 1, N do
      lines[i] = string.format('{"i":%d,"pad":"%s"}', i, i == BIG and string.rep("x", 150000) or "")
    end
    E.write(dir .. "/in.jsonl", table.concat(lines, "\n") .. "\n")
    E.write(dir .. "/pipeline.lua", [[
local eddy = require("eddy")
local p = eddy.pipeline()
p:source("in", { file = "in.jsonl" })
 :map(function(v) return v end)
 :sink("out", { kafka = "]] .. out .. [[" })
return p
]])
    -- small batches: every other one stays under the topic's limit
    config({ attempts = 1, kafka = { ["batch.size"] = "20000", ["linger.ms"] = "1" } })
    local r = E.run_config(dir, { timeout = 120 })
    assert.are.equal(1, r.code, r.stderr)
    assert.matches("the transaction was aborted", r.stderr, 1, true)
    assert.matches("gave up after 1 restart ", r.stderr, 1, true)
    -- what was committed is a prefix of the input, each once; the aborted
    -- transactions' records (written, as a read_uncommitted reader shows)
    -- are not in it
    local count, total = seen(out)
    for i = 1, total do assert(count[i] == 1, "record " .. i .. " seen " .. tostring(count[i]) .. " times") end
    assert(total < BIG, total .. " records committed, the refused one is " .. BIG)
    local _, raw = seen(out, "read_uncommitted")
    assert(raw > total, "no aborted record was written (" .. raw .. " read_uncommitted, " .. total .. " committed)")

    -- the topic takes it now: the next run goes on from the last committed checkpoint
    E.kafka_tool({ "alter", boot, out, "max.message.bytes=1000000" })
    r = E.run_config(dir, { timeout = 120 })
    assert.are.equal(0, r.code, r.stderr)
    assert_exactly(out, N)
  end)

  -- a Kafka → Kafka job: topic in (4 partitions) → map → out
  local function kafka_job(t)
    local topics = { input = "eo-in-" .. id, output = "eo-out-" .. id }
    E.create_topic(boot, topics.input, 4)
    E.create_topic(boot, topics.output, 2)
    E.write(dir .. "/pipeline.lua", [[
local eddy = require("eddy")
local p = eddy.pipeline()
p:source("in", { kafka = "]] .. topics.input .. [[", format = "json" })
 :map(function(v) return { i = v.i, twice = v.i * 2 } end)
 :sink("out", { kafka = "]] .. topics.output .. [[", key = "i" })
return p
]])
    config(t or {})
    return topics
  end

  -- produces {"i": i} for i = from..to, to partition i % 4, in chunks of
  -- 1000 a partition; async: in the background, a chunk every 200 ms (so
  -- that eddy reads while records arrive), returning a function that waits
  -- for the end
  local function produce(topic, from, to, async)
    local cmds = {}
    for c = from, to, 4000 do
      for p = 0, 3 do
        local lines = {}
        for i = c, math.min(c + 3999, to) do
          if i % 4 == p then lines[#lines + 1] = string.format('{"i":%d}', i) end
        end
        local path = string.format("%s/produce-%d-%d.txt", dir, c, p)
        E.write(path, table.concat(lines, "\n") .. "\n")
        cmds[#cmds + 1] = string.format("timeout 30 kcat -P -b %s -t %s -p %d < %s", boot, topic, p, path)
      end
    end
    local script = table.concat(cmds, async and " && sleep 0.2 && " or " && ") .. "; echo $? > " .. dir .. "/produced"
    os.remove(dir .. "/produced")
    if async then
      os.execute("(" .. script .. ") >/dev/null 2>&1 &")
    else
      E.shell(script)
    end
    local function done()
      local rc = E.wait_for(function() return E.read(dir .. "/produced") end, 120)
      assert.are.equal("0\n", rc, "kcat could not produce")
    end
    if async then return done end
    done()
  end

  local function wait_seen(topic, n, d, timeout)
    local ok = E.wait_for(function()
      local _, out = E.shell(string.format("timeout 60 kcat -C -b %s -t %s -X isolation.level=read_committed "
        .. "-o beginning -e -q -f 'x\\n' | wc -l", boot, topic))
      return tonumber(out) >= n
    end, timeout or 60, 0.3)
    assert(ok, "fewer than " .. n .. " records reached " .. topic .. "\n" .. (d and d:stderr() or ""))
  end

  it("a producer fenced by another with the same transactional.id restarts, fences it in turn, and loses and "
    .. "repeats nothing", function()
    local t = kafka_job()
    local d = E.start({ "run", dir .. "/eddy.conf.lua" }, { timeout = 150 })
    produce(t.input, 1, 4000)
    wait_seen(t.output, 4000, d)
    -- records flow while the other producer takes the id (its
    -- init_transactions aborts eddy's open transaction)
    produce(t.input, 4001, 8000)
    E.kafka_tool({ "fence", boot, "eddy-eo-" .. id })
    produce(t.input, 8001, 12000)
    E.wait_for(function() return d:stderr():find("restarting in", 1, true) end, 30)
    assert.matches("fenced", d:stderr(), 1, true)
    assert.matches("restarting in 0.1 s from the last committed checkpoint", d:stderr(), 1, true)
    wait_seen(t.output, 12000, d)
    d:kill("TERM")
    assert.are.equal(0, d:wait(30), d:stderr())
    assert_exactly(t.output, 12000)
  end)

  -- the offsets of the source partitions in checkpoint `ckpt`'s manifest
  -- ({ [partition] = offset }), and whether it is marked committed
  local function manifest_offsets(ckpt)
    local text = E.read(dir .. "/state/checkpoints/" .. tostring(ckpt) .. "/manifest.json")
    assert(text, "checkpoint " .. tostring(ckpt) .. " has no manifest")
    local m = cjson.decode(text)
    local offs = {}
    for _, s in ipairs(m.sources) do offs[s.kafka_partition] = s.offset end
    return offs, m.committed == true
  end

  -- the newest checkpoint (marked committed or not) and the newest committed
  local function newest()
    local all, committed = nil, nil
    for _, name in ipairs(E.ls(dir .. "/state/checkpoints") or {}) do
      local n = tonumber(name)
      if n and E.exists(dir .. "/state/checkpoints/" .. name .. "/manifest.json") then
        local _, c = manifest_offsets(n)
        if not all or n > all then all = n end
        if c and (not committed or n > committed) then committed = n end
      end
    end
    return all, committed
  end

  local function group_offsets(t)
    local g = E.committed_offsets(boot, "eo-" .. id, t.input)
    for p = 0, 3 do if g[p] == -1 then g[p] = nil end end
    return g
  end

  it("commits the source offsets to the consumer group inside the transaction: after a crash right after the "
    .. "commit, a SIGKILL and a clean stop the group's offsets are the last committed checkpoint's", function()
    -- checkpoints every 3 s: the first one comes after the input was read
    local t = kafka_job({ interval = "3s" })
    produce(t.input, 1, 8000)
    -- killed right after the first transaction committed, before its manifest says so
    local r = E.run_config(dir, { timeout = 60, env = { EDDY_CRASH_AT = "txn_committed:1" } })
    assert.are.equal(137, r.code, r.stderr)
    local last, committed = newest()
    assert.is_nil(committed, "a checkpoint was marked committed")
    local offs = manifest_offsets(last)
    local total = 0
    for _, o in pairs(offs) do total = total + o end
    assert.are.equal(8000, total, "the first checkpoint did not cover the input: " .. cjson.encode(offs))
    assert.are.same(offs, group_offsets(t))

    -- the next run learns from the broker that it committed; a clean stop
    -- commits the last checkpoint, with every offset read
    local d = E.start({ "run", dir .. "/eddy.conf.lua" }, { timeout = 100 })
    produce(t.input, 8001, 12000)
    wait_seen(t.output, 12000, d)
    d:kill("TERM")
    assert.are.equal(0, d:wait(30), d:stderr())
    assert.matches("checkpoint " .. last .. ": its Kafka transaction committed before the last run stopped", d:stderr(),
      1, true)
    last, committed = newest()
    assert.are.equal(last, committed)
    assert.are.same({ [0] = 3000, [1] = 3000, [2] = 3000, [3] = 3000 }, group_offsets(t))
    assert.are.same(group_offsets(t), (manifest_offsets(committed)))

    -- a SIGKILL while records flow: the group has the offsets of the last
    -- checkpoint whose transaction committed
    config({ interval = "100ms" })
    d = E.start({ "run", dir .. "/eddy.conf.lua" }, { timeout = 100 })
    local END = 100000
    produce(t.input, 12001, 20000)
    wait_seen(t.output, 20000, d)
    -- the rest arrives a chunk every 200 ms: killed a second in, eddy has
    -- read part of it, whatever the machine's speed
    local produced = produce(t.input, 20001, END, true)
    E.sleep(1)
    d:kill("KILL")
    assert.are.equal(137, d:wait(10))
    produced()
    last, committed = newest()
    local g = group_offsets(t)
    local want = manifest_offsets(committed)
    local function same(a, b)
      for k, v in pairs(a) do if b[k] ~= v then return false end end
      for k, v in pairs(b) do if a[k] ~= v then return false end end
      return true
    end
    if last ~= committed and not same(g, want) then
      -- killed between a commit and the marking of its manifest: the
      -- newer one is what the broker committed
      want = manifest_offsets(last)
    end
    assert.are.same(want, g)
    local sum = 0
    for _, o in pairs(g) do sum = sum + o end
    assert(sum >= 20000 and sum < END, "the kill came after the run read everything: offsets "
      .. cjson.encode(g))
    -- and a run to the end (SIGTERM once all is out)
    d = E.start({ "run", dir .. "/eddy.conf.lua" }, { timeout = 100 })
    wait_seen(t.output, END, d, 120)
    d:kill("TERM")
    assert.are.equal(0, d:wait(30), d:stderr())
    assert_exactly(t.output, END)
    assert.are.same({ [0] = END / 4, [1] = END / 4, [2] = END / 4, [3] = END / 4 }, group_offsets(t))
  end)
end)
