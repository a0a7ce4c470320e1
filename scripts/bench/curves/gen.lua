-- luajit gen.lua DIR N: DIR/timers.jsonl (N records of one key, 1 s apart)
-- and DIR/customers.jsonl + DIR/orders.jsonl (N orders over 100 customers,
-- a customer row changing every 50 orders).
local dir, n = arg[1], tonumber(arg[2])
local T = 1700000000000
local f = assert(io.open(dir .. "/timers.jsonl", "w"))
for i = 1, n do f:write(string.format('{"t":%d,"k":"k"}\n', T + i * 1000)) end
f:close()
local c = assert(io.open(dir .. "/customers.jsonl", "w"))
for i = 1, 100 do c:write(string.format('{"id":"c%d","city":"x%d","ts":%d}\n', i, i, T)) end
for i = 50, n, 50 do c:write(string.format('{"id":"c%d","city":"y%d","ts":%d}\n', i % 100 + 1, i, T + i * 100)) end
c:close()
local o = assert(io.open(dir .. "/orders.jsonl", "w"))
for i = 1, n do o:write(string.format('{"id":%d,"customer":"c%d","ts":%d}\n', i, i % 100 + 1, T + i * 100)) end
o:close()
