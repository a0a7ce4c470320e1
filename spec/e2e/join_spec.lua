-- Stream-table joins: each order joins its customer's row as it is when
-- the order is processed (inner: misses dropped; left: right is nil), a
-- table update changes what later orders see, a Kafka tombstone deletes a
-- row, a keyed stream becomes a table with to_table(), and the table is
-- keyed state (GET /state/UID/KEY).  Goldens are in spec/fixtures/.
local E = require("support.eddy")
local cjson = require("cjson")
local run = E.shell

describe("stream-table join", function()
  local dir
  before_each(function() dir = E.tmpdir() end)
  after_each(function() E.cleanup() end)

  local function write_pipeline(jtype, table_src)
    E.write(dir .. "/pipeline.lua", [[
local eddy = require("eddy")
local p = eddy.pipeline()
local customers = ]] .. table_src .. [[

p:source("orders", { file = "orders.jsonl", follow = true })
 :key_by("customer")
 :join(customers, function(o, c, ctx)
   return string.format("%s %s %s %d", o.id, ctx.key, c and c.tier or "-", o.amount)
 end, { type = "]] .. jtype .. [[" })
 :uid("orders-customers")
 :sink("out", { stdout = true, format = "lines" })
return p
]])
    E.write(dir .. "/eddy.conf.lua", "return { name = 'shop', pipeline = 'pipeline.lua', admin = { listen = '127.0.0.1:0' }, "
      .. "reload = { watch = false }" .. (E.kafka_conf or "") .. " }")
  end

  local function row(addr, key)
    local code, body = E.curl("http://" .. addr .. "/state/orders-customers/" .. key)
    return code == 200 and cjson.decode(body).row or nil, code
  end

  -- runs the orders against the customers: two orders, then bob becomes
  -- platinum, then more orders; returns the sorted output lines
  local function scenario(jtype, table_src)
    E.write(dir .. "/customers.jsonl", '{"id":"ada","tier":"gold"}\n{"id":"bob","tier":"silver"}\n')
    E.write(dir .. "/orders.jsonl", "")
    write_pipeline(jtype, table_src)
    local d = E.start({ "run", dir .. "/eddy.conf.lua" }, { timeout = 60 })
    local addr = E.admin_addr(dir .. "/state/shop")
    assert.truthy(addr, d:stderr())
    assert(E.wait_for(function() return row(addr, "bob") end, 10), "the table did not load: " .. d:stderr())
    E.append(dir .. "/orders.jsonl", '{"id":"o1","customer":"ada","amount":30}\n{"id":"o2","customer":"bob","amount":12}\n'
      .. '{"id":"o3","customer":"cyd","amount":5}\n')
    assert(E.wait_for(function() return #E.lines(d:stdout()) >= (jtype == "left" and 3 or 2) end, 10), d:stderr())
    E.append(dir .. "/customers.jsonl", '{"id":"bob","tier":"platinum"}\n')
    assert(E.wait_for(function() local r = row(addr, "bob"); return r and r.tier == "platinum" end, 10))
    E.append(dir .. "/orders.jsonl", '{"id":"o4","customer":"ada","amount":7}\n{"id":"o5","customer":"bob","amount":99}\n'
      .. '{"id":"o6","customer":"dan","amount":1}\n')
    assert(E.wait_for(function() return #E.lines(d:stdout()) >= (jtype == "left" and 6 or 4) end, 10), d:stderr())
    local _, none = row(addr, "cyd")
    assert.are.equal(404, none)
    d:kill("TERM")
    assert.are.equal(0, d:wait(15), d:stderr())
    local lines = E.lines(d:stdout())
    table.sort(lines)
    return table.concat(lines, "\n") .. "\n"
  end

  local FILE_TABLE = 'p:table("customers", { file = "customers.jsonl", key = "id", follow = true })'

  it("inner: an order joins its customer's current row, and orders without one are dropped", function()
    assert.are.equal(E.read(E.root .. "/spec/fixtures/join-orders-inner.out"), scenario("inner", FILE_TABLE))
  end)

  it("left: an order without a customer row joins nil", function()
    assert.are.equal(E.read(E.root .. "/spec/fixtures/join-orders-left.out"), scenario("left", FILE_TABLE))
  end)

  it("to_table() turns a keyed stream into the table", function()
    assert.are.equal(E.read(E.root .. "/spec/fixtures/join-orders-inner.out"), scenario("inner",
      'p:source("customers", { file = "customers.jsonl", follow = true }):key_by("id"):to_table()'))
  end)

  it("a global table reaches every task: clicks keyed by user join countries by the click's country, "
    .. "and an update is seen by every task at once", function()
    E.write(dir .. "/countries.jsonl", '{"code":"FR","name":"France"}\n{"code":"JP","name":"Japan"}\n')
    E.write(dir .. "/clicks.jsonl", "")
    E.write(dir .. "/pipeline.lua", [[
local eddy = require("eddy")
local p = eddy.pipeline()
local countries = p:global_table("countries", { file = "countries.jsonl", key = "code", follow = true })
p:source("clicks", { file = "clicks.jsonl", follow = true })
 :key_by("user")
 :join(countries, function(c, country, ctx)
   return ctx.key .. " " .. c.page .. " " .. (country and country.name or "?")
 end, { key = "country", type = "left" })
 :sink("out", { stdout = true, format = "lines" })
return p
]])
    E.write(dir .. "/eddy.conf.lua", "return { name = 'geo', pipeline = 'pipeline.lua', parallelism = 4, "
      .. "admin = { listen = '127.0.0.1:0' }, reload = { watch = false } }")
    local d = E.start({ "run", dir .. "/eddy.conf.lua" }, { timeout = 60 })
    local addr = E.admin_addr(dir .. "/state/geo")
    local function name(code)
      local c, body = E.curl("http://" .. addr .. "/state/global-countries/" .. code)
      return c == 200 and cjson.decode(body).row.name or nil
    end
    assert(E.wait_for(function() return name("JP") end, 10), d:stderr())
    E.append(dir .. "/clicks.jsonl", '{"user":"u1","page":"/a","country":"FR"}\n{"user":"u2","page":"/b","country":"JP"}\n'
      .. '{"user":"u3","page":"/c","country":"XX"}\n')
    assert(E.wait_for(function() return #E.lines(d:stdout()) == 3 end, 10), d:stderr())
    E.append(dir .. "/countries.jsonl", '{"code":"FR","name":"République française"}\n')
    assert(E.wait_for(function() return name("FR") == "République française" end, 10))
    E.append(dir .. "/clicks.jsonl", '{"user":"u1","page":"/d","country":"FR"}\n')
    assert(E.wait_for(function() return #E.lines(d:stdout()) == 4 end, 10), d:stderr())
    d:kill("TERM")
    assert.are.equal(0, d:wait(15), d:stderr())
    local lines = E.lines(d:stdout())
    table.sort(lines)
    assert.are.equal(E.read(E.root .. "/spec/fixtures/join-clicks-countries.out"), table.concat(lines, "\n") .. "\n")
  end)

  for _, kind in ipairs({ "table", "global_table" }) do
    it("with bootstrap = true loads the " .. kind .. " to its end before a stream record is joined", function()
      local c, o = {}, {}
      for i = 1, 30000 do c[i] = string.format('{"id":"c%d","city":"city%d"}', i, i) end
      for i = 1, 5000 do o[i] = string.format('{"id":%d,"customer":"c%d"}', i, (i * 7919) % 30000 + 1) end
      E.write(dir .. "/customers.jsonl", table.concat(c, "\n") .. "\n")
      E.write(dir .. "/orders.jsonl", table.concat(o, "\n") .. "\n")
      local join = kind == "table"
        and 'p:source("orders", { file = "orders.jsonl" }):key_by("customer")\n :join(customers, j, { type = "left" })'
        or 'p:source("orders", { file = "orders.jsonl" })\n :join(customers, j, { type = "left", key = "customer" })'
      E.write(dir .. "/pipeline.lua", string.format([[
local eddy = require("eddy")
local p = eddy.pipeline()
local customers = p:%s("customers", { file = "customers.jsonl", key = "id", bootstrap = true })
local function j(o, c) return o.id .. " " .. (c and c.city or "unknown") end
%s
 :sink("out", { file = "out", format = "lines" })
return p
]], kind, join))
      E.write_config(dir, { parallelism = 2, threads = 2 })
      local r = E.run_config(dir, { timeout = 120 })
      assert.are.equal(0, r.code, r.stderr)
      assert.matches("the bootstrap sources were read to their end", r.stderr, 1, true)
      local rows = E.sink_lines(dir .. "/out")
      assert.are.equal(5000, #rows)
      for _, l in ipairs(rows) do assert.is_nil(l:find("unknown", 1, true), l) end
    end)
  end

  it("refuses joins this version does not have, naming the line", function()
    for _, case in ipairs({
      { 'p:source("a", { file = "x" }):key_by("k"):join(p:source("b", { file = "x" }):key_by("k"), function() end)',
        "a join of two streams needs within = d, or before = d and after = d" },
      { 'p:source("a", { file = "x" }):key_by("k"):join(p:table("t", { file = "x", key = "k" }), function() end, { as_of = "event_time" })',
        "a temporal join needs retention = d" },
      { 'p:table("s", { file = "x", key = "k" }):join(p:table("t", { file = "x", key = "k" }), function() end, { type = "left" })',
        "a join of two tables takes no options" },
      { 'p:source("a", { file = "x" }):join(p:global_table("g", { file = "x", key = "k" }), function() end)',
        "a join with a global table needs key =" },
      { 'p:source("a", { file = "x" }):join(p:table("t", { file = "x", key = "k" }), function() end)',
        "join (its stream and its table) needs a keyed stream" },
    }) do
      E.write(dir .. "/x", "")
      E.write(dir .. "/p.lua", 'local eddy = require("eddy")\nlocal p = eddy.pipeline()\n' .. case[1] .. "\nreturn p\n")
      local r = E.run({ "check", dir .. "/p.lua" })
      assert.are.equal(2, r.code, case[1])
      assert.matches(case[2], r.stderr, 1, true)
      assert.matches("p.lua:3", r.stderr, 1, true)
    end
  end)
end)

describe("join of two streams within a time bound", function()
  local dir
  before_each(function() dir = E.tmpdir() end)
  after_each(function() E.cleanup() end)
  local T = 1700000000000

  local function pipeline(jtype, follow)
    E.write(dir .. "/pipeline.lua", string.format([[
local eddy = require("eddy")
local p = eddy.pipeline()
local pay = p:source("payments", { file = "payments.jsonl", timestamp = "ts", watermark = eddy.watermark.bounded("1m"), follow = %s })
 :key_by("order")
p:source("orders", { file = "orders.jsonl", timestamp = "ts", watermark = eddy.watermark.bounded("1m"), follow = %s })
 :key_by("id")
 :join(pay, function(o, pm, ctx) return ctx.key .. " " .. (o and "order" or "-") .. " " .. (pm and pm.amount or "-") end,
       { within = "5m", type = "%s" })
 :uid("orders-payments")
 :sink("out", { stdout = true, format = "lines" })
return p
]], follow, follow, jtype))
  end

  local function input()
    local function rows(list)
      local out = {}
      for _, r in ipairs(list) do out[#out + 1] = string.format(r[1], T + r[2]) end
      return table.concat(out, "\n") .. "\n"
    end
    E.write(dir .. "/orders.jsonl", rows({ { '{"id":"o1","ts":%d}', 0 }, { '{"id":"o2","ts":%d}', 60000 },
      { '{"id":"o3","ts":%d}', 120000 }, { '{"id":"o4","ts":%d}', 600000 } }))
    -- each input in time order: a record behind its own source's watermark
    -- would be late, and whether it still meets its match would depend on
    -- when the watermark reaches the join
    E.write(dir .. "/payments.jsonl", rows({ { '{"order":"o1","ts":%d,"amount":10}', 30000 },
      { '{"order":"o3","ts":%d,"amount":30}', 100000 }, { '{"order":"o3","ts":%d,"amount":31}', 200000 },
      { '{"order":"o2","ts":%d,"amount":20}', 500000 }, { '{"order":"o9","ts":%d,"amount":90}', 610000 } }))
  end

  for _, jtype in ipairs({ "inner", "left", "outer" }) do
    it(jtype .. ": orders and payments within 5 minutes of each other"
        .. (jtype == "inner" and "" or ", unmatched ones emitted once"), function()
      input()
      pipeline(jtype, "false")
      E.write(dir .. "/eddy.conf.lua", "return { name = 'pay', pipeline = 'pipeline.lua', admin = false }")
      local r = E.run({ "run", dir .. "/eddy.conf.lua" })
      assert.are.equal(0, r.code, r.stderr)
      local lines = E.lines(r.stdout)
      table.sort(lines)
      assert.are.equal(E.read(E.root .. "/spec/fixtures/join-orders-payments-" .. jtype .. ".out"),
        table.concat(lines, "\n") .. "\n")
    end)
  end

  it("frees a key's buffered records once the watermark passes the last time they could match", function()
    input()
    pipeline("left", "true")
    E.write(dir .. "/eddy.conf.lua", "return { name = 'pay', pipeline = 'pipeline.lua', admin = { listen = '127.0.0.1:0' } }")
    local d = E.start({ "run", dir .. "/eddy.conf.lua" }, { timeout = 60 })
    local addr = E.admin_addr(dir .. "/state/pay")
    assert(E.wait_for(function() return #E.lines(d:stdout()) >= 3 end, 10), d:stderr())
    -- an hour later on both inputs: everything before is past its bound
    E.append(dir .. "/orders.jsonl", string.format('{"id":"late","ts":%d}\n', T + 3600000))
    E.append(dir .. "/payments.jsonl", string.format('{"order":"late","ts":%d,"amount":1}\n', T + 3600000))
    local keys = E.wait_for(function()
      local code, body = E.curl("http://" .. addr .. "/state/orders-payments?limit=100")
      if code ~= 200 then return nil end
      local ks = {}
      for _, e in ipairs(cjson.decode(body)) do ks[#ks + 1] = e.key end
      return #ks == 1 and ks
    end, 10, 0.2)
    assert.are.same({ "late" }, keys)
    d:kill("TERM")
    assert.are.equal(0, d:wait(15), d:stderr())
  end)
end)

describe("table-table join", function()
  local dir
  before_each(function() dir = E.tmpdir() end)
  after_each(function() E.cleanup() end)

  it("emits the joined row on an update of either side, and retracts it (nil value) on a delete", function()
    E.write(dir .. "/users.jsonl", '{"id":"ada","name":"Ada"}\n{"id":"bob","name":"Bob"}\n')
    E.write(dir .. "/tiers.jsonl", "")
    E.write(dir .. "/pipeline.lua", [[
local eddy = require("eddy")
local cjson = require("cjson")
local p = eddy.pipeline()
local users = p:source("users", { file = "users.jsonl", follow = true }):key_by("id")
 :map(function(v) if v.deleted then return cjson.null end return v end):to_table()
local tiers = p:table("tiers", { file = "tiers.jsonl", key = "id", follow = true })
users:join(tiers, function(u, t) return { name = u.name, tier = t.tier } end)
 :uid("user-tiers")
 :map(function(v, ctx)
   if v == cjson.null then return ctx.key .. " retracted" end
   return ctx.key .. " " .. v.name .. " " .. v.tier
 end)
 :sink("out", { stdout = true, format = "lines" })
return p
]])
    E.write(dir .. "/eddy.conf.lua", "return { name = 'tt', pipeline = 'pipeline.lua', parallelism = 1, "
      .. "admin = { listen = '127.0.0.1:0' }, reload = { watch = false } }")
    local d = E.start({ "run", dir .. "/eddy.conf.lua" }, { timeout = 60 })
    local function lines(n)
      assert(E.wait_for(function() return #E.lines(d:stdout()) >= n end, 10), d:stdout() .. d:stderr())
      E.sleep(0.2)
      return #E.lines(d:stdout())
    end
    E.sleep(0.5)
    E.append(dir .. "/tiers.jsonl", '{"id":"ada","tier":"gold"}\n{"id":"bob","tier":"silver"}\n{"id":"cyd","tier":"bronze"}\n')
    lines(2)
    E.append(dir .. "/tiers.jsonl", '{"id":"ada","tier":"platinum"}\n')
    lines(3)
    E.append(dir .. "/users.jsonl", '{"id":"bob","deleted":true}\n')
    lines(4)
    E.append(dir .. "/users.jsonl", '{"id":"bob","name":"Bob"}\n')
    assert.are.equal(5, lines(5))
    d:kill("TERM")
    assert.are.equal(0, d:wait(15), d:stderr())
    local got = E.lines(d:stdout())
    table.sort(got, function(a, b) return a < b end)
    local want = E.lines(E.read(E.root .. "/spec/fixtures/join-tables.out"))
    table.sort(want)
    assert.are.same(want, got)
    -- the order of changes of one key is kept
    local bob = {}
    for _, l in ipairs(E.lines(d:stdout())) do if l:match("^bob") then bob[#bob + 1] = l end end
    assert.are.same({ "bob Bob silver", "bob retracted", "bob Bob silver" }, bob)
  end)
end)

describe("temporal join", function()
  local dir
  before_each(function() dir = E.tmpdir() end)
  after_each(function() E.cleanup() end)
  local T = 1700000000000

  it("joins each order with its customer's city as it was at the order's event time, "
      .. "whatever the threads and interleaving", function()
    local function rows(list)
      local out = {}
      for _, r in ipairs(list) do out[#out + 1] = string.format(r[1], T + r[2]) end
      return table.concat(out, "\n") .. "\n"
    end
    E.write(dir .. "/customers.jsonl", rows({ { '{"id":"c1","city":"Paris","ts":%d}', 0 },
      { '{"id":"c2","city":"Rome","ts":%d}', 5000 }, { '{"id":"c1","city":"Lyon","ts":%d}', 100000 },
      { '{"id":"c1","city":"Nice","ts":%d}', 400000 } }))
    E.write(dir .. "/orders.jsonl", rows({ { '{"id":"o0","customer":"c1","ts":%d}', -10000 },
      { '{"id":"o1","customer":"c1","ts":%d}', 50000 }, { '{"id":"o2","customer":"c2","ts":%d}', 60000 },
      { '{"id":"o3","customer":"c1","ts":%d}', 150000 }, { '{"id":"o4","customer":"c1","ts":%d}', 399999 },
      { '{"id":"o5","customer":"c1","ts":%d}', 400000 } }))
    E.write(dir .. "/pipeline.lua", [[
local eddy = require("eddy")
local p = eddy.pipeline()
local customers = p:source("customers", { file = "customers.jsonl", timestamp = "ts" }):key_by("id"):to_table()
p:source("orders", { file = "orders.jsonl", timestamp = "ts" })
 :key_by("customer")
 :join(customers, function(o, c) return o.id .. " " .. (c and c.city or "-") end,
       { as_of = "event_time", retention = "1h", type = "left" })
 :sink("out", { stdout = true, format = "lines" })
return p
]])
    for _, shape in ipairs({ "threads = 1, parallelism = 1, tuning = { batch = 1 }", "threads = 2, parallelism = 4" }) do
      E.write(dir .. "/eddy.conf.lua", "return { name = 'asof', pipeline = 'pipeline.lua', admin = false, " .. shape .. " }")
      E.sh("rm -rf " .. E.quote(dir .. "/state"))
      local r = E.run({ "run", dir .. "/eddy.conf.lua" })
      assert.are.equal(0, r.code, r.stderr)
      local lines = E.lines(r.stdout)
      table.sort(lines)
      assert.are.equal(E.read(E.root .. "/spec/fixtures/join-orders-asof-left.out"), table.concat(lines, "\n") .. "\n", shape)
    end
  end)
end)

describe("stream-table join on a Kafka table", function()
  local dir, boot
  before_each(function()
    dir = E.tmpdir()
    assert(os.execute(string.format("(timeout -k 2 90 %s kafka-mock --topic customers:2 > %s/mock.out 2>&1 &)", E.bin, dir)))
    boot = E.poll(10, function()
      local out = E.read(dir .. "/mock.out")
      return out and out:match("^(127%.0%.0%.1:%d+)\n")
    end)
    assert.truthy(boot)
  end)
  after_each(function()
    run("pkill -TERM -f '^" .. E.bin .. " kafka-mock --topic customers:2'")
    E.cleanup()
  end)

  it("keys the table by the message key, and a tombstone deletes the row", function()
    E.write(dir .. "/orders.jsonl", "")
    E.write(dir .. "/pipeline.lua", [[
local eddy = require("eddy")
local p = eddy.pipeline()
local customers = p:table("customers", { kafka = "customers", format = "json" })
p:source("orders", { file = "orders.jsonl", follow = true })
 :key_by("customer")
 :join(customers, function(o, c) return o.id .. " " .. (c and c.tier or "-") end, { type = "left" })
 :uid("orders-customers")
 :sink("out", { stdout = true, format = "lines" })
return p
]])
    E.write(dir .. "/eddy.conf.lua", "return { name = 'kshop', pipeline = 'pipeline.lua', admin = { listen = '127.0.0.1:0' }, "
      .. "kafka = { ['bootstrap.servers'] = '" .. boot .. "', ['session.timeout.ms'] = '6000' } }")
    assert.are.equal(0, run("printf 'ada\\t{\"tier\":\"gold\"}\\nbob\\t{\"tier\":\"silver\"}\\n' | timeout 20 kcat -P -b "
      .. boot .. " -t customers -K '\t'"))
    local d = E.start({ "run", dir .. "/eddy.conf.lua" }, { timeout = 60 })
    local addr = E.admin_addr(dir .. "/state/kshop")
    local function row(key)
      local code, body = E.curl("http://" .. addr .. "/state/orders-customers/" .. key)
      return code == 200 and cjson.decode(body).row or nil
    end
    assert(E.wait_for(function() return row("bob") end, 20, 0.1), "the table did not load: " .. d:stderr())
    -- kcat -Z sends an empty value as NULL: a tombstone
    assert.are.equal(0, run("printf 'bob\\t\\n' | timeout 20 kcat -P -Z -b " .. boot .. " -t customers -K '\t'"))
    assert(E.wait_for(function() return row("bob") == nil end, 20, 0.1), "the tombstone did not delete bob's row")
    E.append(dir .. "/orders.jsonl", '{"id":"o1","customer":"ada"}\n{"id":"o2","customer":"bob"}\n')
    assert(E.wait_for(function() return #E.lines(d:stdout()) == 2 end, 10), d:stderr())
    local lines = E.lines(d:stdout())
    table.sort(lines)
    assert.are.same({ "o1 gold", "o2 -" }, lines)
    d:kill("TERM")
    assert.are.equal(0, d:wait(15), d:stderr())
  end)
end)
