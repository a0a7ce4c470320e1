-- eddy.runtime.joins — the join operators: table-table, stream-table,
-- stream-global table, and the two joins by event time, interval (two
-- streams) and temporal (as-of: a stream against the versions of a table).
-- Their state is keyed state (RocksDB) under the join's uid; Lua computes
-- the joined value.  build() picks the kind from the node's options.
-- Calls: rt.native (state_get/put/del/entries, timer_set);
-- eddy.runtime.process (fire_timers, for the event-time joins' cleanup).
local cjson = require("cjson")
local values = require("eddy.runtime.values")
local process = require("eddy.runtime.process")

local NONE, key_string = values.NONE, values.key_string
local J = {}

-- the keys of a table of map entries, sorted (their names sort by time)
local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = k end
  table.sort(ks)
  return ks
end
J.sorted_keys = sorted_keys

-- table-table: each side's row per key; a change emits the joined row,
-- or a tombstone (cjson.null) when a pair that was emitted broke up
local function table_table(rt, id, parent)
  local node, tio, cin, cout, ctx, fn = rt.nodes[id], rt.tio, rt.cin, rt.cout, rt.ctx, rt.nodes[id].fn
  local nxt, uid = rt.build(id), node.uid
  local get, put, del = rt.native.state_get, rt.native.state_put, rt.native.state_del
  local mine = (parent == node.inputs[1]) and "L" or "R"
  local current_key = rt.current_key
  return function(v)
    tio.cur_node = id; cin[id] = cin[id] + 1
    local key, kg = current_key()
    if v == nil or v == cjson.null then del(uid, kg, key, "t", mine) else put(uid, kg, key, "t", mine, nil, v) end
    local l, r = get(uid, kg, key, "t", "L"), get(uid, kg, key, "t", "R")
    local out
    if l ~= nil and r ~= nil then out = fn(l, r, ctx) end
    if out ~= nil then
      put(uid, kg, key, "v", "joined", nil, true)
      cout[id] = cout[id] + 1; nxt(out)
    elseif get(uid, kg, key, "v", "joined") then
      del(uid, kg, key, "v", "joined")
      cout[id] = cout[id] + 1; nxt(cjson.null)
    end
  end
end

-- a stream against a global table (every task reads its rows, key group 0)
local function stream_global(rt, id)
  local node, tio, cin, cout, ctx, fn = rt.nodes[id], rt.tio, rt.cin, rt.cout, rt.ctx, rt.nodes[id].fn
  local nxt, guid, inner, get = rt.build(id), node.opts.global, node.opts.type ~= "left", rt.native.state_get
  local kfield, kfn = node.opts.key_field, type(node.key) == "function" and node.key or nil
  return function(v)
    tio.cur_node = id; cin[id] = cin[id] + 1
    local k
    if kfield then
      if type(v) ~= "table" then error("join key '" .. kfield .. "': the value is a " .. type(v) .. ", not a table", 0) end
      k = v[kfield]
    else
      k = kfn(v, ctx)
    end
    local right = k ~= nil and get(guid, 0, key_string(k), "t", "row", nil, true) or nil
    if right == nil and inner then return end
    local out = fn(v, right, ctx)
    if out ~= nil then cout[id] = cout[id] + 1; nxt(out) end
  end
end

-- stream-table: the table's side keeps the latest row per key (a nil
-- value, a Kafka tombstone, deletes it); the stream's side joins it
local function stream_table(rt, id, parent)
  local node, tio, cin, cout, ctx, fn = rt.nodes[id], rt.tio, rt.cin, rt.cout, rt.ctx, rt.nodes[id].fn
  local nxt, uid, inner = rt.build(id), node.uid, node.opts.type ~= "left"
  local get, put, del = rt.native.state_get, rt.native.state_put, rt.native.state_del
  local current_key = rt.current_key
  if parent == node.inputs[2] and parent ~= node.inputs[1] then
    return function(v)
      tio.cur_node = id; cin[id] = cin[id] + 1
      local k, kg = current_key()
      if v == nil or v == cjson.null then del(uid, kg, k, "t", "row") else put(uid, kg, k, "t", "row", nil, v) end
    end
  end
  return function(v)
    tio.cur_node = id; cin[id] = cin[id] + 1
    local k, kg = current_key()
    local right = get(uid, kg, k, "t", "row")
    if right == nil and inner then return end
    local out = fn(v, right, ctx)
    if out ~= nil then cout[id] = cout[id] + 1; nxt(out) end
  end
end

-- A join of two keyed streams by event time: a left record at tl matches
-- a right one at tr when tl - before <= tr <= tl + after.  Each side's
-- records wait in keyed state (maps "L" and "R" of the join's uid) until
-- the watermark passes the last time a match could come (tl + after,
-- tr + before); an event-time timer then frees them and, for left and
-- outer joins, emits those that never matched with nil on the other side.

-- the cleanup of the interval join id (once for both inputs): every entry
-- whose wait is over goes, unmatched ones emitted first
local function interval_sweeper(rt, id, sh)
  local node, cout, ctx = rt.nodes[id], rt.cout, rt.ctx
  local o, uid, fn = node.opts, node.uid, node.fn
  local before, after, jtype = o.before_ms, o.after_ms, o.type
  local del, entries = rt.native.state_del, rt.native.state_entries
  return function(key, kg, now)
    local left = 0
    for _, side in ipairs({ "L", "R" }) do
      local wait = side == "L" and after or before
      local emit_unmatched = (side == "L" and jtype ~= "inner") or (side == "R" and jtype == "outer")
      local es = entries(uid, kg, key, "m", side)
      for _, sub in ipairs(sorted_keys(es)) do
        local e = es[sub]
        if e.ts + wait <= now then
          if emit_unmatched and not e.m then
            rt.cur_ts = e.ts
            local out
            if side == "L" then out = fn(e.v, nil, ctx) else out = fn(nil, e.v, ctx) end
            if out ~= nil then cout[id] = cout[id] + 1; sh.nxt(out) end
          end
          del(uid, kg, key, "m", side, sub)
        else
          left = left + 1
        end
      end
    end
    if left == 0 then del(uid, kg, key, "v", "seq") end    -- nothing waits: the key has no state
  end
end

local function interval_join(rt, id, parent)
  local node, tio, cin, cout, ctx = rt.nodes[id], rt.tio, rt.cin, rt.cout, rt.ctx
  local o, uid, fn = node.opts, node.uid, node.fn
  local before, after = o.before_ms, o.after_ms
  local left_side = parent == node.inputs[1]
  local native = rt.native
  local get, put, entries = native.state_get, native.state_put, native.state_entries
  rt.shared[id] = rt.shared[id] or {}
  local sh = rt.shared[id]
  if not sh.nxt then
    sh.nxt = rt.build(id)
    local sweep = interval_sweeper(rt, id, sh)
    rt.windows[#rt.windows + 1] = { id = id, advance = function()
      if rt.wm ~= NONE and not rt.stopping then process.fire_timers(rt, id, uid, "e", rt.wm, sweep) end
    end }
  end
  local nxt, current_key = sh.nxt, rt.current_key
  local mine, theirs = left_side and "L" or "R", left_side and "R" or "L"
  return function(v)
    tio.cur_node = id; cin[id] = cin[id] + 1
    if rt.cur_ts == NONE then error("a join of two streams needs event time: set the timestamp option of the sources", 0) end
    local key, kg = current_key()
    local t = rt.cur_ts
    local seq = (get(uid, kg, key, "v", "seq") or 0) + 1
    put(uid, kg, key, "v", "seq", nil, seq)
    local matched = false
    local es = entries(uid, kg, key, "m", theirs)
    for _, sub in ipairs(sorted_keys(es)) do
      local e = es[sub]
      local tl, tr = left_side and t or e.ts, left_side and e.ts or t
      if tr >= tl - before and tr <= tl + after then
        matched = true
        if not e.m then e.m = true; put(uid, kg, key, "m", theirs, sub, e) end
        local saved = rt.cur_ts
        rt.cur_ts = tl > tr and tl or tr
        local out
        if left_side then out = fn(v, e.v, ctx) else out = fn(e.v, v, ctx) end
        rt.cur_ts = saved
        if out ~= nil then cout[id] = cout[id] + 1; nxt(out) end
      end
    end
    -- wait for matches until the watermark passes the last possible one
    put(uid, kg, key, "m", mine, string.format("%020.0f:%d", t + 2 ^ 62, seq), { v = v, ts = t, m = matched })
    native.timer_set(uid, kg, key, "e", t + (left_side and after or before))
  end
end

-- A temporal join: the table side keeps every version of a key's row by
-- its event time (map "V"); a stream record waits (map "S") until the
-- watermark -- the minimum over both inputs -- has passed its event time,
-- then joins the version valid at that time: the latest at or before it.
-- So the result does not depend on how the two inputs interleave.
-- Versions older than the watermark minus retention go, except the one
-- still valid then.
local function time_sub(t, seq) return string.format("%020.0f:%010d", t + 2 ^ 62, seq or 0) end
J.time_sub = time_sub

-- the release of the temporal join id (once for both inputs): the records
-- of key whose time the watermark passed join their versions.
-- Each key keeps floors ("v" "sfloor", "vfloor"): the sub keys below
-- which its waiting records and its versions are all gone, so a
-- release reads from there and never walks what it deleted before.
local function temporal_releaser(rt, id, sh)
  local node, cout, ctx = rt.nodes[id], rt.cout, rt.ctx
  local o, uid, fn = node.opts, node.uid, node.fn
  local retention, inner = o.retention_ms, o.type ~= "left"
  local get, put, del, entries = rt.native.state_get, rt.native.state_put, rt.native.state_del, rt.native.state_entries
  return function(key, kg, now)
    -- sub keys hold times rounded to 1024 ms (doubles past 2^62): read
    -- a bucket further, and compare the times themselves
    local upto = time_sub(now + 1)          -- every record after now is at or above this
    local reach = time_sub(now + 2049)
    local vfloor = get(uid, kg, key, "v", "vfloor")
    local versions = entries(uid, kg, key, "m", "V", vfloor, reach)
    local vkeys = sorted_keys(versions)
    local sfloor = get(uid, kg, key, "v", "sfloor")
    local waiting = entries(uid, kg, key, "m", "S", sfloor, reach)
    for _, sub in ipairs(sorted_keys(waiting)) do
      local e = waiting[sub]
      if e.ts <= now then                   -- (later ones in the bucket wait)
        local row
        for _, vk in ipairs(vkeys) do
          local ver = versions[vk]
          if ver.ts <= e.ts then row = ver.row else break end
        end
        if row == cjson.null then row = nil end       -- deleted at that time
        if row ~= nil or not inner then
          rt.cur_ts = e.ts
          local out = fn(e.v, row, ctx)
          if out ~= nil then cout[id] = cout[id] + 1; sh.nxt(out) end
        end
        del(uid, kg, key, "m", "S", sub)
      end
    end
    put(uid, kg, key, "v", "sfloor", nil, upto)
    -- none waits any more: the sequence starts again (the floor stays)
    if next(entries(uid, kg, key, "m", "S", upto, nil)) == nil then del(uid, kg, key, "v", "seq") end
    -- old versions: keep the last one at or before the cutoff (still valid then)
    local cutoff = now - retention
    local keep
    for i, vk in ipairs(vkeys) do if versions[vk].ts <= cutoff then keep = i end end
    for i = 1, (keep or 1) - 1 do del(uid, kg, key, "m", "V", vkeys[i]) end
    if keep and keep > 1 then put(uid, kg, key, "v", "vfloor", nil, vkeys[keep]) end
  end
end

local function temporal_join(rt, id, parent)
  local node, tio, cin = rt.nodes[id], rt.tio, rt.cin
  local uid, retention = node.uid, node.opts.retention_ms
  local native = rt.native
  local get, put = native.state_get, native.state_put
  rt.shared[id] = rt.shared[id] or {}
  local sh = rt.shared[id]
  if not sh.nxt then
    sh.nxt = rt.build(id)
    local release = temporal_releaser(rt, id, sh)
    rt.windows[#rt.windows + 1] = { id = id, advance = function()
      if rt.wm ~= NONE and not rt.stopping then
        process.fire_timers(rt, id, uid, "e", rt.wm, function(key, kg) release(key, kg, rt.wm) end)
      end
    end }
  end
  local table_side = parent == node.inputs[2] and parent ~= node.inputs[1]
  local current_key = rt.current_key
  return function(v)
    tio.cur_node = id; cin[id] = cin[id] + 1
    local cur_ts = rt.cur_ts
    if cur_ts == NONE then error("a temporal join needs event time on both inputs: set the timestamp option", 0) end
    local key, kg = current_key()
    if table_side then
      -- a version of the row from cur_ts on (nil: deleted from then on)
      local sub = time_sub(cur_ts)
      put(uid, kg, key, "m", "V", sub, { ts = cur_ts, row = v == nil and cjson.null or v })
      local floor = get(uid, kg, key, "v", "vfloor")
      if floor and sub < floor then put(uid, kg, key, "v", "vfloor", nil, sub) end   -- an older version came late
      native.timer_set(uid, kg, key, "e", cur_ts + retention)   -- old versions are swept then
    else
      local seq = (get(uid, kg, key, "v", "seq") or 0) + 1
      put(uid, kg, key, "v", "seq", nil, seq)
      local sub = time_sub(cur_ts, seq)
      put(uid, kg, key, "m", "S", sub, { v = v, ts = cur_ts })
      local floor = get(uid, kg, key, "v", "sfloor")
      if floor and sub < floor then put(uid, kg, key, "v", "sfloor", nil, sub) end   -- behind the watermark
      native.timer_set(uid, kg, key, "e", cur_ts)
    end
  end
end

-- The function join id runs for values from parent (one of its inputs).
function J.build(rt, id, parent)
  local o = rt.nodes[id].opts
  if o.interval then return interval_join(rt, id, parent) end
  if o.temporal then return temporal_join(rt, id, parent) end
  if o.tables then return table_table(rt, id, parent) end
  if o.global then return stream_global(rt, id) end
  return stream_table(rt, id, parent)
end

return J
