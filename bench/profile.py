#!/usr/bin/python3
"""bench/profile.py - the profiles behind bench/RESULTS.md, reproducible.

    /usr/bin/python3 bench/profile.py sync-perf 4000        # perf: where a 4k-route sync's CPU goes
    /usr/bin/python3 bench/profile.py sync-perf 2000 --callers   # ... with DWARF call chains
    /usr/bin/python3 bench/profile.py sync-cpu 1000 2000 4000 10000  # bridge CPU vs routes
    /usr/bin/python3 bench/profile.py rss 1000 4000 10000    # RSS vs routes, bytes per route
    /usr/bin/python3 bench/profile.py massif 1000            # heap by allocation site
    /usr/bin/python3 bench/profile.py callgrind 200          # instructions per etcd change

Each command starts etcd and the API test server in a temporary directory (the same
environment as bench/run.py, whose helpers it uses), runs the bridge under the profiler,
prints a summary and stops everything.  perf and valgrind must be installed.
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as R  # noqa: E402
from cbtest import wait_until  # noqa: E402


class Args:
    keep = False
    bridge = os.environ.get("CANARY_BRIDGE") or os.path.join(R.REPO, "build", "canary-bridge")


def wrapper(tmp, argv):
    """A script that runs the bridge under a tool (Bridge wants one executable)."""
    path = os.path.join(tmp, "wrap-%d.sh" % len(os.listdir(tmp)))
    with open(path, "w") as f:
        f.write("#!/bin/sh\nexec %s %s \"$@\"\n" % (" ".join(argv), Args.bridge))
    os.chmod(path, 0o755)
    return path


def synced_bridge(env, kube, n, binary=None, name="p"):
    """Load n routes, start a bridge (optionally through `binary`), return it once all n
    IngressRoutes are created (the caller exits the context)."""
    kv = R.EtcdKV(env.etcd)
    kv.put_many([kvp for i in range(n) for kvp in R.route_keys(name + "/", "r%d" % i, 1)])
    kv.close()
    saved = env.binary
    if binary:
        env.binary = binary
    try:
        b = env.bridge(name, kube, "etcd", name + "/")
    finally:
        env.binary = saved
    return b


def wait_created(b, n, kube, timeout=900):
    counter = R.CreatedCounter(R.Kube(kube), since=0)
    wait_until(lambda: counter.count() >= n or not b.alive(), timeout=timeout, interval=0.5,
               what="%d objects" % n)


def cmd_sync_perf(a):
    n = a.routes[0]
    with tempfile.TemporaryDirectory(prefix="cb-prof-") as tmp, R.Env(Args) as env, \
            env.kube("p") as kube:
        b = synced_bridge(env, kube, n)
        with b:
            data = os.path.join(tmp, "perf.data")
            argv = ["perf", "record", "-F", "999", "-o", data, "-p", str(b.proc.pid)]
            if a.callers:
                argv[2:2] = ["--call-graph", "dwarf,16384"]
            perf = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            t0 = time.time()
            wait_created(b, n, kube)
            print("%d routes synced in %.1f s, bridge CPU %.2f s" % (
                n, time.time() - t0, R.proc_cpu_ticks(b.proc.pid) / float(R.CLK_TCK)))
            perf.send_signal(2)
            perf.wait(60)
        rep = ["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "symbol"]
        if a.callers:
            rep.append("-G")
        out = subprocess.run(rep, capture_output=True, text=True).stdout
        lines = [ln for ln in out.splitlines() if ln.strip() and not ln.startswith("#")]
        print("\n".join(lines[:a.lines]))


def cmd_sync_cpu(a):
    print("%8s  %9s  %12s  %15s" % ("routes", "sync s", "bridge CPU s", "CPU ms per route"))
    for n in a.routes:
        with R.Env(Args) as env, env.kube("p") as kube:
            b = synced_bridge(env, kube, n)
            with b:
                t0 = time.time()
                wait_created(b, n, kube)
                cpu = R.cpu_quiet(b.proc.pid, 2.0) / float(R.CLK_TCK)
                print("%8d  %9.1f  %12.2f  %15.3f" % (n, time.time() - t0, cpu, cpu * 1000.0 / n),
                      flush=True)


def cmd_rss(a):
    rows = []
    for n in a.routes:
        with R.Env(Args) as env, env.kube("p") as kube:
            b = synced_bridge(env, kube, n)
            with b:
                wait_created(b, n, kube)
                R.cpu_quiet(b.proc.pid, 2.0)
                st = R.proc_status(b.proc.pid)
                rows.append((n, R.kib(st["VmRSS"]), R.kib(st["VmData"])))
                print("%6d routes: VmRSS %6.1f MiB, VmData %6.1f MiB" % (
                    n, rows[-1][1] / 1024.0, rows[-1][2] / 1024.0), flush=True)
    if len(rows) >= 2:
        (n0, r0, _), (n1, r1, _) = rows[0], rows[-1]
        per = (r1 - r0) * 1024.0 / (n1 - n0)
        print("slope %.0f bytes of RSS per route; intercept %.1f MiB" % (
            per, (r0 * 1024.0 - per * n0) / 1048576.0))


def cmd_massif(a):
    n = a.routes[0]
    with tempfile.TemporaryDirectory(prefix="cb-prof-") as tmp, R.Env(Args) as env, \
            env.kube("p") as kube:
        out = os.path.join(tmp, "massif.out")
        w = wrapper(tmp, ["valgrind", "--tool=massif", "--massif-out-file=" + out])
        b = synced_bridge(env, kube, n, binary=w)
        with b:
            wait_created(b, n, kube)
            R.cpu_quiet(b.proc.pid, 3.0)
        txt = subprocess.run(["ms_print", "--threshold=%g" % a.threshold, out],
                             capture_output=True, text=True).stdout
    # The last detailed snapshot: its top-level allocation sites, then the heap under each
    # bridge function that appears in it (each allocation path counts once per function).
    i = txt.rfind("(heap allocation functions)")
    snap = txt[txt.rfind("\n", 0, i) + 1:]
    lines = snap.splitlines()
    print("last snapshot: " + lines[0].strip())
    for ln in lines[1:]:
        if ln.startswith("->"):
            print("  " + ln[:140])
    sums, stack = {}, []          # stack: (depth, function) of the current path
    for ln in lines:
        m = re.search(r"->\s*[\d.]+% \(([\d,]+)B\) 0x[0-9A-F]+: (\w+) \((\w+\.c):", ln)
        if "->" not in ln:
            continue
        depth = ln.index("->")
        while stack and stack[-1][0] >= depth:
            stack.pop()
        key = "%s (%s)" % (m.group(2), m.group(3)) if m else None
        if key and key not in (f for _, f in stack):
            sums[key] = sums.get(key, 0) + int(m.group(1).replace(",", ""))
        stack.append((depth, key))
    print("heap under bridge functions (bytes, per route for %d routes):" % n)
    for key, b in sorted(sums.items(), key=lambda kv: -kv[1])[:a.lines]:
        print("  %-48s %12s  %8.0f" % (key, "{:,}".format(b), b / float(n)))


def cmd_callgrind(a):
    n = a.routes[0] if a.routes else 200
    with tempfile.TemporaryDirectory(prefix="cb-prof-") as tmp, R.Env(Args) as env, \
            env.kube("p") as kube:
        out = os.path.join(tmp, "cg.out")
        w = wrapper(tmp, ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out])
        watcher = R.Watcher(kube)
        kv = R.EtcdKV(env.etcd)
        kv.put_many(R.route_keys("p/", "p", 1))
        watcher.expect({"p": 1})
        env_bin, env.binary = env.binary, w
        try:
            b = env.bridge("p", kube, "etcd", "p/")
        finally:
            env.binary = env_bin
        with b:
            R.wait_ready(b, 120)
            watcher.wait(60)
            R.measure_changes(kv, "p/", "p", range(2, 7), watcher, timeout=60)
            subprocess.run(["callgrind_control", "-z", str(b.proc.pid)], capture_output=True)
            R.measure_changes(kv, "p/", "p", range(100, 100 + n), watcher, timeout=60)
            subprocess.run(["callgrind_control", "-d", str(b.proc.pid)], capture_output=True)
        watcher.stop()
        kv.close()
        dumps = sorted(f for f in os.listdir(tmp) if f.startswith("cg.out."))
        if not dumps:
            sys.exit("callgrind wrote no dump")
        txt = subprocess.run(["callgrind_annotate", "--inclusive=yes",
                              os.path.join(tmp, dumps[0])], capture_output=True,
                             text=True).stdout
        total = None
        for line in txt.splitlines():
            if "PROGRAM TOTALS" in line:
                total = int(line.split()[0].replace(",", ""))
        print("%d changes: %s instructions in all, %.0f per change" % (
            n, "{:,}".format(total or 0), (total or 0) / float(n)))
        lines = [ln for ln in txt.splitlines() if "%)" in ln and " [" in ln
                 and "(below main)" not in ln and "libc-start" not in ln]
        print("\n".join(ln[:150] for ln in lines[:a.lines]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["sync-perf", "sync-cpu", "rss", "massif", "callgrind"])
    ap.add_argument("routes", type=int, nargs="*", help="routes (callgrind: changes)")
    ap.add_argument("--callers", action="store_true", help="sync-perf: DWARF call chains")
    ap.add_argument("--lines", type=int, default=40, help="lines of report to print")
    ap.add_argument("--threshold", type=float, default=1.0, help="massif: ms_print threshold")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # unwind: stop what was started
    if not a.routes:
        a.routes = [200] if a.what == "callgrind" else [2000]
    tool = {"sync-perf": "perf", "massif": "valgrind", "callgrind": "valgrind"}.get(a.what)
    if tool and not shutil.which(tool):
        sys.exit("%s is not installed" % tool)
    {"sync-perf": cmd_sync_perf, "sync-cpu": cmd_sync_cpu, "rss": cmd_rss,
     "massif": cmd_massif, "callgrind": cmd_callgrind}[a.what](a)


if __name__ == "__main__":
    main()
