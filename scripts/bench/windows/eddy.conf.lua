-- scripts/bench.sh copies this next to pipeline.lua and the input, runs it
-- from that folder, and rewrites `threads` for each run.  Its note shows
-- peak RSS against state.cache (read from here: keep it in MB).
return {
  name = "bench",
  pipeline = "pipeline.lua",
  threads = 1,
  state = { cache = "64MB" },
  admin = false,
  reload = { watch = false },
}
