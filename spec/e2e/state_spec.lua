-- Keyed state and timers end to end: dedup{ ttl }, process{ process,
-- on_timer } with value, list and map state, event-time and processing-time
-- timers, state TTL on the replaceable clock (EDDY_TEST_CLOCK_FILE), values
-- state refuses (through the error policy), state kept across a stop and a
-- start (and dropped after a finished run), and GET /state on the admin
-- server.

local E = require("support.eddy")
local cjson = require("cjson")

local T = 1700000000000          -- event times in ms (>= 1e11: not seconds)
local MIN, H = 60 * 1000, 3600 * 1000
local CLOCK = 1800000000000      -- the test clock's start (ms)

-- pipeline(body): a pipeline script; body is the code between
-- `local p = eddy.pipeline()` and `return p`
local function pipeline(body)
  return 'local eddy = require("eddy")\nlocal p = eddy.pipeline()\n' .. body .. '\nreturn p\n'
end

describe("keyed state", function()
  local dir

  before_each(function() dir = E.tmpdir() end)
  after_each(E.cleanup)

  -- setup(script, files, config): writes the pipeline, the inputs and the
  -- config (name "st", one keyed task unless config says otherwise: outputs
  -- come in a deterministic order)
  local function setup(script, files, config)
    E.write(dir .. "/pipeline.lua", pipeline(script))
    for name, content in pairs(files or {}) do E.write(dir .. "/" .. name, content) end
    local c = { name = "st", parallelism = 1 }
    for k, v in pairs(config or {}) do c[k] = v end
    E.write_config(dir, c)
    return dir .. "/state/st"
  end

  -- run(): runs the config over bounded input; exit 0
  local function run(opts)
    local r = E.run_config(dir, opts)
    assert.are.equal(0, r.code, r.stderr)
    return r
  end

  -- start([env]): the config as a daemon
  local function start(env)
    return E.start({ "run", dir .. "/eddy.conf.lua" }, { env = env, timeout = 40 })
  end

  -- wait_out(d, expected): waits until d's stdout is expected (exactly)
  local function wait_out(d, expected, secs)
    local ok = E.wait_for(function() return d:stdout() == expected end, secs or 10)
    assert.are.equal(expected, d:stdout(), "stderr: " .. d:stderr())
    return ok
  end

  -- stop(d): SIGTERM, exit 0
  local function stop(d)
    d:kill("TERM")
    assert.are.equal(0, d:wait(15), d:stderr())
  end

  -- json_out(text): the canon() text of each JSON line of text, in order
  local function json_out(text)
    local out = {}
    for _, l in ipairs(E.lines(text)) do out[#out + 1] = E.canon(cjson.decode(l)) end
    return out
  end
  local function canon_list(values)
    local out = {}
    for i, v in ipairs(values) do out[i] = E.canon(v) end
    return out
  end

  -- ---- dedup ------------------------------------------------------------------

  describe("dedup{ ttl }", function()
    it("with a 24 h ttl lets e_001 through at 0 h and 25 h, drops it at 2 h, 23 h and 26 h (a dropped duplicate does not refresh the time), and lets e_002 through at 0 h", function()
      local lines = {}
      for _, r in ipairs({ { "e_001", 0 }, { "e_002", 0 }, { "e_001", 2 }, { "e_001", 23 }, { "e_001", 25 },
                           { "e_001", 26 } }) do
        lines[#lines + 1] = string.format('{"id":"%s","ts":%d}', r[1], T + r[2] * H)
      end
      setup([[
p:source("in", { file = "in.jsonl", timestamp = "ts" })
 :key_by("id")
 :dedup{ ttl = "24h" }:uid("dedup")
 :map(function(v) return v.id .. " at " .. math.floor((v.ts - ]] .. T .. [[) / 3600000) .. "h" end)
 :sink("out", { file = "out", format = "lines" })
]], { ["in.jsonl"] = table.concat(lines, "\n") .. "\n" })
      run()
      assert.are.same(E.sorted({ "e_001 at 0h", "e_002 at 0h", "e_001 at 25h" }), E.sink_lines(dir .. "/out"))
    end)
  end)

  -- ---- value state across restarts ------------------------------------------

  describe("across runs", function()
    local SCRIPT = [[
p:source("in", { file = "in.jsonl", follow = true })
 :key_by("user")
 :process{ process = function(v, ctx)
   local total = ctx.state:value("total")
   local t = (total:get() or 0) + v.n
   total:set(t)
   return ctx.key .. " " .. t .. " (line " .. ctx.line .. ")"
 end }:uid("totals")
 :sink("out", { stdout = true, format = "lines" })
]]

    it("running totals per user in value state survive a stop and a start, and no input line is processed twice", function()
      local state_dir = setup(SCRIPT, { ["in.jsonl"] =
        '{"user":"ada","n":1}\n{"user":"bob","n":10}\n{"user":"ada","n":2}\n' })
      local d1 = start()
      wait_out(d1, "ada 1 (line 1)\nbob 10 (line 2)\nada 3 (line 3)\n")
      stop(d1)
      assert.are.equal("ada 1 (line 1)\nbob 10 (line 2)\nada 3 (line 3)\n", d1:stdout())
      assert.is_true(E.exists(state_dir .. "/positions.json"), "no positions.json after SIGTERM")
      assert.is_false(E.exists(state_dir .. "/finished"), "a stopped follow job must not be 'finished'")

      -- lines written while it was down, then more while it runs again
      E.append(dir .. "/in.jsonl", '{"user":"ada","n":4}\n{"user":"bob","n":5}\n')
      local d2 = start()
      wait_out(d2, "ada 7 (line 4)\nbob 15 (line 5)\n")
      E.append(dir .. "/in.jsonl", '{"user":"cy","n":7}\n{"user":"ada","n":100}\n')
      wait_out(d2, "ada 7 (line 4)\nbob 15 (line 5)\ncy 7 (line 6)\nada 107 (line 7)\n")
      stop(d2)
      assert.are.equal("ada 7 (line 4)\nbob 15 (line 5)\ncy 7 (line 6)\nada 107 (line 7)\n", d2:stdout())
    end)

    it("after a run killed with SIGKILL, a file pipeline starts afresh instead of counting its input twice", function()
      local state_dir = setup(SCRIPT, { ["in.jsonl"] = '{"user":"ada","n":1}\n{"user":"ada","n":2}\n' })
      local d1 = start()
      wait_out(d1, "ada 1 (line 1)\nada 3 (line 2)\n")
      assert.is_true(E.exists(state_dir .. "/running"))
      d1:kill("KILL")
      d1:wait(10)
      E.append(dir .. "/in.jsonl", '{"user":"ada","n":4}\n')
      local d2 = start()
      wait_out(d2, "ada 1 (line 1)\nada 3 (line 2)\nada 7 (line 3)\n")
      assert.matches("did not stop cleanly", d2:stderr(), 1, true)
      stop(d2)
      assert.is_false(E.exists(state_dir .. "/running"), "a clean stop removes state.dir/running")
    end)

    it("a run that read all of its input leaves state.dir/finished, and the next run starts afresh with empty state", function()
      local state_dir = setup((SCRIPT:gsub("follow = true", "follow = false")), { ["in.jsonl"] =
        '{"user":"ada","n":1}\n{"user":"ada","n":2}\n' })
      local r1 = run()
      assert.are.equal("ada 1 (line 1)\nada 3 (line 2)\n", r1.stdout)
      assert.is_true(E.exists(state_dir .. "/finished"), "no state.dir/finished after bounded input")
      local r2 = run()
      assert.are.equal("ada 1 (line 1)\nada 3 (line 2)\n", r2.stdout)
    end)

    it("event-time timers set before a stop fire after the next start, with the state of the first run", function()
      setup([[
p:source("in", { file = "in.jsonl", follow = true, timestamp = "ts" })
 :key_by("user")
 :process{
   process = function(v, ctx)
     local n = ctx.state:value("n")
     n:set((n:get() or 0) + 1)
     ctx.timers:event(ctx.ts + 30 * 60000)
     return "click " .. ctx.key
   end,
   on_timer = function(ts, ctx)
     ctx.emit("timer " .. ctx.key .. " +" .. math.floor((ts - ]] .. T .. [[) / 60000) .. "m clicks " .. ctx.state:value("n"):get())
   end }:uid("restart-timers")
 :sink("out", { stdout = true, format = "lines" })
]], { ["in.jsonl"] = string.format('{"user":"ada","ts":%d}\n{"user":"ada","ts":%d}\n', T, T + MIN) })
      local d1 = start()
      wait_out(d1, "click ada\nclick ada\n")
      stop(d1)
      -- a stop keeps the timers (it is not the end of the input)
      assert.are.equal("click ada\nclick ada\n", d1:stdout())

      E.append(dir .. "/in.jsonl", string.format('{"user":"bob","ts":%d}\n', T + 40 * MIN))
      local d2 = start()
      wait_out(d2, "click bob\ntimer ada +30m clicks 2\ntimer ada +31m clicks 2\n")
      stop(d2)
      assert.are.equal("click bob\ntimer ada +30m clicks 2\ntimer ada +31m clicks 2\n", d2:stdout())
    end)
    it("open windows are kept in the state store across a stop, shown by GET /state/UID/KEY, and fire in the next run", function()
      local state_dir = setup([[
p:source("in", { file = "in.jsonl", follow = true, timestamp = "ts" })
 :key_by("user")
 :window(eddy.window.tumbling("10s")):sum("n"):uid("per-10s")
 :map(function(x, ctx) return ctx.key .. " " .. (ctx.window.start - ]] .. T .. [[) .. " " .. x end)
 :sink("out", { stdout = true, format = "lines" })
]], { ["in.jsonl"] = string.format('{"user":"ada","n":1,"ts":%d}\n{"user":"ada","n":2,"ts":%d}\n', T, T + 12000)
        .. string.format('{"user":"ada","n":4,"ts":%d}\n', T + 15000) }, { admin = { listen = "127.0.0.1:0" } })
      local d1 = start()
      wait_out(d1, "ada 0 1\n")
      local addr = E.admin_addr(state_dir)
      assert.truthy(addr, d1:stderr())
      -- [10s,20s) is open: its sum is in the store, and from/to bound what is shown
      local code, body = E.curl("http://" .. addr .. "/state/per-10s/ada")
      assert.are.equal(200, code, body)
      assert.are.same({ windows = { { start = T + 10000, ["end"] = T + 20000, value = 6 } } }, cjson.decode(body))
      code, body = E.curl("http://" .. addr .. "/state/per-10s/ada?from=" .. (T + 20000))
      assert.are.equal(404, code, body)
      code, body = E.curl("http://" .. addr .. "/state/per-10s/ada?from=soon")
      assert.are.equal(400, code, body)
      code, body = E.curl("http://" .. addr .. "/state/per-10s?prefix=a")
      assert.are.equal(200, code, body)
      assert.are.same({ { key = "ada", state = { windows = { { start = T + 10000, ["end"] = T + 20000, value = 6 } } } } },
        cjson.decode(body))
      stop(d1)
      assert.are.equal("ada 0 1\n", d1:stdout())        -- a stop does not fire it

      -- the next run: a later record moves the watermark past it, and the sum of the first run fires
      E.append(dir .. "/in.jsonl", string.format('{"user":"bob","n":1,"ts":%d}\n', T + 30000))
      local d2 = start()
      wait_out(d2, "ada 10000 6\n")
      stop(d2)
    end)
  end)

  -- ---- event-time timers -------------------------------------------------------

  describe("event-time timers", function()
    it("close a per-user session 30 minutes after the user's last click with its summary; a later click moves the timer", function()
      -- a@0 b@5 a@10 b@20 b@33 b@42 a@45 (minutes): a's first timer (30) was
      -- moved to 40 by a@10, so b@33 (watermark 33m - 1) fires nothing; b@42
      -- passes 40 and closes a's session; the end of input closes b's
      -- (72) and a's second (75), in time order
      local lines = {}
      for _, r in ipairs({ { "a", 0 }, { "b", 5 }, { "a", 10 }, { "b", 20 }, { "b", 33 }, { "b", 42 }, { "a", 45 } }) do
        lines[#lines + 1] = string.format('{"user":"%s","ts":%d}', r[1], T + r[2] * MIN)
      end
      setup([[
local GAP = 30 * 60000
local T0 = ]] .. T .. [[

local function M(t) return math.floor((t - T0) / 60000) end
p:source("in", { file = "clicks.jsonl", timestamp = "ts" })
 :key_by("user")
 :process{
   process = function(v, ctx)
     local s = ctx.state:value("session")
     local cur = s:get()
     if cur then
       ctx.timers:delete(cur.last + GAP)
       cur.clicks, cur.last = cur.clicks + 1, ctx.ts
     else
       cur = { clicks = 1, first = ctx.ts, last = ctx.ts }
     end
     s:set(cur)
     ctx.timers:event(cur.last + GAP)
   end,
   on_timer = function(ts, ctx)
     local s = ctx.state:value("session")
     local cur = s:get()
     s:clear()
     ctx.emit({ user = ctx.key, clicks = cur.clicks, first = M(cur.first), last = M(cur.last),
                closed = M(ts), ctx_ts = M(ctx.ts) })
   end,
 }:uid("sessions")
 :sink("out", { stdout = true, format = "json" })
]], { ["clicks.jsonl"] = table.concat(lines, "\n") .. "\n" })
      local r = run()
      assert.are.same(canon_list({
        { user = "a", clicks = 2, first = 0, last = 10, closed = 40, ctx_ts = 40 },
        { user = "b", clicks = 4, first = 5, last = 42, closed = 72, ctx_ts = 72 },
        { user = "a", clicks = 1, first = 45, last = 45, closed = 75, ctx_ts = 75 },
      }), json_out(r.stdout))
    end)

    it("fire in timestamp order across keys with ctx.key the timer's key; the same ts set twice for a key fires once", function()
      setup([[
p:source("in", { file = "in.jsonl", timestamp = "ts" })
 :key_by("user")
 :process{
   process = function(v, ctx)
     for _, t in ipairs(v.at) do ctx.timers:event(]] .. T .. [[ + t) end
   end,
   on_timer = function(ts, ctx) ctx.emit(ctx.key .. "@" .. (ts - ]] .. T .. [[)) end,
 }:uid("order")
 :sink("out", { stdout = true, format = "lines" })
]], { ["in.jsonl"] = string.format('{"user":"x","ts":%d,"at":[500,100,300,300]}\n'
      .. '{"user":"y","ts":%d,"at":[200,400,100]}\n{"user":"x","ts":%d,"at":[100]}\n', T, T, T) })
      local r = run()
      -- (two timers at one ts, of different keys: either may go first)
      local out = E.lines(r.stdout)
      assert.are.same({ "x@100", "y@100" }, E.sorted({ out[1], out[2] }), r.stdout)
      assert.are.same({ "y@200", "x@300", "y@400", "x@500" }, { out[3], out[4], out[5], out[6] }, r.stdout)
      assert.are.equal(6, #out, r.stdout)
    end)
  end)

  -- ---- map and list state, and GET /state ----------------------------------

  describe("map and list state", function()
    it("hold exactly what was added, put and removed, as process sees it and as GET /state/UID/KEY shows it", function()
      local state_dir = setup([[
p:source("in", { file = "in.jsonl", follow = true })
 :key_by("user")
 :process{ process = function(v, ctx)
   local seen, by, total = ctx.state:list("seen"), ctx.state:map("by"), ctx.state:value("total")
   if v.op == "add" then
     seen:add(v.item)
     if type(v.item) ~= "table" then by:put(v.item, (by:get(v.item) or 0) + 1) end
     total:set((total:get() or 0) + 1)
   elseif v.op == "remove" then by:remove(v.item)
   elseif v.op == "clear_list" then seen:clear()
   elseif v.op == "clear_total" then total:clear()
   end
   local m, types = {}, {}
   for k, n in by:pairs() do m[tostring(k)] = n; types[#types + 1] = tostring(k) .. ":" .. type(k) end
   table.sort(types)
   local list = seen:get()
   return { user = ctx.key, total = total:get(), seen = list, n_seen = #list, by = m, key_types = table.concat(types, ","),
            get7 = by:get(7), getx = by:get("x") }
 end }:uid("lists")
 :sink("out", { stdout = true, format = "json" })
]], { ["in.jsonl"] = table.concat({
        '{"user":"ada","op":"add","item":"x"}',
        '{"user":"ada","op":"add","item":7}',
        '{"user":"bob","op":"add","item":{"deep":{"n":[1,2.5,"s",true]}}}',
        '{"user":"ada","op":"add","item":"x"}',
      }, "\n") .. "\n" }, { admin = { listen = "127.0.0.1:0" } })
      local d = start()
      local addr = E.admin_addr(state_dir)
      assert.truthy(addr, d:stderr())
      local function out_has(n)
        return E.wait_for(function() return #E.lines(d:stdout()) == n end, 10)
      end
      local deep = { deep = { n = { 1, 2.5, "s", true } } }
      assert.truthy(out_has(4), d:stdout() .. d:stderr())
      assert.are.same(canon_list({
        { user = "ada", total = 1, seen = { "x" }, n_seen = 1, by = { x = 1 }, key_types = "x:string", getx = 1 },
        { user = "ada", total = 2, seen = { "x", 7 }, n_seen = 2, by = { x = 1, ["7"] = 1 },
          key_types = "7:number,x:string", get7 = 1, getx = 1 },
        { user = "bob", total = 1, seen = { deep }, n_seen = 1, by = {}, key_types = "" },
        { user = "ada", total = 3, seen = { "x", 7, "x" }, n_seen = 3, by = { x = 2, ["7"] = 1 },
          key_types = "7:number,x:string", get7 = 1, getx = 2 },
      }), json_out(d:stdout()))

      local function state_of(key)
        local code, body = E.curl("http://" .. addr .. "/state/lists/" .. key)
        return code, code == 200 and E.canon(cjson.decode(body)) or body
      end
      assert.are.same({ 200, E.canon({ total = 3, seen = { "x", 7, "x" }, by = { x = 2, ["7"] = 1 } }) }, { state_of("ada") })
      assert.are.same({ 200, E.canon({ total = 1, seen = { deep } }) }, { state_of("bob") })

      -- remove a map key and clear the list: they leave the key's state
      E.append(dir .. "/in.jsonl", '{"user":"ada","op":"remove","item":"x"}\n{"user":"ada","op":"clear_list"}\n')
      assert.truthy(out_has(6), d:stdout() .. d:stderr())
      local out = json_out(d:stdout())
      assert.are.same(canon_list({
        { user = "ada", total = 3, seen = { "x", 7, "x" }, n_seen = 3, by = { ["7"] = 1 }, key_types = "7:number", get7 = 1 },
        { user = "ada", total = 3, seen = {}, n_seen = 0, by = { ["7"] = 1 }, key_types = "7:number", get7 = 1 },
      }), { out[5], out[6] })
      assert.are.same({ 200, E.canon({ total = 3, by = { ["7"] = 1 } }) }, { state_of("ada") })

      -- with nothing left the key has no state: 404
      E.append(dir .. "/in.jsonl", '{"user":"ada","op":"remove","item":7}\n{"user":"ada","op":"clear_total"}\n')
      assert.truthy(out_has(8), d:stdout() .. d:stderr())
      out = json_out(d:stdout())
      assert.are.same(canon_list({ { user = "ada", seen = {}, n_seen = 0, by = {}, key_types = "" } }), { out[8] })
      local code = state_of("ada")
      assert.are.equal(404, code)
      stop(d)
    end)
  end)

  -- ---- TTL and processing time --------------------------------------------

  describe("on the processing-time clock (EDDY_TEST_CLOCK_FILE)", function()
    it("a value with ttl 1h reads as nil once the clock has passed an hour after it was set; a value without ttl stays", function()
      local clock = dir .. "/clock"
      E.write(clock, tostring(CLOCK))
      setup([[
p:source("in", { file = "in.jsonl", follow = true })
 :key_by("user")
 :process{ process = function(v, ctx)
   local token, keep = ctx.state:value("token", { ttl = "1h" }), ctx.state:value("keep")
   if v.op == "set" then token:set(v.val); keep:set(v.val) end
   return ctx.key .. " " .. v.op .. " token=" .. tostring(token:get()) .. " keep=" .. tostring(keep:get())
 end }:uid("ttl")
 :sink("out", { stdout = true, format = "lines" })
]], { ["in.jsonl"] = '{"user":"ada","op":"set","val":"a1"}\n{"user":"ada","op":"get"}\n' })
      local d = start({ EDDY_TEST_CLOCK_FILE = clock })
      local expect = "ada set token=a1 keep=a1\nada get token=a1 keep=a1\n"
      wait_out(d, expect)
      -- 59 minutes later: still there
      E.write(clock, tostring(CLOCK + 59 * MIN))
      E.append(dir .. "/in.jsonl", '{"user":"ada","op":"get"}\n')
      expect = expect .. "ada get token=a1 keep=a1\n"
      wait_out(d, expect)
      -- 61 minutes after it was set: gone
      E.write(clock, tostring(CLOCK + 61 * MIN))
      E.append(dir .. "/in.jsonl", '{"user":"ada","op":"get"}\n')
      expect = expect .. "ada get token=nil keep=a1\n"
      wait_out(d, expect)
      -- set again: the hour counts from the new write
      E.append(dir .. "/in.jsonl", '{"user":"ada","op":"set","val":"a2"}\n')
      expect = expect .. "ada set token=a2 keep=a2\n"
      wait_out(d, expect)
      E.write(clock, tostring(CLOCK + 110 * MIN))
      E.append(dir .. "/in.jsonl", '{"user":"ada","op":"get"}\n')
      expect = expect .. "ada get token=a2 keep=a2\n"
      wait_out(d, expect)
      E.write(clock, tostring(CLOCK + 122 * MIN))
      E.append(dir .. "/in.jsonl", '{"user":"ada","op":"get"}\n')
      expect = expect .. "ada get token=nil keep=a2\n"
      wait_out(d, expect)
      stop(d)
    end)

    it("processing-time timers fire once the clock passes their time, once per key and ts, and not after delete", function()
      local clock = dir .. "/clock"
      E.write(clock, tostring(CLOCK))
      setup([[
local C0 = ]] .. CLOCK .. [[

p:source("in", { file = "in.jsonl", follow = true })
 :key_by("user")
 :process{
   process = function(v, ctx)
     if v.delete then ctx.timers:delete(C0 + v.delete) return "deleted " .. ctx.key end
     ctx.timers:processing(C0 + v.at)
     return "set " .. ctx.key .. " +" .. v.at
   end,
   on_timer = function(ts, ctx) ctx.emit("fired " .. ctx.key .. " +" .. (ts - C0)) end,
 }:uid("ptimers")
 :sink("out", { stdout = true, format = "lines" })
]], { ["in.jsonl"] = table.concat({
        '{"user":"ada","at":60000}', '{"user":"bob","at":30000}', '{"user":"ada","at":60000}',
        '{"user":"cy","at":45000}', '{"user":"cy","delete":45000}' }, "\n") .. "\n" })
      local d = start({ EDDY_TEST_CLOCK_FILE = clock })
      local expect = "set ada +60000\nset bob +30000\nset ada +60000\nset cy +45000\ndeleted cy\n"
      wait_out(d, expect)
      E.sleep(0.3)
      assert.are.equal(expect, d:stdout(), "a timer fired before the clock reached it")
      E.write(clock, tostring(CLOCK + 30001))
      expect = expect .. "fired bob +30000\n"
      wait_out(d, expect)
      E.write(clock, tostring(CLOCK + 50000))     -- past cy's deleted timer
      E.sleep(0.5)
      assert.are.equal(expect, d:stdout(), "a deleted timer fired, or one fired early")
      E.write(clock, tostring(CLOCK + 70000))
      expect = expect .. "fired ada +60000\n"
      wait_out(d, expect)
      E.sleep(0.3)
      assert.are.equal(expect, d:stdout(), "a timer set twice at one ts fired twice")
      stop(d)
    end)
  end)

  -- ---- refused values ----------------------------------------------------------

  describe("values state cannot keep", function()
    it("a function, or a cyclic table, goes to the error policy (dead_letter) with a clear error, and the job goes on", function()
      local state_dir = setup([[
p:source("in", { file = "in.jsonl" })
 :key_by("user")
 :process{ process = function(v, ctx)
   if v.bad == "fn" then ctx.state:value("bad"):set(function() end) end
   if v.bad == "nested_fn" then ctx.state:list("bad"):add({ f = print }) end
   if v.bad == "cycle" then local t = {}; t.self = t; ctx.state:map("bad"):put("k", t) end
   local total = ctx.state:value("total")
   total:set((total:get() or 0) + v.n)
   return ctx.key .. " " .. total:get()
 end }:uid("refuse")
 :sink("out", { stdout = true, format = "lines" })
]], { ["in.jsonl"] = table.concat({
        '{"user":"ada","n":1}', '{"user":"ada","n":10,"bad":"fn"}', '{"user":"ada","n":2}',
        '{"user":"ada","n":20,"bad":"nested_fn"}', '{"user":"ada","n":30,"bad":"cycle"}', '{"user":"ada","n":3}',
      }, "\n") .. "\n" }, { on_error = "dead_letter" })
      local r = run()
      assert.are.equal("ada 1\nada 3\nada 6\n", r.stdout)
      local dl = E.json_lines(state_dir .. "/dead-letter.jsonl")
      assert.are.equal(3, #dl, E.read(state_dir .. "/dead-letter.jsonl"))
      local lines = {}
      for i, e in ipairs(dl) do
        lines[i] = e.line
        assert.are.equal("refuse", e.operator)
        assert.are.equal("process", e.operator_kind)
        assert.are.equal("in", e.source)
        assert.is_string(e.record)
      end
      table.sort(lines)
      assert.are.same({ 2, 4, 5 }, lines)
      table.sort(dl, function(a, b) return a.line < b.line end)
      assert.matches("function", dl[1].error)
      assert.matches("state", dl[1].error)
      assert.matches("function", dl[2].error)
      assert.matches("cyclic", dl[3].error)
      assert.are.same({ n = 10, user = "ada", bad = "fn" }, cjson.decode(dl[1].record))
      assert.matches("dead%-lettered", r.stderr)
    end)

    it("a record that fails leaves no state behind: its earlier writes are undone before the policy has it", function()
      setup([[
p:source("in", { file = "in.jsonl" })
 :key_by("user")
 :process{ process = function(v, ctx)
   local total = ctx.state:value("total")
   total:set((total:get() or 0) + v.n)
   ctx.state:list("seen"):add(v.n)
   if v.bad then error("bad record") end
   return ctx.key .. " " .. total:get() .. " " .. #ctx.state:list("seen"):get()
 end }:uid("undo")
 :sink("out", { stdout = true, format = "lines" })
]], { ["in.jsonl"] = '{"user":"ada","n":1}\n{"user":"ada","n":10,"bad":true}\n{"user":"ada","n":100}\n' },
        { on_error = "skip" })
      assert.are.equal("ada 1 1\nada 101 2\n", run().stdout)
    end)

    it("on_timer's return value is emitted, as process's is", function()
      setup([[
p:source("in", { file = "in.jsonl", timestamp = "ts" })
 :key_by("user")
 :process{
   process = function(v, ctx) ctx.timers:event(v.ts + 1000) end,
   on_timer = function(ts, ctx) return ctx.key .. " at " .. (ts - ]] .. T .. [[) end,
 }
 :sink("out", { stdout = true, format = "lines" })
]], { ["in.jsonl"] = string.format('{"user":"ada","ts":%d}\n', T) })
      assert.are.equal("ada at 1000\n", run().stdout)
    end)
  end)

  -- ---- GET /state ------------------------------------------------------------

  describe("GET /state", function()
    local addr, d, state_dir

    local function get(path) return E.curl("http://" .. addr .. path) end
    local function get_json(path)
      local code, body = get(path)
      assert.are.equal(200, code, path .. ": " .. body)
      return cjson.decode(body)
    end

    before_each(function()
      state_dir = setup([[
local keyed = p:source("in", { file = "in.jsonl", follow = true, timestamp = "ts" }):key_by("user")
keyed:process{ process = function(v, ctx)
   local count, total = ctx.state:value("count"), ctx.state:value("total")
   count:set((count:get() or 0) + 1)
   total:set((total:get() or 0) + v.n)
   return ctx.key .. " " .. count:get()
 end }:uid("totals")
 :sink("out", { stdout = true, format = "lines" })
keyed:dedup{ ttl = "1h" }:uid("firsts")
 :sink("first-out", { file = "firsts" })
]], { ["in.jsonl"] = table.concat({
        string.format('{"user":"u1","n":2,"ts":%d}', T),
        string.format('{"user":"u2","n":2,"ts":%d}', T + 1000),
        string.format('{"user":"u1","n":2,"ts":%d}', T + 2000),
        string.format('{"user":"u3","n":2,"ts":%d}', T + 3000),
        string.format('{"user":"x y","n":2,"ts":%d}', T + 4000),
      }, "\n") .. "\n" }, { admin = { listen = "127.0.0.1:0" }, parallelism = 2 })
      d = start()
      addr = E.admin_addr(state_dir)
      assert.truthy(addr, d:stderr())
      assert.truthy(E.wait_for(function() return #E.lines(d:stdout()) == 5 end, 10), d:stdout() .. d:stderr())
    end)

    it("/state/UID/KEY gives a key's named states (a dedup operator's {seen_at}), a URL-encoded key too", function()
      assert.are.same({ count = 2, total = 4 }, get_json("/state/totals/u1"))
      assert.are.same({ count = 1, total = 2 }, get_json("/state/totals/x%20y"))
      assert.are.same({ seen_at = T }, get_json("/state/firsts/u1"))
      assert.are.same({ seen_at = T + 1000 }, get_json("/state/firsts/u2"))
      stop(d)
    end)

    it("/metrics shows the state store's keys, bytes and memory (block cache within state.cache)", function()
      local _, page = get("/metrics")
      local m = E.metrics(page)
      assert.is_true(m["eddy_state_keys"] > 0)
      assert.is_true(m["eddy_state_bytes"] > 0)
      for _, part in ipairs({ "block_cache", "pinned", "memtables", "table_readers" }) do
        assert.is_number(m['eddy_state_memory_bytes{part="' .. part .. '"}'], part)
      end
      -- the default state.cache is 64 MB, half of it block cache
      assert.is_true(m['eddy_state_memory_bytes{part="block_cache"}'] <= 32 * 2 ^ 20)
      assert.is_true(m['eddy_state_memory_bytes{part="memtables"}'] > 0)
      stop(d)
    end)

    it("/state/UID?prefix=P&limit=N lists keys and states", function()
      local function keys_of(arr)
        local out = {}
        for _, e in ipairs(arr) do out[#out + 1] = e.key .. "=" .. E.canon(e.state) end
        table.sort(out)
        return out
      end
      local want = {
        u1 = 'u1={"count":2,"total":4}', u2 = 'u2={"count":1,"total":2}', u3 = 'u3={"count":1,"total":2}',
        xy = 'x y={"count":1,"total":2}' }
      assert.are.same({ want.u1, want.u2, want.u3 }, keys_of(get_json("/state/totals?prefix=u")))
      assert.are.same({ want.u1, want.u2, want.u3, want.xy }, keys_of(get_json("/state/totals")))
      assert.are.same({ want.u1, want.u2, want.u3, want.xy }, keys_of(get_json("/state/totals?limit=100000")))
      assert.are.same({ want.xy }, keys_of(get_json("/state/totals?prefix=x%20")))
      local two = keys_of(get_json("/state/totals?prefix=u&limit=2"))
      assert.are.equal(2, #two)
      for _, e in ipairs(two) do assert.truthy(e == want.u1 or e == want.u2 or e == want.u3, e) end
      local code, body = get("/state/totals?prefix=nobody")
      assert.are.equal(200, code, body)
      assert.matches("^%[%s*%]%s*$", body)
      assert.are.same({ 'u1={"seen_at":' .. T .. '}' }, keys_of(get_json("/state/firsts?prefix=u1")))
      stop(d)
    end)

    it("answers 404 for a key without state or an unknown uid, and 400 for a bad request or limit", function()
      for _, path in ipairs({ "/state/totals/nobody", "/state/firsts/nobody", "/state/no-such-uid/u1",
                              "/state/no-such-uid" }) do
        local code, body = get(path)
        assert.are.equal(404, code, path .. ": " .. body)
      end
      for _, path in ipairs({ "/state/", "/state/totals/", "/state/totals?limit=0", "/state/totals?limit=100001",
                              "/state/totals?limit=abc", "/state/totals?limit=-1", "/state/totals?limit=",
                              "/state/totals?limit=5x", "/state/totals?prefix=u&bogus=1" }) do
        local code, body = get(path)
        assert.are.equal(400, code, path .. ": " .. body)
        assert.is_string(cjson.decode(body).error, path .. ": " .. body)
      end
      stop(d)
    end)

    it("answers while records arrive, each answer a committed state (count and total of the same records)", function()
      local last = 2
      for round = 1, 20 do
        local chunk = {}
        for i = 1, 10 do
          chunk[i] = string.format('{"user":"u1","n":2,"ts":%d}', T + 10000 + round * 100 + i)
        end
        E.append(dir .. "/in.jsonl", table.concat(chunk, "\n") .. "\n")
        local s = get_json("/state/totals/u1")
        assert.are.equal(2 * s.count, s.total, cjson.encode(s))
        assert.is_true(s.count >= last, "count went back from " .. last .. " to " .. s.count)
        last = s.count
        E.sleep(0.02)
      end
      assert.truthy(E.wait_for(function()
        local _, body = get("/state/totals/u1")
        local ok, s = pcall(cjson.decode, body)
        return ok and s.count == 202
      end, 10), "u1 never reached 202 records")
      assert.are.same({ count = 202, total = 404 }, get_json("/state/totals/u1"))
      -- the duplicates came within the hour: seen_at stays the first one's time
      assert.are.same({ seen_at = T }, get_json("/state/firsts/u1"))
      stop(d)
      assert.are.same(E.canon_all({
        { user = "u1", n = 2, ts = T }, { user = "u2", n = 2, ts = T + 1000 }, { user = "u3", n = 2, ts = T + 3000 },
        { user = "x y", n = 2, ts = T + 4000 },
      }), E.sink_json(dir .. "/firsts"))
    end)
  end)
end)
