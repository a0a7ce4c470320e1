-- What the crash specs (checkpoint_spec, checkpoint_kafka_spec,
-- join_checkpoint_spec) share: a seeded random sequence for the kill
-- moments, and reading a job's committed output, checkpoints and logs.
-- `differences` and `tail` serve any spec that compares outputs.
local E = require("support.eddy")
local cjson = require("cjson")

local M = {}

-- rng(seed): a function n -> an integer in [0, n), the same sequence for a
-- seed (Park-Miller; its high bits, not the weak low ones)
function M.rng(seed)
  local x = seed % 2147483646 + 1
  return function(n)
    x = x * 48271 % 2147483647
    return math.floor(x / 2147483647 * n)
  end
end

-- hidden(dir, sinks): the in-progress part files under dir/out/<sink>
function M.hidden(dir, sinks)
  local out = {}
  for _, s in ipairs(sinks) do
    for _, name in ipairs(E.ls(dir .. "/out/" .. s) or {}) do
      if name:match("^%.part%-") or name:match("^%..*%.inprogress$") then out[#out + 1] = s .. "/" .. name end
    end
  end
  return out
end

-- last_committed(state_dir): the id of the newest committed checkpoint (its
-- manifest says "committed": true), or nil
function M.last_committed(state_dir)
  local last
  local root = state_dir .. "/checkpoints"
  for _, name in ipairs(E.ls(root) or {}) do
    local ok, m = pcall(cjson.decode, E.read(root .. "/" .. name .. "/manifest.json") or "")
    if ok and type(m) == "table" and m.committed == true then
      local id = tonumber(m.id) or tonumber(name)
      if id and (last == nil or id > last) then last = id end
    end
  end
  return last
end

-- newest(state_dir): the id of the newest checkpoint with a manifest,
-- committed or only prepared, or nil
function M.newest(state_dir)
  local last
  for _, name in ipairs(E.ls(state_dir .. "/checkpoints") or {}) do
    local id = tonumber(name)
    if id and E.exists(state_dir .. "/checkpoints/" .. name .. "/manifest.json") and (last == nil or id > last) then
      last = id
    end
  end
  return last
end

-- restored(log): the id of the log line "restored checkpoint <id>", or nil
function M.restored(log)
  local id = log:match("restored checkpoint ([%w%-_]+)")
  return id and (tonumber(id) or id)
end

-- tail(log[, n]): its last n lines (15), for failure messages
function M.tail(s, n)
  local l = E.lines(s)
  return table.concat(l, "\n", math.max(1, #l - (n or 15) + 1))
end

-- differences(expected, got, sinks): "" when every sink has the same
-- multiset of rows ({ rows = { row = count }, n = total } per sink), else
-- per sink the counts and the first rows missing and extra
function M.differences(expected, got, sinks)
  local report = {}
  for _, s in ipairs(sinks) do
    local e, g = expected[s].rows, got[s].rows
    local missing, extra, nmissing, nextra = {}, {}, 0, 0
    for r, c in pairs(e) do
      local d = c - (g[r] or 0)
      if d > 0 then missing[#missing + 1] = r; nmissing = nmissing + d end
    end
    for r, c in pairs(g) do
      local d = c - (e[r] or 0)
      if d > 0 then extra[#extra + 1] = (d > 1 and d .. "x " or "") .. r; nextra = nextra + d end
    end
    if nmissing + nextra > 0 then
      table.sort(missing)
      table.sort(extra)
      report[#report + 1] = string.format("sink %s: %d rows expected, %d committed: %d missing, %d extra",
        s, expected[s].n, got[s].n, nmissing, nextra)
      for k = 1, math.min(5, #missing) do report[#report + 1] = "  missing " .. missing[k] end
      for k = 1, math.min(5, #extra) do report[#report + 1] = "  extra   " .. extra[k] end
    end
  end
  return table.concat(report, "\n")
end

return M
