-- The Kafka sink under exactly_once: one transaction per checkpoint, its
-- commit the commit point, against `eddy kafka-mock` with errors injected
-- into the transactional requests (--error, that is
-- rd_kafka_mock_push_request_errors): a retriable error is retried and
-- changes nothing; an abortable one aborts the transaction, and a fencing
-- one stops the producer; both restart eddy from the last committed
-- checkpoint, and no record is lost.
--
-- The embedded broker does not hide aborted transactions from
-- read_committed readers, so what kcat reads back holds the aborted
-- records too.  eddy reports how many records each failed transaction held
-- ("(N records in ...)"), so the specs check: every record read back at
-- least once, and exactly N more than the input in all.  Against a real
-- broker a read_committed reader sees each record exactly once:
-- kafka_exactly_once_spec and checkpoint_kafka_spec show it (see
-- docs/architecture.md, "Testing exactly-once against Kafka").
local E = require("support.eddy")
local cjson = require("cjson")

local N = 100000
local RUN_ID = tostring(os.time()) .. tostring(math.random(1000000))
local TOPIC = "out"

describe("the Kafka sink under exactly_once", function()
  local dir, boot

  -- the mock runs as dir/mock/eddy (a symlink), so that other specs'
  -- `pkill -f '^bin/eddy kafka-mock'` leave it alone
  local function mock(...)
    local errs = {}
    for _, e in ipairs({ ... }) do errs[#errs + 1] = "--error " .. e end
    E.mkdirs(dir .. "/mock")
    assert.are.equal(0, (E.shell("ln -s \"$(realpath " .. E.quote(E.bin) .. ")\" " .. dir .. "/mock/eddy")))
    assert(os.execute(string.format("(timeout -k 2 120 %s/mock/eddy kafka-mock --topic out:3 %s "
      .. "> %s/mock.out 2>&1 & echo $! > %s/mock.pid)", dir, table.concat(errs, " "), dir, dir)))
    boot = E.poll(10, function()
      local out = E.read(dir .. "/mock.out")
      return out and out:match("^(127%.0%.0%.1:%d+)\n")
    end)
    assert.truthy(boot, "the mock broker did not start: " .. tostring(E.read(dir .. "/mock.out")))
  end

  before_each(function()
    dir = E.tmpdir()
    local lines = {}
    for i = 1, N do lines[i] = string.format('{"user":"u%d","i":%d}', i % 97, i) end
    E.write(dir .. "/in.jsonl", table.concat(lines, "\n") .. "\n")
    E.write(dir .. "/pipeline.lua", [[
local eddy = require("eddy")
local p = eddy.pipeline()
p:source("in", { file = "in.jsonl" })
 :map(function(v) return { user = v.user, i = v.i, twice = v.i * 2 } end)
 :sink("out", { kafka = "]] .. TOPIC .. [[", key = "user" })
return p
]])
  end)
  after_each(function()
    local pid = dir and (E.read(dir .. "/mock.pid") or ""):match("%d+")
    E.cleanup()
    if pid then E.shell("kill -TERM " .. pid) end
  end)

  local function run(extra)
    E.write(dir .. "/eddy.conf.lua", string.format([[
return { name = "txn", pipeline = "pipeline.lua", admin = false, guarantee = "exactly_once",
  checkpoint = { interval = "50ms", retain = 2 }, state = { dir = "state" },
  restart = { strategy = "fixed", delay = "100ms", attempts = %d },
  kafka = { ["bootstrap.servers"] = "%s", ["transactional.id"] = "eddy-txn-%s" }%s }
]], extra and extra.attempts or 3, boot, RUN_ID, extra and extra.conf or ""))
    if extra and extra.start then return E.start({ "run", dir .. "/eddy.conf.lua" }, { timeout = 120 }) end
    return E.run({ "run", dir .. "/eddy.conf.lua" }, { timeout = 120, env = extra and extra.env })
  end

  -- what a reader gets: how often each input record came, and in all
  local function read_back()
    local rc, out = E.shell("timeout 60 kcat -C -b " .. boot .. " -t " .. TOPIC .. " -X isolation.level=read_committed "
      .. "-o beginning -e -q -f '%k\\t%s\\n'")
    assert.are.equal(0, rc, out)
    local seen, total = {}, 0
    for k, v in out:gmatch("([^\t\n]*)\t([^\n]*)\n") do
      local r = cjson.decode(v)
      assert.are.equal(r.user, k)
      assert.are.equal(r.i * 2, r.twice)
      seen[r.i] = (seen[r.i] or 0) + 1
      total = total + 1
    end
    return seen, total
  end

  -- the records in the transactions that failed (each failure's log line)
  local function aborted_records(stderr)
    local n, failures = 0, 0
    for k in stderr:gmatch("checkpoint %d+ failed: kafka: [^\n]*%((%d+) records in [^)\n]*%)\n") do
      n = n + tonumber(k)
      failures = failures + 1
    end
    return n, failures
  end

  local function assert_each_at_least_once(seen)
    local missing = {}
    for i = 1, N do if not seen[i] then missing[#missing + 1] = i end end
    assert.are.equal(0, #missing, "records never written: " .. table.concat(missing, " ", 1, math.min(10, #missing)))
  end

  -- one transaction failed, and the restart lost nothing: every record read
  -- back, and no more than the failed transaction's records on top (the
  -- embedded broker shows them too).  Returns that number.
  local function assert_one_failure_recovered(r)
    local aborted, failures = aborted_records(r.stderr)
    assert.are.equal(1, failures, r.stderr)
    local seen, total = read_back()
    assert_each_at_least_once(seen)
    assert.are.equal(N + aborted, total)
    return aborted
  end

  it("writes every record once, a transaction per checkpoint, when nothing fails", function()
    mock()
    local r = run()
    assert.are.equal(0, r.code, r.stderr)
    assert.is_nil(r.stderr:find("restarting", 1, true), r.stderr)
    local seen, total = read_back()
    assert_each_at_least_once(seen)
    assert.are.equal(N, total)
    -- checkpoints were taken while the job ran, each with its transaction
    local last = tonumber(E.read(dir .. "/state/checkpoints/last-id"))
    assert.is_true(last >= 2, "only " .. tostring(last) .. " checkpoint(s)")
    local m = cjson.decode(E.read(dir .. "/state/checkpoints/" .. last .. "/manifest.json"))
    assert.are.equal("eddy-txn-" .. RUN_ID, m.kafka_transaction)
    assert.is_true(m.committed)
  end)

  it("retries a retriable error of the commit, and nothing else happens", function()
    mock("EndTxn:NO_ERROR,NOT_COORDINATOR,COORDINATOR_LOAD_IN_PROGRESS")
    local r = run()
    assert.are.equal(0, r.code, r.stderr)
    assert.is_nil(r.stderr:find("restarting", 1, true), r.stderr)
    local seen, total = read_back()
    assert_each_at_least_once(seen)
    assert.are.equal(N, total)
  end)

  it("aborts the transaction on an abortable error and restarts from the last checkpoint, losing nothing", function()
    mock("AddOffsetsToTxn:NO_ERROR,GROUP_AUTHORIZATION_FAILED")
    local r = run()
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("GROUP_AUTHORIZATION_FAILED", r.stderr, 1, true)
    assert.matches("the transaction was aborted", r.stderr, 1, true)
    assert.matches("restarting in 0.1 s from the last committed checkpoint (restart 1 of 3", r.stderr, 1, true)
    assert.is_true(assert_one_failure_recovered(r) > 0, r.stderr)
  end)

  it("restarts a producer fenced by a newer one with the same transactional.id, losing nothing", function()
    mock("EndTxn:NO_ERROR,PRODUCER_FENCED")
    local r = run()
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("fenced", r.stderr, 1, true)
    assert.matches("restarting in 0.1 s from the last committed checkpoint", r.stderr, 1, true)
    assert_one_failure_recovered(r)
  end)

  it("gives up with exit 1 when every restart fails the same way", function()
    mock("EndTxn:PRODUCER_FENCED,PRODUCER_FENCED,PRODUCER_FENCED")
    local r = run({ attempts = 2 })
    assert.are.equal(1, r.code, r.stderr)
    assert.matches("gave up after 2 restarts (restart.attempts = 2)", r.stderr, 1, true)
    local aborted, failures = aborted_records(r.stderr)
    assert.are.equal(3, failures, r.stderr)
    local _, total = read_back()
    assert.are.equal(aborted, total)      -- nothing committed: all of it was in failed transactions
  end)

  it("killed at each crash point and at random moments, then run to the end, loses no record", function()
    mock()
    local rng = E.rng(7)
    local runs = {}
    for _, point in ipairs({ "prepared:2", "manifest:2", "txn_committed:2", "committed:2" }) do
      local r = run({ env = { EDDY_CRASH_AT = point } })
      assert.are.equal(137, r.code, point .. ": " .. r.stderr)      -- SIGKILLed itself there
      runs[#runs + 1] = point
    end
    for k = 1, 3 do
      local d = run({ start = true })
      E.sleep(0.2 + rng(600) / 1000)
      d:kill("KILL")
      d:wait(10)
      runs[#runs + 1] = "kill " .. k
    end
    local r = run()
    assert.are.equal(0, r.code, r.stderr)
    local seen, total = read_back()
    assert_each_at_least_once(seen)
    assert(total >= N, table.concat(runs, ", "))
  end)

  it("refuses librdkafka properties on one Kafka sink: every sink writes through the one transactional producer", function()
    mock()
    local r = run({ conf = ', sinks = { out = { ["compression.type"] = "lz4" } }' })
    assert.are.equal(2, r.code, r.stderr)
    assert.matches("sinks.out.compression.type: under exactly_once every Kafka sink writes through one "
      .. "transactional producer", r.stderr, 1, true)
  end)
end)
