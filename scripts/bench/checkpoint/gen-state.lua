#!/usr/bin/env luajit
-- Writes the input of the checkpoint state-size benchmark (deterministic):
--   DIR/phase1.jsonl  N records {"k":"k00000001","v":"<200 chars>"}, one per key
--   DIR/phase2.jsonl  a new value for 1% of the keys (every 100th, spread over
--                     the whole key range)
-- Values are random base64-like text, so RocksDB's block compression cannot
-- shrink the state much: N = 5M gives about 1 GB of state.
--
--   luajit scripts/bench/checkpoint/gen-state.lua DIR [N]
local dir, n = arg[1], tonumber(arg[2] or 5000000)
if not dir or not n then
  io.stderr:write("usage: luajit scripts/bench/checkpoint/gen-state.lua DIR [N]\n")
  os.exit(2)
end
local ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local PIECE, PIECES, NPOOL = 40, 5, 65536      -- a value: 5 pieces of 40 chars from a pool
math.randomseed(11)
local random, format, concat, sub = math.random, string.format, table.concat, string.sub
local pool, chars = {}, {}
for i = 1, NPOOL do
  for j = 1, PIECE do
    local c = random(64)
    chars[j] = sub(ALPHABET, c, c)
  end
  pool[i] = concat(chars)
end
local function value()
  return pool[random(NPOOL)] .. pool[random(NPOOL)] .. pool[random(NPOOL)] .. pool[random(NPOOL)] .. pool[random(NPOOL)]
end
assert(PIECES == 5)

local function write(path, from, to, step)
  local f = assert(io.open(path, "wb"))
  local buf, nbuf = {}, 0
  for i = from, to, step do
    nbuf = nbuf + 1
    buf[nbuf] = format('{"k":"k%08d","v":"%s"}\n', i, value())
    if nbuf == 8192 then
      f:write(concat(buf, "", 1, nbuf))
      nbuf = 0
    end
  end
  if nbuf > 0 then f:write(concat(buf, "", 1, nbuf)) end
  assert(f:close())
end
write(dir .. "/phase1.jsonl", 1, n, 1)
write(dir .. "/phase2.jsonl", 100, n, 100)
