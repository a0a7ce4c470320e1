-- scripts/bench/checkpoint/state-size.py copies this (as bench.conf.lua) next to
-- state-pipeline.lua and sets checkpoint.interval (CHECKPOINT_INTERVAL).
-- The debug log has one line per checkpoint ("checkpoint N committed in X ms
-- (alignment Y ms, B bytes, N new)"); the admin port is for /status.
return {
  name = "bench",
  pipeline = "state-pipeline.lua",
  threads = 2,
  guarantee = "exactly_once",
  checkpoint = { interval = "CHECKPOINT_INTERVAL", retain = 3 },
  state = { dir = "state", cache = "64MB" },
  log = { level = "debug" },
  admin = { listen = "127.0.0.1:0" },
  reload = { watch = false },
}
