-- eddy.sandbox — the environment user code runs in.  User scripts and the
-- modules they require get a fresh global table whose library names belong
-- to the sandbox (assigning to them is refused); there is no os.execute,
-- io.popen, os.exit, debug library, getfenv/setfenv or FFI unless the config
-- allows it; require and loadfile reach only the pipeline's folder.

local M = {}

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

-- Keeps user code from reaching the runtime's string library through
-- getmetatable("").
local smt = getmetatable("")
if smt then smt.__metatable = false end

local function inside(dir, path)
  if path:find("%.%.") then return false end
  if path:sub(1, 1) ~= "/" then return true end
  return path:sub(1, #dir + 1) == dir .. "/"
end

-- opts: { dir = pipeline folder, ffi = bool, os = bool, log = function(msg) }
function M.new(opts)
  local dir = opts.dir
  local base = {
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs,
    pcall = pcall, xpcall = xpcall, select = select, tonumber = tonumber,
    tostring = tostring, type = type, unpack = unpack, rawget = rawget,
    rawset = rawset, rawequal = rawequal, setmetatable = setmetatable,
    getmetatable = getmetatable, collectgarbage = collectgarbage,
    string = copy(string), table = copy(table), math = copy(math), bit = copy(bit),
    coroutine = copy(coroutine),
    os = { time = os.time, clock = os.clock, date = os.date, difftime = os.difftime, getenv = os.getenv },
    print = function(...)
      local parts = {}
      for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
      opts.log(table.concat(parts, "\t"))
    end,
  }
  base._G = nil
  if opts.os then
    base.os.execute, base.os.exit, base.os.remove, base.os.rename, base.os.tmpname =
      os.execute, os.exit, os.remove, os.rename, os.tmpname
    base.io = copy(io)
  else
    -- read-only file access inside the pipeline's folder
    base.io = {
      open = function(path, mode)
        mode = mode or "r"
        if not mode:match("^r") or mode:find("%+") then return nil, "the sandbox opens files read-only" end
        if not inside(dir, path) then return nil, "the sandbox reads only inside " .. dir end
        if path:sub(1, 1) ~= "/" then path = dir .. "/" .. path end
        return io.open(path, mode)
      end,
    }
    base.io.lines = function(path)
      local f, err = base.io.open(path)
      if not f then error(err, 2) end
      return f:lines()
    end
  end

  local env = {}
  local loaded = {}
  setmetatable(env, {
    __index = base,
    __newindex = function(t, k, v)
      if base[k] ~= nil then error("cannot assign to global '" .. tostring(k) .. "': it belongs to the sandbox", 2) end
      rawset(t, k, v)
    end,
    __metatable = false,
  })
  base._G = env

  local function loadin(path, chunkname)
    local f, err = loadfile(path)
    if not f then
      -- loadfile names the absolute path; the user knows the file by its name in the folder
      return nil, (err:gsub("^" .. path:gsub("%p", "%%%0"), chunkname))
    end
    return setfenv(f, env)
  end

  local function load_user_file(rel)
    local path = dir .. "/" .. rel
    local fh = io.open(path, "r")
    if not fh then return nil, "cannot open " .. rel, "missing" end
    local src = fh:read("*a")
    fh:close()
    local f, err = load(src, "@" .. rel, "t")   -- text only: LuaJIT does not verify bytecode
    if not f then return nil, err end
    return setfenv(f, env)
  end
  M.load_user_file = nil
  env.__load_user_file = nil

  local builtin = { eddy = true, cjson = true, bit = true, string = true, table = true, math = true }
  base.require = function(name)
    if type(name) ~= "string" then error("require needs a module name", 2) end
    if loaded[name] ~= nil then return loaded[name] end
    if builtin[name] then
      local m = (name == "string" or name == "table" or name == "math" or name == "bit") and base[name] or require(name)
      loaded[name] = m
      return m
    end
    if name == "ffi" then
      if not opts.ffi then error("require 'ffi' is not allowed in the sandbox (set sandbox.ffi = true in the config)", 2) end
      loaded[name] = require("ffi")
      return loaded[name]
    end
    if not name:match("^[%w_]+[%w_%.]*$") then error("bad module name '" .. name .. "'", 2) end
    local rel = name:gsub("%.", "/") .. ".lua"
    local f, err, missing = load_user_file(rel)
    if not f and missing then error("module '" .. name .. "' not found in the pipeline's folder (" .. err .. ")", 2) end
    if not f then error(err, 2) end   -- "pipeline.lua:2: helper.lua:4: ..."
    local m = f(name)
    if m == nil then m = true end
    loaded[name] = m
    return m
  end
  base.loadstring = function(s, chunkname)
    local f, err = load(s, chunkname, "t")
    if not f then return nil, err end
    return setfenv(f, env)
  end
  base.load = function(chunk, chunkname)
    local f, err = load(chunk, chunkname, "t")
    if not f then return nil, err end
    return setfenv(f, env)
  end
  base.loadfile = function(path)
    if type(path) ~= "string" or not inside(dir, path) then return nil, "the sandbox loads files only inside " .. dir end
    if path:sub(1, 1) == "/" then path = path:sub(#dir + 2) end
    return load_user_file(path)
  end
  base.dofile = function(path)
    local f, err = base.loadfile(path)
    if not f then error(err, 2) end
    return f()
  end
  return env, load_user_file, loadin
end

return M
