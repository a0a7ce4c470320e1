-- `eddy test` (issue #18): the driver's own tests (spec/fixtures/testing:
-- fire times of every window kind and trigger under a moved watermark and
-- clock, timers, TTL, joins, reloads and refusals, the error policy,
-- determinism) and the examples' tests all pass; the tests that fail on
-- purpose (spec/fixtures/testing-failing, named so that no folder search
-- finds them: they are given by path) fail as the contract says: exit 1
-- with the path of the difference and both values, exit 2 for a test file
-- that does not load (file:line) and for a missing PATH.
local E = require("support.eddy")

local function q(s) return E.quote(s) end

-- eddy(args): runs `eddy test ARGS` in the repository's root; returns its
-- exit status, stdout and stderr
local function eddy(args)
  local dir = E.tmpdir()
  local rc = E.sh(string.format("cd %s && timeout 300 %s test %s >%s/out 2>%s/err",
    q(E.root), q(E.bin), args, dir, dir))
  return rc, E.read(dir .. "/out") or "", E.read(dir .. "/err") or ""
end

-- the tests the *_test.lua files under dir register (T.test at a line's start)
local function registered(dir)
  local n = 0
  for file in io.popen("find " .. q(E.root .. "/" .. dir) .. " -name '*_test.lua'"):lines() do
    for line in io.lines(file) do
      if line:match("^T%.test%(") then n = n + 1 end
    end
  end
  return n
end

-- checks a run where every test passed: exit 0, one ok line per registered
-- test, the summary "N passed, 0 failed"
local function all_pass(dir)
  local rc, out, err = eddy(dir)
  local want = registered(dir)
  assert.is_true(want > 0, "no test found under " .. dir)
  local oks = 0
  for _ in out:gmatch("\nok %d+ %- ") do oks = oks + 1 end
  if out:match("^ok %d+ %- ") then oks = oks + 1 end
  assert.are.equal(0, rc, out .. err)
  assert.is_nil(out:find("not ok", 1, true), out)
  assert.are.equal(want, oks, out)
  assert.are.equal(want .. " passed, 0 failed", out:match("([^\n]*)\n?$"), out)
end

describe("eddy test", function()
  after_each(function() E.cleanup() end)

  it("passes every test of the driver's own fixtures", function()
    all_pass("spec/fixtures/testing")
  end)

  it("passes the examples' tests", function()
    all_pass("examples")
  end)

  it("runs one test file given by its path", function()
    local rc, out = eddy("examples/wordcount/pipeline_test.lua")
    assert.are.equal(0, rc, out)
    assert.truthy(out:find("ok 1 - examples/wordcount/pipeline_test.lua: counts words per minute", 1, true), out)
    assert.truthy(out:match("\n3 passed, 0 failed\n?$"), out)
  end)

  it("a failing T.eq exits 1, shows where the tables differ and both values; the other tests still run", function()
    local rc, out, err = eddy("spec/fixtures/testing-failing/eq/eq_fails.lua")
    assert.are.equal(1, rc, out .. err)
    local file = "spec/fixtures/testing-failing/eq/eq_fails.lua"
    assert.truthy(out:find("ok 1 - " .. file .. ": passes", 1, true), out)
    assert.truthy(out:find("not ok 2 - " .. file .. ": differs at [1].n", 1, true), out)
    -- the first difference's path (contract: "T.eq: at [1].n: ..."; the colon after T.eq optional)
    assert.truthy(out:find("eq_fails.lua:13: T.eq: at [1].n: expected 2, got 3", 1, true)
      or out:find("eq_fails.lua:13: T.eq at [1].n: expected 2, got 3", 1, true), out)
    -- both values, pretty-printed with sorted keys: the expected n = 2, the actual n = 3
    local block = out:match("not ok 2 %- .-\nnot ok 3") or out
    -- (as Lua, n = 2, or as JSON, "n": 2)
    local function shows(field, value)
      return block:find(field .. " = " .. value, 1, true) or block:find(field .. "=" .. value, 1, true)
        or block:find('"' .. field .. '": ' .. value, 1, true) or block:find('"' .. field .. '":' .. value, 1, true)
    end
    assert.truthy(shows("card", '"c2"'), block)
    assert.truthy(shows("n", "2"), block)
    assert.truthy(shows("n", "3"), block)
    assert.truthy(out:find("not ok 3 - " .. file .. ": raises an error", 1, true), out)
    assert.truthy(out:find("boom from the test", 1, true), out)
    assert.truthy(out:find("not ok 4 - " .. file .. ": a task fails", 1, true), out)
    assert.truthy(out:match("task %S+ failed: [^\n]*cannot divide by zero"), out)
    assert.truthy(out:find("ok 5 - " .. file .. ": passes after the failures", 1, true), out)
    assert.truthy(out:match("\n2 passed, 3 failed\n?$"), out)
  end)

  it("a test file that does not load exits 2 naming file:line", function()
    local rc, out, err = eddy("spec/fixtures/testing-failing/syntax/broken.lua")
    assert.are.equal(2, rc, out .. err)
    assert.truthy((out .. err):find("spec/fixtures/testing-failing/syntax/broken.lua:4:", 1, true), out .. err)
  end)

  it("a PATH that does not exist exits 2 naming it", function()
    local rc, out, err = eddy("spec/fixtures/no-such-folder")
    assert.are.equal(2, rc, out .. err)
    assert.truthy((out .. err):find("spec/fixtures/no-such-folder", 1, true), out .. err)
  end)

  it("a folder without a test file exits 2", function()
    local rc, out, err = eddy("spec/fixtures/testing-failing")
    assert.are.equal(2, rc, out .. err)
    assert.truthy((out .. err):find("spec/fixtures/testing-failing", 1, true), out .. err)
  end)
end)
