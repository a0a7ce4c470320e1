-- The data path under hostile input (issue 19): CSV records after a
-- malformed one, repeated CSV header names, state keys that are not UTF-8 or
-- hold a NUL in GET /state answers, one JSON decoder and encoder for every
-- line, timestamps out of range, impossible calendar dates, records larger
-- than memory allows or than a file source's max_bytes.

local E = require("support.eddy")
local cjson = require("cjson")

local T = 1700000000000          -- event times in ms (>= 1e11: not seconds)

local function pipeline(body)
  return 'local eddy = require("eddy")\nlocal p = eddy.pipeline()\n' .. body .. '\nreturn p\n'
end

-- base64 of a byte string (RFC 4648, with padding), for the expected answers
local function b64(s)
  local A = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  return ((s:gsub(".", function(c)
    local b, r = c:byte(), ""
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and "1" or "0") end
    return r
  end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
    if #x < 6 then return "" end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
    return A:sub(c + 1, c + 1)
  end) .. ({ "", "==", "=" })[#s % 3 + 1])
end

describe("the data path", function()
  local dir

  before_each(function() dir = E.tmpdir() end)
  after_each(E.cleanup)

  local function setup(script, files, config)
    E.write(dir .. "/pipeline.lua", pipeline(script))
    for name, content in pairs(files or {}) do E.write(dir .. "/" .. name, content) end
    local c = { name = "dp" }
    for k, v in pairs(config or {}) do c[k] = v end
    E.write_config(dir, c)
    return dir .. "/state/dp"
  end

  local function dead_letters()
    return E.json_lines(dir .. "/state/dp/dead-letter.jsonl") or {}
  end

  describe("csv", function()
    it("keeps a custom delimiter for the records after a malformed one", function()
      setup([[
p:source("in", { file = "in.csv", format = "csv", delimiter = ";" })
 :map(function(v) return table.concat(v, "|") end)
 :sink("out", { file = "out", format = "lines" })
]], { ["in.csv"] = 'a;b\n"x"y;z\nc;d,e\nf;g\n' }, { on_error = "skip" })
      local r = E.run_config(dir)
      assert.are.equal(0, r.code, r.stderr)
      assert.are.same({ "a|b", "c|d,e", "f|g" }, E.sink_lines(dir .. "/out"))
    end)

    it("with header = true keys a column whose name repeats an earlier one by its number", function()
      setup([[
p:source("in", { file = "in.csv", format = "csv", header = true })
 :sink("out", { file = "out", format = "json" })
]], { ["in.csv"] = 'a,b,a\n1,2,3\n' })
      local r = E.run_config(dir)
      assert.are.equal(0, r.code, r.stderr)
      local out = E.sink_lines(dir .. "/out")
      assert.are.equal(1, #out)
      assert.are.same({ a = "1", b = "2", ["3"] = "3" }, cjson.decode(out[1]))
    end)
  end)

  describe("timestamps", function()
    it("refuses one out of years 1..9999 (1e300) and a date that does not exist (2023-02-30) at the source", function()
      setup([[
p:source("in", { file = "in.jsonl", timestamp = "ts" })
 :map(function(v, ctx) return v.id .. " " .. ctx.ts end)
 :sink("out", { file = "out", format = "lines" })
]], { ["in.jsonl"] = table.concat({
        '{"id":"a","ts":1e300}', '{"id":"b","ts":"2023-02-30T00:00:00Z"}', '{"id":"c","ts":"2024-02-29T12:00:00Z"}',
        '{"id":"d","ts":"2023-04-31"}', '{"id":"e","ts":"2023-01-01T24:00:00Z"}', '{"id":"f","ts":-1e20}',
        '{"id":"g","ts":' .. T .. '}' }, "\n") .. "\n" }, { on_error = "dead_letter" })
      local r = E.run_config(dir)
      assert.are.equal(0, r.code, r.stderr)
      assert.are.same({ "c 1709208000000", "g " .. T }, E.sink_lines(dir .. "/out"))
      local dl = dead_letters()
      assert.are.equal(5, #dl)
      for _, d in ipairs(dl) do
        assert.matches("no usable timestamp in field 'ts'", d.error, 1, true)
        assert.are.equal("in", d.source)
      end
    end)
  end)

  describe("GET /state", function()
    it("gives back every key, one that is not UTF-8 as key_base64 and one with a NUL whole, and windows' keys the same way", function()
      local keys = { "ok", "bad\255key", "nul\0key", "zz" }
      local lines = {}
      for _, k in ipairs(keys) do lines[#lines + 1] = k end
      local state_dir = setup([[
local s = p:source("in", { file = "in.txt", format = "lines", follow = true,
                           timestamp = function() return ]] .. T .. [[ end })
local keyed = s:key_by(function(v) return v end)
keyed:process{ process = function(v, ctx)
   local c = ctx.state:value("count")
   c:set((c:get() or 0) + 1)
   return "seen"
 end }:uid("counts"):sink("out", { stdout = true, format = "lines" })
keyed:window(eddy.window.tumbling("1h")):count():uid("per-hour")
 :sink("w", { stdout = true, format = "lines" })
]], { ["in.txt"] = table.concat(lines, "\n") .. "\n" }, { admin = { listen = "127.0.0.1:0" }, parallelism = 1 })
      local d = E.start({ "run", dir .. "/eddy.conf.lua" }, { timeout = 40 })
      local addr = E.admin_addr(state_dir)
      assert.truthy(addr, d:stderr())
      assert.truthy(E.wait_for(function() return #E.lines(d:stdout()) == 4 end, 10), d:stderr())
      local function keyset(body)
        local got = {}
        for _, e in ipairs(cjson.decode(body)) do
          got[#got + 1] = (e.key and ("key=" .. e.key) or ("key_base64=" .. e.key_base64)) .. " "
            .. (e.state.count and tostring(e.state.count) or #e.state.windows)
        end
        table.sort(got)
        return got
      end
      local want = { "key=ok 1", "key=zz 1", "key_base64=" .. b64("bad\255key") .. " 1",
                     "key=nul\0key 1" }
      table.sort(want)
      local code, body = E.curl("http://" .. addr .. "/state/counts")
      assert.are.equal(200, code, body)
      assert.are.same(want, keyset(body))
      code, body = E.curl("http://" .. addr .. "/state/per-hour")
      assert.are.equal(200, code, body)
      assert.are.same(want, keyset(body))
      d:kill("TERM")
      assert.are.equal(0, d:wait(20), d:stderr())
    end)
  end)
end)
