#!/usr/bin/env python3
"""Migration benchmark (make bench, BENCH_ONLY=migrate): a process operator
holding KEYS keys' state (default 1M), then reloads under load, alternately
without a migrate and with a new one (each converts every key: lazily as
records come, and in the background).  Prints the reload pause per task
(last record on the old version -> first on the new, as eddy measures it)
p50/p99 for each kind, and how long the background conversion of every key
took.

usage: reload-migrate.py EDDY_BIN WORKDIR [KEYS] [RELOADS]
"""
import json, os, shutil, signal, subprocess, sys, threading, time, urllib.request

eddy, work = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
keys = int(sys.argv[3]) if len(sys.argv) > 3 else 1000000
reloads = int(sys.argv[4]) if len(sys.argv) > 4 else 4
src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench", "migrate")

shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
text = open(os.path.join(src, "pipeline.lua")).read()
def version(n, migrate):
    m = ("migrate = function(old, ctx) local a = old.agg or { sum = 0, n = 0 }; "
         "return { agg = { sum = a.sum, n = a.n, m = %d } } end," % n) if migrate else ""
    return text.replace("MIGRATE", m).replace("TAG", "v%d" % n)
open(os.path.join(work, "pipeline.lua"), "w").write(version(0, False))
shutil.copy(os.path.join(src, "eddy.conf.lua"), work)
inp = os.path.join(work, "in.txt")
with open(inp, "w") as f:                     # every key once: the state to migrate
    for i in range(keys):
        f.write("k%d 1\n" % i)

log = open(os.path.join(work, "run.log"), "w")
proc = subprocess.Popen([eddy, "run", "eddy.conf.lua"], cwd=work, stderr=log, stdout=log)
addr_file = os.path.join(work, "state", "admin.addr")
deadline = time.time() + 20
while not os.path.exists(addr_file):
    if time.time() > deadline or proc.poll() is not None:
        sys.exit("migrate bench: eddy did not start (see %s/run.log)" % work)
    time.sleep(0.05)
addr = open(addr_file).read().strip()

def http(method, path):
    req = urllib.request.Request("http://%s%s" % (addr, path), method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")

def read_in():
    code, st = http("GET", "/status")
    return sum(tk["records_in"] for tk in st["tasks"] if "source" in tk), st

t0 = time.time()
while read_in()[0] < keys:
    if time.time() - t0 > 600:
        sys.exit("migrate bench: the state was not built in 10 minutes")
    time.sleep(0.2)
load_s = time.time() - t0

written = [keys]
stop = threading.Event()
def writer():
    # load: ~20k lines/s over random keys, appended in small batches
    h = open(inp, "a")
    i, s = 0, 12345
    while not stop.is_set():
        for _ in range(100):
            s = (s * 16807) % 2147483647
            h.write("k%d 1\n" % (s % keys))
            i += 1
        h.flush()
        written[0] = keys + i
        time.sleep(0.005)
    h.close()
t = threading.Thread(target=writer)
t.start()
time.sleep(0.5)

pauses = {False: [], True: []}
converted = []
for r in range(1, reloads * 2 + 1):
    migrate = r % 2 == 0
    open(os.path.join(work, "pipeline.lua"), "w").write(version(r, migrate))
    code, body = http("POST", "/reload")
    if code != 200:
        sys.exit("migrate bench: reload %d answered %d: %s" % (r, code, body))
    target, start = body["version"], time.time()
    while True:
        code, st = http("GET", "/status")
        if all(tk["version"] == target for tk in st["tasks"]):
            break
        if time.time() - start > 30:
            sys.exit("migrate bench: version %d did not reach every task" % target)
        time.sleep(0.01)
    time.sleep(0.2)   # under load every task sees records on the new version at once
    code, st = http("GET", "/status")
    pauses[migrate] += [tk["last_reload_pause_ms"] for tk in st["tasks"]]
    if migrate:       # the next reload waits for the background conversion
        while True:
            code, st = http("GET", "/status")
            if not st["pipeline"].get("migrating"):
                break
            if time.time() - start > 600:
                sys.exit("migrate bench: the migration of reload %d did not end in 10 minutes" % r)
            time.sleep(0.05)
        converted.append(time.time() - start)

stop.set()
t.join()
deadline = time.time() + 120
while read_in()[0] < written[0] and time.time() < deadline:
    time.sleep(0.1)
n_in = read_in()[0]
proc.send_signal(signal.SIGTERM)
rc = proc.wait(timeout=120)

def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]
print("migrate: %d keys of process state (built in %.1f s), %d reloads under load, %d records in, exit %d"
      % (keys, load_s, reloads * 2, n_in, rc))
for m in (False, True):
    print("migrate: reload pause per task %s: p50 %.2f ms, p99 %.2f ms, max %.2f ms over %d samples"
          % ("with a migrate of every key" if m else "without a migrate", pct(pauses[m], 50), pct(pauses[m], 99),
             max(pauses[m]), len(pauses[m])))
print("migrate: every key converted %.1f s after the reload (median of %d; %.0f keys/s)"
      % (pct(converted, 50), len(converted), keys / pct(converted, 50)))
sys.exit(0 if rc == 0 and n_in >= written[0] else 1)
