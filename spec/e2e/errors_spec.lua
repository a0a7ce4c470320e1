-- Errors: a user function raising, malformed input, a value a sink cannot
-- encode — under each on_error policy — and errors in the pipeline script
-- itself, found before processing starts.

local E = require("support.eddy")
local cjson = require("cjson")

local function pipeline(body)
  return 'local eddy = require("eddy")\nlocal p = eddy.pipeline()\n' .. body .. '\nreturn p\n'
end

-- line 3 of the script is the source, line 4 the map (uid checker) whose
-- function raises on line 6 for n == 0
local FAILING = pipeline([[
p:source("in", { file = "in.jsonl" })
 :map(function(v)
   if v.n == 0 then
     error("zero is not allowed")
   end
   return v
 end):uid("checker")
 :sink("out", { file = "out", format = "json" })]])

local INPUT = '{"n":1}\n{"n":0}\n{"n":2}\n'   -- the bad record: line 2, byte 8

describe("on_error", function()
  local dir

  before_each(function() dir = E.tmpdir() end)
  after_each(E.cleanup)

  local function setup(script, files, config)
    E.write(dir .. "/pipeline.lua", script)
    for name, content in pairs(files) do E.write(dir .. "/" .. name, content) end
    E.write_config(dir, config)
    return E.run_config(dir)
  end

  local function dead_letters(path)
    return E.json_lines(path or (dir .. "/state/spec/dead-letter.jsonl"))
  end

  describe("a runtime error in a map function", function()
    it("under 'fail' (the default) exits 1 naming the operator kind, uid, declaration, the error's line and the input position", function()
      local r = setup(FAILING, { ["in.jsonl"] = INPUT }, {})
      assert.are.equal(1, r.code)
      local err = r.stderr
      assert.matches("operator map (uid checker, pipeline.lua:4)", err, 1, true)
      assert.matches("pipeline.lua:6: zero is not allowed", err, 1, true)
      assert.matches("in " .. dir .. "/in.jsonl:2 (byte 8)", err, 1, true)
      -- the final line says which task failed
      assert.matches("eddy: task in%-0 failed: ", err)
    end)

    it("under 'skip' drops the record, writes the others, logs it and exits 0", function()
      local r = setup(FAILING, { ["in.jsonl"] = INPUT }, { on_error = "skip" })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.same({ '{"n":1}', '{"n":2}' }, E.sink_lines(dir .. "/out"))
      assert.matches("skipped", r.stderr)
      assert.matches("operator map (uid checker, pipeline.lua:4)", r.stderr, 1, true)
      assert.matches("pipeline.lua:6: zero is not allowed", r.stderr, 1, true)
      assert.is_false(E.exists(dir .. "/state/spec/dead-letter.jsonl"))
    end)

    it("under 'dead_letter' writes one JSON line with every field to state.dir/dead-letter.jsonl and exits 0", function()
      local r = setup(FAILING, { ["in.jsonl"] = INPUT }, { on_error = "dead_letter" })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.same({ '{"n":1}', '{"n":2}' }, E.sink_lines(dir .. "/out"))
      local dl = dead_letters()
      assert.are.equal(1, #dl)
      local d = dl[1]
      assert.are.equal("in-0", d.task)
      assert.are.equal("in", d.source)
      assert.are.equal(dir .. "/in.jsonl", d.file)
      assert.are.equal(0, d.partition)
      assert.are.equal(8, d.offset)
      assert.are.equal(2, d.line)
      assert.are.equal("checker", d.operator)
      assert.are.equal("map", d.operator_kind)
      assert.are.equal("pipeline.lua:4", d.operator_where)
      assert.are.equal("pipeline.lua:6: zero is not allowed", d.error)
      assert.are.equal('{"n":0}', d.record)
      assert.are.equal("number", type(d.time))
      -- ms since the epoch, about now
      assert.is_true(math.abs(d.time / 1000 - os.time()) < 120, "time is not ms since the epoch: " .. d.time)
      assert.are.equal("string", type(d.traceback))
      assert.matches("stack traceback:", d.traceback, 1, true)
      assert.matches("pipeline.lua:6", d.traceback, 1, true)
    end)

    it("under 'dead_letter' writes to dead_letter.file when the config names one, relative to the config's folder", function()
      E.mkdirs(dir .. "/bad")
      local r = setup(FAILING, { ["in.jsonl"] = INPUT },
        { on_error = "dead_letter", dead_letter = { file = "bad/records.jsonl" } })
      assert.are.equal(0, r.code, r.stderr)
      local dl = dead_letters(dir .. "/bad/records.jsonl")
      assert.are.equal(1, #dl)
      assert.are.equal('{"n":0}', dl[1].record)
      assert.is_false(E.exists(dir .. "/state/spec/dead-letter.jsonl"))
    end)

    it("under 'dead_letter' the default file is <state.dir>/dead-letter.jsonl, state.dir relative to the config's folder", function()
      local r = setup(FAILING, { ["in.jsonl"] = INPUT }, { on_error = "dead_letter", state = { dir = "my-state" } })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal(1, #dead_letters(dir .. "/my-state/dead-letter.jsonl"))
      assert.is_false(E.exists(dir .. "/state"))
    end)

    it("with log.format = \"json\" every log line is a JSON object, the skipped record's with its task", function()
      local r = setup(FAILING, { ["in.jsonl"] = INPUT }, { on_error = "skip", log = { format = "json" } })
      assert.are.equal(0, r.code, r.stderr)
      local found
      for _, line in ipairs(E.lines(r.stderr)) do
        local ok, obj = pcall(cjson.decode, line)
        assert.is_true(ok and type(obj) == "table", "not a JSON line: " .. line)
        assert.is_string(obj.ts)
        assert.is_string(obj.level)
        assert.is_string(obj.msg)
        if obj.msg:find("zero is not allowed", 1, true) then found = obj end
      end
      assert.is_table(found, r.stderr)
      assert.are.equal("warn", found.level)
      assert.are.equal("in-0", found.task)
    end)

    it("a dead_letter.file in a folder that does not exist is created (or refused before processing), not a failure mid-run", function()
      local r = setup(FAILING, { ["in.jsonl"] = INPUT },
        { on_error = "dead_letter", dead_letter = { file = "missing/records.jsonl" } })
      if r.code == 2 then
        assert.matches("dead_letter.file", r.stderr, 1, true)
        assert.is_false(E.exists(dir .. "/out"))
      else
        assert.are.equal(0, r.code, r.stderr)
        assert.are.equal(1, #dead_letters(dir .. "/missing/records.jsonl"))
      end
    end)

    it("under 'dead_letter' keeps the record's bytes exactly, spaces and escapes included", function()
      local bad = '{ "n" : 0 , "s" : "a\\"b\\u00e9" }'
      local r = setup(FAILING, { ["in.jsonl"] = '{"n":1}\n' .. bad .. '\n' }, { on_error = "dead_letter" })
      assert.are.equal(0, r.code, r.stderr)
      local dl = dead_letters()
      assert.are.equal(1, #dl)
      assert.are.equal(bad, dl[1].record)
    end)

    it("under 'skip' keeps going past many bad records and rate-limits their log lines", function()
      local lines = {}
      for i = 1, 300 do lines[i] = '{"n":' .. (i % 3) .. '}' end   -- every third one is n == 0
      local r = setup(FAILING, { ["in.jsonl"] = table.concat(lines, "\n") .. "\n" }, { on_error = "skip" })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal(200, #E.sink_lines(dir .. "/out"))
      local logged = select(2, r.stderr:gsub("zero is not allowed", ""))
      assert.is_true(logged >= 1 and logged < 100, "logged " .. logged .. " of 100 skipped records")
    end)

    it("in a keyed stage is attributed to the keyed operator and the original input position", function()
      local r = setup(pipeline([[
p:source("in", { file = "in.jsonl" })
 :key_by("k", { parallelism = 2 })
 :map(function(v) return 10 / v.n .. v.oops.field end):uid("divide")
 :sink("out", { file = "out", format = "lines" })]]), { ["in.jsonl"] = '{"k":"a","n":1,"oops":{"field":"x"}}\n{"k":"b","n":2}\n' },
        { on_error = "dead_letter" })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.same({ "10x" }, E.sink_lines(dir .. "/out"))
      local dl = dead_letters()
      assert.are.equal(1, #dl)
      assert.are.equal("divide", dl[1].operator)
      assert.are.equal("map", dl[1].operator_kind)
      assert.are.equal("pipeline.lua:5", dl[1].operator_where)
      assert.matches("^keyed", dl[1].task)
      assert.are.equal(2, dl[1].line)
      assert.are.equal(37, dl[1].offset)
      assert.are.equal(dir .. "/in.jsonl", dl[1].file)
      assert.are.same({ k = "b", n = 2 }, cjson.decode(dl[1].record))
      assert.matches("pipeline.lua:5: attempt to index field 'oops'", dl[1].error, 1, true)
    end)

    it("key_by on a record without the key field goes to the policy, attributed to the key_by", function()
      local r = setup(pipeline([[
p:source("in", { file = "in.jsonl" })
 :key_by("k"):uid("by-k")
 :sink("out", { file = "out" })]]), { ["in.jsonl"] = '{"k":"a"}\n{"x":1}\n' }, { on_error = "fail" })
      assert.are.equal(1, r.code)
      assert.matches("operator key_by (uid by-k, pipeline.lua:4)", r.stderr, 1, true)
      assert.matches("no field 'k'", r.stderr, 1, true)
      assert.matches("in.jsonl:2 (byte 10)", r.stderr, 1, true)
    end)
  end)

  describe("malformed JSON input", function()
    local BROKEN = '{"n":1}\n{"n":2\n{"n":3}\n'   -- line 2, byte 8
    local PASS = pipeline([[
p:source("in", { file = "in.jsonl" }):sink("out", { file = "out" })]])

    it("under 'fail' exits 1 naming the source operator, 'malformed json' and the position", function()
      local r = setup(PASS, { ["in.jsonl"] = BROKEN }, {})
      assert.are.equal(1, r.code)
      assert.matches("operator source in (uid in, pipeline.lua:3)", r.stderr, 1, true)
      assert.matches("malformed json: ", r.stderr, 1, true)
      assert.matches("in.jsonl:2 (byte 8)", r.stderr, 1, true)
    end)

    it("under 'skip' drops the broken line and keeps the rest", function()
      local r = setup(PASS, { ["in.jsonl"] = BROKEN }, { on_error = "skip" })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.same({ '{"n":1}', '{"n":3}' }, E.sink_lines(dir .. "/out"))
      assert.matches("malformed json", r.stderr, 1, true)
    end)

    it("under 'dead_letter' records the broken line's bytes, attributed to the source", function()
      local r = setup(PASS, { ["in.jsonl"] = BROKEN }, { on_error = "dead_letter" })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.same({ '{"n":1}', '{"n":3}' }, E.sink_lines(dir .. "/out"))
      local dl = dead_letters()
      assert.are.equal(1, #dl)
      assert.are.equal('{"n":2', dl[1].record)
      assert.are.equal("in", dl[1].operator)
      assert.are.equal("source", dl[1].operator_kind)
      assert.are.equal("pipeline.lua:3", dl[1].operator_where)
      assert.are.equal(2, dl[1].line)
      assert.are.equal(8, dl[1].offset)
      assert.matches("^malformed json: ", dl[1].error)
    end)
  end)

  describe("bad CSV input", function()
    -- line 2 has a quote in the middle of a quoted field; the record from
    -- line 4 never closes its quote
    local BAD = 'a,b\n1,"x"y\n2,ok\n3,"unterminated\n'
    local CSV = pipeline([[
p:source("in", { file = "in.csv", format = "csv" })
 :map(function(v) return table.concat(v, "|") end)
 :sink("out", { file = "out", format = "lines" })]])

    it("under 'fail' exits 1 with a 'csv: ' error naming the source and the position", function()
      local r = setup(CSV, { ["in.csv"] = BAD }, {})
      assert.are.equal(1, r.code)
      assert.matches("operator source in (uid in, pipeline.lua:3)", r.stderr, 1, true)
      assert.matches("csv: ", r.stderr, 1, true)
      assert.matches("in.csv:2 (byte 4)", r.stderr, 1, true)
    end)

    it("under 'skip' drops the bad records and keeps the good ones", function()
      local r = setup(CSV, { ["in.csv"] = BAD }, { on_error = "skip" })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.same({ "2|ok", "a|b" }, E.sink_lines(dir .. "/out"))
    end)

    it("under 'dead_letter' records a bad record's bytes and position", function()
      local r = setup(CSV, { ["in.csv"] = BAD }, { on_error = "dead_letter" })
      assert.are.equal(0, r.code, r.stderr)
      local dl = dead_letters()
      assert.are.equal(2, #dl)
      table.sort(dl, function(a, b) return a.line < b.line end)
      assert.are.equal(2, dl[1].line)
      assert.are.equal(4, dl[1].offset)
      assert.are.equal('1,"x"y\n', dl[1].record)
      assert.matches("^csv: ", dl[1].error)
      assert.are.equal("source", dl[1].operator_kind)
      assert.are.equal(4, dl[2].line)
      assert.are.equal(16, dl[2].offset)
      assert.matches("^csv: .*unterminated", dl[2].error)
    end)

    it("under 'dead_letter' keeps the bytes of a record whose quote never closes", function()
      local r = setup(CSV, { ["in.csv"] = BAD }, { on_error = "dead_letter" })
      assert.are.equal(0, r.code, r.stderr)
      local dl = dead_letters()
      table.sort(dl, function(a, b) return a.line < b.line end)
      assert.are.equal(2, #dl)
      assert.are.equal('3,"unterminated\n', dl[2].record)
    end)
  end)

  describe("a value a sink cannot encode", function()
    it("a table to a lines sink goes to the policy, attributed to the sink", function()
      local r = setup(pipeline([[
p:source("in", { file = "in.txt", format = "lines" })
 :map(function(v) if v == "t" then return { v } end return v end)
 :sink("out", { file = "out", format = "lines" })]]), { ["in.txt"] = "a\nt\nb\n" }, { on_error = "dead_letter" })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.same({ "a", "b" }, E.sink_lines(dir .. "/out"))
      local dl = dead_letters()
      assert.are.equal(1, #dl)
      assert.are.equal("out", dl[1].operator)
      assert.are.equal("sink", dl[1].operator_kind)
      assert.are.equal("pipeline.lua:5", dl[1].operator_where)
      assert.are.equal("t", dl[1].record)
      assert.matches("sink 'out'", dl[1].error, 1, true)
    end)

    it("a function inside a table to a json sink goes to the policy; under 'fail' exit 1 naming the sink", function()
      local script = pipeline([[
p:source("in", { file = "in.txt", format = "lines" })
 :map(function(v) if v == "f" then return { f = print } end return { v = v } end)
 :sink("out", { file = "out", format = "json" })]])
      local r = setup(script, { ["in.txt"] = "a\nf\nb\n" }, { on_error = "skip" })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.same({ '{"v":"a"}', '{"v":"b"}' }, E.sink_lines(dir .. "/out"))
      r = setup(script, { ["in.txt"] = "a\nf\nb\n" }, { on_error = "fail" })
      assert.are.equal(1, r.code)
      assert.matches("operator sink out (uid out, pipeline.lua:5)", r.stderr, 1, true)
      assert.matches("in.txt:2 (byte 2)", r.stderr, 1, true)
    end)
  end)
end)

describe("an error in the pipeline script", function()
  local dir

  before_each(function()
    dir = E.tmpdir()
    E.write(dir .. "/in.jsonl", '{"n":1}\n')
    E.write_config(dir, {})
  end)
  after_each(E.cleanup)

  local function check_exit2(script)
    E.write(dir .. "/pipeline.lua", script)
    local r = E.run_config(dir)
    assert.are.equal(2, r.code, r.stderr)
    assert.is_false(E.exists(dir .. "/out"), "output was written")
    return r
  end

  it("a syntax error exits 2 with pipeline.lua:LINE: before processing", function()
    local r = check_exit2(pipeline([[
p:source("in", { file = "in.jsonl" }
 :sink("out", { file = "out" })]]))
    assert.matches("pipeline.lua:4:", r.stderr, 1, true)
    assert.matches("expected", r.stderr, 1, true)
    -- eddy check says the same
    local c = E.run({ "check", dir .. "/pipeline.lua" })
    assert.are.equal(2, c.code)
    assert.matches("pipeline.lua:4:", c.stderr, 1, true)
  end)

  it("error() while building exits 2 naming pipeline.lua:LINE", function()
    local r = check_exit2(pipeline([[
local s = p:source("in", { file = "in.jsonl" })
error("not today")
s:sink("out", { file = "out" })]]))
    assert.matches("pipeline.lua:4: not today", r.stderr, 1, true)
  end)

  it("a runtime error while building (indexing nil) exits 2 naming pipeline.lua:LINE", function()
    local r = check_exit2(pipeline([[
local s = p:source("in", { file = "in.jsonl" })
local cfg = nil
s:sink("out", { file = cfg.dir })]]))
    assert.matches("pipeline.lua:5:", r.stderr, 1, true)
  end)

  -- every mistake in a call of the pipeline API points at the user's line,
  -- never into eddy's own files
  for _, case in ipairs({
    { what = "a source without file/stdin", call = 'p:source("in", {})', says = "needs exactly one of file, stdin, kafka" },
    { what = "an unknown source format", call = 'p:source("in", { file = "in.jsonl", format = "xml" })', says = "unknown format 'xml'" },
    { what = "an unknown source option", call = 'p:source("in", { file = "in.jsonl", colour = "red" })', says = "unknown option 'colour'" },
    { what = "a source option of the wrong type", call = 'p:source("in", { file = 3 })', says = "option 'file' must be a string" },
    { what = "map without a function", call = 'p:source("in", { file = "in.jsonl" }):map(1)', says = "map needs a function" },
    { what = "an unknown sink option", call = 'p:source("in", { file = "in.jsonl" }):sink("o", { file = "o", fmt = 1 })', says = "unknown option 'fmt'" },
    { what = "a kafka option on a file source", call = 'p:source("in", { file = "in.jsonl", start = "earliest" })', says = "start is for kafka sources" },
    { what = "a join with a bad option", call = 'p:source("in", { file = "in.jsonl" }):key_by("k"):to_table():join(p:source("b", { file = "in.jsonl" }):key_by("k"):to_table(), function() end, { within = "1m" })', says = "a join of two tables takes no options" },
    { what = "a kafka source with a bad start", call = 'p:source("in", { kafka = "topic", start = "soon" })', says = "start must be" },
  }) do
    it(case.what .. " exits 2 with the message and pipeline.lua:LINE of the call", function()
      local r = check_exit2(pipeline(case.call))
      assert.matches(case.says, r.stderr, 1, true)
      assert.matches("pipeline.lua:3:", r.stderr, 1, true)
      assert.is_nil(r.stderr:find("init.lua", 1, true), "the error points into eddy's own code: " .. r.stderr)
    end)
  end

  it("a sink folder that cannot be made (a file is in the way) exits 2 naming the sink before processing", function()
    E.write(dir .. "/out", "a file, not a folder\n")
    E.write(dir .. "/pipeline.lua", pipeline([[
p:source("in", { file = "in.jsonl" }):sink("results", { file = "out" })]]))
    local r = E.run_config(dir)
    assert.are.equal(2, r.code, r.stderr)
    assert.matches("sink 'results'", r.stderr, 1, true)
    assert.are.equal("a file, not a folder\n", E.read(dir .. "/out"))
  end)

  it("a script that does not return the pipeline exits 2 saying 'return p'", function()
    E.write(dir .. "/pipeline.lua", 'local eddy = require("eddy")\nlocal p = eddy.pipeline()\n'
      .. 'p:source("in", { file = "in.jsonl" }):sink("out", { file = "out" })\n')
    local r = E.run_config(dir)
    assert.are.equal(2, r.code)
    assert.matches("return p", r.stderr, 1, true)
  end)

  it("a required module with a syntax error exits 2 naming the module's file and line", function()
    E.write(dir .. "/helper.lua", "local M = {}\nfunction M.f(v) return v end\nlocal broken =\nreturn M\n")
    local r = check_exit2('local eddy = require("eddy")\nlocal h = require("helper")\nlocal p = eddy.pipeline()\n'
      .. 'p:source("in", { file = "in.jsonl" }):map(h.f):sink("out", { file = "out" })\nreturn p\n')
    assert.matches("helper.lua:4:", r.stderr, 1, true)
    assert.matches("pipeline.lua:2", r.stderr, 1, true)
  end)

  it("a required module with a syntax error is not reported as 'not found'", function()
    E.write(dir .. "/helper.lua", "local M = {}\nlocal broken =\nreturn M\n")
    local r = check_exit2('local eddy = require("eddy")\nlocal h = require("helper")\nlocal p = eddy.pipeline()\n'
      .. 'p:source("in", { file = "in.jsonl" }):sink("out", { file = "out" })\nreturn p\n')
    assert.matches("helper.lua:3:", r.stderr, 1, true)
    assert.is_nil(r.stderr:find("not found", 1, true), r.stderr)
  end)

  it("a required module raising while it loads exits 2 naming the module's line", function()
    E.write(dir .. "/helper.lua", "local M = {}\nerror('helper refuses')\nreturn M\n")
    local r = check_exit2('local eddy = require("eddy")\nlocal h = require("helper")\nlocal p = eddy.pipeline()\n'
      .. 'p:source("in", { file = "in.jsonl" }):sink("out", { file = "out" })\nreturn p\n')
    assert.matches("helper.lua:2: helper refuses", r.stderr, 1, true)
  end)

  it("a module that does not exist exits 2 naming it", function()
    local r = check_exit2('local eddy = require("eddy")\nlocal h = require("nothere")\nlocal p = eddy.pipeline()\n'
      .. 'p:source("in", { file = "in.jsonl" }):sink("out", { file = "out" })\nreturn p\n')
    assert.matches("pipeline.lua:2", r.stderr, 1, true)
    assert.matches("module 'nothere' not found", r.stderr, 1, true)
  end)

  it("an error raised by a module's function at run time names the module's line and the operator", function()
    E.write(dir .. "/helper.lua", "local M = {}\nfunction M.f(v)\n  return v.x.y\nend\nreturn M\n")
    E.write(dir .. "/pipeline.lua", 'local eddy = require("eddy")\nlocal h = require("helper")\nlocal p = eddy.pipeline()\n'
      .. 'p:source("in", { file = "in.jsonl" }):map(h.f):uid("helped"):sink("out", { file = "out" })\nreturn p\n')
    local r = E.run_config(dir)
    assert.are.equal(1, r.code)
    assert.matches("helper.lua:3: attempt to index field 'x'", r.stderr, 1, true)
    assert.matches("operator map (uid helped, pipeline.lua:4)", r.stderr, 1, true)
    assert.matches("in.jsonl:1 (byte 0)", r.stderr, 1, true)
  end)
end)
