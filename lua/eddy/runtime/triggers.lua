-- eddy.runtime.triggers — when a window operator's results go downstream.
-- The trigger of a window (W, built by eddy.runtime.windows) decides:
--   event_time (default): when the watermark passes the window's end, and
--     again for a record within the lateness ("late");
--   every(d): the same, plus early firings every d of processing time
--     while the window changes;
--   processing_time(): when the processing-time clock passes the end;
--   count(n): every n records of a window;
--   custom: a table of callbacks returning "continue" | "fire" |
--     "fire_and_purge" | "purge".
-- attach() registers the window with the task: advance (the watermark
-- moved) and tick (processing time); on_element runs after each record.
-- Calls: eddy.runtime.c (eddy_window_advance/fire/fired/list/mark/
-- keep_unfired, eddy_task_wants_ticks); W.emit (eddy.runtime.windows).
local ffi = require("ffi")
local C = require("eddy.runtime.c")
local values = require("eddy.runtime.values")

local INF = values.INF
local ffi_string = ffi.string
local T = {}

local function check_action(action)
  if action ~= "continue" and action ~= "fire" and action ~= "fire_and_purge" and action ~= "purge" then
    error("window trigger returned " .. tostring(action) .. " (continue, fire, fire_and_purge or purge)", 0)
  end
end

-- carries out a trigger's answer for the window (key k, start)
function T.act(W, action, k, start, how)
  if action == nil or action == "continue" then return end
  check_action(action)
  local r = C.eddy_window_fire(W.w, k, #k, start, action == "fire" and 0 or 1)
  if r == 1 and action ~= "purge" then W.emit(C.eddy_window_fired(W.w, 0), how) end
end

-- calls a trigger callback with ctx.window set to the window
function T.ask(W, fn, arg, k, start, stop, count)
  local rt = W.rt
  local saved_ts, saved = rt.cur_ts, rt.firing
  rt.firing = { key = k, window = W.window_of(start, stop, nil, count) }
  local ok, action = pcall(fn, arg, rt.ctx)
  rt.firing, rt.cur_ts = saved, saved_ts
  if not ok then error(action, 0) end
  return action
end

-- every open window, copied out of the store (acting on one changes the store)
function T.open_windows(W)
  W.info_cap = W.info_cap or 256
  W.info = W.info or ffi.new("eddy_window_info[?]", W.info_cap)
  local n = C.eddy_window_list(W.w, W.info, W.info_cap)
  while n == W.info_cap do
    W.info_cap = W.info_cap * 4
    W.info = ffi.new("eddy_window_info[?]", W.info_cap)
    n = C.eddy_window_list(W.w, W.info, W.info_cap)
  end
  local info, list = W.info, {}
  for j = 0, n - 1 do
    local x = info[j]
    list[j + 1] = { key = ffi_string(x.key, x.klen), start = tonumber(x.start), stop = tonumber(x["end"]),
                    mark = tonumber(x.mark), dirty = x.dirty ~= 0, due = x.due ~= 0, count = tonumber(x.count) }
  end
  return list
end

-- at the end of input, for triggers the watermark does not drive: fire
-- what changed since it last fired
local function fire_changed(W)
  for _, d in ipairs(T.open_windows(W)) do
    if d.dirty then T.act(W, "fire", d.key, d.start, "on_time") end
  end
  W.rt.firing = nil
end

-- event_time, every: each due window fires; the store fires a few thousand
-- windows a call: call until none is left
local function fire_on_time(W, n, i)
  local rt, w = W.rt, W.w
  while n > 0 do
    for j = 0, n - 1 do
      rt.last_tb = nil
      local ok, err = xpcall(W.emit, rt.handler, C.eddy_window_fired(w, j), "on_time")
      if not ok then rt.on_error(err, i) end
    end
    n = C.eddy_window_advance(w, rt.wm)
  end
  rt.firing = nil
end

-- custom: what on_event_time says for the due window f
local function custom_due(W, f, purges)
  local action = "fire"
  local on_event_time = W.tfns.on_event_time
  if on_event_time then
    local k = ffi_string(f.key, f.klen)
    action = T.ask(W, on_event_time, tonumber(f["end"]) - 1, k, tonumber(f.start), tonumber(f["end"]), tonumber(f.count))
  end
  check_action(action)
  if action == "fire" or action == "fire_and_purge" then W.emit(f, "on_time") end
  if action == "purge" or action == "fire_and_purge" then
    purges[#purges + 1] = { ffi_string(f.key, f.klen), tonumber(f.start) }
  end
end

-- custom: the due windows may be freed by this very advance (lateness 0),
-- so fire from the copies it returned; purge the ones still kept afterwards
-- (purging calls into the window store, which drops those copies)
local function fire_custom(W, n, i)
  local rt, w = W.rt, W.w
  while n > 0 do
    local purges = {}
    for j = 0, n - 1 do
      local f = C.eddy_window_fired(w, j)
      rt.last_tb = nil
      local ok, err = xpcall(custom_due, rt.handler, W, f, purges)
      if not ok then rt.on_error(err, i) end
    end
    rt.firing = nil
    for _, d in ipairs(purges) do C.eddy_window_fire(w, d[1], #d[1], d[2], 1) end
    n = C.eddy_window_advance(w, rt.wm)
  end
end

-- the watermark moved (i: the record that moved it, or nil): windows whose
-- end it passed are due; at the end of input every remaining window fires
function T.advance(W, i)
  local rt, w, trig = W.rt, W.w, W.trig
  if rt.wm >= INF and (trig == "processing_time" or trig == "count") then
    rt.last_tb = nil
    local ok, err = xpcall(fire_changed, rt.handler, W)
    if not ok then rt.on_error(err, i) end
  end
  local n = C.eddy_window_advance(w, rt.wm)
  if n < 0 then error("window " .. W.uid .. ": cannot fire its windows", 0) end
  if n == 0 then return end
  if trig == "event_time" or trig == "every" then return fire_on_time(W, n, i) end
  if trig ~= "custom" then                 -- count, processing_time: the watermark only frees state
    while n > 0 do n = C.eddy_window_advance(w, rt.wm) end
    return
  end
  return fire_custom(W, n, i)
end

-- processing-time triggers: called every few ms by the task (eddy_task_wants_ticks)
function T.tick(W, now)
  local w, trig, every_ms = W.w, W.trig, W.o.trigger_every_ms
  for _, d in ipairs(T.open_windows(W)) do
    local k, start, stop, mark, dirty, due, count = d.key, d.start, d.stop, d.mark, d.dirty, d.due, d.count
    if trig == "every" then
      -- early results while the window is open and changing
      if not due and dirty then
        if mark == 0 then C.eddy_window_mark(w, k, #k, start, now)
        elseif now - mark >= every_ms then
          T.act(W, "fire", k, start, "early")
          C.eddy_window_mark(w, k, #k, start, now)
        end
      end
    elseif stop - 1 <= now and (mark == 0 or (dirty and trig == "processing_time")) then
      C.eddy_window_mark(w, k, #k, start, now)
      if trig == "processing_time" then
        T.act(W, "fire", k, start, mark == 0 and "on_time" or "late")
      else
        T.act(W, T.ask(W, W.tfns.on_processing_time, stop - 1, k, start, stop, count), k, start, "on_time")
      end
    end
  end
  W.rt.firing = nil
end

-- after a record went into window (k, start): what the trigger says
function T.on_element(W, v, k, start, due)
  local count = W.count_box[0]
  local trig = W.trig
  if trig == "count" then
    if count % W.o.trigger_count == 0 then T.act(W, "fire", k, start, due and "late" or "early") end
  elseif trig == "custom" and W.tfns.on_element then
    local stop = start + W.o.size_ms
    T.act(W, T.ask(W, W.tfns.on_element, v, k, start, stop, count), k, start, due and "late" or "early")
  end
end

-- Registers window W with its task: advance on every watermark move, and
-- tick for the triggers processing time drives.
function T.attach(W)
  local rt, trig = W.rt, W.trig
  local entry = { w = W.w, id = W.id, advance = function(i) T.advance(W, i) end }
  rt.windows[#rt.windows + 1] = entry
  if trig == "every" or trig == "processing_time" or (trig == "custom" and W.tfns.on_processing_time) then
    C.eddy_task_wants_ticks(rt.task)
    -- processing time, not the watermark, fires these windows: the watermark
    -- must not free one whose changes have not fired yet
    if trig == "processing_time" then C.eddy_window_keep_unfired(W.w) end
    entry.tick = function(now) T.tick(W, now) end
  end
  return entry
end

return T
