-- scripts/bench.sh (bench_checkpoint) copies this next to pipeline.lua and
-- the input as bench.conf.lua and runs it from that folder, with 2 threads.
-- The baseline of eo.conf.lua: the same job under at_least_once.
return {
  name = "bench",
  pipeline = "pipeline.lua",
  threads = 2,
  guarantee = "at_least_once",
  state = { dir = "state", cache = "64MB" },
  admin = false,
  reload = { watch = false },
}
