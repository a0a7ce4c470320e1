-- lua/eddy/runtime/windows.lua and triggers.lua in a keyed task without a
-- daemon: which windows fire when the watermark moves, with what ctx.window,
-- late firings within the lateness, records past it (dropped, or to the late
-- side output), count, custom and processing-time triggers.  Faked
-- (spec/unit/fake_native.lua): the C window store (a Lua model of
-- core/window.c's documented behaviour), keyed state, the clock and the
-- sinks; the runtime's Lua and the user's script are real.

local H = require("unit.helpers")
local F = require("unit.fake_native")

-- source 1, key_by 2, window 3, map 4 (the firing as a table), sink 5
local function script(window_line)
  return [[
local eddy = require("eddy")
local p = eddy.pipeline()
p:source("in", { file = "x", timestamp = "t" })
 :key_by("k")
 ]] .. window_line .. [[

 :map(function(v, ctx)
   local w = ctx.window
   return { key = ctx.key, v = v, start = w.start and tonumber(w.start), ["end"] = w["end"] and tonumber(w["end"]),
            firing = w.firing, ts = ctx.ts }
 end)
 :sink("out", { file = "o", format = "json" })
return p
]]
end

local function rec(key, ts, value, wm) return { key = key, ts = ts, value = value or { k = key, t = ts }, wm = wm } end

describe("runtime windows (fake window store)", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(function() H.rmdir(dir) end)

  local function task(window_line, extra)
    local opts = { stage = { 3, 4, 5 }, roots = { 2 }, sinks = { [5] = 0 } }
    for k, v in pairs(extra or {}) do opts[k] = v end
    return F.task(dir, script(window_line), opts)
  end

  it("fires tumbling windows once the watermark reaches end - 1, by end then key", function()
    local t = task(':window(eddy.window.tumbling("10s")):count()')
    t:records({ rec("b", 1000), rec("a", 5000), rec("a", 9999), rec("a", 12000) })
    t:watermark(9998)
    assert.same({}, t.out)
    t:watermark(9999)
    assert.same({
      { key = "a", v = 2, start = 0, ["end"] = 10000, firing = "on_time", ts = 9999 },
      { key = "b", v = 1, start = 0, ["end"] = 10000, firing = "on_time", ts = 9999 },
    }, t.out)
    t:finish()
    assert.equal(3, #t.out)
    assert.same({ key = "a", v = 1, start = 10000, ["end"] = 20000, firing = "on_time", ts = 19999 }, t.out[3])
  end)

  it("fires what a record's watermark completes before the record itself", function()
    local t = task(':window(eddy.window.tumbling("10s")):count()')
    t:records({ rec("a", 1000), rec("a", 12000, nil, 10500), rec("a", 13000, nil, 10500) })
    assert.equal(1, #t.out)
    assert.equal(1, t.out[1].v)          -- the record at 12000 came after the firing
    t:finish()
    assert.equal(2, t.out[2].v)
  end)

  it("a hopping window's record is in every window that holds it", function()
    local t = task(':window(eddy.window.hopping("10s", "5s")):sum("v")')
    t:records({ rec("a", 7000, { k = "a", t = 7000, v = 3 }), rec("a", 11000, { k = "a", t = 11000, v = 4 }) })
    t:watermark(9999)
    assert.same({ { key = "a", v = 3, start = 0, ["end"] = 10000, firing = "on_time", ts = 9999 } }, t.out)
    t:watermark(14999)
    assert.same({ key = "a", v = 7, start = 5000, ["end"] = 15000, firing = "on_time", ts = 14999 }, t.out[2])
    t:finish()
    assert.same({ key = "a", v = 4, start = 10000, ["end"] = 20000, firing = "on_time", ts = 19999 }, t.out[3])
  end)

  it("fires late for a record within the lateness, and drops one past it", function()
    local t = task(':window(eddy.window.tumbling("10s"), { lateness = "5s" }):count()')
    t:records({ rec("a", 1000), rec("a", 2000) })
    t:watermark(9999)
    assert.same({ key = "a", v = 2, start = 0, ["end"] = 10000, firing = "on_time", ts = 9999 }, t.out[1])
    t:records({ rec("a", 3000) })
    assert.same({ key = "a", v = 3, start = 0, ["end"] = 10000, firing = "late", ts = 9999 }, t.out[2])
    t:watermark(14999)                   -- end - 1 + lateness: the window is gone
    t:records({ rec("a", 4000) })
    assert.equal(2, #t.out)
    assert.equal(1, t.stores["window-3"].dropped)
    t:finish()
    assert.equal(2, #t.out)
  end)

  it("a Lua window function fires late too, one window at a time", function()
    local t = task(':window(eddy.window.tumbling("10s"), { lateness = "5s" }):apply(function(vs) return #vs end)')
    t:records({ rec("a", 1000) })
    t:watermark(9999)
    t:records({ rec("a", 2000) })
    assert.same({ { key = "a", v = 1, start = 0, ["end"] = 10000, firing = "on_time", ts = 9999 },
                  { key = "a", v = 2, start = 0, ["end"] = 10000, firing = "late", ts = 9999 } }, t.out)
  end)

  it("a sliding window ends at each record and holds the records within size before it", function()
    local t = task(':window(eddy.window.sliding("10s")):count()')
    t:records({ rec("a", 1000), rec("a", 5000), rec("a", 12000), rec("b", 12000) })
    t:finish()
    local got = {}
    for i, o in ipairs(t.out) do got[i] = { o.key, o.v, o.start, o["end"] } end
    assert.same({ { "a", 1, -9000, 1001 }, { "a", 2, -5000, 5001 }, { "a", 2, 2000, 12001 }, { "b", 1, 2000, 12001 } }, got)
  end)

  it("sends records past the lateness to the late side output", function()
    local t = F.task(dir, [[
local eddy = require("eddy")
local p = eddy.pipeline()
p:source("in", { file = "x", timestamp = "t" })
 :key_by("k")
 :window(eddy.window.tumbling("10s"), { late = "late" }):count()
 :sink("out", { file = "o", format = "json" })
p:side("late"):sink("late_out", { file = "l", format = "json" })
return p
]], { stage = { 3, 4, 5, 6 }, roots = { 2 }, sinks = { [4] = 0, [6] = 1 } })
    t:records({ rec("a", 1000), rec("a", 12000, nil, 9999), rec("a", 2000, nil, 9999) })
    assert.same({ 1, { k = "a", t = 2000 } }, t.out)
    assert.same({ 0, 1 }, t.out_sink)
    assert.equal(0, t.stores["window-3"].dropped)
  end)

  it("a count trigger fires every n records of a window, early, and what changed at the end of input", function()
    local t = task(':window(eddy.window.tumbling("10s"), { trigger = eddy.trigger.count(2) }):count()')
    t:records({ rec("a", 1000), rec("a", 2000), rec("a", 3000), rec("b", 3000) })
    assert.same({ { key = "a", v = 2, start = 0, ["end"] = 10000, firing = "early", ts = 9999 } }, t.out)
    t:finish()
    assert.same({ "a", 3, "on_time" }, { t.out[2].key, t.out[2].v, t.out[2].firing })
    assert.same({ "b", 1, "on_time" }, { t.out[3].key, t.out[3].v, t.out[3].firing })
    assert.equal(3, #t.out)
  end)

  it("under a count trigger the watermark only frees windows, it fires none", function()
    local t = task(':window(eddy.window.tumbling("10s"), { trigger = eddy.trigger.count(2) }):count()')
    t:records({ rec("a", 1000), rec("a", 2000), rec("a", 3000) })
    t:watermark(9999)
    t:finish()
    assert.equal(1, #t.out)
    assert.is_nil(next(t.stores["window-3"].wins))
  end)

  it("a custom trigger's answers fire, purge, or wait, with ctx.window set in its callbacks", function()
    local t = task([[:window(eddy.window.tumbling("10s"), { trigger = {
      on_element = function(v, ctx)
        seen = seen or {}
        seen[#seen + 1] = tostring(ctx.window.start) .. "-" .. tostring(ctx.window["end"]) .. "/" .. ctx.window.count
        if v.v >= 100 then return "fire_and_purge" end
        return "continue"
      end,
      on_event_time = function(ts, ctx) return ts == 9999 and "fire" or "purge" end } }):sum("v")]])
    t:records({ rec("a", 1000, { k = "a", t = 1000, v = 1 }), rec("a", 2000, { k = "a", t = 2000, v = 150 }),
                rec("a", 3000, { k = "a", t = 3000, v = 5 }) })
    assert.same({ { key = "a", v = 151, start = 0, ["end"] = 10000, firing = "early", ts = 9999 } }, t.out)
    t:watermark(9999)
    assert.same({ key = "a", v = 5, start = 0, ["end"] = 10000, firing = "on_time", ts = 9999 }, t.out[2])
    t:finish()
    assert.equal(2, #t.out)
  end)

  it("refuses a custom trigger's answer that is not an action, through the error policy", function()
    local t = task(':window(eddy.window.tumbling("10s"), { trigger = { on_element = function() return "explode" end } }):count()',
      { on_error = "skip" })
    t:records({ rec("a", 1000) })
    assert.equal(0, #t.out)
    assert.equal(1, tonumber(t.io.skipped))
    assert.truthy(t.logged[1].msg:find("window trigger returned explode (continue, fire, fire_and_purge or purge)", 1, true))
  end)

  it("a processing-time trigger fires when the clock passes the end, and again late for a change", function()
    local t = task(':window(eddy.window.tumbling("10s"), { trigger = eddy.trigger.processing_time() }):count()')
    assert.is_true(t.wants_ticks)
    t:records({ rec("a", 1000) })
    t:tick(5000)
    assert.same({}, t.out)
    t:tick(10000)
    assert.same({ "a", 1, "on_time" }, { t.out[1].key, t.out[1].v, t.out[1].firing })
    t:tick(10001)                        -- nothing changed
    assert.equal(1, #t.out)
    t:records({ rec("a", 2000) })
    t:tick(10002)
    assert.same({ "a", 2, "late" }, { t.out[2].key, t.out[2].v, t.out[2].firing })
  end)

  it("an every(d) trigger fires early while the window changes, then on time", function()
    local t = task(':window(eddy.window.tumbling("10s"), { trigger = eddy.trigger.every("1s") }):count()')
    t:records({ rec("a", 1000) })
    t:tick(50000)                        -- starts the window's clock
    t:tick(50999)
    assert.same({}, t.out)
    t:tick(51000)
    assert.same({ "a", 1, "early" }, { t.out[1].key, t.out[1].v, t.out[1].firing })
    t:tick(53000)                        -- unchanged since: no firing
    assert.equal(1, #t.out)
    t:finish()
    assert.same({ "a", 1, "on_time" }, { t.out[2].key, t.out[2].v, t.out[2].firing })
  end)

  it("Lua window functions keep their state in the window: reduce, aggregate, apply", function()
    local t = task(':window(eddy.window.tumbling("10s")):reduce(function(a, b) return { k = a.k, t = a.t, n = (a.n or 1) + 1 } end)')
    t:records({ rec("a", 1000), rec("a", 2000), rec("a", 3000) })
    t:finish()
    assert.equal(3, t.out[1].v.n)
    t = task(':window(eddy.window.tumbling("10s")):aggregate({ init = function() return { s = 0 } end, '
      .. 'add = function(acc, v) acc.s = acc.s + v.t; return acc end, result = function(acc) return acc.s end })')
    t:records({ rec("a", 1000), rec("a", 2000) })
    t:finish()
    assert.equal(3000, t.out[1].v)
    t = task(':window(eddy.window.tumbling("10s")):apply(function(vs) return #vs end)')
    t:records({ rec("a", 1000), rec("a", 2000), rec("b", 2000) })
    t:finish()
    assert.same({ 2, 1 }, { t.out[1].v, t.out[2].v })
  end)

  it("count windows fire every slide records with the last n", function()
    local t = task(':window(eddy.window.count(3, 1)):sum("v")')
    local list = {}
    for i = 1, 5 do list[i] = rec("a", i * 1000, { k = "a", t = i * 1000, v = i }) end
    t:records(list)
    local sums = {}
    for i, o in ipairs(t.out) do sums[i] = o.v end
    assert.same({ 6, 9, 12 }, sums)
    assert.is_nil(t.out[1].start)         -- a count window has no start or end
    t:finish()                            -- every record was in a firing already
    assert.equal(3, #t.out)
  end)

  it("stops without firing: open windows stay for the next run", function()
    local t = task(':window(eddy.window.tumbling("10s")):count()')
    t:records({ rec("a", 1000) })
    t:finish(true)
    assert.same({}, t.out)
  end)
end)
