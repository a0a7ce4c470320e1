-- State migration on a running daemon: a process operator's state changes
-- shape in a reload, and its migrate converts every key's state once —
-- lazily before a key's first record on the new version, and in the
-- background for the others — so that every output and every key's state
-- after the reload is what the new version would have made from the start
-- (an oracle over the input), also across a stop in the middle.
local E = require("support.eddy")
local cjson = require("cjson")

local V1 = [[
local p = require("eddy").pipeline()
p:source("in", { file = "in.jsonl", follow = true })
 :key_by("k")
 :process{ process = function(v, ctx)
   local total, count = ctx.state:value("total"), ctx.state:value("count")
   local t, c = (total:get() or 0) + v.x, (count:get() or 0) + 1
   total:set(t); count:set(c)
   return { i = v.i, k = ctx.key, sum = t, n = c, v = ctx.version }
 end }
 :uid("totals")
 :sink("out", { stdout = true })
return p
]]

local V2 = [[
local p = require("eddy").pipeline()
p:source("in", { file = "in.jsonl", follow = true })
 :key_by("k")
 :process{
   process = function(v, ctx)
     local agg = ctx.state:value("agg")
     local a = agg:get() or { sum = 0, n = 0 }
     a.sum, a.n = a.sum + v.x, a.n + 1
     agg:set(a)
     return { i = v.i, k = ctx.key, sum = a.sum, n = a.n, v = ctx.version, two = true }
   end,
   migrate = function(old, ctx) return { agg = { sum = old.total, n = old.count } } end,
 }
 :uid("totals")
 :sink("out", { stdout = true })
return p
]]

-- n records from i0 on, over `keys` keys: {i, k, x}
local function records(i0, n, keys, seed)
  local out, s = {}, seed
  for i = i0, i0 + n - 1 do
    s = (s * 16807) % 2147483647          -- (exact in a double)
    out[#out + 1] = { i = i, k = "k" .. (s % keys), x = 1 + s % 9 }
  end
  return out
end

local function jsonl(recs)
  local t = {}
  for _, r in ipairs(recs) do t[#t + 1] = cjson.encode(r) end
  return table.concat(t, "\n") .. "\n"
end

-- sum and count per key after each record (the oracle), by record index
local function oracle(recs)
  local acc, at = {}, {}
  for _, r in ipairs(recs) do
    local a = acc[r.k] or { sum = 0, n = 0 }
    a.sum, a.n = a.sum + r.x, a.n + 1
    acc[r.k] = a
    at[r.i] = { sum = a.sum, n = a.n, k = r.k }
  end
  return at, acc
end

local function outputs(d)
  local rows = {}
  for line in d:stdout():gmatch("[^\n]+") do
    local ok, v = pcall(cjson.decode, line)
    if ok and type(v) == "table" and v.i then rows[v.i] = v end
  end
  return rows
end

local function count(t) local n = 0 for _ in pairs(t) do n = n + 1 end return n end

local status = E.status

describe("state migration on a running daemon", function()
  local dir
  before_each(function() dir = E.tmpdir() end)
  after_each(function() E.cleanup() end)

  local function start()
    local d = E.start({ "run", dir .. "/eddy.conf.lua" }, { timeout = 120 })
    local addr = E.admin_addr(dir .. "/state/mig")
    assert.truthy(addr, d:stderr())
    return d, addr
  end

  local function reload_to_v2(addr, script)
    E.write(dir .. "/pipeline.lua", script or V2)
    local code, body = E.curl("http://" .. addr .. "/reload", "POST")
    assert.are.equal(200, code, body)
    assert(E.wait_for(function()
      local st = status(addr)
      if not st then return false end
      for _, t in ipairs(st.tasks) do if t.version ~= 2 then return false end end
      return true
    end, 20), "the reload did not roll out")
  end

  -- every key's state converges to v2's shape with the oracle's values
  local function check_state(addr, acc)
    assert(E.wait_for(function()
      local st = status(addr)
      return st and st.pipeline.migrating and next(st.pipeline.migrating) == nil
    end, 60), "the background migration did not end")
    local code, body = E.curl("http://" .. addr .. "/state/totals?limit=100000")
    assert.are.equal(200, code, body)
    local seen = {}
    for _, e in ipairs(cjson.decode(body)) do seen[e.key] = e.state end
    for k, a in pairs(acc) do
      assert.are.same({ agg = { sum = a.sum, n = a.n } }, seen[k], k)
    end
    assert.are.equal(count(acc), count(seen))
  end

  local function config()
    E.write(dir .. "/eddy.conf.lua", "return { name = 'mig', pipeline = 'pipeline.lua', parallelism = 4, threads = 2, "
      .. "admin = { listen = '127.0.0.1:0' }, reload = { watch = false } }")
  end

  it("after the reload every output and every key's state is as if v2 had run from the start", function()
    local first, second = records(1, 4000, 600, 11), records(4001, 4000, 600, 23)
    local all = {}
    for _, r in ipairs(first) do all[#all + 1] = r end
    for _, r in ipairs(second) do all[#all + 1] = r end
    local want, acc = oracle(all)
    E.write(dir .. "/pipeline.lua", V1)
    E.write(dir .. "/in.jsonl", jsonl(first))
    config()
    local d, addr = start()
    assert(E.wait_for(function() return count(outputs(d)) == 4000 end, 60), d:stderr())
    reload_to_v2(addr)
    E.append(dir .. "/in.jsonl", jsonl(second))
    assert(E.wait_for(function() return count(outputs(d)) == 8000 end, 60), d:stderr())
    local rows = outputs(d)
    for i = 1, 8000 do
      local r, w = rows[i], want[i]
      assert.are.same({ k = w.k, sum = w.sum, n = w.n }, { k = r.k, sum = r.sum, n = r.n }, "record " .. i)
      assert.are.equal(i <= 4000 and 1 or 2, r.v, "record " .. i)
    end
    check_state(addr, acc)
    d:kill("TERM")
    assert.are.equal(0, d:wait(20), d:stderr())
  end)

  it("under on_error = fail a migrate that raises rolls the reload back, state and all (exactly_once, probation, hold_commits)", function()
    -- V1 and V2 writing to a file sink (exactly_once: part files appear at commits)
    local v1 = V1:gsub(':sink%("out", { stdout = true }%)', ':sink("out", { file = "out" })')
    local v2 = V2:gsub(':sink%("out", { stdout = true }%)', ':sink("out", { file = "out" })')
      :gsub("migrate = function%(old, ctx%)", 'migrate = function(old, ctx) if ctx.key == "k7" then error("k7 cannot be converted") end')
    local first, second = records(1, 3000, 50, 3), records(3001, 3000, 50, 13)
    local all = {}
    for _, r in ipairs(first) do all[#all + 1] = r end
    for _, r in ipairs(second) do all[#all + 1] = r end
    local want = oracle(all)                     -- version 1 alone, from the start
    E.write(dir .. "/pipeline.lua", v1)
    E.write(dir .. "/in.jsonl", jsonl(first))
    E.write(dir .. "/eddy.conf.lua", "return { name = 'mig', pipeline = 'pipeline.lua', parallelism = 2, threads = 2, "
      .. "guarantee = 'exactly_once', checkpoint = { interval = '300ms' }, admin = { listen = '127.0.0.1:0' }, "
      .. "reload = { watch = false, probation = '30s', hold_commits = true } }")
    local d, addr = start()
    local function committed()
      local rows = {}
      for _, l in ipairs(E.sink_lines(dir .. "/out")) do local v = cjson.decode(l); rows[v.i] = v end
      return rows
    end
    assert(E.wait_for(function() return count(committed()) == 3000 end, 60), d:stderr())
    E.write(dir .. "/pipeline.lua", v2)
    local code, body
    assert(E.wait_for(function()                 -- (503 while a checkpoint is in progress)
      code, body = E.curl("http://" .. addr .. "/reload", "POST")
      return code ~= 503
    end, 20))
    assert.are.equal(200, code, body)
    -- the background pass meets k7: the task fails, and eddy restarts on version 1 from the checkpoint
    -- taken at the reload's barrier, before any key was converted
    local addr2 = E.wait_for(function()
      local t = E.read(dir .. "/state/mig/admin.addr")
      local a = t and t:match("^(%S+:%d+)\n")
      local st = a and a ~= addr and status(a)
      return st and st.pipeline.last_rollback and st.pipeline.last_rollback ~= cjson.null and a
    end, 60)
    assert.truthy(addr2, "no rollback: " .. d:stderr())
    local rb = status(addr2).pipeline.last_rollback
    assert.are.equal(1, rb.to)
    assert.matches("k7 cannot be converted", rb.reason, 1, true)
    E.append(dir .. "/in.jsonl", jsonl(second))
    assert(E.wait_for(function() return count(committed()) == 6000 end, 90), d:stderr())
    local rows = committed()
    for i = 1, 6000 do
      local r, w = rows[i], want[i]
      assert.are.same({ k = w.k, sum = w.sum, n = w.n, v = 1 }, { k = r.k, sum = r.sum, n = r.n, v = r.v }, "record " .. i)
    end
    code, body = E.curl("http://" .. addr2 .. "/state/totals/k7")
    assert.are.equal(200, code, body)
    assert.is_nil(cjson.decode(body).agg, body)   -- version 1's shape: nothing was converted
    d:kill("TERM")
    assert.are.equal(0, d:wait(30), d:stderr())
  end)

  it("a stop in the middle of the migration goes on with it at the next start", function()
    local first = records(1, 30000, 20000, 5)
    local second = records(30001, 2000, 20000, 9)
    local all = {}
    for _, r in ipairs(first) do all[#all + 1] = r end
    for _, r in ipairs(second) do all[#all + 1] = r end
    local want, acc = oracle(all)
    E.write(dir .. "/pipeline.lua", V1)
    E.write(dir .. "/in.jsonl", jsonl(first))
    config()
    local d, addr = start()
    assert(E.wait_for(function() return count(outputs(d)) == 30000 end, 90), d:stderr())
    -- a migrate that takes ~1 ms of CPU a key: the stop comes while most keys wait
    reload_to_v2(addr, (V2:gsub("migrate = function%(old, ctx%)",
      "migrate = function(old, ctx) local t0 = os.clock() while os.clock() - t0 < 0.001 do end")))
    assert(E.wait_for(function()
      local st = status(addr)
      return st and st.pipeline.migrating and next(st.pipeline.migrating)
    end, 10), "the migration was not under way: " .. d:stderr() .. E.read(dir .. "/pipeline.lua"))
    d:kill("TERM")
    assert.are.equal(0, d:wait(30), d:stderr())
    E.append(dir .. "/in.jsonl", jsonl(second))
    os.remove(dir .. "/state/mig/admin.addr")      -- (the next run listens on another port)
    local d2, addr2 = start()                      -- the files on disk: v2, as version 1 of this run
    assert(E.wait_for(function() return count(outputs(d2)) == 2000 end, 60), d2:stderr())
    for i, r in pairs(outputs(d2)) do
      local w = want[i]
      assert.are.same({ k = w.k, sum = w.sum, n = w.n }, { k = r.k, sum = r.sum, n = r.n }, "record " .. i)
    end
    check_state(addr2, acc)
    d2:kill("TERM")
    assert.are.equal(0, d2:wait(20), d2:stderr())
  end)
end)
