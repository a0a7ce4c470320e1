-- scripts/bench.sh (bench_scaleout) fills in the @...@ fields for each
-- instance of each row: every instance of a row has the same config but for
-- its state.dir; the group (name) is new for each row, so every row reads
-- the input from its start.
return {
  name = "@NAME@",
  pipeline = "pipeline.lua",
  shuffle = "@SHUFFLE@",
  threads = 2,
  parallelism = 6,
  guarantee = "exactly_once",
  checkpoint = { interval = "@INTERVAL@", retain = 2 },
  state = { dir = "@STATE@", cache = "64MB" },
  kafka = { ["bootstrap.servers"] = "@BROKERS@" },
  admin = false,
  reload = { watch = false },
}
