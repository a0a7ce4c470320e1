-- scripts/bench.sh (bench_kafka) copies this next to stateless.lua or
-- keyed.lua (as pipeline.lua) and fills in the @...@ fields for each row.
-- The consumer group (name) is new for each row, so every row reads the
-- input topic from its start.  Under at_least_once offsets are committed
-- every 5 s (auto.commit.interval.ms, the default), under exactly_once a
-- checkpoint every @INTERVAL@: the peers get the same intervals.
return {
  name = "@NAME@",
  pipeline = "pipeline.lua",
  threads = @THREADS@,
  guarantee = "@GUARANTEE@",
  checkpoint = { interval = "@INTERVAL@", retain = 2 },
  state = { dir = "state", cache = "64MB" },
  kafka = { ["bootstrap.servers"] = "@BROKERS@", ["auto.commit.interval.ms"] = "5000" },
  admin = false,
  reload = { watch = false },
}
