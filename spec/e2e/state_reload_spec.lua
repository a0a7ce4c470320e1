-- Keyed state belongs to the operator's uid, not to a VM: a reload keeps
-- it, and a reload that drops a stateful uid is refused unless allowed.
local E = require("support.eddy")
local cjson = require("cjson")

describe("keyed state across reloads", function()
  local dir
  before_each(function() dir = E.tmpdir() end)
  after_each(function() E.cleanup() end)

  local function pipeline(fmt)
    E.write(dir .. "/pipeline.lua", [[
local p = require("eddy").pipeline()
p:source("in", { file = "in.jsonl", follow = true })
 :key_by("user")
 :process{ process = function(v, ctx)
   local s = ctx.state:value("total")
   local t = (s:get() or 0) + v.n
   s:set(t)
   return string.format("]] .. fmt .. [[", ctx.key, t)
 end }
 :uid("totals")
 :sink("out", { stdout = true, format = "lines" })
return p
]])
  end

  it("keeps a process operator's state through a reload, and refuses one that drops its uid", function()
    pipeline("%s=%d")
    E.write(dir .. "/in.jsonl", '{"user":"ada","n":1}\n{"user":"ada","n":2}\n')
    E.write(dir .. "/eddy.conf.lua", "return { name = 'sr', pipeline = 'pipeline.lua', admin = { listen = '127.0.0.1:0' }, "
      .. "reload = { watch = false } }")
    local d = E.start({ "run", dir .. "/eddy.conf.lua" }, { timeout = 60 })
    local addr = E.admin_addr(dir .. "/state/sr")
    assert.truthy(addr, d:stderr())
    assert(E.wait_for(function() return d:stdout() == "ada=1\nada=3\n" end, 10), d:stdout() .. d:stderr())
    pipeline("%s total %d")
    local code, body = E.curl("http://" .. addr .. "/reload", "POST")
    assert.are.equal(200, code, body)
    assert(E.wait_for(function()
      local _, s = E.curl("http://" .. addr .. "/status")
      local st = cjson.decode(s)
      for _, t in ipairs(st.tasks) do if t.version ~= 2 then return false end end
      return true
    end, 10), "the reload did not roll out")
    E.append(dir .. "/in.jsonl", '{"user":"ada","n":4}\n')
    assert(E.wait_for(function() return d:stdout() == "ada=1\nada=3\nada total 7\n" end, 10), d:stdout())
    -- a version without the uid "totals" would drop its state
    E.write(dir .. "/pipeline.lua", [[
local p = require("eddy").pipeline()
p:source("in", { file = "in.jsonl", follow = true }):key_by("user"):map(function(v) return v.n end)
 :sink("out", { stdout = true, format = "lines" })
return p
]])
    code, body = E.curl("http://" .. addr .. "/reload", "POST")
    assert.are.equal(422, code, body)
    assert.matches("the process operator with uid 'totals'", body, 1, true)
    local _, st = E.curl("http://" .. addr .. "/state/totals/ada")
    assert.are.same({ total = 7 }, cjson.decode(st))
    d:kill("TERM")
    assert.are.equal(0, d:wait(15), d:stderr())
  end)
end)
