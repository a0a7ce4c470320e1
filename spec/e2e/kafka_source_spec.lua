-- Kafka sources, against `eddy kafka-mock` with kcat as the independent
-- producer: what ctx shows of a message, event time from the Kafka
-- timestamp, committed offsets across restarts, `start`, bad messages
-- through the error policy, offsets committed only after the sink
-- acknowledged, metrics and status, and an unknown topic of the embedded
-- broker.
local E = require("support.eddy")
local cjson = require("cjson")
local run = E.shell
local T = 1700000000000

describe("kafka sources", function()
  local dir, boot
  before_each(function()
    dir = E.tmpdir()
    assert(os.execute(string.format("(timeout -k 2 150 %s kafka-mock --topic in:4 --topic out:4 --topic one:1 "
      .. "--topic acks:1 --topic acks-out:1 > %s/mock.out 2>&1 &)", E.bin, dir)))
    boot = E.poll(10, function()
      local out = E.read(dir .. "/mock.out")
      return out and out:match("^(127%.0%.0%.1:%d+)\n")
    end)
    assert.truthy(boot, "the mock broker did not start")
  end)
  after_each(function()
    run("pkill -TERM -f '^" .. E.bin .. " kafka-mock'")
    E.cleanup()
  end)

  -- kcat: produce lines "key<TAB>value" (or plain values) to a topic partition
  local function produce(topic, lines, partition, extra)
    E.write(dir .. "/produce.txt", table.concat(lines, "\n") .. "\n")
    local keyed = lines[1] and lines[1]:find("\t", 1, true)
    local rc = run(string.format("timeout 20 kcat -P -b %s -t %s %s %s %s < %s/produce.txt", boot, topic,
      partition and ("-p " .. partition) or "", keyed and "-K '\t'" or "", extra or "", dir))
    assert.are.equal(0, rc, "kcat could not produce")
  end

  local function consume(topic, fmt)
    local _, out = run("timeout 20 kcat -C -b " .. boot .. " -t " .. topic .. " -o beginning -e -q -f '" .. fmt .. "'")
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    table.sort(lines)
    return lines
  end

  local function config(name, extra)
    E.write(dir .. "/" .. name .. ".conf.lua", "return { name = '" .. name .. "', pipeline = 'pipeline.lua', "
      .. "state = { dir = '" .. dir .. "/state-" .. name .. "' }, admin = { listen = '127.0.0.1:0' }, "
      .. "kafka = { ['bootstrap.servers'] = '" .. boot .. "', ['session.timeout.ms'] = '6000', "
      .. "['heartbeat.interval.ms'] = '500', ['auto.commit.interval.ms'] = '300' }" .. (extra or "") .. " }")
    return dir .. "/" .. name .. ".conf.lua"
  end

  local function pipeline(body)
    E.write(dir .. "/pipeline.lua", "local eddy = require('eddy')\nlocal p = eddy.pipeline()\n" .. body .. "\nreturn p\n")
  end

  local function status(name)
    local addr = E.admin_addr(dir .. "/state-" .. name)
    local code, body = E.curl("http://" .. addr .. "/status")
    if code ~= 200 then return nil end
    return cjson.decode(body)
  end

  -- a daemon for config `name`, once the group has assigned it its partitions
  local function start(name, extra)
    local d = E.start({ "run", config(name, extra) }, { timeout = 120 })
    local ok = E.wait_for(function()
      local s = status(name)
      return s and s.kafka and #s.kafka.assignment > 0
    end, 20, 0.1)
    assert(ok, "no partitions assigned: " .. d:stderr())
    return d
  end

  -- the lines a stdout sink printed, sorted, once there are n of them
  local function printed(d, n)
    E.wait_for(function() local _, c = d:stdout():gsub("\n", ""); return c >= n end, 20, 0.1)
    local lines = E.lines(d:stdout())
    table.sort(lines)
    return lines
  end

  it("gives each message's key, headers, topic, partition, offset and Kafka timestamp to ctx", function()
    pipeline([[
p:source("in", { kafka = "in", format = "json" })
 :map(function(v, ctx)
   assert(type(ctx.timestamp) == "number" and ctx.timestamp > 1.7e12, "kafka timestamp")
   return string.format("%s|%s|%s|%d|%d|%s", v.w, tostring(ctx.key), ctx.topic, ctx.partition, ctx.offset,
                        tostring(ctx.headers.origin))
 end)
 :sink("out", { stdout = true, format = "lines" })]])
    produce("in", { 'a\t{"w":"x1"}', 'b\t{"w":"x2"}' }, 2, "-H origin=test")
    produce("in", { '{"w":"x3"}' }, 3)
    local d = start("ctx")
    assert.are.same({ "x1|a|in|2|0|test", "x2|b|in|2|1|test", "x3|nil|in|3|0|nil" }, printed(d, 3))
    d:kill("TERM")
    assert.are.equal(0, d:wait(15), d:stderr())
  end)

  it("carries a message's headers and key through map and key_by to a Kafka sink", function()
    pipeline([[
p:source("in", { kafka = "one", format = "json" })
 :map(function(v) v.seen = true; return v end)
 :key_by("w")
 :sink("out", { kafka = "out" })]])
    produce("one", { 'k1\t{"w":"x"}' }, nil, "-H trace=abc -H team=core")
    local d = start("hdr")
    local got = E.wait_for(function()
      local l = consume("out", "%k|%h|%s\\n")
      return #l == 1 and l
    end, 20, 0.3)
    assert(got, "nothing on topic out: " .. d:stderr())
    local k, h, v = got[1]:match("^([^|]*)|([^|]*)|(.*)$")
    assert.are.equal("x", k)                         -- the key_by key
    local hs = {}
    for pair in h:gmatch("[^,]+") do hs[#hs + 1] = pair end
    table.sort(hs)
    assert.are.same({ "team=core", "trace=abc" }, hs)
    assert.are.same({ w = "x", seen = true }, cjson.decode(v))
    d:kill("TERM")
    assert.are.equal(0, d:wait(15), d:stderr())
  end)

  it("takes event time from the Kafka timestamp: windows over timestamp = \"kafka\"", function()
    -- a first run writes the messages with known timestamps (a Kafka sink
    -- gives each message its record's event time)
    local input = {}
    for i = 1, 9 do input[#input + 1] = string.format('{"t":%d,"w":"w%d"}', T + i * 1000, i % 2) end
    E.write(dir .. "/in.jsonl", table.concat(input, "\n") .. "\n")
    pipeline([[p:source("f", { file = "in.jsonl", timestamp = "t" }):sink("k", { kafka = "one" })]])
    local r = E.run({ "run", config("writer") })
    assert.are.equal(0, r.code, r.stderr)
    pipeline([[
p:source("in", { kafka = "one", format = "json", timestamp = "kafka", watermark = eddy.watermark.bounded(0) })
 :key_by("w")
 :window(eddy.window.tumbling("4s"))
 :count()
 :map(function(n, ctx) return ctx.key .. " " .. ctx.window.start - ]] .. T .. [[ .. " " .. n end)
 :sink("out", { stdout = true, format = "lines" })]])
    local d = start("reader")
    -- windows [0,4s) and [4s,8s) close on the watermark; [8s,12s) is still open
    assert.are.same({ "w0 0 1", "w0 4000 2", "w1 0 2", "w1 4000 2" }, printed(d, 4))
    d:kill("TERM")
    assert.are.equal(0, d:wait(15), d:stderr())
    -- a stop keeps the open window in the state store: it does not fire
    assert.are.same({ "w0 0 1", "w0 4000 2", "w1 0 2", "w1 4000 2" }, printed(d, 4))
    assert.falsy(d:stdout():find("8000", 1, true))
  end)

  it("counts a partition's idle time from its assignment: a slow group join makes no record late", function()
    -- the group assigns the partitions some 3 s after the start (the
    -- broker's initial rebalance delay), past `idle`; a partition that had
    -- counted that wait would be idle on its first empty fetch, and the other
    -- partition's later event times would make its records late
    local early, later = {}, {}
    for i = 1, 200 do
      early[i] = string.format('{"t":%d}', T + i * 10)
      later[i] = string.format('{"t":%d}', T + 600000 + i * 10)
    end
    early[#early + 1] = later[#later]     -- moves partition 1's watermark past the first window
    produce("in", later, 0)
    produce("in", early, 1)
    pipeline([[
p:source("in", { kafka = "in", format = "json", timestamp = "t", watermark = eddy.watermark.bounded(0), idle = "500ms" })
 :key_by(function() return "all" end)
 :window(eddy.window.tumbling("1m"))
 :count()
 :map(function(n, ctx) return (ctx.window.start - ]] .. T .. [[) .. " " .. n end)
 :sink("out", { stdout = true, format = "lines" })]])
    local d = start("slowjoin")
    -- both partitions' watermarks close partition 1's first window, which
    -- holds every one of its records
    assert.are.same({ "-20000 200" }, printed(d, 1))
    local addr = E.admin_addr(dir .. "/state-slowjoin")
    local _, page = E.curl("http://" .. addr .. "/metrics")
    local late, seen = E.metric_sum(page, "eddy_late_records_dropped_total")
    assert.is_true(seen > 0)
    assert.are.equal(0, late)
    d:kill("TERM")
    assert.are.equal(0, d:wait(15), d:stderr())
  end)

  it("with bounded = true reads to the end offsets as of its start, fires the last windows and exits 0; the next run reads only what came since", function()
    local msgs = {}
    for i = 1, 400 do msgs[i] = string.format('{"t":%d,"k":"k%d"}', T + i * 100, i % 3) end
    for p = 0, 3 do
      local part = {}
      for i = p + 1, #msgs, 4 do part[#part + 1] = msgs[i] end
      produce("in", part, p)
    end
    pipeline([[
p:source("in", { kafka = "in", timestamp = "t", watermark = eddy.watermark.bounded("1s"), bounded = true })
 :key_by("k")
 :window(eddy.window.tumbling("10s"))
 :count()
 :map(function(n, ctx) return ctx.key .. " " .. (ctx.window.start - ]] .. T .. [[) .. " " .. n end)
 :sink("out", { stdout = true, format = "lines" })]])
    local r = E.run({ "run", config("bounded") }, { timeout = 60 })
    assert.are.equal(0, r.code, r.stderr)
    -- every window, the last one (which only the end fires) too
    local total, last = 0, false
    for _, l in ipairs(E.lines(r.stdout)) do
      local start, n = l:match("^k%d (%d+) (%d+)$")
      total = total + tonumber(n)
      if tonumber(start) == 40000 then last = true end
    end
    assert.are.equal(400, total, r.stdout)
    assert.is_true(last, "the last window did not fire:\n" .. r.stdout)
    -- a second run: the committed offsets are at the end, and 4 new messages
    produce("in", { string.format('{"t":%d,"k":"k0"}', T + 100000) }, 0)
    r = E.run({ "run", config("bounded") }, { timeout = 60 })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("k0 100000 1\n", r.stdout)
  end)

  it("continues from the group's committed offsets after a clean stop: no message read twice", function()
    pipeline([[p:source("in", { kafka = "in", format = "json" }):map(function(v) return v.n end)
 :sink("out", { stdout = true, format = "lines" })]])
    local first = {}
    for i = 1, 40 do first[i] = string.format('k%d\t{"n":%d}', i, i) end
    produce("in", first)
    local d = start("restart")
    assert.are.equal(40, #printed(d, 40))
    d:kill("TERM")
    assert.are.equal(0, d:wait(15), d:stderr())
    local second = {}
    for i = 41, 60 do second[#second + 1] = string.format('k%d\t{"n":%d}', i, i) end
    produce("in", second)
    local d2 = start("restart")
    local got = printed(d2, 20)
    E.sleep(1)    -- anything read twice would show up by now
    got = E.lines(d2:stdout())
    table.sort(got, function(a, b) return tonumber(a) < tonumber(b) end)
    local want = {}
    for i = 41, 60 do want[#want + 1] = tostring(i) end
    assert.are.same(want, got)
    d2:kill("TERM")
    assert.are.equal(0, d2:wait(15), d2:stderr())
  end)

  it("start = \"latest\" skips what a new group finds; start = \"committed\" refuses a partition without an offset", function()
    produce("in", { '{"n":1}', '{"n":2}' }, 0)
    pipeline([[p:source("in", { kafka = "in", format = "json", start = "latest" }):map(function(v) return v.n end)
 :sink("out", { stdout = true, format = "lines" })]])
    local d = start("latest")
    produce("in", { '{"n":3}' }, 0)
    assert.are.same({ "3" }, printed(d, 1))
    d:kill("TERM")
    assert.are.equal(0, d:wait(15), d:stderr())

    pipeline([[p:source("in", { kafka = "in", format = "json", start = "committed" }):sink("out", { stdout = true })]])
    local r = E.run({ "run", config("strict") }, { timeout = 30 })
    assert.are.equal(1, r.code, r.stderr)
    assert.matches("source 'in': partition in/%d has no committed offset for group 'strict' %(start = \"committed\"%)",
      r.stderr)
  end)

  it("hands malformed JSON and oversized messages to the error policy, with topic, partition and offset", function()
    pipeline([[p:source("in", { kafka = "one", format = "json", max_bytes = 40 }):map(function(v) return v.n end)
 :sink("out", { stdout = true, format = "lines" })]])
    produce("one", { '{"n":1}', '{"n":', '{"n":3,"pad":"' .. string.rep("x", 60) .. '"}', '{"n":4}' })
    local d = start("bad", ", on_error = 'dead_letter'")
    assert.are.same({ "1", "4" }, printed(d, 2))
    local dead = E.wait_for(function()
      local l = E.json_lines(dir .. "/state-bad/dead-letter.jsonl")
      return l and #l == 2 and l
    end, 10)
    assert(dead, "two dead letters expected")
    table.sort(dead, function(a, b) return a.offset < b.offset end)
    assert.are.same({ "one", 0, 1, '{"n":' }, { dead[1].topic, dead[1].partition, dead[1].offset, dead[1].record })
    assert.matches("^malformed json", dead[1].error)
    assert.are.same({ "one", 2 }, { dead[2].topic, dead[2].offset })
    assert.matches("message of 76 bytes is over the source's max_bytes %(40%)", dead[2].error)
    d:kill("TERM")
    assert.are.equal(0, d:wait(15), d:stderr())
  end)

  it("sends dead letters to the topic dead_letter.kafka names", function()
    pipeline([[p:source("in", { kafka = "one", format = "json" }):map(function(v) return v.n end)
 :sink("out", { stdout = true, format = "lines" })]])
    produce("one", { '{"n":1}', 'not json', '{"n":3}' })
    local d = start("dlq", ", on_error = 'dead_letter', dead_letter = { kafka = 'dlq' }")
    assert.are.same({ "1", "3" }, printed(d, 2))
    local got = E.wait_for(function()
      local l = consume("dlq", "%s\\n")
      return #l == 1 and l
    end, 15, 0.3)
    assert(got, "no dead letter on topic dlq")
    local dl = cjson.decode(got[1])
    assert.are.same({ "one", 0, 1, "not json", "in" }, { dl.topic, dl.partition, dl.offset, dl.record, dl.source })
    assert.matches("^malformed json", dl.error)
    assert.is_false(E.exists(dir .. "/state-dlq/dead-letter.jsonl"))
    d:kill("TERM")
    assert.are.equal(0, d:wait(15), d:stderr())
  end)

  it("commits an offset only after the sink acknowledged every output before it (at_least_once)", function()
    -- the sink's producer talks to a port nobody listens on: nothing is
    -- delivered until librdkafka gives up (message.timeout.ms), and then
    -- the error policy (skip) has handled the records
    pipeline([[p:source("in", { kafka = "acks", format = "json" }):key_by("w"):sink("out", { kafka = "acks-out" })]])
    produce("acks", { '{"w":"a"}', '{"w":"b"}', '{"w":"c"}' })
    local d = start("acks", ", on_error = 'skip', sinks = { out = { ['bootstrap.servers'] = '127.0.0.1:1', "
      .. "['message.timeout.ms'] = '4000' } }")
    local read = E.wait_for(function()
      local s = status("acks")
      return s and s.kafka.partitions[1].position == 3 and s
    end, 10, 0.1)
    assert(read, "the records were not read")
    E.sleep(1.5)     -- several commit intervals
    local s = status("acks")
    assert.is_true(s.kafka.partitions[1].committed == cjson.null, "committed before the sink acknowledged")
    local committed = E.wait_for(function()
      local st = status("acks")
      return st and st.kafka.partitions[1].committed == 3
    end, 15, 0.2)
    assert(committed, "not committed after the sink gave up and the policy handled the records")
    assert.matches("Kafka refused a message for topic acks%-out", d:stderr())
    d:kill("TERM")
    d:wait(15)
  end)

  it("shows the assignment on /status and lag, messages, bytes and rebalances on /metrics", function()
    pipeline([[p:source("in", { kafka = "in", format = "json" }):sink("out", { stdout = true })]])
    produce("in", { '{"n":1}', '{"n":2}', '{"n":3}' }, 1)
    local d = start("watch")
    printed(d, 3)
    local s = status("watch")
    table.sort(s.kafka.assignment)
    assert.are.same({ "in/0", "in/1", "in/2", "in/3" }, s.kafka.assignment)
    assert.are.equal("watch", s.kafka.group)
    local addr = E.admin_addr(dir .. "/state-watch")
    local ok = E.wait_for(function()
      local _, m = E.curl("http://" .. addr .. "/metrics")
      return m:find('eddy_kafka_consumer_lag{source="in",topic="in",partition="1"} 0', 1, true) and m
    end, 10, 0.2)
    assert(ok, "no lag of 0 for partition 1 on /metrics")
    assert.matches('eddy_kafka_messages_in_total{source="in",topic="in",partition="1"} 3', ok, 1, true)
    assert.matches('eddy_kafka_bytes_in_total{source="in",topic="in",partition="1"} 21', ok, 1, true)
    assert.matches("eddy_kafka_rebalances_total 1", ok, 1, true)
    assert.matches('eddy_kafka_committed_offset{source="in",topic="in",partition="1"} 3', ok, 1, true)
    d:kill("TERM")
    assert.are.equal(0, d:wait(15), d:stderr())
  end)

  it("splits a 32 MB prefetch budget over the partitions it reads, 2 to 16 MB each, unless the config sets it", function()
    -- librdkafka 2.0 stops fetching a partition for a second whenever its
    -- queue holds queued.max.messages.kbytes: the consumer's setting, as
    -- /status shows it, is what bounds how fast a partition is read
    pipeline([[p:source("in", { kafka = "in", format = "json" }):sink("out", { stdout = true })]])
    local d = start("four")
    assert.are.equal(8192, status("four").kafka.prefetch_kb)
    assert.matches("kafka: prefetching up to 8192 KB a partition (32 MB over the 4 partitions the group reads",
      d:stderr(), 1, true)
    d:kill("TERM")
    assert.are.equal(0, d:wait(15), d:stderr())
    pipeline([[p:source("in", { kafka = "one", format = "json" }):sink("out", { stdout = true })]])
    d = start("single")
    assert.are.equal(16384, status("single").kafka.prefetch_kb)
    d:kill("TERM")
    assert.are.equal(0, d:wait(15), d:stderr())
    -- the config's own setting wins (the consumer is made once, with it)
    d = start("own", ", kafka = { ['bootstrap.servers'] = '" .. boot .. "', ['queued.max.messages.kbytes'] = '1024' }")
    assert.are.equal(1024, status("own").kafka.prefetch_kb)
    assert.is_nil(d:stderr():find("prefetching up to", 1, true), d:stderr())
    d:kill("TERM")
    assert.are.equal(0, d:wait(15), d:stderr())
  end)

  it("refuses a topic the embedded broker was not told about, naming the source and topic", function()
    E.write(dir .. "/pipeline.lua", "local p = require('eddy').pipeline()\n"
      .. "p:source('in', { kafka = 'wrods' }):sink('out', { stdout = true })\nreturn p\n")
    E.write(dir .. "/e.conf.lua", "return { pipeline = 'pipeline.lua', admin = false, "
      .. "kafka = { embedded = { topics = { words = 2 } } } }")
    local r = E.run({ "run", dir .. "/e.conf.lua" }, { timeout = 30 })
    assert.are.equal(2, r.code, r.stderr)
    assert.matches("source 'in' (pipeline.lua:2): topic 'wrods': no such topic in kafka.embedded.topics", r.stderr, 1, true)
  end)
end)
