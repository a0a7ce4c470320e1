-- Kafka brokers away: unreachable when eddy starts (it waits, answers
-- /health 503 with the reason, and starts once a broker answers) and lost
-- while it runs (503 with the reason, and back to 200 by itself when they
-- return).  `eddy kafka-mock --port P` is the broker that appears later;
-- SIGUSR1/SIGUSR2 take its brokers down and up.
local E = require("support.eddy")
local run = E.shell

describe("kafka brokers away", function()
  local dir, port
  before_each(function()
    dir = E.tmpdir()
    local _, out = run("python3 -c \"import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])\"")
    port = tonumber(out:match("%d+"))
    E.write(dir .. "/pipeline.lua", [[
local p = require("eddy").pipeline()
p:source("in", { kafka = "in", format = "json" }):map(function(v) return v.n end)
 :sink("out", { stdout = true, format = "lines" })
return p
]])
    E.write(dir .. "/eddy.conf.lua", "return { name = 'away', pipeline = 'pipeline.lua', admin = { listen = '127.0.0.1:0' }, "
      .. "kafka = { ['bootstrap.servers'] = '127.0.0.1:" .. port .. "', ['session.timeout.ms'] = '6000' } }")
  end)
  after_each(function()
    run("pkill -TERM -f '^" .. E.bin .. " kafka-mock --port " .. port .. "'")
    E.cleanup()
  end)

  local function mock()
    assert(os.execute(string.format("(timeout -k 2 90 %s kafka-mock --port %d --topic in:2 > %s/mock.out 2>&1 &)",
      E.bin, port, dir)))
    assert(E.poll(10, function() return (E.read(dir .. "/mock.out") or ""):match("^127") end), "the mock did not start")
  end
  local function produce(line)
    assert.are.equal(0, run("echo '" .. line .. "' | timeout 20 kcat -P -b 127.0.0.1:" .. port .. " -t in"))
  end
  local function health(addr) return E.curl("http://" .. addr .. "/health") end

  it("waits for brokers that are not there at the start, answering 503 with the reason, and starts when they come", function()
    local d = E.start({ "run", dir .. "/eddy.conf.lua" }, { timeout = 80 })
    local addr = E.admin_addr(dir .. "/state/away")
    assert.truthy(addr, d:stderr())
    local code, body = health(addr)
    assert.are.equal(503, code)
    assert.matches("waiting for Kafka: source 'in' (pipeline.lua:2): topic 'in': cannot reach the brokers at 127.0.0.1:"
      .. port, body, 1, true)
    assert.matches("waiting for Kafka", d:stderr(), 1, true)
    E.sleep(2)
    assert.is_true(d:alive())
    mock()
    produce('{"n":1}')
    assert(E.wait_for(function() return d:stdout() == "1\n" end, 20, 0.1), "no record after the broker came: " .. d:stderr())
    assert.are.equal(200, (health(addr)))
    d:kill("TERM")
    assert.are.equal(0, d:wait(15), d:stderr())
  end)

  it("answers 503 while the brokers are lost and recovers by itself when they return", function()
    mock()
    local d = E.start({ "run", dir .. "/eddy.conf.lua" }, { timeout = 80 })
    local addr = E.admin_addr(dir .. "/state/away")
    produce('{"n":1}')
    assert(E.wait_for(function() return d:stdout() == "1\n" end, 20, 0.1), d:stderr())
    assert.are.equal(200, (health(addr)))
    run("pkill -USR1 -f '^" .. E.bin .. " kafka-mock --port " .. port .. "'")
    local down = E.wait_for(function()
      local code, body = health(addr)
      return code == 503 and body
    end, 20, 0.2)
    assert(down, "/health did not notice the brokers were gone")
    assert.matches("kafka: all brokers down (brokers 127.0.0.1:" .. port .. ")", down, 1, true)
    assert.matches("all brokers down", d:stderr(), 1, true)
    run("pkill -USR2 -f '^" .. E.bin .. " kafka-mock --port " .. port .. "'")
    produce('{"n":2}')
    assert(E.wait_for(function() return d:stdout() == "1\n2\n" end, 30, 0.2), "no record after the brokers returned: " .. d:stderr())
    assert(E.wait_for(function() return (health(addr)) == 200 end, 10, 0.2), "/health stayed 503")
    d:kill("TERM")
    assert.are.equal(0, d:wait(15), d:stderr())
  end)
end)
