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

  describe("json", function()
    -- pairs of lines that differ only by an unrelated field holding []: each
    -- pair must get the same verdict (both through, or both to the error policy)
    it("decodes every line with one decoder: an unrelated [] changes nothing (big integers, invalid UTF-8, NaN)", function()
      local pairs_ = {
        { '{"id":"big","n":18446744073709551616}', '{"id":"big[]","n":18446744073709551616,"t":[]}' },
        { '{"id":"utf","s":"a\255b"}', '{"id":"utf[]","s":"a\255b","t":[]}' },
        { '{"id":"nan","x":NaN}', '{"id":"nan[]","x":NaN,"t":[]}' },
        { '{"id":"str","s":"[]"}', '{"id":"str[]","s":"x","t":[ ]}' },
      }
      local lines = {}
      for _, p2 in ipairs(pairs_) do lines[#lines + 1] = p2[1]; lines[#lines + 1] = p2[2] end
      setup([[
p:source("in", { file = "in.jsonl" })
 :map(function(v) return v.id end)
 :sink("out", { file = "out", format = "lines" })
]], { ["in.jsonl"] = table.concat(lines, "\n") .. "\n" }, { on_error = "dead_letter" })
      local r = E.run_config(dir)
      assert.are.equal(0, r.code, r.stderr)
      local through = {}
      for _, id in ipairs(E.sink_lines(dir .. "/out")) do through[id] = true end
      for _, p2 in ipairs(pairs_) do
        local a, b = p2[1]:match('"id":"([^"]*)"'), p2[2]:match('"id":"([^"]*)"')
        assert.are.equal(through[a] or false, through[b] or false, a .. " vs " .. b)
      end
      -- the rules themselves (docs/contract.md, "JSON")
      assert.is_true(through["big"])
      assert.is_nil(through["utf"])
      assert.is_nil(through["nan"])
      assert.is_true(through["str"])
      local dl = dead_letters()
      assert.are.equal(4, #dl)
      for _, d in ipairs(dl) do assert.matches("^malformed json: ", d.error) end
      -- a record that is not UTF-8 comes back whole, as base64
      local utf = {}
      for _, d in ipairs(dl) do if d.record_base64 then utf[#utf + 1] = d.record_base64 end end
      table.sort(utf)
      assert.are.same({ b64('{"id":"utf","s":"a\255b"}'), b64('{"id":"utf[]","s":"a\255b","t":[]}') }, utf)
    end)

    it("writes integers as integers and every other number in the shortest form that reads back the same", function()
      local nums = { "0.1", "1.2345678901234567", "1e+300", "5e-324", "-0.0", "123456789.12345679", "0.000001",
                     "1e-7", "123456789012345680000", "2.5", "3", "1000000000000000", "9007199254740992",
                     "-42", "1e+21" }
      local src = {}
      for i, n in ipairs(nums) do src[i] = '{"x":' .. n .. '}' end
      setup([[
p:source("in", { file = "in.jsonl" }):sink("out", { file = "out", format = "json" })
]], { ["in.jsonl"] = table.concat(src, "\n") .. "\n" })
      local r = E.run_config(dir)
      assert.are.equal(0, r.code, r.stderr)
      local want = {}
      for i, n in ipairs(nums) do want[i] = '{"x":' .. n .. '}' end
      -- 123456789012345680000 and 1e21 are integral but past int64: the shortest
      -- form, plain up to 1e21 as JavaScript writes it
      assert.are.same(E.sorted(want), E.sink_lines(dir .. "/out"))
    end)

    it("dead-letters a record too large for limits.memory whole, with its position, and goes on", function()
      local big = '{"id":"big","s":"' .. string.rep("x", 6 * 1024 * 1024) .. '"}'
      setup([[
p:source("in", { file = "in.jsonl" })
 :map(function(v) return v.id .. " " .. #(v.s or "") end)
 :sink("out", { file = "out", format = "lines" })
]], { ["in.jsonl"] = '{"id":"a"}\n' .. big .. '\n{"id":"b"}\n' },
        { on_error = "dead_letter", limits = { memory = "6MB" } })
      local r = E.run_config(dir)
      assert.are.equal(0, r.code, r.stderr)
      assert.are.same({ "a 0", "b 0" }, E.sink_lines(dir .. "/out"))
      local dl = dead_letters()
      assert.are.equal(1, #dl)
      assert.matches("not enough memory", dl[1].error, 1, true)
      assert.are.equal(2, dl[1].line)
      assert.are.equal(11, dl[1].offset)
      assert.are.equal(big, dl[1].record)
    end)
  end)

  describe("a file source's max_bytes", function()
    it("sends a longer record to the error policy with its position and first KiB, and reads on after it", function()
      local long = string.rep("y", 3000)
      setup([[
p:source("in", { file = "in.txt", format = "lines", max_bytes = 100 })
 :sink("out", { file = "out", format = "lines" })
]], { ["in.txt"] = "a\n" .. long .. "\nb\n" .. string.rep("z", 150) }, { on_error = "dead_letter" })
      local r = E.run_config(dir)
      assert.are.equal(0, r.code, r.stderr)
      assert.are.same({ "a", "b" }, E.sink_lines(dir .. "/out"))
      local dl = dead_letters()
      assert.are.equal(2, #dl)
      assert.matches("longer than max_bytes (100 bytes)", dl[1].error, 1, true)
      assert.are.equal(2, dl[1].line)
      assert.are.equal(2, dl[1].offset)
      assert.are.equal(string.rep("y", 1024), dl[1].record)
      assert.are.equal(4, dl[2].line)
      assert.are.equal(5 + #long, dl[2].offset)
    end)

    it("is refused when it is not a size", function()
      setup([[
p:source("in", { file = "in.txt", format = "lines", max_bytes = "lots" }):sink("out", { file = "out", format = "lines" })
]], { ["in.txt"] = "a\n" })
      local r = E.run_config(dir)
      assert.are.equal(2, r.code, r.stderr)
      assert.matches("max_bytes", r.stderr, 1, true)
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
