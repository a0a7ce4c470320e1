-- lua/eddy/runtime/joins.lua in a keyed task without a daemon: the interval
-- join's bounds (before/after, both inclusive), when unmatched records of a
-- left or outer join come out and that their state goes; the temporal
-- join's versions (the latest at or before a record's time), deletions, and
-- records that wait for the watermark.  Faked (spec/unit/fake_native.lua):
-- keyed state and event-time timers (lua_api.c, state.c) as Lua tables, the
-- clock and the sinks; the runtime's Lua and the user's script are real.

local H = require("unit.helpers")
local F = require("unit.fake_native")

local function rec(port, key, ts, value, wm)
  return { port = port, key = key, ts = ts, value = value, wm = wm }
end

describe("runtime interval join (fake state and timers)", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(function() H.rmdir(dir) end)

  -- left: source 1, key_by 2; right: source 3, key_by 4; join 5, sink 6
  local function task(opts_text)
    return F.task(dir, [[
local eddy = require("eddy")
local p = eddy.pipeline()
local l = p:source("l", { file = "l", timestamp = "t" }):key_by("k")
local r = p:source("r", { file = "r", timestamp = "t" }):key_by("k")
l:join(r, function(a, b, ctx) return { a = a and a.id, b = b and b.id, ts = ctx.ts } end, ]] .. opts_text .. [[)
 :sink("out", { file = "o", format = "json" })
return p
]], { stage = { 5, 6 }, roots = { 2, 4 }, sinks = { [6] = 0 } })
  end
  local function L(ts, id, wm) return rec(2, "x", ts, { k = "x", t = ts, id = id }, wm) end
  local function R(ts, id, wm) return rec(4, "x", ts, { k = "x", t = ts, id = id }, wm) end

  it("matches tl - before <= tr <= tl + after, bounds included, whichever side comes first", function()
    local t = task('{ before = "2s", after = "3s" }')
    t:records({ L(10000, "l1"), R(7999, "r-early"), R(8000, "r-first"), R(13000, "r-last"), R(13001, "r-late") })
    assert.same({ { a = "l1", b = "r-first", ts = 10000 }, { a = "l1", b = "r-last", ts = 13000 } }, t.out)
    t:records({ L(15000, "l2") })        -- 13000 and 13001 are within [13000, 18000]
    assert.same({ { a = "l2", b = "r-last", ts = 15000 }, { a = "l2", b = "r-late", ts = 15000 } },
      { t.out[3], t.out[4] })
    assert.equal(4, #t.out)
  end)

  it("an inner join emits nothing for unmatched records and frees them once the watermark passed their wait", function()
    local t = task('{ within = "1s" }')
    t:records({ L(1000, "l1"), R(5000, "r1") })
    t:watermark(6000)
    assert.same({}, t.out)
    assert.is_nil(next(t.state))         -- nothing waits any more: the key has no state
  end)

  it("a left join emits an unmatched left record with nil once the watermark passed tl + after", function()
    local t = task('{ before = "1s", after = "2s", type = "left" }')
    t:records({ L(1000, "lonely"), L(5000, "paired"), R(5500, "r1") })
    assert.same({ { a = "paired", b = "r1", ts = 5500 } }, t.out)
    t:watermark(2999)
    assert.equal(1, #t.out)
    t:watermark(3000)
    assert.same({ a = "lonely", ts = 1000 }, t.out[2])
    t:finish()
    assert.equal(2, #t.out)              -- the paired one and the right record are not emitted again
    assert.is_nil(next(t.state))
  end)

  it("an outer join emits unmatched records of both sides", function()
    local t = task('{ within = "1s", type = "outer" }')
    t:records({ L(1000, "l1"), R(9000, "r1") })
    t:finish()
    assert.same({ { a = "l1", ts = 1000 }, { b = "r1", ts = 9000 } }, t.out)
  end)

  it("needs event time", function()
    local t = task('{ within = "1s" }')
    assert.has_error(function() t:records({ rec(2, "x", nil, { k = "x" }) }) end,
      "operator join (uid join-5, pipeline.lua:5) failed on input ? (byte 0): "
      .. "a join of two streams needs event time: set the timestamp option of the sources")
  end)
end)

describe("runtime temporal join (fake state and timers)", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(function() H.rmdir(dir) end)

  -- rates: source 1, key_by 2 (the table); orders: source 3, key_by 4; join 5, sink 6
  local function task(jtype)
    return F.task(dir, [[
local eddy = require("eddy")
local p = eddy.pipeline()
local rates = p:source("rates", { file = "r", timestamp = "t" }):key_by("cur"):to_table()
p:source("orders", { file = "o", timestamp = "t" }):key_by("cur")
 :join(rates, function(o, r, ctx) return { id = o.id, rate = r and r.rate, ts = ctx.ts } end,
       { as_of = "event_time", retention = "10s", type = "]] .. jtype .. [[" })
 :sink("out", { file = "o", format = "json" })
return p
]], { stage = { 5, 6 }, roots = { 2, 4 }, sinks = { [6] = 0 } })
  end
  local function rate(ts, r) return rec(2, "EUR", ts, r and { cur = "EUR", t = ts, rate = r } or nil) end
  local function order(ts, id) return rec(4, "EUR", ts, { cur = "EUR", t = ts, id = id }) end

  it("joins each record with the version valid at its time, once the watermark passed it", function()
    local t = task("inner")
    t:records({ order(3000, "o1"), rate(5000, 1.2), rate(1000, 1.1), order(6000, "o2"), order(500, "o0") })
    assert.same({}, t.out)               -- everything waits for the watermark
    t:watermark(3000)
    assert.same({ { id = "o1", rate = 1.1, ts = 3000 } }, t.out)
    t:watermark(7000)                    -- o0 came before any version: an inner join drops it
    assert.same({ id = "o2", rate = 1.2, ts = 6000 }, t.out[2])
    assert.equal(2, #t.out)
  end)

  it("a left join gives nil before the first version and after a deletion", function()
    local t = task("left")
    t:records({ rate(1000, 1.1), rate(4000, nil), order(500, "o0"), order(2000, "o1"), order(4000, "o2") })
    t:finish()
    assert.same({ { id = "o0", ts = 500 }, { id = "o1", rate = 1.1, ts = 2000 }, { id = "o2", ts = 4000 } }, t.out)
  end)

  it("keeps the version still valid at the watermark minus retention, and drops older ones", function()
    local t = task("inner")
    t:records({ rate(1000, 1.1), rate(2000, 1.2), rate(3000, 1.3) })
    t:watermark(14000)                   -- cutoff 4000: 3000 is still valid then, 1000 and 2000 go
    local versions
    for k, v in pairs(t.state) do if k:find("\1m\1V$") then versions = v end end
    local left = {}
    for _, v in pairs(versions) do left[#left + 1] = v.ts end
    assert.same({ 3000 }, left)
    t:records({ order(14500, "o1") })
    t:watermark(15000)
    assert.same({ { id = "o1", rate = 1.3, ts = 14500 } }, t.out)
  end)
end)
