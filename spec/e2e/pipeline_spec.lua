-- Pipelines end to end: input formats, output formats, the stateless
-- operators, key_by and its parallelism, union, fan-out, config overrides,
-- stdin and stdout, and a larger generated input whose output must not
-- depend on the number of threads.

local E = require("support.eddy")
local cjson = require("cjson")

-- pipeline(body): a pipeline script; body is the code between
-- `local p = eddy.pipeline()` and `return p`
local function pipeline(body)
  return 'local eddy = require("eddy")\nlocal p = eddy.pipeline()\n' .. body .. '\nreturn p\n'
end

describe("a pipeline", function()
  local dir

  before_each(function() dir = E.tmpdir() end)
  after_each(E.cleanup)

  -- go(script, files, config): writes the script and input files, runs the
  -- config, and checks eddy exited 0
  local function go(script, files, config, opts)
    E.write(dir .. "/pipeline.lua", pipeline(script))
    for name, content in pairs(files or {}) do E.write(dir .. "/" .. name, content) end
    E.write_config(dir, config or {})
    local r = E.run_config(dir, opts)
    assert.are.equal(0, r.code, r.stderr)
    return r
  end

  describe("reads", function()
    it("json: one document per line, skipping blank lines, with ctx.line, ctx.offset, ctx.partition and ctx.source", function()
      go([[
p:source("in", { file = "in.jsonl", format = "json" })
 :map(function(v, ctx)
   return { n = v.n, line = ctx.line, offset = ctx.offset, partition = ctx.partition, source = ctx.source }
 end)
 :sink("out", { file = "out", format = "json" })
]], { ["in.jsonl"] = '{"n":1}\n\n{"n":2}\n{"n":3}' })
      assert.are.same(E.canon_all({
        { n = 1, line = 1, offset = 0, partition = 0, source = "in" },
        { n = 2, line = 3, offset = 9, partition = 0, source = "in" },
        { n = 3, line = 4, offset = 17, partition = 0, source = "in" },   -- no newline at the end
      }), E.sink_json(dir .. "/out"))
    end)

    it("json: nested objects, arrays, strings with escapes and numbers come through unchanged", function()
      local doc = { a = { b = { 1, 2, 3 }, c = "x\ty\"z\\" }, big = 1234567, f = 0.5, t = true, u = "é" }
      go([[
p:source("in", { file = "in.jsonl" }):sink("out", { file = "out" })
]], { ["in.jsonl"] = cjson.encode(doc) .. "\n" })
      assert.are.same(E.canon_all({ doc }), E.sink_json(dir .. "/out"))
    end)

    it("json: an empty array stays an array from a json source to a json sink", function()
      go([[
p:source("in", { file = "in.jsonl" }):sink("out", { file = "out" })
]], { ["in.jsonl"] = '{"tags":[]}\n[]\n' })
      assert.are.same(E.sorted({ '{"tags":[]}', '[]' }), E.sink_lines(dir .. "/out"))
    end)

    it("json: integers up to 2^53 keep every digit from a json source to a json sink", function()
      go([[
p:source("in", { file = "in.jsonl" }):sink("out", { file = "out" })
]], { ["in.jsonl"] = '{"id":1234567890123456}\n{"id":9007199254740992}\n{"id":123456789012345}\n' })
      assert.are.same(E.sorted({ '{"id":1234567890123456}', '{"id":9007199254740992}', '{"id":123456789012345}' }),
        E.sink_lines(dir .. "/out"))
    end)

    it("lines: each line as a string with a trailing \\r stripped", function()
      go([[
p:source("in", { file = "in.txt", format = "lines" })
 :map(function(v, ctx) return ctx.line .. ":[" .. v .. "]" .. #v end)
 :sink("out", { file = "out", format = "lines" })
]], { ["in.txt"] = "ab\r\ncd\n x \nlast" })
      assert.are.same({ "1:[ab]2", "2:[cd]2", "3:[ x ]3", "4:[last]4" }, E.sink_lines(dir .. "/out"))
    end)

    it("raw: each line's bytes as they are, a \\r included", function()
      go([[
p:source("in", { file = "in.txt", format = "raw" })
 :map(function(v) return "[" .. v:gsub("\r", "<CR>") .. "]" .. #v end)
 :sink("out", { file = "out", format = "raw" })
]], { ["in.txt"] = "ab\r\ncd\n" })
      assert.are.same({ "[ab<CR>]3", "[cd]2" }, E.sink_lines(dir .. "/out"))
    end)

    it("csv: quoted fields, an embedded newline and \"\" escapes, each record an array of strings", function()
      go([[
p:source("in", { file = "in.csv", format = "csv" })
 :map(function(v, ctx) return { v = v, line = ctx.line } end)
 :sink("out", { file = "out", format = "json" })
]], { ["in.csv"] = 'a,b,c\n1,"hello, world",x\n2,"two\nlines",y\n"say ""hi""",,z\r\n' })
      assert.are.same(E.canon_all({
        { v = { "a", "b", "c" }, line = 1 },
        { v = { "1", "hello, world", "x" }, line = 2 },
        { v = { "2", "two\nlines", "y" }, line = 3 },
        { v = { 'say "hi"', "", "z" }, line = 5 },  -- the record after the 2-line one starts on line 5
      }), E.sink_json(dir .. "/out"))
    end)

    it("csv with header = true: each record a table keyed by the header's column names", function()
      go([[
p:source("in", { file = "in.csv", format = "csv", header = true })
 :map(function(v, ctx) return { name = v.name, note = v.note, line = ctx.line } end)
 :sink("out", { file = "out", format = "json" })
]], { ["in.csv"] = 'name,note\nann,"hello, world"\nbob,"two\nlines"\n"c""d",plain\r\n' })
      assert.are.same(E.canon_all({
        { name = "ann", note = "hello, world", line = 2 },
        { name = "bob", note = "two\nlines", line = 3 },
        { name = 'c"d', note = "plain", line = 5 },
      }), E.sink_json(dir .. "/out"))
    end)

    it("csv with another delimiter", function()
      go([[
p:source("in", { file = "in.csv", format = "csv", delimiter = ";" })
 :map(function(v) return table.concat(v, "|") end)
 :sink("out", { file = "out", format = "lines" })
]], { ["in.csv"] = 'a;b,c;"d;e"\n' })
      assert.are.same({ "a|b,c|d;e" }, E.sink_lines(dir .. "/out"))
    end)
  end)

  describe("writes", function()
    it("a json sink: part-<task>-0.jsonl files, one JSON value per line", function()
      go([[
p:source("in", { file = "in.txt", format = "lines" })
 :map(function(v) return { word = v } end)
 :sink("out", { file = "out", format = "json" })
]], { ["in.txt"] = "a\nb\n" })
      local files = E.ls(dir .. "/out")
      assert.are.equal(1, #files)
      assert.matches("^part%-%d+%-0%.jsonl$", files[1])
      assert.are.same({ '{"word":"a"}', '{"word":"b"}' }, E.sink_lines(dir .. "/out"))
    end)

    it("a lines sink: part-<task>-0.txt files, strings as they are and numbers as text", function()
      go([[
p:source("in", { file = "in.txt", format = "lines" })
 :map(function(v) if v == "n" then return 42 end return v .. "!" end)
 :sink("out", { file = "out", format = "lines" })
]], { ["in.txt"] = "a\nn\nb c\n" })
      local files = E.ls(dir .. "/out")
      assert.are.equal(1, #files)
      assert.matches("^part%-%d+%-0%.txt$", files[1])
      assert.are.same({ "42", "a!", "b c!" }, E.sink_lines(dir .. "/out"))
    end)

    it("a lines sink writes an integer number with all its digits", function()
      go([[
p:source("in", { file = "in.txt", format = "lines" })
 :map(function(v) return tonumber(v) end)
 :sink("out", { file = "out", format = "lines" })
]], { ["in.txt"] = "7\n123456789012345\n1700000000000000\n" })
      assert.are.same(E.sorted({ "7", "123456789012345", "1700000000000000" }), E.sink_lines(dir .. "/out"))
    end)

    it("a sink folder relative to the pipeline's folder, not the working directory", function()
      E.write(dir .. "/sub/pipeline.lua", pipeline([[
p:source("in", { file = "in.txt", format = "lines" }):sink("out", { file = "out", format = "lines" })
]]))
      E.write(dir .. "/sub/in.txt", "x\n")
      E.write_config(dir, { pipeline = "sub/pipeline.lua" })
      local r = E.run({ "run", "eddy.conf.lua" }, { cwd = dir })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.same({ "x" }, E.sink_lines(dir .. "/sub/out"))
      assert.is_false(E.exists(dir .. "/out"))
    end)

    it("two file sinks writing to the same folder do not overwrite each other (or are refused before processing)", function()
      E.write(dir .. "/pipeline.lua", pipeline([[
local s = p:source("in", { file = "in.txt", format = "lines" })
s:map(function(v) return "a:" .. v end):sink("a", { file = "out", format = "lines" })
s:map(function(v) return "b:" .. v end):sink("b", { file = "out", format = "lines" })
]]))
      E.write(dir .. "/in.txt", "1\n2\n3\n")
      E.write_config(dir, {})
      local r = E.run_config(dir)
      if r.code == 2 then
        assert.matches("out", r.stderr, 1, true)
      else
        assert.are.equal(0, r.code, r.stderr)
        assert.are.same({ "a:1", "a:2", "a:3", "b:1", "b:2", "b:3" }, E.sink_lines(dir .. "/out"))
      end
    end)

    it("a stdout sink writes one line per value to stdout, and logs go to stderr", function()
      local r = go([[
p:source("in", { file = "in.txt", format = "lines" })
 :map(function(v) return v:upper() end)
 :sink("out", { stdout = true, format = "lines" })
]], { ["in.txt"] = "a\nb\nc\n" })
      assert.are.same({ "A", "B", "C" }, E.sorted(E.lines(r.stdout)))
      assert.matches("finished", r.stderr)
    end)

    it("a stdout sink with format json writes one JSON document per line", function()
      local r = go([[
p:source("in", { file = "in.txt", format = "lines" })
 :map(function(v) return { v = v } end)
 :sink("out", { stdout = true })
]], { ["in.txt"] = "a\nb\n" })
      assert.are.same({ '{"v":"a"}', '{"v":"b"}' }, E.sorted(E.lines(r.stdout)))
    end)
  end)

  describe("operators", function()
    it("map, filter and flat_map chain: filter keeps truthy, flat_map emits each element, nil emits none", function()
      go([[
p:source("in", { file = "in.jsonl" })
 :filter(function(v) return v.n % 2 == 1 end)
 :map(function(v) return { n = v.n * 10 } end)
 :flat_map(function(v)
   if v.n == 50 then return nil end
   local out = {}
   for i = 1, v.n / 10 do out[i] = v.n + i end
   return out
 end)
 :map(function(n) return tostring(n) end)
 :sink("out", { file = "out", format = "lines" })
]], { ["in.jsonl"] = '{"n":1}\n{"n":2}\n{"n":3}\n{"n":4}\n{"n":5}\n' })
      assert.are.same(E.sorted({ "11", "31", "32", "33" }), E.sink_lines(dir .. "/out"))
    end)

    it("map returning nil drops the record", function()
      go([[
p:source("in", { file = "in.txt", format = "lines" })
 :map(function(v) if v ~= "drop" then return v end end)
 :sink("out", { file = "out", format = "lines" })
]], { ["in.txt"] = "a\ndrop\nb\n" })
      assert.are.same({ "a", "b" }, E.sink_lines(dir .. "/out"))
    end)

    local function keyed_input()
      local lines = {}
      for i = 1, 400 do
        lines[#lines + 1] = cjson.encode({ user = "u" .. (i % 23), id = i % 11, n = i })
      end
      return table.concat(lines, "\n") .. "\n"
    end

    local function keyed_expected()
      local out = {}
      for i = 1, 400 do out[#out + 1] = { k = "u" .. (i % 23), n = i } end
      return E.canon_all(out)
    end

    for _, par in ipairs({ 1, 4 }) do
      it("key_by a field with parallelism " .. par .. " gives each record with ctx.key = its field", function()
        go([[
p:source("in", { file = "in/*.jsonl" })
 :key_by("user", { parallelism = ]] .. par .. [[ })
 :map(function(v, ctx) return { k = ctx.key, n = v.n } end)
 :sink("out", { file = "out" })
]], { ["in/a.jsonl"] = keyed_input() })
        assert.are.same(keyed_expected(), E.sink_json(dir .. "/out"))
      end)
    end

    it("key_by with parallelism 4 sends every record of a key to the same task, and uses several tasks", function()
      go([[
p:source("in", { file = "in/*.jsonl" })
 :key_by("user", { parallelism = 4 })
 :map(function(v, ctx) return ctx.key .. " " .. ctx.task end)
 :sink("out", { file = "out", format = "lines" })
]], { ["in/a.jsonl"] = keyed_input() }, { threads = 2 })
      local task_of, tasks, n = {}, {}, 0
      for _, l in ipairs(E.sink_lines(dir .. "/out")) do
        local k, t = l:match("^(%S+) (%S+)$")
        assert.is_truthy(k, l)
        assert.is_true(task_of[k] == nil or task_of[k] == t, "key " .. k .. " went to two tasks")
        task_of[k] = t
        if not tasks[t] then tasks[t] = true; n = n + 1 end
      end
      assert.are.equal(400, #E.sink_lines(dir .. "/out"))
      assert.is_true(n > 1, "all 23 keys went to one task")
      assert.is_true(n <= 4)
      -- and the part files are one per keyed task that got records
      assert.are.equal(n, #E.part_files(dir .. "/out"))
    end)

    it("key_by a numeric field makes ctx.key its integer text, and a key function works too", function()
      go([[
local s = p:source("in", { file = "in.jsonl" })
s:key_by("id", { parallelism = 3 })
 :map(function(v, ctx) return "id " .. ctx.key .. " " .. v.n end)
 :sink("a", { file = "a", format = "lines" })
s:key_by(function(v) return v.n * 2 end, { parallelism = 2 })
 :map(function(v, ctx) return "fn " .. ctx.key end)
 :sink("b", { file = "b", format = "lines" })
]], { ["in.jsonl"] = '{"id":7,"n":1}\n{"id":12345678901,"n":2}\n{"id":-3,"n":3}\n' })
      assert.are.same(E.sorted({ "id 7 1", "id 12345678901 2", "id -3 3" }), E.sink_lines(dir .. "/a"))
      assert.are.same({ "fn 2", "fn 4", "fn 6" }, E.sink_lines(dir .. "/b"))
    end)

    it("union merges two sources into one stream", function()
      go([[
local a = p:source("a", { file = "a.txt", format = "lines" })
local b = p:source("b", { file = "b.jsonl", format = "json" })
  :map(function(v) return v.w end)
a:union(b)
 :map(function(v, ctx) return ctx.source .. ":" .. v end)
 :sink("out", { file = "out", format = "lines" })
]], { ["a.txt"] = "x\ny\n", ["b.jsonl"] = '{"w":"p"}\n{"w":"q"}\n{"w":"r"}\n' })
      assert.are.same({ "a:x", "a:y", "b:p", "b:q", "b:r" }, E.sink_lines(dir .. "/out"))
    end)

    it("union of three streams, then key_by, keeps every record once", function()
      go([[
local a = p:source("a", { file = "a.txt", format = "lines" })
local b = p:source("b", { file = "b.txt", format = "lines" })
local c = p:source("c", { file = "c.txt", format = "lines" })
a:union(b, c)
 :key_by(function(v) return v end, { parallelism = 2 })
 :sink("out", { file = "out", format = "lines" })
]], { ["a.txt"] = "1\n2\n", ["b.txt"] = "3\n", ["c.txt"] = "4\n5\n" })
      assert.are.same({ "1", "2", "3", "4", "5" }, E.sink_lines(dir .. "/out"))
    end)

    it("a stream feeding two operators gives every record to both (fan-out, not a split)", function()
      go([[
local s = p:source("in", { file = "in.txt", format = "lines" })
s:map(function(v) return "1:" .. v end):sink("one", { file = "one", format = "lines" })
s:filter(function(v) return v ~= "b" end):sink("two", { file = "two", format = "lines" })
s:key_by(function(v) return v end, { parallelism = 2 }):sink("three", { file = "three", format = "lines" })
]], { ["in.txt"] = "a\nb\nc\n" })
      assert.are.same({ "1:a", "1:b", "1:c" }, E.sink_lines(dir .. "/one"))
      assert.are.same({ "a", "c" }, E.sink_lines(dir .. "/two"))
      assert.are.same({ "a", "b", "c" }, E.sink_lines(dir .. "/three"))
    end)

    it("a glob makes one partition per matched file: ctx.partition is the file's index", function()
      go([[
p:source("in", { file = "in/*.txt", format = "lines" })
 :map(function(v, ctx) return v .. " " .. ctx.partition .. " " .. ctx.task end)
 :sink("out", { file = "out", format = "lines" })
]], { ["in/a.txt"] = "a\n", ["in/b.txt"] = "b\n", ["in/c.txt"] = "c\n" })
      assert.are.same({ "a 0 in-0", "b 1 in-1", "c 2 in-2" }, E.sink_lines(dir .. "/out"))
      assert.are.equal(3, #E.part_files(dir .. "/out"))
    end)
  end)

  describe("sources", function()
    it("config.sources.NAME.file overrides the script's file, resolved against the config's folder", function()
      E.write(dir .. "/app/pipeline.lua", pipeline([[
p:source("in", { file = "script-input.txt", format = "lines" })
 :sink("out", { file = "out", format = "lines" })
]]))
      E.write(dir .. "/app/script-input.txt", "from the script\n")
      E.write(dir .. "/conf/data/override.txt", "from the config\n")
      E.write_config(dir .. "/conf", { pipeline = "../app/pipeline.lua",
        sources = { ["in"] = { file = "data/override.txt" } } })
      -- run from elsewhere: relative paths follow the files, not the working directory
      local r = E.run({ "run", "conf/eddy.conf.lua" }, { cwd = dir })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.same({ "from the config" }, E.sink_lines(dir .. "/app/out"))
    end)

    it("a source's file relative to the script's folder, whatever the working directory", function()
      E.write(dir .. "/app/pipeline.lua", pipeline([[
p:source("in", { file = "data/*.txt", format = "lines" }):sink("out", { file = "out", format = "lines" })
]]))
      E.write(dir .. "/app/data/x.txt", "x\n")
      E.write_config(dir, { pipeline = "app/pipeline.lua" })
      local r = E.run({ "run", dir .. "/eddy.conf.lua" }, { cwd = "/" })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.same({ "x" }, E.sink_lines(dir .. "/app/out"))
    end)

    it("stdin = true reads what is piped into eddy, to the end", function()
      local r = go([[
p:source("in", { stdin = true, format = "lines" })
 :map(function(v, ctx) return v:upper() .. " " .. ctx.line end)
 :sink("out", { stdout = true, format = "lines" })
]], {}, {}, { stdin = "one\ntwo\nthree\n" })
      assert.are.same({ "ONE 1", "THREE 3", "TWO 2" }, E.sorted(E.lines(r.stdout)))
    end)

    it("stdin with json format and a file sink", function()
      go([[
p:source("in", { stdin = true })
 :map(function(v) return { sum = v.a + v.b } end)
 :sink("out", { file = "out" })
]], {}, {}, { stdin = '{"a":1,"b":2}\n{"a":10,"b":20}\n' })
      assert.are.same(E.sorted({ '{"sum":3}', '{"sum":30}' }), E.sink_lines(dir .. "/out"))
    end)

    it("an empty input file gives an empty run that exits 0", function()
      go([[
p:source("in", { file = "in.txt", format = "lines" }):sink("out", { file = "out", format = "lines" })
]], { ["in.txt"] = "" })
      assert.are.same({}, E.sink_lines(dir .. "/out"))
    end)
  end)

  describe("with a 20,000-line input across 3 files", function()
    local N = 20000
    local expected

    -- generated once: 3 files of json lines; the pipeline keeps odd n, keys
    -- by word, and writes "word n n*3 partition"
    local function generate(d)
      local rnd = E.rng(42)
      local words = { "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta" }
      local files = { {}, {}, {} }
      local exp = {}
      for i = 1, N do
        local f = (i % 3) + 1
        local w = words[rnd(#words) + 1] .. rnd(50)
        files[f][#files[f] + 1] = string.format('{"w":"%s","n":%d}', w, i)
        if i % 2 == 1 then
          exp[#exp + 1] = string.format("%s %d %d %d", w, i, i * 3, f - 1)
          if i % 5 == 0 then exp[#exp + 1] = string.format("%s %d extra", w, i) end
        end
      end
      for f = 1, 3 do E.write(string.format("%s/in/part-%d.jsonl", d, f), table.concat(files[f], "\n") .. "\n") end
      table.sort(exp)
      return exp
    end

    for _, case in ipairs({
      { threads = 1 }, { threads = 2 },
      -- tiny batches and one-batch channels: backpressure everywhere
      { threads = 2, tuning = { batch = 7, channel = 1 } },
    }) do
      local threads = case.threads
      it("threads = " .. threads .. (case.tuning and " with tuning.batch = 7, tuning.channel = 1" or "")
          .. " writes exactly the expected lines", function()
        expected = generate(dir)
        go([[
p:source("in", { file = "in/part-*.jsonl" })
 :filter(function(v) return v.n % 2 == 1 end)
 :flat_map(function(v, ctx)
   local out = { { w = v.w, n = v.n, p = ctx.partition } }
   if v.n % 5 == 0 then out[2] = { w = v.w, n = v.n, extra = true } end
   return out
 end)
 :key_by("w", { parallelism = 3 })
 :map(function(v, ctx)
   if v.extra then return ctx.key .. " " .. v.n .. " extra" end
   return ctx.key .. " " .. v.n .. " " .. (v.n * 3) .. " " .. v.p
 end)
 :sink("out", { file = "out", format = "lines" })
]], {}, { threads = threads, tuning = case.tuning })
        local got = E.sink_lines(dir .. "/out")
        assert.are.equal(#expected, #got)
        assert.is_true(expected[1] == got[1] and expected[#expected] == got[#got])
        local same = true
        for i = 1, #expected do if expected[i] ~= got[i] then same = false; break end end
        assert.is_true(same, "the output differs from the expected lines")
      end)
    end
  end)
end)
