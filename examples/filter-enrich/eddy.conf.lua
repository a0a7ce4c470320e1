-- Run with: bin/eddy run examples/filter-enrich/eddy.conf.lua
return {
  name = "filter-enrich",
  pipeline = "pipeline.lua",
  threads = 2,
  parallelism = 2,
  on_error = "dead_letter",          -- bad records land in dead_letter.file
  dead_letter = { file = "out/dead-letter.jsonl" },
  admin = false,
}
