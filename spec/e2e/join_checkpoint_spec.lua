-- Joins under exactly_once, with real crashes (the joins issue's "an
-- exactly_once SIGKILL golden run" and "tables are checkpointed").
--
-- 1. A file → file exactly_once job with two joins over generated input
--    (a fixed seed): 3 files of orders, 2 of payments and 1 of customers.
--      orders ⋈ customers: a temporal join (as_of = "event_time") of each
--        order with its customer's row (p:table from the customers file,
--        keyed by id) as it was at the order's event time; customers change
--        tier over time, and some orders name no customer (left: nil).
--      orders ⋈ payments: an outer join of two keyed streams within 1 min.
--    Why the temporal join and not the plain stream-table join: a plain join
--    joins the row current when the order is *processed*, and with bounded
--    files read at once nothing makes the customers file be read before the
--    orders (join_spec gets that order by appending the orders to a followed
--    file once /state shows the table; a job killed and restarted 20 times
--    cannot): its output would depend on how the sources interleave.  The
--    temporal join holds each order until the watermark (the minimum over
--    both inputs) has passed its time and takes the version valid then, so
--    its output is a multiset fixed by the input.  The interval join is too:
--    within each file timestamps never go back by more than the watermark's
--    bound, so no record comes after the watermark passed the last time it
--    could match, and the unmatched ones are emitted exactly once each.
--    A run without crashes gives the expected rows of each sink; a run killed
--    at random moments (SIGKILL, at least 15 times) and made to kill itself
--    at each fault-injection point (EDDY_CRASH_AT), restarted each time, and
--    run to its end must commit the same rows, row for row, and leave no
--    hidden part file.  The join state carried by each checkpoint (versions
--    and waiting orders of the temporal join; both sides' buffers, matched
--    flags and timers of the interval join) is what makes that hold.
--    Size: ~60K records (JOIN_CP_ORDERS sets the orders a file), enough that
--    the crashes come before the job could finish.  Batches and channels are
--    small so that checkpoints come every few hundred records (see setup()).
-- 2. Tables are checkpointed: a plain stream-table join (p:table from a
--    followed customers file, orders from a followed file) is SIGKILLed once
--    a checkpoint holds the loaded table; the restart restores it, /state
--    shows the row at once, and a new order joins it.  Before the restart the
--    customers file is rewritten in place with other bytes of the same length:
--    a restart that read the table again instead of restoring it shows them.

local E = require("support.eddy")
local cjson = require("cjson")

local KILLS = 15                                 -- random SIGKILLs, at least
local CRASH_POINTS = { [3] = "prepared:1", [6] = "manifest:1", [10] = "committed:1", [14] = "post_commit:1" }

local T0 = 1700000000000                         -- event times in ms
local ORDER_FILES, PAYMENT_FILES = 3, 2
local ORDERS_PER_FILE = tonumber(os.getenv("JOIN_CP_ORDERS")) or 10000
local CUSTOMERS = 400
local SINKS = { "enriched", "paid" }
local C = require("support.crash")
local rng, last_committed, restored, tail = C.rng, C.last_committed, C.restored, C.tail
local function hidden(dir) return C.hidden(dir, SINKS) end
local function differences(expected, got) return C.differences(expected, got, SINKS) end

local PIPELINE = [[
local eddy = require("eddy")
local p = eddy.pipeline()
local customers = p:table("customers", { file = "customers.jsonl", key = "id", timestamp = "ts",
                                         watermark = eddy.watermark.bounded("10s") })
local orders = p:source("orders", { file = "orders/*.jsonl", timestamp = "ts",
                                    watermark = eddy.watermark.bounded("10s") })
local payments = p:source("payments", { file = "payments/*.jsonl", timestamp = "ts",
                                        watermark = eddy.watermark.bounded("10s") })

orders:key_by("customer")
 :join(customers, function(o, c, ctx)
   return { order = o.id, customer = ctx.key, amount = o.amount, ts = ctx.ts,
            tier = c and c.tier or "-", since = c and c.ts or 0 }
 end, { as_of = "event_time", retention = "10m", type = "left" })
 :uid("orders-customers")
 :sink("enriched", { file = "out/enriched", format = "json" })

orders:key_by("id")
 :join(payments:key_by("order"), function(o, pm, ctx)
   return { order = ctx.key, ts = ctx.ts, amount = o and o.amount or -1,
            payment = pm and pm.id or "-", paid = pm and pm.amount or -1 }
 end, { within = "1m", type = "outer" })
 :uid("orders-payments")
 :sink("paid", { file = "out/paid", format = "json" })

return p
]]

-- ---- input ------------------------------------------------------------------

local TIERS = { "bronze", "silver", "gold", "platinum" }

-- inputs(): { [filename] = content } and counts, the same on every run.
--   customers.jsonl: every customer's first row an hour before the orders,
--     then tier changes spread over the orders' time span, in time order
--   orders/pN.jsonl: orders in time order (0-800 ms apart), for customers
--     c0 .. c(CUSTOMERS+19): the last 20 have no row
--   payments/pN.jsonl: for most orders one payment, for some two, 30 s
--     before to 90 s after the order (past 60 s: outside the join's bound),
--     and some for orders that do not exist; each file in time order
local INPUT
local function inputs()
  if INPUT then return INPUT end
  local rnd = rng(20250101)
  local files, n = {}, { orders = 0, payments = 0, customers = 0 }
  local pays = {}
  for f = 1, PAYMENT_FILES do pays[f] = {} end
  local span = 0
  for f = 0, ORDER_FILES - 1 do
    local out = {}
    local ts = T0 + rnd(1000)
    for i = 1, ORDERS_PER_FILE do
      ts = ts + rnd(800)
      local id = string.format("o%d-%05d", f, i)
      out[#out + 1] = string.format('{"id":"%s","customer":"c%d","amount":%d,"ts":%d}',
        id, rnd(CUSTOMERS + 20), 1 + rnd(500), ts)
      local k = rnd(100)
      local np = k < 8 and 0 or k < 90 and 1 or 2
      if rnd(200) == 0 then id = "ghost-" .. id; np = 1 end         -- a payment without its order
      for j = 1, np do
        local pf = pays[1 + rnd(PAYMENT_FILES)]
        pf[#pf + 1] = { ts = ts - 30000 + rnd(120001), id = id, j = j }
      end
    end
    span = math.max(span, ts - T0)
    files[string.format("orders/p%d.jsonl", f)] = table.concat(out, "\n") .. "\n"
    n.orders = n.orders + #out
  end
  for f = 1, PAYMENT_FILES do
    local list = pays[f]
    table.sort(list, function(a, b)
      if a.ts ~= b.ts then return a.ts < b.ts end
      if a.id ~= b.id then return a.id < b.id end
      return a.j < b.j
    end)
    local out = {}
    for i, pm in ipairs(list) do
      out[i] = string.format('{"id":"pay%d-%d","order":"%s","amount":%d,"ts":%d}', f, i, pm.id,
        1 + rnd(500), pm.ts)
    end
    files[string.format("payments/p%d.jsonl", f)] = table.concat(out, "\n") .. "\n"
    n.payments = n.payments + #out
  end
  local out = {}
  for c = 0, CUSTOMERS - 1 do
    out[#out + 1] = string.format('{"id":"c%d","tier":"%s","ts":%d}', c, TIERS[1 + rnd(4)], T0 - 3600000)
  end
  local changes = {}
  for _ = 1, CUSTOMERS * 2 do changes[#changes + 1] = { ts = T0 + rnd(span), c = rnd(CUSTOMERS) } end
  table.sort(changes, function(a, b) return a.ts < b.ts or (a.ts == b.ts and a.c < b.c) end)
  for _, ch in ipairs(changes) do
    out[#out + 1] = string.format('{"id":"c%d","tier":"%s","ts":%d}', ch.c, TIERS[1 + rnd(4)], ch.ts)
  end
  files["customers.jsonl"] = table.concat(out, "\n") .. "\n"
  n.customers = #out
  INPUT = { files = files, n = n }
  return INPUT
end

-- ---- a job ------------------------------------------------------------------

local function setup(dir)
  for name, content in pairs(inputs().files) do E.write(dir .. "/" .. name, content) end
  E.write(dir .. "/pipeline.lua", PIPELINE)
  -- small batches and channels: a barrier waits behind what the channels
  -- hold, and with the default (8 batches of 1024) they hold the whole
  -- input, so the first checkpoint would come only once the joins had
  -- worked through nearly all of it
  return E.write_config(dir, { name = "jc", threads = 2, parallelism = 2, guarantee = "exactly_once",
                               checkpoint = { interval = "200ms", retain = 2 },
                               tuning = { batch = 64, channel = 2 } }), dir .. "/state/jc"
end

-- committed(dir): { [sink] = { rows = { [canonical row] = times }, n } } of
-- the visible part files
local function committed(dir)
  local out = {}
  for _, s in ipairs(SINKS) do
    local rows, n = {}, 0
    for _, path in ipairs(E.part_files(dir .. "/out/" .. s)) do
      for l in io.lines(path) do
        if l ~= "" then
          local ok, v = pcall(cjson.decode, l)
          local r = ok and E.canon(v) or ("not JSON: " .. l)
          rows[r] = (rows[r] or 0) + 1
          n = n + 1
        end
      end
    end
    out[s] = { rows = rows, n = n }
  end
  return out
end

-- ---- specs ------------------------------------------------------------------

describe("joins under exactly_once (file to file)", function()
  after_each(E.cleanup)

  it("a temporal join and an interval join killed at random moments and at each crash point "
      .. "commit the same rows as a run without crashes", function()
    local input = inputs()

    -- the reference: a run without crashes
    local rdir = E.tmpdir()
    local rconf = setup(rdir)
    local t = E.now()
    local r = E.run({ "run", rconf }, { timeout = 240 })
    local ref_secs = E.now() - t
    assert(r.code == 0, "the reference run (no crashes) exited " .. tostring(r.code) .. ":\n" .. tail(r.stderr))
    local ref = committed(rdir)
    local h = hidden(rdir)
    assert(#h == 0, "the reference run left hidden part files: " .. table.concat(h, " "))
    -- every order is enriched once (a left join); the outer join has every
    -- order and every payment at least once
    assert(ref.enriched.n == input.n.orders, string.format("the reference run enriched %d orders of %d",
      ref.enriched.n, input.n.orders))
    assert(ref.paid.n >= input.n.payments, string.format("the reference run's outer join has %d rows for %d payments",
      ref.paid.n, input.n.payments))
    local tiers, misses = 0, 0
    for row, c in pairs(ref.enriched.rows) do
      if row:match('"tier":"%-"') then misses = misses + c else tiers = tiers + c end
    end
    assert(tiers > 0 and misses > 0, "expected both joined and unjoined orders: " .. tiers .. " / " .. misses)
    if os.getenv("JOIN_CP_VERBOSE") then
      print(string.format("\nreference: %.1f s, %d orders, %d payments, %d customer rows -> %d enriched, %d paid",
        ref_secs, input.n.orders, input.n.payments, input.n.customers, ref.enriched.n, ref.paid.n))
    end

    -- the same job, crashed again and again
    local dir = E.tmpdir()
    local conf, state_dir = setup(dir)
    local rnd = rng(4242)
    local runs, kills, points_done, n_points = {}, 0, 0, 0
    for _ in pairs(CRASH_POINTS) do n_points = n_points + 1 end

    -- what each run did, for failure messages
    local function story()
      local out = {}
      for _, run in ipairs(runs) do
        out[#out + 1] = string.format("  run %d: after checkpoint %s, %s, exit %s after %.2f s; %s rows committed",
          run.n, tostring(run.after), run.how or "?", tostring(run.code), run.secs or 0, tostring(run.rows))
      end
      return string.format("%d random kills, %d of %d crash points; the run without crashes took %.1f s:\n%s",
        kills, points_done, n_points, ref_secs, table.concat(out, "\n"))
    end
    local function fail(msg, run)
      error(msg .. "\n" .. story() .. (run and ("\nrun " .. run.n .. "'s log:\n" .. tail(run.log)) or ""), 2)
    end
    local function rows_now()
      local c, k = committed(dir), 0
      for _, s in ipairs(SINKS) do k = k + c[s].n end
      return k
    end
    local function check_restore(run)
      if run.after == nil then return end
      local id = restored(run.log)
      if id == nil and run.point == "post_commit:1" and run.log:match("EDDY_CRASH_AT=post_commit:1: killing myself") then
        -- the recovery renames the part files of a checkpoint that committed
        -- just before the last crash (its post-commit step, redone) and logs
        -- "restored checkpoint" after that: this run crashed there
        run.how = run.how .. " (while recovery redid the renames)"
      elseif id == nil then
        fail(string.format("run %d started after checkpoint %d had committed but did not log 'restored checkpoint'",
          run.n, run.after), run)
      elseif id ~= run.after then
        fail(string.format("run %d restored checkpoint %d, but the newest committed one was %d", run.n, id, run.after), run)
      end
    end

    local n = 0
    while kills < KILLS or points_done < n_points do
      n = n + 1
      if n > 100 then fail("100 runs and still not done") end
      local point = CRASH_POINTS[n]
      local run = { n = n, after = last_committed(state_dir), point = point }
      runs[n] = run
      local started = E.now()
      local d = E.start({ "run", conf }, { timeout = 60, env = point and { EDDY_CRASH_AT = point } or nil })
      if point then
        -- it kills itself at the crash point
        run.how = "EDDY_CRASH_AT=" .. point
        run.code = d:wait(30)
        if run.code == nil then d:stop() end
      else
        -- 0.15 to 1.2 s, more of them short (mean 0.5 s)
        -- the span follows the run without crashes: the job must not end
        -- before the kills do, on a fast machine too
        local span = math.min(1.05, math.max(0.25, ref_secs * 1.5 / KILLS))
        local u = rnd(1001) / 1000
        local delay = 0.15 + span * u * u
        run.how = string.format("SIGKILL at %.2f s", delay)
        run.code = d:wait(delay)
        if run.code == nil and run.after ~= nil then
          -- not before it has said which checkpoint it restored
          E.wait_for(function() return restored(d:stderr()) or not d:alive() end, 10)
          run.code = d:code()
        end
        if run.code == nil then
          d:kill("KILL")
          run.code = d:wait(10)
          if run.code == 137 then kills = kills + 1 end
        end
      end
      run.secs = E.now() - started
      run.log = d:stderr()
      run.rows = rows_now()
      check_restore(run)
      if run.code == 0 then
        fail(string.format("the job finished (run %d, %s, exited 0) before the crashes were done: make the input "
          .. "larger", n, run.how), run)
      elseif run.code ~= 137 then
        fail(string.format("run %d (%s) exited %s, not by SIGKILL (137)", n, run.how, tostring(run.code)), run)
      end
      if point then points_done = points_done + 1 end
    end

    -- then to the end without kills
    local final = { n = n + 1, after = last_committed(state_dir), how = "to the end" }
    runs[#runs + 1] = final
    local started = E.now()
    local fr = E.run({ "run", conf }, { timeout = 240 })
    final.secs, final.code, final.log, final.rows = E.now() - started, fr.code, fr.stderr, rows_now()
    if fr.code ~= 0 then fail("the last run (no kills) exited " .. tostring(fr.code), final) end
    check_restore(final)

    local d = differences(ref, committed(dir))
    if d ~= "" then fail("the committed output differs from the run without crashes\n" .. d, final) end
    h = hidden(dir)
    if #h > 0 then fail("hidden part files left after the last run exited 0: " .. table.concat(h, " "), final) end
    local restores = 0
    for _, run in ipairs(runs) do if run.after ~= nil then restores = restores + 1 end end
    if restores < KILLS / 2 then
      fail(string.format("only %d of %d runs restored a committed checkpoint: the crashes did not test much",
        restores, #runs))
    end
    if os.getenv("JOIN_CP_VERBOSE") then print(story()) end
  end)
end)

describe("a stream-table join's table under exactly_once", function()
  after_each(E.cleanup)

  it("is checkpointed: after a SIGKILL the restart shows the table's rows at once, and new orders join them", function()
    local dir = E.tmpdir()
    local CUST = '{"id":"ada","tier":"gold"}\n{"id":"bob","tier":"silver"}\n'
    E.write(dir .. "/customers.jsonl", CUST)
    E.write(dir .. "/orders.jsonl", "")
    E.write(dir .. "/pipeline.lua", [[
local eddy = require("eddy")
local p = eddy.pipeline()
local customers = p:table("customers", { file = "customers.jsonl", key = "id", follow = true })
p:source("orders", { file = "orders.jsonl", follow = true })
 :key_by("customer")
 :join(customers, function(o, c, ctx) return { order = o.id, customer = ctx.key, tier = c.tier } end)
 :uid("orders-customers")
 :sink("out", { file = "out", format = "json" })
return p
]])
    local conf = E.write_config(dir, { name = "tc", threads = 2, parallelism = 2, guarantee = "exactly_once",
                                       checkpoint = { interval = "200ms", retain = 2 },
                                       admin = { listen = "127.0.0.1:0" }, reload = { watch = false } })
    local state_dir = dir .. "/state/tc"

    local function start()
      os.remove(state_dir .. "/admin.addr")
      local d = E.start({ "run", conf }, { timeout = 60 })
      E.wait_for(function() return E.exists(state_dir .. "/admin.addr") or not d:alive() end, 10)
      local addr = d:alive() and E.admin_addr(state_dir, 1)
      assert(addr, "no admin.addr; exit status " .. tostring(d:code()) .. ", log:\n" .. tail(d:stderr()))
      return d, addr
    end
    local function row(addr, key)
      local code, body = E.curl("http://" .. addr .. "/state/orders-customers/" .. key)
      if code ~= 200 then return nil, code, body end
      local ok, v = pcall(cjson.decode, body)
      return ok and type(v) == "table" and v.row or nil, code, body
    end
    local function last_checkpoint(addr)
      local code, body = E.curl("http://" .. addr .. "/status")
      if code ~= 200 then return nil end
      local ok, st = pcall(cjson.decode, body)
      if ok and type(st) == "table" and type(st.last_checkpoint) == "table" then
        return tonumber(st.last_checkpoint.id)
      end
    end
    local function out_rows() return E.sink_json(dir .. "/out") end

    -- run 1: the table loads, an order joins it, a checkpoint commits both
    local d, addr = start()
    assert(E.wait_for(function() return row(addr, "bob") end, 10),
      "the table did not load (GET /state/orders-customers/bob): " .. tail(d:stderr()))
    local c0 = E.wait_for(function() return last_checkpoint(addr) end, 10) or 0
    E.append(dir .. "/orders.jsonl", '{"id":"o1","customer":"ada"}\n')
    local first = E.canon_all({ { order = "o1", customer = "ada", tier = "gold" } })
    assert(E.wait_for(function() return #out_rows() == 1 end, 10),
      "o1's joined row was not committed (visible part file) within 10 s: " .. tail(d:stderr()))
    assert.are.same(first, out_rows())
    local cp = E.wait_for(function()
      local id = last_checkpoint(addr)
      return id and id >= c0 + 2 and id
    end, 10)
    assert(cp, "/status last_checkpoint.id did not pass " .. c0 + 1 .. " after the table loaded")
    assert.are.same({ id = "ada", tier = "gold" }, (row(addr, "ada")))
    d:kill("KILL")
    assert.are.equal(137, d:wait(10))
    local after = last_committed(state_dir)
    assert(after and after >= cp, "no committed checkpoint " .. cp .. " in " .. state_dir .. "/checkpoints")

    -- the same bytes' length, other tiers: a restart that read the table
    -- file again (rather than restoring the checkpoint's rows and position)
    -- would show these
    local f = assert(io.open(dir .. "/customers.jsonl", "r+b"))
    f:write((CUST:gsub('"gold"', '"GOLD"'):gsub('"silver"', '"SILVER"')))
    f:close()

    -- run 2: the rows are there at once, from the checkpoint
    local d2, addr2 = start()
    local got, code, body
    E.wait_for(function()
      got, code, body = row(addr2, "ada")
      return got or (code ~= 404 and code ~= 200 and code ~= nil and code ~= 0 and code ~= 503) or not d2:alive()
    end, 10)
    assert(restored(d2:stderr()) == after, "the restart should log 'restored checkpoint " .. after
      .. "'; its log:\n" .. tail(d2:stderr()))
    assert(got, string.format("after the restart GET /state/orders-customers/ada answers %s %s: the table's row "
      .. "did not survive the crash; log:\n%s", tostring(code), tostring(body), tail(d2:stderr())))
    assert.are.same({ id = "ada", tier = "gold" }, got)
    assert.are.same({ id = "bob", tier = "silver" }, (row(addr2, "bob")))
    -- a new order joins the restored row; one for a customer without a row is dropped
    E.append(dir .. "/orders.jsonl", '{"id":"o2","customer":"bob"}\n{"id":"o3","customer":"cyd"}\n'
      .. '{"id":"o4","customer":"ada"}\n')
    local want = E.canon_all({ { order = "o1", customer = "ada", tier = "gold" },
                               { order = "o2", customer = "bob", tier = "silver" },
                               { order = "o4", customer = "ada", tier = "gold" } })
    E.wait_for(function() return #out_rows() >= 3 end, 10)
    d2:kill("TERM")
    local code2 = d2:wait(15)
    assert(code2 == 0, "SIGTERM: exit " .. tostring(code2) .. "; log:\n" .. tail(d2:stderr()))
    assert.are.same(want, out_rows())
  end)
end)
