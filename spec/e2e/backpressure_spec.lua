-- Backpressure: when a sink cannot keep up, the channels between stages fill,
-- the sources stop reading, and memory stays bounded by the channels'
-- capacity instead of growing with the input.  The sink here is stdout into a
-- pipe nobody reads for a while.
local E = require("support.eddy")
local write = E.write
local function sh(cmd) return E.sh(cmd) == 0 end
local read = E.read
local eddy_bin = assert(os.getenv("EDDY_BIN"), "EDDY_BIN must be set")




local function rss_kb(pid)
  local s = read("/proc/" .. pid .. "/status")
  return s and tonumber(s:match("VmRSS:%s*(%d+)"))
end

describe("backpressure", function()
  local dir
  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(sh("mkdir -p " .. dir .. "/in"))
  end)
  after_each(function() sh("rm -rf " .. dir) end)

  it("stops reading when the sink blocks, so memory stays far below the input's size, then completes", function()
    -- 2 files x 400k records (~90 MB in all)
    for f = 1, 2 do
      local out = assert(io.open(dir .. "/in/part-" .. f .. ".jsonl", "w"))
      local pad = string.rep("x", 80)
      for i = 1, 400000 do out:write('{"id":', i, ',"k":"k', i % 97, '","pad":"', pad, '"}\n') end
      out:close()
    end
    local input_kb = 0
    for f = 1, 2 do
      local h = io.open(dir .. "/in/part-" .. f .. ".jsonl", "rb")
      input_kb = input_kb + h:seek("end") / 1024
      h:close()
    end
    write(dir .. "/pipeline.lua", [[
      local eddy = require("eddy")
      local p = eddy.pipeline()
      p:source("in", { file = "in/*.jsonl", format = "json" })
       :key_by("k")
       :map(function(v) return v.id end)
       :sink("out", { stdout = true, format = "lines" })
      return p
    ]])
    write(dir .. "/eddy.conf.lua", [[
      return { pipeline = "pipeline.lua", threads = 2, parallelism = 1, admin = false }
    ]])
    assert(sh("mkfifo " .. dir .. "/fifo"))
    -- eddy writes into the fifo; the reader starts only after we have looked at eddy's memory
    assert(sh(string.format("cd %s && (%s run eddy.conf.lua > fifo 2> err.log; echo $? > rc) & echo $! > /dev/null",
      dir, eddy_bin)))
    assert(sh(string.format("cd %s && (exec 3<fifo; sleep 2; cat <&3 > out.txt; echo done > reader.done) &", dir)))
    local pid
    for _ = 1, 50 do
      local p = io.popen("pgrep -n -f '^" .. eddy_bin .. " run eddy.conf.lua'")
      pid = p:read("*l")
      p:close()
      if pid and pid ~= "" then break end
      sh("sleep 0.1")
    end
    assert.truthy(pid, "eddy did not start")
    sh("sleep 1.5")                                   -- the reader is still asleep: eddy is stuck behind it
    local rss = rss_kb(pid)
    assert.truthy(rss, "cannot read eddy's memory")
    -- without backpressure eddy would have read and buffered most of the input by now;
    -- under AddressSanitizer (make asan) the process carries ~40 MB of fixed overhead,
    -- under ThreadSanitizer (make tsan) ~70 MB (its shadow of every byte eddy touches);
    -- without backpressure eddy would hold most of the 88 MB input, and TSAN four times that
    local allowance = os.getenv("EDDY_ASAN") and 40000 or os.getenv("EDDY_TSAN") and 80000 or 0
    assert.is_true(rss < input_kb / 3 + allowance, string.format("RSS %d kB while blocked, input %d kB", rss, input_kb))
    for _ = 1, 600 do                                  -- at most 60 s for the rest of the run
      if read(dir .. "/reader.done") and read(dir .. "/rc") then break end
      sh("sleep 0.1")
    end
    assert.are.equal("0", (read(dir .. "/rc") or "?"):match("%d+"), read(dir .. "/err.log"))
    local n = 0
    for _ in io.lines(dir .. "/out.txt") do n = n + 1 end
    assert.are.equal(800000, n)
  end)
end)
