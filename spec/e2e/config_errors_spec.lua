-- Configuration errors: each one exits 2 before processing starts, names the
-- key path at fault on stderr, and leaves no output behind.

local E = require("support.eddy")

local PIPELINE = [[
local eddy = require("eddy")
local p = eddy.pipeline()
p:source("in", { file = "in/*.jsonl", format = "json" })
 :map(function(v) return v end)
 :sink("out", { file = "out", format = "json" })
return p
]]

describe("a config error", function()
  local dir

  before_each(function()
    dir = E.tmpdir()
    E.write(dir .. "/in/a.jsonl", '{"n":1}\n{"n":2}\n')
    E.write(dir .. "/pipeline.lua", PIPELINE)
  end)
  after_each(E.cleanup)

  -- run_with(body): writes a config whose table has `body` added to the
  -- usual keys, runs it, and checks that nothing was processed
  local function run_with(body)
    E.write(dir .. "/eddy.conf.lua",
      'return { name = "cfg", pipeline = "pipeline.lua", admin = false,\n' .. body .. '\n}\n')
    local r = E.run_config(dir)
    assert.is_false(E.exists(dir .. "/out"), "the sink's folder was created")
    assert.is_false(E.exists(dir .. "/state"), "the state folder was created")
    assert.are.equal("", r.stdout)
    return r
  end

  it("the config runs when nothing is wrong (the baseline the other cases change)", function()
    E.write_config(dir, { name = "cfg" })
    local r = E.run_config(dir)
    assert.are.equal(0, r.code, r.stderr)
    assert.are.same({ '{"n":1}', '{"n":2}' }, E.sink_lines(dir .. "/out"))
  end)

  it("an unknown top-level key exits 2 with 'KEY: unknown key'", function()
    local r = run_with('colour = "red"')
    assert.are.equal(2, r.code)
    assert.matches("colour: unknown key", r.stderr, 1, true)
  end)

  it("an unknown nested key exits 2 naming its full path and suggesting the near one", function()
    local r = run_with('checkpoint = { intervall = "1s" }')
    assert.are.equal(2, r.code)
    assert.matches("checkpoint.intervall: unknown key", r.stderr, 1, true)
    assert.matches("did you mean checkpoint.interval?", r.stderr, 1, true)
  end)

  it("a value of the wrong type exits 2 naming the key and the type it got", function()
    local r = run_with('threads = "two"')
    assert.are.equal(2, r.code)
    assert.matches('threads: expected an integer, got string "two"', r.stderr, 1, true)
    r = run_with('sandbox = { ffi = "yes" }')
    assert.are.equal(2, r.code)
    assert.matches('sandbox.ffi: expected true or false', r.stderr, 1, true)
  end)

  it("a bad duration exits 2 with 'checkpoint.interval: expected a duration like \"10s\", got \"ten\"'", function()
    local r = run_with('checkpoint = { interval = "ten" }')
    assert.are.equal(2, r.code)
    assert.matches('checkpoint.interval: expected a duration like "10s", got "ten"', r.stderr, 1, true)
    r = run_with('limits = { time = "1x" }')
    assert.are.equal(2, r.code)
    assert.matches('limits.time: expected a duration like "10s", got "1x"', r.stderr, 1, true)
  end)

  it("a bad size exits 2 naming the key and an example size", function()
    local r = run_with('limits = { memory = "lots" }')
    assert.are.equal(2, r.code)
    assert.matches('limits.memory: expected a size like "64MB", got "lots"', r.stderr, 1, true)
    r = run_with('state = { cache = 12.5 }')
    assert.are.equal(2, r.code)
    assert.matches('state.cache: expected a size', r.stderr, 1, true)
  end)

  it("a value outside an enum exits 2 listing the allowed values", function()
    local r = run_with('on_error = "ignore"')
    assert.are.equal(2, r.code)
    assert.matches('on_error: expected "fail", "skip" or "dead_letter", got "ignore"', r.stderr, 1, true)
    r = run_with('log = { level = "loud" }')
    assert.are.equal(2, r.code)
    assert.matches('log.level: expected ', r.stderr, 1, true)
  end)

  it("a number out of range exits 2 naming the key", function()
    local r = run_with('tuning = { batch = 0 }')
    assert.are.equal(2, r.code)
    assert.matches('tuning.batch: expected an integer from 1 to', r.stderr, 1, true)
  end)

  it("a malformed admin.listen exits 2 naming admin.listen", function()
    local r = run_with('admin = { listen = "nope" }')
    assert.are.equal(2, r.code)
    assert.matches('admin.listen: expected "host:port"', r.stderr, 1, true)
  end)

  it("config.sources naming a source the pipeline does not have exits 2 naming sources.NAME", function()
    local r = run_with('sources = { nope = { file = "in/a.jsonl" } }')
    assert.are.equal(2, r.code)
    assert.matches("sources.nope: the pipeline pipeline.lua has no source named 'nope'", r.stderr, 1, true)
  end)

  it("an unknown option in config.sources.NAME exits 2 naming sources.NAME.OPTION", function()
    local r = run_with('sources = { ["in"] = { fil = "in/a.jsonl" } }')
    assert.are.equal(2, r.code)
    assert.matches("sources.in.fil: unknown option", r.stderr, 1, true)
  end)

  it("a number where config.sources.NAME.file needs a path exits 2 naming sources.NAME.file", function()
    local r = run_with('sources = { ["in"] = { file = 5 } }')
    assert.are.equal(2, r.code)
    assert.matches("sources.in.file", r.stderr, 1, true)
  end)

  it("a glob in the pipeline that matches no file exits 2 naming the source, its line and the glob", function()
    E.write(dir .. "/pipeline.lua", (PIPELINE:gsub("in/%*%.jsonl", "nothing/*.jsonl")))
    local r = run_with("")
    assert.are.equal(2, r.code)
    assert.matches("source 'in' (pipeline.lua:3): no file matches '" .. dir .. "/nothing/*.jsonl'", r.stderr, 1, true)
  end)

  it("a glob in config.sources that matches no file exits 2 naming the source and the glob", function()
    local r = run_with('sources = { ["in"] = { file = "none/*.jsonl" } }')
    assert.are.equal(2, r.code)
    assert.matches("source 'in'", r.stderr, 1, true)
    assert.matches(dir .. "/none/*.jsonl", r.stderr, 1, true)
  end)

  it("a config with a Lua syntax error exits 2 naming the config file and line", function()
    local r = run_with('colour = ')
    assert.are.equal(2, r.code)
    assert.matches("eddy.conf.lua:3:", r.stderr, 1, true)
  end)

  it("a config that does not return a table exits 2 saying so", function()
    E.write(dir .. "/eddy.conf.lua", "return 42\n")
    local r = E.run_config(dir)
    assert.are.equal(2, r.code)
    assert.matches("must return a table", r.stderr, 1, true)
    assert.is_false(E.exists(dir .. "/out"))
  end)

  it("a config naming a pipeline script that does not exist exits 2 naming the script", function()
    local r = run_with('pipeline = "missing.lua"')
    assert.are.equal(2, r.code)
    assert.matches("missing.lua", r.stderr, 1, true)
  end)

  it("an app name that cannot name a folder exits 2 naming the key 'name'", function()
    E.write(dir .. "/eddy.conf.lua", 'return { name = "a b", pipeline = "pipeline.lua", admin = false }\n')
    local r = E.run_config(dir)
    assert.are.equal(2, r.code)
    assert.matches("name: expected ", r.stderr, 1, true)
    assert.is_false(E.exists(dir .. "/out"))
  end)

  -- shuffle = "kafka" (scale-out with state) is refused before anything
  -- starts where it cannot work
  it("shuffle = \"kafka\" with the embedded broker exits 2 naming the cause and the fix", function()
    local r = run_with('shuffle = "kafka", kafka = { embedded = { brokers = 1, topics = { t = 1 } } }')
    assert.are.equal(2, r.code, r.stderr)
    assert.matches('shuffle: "kafka" needs a real Kafka broker: the embedded one (kafka.embedded)', r.stderr, 1, true)
    assert.matches('set kafka["bootstrap.servers"] instead', r.stderr, 1, true)
  end)

  it("shuffle = \"kafka\" without kafka[\"bootstrap.servers\"] exits 2 asking for it", function()
    local r = run_with('shuffle = "kafka"')
    assert.are.equal(2, r.code, r.stderr)
    assert.matches('shuffle: "kafka" sends every key_by through Kafka: set kafka["bootstrap.servers"]',
      r.stderr, 1, true)
  end)

  it("standby without shuffle = \"kafka\" exits 2 naming both keys", function()
    local r = run_with('standby = 1')
    assert.are.equal(2, r.code, r.stderr)
    assert.matches('standby: 1 warm copies live on other instances: it needs shuffle = "kafka"', r.stderr, 1, true)
  end)

  it("a shuffle other than \"local\" or \"kafka\" exits 2 naming the key", function()
    local r = run_with('shuffle = "network"')
    assert.are.equal(2, r.code, r.stderr)
    assert.matches('shuffle: expected "local" or "kafka", got "network"', r.stderr, 1, true)
  end)
  -- reload.probation / max_error_rate / hold_commits (automatic rollback)
  it("reload.max_error_rate out of 0..1, or not a number, exits 2 naming the key", function()
    for _, v in ipairs({ '2', '-0.5', '"lots"', '"150%"' }) do
      local r = run_with('reload = { probation = "1m", max_error_rate = ' .. v .. ' }')
      assert.are.equal(2, r.code, r.stderr)
      assert.matches("reload.max_error_rate: expected a fraction of the records from 0 to 1", r.stderr, 1, true)
    end
  end)

  it("reload.probation that is not a duration exits 2 naming the key", function()
    local r = run_with('reload = { probation = "soon" }')
    assert.are.equal(2, r.code, r.stderr)
    assert.matches('reload.probation: expected a duration like "10s", got "soon"', r.stderr, 1, true)
  end)

  it("reload.max_error_rate or hold_commits without reload.probation exits 2 asking for it", function()
    local r = run_with('reload = { max_error_rate = 0.01 }')
    assert.are.equal(2, r.code, r.stderr)
    assert.matches("reload.max_error_rate: it is watched during reload.probation, which is 0 (off)", r.stderr, 1, true)
    r = run_with('guarantee = "exactly_once", reload = { hold_commits = true }')
    assert.are.equal(2, r.code, r.stderr)
    assert.matches("reload.hold_commits: commits are held during reload.probation, which is 0 (off)", r.stderr, 1, true)
  end)

  it("reload.hold_commits under at_least_once exits 2 naming guarantee", function()
    local r = run_with('reload = { probation = "1m", hold_commits = true }')
    assert.are.equal(2, r.code, r.stderr)
    assert.matches('reload.hold_commits: only under guarantee = "exactly_once" are there commits to hold', r.stderr,
      1, true)
  end)

  it("reload.hold_commits with a Kafka sink whose transaction would time out during the probation exits 2 "
    .. "naming transaction.timeout.ms", function()
    E.write(dir .. "/pipeline.lua", PIPELINE:gsub('{ file = "out", format = "json" }', '{ kafka = "out" }'))
    local r = run_with('guarantee = "exactly_once", kafka = { ["bootstrap.servers"] = "127.0.0.1:1" },\n'
      .. 'reload = { probation = "2m", hold_commits = true }')
    assert.are.equal(2, r.code, r.stderr)
    assert.matches('reload.hold_commits: the pipeline writes to Kafka, whose transaction stays open through '
      .. 'reload.probation (120.0 s)', r.stderr, 1, true)
    assert.matches('must be shorter than kafka["transaction.timeout.ms"] (60000 ms, the default)', r.stderr, 1, true)
    -- a probation that fits in a raised timeout is accepted: eddy goes on to
    -- wait for the (absent) broker, and is stopped
    E.write(dir .. "/eddy.conf.lua", 'return { name = "cfg", pipeline = "pipeline.lua", admin = false,\n'
      .. 'guarantee = "exactly_once", kafka = { ["bootstrap.servers"] = "127.0.0.1:1", '
      .. '["transaction.timeout.ms"] = 300000 },\nreload = { probation = "2m", hold_commits = true } }\n')
    local d = E.start({ "run", dir .. "/eddy.conf.lua" })
    assert(E.wait_for(function() return E.exists(dir .. "/state") end, 10), "eddy did not get past its config")
    d:stop()
    assert.is_nil(d:stderr():find("reload.hold_commits", 1, true), d:stderr())
  end)
end)
