#!/usr/bin/python3
"""bench/run.py - canary-bridge benchmarks.  See bench/README.md.

    /usr/bin/python3 bench/run.py                    # full run (about 10 minutes on 2 cores)
    /usr/bin/python3 bench/run.py --quick            # small counts, under 2 minutes
    /usr/bin/python3 bench/run.py --only propagation,baseline --changes 1000

Starts real etcd, the Consul KV test server and the Kubernetes API test server (fresh for
each section) on free loopback ports in a temporary directory, runs build/canary-bridge
against them, and prints one table per section and a summary against the issue's targets.
Every process it starts is stopped when it ends (the harness context managers).

Times: every latency is the difference of two time.time() readings on this host: one taken
by this script (the source write sent / acknowledged), one by the API test server (the
request log's `t`, taken when it has read the request line and headers of the write).

Standard library + PyYAML only (the harness needs PyYAML).  Figures never fail anything.
"""

import argparse
import base64
import datetime
import hashlib
import http.client
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))
from cbtest import Bridge, Etcd, KubeAPI, bridge_config, free_port, wait_until  # noqa: E402
from consul import Consul  # noqa: E402
sys.path.insert(0, HERE)
import traefik_real  # noqa: E402

GROUP = "traefik.io"
IR_PATH = "/apis/traefik.io/v1alpha1"
NS = "default"
BASELINE_SH = os.path.join(HERE, "baseline.sh")
CLK_TCK = os.sysconf("SC_CLK_TCK")
SECTIONS = ("propagation", "baseline", "burst", "scale", "storm", "traefik", "writeload")

# The route document every benchmark route uses: two services, the canary is v2.  Weights
# are written as "v1=1, v2=W" with W unique per change, so each API write is matched to
# the change it carries by the value of v2's weight in its body.
ROUTE_DOC = """match: Host(`%s.bench.example`)
services:
  - {name: v1, port: 80}
  - {name: v2, port: 80}
"""


def weights_value(w):
    return "v1=1, v2=%d" % w


# --------------------------------------------------------------------------------------------
# small helpers

def log(msg):
    sys.stderr.write("[%s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def pct(values, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(math.ceil(p / 100.0 * len(s))) - 1))
    return s[k]


def stats(values):
    if not values:
        return None
    return {"n": len(values), "p50": pct(values, 50), "p90": pct(values, 90),
            "p99": pct(values, 99), "max": max(values), "min": min(values),
            "mean": sum(values) / len(values)}


def ms(x, digits=2):
    if x is None:
        return "-"
    return ("%." + str(digits) + "f") % (x * 1000.0)


def table(headers, rows, indent="  "):
    cols = [str(h) for h in headers]
    body = [[("-" if c is None else str(c)) for c in r] for r in rows]
    widths = [max(len(cols[i]), *(len(r[i]) for r in body)) if body else len(cols[i])
              for i in range(len(cols))]
    out = [indent + "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i])
                              for i, c in enumerate(cols)),
           indent + "  ".join("-" * w for w in widths)]
    for r in body:
        out.append(indent + "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i])
                                      for i, c in enumerate(r)))
    return "\n".join(out)


def proc_cpu_ticks(pid):
    """utime + stime of a process, in clock ticks."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def proc_status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def kib(status_value):
    return int(status_value.split()[0]) if status_value else 0


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def body_weight(body, svc="v2"):
    """v2's weight in an IngressRoute (or merge patch) body, else None."""
    try:
        routes = body["spec"]["routes"]
    except (KeyError, TypeError):
        return None
    for r in routes if isinstance(routes, list) else ():
        for s in (r.get("services") or []) if isinstance(r, dict) else ():
            if isinstance(s, dict) and s.get("name") == svc:
                return s.get("weight")
    return None


def entry_name(e):
    """The IngressRoute a request log entry writes: from the path, or a POST's body."""
    p = e["path"]
    i = p.find("/ingressroutes")
    if i < 0:
        return None
    rest = p[i + len("/ingressroutes"):]
    if rest.startswith("/"):
        return rest[1:].split("/")[0]
    try:
        return e["body"]["metadata"]["name"]
    except (KeyError, TypeError):
        return None


def is_ir_write(e):
    return e["method"] in ("PUT", "POST", "PATCH") and "/ingressroutes" in e["path"]


def is_bridge(e):
    return (e.get("user_agent") or "").startswith("canary-bridge")


# --------------------------------------------------------------------------------------------
# clients: one persistent keep-alive connection each (one per thread)

class HTTP:
    def __init__(self, port, ctx=None, timeout=30, headers=None):
        self.port, self.ctx, self.timeout = port, ctx, timeout
        self.headers = headers or {}
        self.conn = None

    def _connect(self):
        if self.ctx:
            c = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=self.timeout,
                                            context=self.ctx)
        else:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        c.connect()
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return c

    def request(self, method, path, body=None, headers=None):
        """-> (status, raw body).  Reconnects once if the kept-alive connection went away."""
        h = dict(self.headers)
        h.update(headers or {})
        for attempt in (0, 1):
            try:
                if self.conn is None:
                    self.conn = self._connect()
                self.conn.request(method, path, body=body, headers=h)
                r = self.conn.getresponse()
                return r.status, r.read()
            except (http.client.HTTPException, OSError):
                self.close()
                if attempt:
                    raise

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class EtcdKV:
    """Puts through etcd's v3 JSON gateway on one kept-alive connection."""
    name = "etcd"

    def __init__(self, etcd):
        self.etcd = etcd
        self.http = HTTP(etcd.client_port)

    def put(self, key, value):
        """-> (t_send, t_ack, revision)."""
        body = json.dumps({"key": b64(key), "value": b64(value)})
        t_send = time.time()
        status, data = self.http.request("POST", "/v3/kv/put", body,
                                         {"Content-Type": "application/json"})
        t_ack = time.time()
        if status != 200:
            raise RuntimeError("etcd put %s -> %d %r" % (key, status, data[:200]))
        return t_send, t_ack, int(json.loads(data)["header"]["revision"])

    def put_many(self, kvs, batch=120):
        """Load many keys fast: one txn per `batch` puts (etcd's max-txn-ops is 128)."""
        for i in range(0, len(kvs), batch):
            ops = [{"requestPut": {"key": b64(k), "value": b64(v)}} for k, v in kvs[i:i + batch]]
            status, data = self.http.request("POST", "/v3/kv/txn", json.dumps({"success": ops}),
                                             {"Content-Type": "application/json"})
            if status != 200:
                raise RuntimeError("etcd txn -> %d %r" % (status, data[:200]))

    def close(self):
        self.http.close()


class ConsulKV:
    """Puts the way the Consul UI / CLI do them (raw body), on one kept-alive connection."""
    name = "consul"

    def __init__(self, consul):
        self.http = HTTP(consul.port)

    def put(self, key, value):
        t_send = time.time()
        status, data = self.http.request("PUT", "/v1/kv/" + key, value.encode(),
                                         {"Content-Type": "text/plain; charset=utf-8"})
        t_ack = time.time()
        if status != 200 or data.strip() != b"true":
            raise RuntimeError("consul put %s -> %d %r" % (key, status, data[:200]))
        return t_send, t_ack, None

    def put_many(self, kvs):
        for k, v in kvs:
            self.put(k, v)

    def close(self):
        self.http.close()


class Kube:
    """The API test server's API and control endpoints on one kept-alive connection."""

    def __init__(self, kube):
        self.kube = kube
        self.http = HTTP(kube.port, kube.ssl_context, timeout=120,
                         headers={"Authorization": "Bearer " + kube.token,
                                  "Accept": "application/json"})

    def requests(self, since=0):
        status, data = self.http.request("GET", "/_test/requests?since=%d" % since)
        if status != 200:
            raise RuntimeError("request log -> %d" % status)
        return json.loads(data)

    def last_seq(self):
        entries = self.requests()
        return entries[-1]["seq"] if entries else 0

    def create_ir(self, name, weights=(1, 1)):
        obj = {"apiVersion": GROUP + "/v1alpha1", "kind": "IngressRoute",
               "metadata": {"name": name, "namespace": NS},
               "spec": {"routes": [{"match": "Host(`%s.bench.example`)" % name, "kind": "Rule",
                                    "services": [{"name": "v1", "port": 80, "weight": weights[0]},
                                                 {"name": "v2", "port": 80,
                                                  "weight": weights[1]}]}]}}
        status, data = self.http.request("POST", "%s/namespaces/%s/ingressroutes" % (IR_PATH, NS),
                                         json.dumps(obj), {"Content-Type": "application/json"})
        if status != 201:
            raise RuntimeError("create %s -> %d %r" % (name, status, data[:300]))

    def bump(self, name, n):
        """The conflict storm's write: a merge patch of an annotation nobody else owns."""
        patch = {"metadata": {"annotations": {"bench.canary-bridge.io/bump": str(n)}}}
        status, _ = self.http.request(
            "PATCH", "%s/namespaces/%s/ingressroutes/%s" % (IR_PATH, NS, name),
            json.dumps(patch), {"Content-Type": "application/merge-patch+json"})
        return status

    def close(self):
        self.http.close()


class Watcher(threading.Thread):
    """A watch on every IngressRoute: keeps v2's live weight per name and tells when a set of
    expected weights is all there.  It only paces the benchmark (waits for a change to land
    before the next); no figure is taken from it."""

    def __init__(self, kube):
        super().__init__(daemon=True)
        self.kube = kube
        self.cond = threading.Condition()
        self.weights = {}
        self.events = 0
        self.target, self.missing = {}, set()
        self.error = None
        self.stopping = False
        self.conn = None
        self.start()
        wait_until(lambda: self.conn is not None or self.error, 30, "watch to start")

    def run(self):
        try:
            conn = http.client.HTTPSConnection("127.0.0.1", self.kube.port, timeout=None,
                                               context=self.kube.ssl_context)
            # With bookmarks: the API test server's watch loop spins a core once
            # --bookmark-interval (60 s) has passed on a watch that does not allow them.
            conn.request("GET", IR_PATH + "/ingressroutes?watch=1&allowWatchBookmarks=true",
                         headers={"Authorization": "Bearer " + self.kube.token})
            r = conn.getresponse()
            if r.status != 200:
                raise RuntimeError("watch -> %d" % r.status)
            self.conn = conn
            while True:
                line = r.readline()
                if not line:
                    break
                ev = json.loads(line)
                obj = ev.get("object") or {}
                name = (obj.get("metadata") or {}).get("name")
                if not name:
                    continue
                w = None if ev.get("type") == "DELETED" else body_weight(obj)
                with self.cond:
                    self.events += 1
                    self.weights[name] = w
                    if name in self.target:
                        if self.target[name] == w:
                            self.missing.discard(name)
                        else:
                            self.missing.add(name)
                    self.cond.notify_all()
        except Exception as e:      # noqa: BLE001 - reported by wait()
            if not self.stopping:
                self.error = e
        finally:
            with self.cond:
                self.cond.notify_all()

    def expect(self, target):
        """Set the weights to wait for ({name: v2 weight}); returns immediately."""
        with self.cond:
            self.target = dict(target)
            self.missing = {n for n, w in target.items() if self.weights.get(n) != w}

    def wait(self, timeout, what="weights"):
        """Wait until every expected weight is live; raise on timeout."""
        with self.cond:
            ok = self.cond.wait_for(lambda: not self.missing or self.error, timeout)
            if self.error:
                raise RuntimeError("watch failed: %r" % self.error)
            if not ok:
                some = sorted(self.missing)[:5]
                raise AssertionError("timed out after %gs waiting for %s: %d routes not there "
                                     "yet, e.g. %s" % (timeout, what, len(self.missing),
                                                       ", ".join("%s (have %s, want %s)" % (
                                                           n, self.weights.get(n),
                                                           self.target.get(n)) for n in some)))

    def stop(self):
        self.stopping = True
        try:
            if self.conn is not None and self.conn.sock is not None:
                self.conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.join(5)


# --------------------------------------------------------------------------------------------
# environment

class Env:
    """etcd and Consul for the whole run; a fresh API test server per section (so each
    section's request log and object store hold only its own traffic)."""

    def __init__(self, args):
        self.args = args
        if args.keep:
            self.dir = tempfile.mkdtemp(prefix="cb-bench-")
        else:
            self._td = tempfile.TemporaryDirectory(prefix="cb-bench-")
            self.dir = self._td.name
        self.etcd = self.consul = None

    def __enter__(self):
        # A private copy of the binary: a rebuild during the run cannot mix two versions.
        self.binary = os.path.join(self.dir, "canary-bridge")
        shutil.copy2(self.args.bridge, self.binary)
        self.etcd = Etcd(self.dir, extra_args=["--quota-backend-bytes", str(4 << 30)])
        self.consul = Consul(self.dir)
        return self

    def __exit__(self, exc_type, *_):
        for p in (self.consul, self.etcd):
            if p is None:
                continue
            if exc_type is None:
                p.stop()
            else:
                p.kill()
        if self.args.keep:
            log("kept %s" % self.dir)
        else:
            self._td.cleanup()

    def kube(self, name):
        # The bridge gives weight only to Services that can serve: v1 and v2 of every route.
        kube = KubeAPI(self.dir, name="kube-" + name, auto_services=False)
        kube.add_services(NS, "v1", "v2", ports=80)
        return kube

    def bridge(self, name, kube, source="etcd", prefix="bench/", **sections):
        kw = dict(etcd=self.etcd) if source == "etcd" else dict(consul_address=self.consul.url)
        cfg = bridge_config(kube=kube, prefix=prefix, log={"level": "info"}, **kw, **sections)
        return Bridge(self.dir, cfg, binary=self.binary, name="bridge-" + name)


def route_keys(prefix, name, w=1):
    base = "%s%s/%s/" % (prefix, NS, name)
    return [(base + "route", ROUTE_DOC % name), (base + "weights", weights_value(w))]


def wait_ready(bridge, timeout=120):
    bridge.wait_log(r"ready: ", timeout=timeout)


def first_writes(entries, ok_only=True):
    """{(name, weight): first request log entry writing that v2 weight to that route}."""
    out = {}
    for e in entries:
        if not is_ir_write(e) or (ok_only and e["status"] not in (200, 201)):
            continue
        key = (entry_name(e), body_weight(e["body"]))
        if key not in out:
            out[key] = e
    return out


# --------------------------------------------------------------------------------------------
# 1. propagation

# Write pacing (reconcile.object_writes_per_second, 10 by default): a route written less
# than 1/10 s ago waits for its next write slot.  That is a key rewritten in a loop, not a
# person's edit, so the back-to-back rows take their routes in turn (Rotation) and never edit
# a route again within PACE_SLOT_S + PACE_MARGIN_S (bench/README.md, section 1).
PACE_SLOT_S = 0.1       # 1 / the bridge's default object_writes_per_second
PACE_MARGIN_S = 0.05


class Rotation:
    """The routes a propagation row edits, one change each in turn.  A route whose turn
    comes round less than `min_gap` s after its last edit waits for the rest (counted in
    held / held_s); route_of maps each weight put to the route it went to, revisit lists the
    time since the route's previous edit."""

    def __init__(self, names, min_gap):
        self.names, self.min_gap = list(names), min_gap
        self.i, self.last = 0, {}
        self.route_of = {}
        self.reset()

    def reset(self):
        self.held, self.held_s, self.revisit = 0, 0.0, []

    def next(self, w):
        name = self.names[self.i % len(self.names)]
        self.i += 1
        last = self.last.get(name)
        if last is not None:
            wait = last + self.min_gap - time.monotonic()
            if wait > 0:
                self.held += 1
                self.held_s += wait
                time.sleep(wait)
            self.revisit.append(time.monotonic() - last)
        self.route_of[w] = name
        return name

    def edited(self, name):
        self.last[name] = time.monotonic()


def measure_changes(kv, prefix, route, weights, watcher, gap=0.0, timeout=30):
    """Put each weight in turn, waiting until it is live before the next.  `route`: the
    route every change edits, or a Rotation that picks each change's route.
    -> [(weight, t_send, t_ack)]"""
    out = []
    for w in weights:
        name = route.next(w) if isinstance(route, Rotation) else route
        watcher.expect({name: w})
        t_send, t_ack, _ = kv.put("%s%s/%s/weights" % (prefix, NS, name), weights_value(w))
        if isinstance(route, Rotation):
            route.edited(name)
        watcher.wait(timeout, "%s weight %d" % (name, w))
        out.append((w, t_send, t_ack))
        if gap:
            time.sleep(gap)
    return out


def latencies(changes, entries, name, ok_only=False):
    """Match each change with the write that carried it -> (from_ack, from_send, entries).
    `name`: the route of every change, or {weight: route}."""
    route_of = name if isinstance(name, dict) else None
    names = set(route_of.values()) if route_of else {name}
    writes = first_writes([e for e in entries if entry_name(e) in names], ok_only=ok_only)
    from_ack, from_send, matched, unmatched = [], [], [], 0
    for w, t_send, t_ack in changes:
        e = writes.get((route_of[w] if route_of else name, w))
        if e is None:
            unmatched += 1
            continue
        from_ack.append(e["t"] - t_ack)
        from_send.append(e["t"] - t_send)
        matched.append(e)
    return from_ack, from_send, matched, unmatched


def request_mix(entries, t0, t1):
    """What the bridge sent between t0 and t1: counts by method and resource (watches
    apart), and the connections its IngressRoute writes used."""
    mix, conns = {}, set()
    for e in entries:
        if not is_bridge(e) or not (t0 <= e["t"] <= t1):
            continue
        m = re.search(r"/(?:namespaces/[^/]+/)?([a-z]+)(?:/[^/]+)?$", e["path"])
        m = "%s %s%s" % (e["method"], m.group(1) if m else e["path"],
                         " (watch)" if e["query"].get("watch") in ("1", "true") else "")
        mix[m] = mix.get(m, 0) + 1
        if is_ir_write(e):
            conns.add(e["conn"])
    return mix, conns


def bench_propagation(env, args, res):
    """Rows: etcd and Consul back-to-back, each change on the next of --prop-routes routes;
    Consul with changes spaced by --consul-gap, on one route.  A bridge per row."""
    out = res.setdefault("propagation", {})
    plan = (("etcd", "etcd", args.changes, 0.0, args.prop_routes),
            ("consul_b2b", "consul", args.consul_b2b_changes, 0.0, args.prop_routes),
            ("consul", "consul", args.consul_changes, args.consul_gap, 1))
    with env.kube("prop") as kube:
        k = Kube(kube)
        watcher = Watcher(kube)
        try:
            for row, source, count, gap, n in plan:
                if count > 0 or (row == "etcd" and args.anatomy):
                    propagation_row(env, args, k, kube, watcher, out, row, source, count, gap,
                                    max(1, n))
        finally:
            watcher.stop()
            k.close()


def propagation_row(env, args, k, kube, watcher, out, row, source, count, gap, n):
    kv = EtcdKV(env.etcd) if source == "etcd" else ConsulKV(env.consul)
    tag = "prop-" + row.replace("_", "-")
    prefix, names = tag + "/", [tag] if n == 1 else ["%s-%d" % (tag, i) for i in range(n)]
    routes = Rotation(names, PACE_SLOT_S + PACE_MARGIN_S)
    # Back-to-back, the warm-up edits every route once: the burst detector counts a route
    # only when it has not changed for a second, so the measured changes are not a burst of
    # new routes (see bench/README.md, section 1).
    warm = max(args.warmup, n) if not gap else args.warmup
    base = 1000 + warm
    try:
        kv.put_many([kvp for nm in names for kvp in route_keys(prefix, nm, 1)])
        watcher.expect({nm: 1 for nm in names})
        port = free_port()
        with env.bridge(tag, kube, source, prefix, metrics_port=port) as b:
            wait_ready(b)
            watcher.wait(60, "first write of %d route(s) of %s" % (n, tag))
            time.sleep(0.5)
            log("propagation %s: %d warm-up changes" % (row, warm))
            measure_changes(kv, prefix, routes, range(2, 2 + warm), watcher, gap)
            if count > 0:
                log("propagation %s: %d changes over %d route(s)%s" % (
                    row, count, n, ", %.2f s apart" % gap if gap else ", back-to-back"))
                routes.reset()
                seq0, log0, delayed0 = k.last_seq(), b.log_size(), writes_delayed(port)
                if source == "consul":
                    cl = env.consul.requests()
                    cseq0 = cl[-1]["seq"] if cl else 0
                cpu0 = proc_cpu_ticks(b.proc.pid)
                changes = measure_changes(kv, prefix, routes, range(base, base + count),
                                          watcher, gap)
                cpu1 = proc_cpu_ticks(b.proc.pid)
                time.sleep(0.2)     # the last write's answer completes its log entry
                entries = k.requests(since=seq0)
                delayed1 = writes_delayed(port)
                d = out[row] = summarize_changes(changes, entries, routes.route_of, gap)
                if source == "consul":
                    d["consul_delivery"] = consul_delivery(env.consul, cseq0, changes)
                d["bridge_cpu_ms_per_change"] = (cpu1 - cpu0) * 1000.0 / CLK_TCK / count
                d.update({"routes": n, "held": routes.held, "held_s": routes.held_s,
                          "revisit": stats(routes.revisit),
                          "paced": None if delayed0 is None or delayed1 is None
                          else delayed1 - delayed0,
                          "burst_holds": b.log_text()[log0:].count("burst: more than")})
            if args.anatomy and source == "etcd":
                out["anatomy"] = anatomy(b, kv, k, prefix, routes, watcher, args.anatomy,
                                         base + count)
    finally:
        kv.close()


def writes_delayed(port):
    """The bridge's canary_bridge_writes_delayed_total: passes whose writes waited for
    write pacing; None if it cannot be read."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
            text = r.read().decode()
    except OSError:
        return None
    m = re.search(r"(?m)^canary_bridge_writes_delayed_total (\d+)", text)
    return int(m.group(1)) if m else None


def consul_delivery(consul, seq0, changes):
    """From the Consul test server's request log: each change's PUT arrival -> the moment
    the bridge's blocking query was answered with it (t_done), and whether that query was
    already waiting when the PUT came (else the bridge had not asked again yet)."""
    # From a little before seq0: the blocking query that answers the first change was
    # sent before it.
    log_ = consul.requests(since=max(0, seq0 - 20))
    puts = {}
    for e in log_:
        if e["method"] == "PUT" and e.get("body"):
            m = re.search(r"v2=(\d+)", e["body"])
            if m:
                puts.setdefault(int(m.group(1)), e)
    # Only the bridge sends blocking queries (?index=); it sends no User-Agent to Consul.
    gets = sorted((e for e in log_ if e["method"] == "GET" and "index=" in (e["query"] or "")
                   and e["status"] == 200 and e["t_done"]), key=lambda e: e["t_done"])
    put_time = [e["t_done"] - e["t"] for e in puts.values() if e["t_done"]]
    delivery, waiting, late = [], 0, []
    for w, _, _ in changes:
        put = puts.get(w)
        if put is None:
            continue
        g = next((g for g in gets if g["t_done"] >= put["t"]), None)
        if g is None:
            continue
        delivery.append(g["t_done"] - put["t"])
        if g["t"] <= put["t"]:
            waiting += 1
        else:
            late.append(g["t"] - put["t"])
    return {"delivery": stats(delivery), "query_waiting": waiting, "n": len(delivery),
            "query_late_by": stats(late), "put_time": stats(put_time)}


def summarize_changes(changes, entries, name, gap=0.0):
    from_ack, from_send, matched, unmatched = latencies(changes, entries, name)
    mix, conns = request_mix(entries, changes[0][1],
                             (matched[-1]["t_done"] or matched[-1]["t"]) if matched
                             else time.time())
    return {"changes": len(changes), "gap_s": gap, "unmatched": unmatched,
            "from_ack": stats(from_ack), "from_send": stats(from_send),
            "negative_from_ack": sum(1 for x in from_ack if x < 0),
            "server_time": stats([e["t_done"] - e["t"] for e in matched if e["t_done"]]),
            "bridge_requests": mix, "write_connections": len(conns),
            "source_ack": stats([c[2] - c[1] for c in changes])}


# x86_64 system call numbers the anatomy needs
NR_SENDTO, NR_RECVFROM, NR_WRITE, NR_READ = 44, 45, 1, 0


def anatomy(bridge, kv, k, prefix, routes, watcher, count, base):
    """Where one change's time goes: the bridge's system calls, recorded with perf on
    CLOCK_MONOTONIC and put on the wall clock, between the client's put and the API
    server's arrival time.  The changes take `routes` (a Rotation) in turn."""
    perf = shutil.which("perf")
    if not perf:
        return {"error": "perf not installed"}
    data = os.path.join(os.path.dirname(bridge.log_path), "anatomy.perf")
    p = subprocess.Popen([perf, "record", "-k", "mono", "-e",
                          "raw_syscalls:sys_enter,raw_syscalls:sys_exit",
                          "-p", str(bridge.proc.pid), "-o", data],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)
    if p.poll() is not None:
        return {"error": "perf record failed: " + p.stderr.read().decode()[-300:].strip()}
    offs = []
    for _ in range(5):
        a = time.time()
        m = time.monotonic()
        b = time.time()
        offs.append((a + b) / 2 - m)
    offset = sorted(offs)[2]
    log("propagation etcd: %d changes under perf (anatomy)" % count)
    seq0 = k.last_seq()
    changes = measure_changes(kv, prefix, routes, range(base, base + count), watcher, gap=0.02)
    time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    entries = k.requests(since=seq0)
    try:
        txt = subprocess.run([perf, "script", "-i", data, "-F", "tid,time,event,trace"],
                             capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return {"error": "perf script: %s" % e}
    # (wall time, tid, kind, nr, fd or ret)
    pat = re.compile(r"^\s*(\d+)\s+([\d.]+):\s+raw_syscalls:sys_(enter|exit):\s+NR (\d+) "
                     r"(?:\(([0-9a-f]+),[^,]*, ([0-9a-f]+)|= (-?\d+))")
    ev, pending = [], {}
    for line in txt.splitlines():
        m = pat.match(line)
        if not m:
            continue
        tid, t, kind, nr = int(m.group(1)), float(m.group(2)) + offset, m.group(3), int(m.group(4))
        if nr not in (NR_SENDTO, NR_RECVFROM, NR_WRITE, NR_READ):
            continue
        if kind == "enter":
            pending[tid] = (t, nr, int(m.group(5), 16), int(m.group(6), 16))
        elif tid in pending and pending[tid][1] == nr:
            t0, _, fd, length = pending.pop(tid)
            ev.append((t0, t, nr, fd, length, int(m.group(7))))
    ev.sort()
    _, _, matched, _ = latencies(changes, entries, routes.route_of)
    by_w = {body_weight(e["body"]): e for e in matched}
    # The source's watch socket: the one most often read first after a put was sent.
    firsts = {}
    for w, t_send, t_ack in changes:
        rd = next((x for x in ev if x[0] >= t_send and x[2] == NR_RECVFROM and x[5] > 0), None)
        if rd:
            firsts[rd[3]] = firsts.get(rd[3], 0) + 1
    src_fd = max(firsts, key=firsts.get) if firsts else -1
    rows = []
    for w, t_send, t_ack in changes:
        e = by_w.get(w)
        if e is None:
            continue
        # the watch event: the first successful receive on that socket after the put
        rd = next((x for x in ev if x[0] >= t_send and x[2] == NR_RECVFROM and x[3] == src_fd
                   and x[5] > 0), None)
        if rd is None:
            continue
        # the write: the first large send after it on another socket
        wr = next((x for x in ev if x[0] >= rd[1] and x[2] == NR_SENDTO and x[3] != rd[3]
                   and x[5] > 200), None)
        if wr is None or wr[0] > e["t"] + 0.001:
            continue
        rows.append({"etcd": rd[1] - t_send, "ack_after_event": t_ack - rd[1],
                     "bridge": wr[1] - rd[1], "to_server": e["t"] - wr[1],
                     "server": (e["t_done"] or e["t"]) - e["t"], "total_send": e["t"] - t_send,
                     "total_ack": e["t"] - t_ack})
    out = {"changes": count, "matched": len(rows)}
    for key in ("etcd", "ack_after_event", "bridge", "to_server", "server", "total_send",
                "total_ack"):
        out[key] = stats([r[key] for r in rows])
    return out


# --------------------------------------------------------------------------------------------
# 2. baseline: etcdctl watch | while read ...; kubectl patch ...; done

def bench_baseline(env, args, res):
    n, warm = args.baseline_changes, 2
    prefix, name = "base/", "base"
    out = res.setdefault("baseline", {})
    home = os.path.join(env.dir, "baseline-home")
    os.makedirs(home, exist_ok=True)
    with env.kube("baseline") as kube:
        k = Kube(kube)
        k.create_ir(name)
        watcher = Watcher(kube)
        kv = EtcdKV(env.etcd)
        kv.put_many(route_keys(prefix, name, 1)[1:])      # just the weights key
        envv = dict(os.environ, KUBECONFIG=kube.kubeconfig, HOME=home, ETCDCTL_API="3",
                    ETCD_ENDPOINTS=env.etcd.url, PREFIX=prefix)
        logf = open(os.path.join(env.dir, "baseline.log"), "wb")
        loop = subprocess.Popen(["bash", BASELINE_SH], env=envv, stdout=logf,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            time.sleep(1.0)     # etcdctl watch connects
            seq0 = k.last_seq()
            log("baseline: %d warm-up + %d changes through etcdctl watch | kubectl patch"
                % (warm, n))
            measure_changes(kv, prefix, name, range(2, 2 + warm), watcher, timeout=60)
            changes = measure_changes(kv, prefix, name, range(1000, 1000 + n), watcher,
                                      timeout=60)
            time.sleep(0.5)
            entries = k.requests(since=seq0)
        finally:
            try:
                os.killpg(loop.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                loop.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(loop.pid, signal.SIGKILL)
                loop.wait()
            logf.close()
            watcher.stop()
            kv.close()
            k.close()
    from_ack, from_send, matched, unmatched = latencies(changes, entries, name)
    per_change = {}
    for e in entries:
        if changes[0][1] <= e["t"]:
            m = e["method"] + " " + re.sub(r"/namespaces/.*", "/...", e["path"])
            per_change[m] = per_change.get(m, 0) + 1
    out.update({"changes": n, "unmatched": unmatched, "from_ack": stats(from_ack),
                "from_send": stats(from_send),
                "requests_per_change": {m: c / float(n) for m, c in per_change.items()}})


# --------------------------------------------------------------------------------------------
# 3. burst

def parallel_batches(etcd, n_puts, clients, batch, send, what):
    """Puts 0..n_puts-1, `batch` at a time, from `clients` threads, each on its own
    kept-alive connection: send(kv, js) sends the puts numbered js and returns their
    [(name, weight, revision, t_send, t_ack)].  -> all of them, in no particular order."""
    lock = threading.Lock()
    nxt = [0]
    results, errors = [], []

    def worker():
        kv = EtcdKV(etcd)
        mine = []
        try:
            while True:
                with lock:
                    j0 = nxt[0]
                    nxt[0] += batch
                if j0 >= n_puts:
                    break
                mine.extend(send(kv, range(j0, min(n_puts, j0 + batch))))
        except Exception as e:      # noqa: BLE001
            errors.append(e)
        finally:
            kv.close()
            with lock:
                results.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    if errors:
        raise RuntimeError("burst %s failed: %r" % (what, errors[0]))
    return results


def burst_puts(etcd, prefix, names, n_puts, clients, base=10):
    """n_puts weight puts round-robin over names, one per gateway request.
    -> [(name, weight, revision, t_send, t_ack)]"""
    def send(kv, js):
        out = []
        for j in js:
            name, w = names[j % len(names)], base + j
            t_send, t_ack, rev = kv.put("%s%s/%s/weights" % (prefix, NS, name),
                                        weights_value(w))
            out.append((name, w, rev, t_send, t_ack))
        return out
    return parallel_batches(etcd, n_puts, clients, 1, send, "put")


def burst_txn(etcd, prefix, names, n_puts, clients, batch, base=10):
    """The same puts, `batch` at a time in one etcd transaction each (consecutive puts go to
    distinct routes, so a batch never names a key twice)."""
    def send(kv, js):
        ops = [{"requestPut": {"key": b64("%s%s/%s/weights" % (
            prefix, NS, names[j % len(names)])), "value": b64(weights_value(base + j))}}
            for j in js]
        t_send = time.time()
        status, data = kv.http.request("POST", "/v3/kv/txn", json.dumps(
            {"success": ops}), {"Content-Type": "application/json"})
        t_ack = time.time()
        if status != 200:
            raise RuntimeError("etcd txn -> %d %r" % (status, data[:200]))
        rev = int(json.loads(data)["header"]["revision"])
        return [(names[j % len(names)], base + j, rev, t_send, t_ack) for j in js]
    return parallel_batches(etcd, n_puts, clients, batch, send, "txn")


def quiet(bridge, seconds=1.0, timeout=60):
    """Wait until the bridge's log has not grown for `seconds` (bounded)."""
    deadline = time.monotonic() + timeout
    size, since = os.path.getsize(bridge.log_path), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        s = os.path.getsize(bridge.log_path)
        if s != size:
            size, since = s, time.monotonic()
        elif time.monotonic() - since >= seconds:
            return


# gateway-nohold: the gateway puts again with the bridge's burst holds off
# (reconcile.burst_hold: 0), to show what the holds save.
BURST_METHODS = ("gateway", "txn", "gateway-nohold")


def bench_burst(env, args, res):
    for method in args.burst_method.split(","):
        method = method.strip()
        if method not in BURST_METHODS:
            raise SystemExit("unknown burst method %r (%s)" % (method, ", ".join(BURST_METHODS)))
        res.setdefault("burst", {})[method] = burst_one(env, args, method)


def burst_one(env, args, method):
    n_routes, n_puts = args.burst_routes, args.burst_puts
    gateway = method.startswith("gateway")
    clients = args.burst_clients if gateway else args.burst_txn_clients
    sections = {"reconcile": {"burst_hold": "0s"}} if method.endswith("-nohold") else {}
    batch = min(args.burst_batch, n_routes)
    prefix = "burst-%s/" % method
    names = ["b%d" % i for i in range(n_routes)]
    with env.kube("burst-" + method) as kube:
        k = Kube(kube)
        watcher = Watcher(kube)
        kv = EtcdKV(env.etcd)
        try:
            kv.put_many([kvp for n in names for kvp in route_keys(prefix, n, 1)])
            watcher.expect({n: 1 for n in names})
            port = free_port()
            with env.bridge("burst-" + method, kube, "etcd", prefix, metrics_port=port,
                            **sections) as b:
                wait_ready(b)
                watcher.wait(300, "initial sync of %d routes" % n_routes)
                quiet(b, 1.0)
                seq0, delayed0 = k.last_seq(), writes_delayed(port)
                log("burst: %d puts over %d routes, %s" % (
                    n_puts, n_routes, "%d gateway connections" % clients if gateway
                    else "txns of %d puts from %d connections" % (batch, clients)))
                cpu0 = proc_cpu_ticks(b.proc.pid)
                srv0, etcd0 = proc_cpu_ticks(kube.proc.pid), proc_cpu_ticks(env.etcd.proc.pid)
                log0 = b.log_size()
                if gateway:
                    puts = burst_puts(env.etcd, prefix, names, n_puts, clients)
                else:
                    puts = burst_txn(env.etcd, prefix, names, n_puts, clients, batch)
                t_first = min(p[3] for p in puts)
                t_last = max(p[4] for p in puts)
                final = {}
                for name, w, rev, _, _ in puts:
                    if name not in final or rev > final[name][1]:
                        final[name] = (w, rev)
                watcher.expect({n: final[n][0] for n in final})
                watcher.wait(600, "burst to converge")
                t_seen = time.time()
                quiet(b, 2.0)
                holds = b.log_text()[log0:].count("burst: more than")
                delayed1 = writes_delayed(port)
                cpu1 = proc_cpu_ticks(b.proc.pid)
                srv1, etcd1 = proc_cpu_ticks(kube.proc.pid), proc_cpu_ticks(env.etcd.proc.pid)
                t_end = time.time()
                entries = k.requests(since=seq0)
        finally:
            watcher.stop()
            kv.close()
            k.close()
    writes = [e for e in entries if is_ir_write(e) and is_bridge(e)]
    ok = first_writes(writes)
    done = [ok[(n, final[n][0])] for n in final if (n, final[n][0]) in ok]
    st = {}
    for e in writes:
        st[e["status"]] = st.get(e["status"], 0) + 1
    return {
        "method": method, "routes": n_routes, "puts": n_puts, "clients": clients,
        "holds": holds,
        "paced": None if delayed0 is None or delayed1 is None else delayed1 - delayed0,
        "batch": batch if method == "txn" else 1,
        "revisions": len({p[2] for p in puts}),
        "put_seconds": t_last - t_first, "puts_per_s": n_puts / max(1e-9, t_last - t_first),
        "converge_recv_s": max(e["t"] for e in done) - t_last if done else None,
        "converge_done_s": max(e["t_done"] for e in done) - t_last if done else None,
        "converge_seen_s": t_seen - t_last,
        "final_writes_found": len(done),
        "api_writes": len(writes), "write_status": st,
        "writes_during_puts": sum(1 for e in writes if e["t"] <= t_last),
        "conflicts": st.get(409, 0),
        "bridge_gets": sum(1 for e in entries if is_bridge(e) and e["method"] == "GET"
                           and e["query"].get("watch") not in ("1", "true")),
        "bridge_cpu_s": (cpu1 - cpu0) / float(CLK_TCK),
        "server_cpu_s": (srv1 - srv0) / float(CLK_TCK),
        "etcd_cpu_s": (etcd1 - etcd0) / float(CLK_TCK),
        "wall_s": t_end - t_first,
        "server_time": stats([e["t_done"] - e["t"] for e in writes if e["t_done"]]),
    }


# --------------------------------------------------------------------------------------------
# 4. scale

def bench_scale(env, args, res):
    n, idle = args.scale_routes, args.idle
    prefix = "scale/"
    names = ["s%d" % i for i in range(n)]
    out = res.setdefault("scale", {})
    with env.kube("scale") as kube:
        k = Kube(kube)
        kv = EtcdKV(env.etcd)
        try:
            log("scale: loading %d routes (%d keys) into etcd" % (n, 2 * n))
            kv.put_many([kvp for nm in names for kvp in route_keys(prefix, nm, 1)])
            srv_cpu0 = proc_cpu_ticks(kube.proc.pid)
            t0 = time.time()
            with env.bridge("scale", kube, "etcd", prefix) as b:
                pid = b.proc.pid
                log("scale: bridge started, waiting for %d IngressRoutes" % n)
                wait_ready(b, timeout=300)
                t_ready = time.time()
                counter = CreatedCounter(k, since=0)
                wait_until(lambda: counter.count() >= n or not b.alive(),
                           timeout=args.scale_timeout, interval=0.5,
                           what="%d IngressRoutes created" % n)
                t_created = time.time()
                cpu_sync = proc_cpu_ticks(pid)
                srv_cpu1 = proc_cpu_ticks(kube.proc.pid)
                cpu_quiet(pid, 3.0, timeout=300)
                st = proc_status(pid)
                seq_idle = k.last_seq()
                log("scale: synced; measuring %g s idle" % idle)
                c0, v0 = proc_cpu_ticks(pid), int(proc_status(pid)["voluntary_ctxt_switches"])
                tt0 = time.time()
                time.sleep(idle)
                c1, v1 = proc_cpu_ticks(pid), int(proc_status(pid)["voluntary_ctxt_switches"])
                tt1 = time.time()
                st_end = proc_status(pid)
                idle_entries = k.requests(since=seq_idle)
                log("scale: 10 changes with %d routes in place" % n)
                prop = spaced_changes(kv, k, prefix, names[n // 2], range(5000, 5010))
            entries = k.requests()
            restart = resync_probe(env, args, kube, k, n) if args.resync_probe else None
        finally:
            kv.close()
            k.close()
    posts = [e for e in entries if e["method"] == "POST" and "/ingressroutes" in e["path"]
             and is_bridge(e)]
    created = [e for e in posts if e["status"] == 201]
    lists = [e for e in entries if is_bridge(e) and e["method"] == "GET"
             and e["query"].get("watch") not in ("1", "true") and "/ingressroutes" in e["path"]]
    t_last = max(e["t_done"] for e in created) if created else None
    first_write = min(e["t"] for e in posts) if posts else None
    busy = sum(e["t_done"] - e["t"] for e in created)
    wall = (t_last - first_write) if created else None
    out.update({
        "routes": n, "created": len(created), "posts": len(posts),
        "sync_s": (t_last - t0) if t_last else None,
        "ready_s": t_ready - t0,
        "first_write_s": (first_write - t0) if first_write else None,
        "write_phase_s": wall,
        "writes_per_s": len(created) / wall if wall else None,
        "server_busy_fraction": busy / wall if wall else None,
        "server_time": stats([e["t_done"] - e["t"] for e in created]),
        "server_cpu_s": (srv_cpu1 - srv_cpu0) / float(CLK_TCK),
        "bridge_cpu_sync_s": cpu_sync / float(CLK_TCK),
        "sync_wall_s": t_created - t0,
        "rss_kib": kib(st.get("VmRSS")), "hwm_kib": kib(st.get("VmHWM")),
        "rss_anon_kib": kib(st.get("RssAnon")), "rss_file_kib": kib(st.get("RssFile")),
        "rss_end_kib": kib(st_end.get("VmRSS")),
        "idle_s": tt1 - tt0,
        "idle_cpu_ticks": c1 - c0,
        "idle_cpu_pct": (c1 - c0) / float(CLK_TCK) / (tt1 - tt0) * 100.0,
        "idle_wakeups_per_s": (v1 - v0) / (tt1 - tt0),
        "idle_requests": sum(1 for e in idle_entries if is_bridge(e)),
        "initial_lists": len(lists),
        "propagation": prop,
        "restart": restart,
    })


class CreatedCounter:
    """Counts IngressRoute POSTs answered 201 in the request log, reading only new entries.
    (Not the bridge's "created" log lines: a POST the bridge gave up on may still have been
    carried out, and the bridge then logs the retry as "written".)"""

    def __init__(self, k, since=None):
        self.k, self.n = k, 0
        self.since = k.last_seq() if since is None else since

    def count(self):
        for e in self.k.requests(since=self.since):
            if e["t_done"] is None and e["query"].get("watch") not in ("1", "true"):
                break                       # still running: read it again next time
            self.since = e["seq"]
            if e["method"] == "POST" and e["status"] == 201 and "/ingressroutes" in e["path"]:
                self.n += 1
        return self.n


def spaced_changes(kv, k, prefix, name, weights, gap=0.3, timeout=120):
    """Weight changes `gap` seconds apart, without a watch (a watch on thousands of objects
    would load the API server): -> latency stats from the request log, and misses."""
    seq0 = k.last_seq()
    changes = []
    for w in weights:
        t_send, t_ack, _ = kv.put("%s%s/%s/weights" % (prefix, NS, name), weights_value(w))
        changes.append((w, t_send, t_ack))
        time.sleep(gap)
    deadline = time.monotonic() + timeout
    while True:
        from_ack, _, matched, missing = latencies(changes, k.requests(since=seq0), name)
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return {"from_ack": stats(from_ack), "missing": missing, "changes": len(changes)}


def cpu_quiet(pid, seconds=2.0, timeout=600):
    """Wait until a process has used no CPU for `seconds` (bounded); -> its CPU ticks."""
    deadline = time.monotonic() + timeout
    last, since = proc_cpu_ticks(pid), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        c = proc_cpu_ticks(pid)
        if c != last:
            last, since = c, time.monotonic()
        elif time.monotonic() - since >= seconds:
            break
    return last


def resync_probe(env, args, kube, k, n):
    """A second bridge on the same keys and the same (already written) objects, with
    reconcile.resync set to --resync-probe: the cost of a restart with nothing to write,
    and of one periodic resync pass, which the idle window above never contains."""
    period = args.resync_probe
    out = {"period_s": period}
    seq0 = k.last_seq()
    with env.bridge("scale-restart", kube, "etcd", "scale/",
                    reconcile={"resync": "%ds" % period}) as b:
        pid = b.proc.pid
        t0 = time.time()
        log("scale: restart with %d routes in place, resync every %d s" % (n, period))
        wait_ready(b, timeout=300)
        c_start = cpu_quiet(pid, 2.0)
        out["restart_cpu_s"] = c_start / float(CLK_TCK)
        out["restart_quiet_s"] = time.time() - t0 - 2.0

        def lists():
            return [e for e in k.requests(since=seq0) if is_bridge(e) and e["method"] == "GET"
                    and "/ingressroutes" in e["path"]
                    and e["query"].get("watch") not in ("1", "true")]
        # A weight change 0.3 s after the resync timer fires (it was armed at start-up):
        # how long does it wait?  (The resync's own LIST requests cannot mark its start:
        # they go out only once the loop is free again.)
        delay = t0 + period + 0.3 - time.time()
        if delay < 0:
            out["error"] = "the restart took longer than --resync-probe; raise it"
            return out
        time.sleep(delay)
        kv = EtcdKV(env.etcd)
        try:
            out["change_during_resync"] = spaced_changes(kv, k, "scale/", "s1", [9000],
                                                         gap=0.0, timeout=600)
        finally:
            kv.close()
        try:
            wait_until(lambda: len(lists()) >= 2, timeout=300, interval=0.5,
                       what="the first resync")
        except AssertionError as e:
            out["error"] = str(e)
            return out
        c_end = cpu_quiet(pid, 2.0)
        out["resync_cpu_s"] = (c_end - c_start) / float(CLK_TCK)
        out["writes"] = sum(1 for e in k.requests(since=seq0) if is_bridge(e) and is_ir_write(e))
        out["default_period_pct"] = out["resync_cpu_s"] / 300.0 * 100.0
    return out


# --------------------------------------------------------------------------------------------
# 5. conflict storm

def bench_storm(env, args, res):
    n, rounds, hz = args.storm_routes, args.storm_rounds, args.storm_hz
    prefix = "storm/"
    names = ["c%d" % i for i in range(n)]
    out = res.setdefault("storm", {})
    with env.kube("storm") as kube:
        k = Kube(kube)
        watcher = Watcher(kube)
        kv = EtcdKV(env.etcd)
        stop = threading.Event()
        bumps = {"sent": 0, "status": {}}

        def storm():
            kk = Kube(kube)
            i, t_next = 0, time.monotonic()
            try:
                while not stop.is_set():
                    s = kk.bump(names[i % n], i)
                    bumps["sent"] += 1
                    bumps["status"][s] = bumps["status"].get(s, 0) + 1
                    i += 1
                    t_next += 1.0 / hz
                    d = t_next - time.monotonic()
                    if d > 0:
                        stop.wait(d)
            finally:
                kk.close()

        th = threading.Thread(target=storm, daemon=True)
        try:
            kv.put_many([kvp for nm in names for kvp in route_keys(prefix, nm, 1)])
            watcher.expect({nm: 1 for nm in names})
            with env.bridge("storm", kube, "etcd", prefix) as b:
                wait_ready(b)
                watcher.wait(120, "initial sync")
                quiet(b, 1.0)
                seq0 = k.last_seq()
                log("storm: %d routes, a second writer at %g Hz, %d rounds of weight changes"
                    % (n, hz, rounds))
                t_storm = time.time()
                th.start()
                time.sleep(1.0)
                round_acks, round_put_s = [], []
                for r in range(rounds):
                    ws = {nm: 100000 + r * n + i for i, nm in enumerate(names)}
                    watcher.expect(ws)
                    last, first = 0.0, time.time()
                    for nm in names:
                        _, t_ack, _ = kv.put("%s%s/%s/weights" % (prefix, NS, nm),
                                             weights_value(ws[nm]))
                        last = t_ack
                    watcher.wait(120, "round %d to converge" % r)
                    round_acks.append((ws, last))
                    round_put_s.append(last - first)
                    time.sleep(args.storm_pause)
                stop.set()
                th.join(10)
                t_end = time.time()
                quiet(b, 1.0)
                entries = k.requests(since=seq0)
        finally:
            stop.set()
            watcher.stop()
            kv.close()
            k.close()
    bw = [e for e in entries if is_bridge(e) and is_ir_write(e)]
    ok = first_writes(bw)
    conv = []
    for ws, last in round_acks:
        done = [ok[(nm, w)]["t_done"] for nm, w in ws.items() if (nm, w) in ok]
        if len(done) == len(ws):
            conv.append(max(done) - last)
    storm_patches = [e for e in entries if e["method"] == "PATCH" and not is_bridge(e)]
    out.update({
        "routes": n, "rounds": rounds, "hz": hz,
        "bumps": bumps["sent"], "bump_status": bumps["status"],
        "bump_hz": len(storm_patches) / max(1e-9, t_end - t_storm),
        "converge": stats(conv), "converge_rounds_ms": [round(c * 1000, 1) for c in conv],
        "round_put_s": [round(x, 4) for x in round_put_s],
        "bridge_writes": len(bw),
        "conflicts": sum(1 for e in bw if e["status"] == 409),
        "rereads": sum(1 for e in entries if is_bridge(e) and e["method"] == "GET"
                       and e["query"].get("watch") not in ("1", "true")),
        "changes": rounds * n,
    })


# --------------------------------------------------------------------------------------------
# 7. write load: one key rewritten in a loop; routes failing through an API server outage

def bench_writeload(env, args, res):
    out = res.setdefault("writeload", {})
    rows = [("paced", {})]
    if args.writeload_unpaced:
        rows.append(("unpaced", {"reconcile": {"object_writes_per_second": 0}}))
    out["hotkey"] = {label: hotkey_one(env, args, label, sections) for label, sections in rows}
    out["outage"] = outage_one(env, args)


def hotkey_one(env, args, label, sections):
    """--hotkey-puts puts to one route's weights key, back to back on one connection."""
    n, name, prefix = args.hotkey_puts, "hot", "hot-%s/" % label
    key = "%s%s/%s/weights" % (prefix, NS, name)
    last_w = 1000 + n - 1
    with env.kube("hot-" + label) as kube:
        k = Kube(kube)
        watcher = Watcher(kube)
        kv = EtcdKV(env.etcd)
        try:
            kv.put_many(route_keys(prefix, name, 1))
            watcher.expect({name: 1})
            with env.bridge("hot-" + label, kube, "etcd", prefix, **sections) as b:
                wait_ready(b)
                watcher.wait(60, "initial sync")
                quiet(b, 1.0)
                seq0 = k.last_seq()
                log("writeload: %d puts to one key (%s)" % (n, label))
                cpu0 = proc_cpu_ticks(b.proc.pid)
                t_first = t_last = None
                for i in range(n):
                    t_send, t_ack, _ = kv.put(key, weights_value(1000 + i))
                    t_first = t_send if t_first is None else t_first
                    t_last = t_ack
                watcher.expect({name: last_w})
                watcher.wait(120, "the hot key to converge")
                quiet(b, 1.0)
                cpu1 = proc_cpu_ticks(b.proc.pid)
                entries = k.requests(since=seq0)
        finally:
            watcher.stop()
            kv.close()
            k.close()
    writes = [e for e in entries if is_bridge(e) and is_ir_write(e)]
    got = [body_weight(e["body"]) for e in writes]
    final = [e for e in writes if body_weight(e["body"]) == last_w and e["status"] in (200, 201)]
    span = writes[-1]["t"] - writes[0]["t"] if len(writes) > 1 else 0.0
    return {
        "label": label, "puts": n, "put_seconds": t_last - t_first,
        "puts_per_s": n / max(1e-9, t_last - t_first),
        "writes": len(writes), "write_span_s": span,
        "writes_per_s": (len(writes) - 1) / span if span > 0 else None,
        "in_order": got == sorted(got), "last_is_last": bool(got) and got[-1] == last_w,
        "converge_done_s": final[0]["t_done"] - t_last if final else None,
        "bridge_cpu_s": (cpu1 - cpu0) / float(CLK_TCK),
    }


def outage_one(env, args):
    """--outage-routes routes changed while every request about Traefik objects answers 503
    for --outage-seconds; then how long after the outage each route's write lands."""
    n, outage, prefix = args.outage_routes, args.outage_seconds, "outage/"
    names = ["o%d" % i for i in range(n)]
    ws = {nm: 2000 + i for i, nm in enumerate(names)}
    with env.kube("outage") as kube:
        k = Kube(kube)
        watcher = Watcher(kube)
        kv = EtcdKV(env.etcd)
        try:
            kv.put_many([kvp for nm in names for kvp in route_keys(prefix, nm, 1)])
            watcher.expect({nm: 1 for nm in names})
            with env.bridge("outage", kube, "etcd", prefix) as b:
                wait_ready(b)
                watcher.wait(120, "initial sync")
                quiet(b, 1.0)
                seq0 = k.last_seq()
                log("writeload: %d routes changed during a %g s API server outage (503)"
                    % (n, outage))
                kube.fault(path_regex="^/apis/%s/" % GROUP, status=503, count=-1)
                t_fault = time.time()
                for nm in names:
                    kv.put("%s%s/%s/weights" % (prefix, NS, nm), weights_value(ws[nm]))
                time.sleep(max(0.0, t_fault + outage - time.time()))  # the outage: a span
                kube.clear_faults()
                t_clear = time.time()
                watcher.expect(ws)
                watcher.wait(120, "routes to converge after the outage")
                quiet(b, 1.0)
                entries = k.requests(since=seq0)
                released = "the API server answers again" in b.log_text()
        finally:
            watcher.stop()
            kv.close()
            k.close()
    writes = [e for e in entries if is_bridge(e) and is_ir_write(e)]
    ok = first_writes(writes)
    rec = [ok[(nm, w)]["t_done"] - t_clear for nm, w in ws.items() if (nm, w) in ok]
    during = [e for e in entries if is_bridge(e) and t_fault <= e["t"] < t_clear]
    return {
        "routes": n, "outage_s": t_clear - t_fault, "recovery": stats(rec),
        "failed_writes": sum(1 for e in during if is_ir_write(e)),
        "probes": sum(1 for e in during if e["method"] == "GET" and entry_name(e)
                      and e["query"].get("watch") not in ("1", "true")
                      and not e["path"].endswith("/ingressroutes")),
        "released_line": released,
    }


# --------------------------------------------------------------------------------------------
# report

def machine_info(args):
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = "%.1f GiB" % (int(f.readline().split()[1]) / 1048576.0)
    except (OSError, ValueError, IndexError):
        pass

    def first_line(argv):
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=20)
            return (p.stdout or p.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "?"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "host": platform.node(), "nproc": os.cpu_count(), "cpu": model, "memory": mem,
        "kernel": platform.release(), "python": platform.python_version(),
        "etcd": first_line(["etcd", "--version"]),
        "kubectl": first_line(["kubectl", "version", "--client"]),
        "bridge": "%s (%s)" % (args.bridge, first_line([args.bridge, "--version"])),
        "git": git_state(),
        "loadavg": open("/proc/loadavg").read().split()[0],
        "bridge_sha256": hashlib.sha256(open(args.bridge, "rb").read()).hexdigest()[:12],
        "bridge_mtime": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(
            os.path.getmtime(args.bridge))),
        "command": " ".join([os.path.relpath(sys.argv[0], REPO) if os.path.isabs(sys.argv[0])
                             else sys.argv[0]] + sys.argv[1:]),
    }


def system_busy():
    """CPU-seconds all CPUs have spent busy since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / float(CLK_TCK)


def own_cpu():
    """CPU-seconds of this process and of every child it has reaped."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def git_state():
    """The commit the bridge was built from and whether its sources differ (read-only)."""
    try:
        head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=20).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "diff", "--quiet", "HEAD", "--", "bridge",
                                "sinks", "sources", "meson.build"],
                               capture_output=True, timeout=20).returncode
    except (OSError, subprocess.SubprocessError):
        return "?"
    return head + (" + uncommitted changes in bridge/, sinks/ or sources/" if dirty else "")


def print_header(info):
    print("canary-bridge benchmarks  %s" % info["date"])
    print("machine: %s CPUs, %s, %s RAM, kernel %s" % (info["nproc"], info["cpu"],
                                                       info["memory"], info["kernel"]))
    print("tools:   %s; %s; Python %s" % (info["etcd"], info["kubectl"], info["python"]))
    print("bridge:  %s, built %s from %s, sha256 %s" % (
        info["bridge"], info["bridge_mtime"], info["git"], info["bridge_sha256"]))
    print("config:  bridge defaults (reconcile.max_in_flight 16, resync 5m), log.level info, "
          "API test server tests/kubeapi/server.py (HTTP/1.1 + TLS)")
    print("command: %s" % info["command"])
    print(flush=True)


def lat_row(label, d, key="from_ack"):
    s = d.get(key) if d else None
    if not s:
        return [label, d.get("changes") if d else "-", "-", "-", "-", "-", "-"]
    return [label, s["n"], ms(s["p50"]), ms(s["p90"]), ms(s["p99"]), ms(s["max"]),
            ms(d["from_send"]["p50"]) if d.get("from_send") else "-"]


PROP_ROWS = (("etcd", "bridge, etcd"), ("consul_b2b", "bridge, consul (back-to-back)"),
             ("consul", "bridge, consul (%.2f s apart)"))


def print_propagation(res):
    p, b = res.get("propagation") or {}, res.get("baseline")
    if not p and not b:
        return
    print("1-2. Propagation latency, ms: source write acknowledged -> API server receives the "
          "write")
    rows = []
    for key, label in PROP_ROWS:
        if key in p:
            rows.append(lat_row(label % p[key]["gap_s"] if "%" in label else label, p[key]))
    if b:
        rows.append(lat_row("etcdctl watch | kubectl patch", b))
    print(table(["path", "changes", "p50", "p90", "p99", "max", "p50 from send"], rows))
    if p.get("etcd") and p["etcd"].get("from_ack") and b and b.get("from_ack"):
        be, bs = p["etcd"], b
        r_ack = bs["from_ack"]["p50"] / be["from_ack"]["p50"] if be["from_ack"]["p50"] > 0 \
            else float("inf")
        r_send = bs["from_send"]["p50"] / be["from_send"]["p50"]
        res["ratio"] = {"p50_from_ack": r_ack, "p50_from_send": r_send}
        print("  ratio kubectl loop / bridge (etcd), p50: %.0fx (from ack), %.0fx (from send)"
              % (r_ack, r_send))
    for key, _ in PROP_ROWS:
        d = p.get(key)
        if not d:
            continue
        mix = ", ".join("%s %d" % kv for kv in sorted(d["bridge_requests"].items()))
        print("  %s: bridge requests: %s; writes on %d connection(s); API server time per "
              "write p50 %s ms; bridge CPU %.3f ms/change; %d of %d writes arrived before the "
              "source's ack; source put round trip p50 %s ms"
              % (key, mix or "none", d["write_connections"],
                 ms(d["server_time"]["p50"]) if d["server_time"] else "-",
                 d["bridge_cpu_ms_per_change"], d["negative_from_ack"], d["changes"],
                 ms(d["source_ack"]["p50"])))
        if "routes" in d:
            rv = d["revisit"]
            print("  %s: %s: a route was edited again after %s ms at least (p50 %s; write "
                  "pacing's slot: %.0f ms), %d changes held back for that (%.0f ms in all); "
                  "passes delayed by write pacing: %s; burst holds: %d"
                  % (key, "%d routes in turn" % d["routes"] if d["routes"] > 1 else "one route",
                     ms(rv["min"], 0) if rv else "-",
                     ms(rv["p50"], 0) if rv else "-", PACE_SLOT_S * 1000, d["held"],
                     d["held_s"] * 1000, "?" if d["paced"] is None else d["paced"],
                     d["burst_holds"]))
    for key, _ in PROP_ROWS:
        cd = (p.get(key) or {}).get("consul_delivery")
        if cd and cd.get("delivery"):
            print("  %s: Consul test server, PUT received -> the bridge's blocking query "
                  "answered: p50 %s, p90 %s, p99 %s ms (its PUT handling alone: p50 %s ms); "
                  "the query was already waiting for %d of %d changes%s" % (
                      key, ms(cd["delivery"]["p50"]), ms(cd["delivery"]["p90"]),
                      ms(cd["delivery"]["p99"]), ms(cd["put_time"]["p50"]),
                      cd["query_waiting"], cd["n"],
                      "" if not cd["query_late_by"] else
                      "; otherwise it came p50 %s ms after the PUT" % ms(
                          cd["query_late_by"]["p50"])))
    if b:
        print("  kubectl loop: requests per change: %s" % ", ".join(
            "%s %.2f" % kv for kv in sorted(b["requests_per_change"].items())))
    an = p.get("anatomy")
    if an and an.get("error"):
        print("  anatomy: %s" % an["error"])
    elif an and an.get("matched"):
        print()
        print("  Anatomy of an etcd change (%d of %d changes, bridge system calls under perf; "
              "ms):" % (an["matched"], an["changes"]))
        rows = []
        for key, label in (
                ("etcd", "put sent -> watch event read by the bridge (etcd commit + delivery)"),
                ("ack_after_event", "  the put's ack reached the writer after the event, by"),
                ("bridge", "event read -> PUT sent (bridge: parse, render, compare, TLS)"),
                ("to_server", "PUT sent -> API server `t` (loopback, TLS read, header parse)"),
                ("total_send", "total: put sent -> API server `t`"),
                ("total_ack", "total: put acknowledged -> API server `t`"),
                ("server", "(API server handling of the PUT: t -> t_done)")):
            s = an.get(key)
            if s:
                rows.append([label, ms(s["p50"], 3), ms(s["p90"], 3), ms(s["p99"], 3)])
        print(table(["step", "p50", "p90", "p99"], rows, indent="    "))
    print()


def print_burst(res):
    bd = res.get("burst")
    if not bd:
        return
    ds = [bd[m] for m in BURST_METHODS if m in bd]
    d0 = ds[0]
    print("3. Burst: %d weight puts over %d routes, as fast as etcd takes them"
          % (d0["puts"], d0["routes"]))
    heads = ["figure"]
    for d in ds:
        heads.append("gateway, %d conns%s" % (d["clients"], ", no holds" if "nohold" in d["method"]
                                               else "")
                     if d["method"].startswith("gateway") else
                     "txn of %d, %d conns" % (d["batch"], d["clients"]))

    def row(label, f):
        return [label] + [f(d) for d in ds]
    st = lambda d: ("%s / %s ms" % (ms(d["server_time"]["p50"]), ms(d["server_time"]["p99"]))
                    if d["server_time"] else "-")
    print(table(heads, [
        row("puts took / rate", lambda d: "%.2f s / %.0f/s" % (d["put_seconds"],
                                                               d["puts_per_s"])),
        row("etcd revisions", lambda d: "%d" % d["revisions"]),
        row("converged after last put: last final write received",
            lambda d: "%s ms" % ms(d["converge_recv_s"], 1)),
        row("converged after last put: last final write done",
            lambda d: "%s ms" % ms(d["converge_done_s"], 1)),
        row("API writes (PUT/POST) / distinct routes",
            lambda d: "%d / %d" % (d["api_writes"], d["routes"])),
        row("  of which sent while the puts went on", lambda d: "%d" % d["writes_during_puts"]),
        row("burst holds (bridge log)", lambda d: "%d" % d.get("holds", 0)),
        row("passes delayed by write pacing (0.1 s per object)",
            lambda d: "-" if d.get("paced") is None else "%d" % d["paced"]),
        row("409 conflicts / bridge GETs", lambda d: "%d / %d" % (d["conflicts"],
                                                                d["bridge_gets"])),
        row("coalescing: puts per API write", lambda d: "%.1f" % (d["puts"] /
                                                                 max(1, d["api_writes"]))),
        row("CPU s, first put -> quiet: bridge / API server / etcd", lambda d: "%.1f / %.1f / %.1f"
            % (d["bridge_cpu_s"], d["server_cpu_s"], d["etcd_cpu_s"])),
        row("  (wall time first put -> quiet, 2 cores)", lambda d: "%.1f s" % d["wall_s"]),
        row("API server time per write p50 / p99", st),
    ]))
    print()


def print_scale(res):
    d = res.get("scale")
    if not d:
        return
    print("4. Scale: %d routes" % d["routes"])
    print(table(["figure", "value"], [
        ["initial sync: bridge start -> all objects written", "%.2f s" % d["sync_s"]
         if d["sync_s"] else "-"],
        ["  of which: start -> ready (source read, objects listed)", "%.2f s" % d["ready_s"]],
        ["  writes: created / POSTs", "%d / %d" % (d["created"], d["posts"])],
        ["  write rate / writes in flight at the API server (mean)",
         "%.0f/s / %.1f" % (d["writes_per_s"], d["server_busy_fraction"])
         if d["writes_per_s"] else "-"],
        ["  API server time per POST p50 / p99", "%s / %s ms" % (
            ms(d["server_time"]["p50"]), ms(d["server_time"]["p99"]))
         if d["server_time"] else "-"],
        ["  CPU during sync: bridge / API test server",
         "%.1f s (%.0f%% of a core) / %.1f s (%.0f%%)" % (
             d["bridge_cpu_sync_s"], 100 * d["bridge_cpu_sync_s"] / d["sync_wall_s"],
             d["server_cpu_s"], 100 * d["server_cpu_s"] / d["sync_wall_s"])],
        ["RSS after sync (VmRSS; peak VmHWM)", "%.1f MiB (%.1f MiB)" % (
            d["rss_kib"] / 1024.0, d["hwm_kib"] / 1024.0)],
        ["  of which anonymous (heap, stacks) / file-backed (binary, shared libraries)",
         "%.1f / %.1f MiB" % (d["rss_anon_kib"] / 1024.0, d["rss_file_kib"] / 1024.0)],
        ["idle CPU over %.0f s (utime+stime)" % d["idle_s"],
         "%.3f%% of a core (%d ticks of %d Hz)" % (d["idle_cpu_pct"], d["idle_cpu_ticks"],
                                                  CLK_TCK)],
        ["idle wakeups (voluntary ctx switches) / requests sent",
         "%.2f/s / %d" % (d["idle_wakeups_per_s"], d["idle_requests"])],
        ["propagation with all routes in place: p50 / max from ack (%d changes)"
         % d["propagation"]["changes"], "%s / %s ms" % (
             ms(d["propagation"]["from_ack"]["p50"]), ms(d["propagation"]["from_ack"]["max"]))
         if d["propagation"]["from_ack"] else "-"],
    ] + restart_rows(d.get("restart"))))
    print()


def restart_rows(r):
    if not r:
        return []
    if r.get("error"):
        return [["restart / resync probe", r["error"]]]
    return [
        ["restart, all objects in place: start -> CPU quiet / CPU used",
         "%.1f s / %.1f s" % (r["restart_quiet_s"], r["restart_cpu_s"])],
        ["one periodic resync pass (reconcile.resync): CPU used",
         "%.2f s (writes: %d, the change below)" % (r["resync_cpu_s"], r["writes"])],
        ["  as a mean with the default resync 5m",
         "%.2f%% of a core" % r["default_period_pct"]],
        ["  a weight change put 0.3 s into the resync: landed after", "%s ms" % ms(
            r["change_during_resync"]["from_ack"]["max"], 1)
         if r.get("change_during_resync", {}).get("from_ack") else "-"],
    ]


def print_storm(res):
    d = res.get("storm")
    if not d:
        return
    print("5. Conflict storm: %d routes, second writer merge-patching an annotation on each "
          "in turn at %g Hz" % (d["routes"], d["hz"]))
    c = d["converge"]
    print(table(["figure", "value"], [
        ["weight changes (rounds x routes)", "%d (%d x %d)" % (d["changes"], d["rounds"],
                                                               d["routes"])],
        ["second writer: patches sent / achieved rate", "%d / %.1f Hz" % (d["bumps"],
                                                                           d["bump_hz"])],
        ["time to converge after a round's last put: p50 / max",
         "%s / %s ms" % (ms(c["p50"], 1), ms(c["max"], 1)) if c else "-"],
        ["bridge writes / 409 conflicts / re-reads (GET)",
         "%d / %d / %d" % (d["bridge_writes"], d["conflicts"], d["rereads"])],
    ]))
    print()


def print_writeload(res):
    d = res.get("writeload")
    if not d:
        return
    hk = [d["hotkey"][k] for k in ("paced", "unpaced") if k in d["hotkey"]]
    print("7. Write load: %d puts to one key, back to back" % hk[0]["puts"])
    heads = ["figure"] + ["bridge defaults" if h["label"] == "paced"
                          else "object_writes_per_second: 0 (no pacing)" for h in hk]
    rows = [
        ["puts took / rate"] + ["%.2f s / %.0f/s" % (h["put_seconds"], h["puts_per_s"])
                                 for h in hk],
        ["API writes (PUT) / first to last write"] + ["%d / %.2f s" % (h["writes"],
                                                                      h["write_span_s"])
                                                       for h in hk],
        ["  writes per second"] + ["%.1f" % h["writes_per_s"] if h["writes_per_s"] else "-"
                                   for h in hk],
        ["each write a later put / the last write the last put"] + [
            "%s / %s" % ("yes" if h["in_order"] else "NO", "yes" if h["last_is_last"] else "NO")
            for h in hk],
        ["converged after last put (last write done)"] + [
            "%s ms" % ms(h["converge_done_s"], 1) for h in hk],
        ["bridge CPU, first put -> quiet"] + ["%.2f s" % h["bridge_cpu_s"] for h in hk],
    ]
    print(table(heads, rows))
    o = d.get("outage")
    if o:
        r = o["recovery"]
        print("  API server outage: every request about Traefik objects answers 503 for %.1f s; "
              "%d routes changed at its start" % (o["outage_s"], o["routes"]))
        print(table(["figure", "value"], [
            ["outage end -> each route's write done: p50 / max",
             "%s / %s ms" % (ms(r["p50"], 0), ms(r["max"], 0)) if r else "-"],
            ["failed writes / probes (GET of one IngressRoute) during the outage",
             "%d / %d" % (o["failed_writes"], o["probes"])],
            ["\"the API server answers again\" logged", "yes" if o["released_line"] else "no"],
        ]))
    print()


def verdicts(res):
    """The issue's targets, each with the figure and met / not met."""
    rows = []
    prop = res.get("propagation") or {}
    for key, label in PROP_ROWS:
        p = prop.get(key)
        if not p or not p.get("from_ack"):
            continue
        what = label % p["gap_s"] if "%" in label else label
        what = what.replace("bridge, ", "")
        rows.append(["p50 propagation < 2 ms, %s" % what, ms(p["from_ack"]["p50"]) + " ms",
                     "met" if p["from_ack"]["p50"] < 0.002 else "NOT met"])
        rows.append(["p99 propagation < 10 ms, %s" % what, ms(p["from_ack"]["p99"]) + " ms",
                     "met" if p["from_ack"]["p99"] < 0.010 else "NOT met"])
    r = res.get("ratio")
    if r:
        rows.append([">= 100x lower median than the kubectl loop",
                     "%.0fx from ack (%.0fx from send)" % (r["p50_from_ack"],
                                                           r["p50_from_send"]),
                     "met" if r["p50_from_ack"] >= 100 else "NOT met"])
    for b in (res.get("burst") or {}).values():
        if "nohold" in b["method"]:
            continue                    # the comparison row, not the product's defaults
        limit = b["routes"] + b["conflicts"]
        rows.append(["burst writes <= routes + retries (%s)" % b["method"],
                     "%d vs %d + %d" % (b["api_writes"], b["routes"], b["conflicts"]),
                     "met" if b["api_writes"] <= limit else "NOT met"])
    s = res.get("scale")
    if s:
        rows.append(["RSS < 30 MiB at %d routes" % s["routes"], "%.1f MiB" % (
            s["rss_kib"] / 1024.0), "met" if s["rss_kib"] < 30 * 1024 else "NOT met"])
        rows.append(["idle CPU < 0.1%% of a core (%.0f s)" % s["idle_s"],
                     "%.3f%%" % s["idle_cpu_pct"],
                     "met" if s["idle_cpu_pct"] < 0.1 else "NOT met"])
        r = s.get("restart")
        if r and "resync_cpu_s" in r:
            rows.append(["idle CPU < 0.1%, counting the 5m resync",
                         "%.2f%%" % r["default_period_pct"],
                         "met" if r["default_period_pct"] < 0.1 else "NOT met"])
    w = res.get("writeload") or {}
    h = (w.get("hotkey") or {}).get("paced")
    if h:
        limit = int(round(h["write_span_s"] * 10)) + 1  # the server clock reads arrivals
        rows.append(["hot key: writes <= 10/s x time + 1, last value last",
                     "%d writes in %.2f s (limit %d), %s" % (
                         h["writes"], h["write_span_s"], limit,
                         "last value last" if h["last_is_last"] else "LAST VALUE NOT LAST"),
                     "met" if h["writes"] <= limit and h["last_is_last"] else "NOT met"])
    o = w.get("outage")
    if o and o["recovery"]:
        rows.append(["after an API server outage, routes converge within 2 s",
                     "max %s ms" % ms(o["recovery"]["max"], 0),
                     "met" if o["recovery"]["max"] < 2.0 else "NOT met"])
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="small counts (CI smoke): every section in well under 2 minutes")
    ap.add_argument("--only", default="",
                    help="comma-separated sections: " + ", ".join(SECTIONS))
    ap.add_argument("--changes", type=int, help="propagation: changes per source (500)")
    ap.add_argument("--consul-changes", type=int,
                    help="propagation: Consul changes spaced by --consul-gap (100)")
    ap.add_argument("--consul-gap", type=float, default=0.55,
                    help="propagation: seconds to wait after each spaced Consul change lands, "
                    "as a person editing in the Consul UI would (0.55)")
    ap.add_argument("--consul-b2b-changes", type=int,
                    help="propagation: Consul changes back-to-back, no gap (500)")
    ap.add_argument("--anatomy", type=int,
                    help="propagation: extra etcd changes with the bridge's system calls "
                    "recorded by perf, to split the latency (100 if perf is installed; 0 = off)")
    ap.add_argument("--prop-routes", type=int, default=40,
                    help="propagation: routes the back-to-back changes take in turn, so that "
                    "no route is edited again within write pacing's 0.1 s (40)")
    ap.add_argument("--warmup", type=int, default=5,
                    help="unmeasured first changes (5; back-to-back at least one per route)")
    ap.add_argument("--baseline-changes", type=int, help="kubectl loop changes (100)")
    ap.add_argument("--burst-puts", type=int, help="burst: puts (10000)")
    ap.add_argument("--burst-routes", type=int, help="burst: routes (1000)")
    ap.add_argument("--burst-clients", type=int, default=32,
                    help="burst: concurrent gateway connections (32)")
    ap.add_argument("--burst-method", default="gateway,txn,gateway-nohold",
                    help="burst: gateway (one put per request, one revision each), txn "
                    "(--burst-batch puts per transaction), gateway-nohold (gateway with the "
                    "bridge's burst holds off); comma-separated (gateway,txn,gateway-nohold)")
    ap.add_argument("--burst-batch", type=int, default=100,
                    help="burst: puts per transaction with txn (100; etcd allows 128)")
    ap.add_argument("--burst-txn-clients", type=int, default=4,
                    help="burst: concurrent connections sending transactions (4)")
    ap.add_argument("--scale-routes", type=int, help="scale: routes (10000)")
    ap.add_argument("--scale-timeout", type=float, default=600,
                    help="scale: seconds allowed for the initial sync (600)")
    ap.add_argument("--idle", type=float, help="scale: idle seconds for the CPU figure (60)")
    ap.add_argument("--resync-probe", type=int,
                    help="scale: restart the bridge with reconcile.resync at this many seconds "
                    "and measure one resync pass (60; quick 5; 0 = skip)")
    ap.add_argument("--storm-routes", type=int, help="storm: routes (100)")
    ap.add_argument("--storm-rounds", type=int, help="storm: rounds of weight changes (10)")
    ap.add_argument("--storm-hz", type=float, default=50.0,
                    help="storm: second writer's total rate (50)")
    ap.add_argument("--storm-pause", type=float, default=0.5,
                    help="storm: seconds between rounds (0.5)")
    ap.add_argument("--traefik-changes", type=int,
                    help="traefik: changes per throttle value and pacing (10)")
    ap.add_argument("--traefik-throttle", default="200ms",
                    help="traefik: the providersThrottleDuration measured besides Traefik's "
                    "default 2s (200ms, the value docs/usage.md recommends)")
    ap.add_argument("--hotkey-puts", type=int,
                    help="writeload: puts to one key, back to back (1000)")
    ap.add_argument("--writeload-unpaced", action=argparse.BooleanOptionalAction, default=True,
                    help="writeload: also run the hot key with object_writes_per_second: 0 "
                    "(--no-writeload-unpaced for a binary without that key)")
    ap.add_argument("--outage-routes", type=int,
                    help="writeload: routes changed during the API server outage (20)")
    ap.add_argument("--outage-seconds", type=float,
                    help="writeload: how long the API server answers 503 (20)")
    ap.add_argument("--bridge", default=os.environ.get("CANARY_BRIDGE") or
                    os.path.join(REPO, "build", "canary-bridge"), help="bridge binary")
    ap.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    args = ap.parse_args(argv)
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so every process started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    q = args.quick
    defaults = dict(changes=(30, 500), consul_changes=(10, 100), consul_b2b_changes=(30, 500),
                    baseline_changes=(5, 100),
                    burst_puts=(1000, 10000), burst_routes=(100, 1000),
                    scale_routes=(300, 10000), idle=(5, 60), resync_probe=(5, 60),
                    storm_routes=(10, 100), storm_rounds=(3, 10), traefik_changes=(3, 10),
                    hotkey_puts=(200, 1000), outage_routes=(5, 20), outage_seconds=(5, 20))
    for k, (quick, full) in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, quick if q else full)
    if args.anatomy is None:
        args.anatomy = 0 if q or not shutil.which("perf") else 100
    only = [s.strip() for s in args.only.split(",") if s.strip()] or list(SECTIONS)
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        ap.error("unknown section(s) %s; choose from %s" % (", ".join(bad), ", ".join(SECTIONS)))
    if not os.access(args.bridge, os.X_OK):
        ap.error("no bridge binary at %s (ninja -C build canary-bridge)" % args.bridge)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))

    info = machine_info(args)
    print_header(info)
    res = {"machine": info, "args": vars(args)}
    t_start = time.time()
    funcs = {"propagation": bench_propagation, "baseline": bench_baseline,
             "burst": bench_burst, "scale": bench_scale, "storm": bench_storm,
             "writeload": bench_writeload,
             "traefik": lambda e, a, r: traefik_real.bench_traefik(e, a, r, log, stats)}
    sys0, own0 = system_busy(), own_cpu()
    res["sections_load"] = {}
    with Env(args) as env:
        for name in SECTIONS:
            if name in only:
                t, b0 = time.time(), system_busy()
                funcs[name](env, args, res)
                wall = time.time() - t
                busy = (system_busy() - b0) / wall
                res["sections_load"][name] = busy
                log("%s: %.1f s; machine busy %.2f of %d CPUs" % (name, wall, busy,
                                                                 os.cpu_count()))
    wall = time.time() - t_start
    res["load"] = {"wall_s": wall, "system_busy_cpu_s": system_busy() - sys0,
                   "own_cpu_s": own_cpu() - own0}
    print_propagation(res)
    print_burst(res)
    print_storm(res)
    print_scale(res)
    traefik_real.print_traefik(res, table, ms)
    print_writeload(res)
    rows = verdicts(res)
    if rows:
        print("Targets")
        print(table(["target", "measured", "verdict"], rows))
        print()
    ld = res["load"]
    others = max(0.0, ld["system_busy_cpu_s"] - ld["own_cpu_s"])
    print("total %.0f s" % (time.time() - t_start))
    print("machine load: 1-min load average %s at the start; CPU used during the run: %.0f s "
          "by this benchmark and what it started, %.0f s by other processes (%.0f%% of %d "
          "CPUs)%s" % (info["loadavg"], ld["own_cpu_s"], others,
                       100.0 * others / (ld["wall_s"] * os.cpu_count()), os.cpu_count(),
                       "; figures include that contention" if others > 0.05 * ld["wall_s"]
                       else ""))
    print("busy CPUs per section (all processes): %s" % ", ".join(
        "%s %.2f" % kv for kv in res["sections_load"].items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
