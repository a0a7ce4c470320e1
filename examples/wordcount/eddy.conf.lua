-- Run with `make run`, or: bin/eddy run examples/wordcount/eddy.conf.lua
return {
  name = "wordcount",
  pipeline = "pipeline.lua",
  threads = 2,
  parallelism = 1,            -- one keyed task: counts print in window, then word order
  admin = false,              -- a batch run over files; see the README for the admin API
  reload = { watch = false },
}
