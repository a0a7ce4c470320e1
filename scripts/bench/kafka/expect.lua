-- The output counts of the Kafka benchmarks' jobs over the input files, as
-- scripts/bench.sh (bench_kafka) expects every system to write them:
-- records the stateless job keeps (amount >= 10), and windows of the keyed
-- job (distinct word and minute of ts).
--
--   luajit scripts/bench/kafka/expect.lua FILE...   → "STATELESS KEYED"
local cjson = require("cjson")
local kept, windows, seen = 0, 0, {}
for _, path in ipairs(arg) do
  for line in io.lines(path) do
    local v = cjson.decode(line)
    if v.amount >= 10 then kept = kept + 1 end
    local w = v.word .. "\0" .. math.floor(v.ts / 60000)
    if not seen[w] then seen[w] = true; windows = windows + 1 end
  end
end
print(kept, windows)
