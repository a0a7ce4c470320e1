-- scripts/bench.sh (bench_checkpoint) copies this next to pipeline.lua and
-- the input as bench.conf.lua and runs it from that folder, with 2 threads.
-- alo.conf.lua under exactly_once with a checkpoint every 10 s; the debug log
-- has one line per checkpoint ("checkpoint N committed in X ms (...)").
return {
  name = "bench",
  pipeline = "pipeline.lua",
  threads = 2,
  guarantee = "exactly_once",
  checkpoint = { interval = "10s", retain = 3 },
  state = { dir = "state", cache = "64MB" },
  log = { level = "debug" },
  admin = false,
  reload = { watch = false },
}
