-- Kafka sinks, against `eddy kafka-mock` and read back with kcat: values,
-- keys, event timestamps, partitions chosen by murmur2 of the key as the
-- Java client (and kcat's murmur2_random partitioner) choose them, records
-- Kafka refuses going to the error policy, and the embedded broker.
local E = require("support.eddy")
local cjson = require("cjson")
local run = E.shell
local T = 1700000000000

describe("kafka sinks", function()
  local dir, boot
  before_each(function()
    dir = E.tmpdir()
    assert(os.execute(string.format(
      "(timeout -k 2 120 %s kafka-mock --topic out:4 --topic check:4 --topic lines:2 > %s/mock.out 2>&1 &)", E.bin, dir)))
    boot = E.poll(10, function()
      local out = E.read(dir .. "/mock.out")
      return out and out:match("^(127%.0%.0%.1:%d+)\n")
    end)
    assert.truthy(boot, "the mock broker did not start")
  end)
  after_each(function()
    run("pkill -TERM -f '^" .. E.bin .. " kafka-mock'")
    run("pkill -TERM -f '^" .. E.bin .. " run " .. dir .. "'")
    E.cleanup()
  end)

  local function consume(topic, fmt)
    local _, out = run("timeout 20 kcat -C -b " .. boot .. " -t " .. topic .. " -o beginning -e -q -f '" .. fmt .. "'")
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    table.sort(lines)
    return lines
  end

  local function go(pipeline, conf)
    E.write(dir .. "/in.jsonl", table.concat({
      '{"t":' .. (T + 1000) .. ',"user":"ada","n":1}', '{"t":' .. (T + 2000) .. ',"user":"bob","n":2}',
      '{"t":' .. (T + 3000) .. ',"user":"cyd","n":3}', '{"t":' .. (T + 4000) .. ',"user":"dan","n":4}',
      '{"t":' .. (T + 5000) .. ',"user":"eve","n":5}', '{"t":' .. (T + 6000) .. ',"user":"ada","n":6}', "" }, "\n"))
    E.write(dir .. "/pipeline.lua", "local eddy = require('eddy')\nlocal p = eddy.pipeline()\n" .. pipeline .. "\nreturn p\n")
    E.write(dir .. "/eddy.conf.lua", "return { pipeline = 'pipeline.lua', admin = false, "
      .. "kafka = { ['bootstrap.servers'] = '" .. boot .. "' }" .. (conf or "") .. " }")
    return run(E.bin .. " run " .. dir .. "/eddy.conf.lua 2>" .. dir .. "/err.log")
  end

  it("writes each value with its key and event time, to the partition murmur2 of the key picks, as the Java client does", function()
    local rc = go([[
p:source("in", { file = "in.jsonl", timestamp = "t" })
 :map(function(v) return { user = v.user, n = v.n } end)
 :sink("out", { kafka = "out", key = "user" })]])
    assert.are.equal(0, rc, E.read(dir .. "/err.log"))
    local got = consume("out", "%k|%p|%T|%s\\n")
    assert.are.equal(6, #got)
    local partition_of = {}
    for _, l in ipairs(got) do
      local k, p, ts, v = l:match("^([^|]*)|(%d+)|(%d+)|(.*)$")
      local value = cjson.decode(v)
      assert.are.equal(k, value.user)
      assert.are.equal(T + value.n * 1000, tonumber(ts))
      partition_of[k] = tonumber(p)
    end
    -- kcat's murmur2_random partitioner is librdkafka's port of the Java client's
    local keys = {}
    for k in pairs(partition_of) do keys[#keys + 1] = k .. ":x" end
    assert.are.equal(0, (run("printf '" .. table.concat(keys, "\\n") .. "\\n' | timeout 20 kcat -P -b " .. boot
      .. " -t check -K: -X topic.partitioner=murmur2_random")))
    for _, l in ipairs(consume("check", "%k|%p\\n")) do
      local k, p = l:match("^(.*)|(%d+)$")
      assert.are.equal(tonumber(p), partition_of[k], "partition of key " .. k)
    end
  end)

  it("keys records by the key_by key when the sink names no key, and writes lines as they are", function()
    local rc = go([[
p:source("in", { file = "in.jsonl" })
 :key_by("user")
 :map(function(v, ctx) return ctx.key .. "=" .. v.n end)
 :sink("lines", { kafka = "lines", format = "lines" })]])
    assert.are.equal(0, rc, E.read(dir .. "/err.log"))
    assert.are.same({ "ada|ada=1", "ada|ada=6", "bob|bob=2", "cyd|cyd=3", "dan|dan=4", "eve|eve=5" },
      consume("lines", "%k|%s\\n"))
  end)

  it("sends a record Kafka refuses to the error policy and delivers the others", function()
    local rc = go([[
p:source("in", { file = "in.jsonl" })
 :map(function(v) if v.user == "cyd" then v.pad = string.rep("x", 5000) end return v end)
 :sink("out", { kafka = "out", key = "user" })]], ", on_error = 'dead_letter', dead_letter = { file = 'dead.jsonl' }, "
      .. "sinks = { out = { ['message.max.bytes'] = 2000 } }")
    assert.are.equal(0, rc, E.read(dir .. "/err.log"))
    assert.are.equal(5, #consume("out", "%k\\n"))
    local dead = cjson.decode((E.read(dir .. "/dead.jsonl") or ""):match("[^\n]+"))
    assert.truthy(dead.error:find("sink 'out': Kafka refused the record", 1, true), dead.error)
    assert.truthy(dead.record:find('"user":"cyd"', 1, true))
  end)

  it("refuses, before anything runs, a Kafka sink without a broker and a librdkafka property it does not know", function()
    E.write(dir .. "/in.jsonl", "{}\n")
    E.write(dir .. "/pipeline.lua", "local p = require('eddy').pipeline()\n"
      .. "p:source('in', { file = 'in.jsonl' }):sink('out', { kafka = 'out' })\nreturn p\n")
    E.write(dir .. "/a.conf.lua", "return { pipeline = 'pipeline.lua', admin = false }")
    local rc, out = run(E.bin .. " run " .. dir .. "/a.conf.lua 2>&1")
    assert.are.equal(2, rc)
    assert.truthy(out:find('set kafka["bootstrap.servers"] or kafka.embedded', 1, true), out)
    E.write(dir .. "/b.conf.lua", "return { pipeline = 'pipeline.lua', admin = false, "
      .. "kafka = { ['bootstrap.servers'] = '" .. boot .. "', ['no.such.property'] = 1 } }")
    rc, out = run(E.bin .. " run " .. dir .. "/b.conf.lua 2>&1")
    assert.are.equal(2, rc)
    assert.truthy(out:find("kafka.no.such.property", 1, true), out)
  end)

  it("starts an embedded broker from kafka.embedded and delivers to it", function()
    E.write(dir .. "/in.jsonl", '{"n":1}\n{"n":2}\n{"n":3}\n')
    E.write(dir .. "/pipeline.lua", "local p = require('eddy').pipeline()\n"
      .. "p:source('in', { file = 'in.jsonl', follow = true }):sink('out', { kafka = 'words' })\nreturn p\n")
    E.write(dir .. "/eddy.conf.lua", "return { pipeline = 'pipeline.lua', name = 'emb', state = { dir = 'state' }, "
      .. "admin = { listen = '127.0.0.1:0' }, kafka = { embedded = { topics = { words = 2 } } } }")
    assert(os.execute(string.format("(cd %s && %s run %s/eddy.conf.lua 2>err.log; echo $? > rc) &", dir, E.bin, dir)))
    local addr = E.poll(10, function() return E.read(dir .. "/state/admin.addr") end)
    assert.truthy(addr, "the daemon did not start: " .. tostring(E.read(dir .. "/err.log")))
    addr = addr:match("[^\n]+")
    assert.truthy(E.poll(10, function()
      local _, m = run("curl -s http://" .. addr .. "/metrics")
      return m:find('eddy_kafka_messages_total{sink="out",result="delivered"} 3', 1, true)
    end), "three messages were never delivered")
    assert.truthy((E.read(dir .. "/err.log") or ""):find("kafka.embedded: broker at 127.0.0.1:", 1, true))
    run("pkill -TERM -f '^" .. E.bin .. " run " .. dir .. "'")
    assert.truthy(E.poll(10, function() return E.read(dir .. "/rc") end))
    assert.are.equal("0", E.read(dir .. "/rc"):match("%d+"))
  end)
end)
