-- Shared helpers for the Lua unit specs (spec/unit/*_spec.lua).  Not a spec
-- itself: busted only runs files named *_spec.lua.  Loaded as
-- require("unit.helpers") (LUA_PATH holds spec/?.lua).

local ffi = require("ffi")

local H = {}

local function sh_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- A fresh empty folder under /tmp; remove it with H.rmdir.
function H.tmpdir()
  local p = os.tmpname()
  os.remove(p)
  os.execute("mkdir -p " .. sh_quote(p))
  return p
end

function H.rmdir(dir)
  if dir and dir:match("^/tmp/") then os.execute("rm -rf " .. sh_quote(dir)) end
end

-- Writes text to dir/rel, creating folders on the way.
function H.write(dir, rel, text)
  local path = dir .. "/" .. rel
  local parent = path:match("^(.*)/[^/]*$")
  os.execute("mkdir -p " .. sh_quote(parent))
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

function H.exists(path)
  local f = io.open(path, "r")
  if f then f:close() return true end
  return false
end

-- lua/eddy/ffi.lua declares its types only once per process (busted reloads
-- modules between spec files, but the FFI's type table lives on).
function H.require_eddy_ffi()
  return require("eddy.ffi")
end

-- eddy.runtime requires eddy.ffi; see require_eddy_ffi.
function H.require_runtime()
  H.require_eddy_ffi()
  return require("eddy.runtime")
end

-- The project root: $EDDY_ROOT, else two folders up from this file.
function H.root()
  local r = os.getenv("EDDY_ROOT")
  if r and r ~= "" then return r end
  local src = debug.getinfo(1, "S").source:gsub("^@", "")
  local dir = src:match("^(.*)/spec/unit/[^/]*$")
  if dir then return dir end
  if src:match("^spec/unit/") then return "." end
  return "."
end

return H
