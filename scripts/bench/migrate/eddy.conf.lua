return {
  name = "migrate-bench",
  pipeline = "pipeline.lua",
  threads = 2,
  parallelism = 2,
  state = { dir = "state" },
  admin = { listen = "127.0.0.1:0" },
  reload = { watch = false },      -- reloads come from POST /reload only
}
