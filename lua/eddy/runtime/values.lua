-- eddy.runtime.values — conversions every part of the runtime shares: a key
-- to its string, a number to text, a timestamp to ms, a duration to ms, and
-- the two special times (NONE: no time yet; INF: the watermark at the end).
-- Calls: eddy.runtime.c (eddy_parse_duration, eddy_parse_time).
local ffi = require("ffi")
local C = require("eddy.runtime.c")

local V = {}
V.NONE = -2 ^ 63              -- no timestamp / no watermark yet (INT64_MIN)
V.INF = 2 ^ 62                -- the watermark once input has ended

local ms_box = ffi.new("int64_t[1]")

-- "5s" -> 5000, through the config's parser; raises naming where it was written.
function V.duration_ms(spec, what, where)
  if spec == nil then return nil end
  if C.eddy_parse_duration(tostring(spec), ms_box) ~= 0 then
    error(where .. ": " .. what .. ": expected a duration like \"10s\", got " .. tostring(spec), 0)
  end
  return tonumber(ms_box[0])
end

-- key → the string that is hashed and that keyed operators see as ctx.key
function V.key_string(k)
  local t = type(k)
  if t == "string" then return k end
  if t == "number" then
    if k == math.floor(k) and k >= -2^53 and k <= 2^53 then return string.format("%d", k) end
    return string.format("%.17g", k)
  end
  if t == "boolean" then return tostring(k) end
  error("a key must be a string, number or boolean, got " .. t, 0)
end

-- A number as text: integers exactly, other numbers as Lua prints them.
function V.number_text(n)
  if n == math.floor(n) and n >= -2^63 and n < 2^63 then return string.format("%d", n) end
  return tostring(n)
end

-- A timestamp value → ms since the epoch, or nil.  Numbers below 1e11 are
-- seconds (1e11 ms is 1973; 1e11 s is the year 5138), strings are numbers or
-- ISO-8601 date-times.
local function to_ms(x)
  local t = type(x)
  if t == "number" then
    if x ~= x or x == math.huge or x == -math.huge then return nil end
    if x < 1e11 and x > -1e11 then x = x * 1000 end
    x = math.floor(x)
    -- years 1 to 9999 (EDDY_TS_MIN/MAX in core/ffi_api.h): 1e300 is no time
    if x < -62135596800000 or x > 253402300799999 then return nil end
    return x
  end
  if t == "string" then
    local n = tonumber(x)
    if n then return to_ms(n) end
    if C.eddy_parse_time(x, #x, ms_box) == 0 then return tonumber(ms_box[0]) end
  end
  return nil
end
V.to_ms = to_ms

return V
