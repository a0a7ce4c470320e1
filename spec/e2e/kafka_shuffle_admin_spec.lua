-- shuffle = "kafka" against a real Apache Kafka broker (scripts/test.sh
-- starts one; support.eddy's kafka_broker fails the spec when there is
-- none): what eddy does with the brokers besides carrying records.
--   * at start it creates each keyed stage's repartition topic and each
--     stateful operator's compacted changelog, one partition per keyed task,
--     also when two instances start at the same moment; a topic that exists
--     with another partition count is refused (exit 2) naming the topic,
--     both counts and what to do;
--   * the instances publish their id and admin address to the group
--     (client.id), and /status lists the group's instances and what each
--     owns (input partitions, keyed tasks);
--   * GET /state/UID/KEY on an instance that does not own the key answers
--     307 to the owner's admin address, and following it answers the key's
--     state.
local E = require("support.eddy")
local cjson = require("cjson")
local run = E.shell

local P = 4             -- partitions of the input topic
local PAR = 3           -- keyed tasks (parallelism)
local SESSION_MS = 4000

describe("shuffle = \"kafka\": topics, the group and queries (real broker)", function()
  local dir, boot, topic_in, name
  local serial = 0
  before_each(function()
    dir = E.tmpdir()
    boot = E.kafka_broker()
    serial = serial + 1
    local id = E.run_id() .. "-" .. serial
    topic_in, name = "shadm-in-" .. id, "shadm-" .. id
    E.create_topic(boot, topic_in, P)
  end)
  after_each(function()
    run("pkill -KILL -f '^" .. E.bin .. " run " .. dir .. "/'")
    E.cleanup()
  end)

  -- a keyed running count per user in value state (uid "count"), its
  -- stage fed by key_by-2: topics <name>-key_by-2-repartition and
  -- <name>-count-changelog
  local function pipeline()
    E.write(dir .. "/app/pipeline.lua", [[
local eddy = require("eddy")
local p = eddy.pipeline()
p:source("in", { kafka = "]] .. topic_in .. [[", format = "json", start = "earliest" })
 :key_by("user")
 :process{ process = function(v, ctx)
    local n = ctx.state:value("n")
    local c = (n:get() or 0) + 1
    n:set(c)
    return ctx.key .. " " .. c
  end }:uid("count")
 :sink("out", { stdout = true, format = "lines" })
return p
]])
  end

  local function config(tag, o)
    o = o or {}
    local kafka = { ["bootstrap.servers"] = boot, ["session.timeout.ms"] = tostring(SESSION_MS),
                    ["heartbeat.interval.ms"] = "500" }
    local admin = { listen = "127.0.0.1:0" }
    if o.no_admin then admin = false end
    return E.write_config(dir, { name = name, pipeline = "app/pipeline.lua", shuffle = "kafka",
                                 parallelism = o.parallelism or PAR, state = { dir = dir .. "/state-" .. tag },
                                 admin = admin, kafka = kafka }, tag .. ".conf.lua")
  end

  local daemons
  local function start(tag, o)
    daemons = daemons or {}
    os.remove(dir .. "/state-" .. tag .. "/admin.addr")
    daemons[tag] = E.start({ "run", config(tag, o) }, { timeout = 200 })
    return daemons[tag]
  end

  local function addr(tag) return E.admin_addr(dir .. "/state-" .. tag, 30) end

  local function status(tag)
    local code, body = E.curl("http://" .. addr(tag) .. "/status")
    if code ~= 200 then return nil end
    local ok, s = pcall(cjson.decode, body)
    return ok and s or nil
  end

  -- partitions and cleanup.policy of a topic, as the broker has them
  local function describe_topic(topic)
    local out = E.kafka_tool({ "describe", boot, topic })
    return tonumber(out:match("partitions (%d+)")), out:match("cleanup.policy (%S+)")
  end

  local function stderr_of_all()
    local out = {}
    for tag, d in pairs(daemons or {}) do
      out[#out + 1] = string.format("--- %s (alive %s, exit %s)\n%s", tag, tostring(d:alive()), tostring(d:code()), d:stderr():sub(-3000))
    end
    return table.concat(out, "\n")
  end

  after_each(function() daemons = nil end)

  it("a repartition topic that exists with another partition count is refused (exit 2) naming the topic, both "
    .. "counts and what to do", function()
    pipeline()
    E.create_topic(boot, name .. "-key_by-2-repartition", 8)
    local r = E.run({ "run", config("a") }, { timeout = 60 })
    assert.are.equal(2, r.code, r.stderr)
    assert.matches("topic " .. name .. "-key_by-2-repartition exists with 8 partitions; shuffle = \"kafka\" needs 3 "
      .. "(one per keyed task of stage keyed1, its parallelism): delete the topic or set parallelism = 8",
      r.stderr, 1, true)
    assert.are.equal("", r.stdout)
    -- nothing was created or changed meanwhile
    assert.are.same({ 8, "delete" }, { describe_topic(name .. "-key_by-2-repartition") })
  end)

  it("a changelog that exists with another partition count is refused the same way", function()
    pipeline()
    E.create_topic(boot, name .. "-count-changelog", 2, { "cleanup.policy=compact" })
    local r = E.run({ "run", config("a") }, { timeout = 60 })
    assert.are.equal(2, r.code, r.stderr)
    assert.matches("topic " .. name .. "-count-changelog exists with 2 partitions; shuffle = \"kafka\" needs 3 "
      .. "(one per keyed task of stage keyed1, its parallelism): delete the topic or set parallelism = 2",
      r.stderr, 1, true)
  end)

  it("a count above max_parallelism leaves deleting the topic as the only way out", function()
    pipeline()
    E.create_topic(boot, name .. "-key_by-2-repartition", 130)
    local r = E.run({ "run", config("a") }, { timeout = 60 })
    assert.are.equal(2, r.code, r.stderr)
    assert.matches("exists with 130 partitions; shuffle = \"kafka\" needs 3 (one per keyed task of stage keyed1, "
      .. "its parallelism): delete the topic\n", r.stderr, 1, true)
  end)

  it("two instances starting at the same moment create the repartition topic and the compacted changelog once, "
    .. "one partition per keyed task, and both run", function()
    pipeline()
    start("a")
    start("b")
    for _, tag in ipairs({ "a", "b" }) do
      local ok = E.wait_for(function()
        local s = status(tag)
        return s and s.state == "running" and s.group and s.group.instances
      end, 60, 0.2)
      assert(ok, tag .. " is not running\n" .. stderr_of_all())
    end
    assert.are.same({ PAR, "delete" }, { describe_topic(name .. "-key_by-2-repartition") })
    assert.are.same({ PAR, "compact" }, { describe_topic(name .. "-count-changelog") })
    -- a third start finds them there, with the right counts
    start("c")
    assert(E.wait_for(function() local s = status("c") return s and s.state == "running" end, 60, 0.2),
      "c is not running\n" .. stderr_of_all())
    assert.is_true(daemons.a:alive() and daemons.b:alive() and daemons.c:alive(), stderr_of_all())
  end)

  -- ---- the group and queries routed to the owner ----------------------------

  -- waits until /status of `tag` lists exactly the instances in `tags` (by
  -- admin address), every input partition and every keyed task held by one
  -- of them; returns the group section
  local function wait_group(tag, tags, timeout)
    local want = {}
    for _, t in ipairs(tags) do want[addr(t)] = t end
    local last
    local g = E.wait_for(function()
      local s = status(tag)
      last = s and s.group
      if not (last and last.instances and #last.instances == #tags) then return nil end
      local inputs, keyed = {}, {}
      for _, i in ipairs(last.instances) do
        if not want[i.admin] then return nil end
        for _, p in ipairs(i.inputs) do
          if inputs[p] then return nil end
          inputs[p] = true
        end
        for _, k in ipairs(i.keyed_tasks) do
          if keyed[k] then return nil end
          keyed[k] = true
        end
      end
      for p = 0, P - 1 do if not inputs[topic_in .. "/" .. p] then return nil end end
      for k = 0, PAR - 1 do if not keyed["keyed1/" .. k] then return nil end end
      return last
    end, timeout or 60, 0.3)
    assert(g, "the group did not settle on " .. cjson.encode(tags) .. ": last /status group "
      .. cjson.encode(last or "?") .. "\n" .. stderr_of_all())
    return g
  end

  -- GET url: status, body and Location (follow: curl -L)
  local function get(url, follow)
    local work = E.capture("mktemp -d /tmp/eddy-curl.XXXXXXXX"):gsub("%s+$", "")
    local code = E.capture(string.format("curl -s -m 10 %s -D %s/h -o %s/b -w '%%{http_code}' '%s'",
      follow and "-L" or "", work, work, url))
    local headers, body = E.read(work .. "/h") or "", E.read(work .. "/b") or ""
    run("rm -rf " .. work)
    local loc
    for l in headers:gmatch("[^\r\n]+") do loc = l:match("^[Ll]ocation: (%S+)") or loc end
    return tonumber(code), body, loc
  end

  -- produces n_u records {"user": u} for users u1..u<users>, round robin over the partitions
  local function produce(users)
    local lines, count = {}, {}
    for round = 1, 4 do
      for i = 1, users do
        if round <= i % 4 + 1 then
          local u = "u" .. i
          count[u] = (count[u] or 0) + 1
          lines[#lines + 1] = string.format('{"user":"%s"}', u)
        end
      end
    end
    E.write(dir .. "/produce.txt", table.concat(lines, "\n") .. "\n")
    local rc, out = run(string.format("timeout 20 kcat -P -b %s -t %s < %s/produce.txt 2>&1", boot, topic_in, dir))
    assert.are.equal(0, rc, "kcat could not produce: " .. out)
    return count
  end

  it("/status lists the group's instances with their admin addresses and what each owns", function()
    pipeline()
    start("a")
    start("b")
    local g = wait_group("a", { "a", "b" })
    local gb = wait_group("b", { "a", "b" })
    -- each names itself
    local self_a, self_b
    for _, i in ipairs(g.instances) do if i.self then self_a = i end end
    for _, i in ipairs(gb.instances) do if i.self then self_b = i end end
    assert.are.equal(addr("a"), self_a.admin)
    assert.are.equal(addr("b"), self_b.admin)
    assert.are.equal(g.instance, self_a.instance)
    assert.are.equal((E.read(dir .. "/state-a/instance"):gsub("%s+$", "")), g.instance)
    assert.are_not.equal(g.instance, gb.instance)
    -- both hold something (cooperative-sticky spreads the 7 partitions 4 and
    -- 3, of either kind)
    assert.is_true(#self_a.inputs + #self_a.keyed_tasks > 0 and #self_b.inputs + #self_b.keyed_tasks > 0,
      cjson.encode(g))
    -- the keyed tasks carry their stage's name: keyed1/0 .. keyed1/2
  end)

  it("GET /state/UID/KEY on the instance not owning the key answers 307 to the owner, and following it answers "
    .. "the key's state", function()
    pipeline()
    start("a")
    start("b")
    wait_group("a", { "a", "b" })
    wait_group("b", { "a", "b" })
    local USERS = 24
    local count = produce(USERS)
    local admins = { a = addr("a"), b = addr("b") }
    local redirected = { a = 0, b = 0 }
    for i = 1, USERS do
      local u = "u" .. i
      -- the owner answers from its state once the records reached it
      local owner
      local ok = E.wait_for(function()
        for tag, other in pairs({ a = "b", b = "a" }) do
          local code, body, loc = get("http://" .. admins[tag] .. "/state/count/" .. u)
          if code == 200 then
            local st = cjson.decode(body)
            if st.n ~= count[u] then return nil end
            -- the other instance sends the query here
            local c2, b2, l2 = get("http://" .. admins[other] .. "/state/count/" .. u)
            assert.are.equal(307, c2, u .. " on " .. other .. ": " .. b2)
            assert.are.equal("http://" .. admins[tag] .. "/state/count/" .. u, l2)
            local owner_doc = cjson.decode(b2).owner
            assert.are.equal(admins[tag], owner_doc.admin)
            owner = tag
            redirected[other] = redirected[other] + 1
            -- and following it answers the state
            local c3, b3 = get("http://" .. admins[other] .. "/state/count/" .. u, true)
            assert.are.equal(200, c3, b3)
            assert.are.same({ n = count[u] }, cjson.decode(b3))
            return true
          end
          assert(code == 307 or code == 503 or code == 404, u .. " on " .. tag .. " (" .. admins[tag] .. "): " .. code .. " " .. body .. "\n" .. stderr_of_all()
            .. (loc or ""))
        end
      end, 60, 0.2)
      assert(ok, "no instance answered the state of " .. u .. " (" .. count[u] .. " records)\n" .. stderr_of_all())
      assert.is_not_nil(owner)
    end
    -- every key: answered by one instance, sent there by the other
    assert.are.equal(USERS, redirected.a + redirected.b, cjson.encode(redirected))
  end)

  it("an instance taking keyed tasks over answers GET /state/UID/KEY 503 until their state is restored from the "
    .. "changelog, never a partial state", function()
    pipeline()
    local USERS, R = 100, 300
    start("a")
    wait_group("a", { "a" })
    -- R records for each of USERS users
    local lines = {}
    for r = 1, R do for i = 1, USERS do lines[#lines + 1] = string.format('{"user":"u%d"}', i) end end
    E.write(dir .. "/produce.txt", table.concat(lines, "\n") .. "\n")
    local rc, out = run(string.format("timeout 60 kcat -P -b %s -t %s < %s/produce.txt 2>&1", boot, topic_in, dir))
    assert.are.equal(0, rc, "kcat could not produce: " .. out)
    for _, u in ipairs({ "u1", "u" .. USERS }) do
      assert(E.wait_for(function()
        local code, body = get("http://" .. addr("a") .. "/state/count/" .. u)
        return code == 200 and cjson.decode(body).n == R
      end, 120, 0.2), "a did not count " .. u .. " to " .. R .. "\n" .. stderr_of_all())
    end
    daemons.a:kill("TERM")
    assert.are.equal(0, daemons.a:wait(30), "a did not stop cleanly\n" .. stderr_of_all())
    -- b starts with an empty state.dir: everything it answers comes from the changelog
    start("b")
    local b = addr("b")
    local codes, why = {}, {}
    local final = E.wait_for(function()
      local code, body = get("http://" .. b .. "/state/count/u1")
      codes[#codes + 1] = code
      if code == 200 then return cjson.decode(body) end
      assert(code == 503, "b answered " .. code .. " " .. body .. "\n" .. stderr_of_all())
      why[cjson.decode(body).error:match("restoring") and "restoring" or "unowned"] = true
    end, 120, 0.02)
    assert.are.same({ n = R }, final, "b's answers: " .. cjson.encode(codes))
    -- the other keyed tasks restore on their own: 503 until each has
    for i = 2, USERS do
      local code, body
      E.wait_for(function()
        code, body = get("http://" .. b .. "/state/count/u" .. i)
        assert(code == 200 or code == 503, "b answered " .. code .. " " .. body)
        return code == 200
      end, 120, 0.02)
      assert.are.equal(200, code, body)
      assert.are.same({ n = R }, cjson.decode(body))
    end
    print(string.format("\n  b answered 503 %d times before the state of u1 (%s), then 200", #codes - 1,
      cjson.encode(why)))
  end)

  it("a key owned by an instance without an admin server is answered 502 naming that member", function()
    pipeline()
    start("a")
    start("b", { no_admin = true })
    -- a lists b, with no admin address
    local g = E.wait_for(function()
      local s = status("a")
      if not (s and s.group and s.group.instances and #s.group.instances == 2) then return nil end
      local n = 0
      for _, i in ipairs(s.group.instances) do n = n + #i.keyed_tasks end
      return n == PAR and s.group
    end, 60, 0.3)
    assert(g, "a did not list both instances\n" .. stderr_of_all())
    local b_tasks = 0
    for _, i in ipairs(g.instances) do
      if not i.self then
        assert.are.equal(cjson.null, i.admin)
        b_tasks = #i.keyed_tasks
      end
    end
    local count = produce(24)
    local seen = { [200] = 0, [502] = 0 }
    for i = 1, 24 do
      local u = "u" .. i
      assert(E.wait_for(function()
        local code, body = get("http://" .. addr("a") .. "/state/count/" .. u)
        if code == 200 and cjson.decode(body).n == count[u] then seen[200] = seen[200] + 1 return true end
        if code == 502 then
          assert.matches("keyed task keyed1/%d %(key group %d+, " .. name:gsub("%-", "%%-") .. "%-key_by%-2%-repartition/%d%) runs on "
            .. "member eddy/%x+/, which publishes no admin address", cjson.decode(body).error)
          seen[502] = seen[502] + 1
          return true
        end
      end, 60, 0.2), u .. " was not answered\n" .. stderr_of_all())
    end
    -- which answer a key gets follows who holds its keyed task
    if b_tasks == 0 then assert.are.equal(0, seen[502]) end
    if b_tasks == PAR then assert.are.equal(0, seen[200]) end
    assert.are.equal(24, seen[200] + seen[502])
  end)
end)
