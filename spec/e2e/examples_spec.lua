-- The examples under examples/ run as shipped and give their golden outputs
-- (spec/fixtures/).  They are what `make run` and the README show.
local E = require("support.eddy")
local run = E.shell
local read = E.read
local cjson = require("cjson")
local root = assert(os.getenv("EDDY_ROOT"), "EDDY_ROOT must be set")
local eddy_bin = assert(os.getenv("EDDY_BIN"), "EDDY_BIN must be set")



describe("examples", function()
  it("wordcount prints the per-minute counts of its sample input and exits 0", function()
    local rc, out = run(string.format("cd %s && %s run examples/wordcount/eddy.conf.lua 2>/dev/null", root, eddy_bin))
    assert.are.equal(0, rc)
    assert.are.equal(read(root .. "/spec/fixtures/wordcount.out"), out)
  end)

  it("wordcount gives the same counts with 4 keyed tasks and 1 thread", function()
    local tmp = os.tmpname()
    local conf = read(root .. "/examples/wordcount/eddy.conf.lua")
      :gsub("parallelism = 1,", "parallelism = 4,"):gsub("threads = 2,", "threads = 1,")
      :gsub('pipeline = "pipeline.lua"', 'pipeline = "' .. root .. '/examples/wordcount/pipeline.lua"')
    local f = assert(io.open(tmp, "w"))
    f:write(conf)
    f:close()
    local rc, out = run(string.format("%s run %s 2>/dev/null | sort", eddy_bin, tmp))
    os.remove(tmp)
    assert.are.equal(0, rc)
    local expected = {}
    for l in read(root .. "/spec/fixtures/wordcount.out"):gmatch("[^\n]+") do expected[#expected + 1] = l end
    table.sort(expected)
    assert.are.equal(table.concat(expected, "\n") .. "\n", out)
  end)

  it("filter-enrich writes the enriched purchases and dead-letters the two bad records", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(run(string.format("cp -r %s/examples/filter-enrich %s && rm -rf %s/out %s/state", root, dir, dir, dir)) == 0)
    local rc = run(string.format("cd %s && %s run eddy.conf.lua 2>/dev/null", dir, eddy_bin))
    assert.are.equal(0, rc)
    local rows = {}
    local _, parts = run("cat " .. dir .. "/out/part-*")
    for l in parts:gmatch("[^\n]+") do
      local v = cjson.decode(l)
      rows[#rows + 1] = string.format("%s %d %s %s %d %s", v.user, v.ts, v.country, v.region, v.cents, v.user_key)
    end
    table.sort(rows)
    assert.are.equal(read(root .. "/spec/fixtures/filter-enrich.out"), table.concat(rows, "\n") .. "\n")
    local dead = {}
    for l in read(dir .. "/out/dead-letter.jsonl"):gmatch("[^\n]+") do dead[#dead + 1] = cjson.decode(l) end
    table.sort(dead, function(a, b) return a.line < b.line end)
    assert.are.equal(2, #dead)
    assert.are.equal("events", dead[1].operator)          -- events-2.jsonl:3, a broken JSON line
    assert.truthy(dead[1].error:find("^malformed json"))
    assert.are.equal(3, dead[1].line)
    assert.are.equal("map-3", dead[2].operator)           -- events-1.jsonl:6, country XX
    assert.are.equal(6, dead[2].line)
    assert.truthy(dead[2].error:find("pipeline.lua:13: unknown country code XX", 1, true))
    assert.truthy(dead[2].record:find('"user":"dan"', 1, true))
    assert.truthy(dead[2].traceback:find("stack traceback", 1, true))
    run("rm -rf " .. dir)
  end)

  it("kafka-clicks reads its sample back from the embedded Kafka broker and counts page views per minute", function()
    local E = require("support.eddy")
    local dir = E.tmpdir() .. "/kafka-clicks"
    assert(run(string.format("cp -r %s/examples/kafka-clicks %s && rm -rf %s/out %s/state", root, dir, dir, dir)) == 0)
    local d = E.start({ "run", dir .. "/eddy.conf.lua" }, { timeout = 60 })
    local addr = E.admin_addr(dir .. "/state/clicks")
    assert.truthy(addr, d:stderr())
    -- every click went into the topic and came back out of it
    local all = E.wait_for(function()
      local code, body = E.curl("http://" .. addr .. "/status")
      if code ~= 200 then return false end
      local n = 0
      for _, t in ipairs(cjson.decode(body).tasks) do if t.stage == "clicks" then n = n + t.records_in end end
      return n == 80
    end, 30, 0.2)
    assert(all, "the clicks did not all come back from Kafka: " .. d:stderr())
    -- and the windows they close fired (a stop keeps open windows): wait for
    -- the keyed task to catch up with the source before stopping
    local want = E.lines(read(root .. "/spec/fixtures/kafka-clicks.out"))
    E.wait_for(function()
      local n = 0
      for _, path in ipairs(E.part_files(dir .. "/out")) do n = n + #E.lines(E.read(path) or "") end
      return n >= #want
    end, 30, 0.2)
    local _, page = E.curl("http://" .. addr .. "/metrics")
    local late = E.metric_sum(page, "eddy_late_records_dropped_total")
    d:kill("TERM")
    assert.are.equal(0, d:wait(20), d:stderr())
    local rows = {}
    for _, path in ipairs(E.part_files(dir .. "/out")) do
      for _, l in ipairs(E.lines(E.read(path))) do
        local v = cjson.decode(l)
        rows[#rows + 1] = string.format("%s %s %d", v.minute, v.page, v.views)
      end
    end
    table.sort(rows)
    -- on a failure, name the rows that differ (the whole output is long)
    local C = require("support.crash")
    local function multiset(list)
      local m = { rows = {}, n = #list }
      for _, r in ipairs(list) do m.rows[r] = (m.rows[r] or 0) + 1 end
      return { views = m }
    end
    local diff = C.differences(multiset(want), multiset(rows), { "views" })
    assert(diff == "", string.format("%s\nlate records dropped: %d\n%s", diff, late, C.tail(d:stderr())))
    assert.are.equal(read(root .. "/spec/fixtures/kafka-clicks.out"), table.concat(rows, "\n") .. "\n")
    E.cleanup()
  end)
end)
