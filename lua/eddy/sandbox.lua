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

-- realpath(path): the path with every symlink resolved (libc's realpath), or
-- nil when it does not exist.  The sandbox checks where a file really is, so
-- a symlink in the pipeline's folder (`etc -> /etc`) leads nowhere outside.
local ffi = require("ffi")
pcall(ffi.cdef, "char *realpath(const char *path, char *resolved_path);")
local PATH_MAX = 4096
local function realpath(path)
  local buf = ffi.new("char[?]", PATH_MAX + 1)
  if ffi.C.realpath(path, buf) == nil then return nil end
  return ffi.string(buf)
end

-- seekable(path): false for a FIFO or a socket, whose open() would wait
-- for a writer (a build that never ends, which no hook can stop: it uses
-- no CPU).  It is opened without waiting, and asked to seek: those cannot.
pcall(ffi.cdef, "int open(const char *pathname, int flags, ...);")
pcall(ffi.cdef, "long lseek(int fd, long offset, int whence);")
pcall(ffi.cdef, "int close(int fd);")
local O_RDONLY_NONBLOCK = 2048          -- O_RDONLY | O_NONBLOCK (Linux)
local function seekable(path)
  local fd = ffi.C.open(path, O_RDONLY_NONBLOCK)
  if fd < 0 then return true end         -- io.open will say why
  local ok = ffi.C.lseek(fd, 0, 2) >= 0
  ffi.C.close(fd)
  return ok
end

-- Nested coroutine resumes nest on the C stack (each resume is a C frame in
-- LuaJIT, which counts none of them): unbounded recursion through
-- coroutine.wrap overflows it and kills the process.  The sandbox's resume
-- and wrap count how deep they are nested and refuse past MAX_RESUME_DEPTH
-- (PUC Lua's limit of nested C calls), which is a Lua error like any other.
local MAX_RESUME_DEPTH = 200
M.MAX_RESUME_DEPTH = MAX_RESUME_DEPTH

local function counted_coroutines()
  local create, resume = coroutine.create, coroutine.resume
  local depth = 0
  local function leave(...)       -- allocates nothing: the count cannot be left raised
    depth = depth - 1
    return ...
  end
  local function too_deep()        -- the error names the user's call, two levels up
    error("coroutines nested more than " .. MAX_RESUME_DEPTH .. " deep (unbounded recursion through coroutine.resume/wrap?)", 3)
  end
  local function counted_resume(co, ...)
    if depth >= MAX_RESUME_DEPTH then too_deep() end
    depth = depth + 1
    return leave(resume(co, ...))
  end
  local function wrapped(ok, ...)
    if not ok then error((...), 0) end   -- as coroutine.wrap: the error goes on, message unchanged
    return ...
  end
  local co = {}
  for k, v in pairs(coroutine) do co[k] = v end
  co.resume = counted_resume
  co.wrap = function(f)
    local c = create(f)
    return function(...)
      if depth >= MAX_RESUME_DEPTH then too_deep() end
      return wrapped(counted_resume(c, ...))
    end
  end
  return co
end

-- opts: { dir = pipeline folder, ffi = bool, os = bool, log = function(msg) }
function M.new(opts)
  local dir = opts.dir
  local realdir = realpath(dir) or dir

  -- within(path): path (absolute) is a file whose real place is inside the
  -- pipeline's real folder; nil, err otherwise (err names the file)
  local function within(path, shown)
    local real = realpath(path)
    if not real then return nil, "cannot open " .. shown end
    if real:sub(1, #realdir + 1) ~= realdir .. "/" then
      return nil, shown .. " leads outside " .. dir .. " (through a symlink to " .. real .. "): the sandbox reads only inside the pipeline's folder"
    end
    if not seekable(real) then return nil, shown .. " is not a regular file (a FIFO or a socket): the sandbox reads files" end
    return real
  end
  local base = {
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs,
    pcall = pcall, xpcall = xpcall, select = select, tonumber = tonumber,
    tostring = tostring, type = type, unpack = unpack, rawget = rawget,
    rawset = rawset, rawequal = rawequal, setmetatable = setmetatable,
    getmetatable = getmetatable, collectgarbage = collectgarbage,
    string = copy(string), table = copy(table), math = copy(math), bit = copy(bit),
    coroutine = counted_coroutines(),
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
        local shown = path
        if path:sub(1, 1) ~= "/" then path = dir .. "/" .. path end
        local real, err = within(path, shown)
        if not real then return nil, err end
        return io.open(real, mode)
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

  -- load_user_file(rel[, trusted[, text]]): the chunk of the file rel in the
  -- pipeline's folder.  Only the pipeline script itself (trusted: the
  -- config names it) may be a symlink to a file elsewhere; its bytes may
  -- come from another file, text (a kept version's copy: reload --to),
  -- while it keeps its name and its folder.
  local function load_user_file(rel, trusted, text)
    local path = trusted and text or dir .. "/" .. rel
    if not trusted then
      if not realpath(path) then return nil, "cannot open " .. rel, "missing" end
      local real, err = within(path, rel)
      if not real then return nil, err end
      path = real
    end
    local fh = io.open(path, "r")
    if not fh then return nil, "cannot open " .. rel, "missing" end
    local src, rerr = fh:read("*a")
    fh:close()
    if type(src) ~= "string" then
      -- a folder opens, but does not read
      return nil, "cannot read " .. rel .. ": " .. (rerr or "not a file") .. " (a Lua file is expected)"
    end
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
