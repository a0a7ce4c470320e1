-- eddy.runtime.migrate — state migration of a process operator that
-- declares `migrate = function(old, ctx) return new end`.  When a reload
-- loads a version whose migrate is new for the operator's uid, each key's
-- states written before that reload pass through it once: lazily, before the
-- new version first touches the key (a record or a timer of it), and in the
-- background (the task's ticks, a few hundred keys at a time, in stored key
-- order) until every key of the task's key groups is done.  The progress
-- lives in the state store beside the states, so it survives a stop and
-- commits with them:
--   uid#migration  kg "" v "m"   { id, from, cursor, done }: the key group's migration
--   uid#migrating  kg "" v "p"   true while it runs (a reload is refused meanwhile: core/reload.c)
--   uid#migrated   kg key v "a"  a key migrated ahead of the cursor, or new since the reload
-- `id` names the migrate function (a hash of its stripped bytecode), so a
-- later version that keeps the same migrate does not run it again.
-- Calls: rt.native (state_get/put/del, key_states, key_clear, state_keys);
-- eddy.runtime.c (eddy_task_wants_ticks, eddy_now_ms).
local C = require("eddy.runtime.c")

local M = {}
local BUDGET = 256             -- keys the background pass migrates per tick (every 10 ms)

-- FNV-1a of s as 8 hex digits: which migrate function this is
local function fnv(s)
  local h = 0x811c9dc5
  for i = 1, #s do h = bit.tobit(bit.bxor(h, s:byte(i)) * 16777619) end
  return bit.tohex(h)
end

-- a before b in the store's key order (the length first, then the bytes)
local function before_or_at(a, b)
  return #a < #b or (#a == #b and a <= b)
end

-- Returns nil when process operator id (uid) declares no migrate; else
-- { start = fn(), before = fn(key, kg), tick = fn() } (start on the task's
-- thread before its first record, before ahead of a key's first use).
function M.build(rt, id, uid, fn, where)
  if not fn then return nil end
  local native = rt.native
  local get, put, del = native.state_get, native.state_put, native.state_del
  local key_states, key_clear, state_keys = native.key_states, native.key_clear, native.state_keys
  local MU, PU, AU = uid .. "#migration", uid .. "#migrating", uid .. "#migrated"
  local mid = fnv(string.dump(fn, true))
  local version = rt.args.version or 1
  local kgs = rt.args.keygroups or {}
  local pending = {}           -- kg -> its migration's meta while it runs
  local fresh = false          -- started in this call: the background pass waits for the next tick

  local function fail(key, what)
    return where .. ": migrate of key '" .. key .. "' (uid " .. uid .. ") " .. what
  end

  -- the key's states as GET /state shows them, through migrate, written
  -- back; on failure returns the message and the old states
  local function migrate_key(key, kg, meta)
    local entries = key_states(uid, kg, key)
    if #entries == 0 then return nil end
    local old, kinds, expiry = {}, {}, {}
    for _, e in ipairs(entries) do
      local kind, name, sub, v, exp = e[1], e[2], e[3], e[4], e[5]
      kinds[name] = kind
      if kind == "m" then
        old[name] = old[name] or {}
        old[name][sub] = v
      else
        old[name] = v
        if exp > 0 then expiry[name] = exp end
      end
    end
    local ok, new = pcall(fn, old, { key = key, from_version = meta.from })
    if not ok then return fail(key, "failed: " .. tostring(new)), old end
    if new ~= nil and type(new) ~= "table" then
      return fail(key, "returned a " .. type(new) .. ", not a table of named states (or nil)"), old
    end
    key_clear(uid, kg, key)
    if new == nil then return nil end
    local now = tonumber(C.eddy_now_ms())
    local wrote, err = pcall(function()
      for name, v in pairs(new) do
        if type(name) ~= "string" or name == "" then error("a state needs a name (a non-empty string)", 0) end
        local kind = kinds[name] or "v"
        if kind == "m" then
          if type(v) ~= "table" then error("map state '" .. name .. "' needs a table", 0) end
          for s, x in pairs(v) do put(uid, kg, key, "m", name, s, x) end
        elseif kind == "l" then
          put(uid, kg, key, "l", name, nil, v)
        else
          local ttl = expiry[name] and math.max(1, expiry[name] - now) or 0
          put(uid, kg, key, "v", name, nil, v, ttl)
        end
      end
    end)
    if not wrote then return fail(key, "returned what cannot be kept: " .. tostring(err)), old end
    return nil
  end

  -- a key whose migrate failed: its old states go to the error policy (as
  -- the dead letter's record, with the key) and the key starts afresh
  local function failed(key, kg, msg, old)
    if rt.args.on_error == "fail" then                       -- the caller's handler says where
      rt.firing, rt.tio.cur_node = rt.firing or { key = key }, id
      error(msg, 0)
    end
    key_clear(uid, kg, key)
    local ok, rec = pcall(native.json_encode, old)
    local prev, node = rt.firing, rt.tio.cur_node
    rt.firing, rt.tio.cur_node = { key = key }, id
    rt.on_error(msg, nil, { key = key, record = ok and rec or nil })
    rt.firing, rt.tio.cur_node = prev, node
  end

  local m = {}

  -- the task's key groups: a reload starts their migration (unless this
  -- migrate already ran for them); a start continues one a stop left
  function m.start()
    for _, kg in ipairs(kgs) do
      local meta = get(MU, kg, "", "v", "m")
      if version > 1 and (not meta or meta.id ~= mid) then
        meta = { id = mid, from = version - 1, done = false }
        put(MU, kg, "", "v", "m", nil, meta)
        put(PU, kg, "", "v", "p", nil, true)
      elseif not meta or (meta.id ~= mid and meta.done) then
        meta = { id = mid, done = true }     -- the state here is this version's
        put(MU, kg, "", "v", "m", nil, meta)
      elseif meta.id ~= mid then
        rt.log(2, false, "uid " .. uid .. ": a migration another version began was not finished before this start; "
          .. "its keys keep their state as it is")
        meta.done = true
        put(MU, kg, "", "v", "m", nil, meta)
        del(PU, kg, "", "v", "p")
      end
      if not meta.done then pending[kg] = meta end
    end
    if next(pending) then C.eddy_task_wants_ticks(rt.task) end
    fresh = true
  end

  -- before the new version reads the key's state: migrate it if the
  -- background pass has not, once
  function m.before(key, kg)
    local meta = pending[kg]
    if not meta then return end
    if meta.cursor and before_or_at(key, meta.cursor) then return end
    if get(AU, kg, key, "v", "a") then return end
    local msg, old = migrate_key(key, kg, meta)
    if msg then failed(key, kg, msg, old) end
    put(AU, kg, key, "v", "a", nil, true)
  end

  -- the background pass: up to BUDGET keys, key group by key group
  function m.tick()
    if fresh then fresh = false; return end        -- (a swap's first call: no work in its pause)
    local left = BUDGET
    for _, kg in ipairs(kgs) do
      local meta = pending[kg]
      if meta then
        local keys = state_keys(uid, kg, meta.cursor, left)
        for _, k in ipairs(keys) do
          if get(AU, kg, k, "v", "a") then del(AU, kg, k, "v", "a")
          else
            local msg, old = migrate_key(k, kg, meta)
            if msg then failed(k, kg, msg, old) end
          end
          meta.cursor = k
        end
        if #keys < left then                           -- the key group is done
          meta.done, meta.cursor = true, nil
          pending[kg] = nil
          key_clear(AU, kg)
          del(PU, kg, "", "v", "p")
        end
        put(MU, kg, "", "v", "m", nil, meta)
        left = left - #keys
        if left <= 0 then return end
      end
    end
  end

  return m
end

return M
