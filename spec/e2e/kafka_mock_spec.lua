-- eddy kafka-mock: librdkafka's mock cluster as a command, checked with kcat
-- as an independent Kafka client.
local E = require("support.eddy")
local run = E.shell

describe("eddy kafka-mock", function()
  local dir
  before_each(function() dir = E.tmpdir() end)
  after_each(function()
    run("pkill -TERM -f '^" .. E.bin .. " kafka-mock'")
    E.poll(5, function() return E.exists(dir .. "/rc") end)
    E.cleanup()
  end)

  -- starts the broker; returns its bootstrap servers (the first line it prints)
  local function start(args)
    assert(os.execute(string.format("(timeout -k 2 60 %s kafka-mock %s > %s/out 2> %s/err; echo $? > %s/rc) &",
      E.bin, args, dir, dir, dir)))
    local boot = E.poll(10, function()
      local out = E.read(dir .. "/out")
      return out and out:match("^([^\n]+)\n")
    end)
    assert.truthy(boot, "no bootstrap servers printed: " .. tostring(E.read(dir .. "/err")))
    return boot
  end

  it("prints its bootstrap servers first and serves produce, consume and metadata to kcat; SIGTERM stops it with 0", function()
    local boot = start("--topic words:4 --topic other:1")
    assert.truthy(boot:match("^127%.0%.0%.1:%d+$"), boot)
    local rc = run("printf 'a\\nb\\nc\\n' | timeout 20 kcat -P -b " .. boot .. " -t words")
    assert.are.equal(0, rc)
    local _, consumed = run("timeout 20 kcat -C -b " .. boot .. " -t words -o beginning -e -q | sort")
    assert.are.equal("a\nb\nc\n", consumed)
    local _, meta = run("timeout 20 kcat -L -b " .. boot .. " -t words")
    local n = 0
    for _ in meta:gmatch("partition %d+") do n = n + 1 end
    assert.are.equal(4, n)
    run("pkill -TERM -f '^" .. E.bin .. " kafka-mock'")
    assert.truthy(E.poll(10, function() return E.exists(dir .. "/rc") end))
    assert.are.equal("0", E.read(dir .. "/rc"):match("%d+"))
  end)

  it("runs as many brokers as --brokers asks", function()
    local boot = start("--brokers 3")
    local _, meta = run("timeout 20 kcat -L -b " .. boot)
    assert.truthy(meta:find("3 brokers:", 1, true), meta)
  end)

  -- a port nothing listens on (the OS's choice; free again once python exits)
  local function free_port()
    local _, out = run("python3 -c 'import socket; s = socket.socket(); s.bind((\"127.0.0.1\", 0)); print(s.getsockname()[1])'")
    return assert(tonumber(out:match("%d+")), "no free port from python3: " .. out)
  end

  it("with --port P prints 127.0.0.1:P first and forwards kcat's bootstrap to the brokers: metadata, produce, consume; SIGTERM stops it with 0", function()
    local port = free_port()
    local boot = start("--port " .. port .. " --topic t:2")
    assert.are.equal("127.0.0.1:" .. port, boot)
    local rc, meta = run("timeout 20 kcat -L -b " .. boot .. " -t t")
    assert.are.equal(0, rc, meta)
    assert.truthy(meta:find('topic "t" with 2 partitions', 1, true), meta)
    rc = run("printf 'a\\nb\\nc\\n' | timeout 20 kcat -P -b " .. boot .. " -t t")
    assert.are.equal(0, rc)
    local _, consumed = run("timeout 20 kcat -C -b " .. boot .. " -t t -o beginning -e -q | sort")
    assert.are.equal("a\nb\nc\n", consumed)
    run("pkill -TERM -f '^" .. E.bin .. " kafka-mock'")
    assert.truthy(E.poll(10, function() return E.exists(dir .. "/rc") end))
    assert.are.equal("0", E.read(dir .. "/rc"):match("%d+"))
  end)

  it("with --port 0 listens on a port the OS picks, and a second kafka-mock on that port fails with exit 1 naming it", function()
    local boot = start("--port 0")
    local port = boot:match("^127%.0%.0%.1:(%d+)$")
    assert.truthy(port and port ~= "0", boot)
    local _, meta = run("timeout 20 kcat -L -b " .. boot)
    assert.truthy(meta:find("1 brokers:", 1, true), meta)
    local rc, out = run("timeout 20 " .. E.bin .. " kafka-mock --port " .. port .. " 2>&1")
    assert.are.equal(1, rc, out)
    assert.truthy(out:find("127.0.0.1:" .. port .. " is already in use", 1, true), out)
  end)

  it("refuses bad arguments with exit 2", function()
    for _, args in ipairs({ "--brokers 0", "--topic words", "--topic :3", "--topic words:0", "--bogus",
                            "--port abc", "--port -1", "--port 65536", "--port ''", "--port" }) do
      local rc, out = run(E.bin .. " kafka-mock " .. args .. " 2>&1")
      assert.are.equal(2, rc, args)
      assert.truthy(out:find("usage: eddy kafka%-mock"), out)
    end
    local _, out = run(E.bin .. " kafka-mock --port abc 2>&1")
    assert.truthy(out:find("--port needs a number from 0 to 65535, got: abc", 1, true), out)
  end)
end)
