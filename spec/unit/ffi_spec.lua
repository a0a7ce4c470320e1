-- The ffi.cdef in lua/eddy/ffi.lua must declare exactly what core/ffi_api.h
-- declares between "/* FFI-BEGIN" and "/* FFI-END */": comments and
-- whitespace aside, the two agree token by token.  `make test` runs this, so
-- the build checks that the C and Lua views of the FFI agree.

local H = require("unit.helpers")
local ffi = require("ffi")

-- the project root: $EDDY_ROOT, else two folders up from this spec
local function root()
  local r = os.getenv("EDDY_ROOT")
  if r and r ~= "" then return r end
  local src = debug.getinfo(1, "S").source:gsub("^@", "")
  local d = src:match("^(.*)/spec/unit/ffi_spec%.lua$")
  if d then return d end
  return "."
end

local function read(path)
  local f = assert(io.open(path, "r"))
  local s = f:read("*a")
  f:close()
  return s
end

local function strip_comments(s)
  s = s:gsub("/%*.-%*/", " ")
  s = s:gsub("//[^\n]*", " ")
  return s
end

-- identifiers and numbers are one token each; any other non-space character is a token
local function tokens(s)
  local t = {}
  s = strip_comments(s)
  local i, n = 1, #s
  while i <= n do
    local c = s:sub(i, i)
    if c:match("%s") then
      i = i + 1
    elseif c:match("[%w_]") then
      local j = s:find("[^%w_]", i) or n + 1
      t[#t + 1] = s:sub(i, j - 1)
      i = j
    else
      t[#t + 1] = c
      i = i + 1
    end
  end
  return t
end

-- the declarations between the FFI-BEGIN comment and the FFI-END comment
local function ffi_region(header)
  local b = header:find("/* FFI-BEGIN", 1, true)
  assert(b, "core/ffi_api.h has no /* FFI-BEGIN marker")
  local after = header:find("*/", b, true)
  assert(after, "the FFI-BEGIN comment is not closed")
  local e = header:find("/* FFI-END */", after, true)
  assert(e, "core/ffi_api.h has no /* FFI-END */ marker after FFI-BEGIN")
  assert(not header:find("/* FFI-BEGIN", after, true), "core/ffi_api.h has two FFI-BEGIN markers")
  return header:sub(after + 2, e - 1)
end

-- nil when a and b agree, else a message naming the first difference
local function compare(c_decls, lua_decls)
  local a, b = tokens(c_decls), tokens(lua_decls)
  for i = 1, math.max(#a, #b) do
    if a[i] ~= b[i] then
      local function around(t)
        local lo = math.max(1, i - 8)
        return table.concat(t, " ", lo, math.min(#t, i + 4))
      end
      return string.format("token %d differs: core/ffi_api.h has %s, lua/eddy/ffi.lua has %s\n  C:   ... %s\n  Lua: ... %s",
        i, tostring(a[i] or "(end)"), tostring(b[i] or "(end)"), around(a), around(b))
    end
  end
  return nil
end

describe("lua/eddy/ffi.lua cdef and core/ffi_api.h", function()
  local header = read(root() .. "/core/ffi_api.h")
  local region = ffi_region(header)
  local cdef = H.require_eddy_ffi().cdef

  it("the header's FFI region declares eddy_rec, eddy_io and the exported functions", function()
    local t = table.concat(tokens(region), " ")
    assert.truthy(t:find("typedef struct eddy_rec {", 1, true))
    assert.truthy(t:find("typedef struct eddy_io {", 1, true))
    for _, fn in ipairs({ "eddy_sink_write", "eddy_dead_letter", "eddy_log", "eddy_state_mark", "eddy_state_undo",
                          "eddy_dedup", "eddy_timer_set", "eddy_timer_del", "eddy_keygroup" }) do
      assert.truthy(t:find(fn .. " (", 1, true), fn)
    end
  end)

  it("the header's FFI region holds nothing ffi.cdef cannot parse (no preprocessor lines)", function()
    assert.is_nil(strip_comments(region):find("\n%s*#"))
  end)

  it("eddy.ffi exports its cdef as a string", function()
    assert.is_string(cdef)
  end)

  it("agree token by token, comments and whitespace aside", function()
    local diff = compare(region, cdef)
    assert(diff == nil, diff)
  end)

  it("the REC_* flags match the header's EDDY_REC_* enum", function()
    local m = H.require_eddy_ffi()
    local enum = header:match("enum%s*{([^}]*EDDY_REC_[^}]*)}")
    assert.truthy(enum)
    local count = 0
    for name, value in enum:gmatch("EDDY_(REC_[%w_]+)%s*=%s*(%d+)") do
      assert.equal(tonumber(value), m[name], name)
      count = count + 1
    end
    assert.is_true(count >= 2)
  end)

  it("loading eddy.ffi declares eddy_rec and eddy_io to the FFI", function()
    assert.truthy(ffi.typeof("eddy_rec"))
    assert.truthy(ffi.typeof("eddy_io"))
    assert.equal(0, ffi.offsetof("eddy_rec", "ts"))
    assert.equal(0, ffi.offsetof("eddy_io", "recs"))
  end)

  describe("bind_native", function()
    -- a native table as core/lua_api.c builds it, with classic functions that record their calls
    local function fake(with_state)
      local calls = {}
      local n = { max_parallelism = 128 }
      for _, name in ipairs({ "keygroup", "state_mark", "state_undo", "dedup", "timer_set", "timer_del",
                              "state_get", "timers_due" }) do
        n[name] = function(...) calls[#calls + 1] = { name, ... }; return "classic" end
      end
      if with_state then
        n.state_tx, n.timers = ffi.cast("void *", 1), ffi.cast("void *", 2)
      end
      return n, calls
    end

    it("replaces the per-record scalar calls and leaves the calls that build Lua values classic", function()
      local n = fake(true)
      local before = {}
      for k, v in pairs(n) do before[k] = v end
      assert.equal(n, H.require_eddy_ffi().bind_native(n))
      for _, name in ipairs({ "keygroup", "state_mark", "state_undo", "dedup", "timer_set", "timer_del" }) do
        assert.are_not.equal(before[name], n[name], name)
      end
      assert.equal(before.state_get, n.state_get)
      assert.equal(before.timers_due, n.timers_due)
    end)

    it("without a state store the state calls stay classic (they raise that there is none)", function()
      local n = fake(false)
      local before = {}
      for k, v in pairs(n) do before[k] = v end
      H.require_eddy_ffi().bind_native(n)
      for _, name in ipairs({ "state_mark", "state_undo", "dedup", "timer_set", "timer_del" }) do
        assert.equal(before[name], n[name], name)
      end
    end)

    it("arguments of other types go to the classic function (its conversions and its errors)", function()
      local n, calls = fake(true)
      H.require_eddy_ffi().bind_native(n)
      assert.equal("classic", n.keygroup(42))
      assert.equal("classic", n.dedup("uid", 1, "k", "12", 5))
      assert.equal("classic", n.timer_set("uid", 1, {}, "e", 5))
      assert.equal("classic", n.timer_del("uid", "1", "k", 5))
      assert.same({ { "keygroup", 42 }, { "dedup", "uid", 1, "k", "12", 5 } }, { calls[1], calls[2] })
      assert.equal("timer_set", calls[3][1])
      assert.same({ "timer_del", "uid", "1", "k", 5 }, calls[4])
    end)
  end)

  describe("the comparison itself", function()
    it("ignores comments and whitespace", function()
      assert.is_nil(compare("int  a; /* x */\n// y\nint b;", "int a;int\tb;"))
    end)

    it("finds a changed type", function()
      assert.truthy(compare("int32_t n;", "int64_t n;"))
    end)

    it("finds a missing field and a missing semicolon", function()
      assert.truthy(compare("int a; int b;", "int a;"))
      assert.truthy(compare("int a; int b;", "int a; int b"))
    end)

    it("finds reordered fields", function()
      assert.truthy(compare("int a; int b;", "int b; int a;"))
    end)

    it("finds a change in the real cdef", function()
      assert.truthy(compare(region, (cdef:gsub("int16_t flags", "int32_t flags"))))
      assert.truthy(compare(region, (cdef:gsub("uint32_t source;", ""))))
    end)
  end)
end)
