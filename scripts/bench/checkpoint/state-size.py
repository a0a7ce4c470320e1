#!/usr/bin/env python3
"""Checkpoint state-size benchmark (make bench): how long a checkpoint of
about 1 GB of keyed state takes when it is the first (every byte new), and
how long the next one takes after 1% of the keys changed.

The job (state-pipeline.lua, state.conf.lua: exactly_once, threads 2) keeps
one ~200-byte value state per key and follows its input file.  There is no
way to ask for a checkpoint at a chosen moment yet, and a periodic one taken
while the keys are loading would make the checkpoint after the load an
incremental one, so both checkpoints measured are the final checkpoints of a
clean stop (SIGTERM), with checkpoint.interval = 1h (no periodic ones):
  run 1: the input holds phase1.jsonl (every key); once every record went
         through the keyed tasks (/status), SIGTERM -> checkpoint 1, all new
  run 2: restores checkpoint 1; phase2.jsonl (a new value for 1% of the keys)
         is appended to the followed file; once processed, SIGTERM ->
         checkpoint 2, whose "new" bytes are the files checkpoint 1 lacks
Durations and bytes come from eddy's debug log line "checkpoint N committed in
X ms (alignment Y ms, B bytes, N new)".  Prints note lines for bench.sh;
exit 1 on failure.

usage: state-size.py EDDY_BIN WORKDIR INPUTDIR KEYS
"""
import json, os, re, shutil, signal, subprocess, sys, time, urllib.request

eddy, work, indir = (os.path.abspath(a) for a in sys.argv[1:4])
keys = int(sys.argv[4])
here = os.path.dirname(os.path.abspath(__file__))
TIMEOUT = float(os.environ.get("BENCH_TIMEOUT", "1800"))
LINE = re.compile(r"checkpoint (\d+) committed in ([\d.]+) ms \(alignment ([\d.]+) ms, (\d+) bytes, (\d+) new\)")

def fail(msg):
    print("checkpoint state: FAILED: %s (see %s)" % (msg, os.path.relpath(work)))
    sys.exit(1)

shutil.rmtree(work, ignore_errors=True)
os.makedirs(os.path.join(work, "input"))
os.makedirs(os.path.join(work, "out"))
shutil.copy(os.path.join(here, "state-pipeline.lua"), work)
conf = open(os.path.join(here, "state.conf.lua")).read().replace("CHECKPOINT_INTERVAL", "1h")
open(os.path.join(work, "bench.conf.lua"), "w").write(conf)
followed = os.path.join(work, "input", "in.jsonl")
shutil.copyfile(os.path.join(indir, "phase1.jsonl"), followed)
updates = os.path.join(indir, "phase2.jsonl")
n_updates = sum(1 for _ in open(updates, "rb"))
addr_file = os.path.join(work, "state", "admin.addr")

def start(run):
    if os.path.exists(addr_file):
        os.remove(addr_file)
    log_path = os.path.join(work, "run%d.log" % run)
    log = open(log_path, "w")
    t0 = time.monotonic()
    proc = subprocess.Popen([eddy, "run", "bench.conf.lua"], cwd=work, stdout=log, stderr=log)
    while not os.path.exists(addr_file) or not open(addr_file).read().strip():
        if proc.poll() is not None:
            fail("run %d: eddy exited %d at start" % (run, proc.returncode))
        if time.monotonic() - t0 > TIMEOUT:
            proc.kill()
            fail("run %d: eddy did not start" % run)
        time.sleep(0.05)
    return proc, log_path, open(addr_file).read().strip(), time.monotonic() - t0

def get(addr, path):
    with urllib.request.urlopen("http://%s%s" % (addr, path), timeout=30) as r:
        return json.loads(r.read())

def keyed_in(addr):
    return sum(t["records_in"] for t in get(addr, "/status")["tasks"] if "source" not in t)

def wait_processed(proc, addr, n, run):
    t0 = time.monotonic()
    while keyed_in(addr) < n:
        if proc.poll() is not None:
            fail("run %d: eddy exited %d" % (run, proc.returncode))
        if time.monotonic() - t0 > TIMEOUT:
            proc.kill()
            fail("run %d: %d records not processed within %ds" % (run, n, TIMEOUT))
        time.sleep(0.1)
    return time.monotonic() - t0

def peak_rss_mb(proc):
    try:
        for l in open("/proc/%d/status" % proc.pid):
            if l.startswith("VmHWM:"):
                return int(l.split()[1]) / 1024
    except OSError:
        pass
    return 0

def stop(proc, log_path, run):
    rss = peak_rss_mb(proc)
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        fail("run %d: eddy did not stop after SIGTERM" % run)
    if rc != 0:
        fail("run %d: eddy exited %d after SIGTERM" % (run, rc))
    found = [m for m in (LINE.search(l) for l in open(log_path)) if m]
    if not found:
        fail("run %d: no 'checkpoint N committed' line in its log" % run)
    m = found[-1]
    return dict(id=int(m.group(1)), ms=float(m.group(2)), align=float(m.group(3)),
                bytes=int(m.group(4)), new=int(m.group(5)), count=len(found), rss=rss)

MB = 1024 * 1024

# run 1: every key
proc, log1, addr, _ = start(1)
load_s = wait_processed(proc, addr, keys, 1)
c1 = stop(proc, log1, 1)
if c1["count"] != 1:
    fail("run 1 committed %d checkpoints, expected only the final one" % c1["count"])

# run 2: 1% of the keys get a new value
proc, log2, addr, start_s = start(2)
with open(updates, "rb") as src, open(followed, "ab") as dst:
    shutil.copyfileobj(src, dst)
upd_s = wait_processed(proc, addr, n_updates, 2)
first = open(updates).readline()
key, val = re.match(r'\{"k":"([^"]+)","v":"([^"]+)"\}', first).groups()
state = get(addr, "/state/big-state/%s" % key)
if state.get("v") != val:
    fail("run 2: /state/big-state/%s is %r, not the updated value" % (key, state))
c2 = stop(proc, log2, 2)
if c2["id"] != c1["id"] + 1:
    fail("run 2's final checkpoint is %d, expected %d" % (c2["id"], c1["id"] + 1))

ratio = c2["ms"] / c1["ms"] if c1["ms"] > 0 else float("inf")
print("checkpoint state: %d keys (~200-byte values) loaded in %.1f s (%.0f records/s, peak RSS %.0f MB); "
      "%d updates (1%%) in %.1f s after a restart (checkpoint %d restored, admin up in %.1f s)"
      % (keys, load_s, keys / load_s, c1["rss"], n_updates, upd_s, c1["id"], start_s))
print("checkpoint state: first (full) checkpoint %d: %.1f ms, %.1f MB (%.1f MB new)"
      % (c1["id"], c1["ms"], c1["bytes"] / MB, c1["new"] / MB))
print("checkpoint state: after 1%% of keys changed, checkpoint %d: %.1f ms, %.1f MB (%.1f MB new, %.2f%% of it); "
      "time %.3fx the first"
      % (c2["id"], c2["ms"], c2["bytes"] / MB, c2["new"] / MB, 100.0 * c2["new"] / max(c2["bytes"], 1), ratio))
