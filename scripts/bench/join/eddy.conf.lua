-- scripts/bench.sh copies this next to pipeline.lua and the input, runs it
-- from that folder, and rewrites `threads` for each run.
return {
  name = "bench",
  pipeline = "pipeline.lua",
  threads = 1,
  admin = false,
  reload = { watch = false },
}
