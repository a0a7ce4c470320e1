-- What every baseline of the benchmarks takes: INPUT... OUTPUT.  Returns
-- the input paths and the output file (fully buffered); exits 2 with the
-- usage when there are not both.
--
--   local inputs, out = dofile(arg[0]:match("^(.*scripts/bench/)") .. "baseline_io.lua")(...)
return function(...)
  local nargs = select("#", ...)
  if nargs < 2 then
    io.stderr:write("usage: luajit " .. arg[0] .. " INPUT... OUTPUT\n")
    os.exit(2)
  end
  local inputs = { ... }
  local out = assert(io.open(inputs[nargs], "wb"))
  inputs[nargs] = nil
  out:setvbuf("full", 1024 * 1024)
  return inputs, out
end
