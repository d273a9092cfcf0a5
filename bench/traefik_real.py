"""bench/traefik_real.py - the `traefik` section of bench/run.py: how long from
an `etcdctl put` of new weights until real Traefik serves a request with the new split,
at Traefik's default providersThrottleDuration (2 s) and at the value docs/usage.md
recommends.  See bench/README.md, section 6.

It starts, per throttle value: a real kube-apiserver on its own etcd, real Traefik (the
kubernetesCRD provider) and a bridge on the run's etcd, with backends in a network
namespace (tests/lib/real.py, as tests/real/test_traffic_real.py does).  It needs the real
servers built (tests/real/build.sh) and root (ip netns); without them it says so and
skips.

Each change flips one route between 100/0 and 0/100, so "the new split" is unambiguous:
the first response from the other backend.  A client thread keeps requests going to
Traefik's entry point on one kept-alive connection and records when each response
arrived and which backend sent it.  The latency of a change is that first response's
arrival minus the moment `etcdctl put` returned (from ack), and minus the moment it was
started (from send: includes starting etcdctl).  Two ways of pacing:
- quiet: the put comes throttle + 0.5 s after the previous change was served, so Traefik's
  throttle window is over: what a lone edit on a quiet cluster sees;
- back-to-back: the put comes as soon as the previous change was served, inside the
  throttle window Traefik opened when it applied that one: what an edit sees when anything
  else (another route, a Middleware the bridge wrote first, Endpoints churning as pods
  come and go) changed Traefik's configuration just before.
The bridge runs with traefik.api pointing at that Traefik (interval 10ms): for each change
the section also records how long the bridge took to see Traefik's API serve it
(canary_bridge_propagation_seconds{stage="live"}, from the etcd event), beside the time
to the API server's answer (stage="applied").
No assertions: figures only."""
import http.client
import json
import os
import threading
import time
import urllib.request

from cbtest import Bridge, bridge_config, free_port

BACKENDS = {"v1": 8081, "v2": 8082}
ROUTE = """match: Host(`shift.bench.example`)
entryPoints: [web]
services:
  - {name: v1, port: 80}
  - {name: v2, port: 80}
"""


def available():
    """None when the section can run, else why not."""
    try:
        from real import BIN, binary
    except ImportError as e:
        return "cannot import tests/lib/real.py: %s" % e
    missing = [n for n in ("kube-apiserver", "traefik") if not os.access(binary(n), os.X_OK)]
    if missing:
        return "not built: %s in %s (bash tests/real/build.sh)" % (", ".join(missing), BIN)
    if os.geteuid() != 0:
        return "needs root for the backends' network namespace (ip netns)"
    return None


class Client(threading.Thread):
    """Requests back to back to Traefik's entry point; keeps (arrival time, backend)."""

    def __init__(self, port, host):
        super().__init__(daemon=True)
        self.port, self.host = port, host
        self.lock = threading.Lock()
        self.seen = []
        self.errors = 0
        self.done = False

    def run(self):
        conn = None
        while not self.done:
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", "/", headers={"Host": self.host})
                r = conn.getresponse()
                body = r.read()
                t = time.time()
                name = json.loads(body)["name"] if r.status == 200 else None
            except (OSError, ValueError, http.client.HTTPException):
                self.errors += 1
                if conn is not None:
                    conn.close()
                conn = None
                continue
            with self.lock:
                self.seen.append((t, name))

    def first_after(self, t0, name, timeout=30):
        """Arrival time of the first response from `name` that arrived after t0."""
        deadline = time.time() + timeout
        i = 0
        while time.time() < deadline:
            with self.lock:
                seen = self.seen[i:]
            for t, n in seen:
                if t > t0 and n == name:
                    return t
            i += len(seen)
            time.sleep(0.001)
        return None


def propagation(port, stage):
    """(count, sum) of canary_bridge_propagation_seconds{stage=...} on the bridge."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        text = r.read().decode()
    got = {}
    for line in text.splitlines():
        for part in ("count", "sum"):
            head = 'canary_bridge_propagation_seconds_%s{stage="%s"} ' % (part, stage)
            if line.startswith(head):
                got[part] = float(line[len(head):])
    return got.get("count", 0), got.get("sum", 0.0)


def wait_observed(port, stage, count0, timeout=30):
    """The seconds of the next observation after count0, or None."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        c, s = propagation(port, stage)
        if c > count0:
            return s
        time.sleep(0.005)
    return None


def one_throttle(env, args, throttle, log, stats):
    from real import NetnsBackends, RealKubeAPI, RealTraefik
    d = os.path.join(env.dir, "traefik-" + throttle)
    os.makedirs(d, exist_ok=True)
    procs = []
    out = {"throttle": throttle}
    try:
        kube = RealKubeAPI(d)
        procs.append(kube)
        hosts = NetnsBackends(d, BACKENDS)
        procs.append(hosts)
        for name, port in BACKENDS.items():
            kube.backend_service("default", name, hosts.address, port)
        traefik = RealTraefik(d, kube, throttle=throttle)
        procs.append(traefik)
        prefix = "bt%s/" % throttle.replace(".", "_")
        key = prefix + "default/shift/"
        env.etcd.put(key + "route", ROUTE)
        env.etcd.put(key + "weights", "v1=100, v2=0")
        mport = free_port()
        cfg = bridge_config(etcd=env.etcd, kube=kube, prefix=prefix, log={"level": "info"},
                            metrics_port=mport,
                            traefik={"api": {"urls": [traefik.api_url], "interval": "10ms"}})
        bridge = Bridge(d, cfg, binary=env.binary, name="bridge")
        procs.append(bridge)
        bridge.wait_log(r"ready: ", timeout=120)
        client = Client(traefik.port, "shift.bench.example")
        client.start()
        try:
            if client.first_after(0, "v1", timeout=60) is None:
                raise RuntimeError("Traefik never served the route:\n" + traefik.log_tail())
            current = "v1"
            pause = float(throttle.rstrip("ms")) / (1000 if throttle.endswith("ms") else 1)
            for mode in ("quiet", "back-to-back"):
                from_ack, from_send, live, applied = [], [], [], []
                for _ in range(args.traefik_changes):
                    live0, live_sum0 = propagation(mport, "live")
                    app0, app_sum0 = propagation(mport, "applied")
                    if mode == "quiet":
                        time.sleep(pause + 0.5)     # pacing: let the throttle window end
                    new = "v2" if current == "v1" else "v1"
                    t_send = time.time()
                    env.etcd.etcdctl("put", key + "weights",
                                     "v1=%d, v2=%d" % ((100, 0) if new == "v1" else (0, 100)))
                    t_ack = time.time()
                    t = client.first_after(t_ack, new)
                    if t is None:
                        log("traefik %s: change to %s not served within 30 s" % (throttle,
                                                                                  new))
                        break
                    from_ack.append(t - t_ack)
                    from_send.append(t - t_send)
                    current = new
                    s = wait_observed(mport, "live", live0)
                    if s is not None:
                        live.append(s - live_sum0)
                    s = wait_observed(mport, "applied", app0)
                    if s is not None:
                        applied.append(s - app_sum0)
                out[mode] = {"from_ack": stats(from_ack), "from_send": stats(from_send),
                             "bridge_live": stats(live), "bridge_applied": stats(applied)}
        finally:
            client.done = True
            client.join(15)
        out["client_errors"] = client.errors
    finally:
        for p in reversed(procs):
            p.stop()
    return out


def bench_traefik(env, args, res, log, stats):
    why = available()
    if why:
        log("traefik: skipped: " + why)
        res["traefik"] = {"skipped": why}
        return
    rows = []
    for throttle in ("2s", args.traefik_throttle):
        log("traefik: providersThrottleDuration %s, %d changes per pacing" % (
            throttle, args.traefik_changes))
        rows.append(one_throttle(env, args, throttle, log, stats))
    res["traefik"] = {"rows": rows}


def print_traefik(res, table, ms):
    t = res.get("traefik")
    if not t:
        return
    print("Traefik: etcdctl put -> first request served with the new split (real Traefik)")
    if t.get("skipped"):
        print("  skipped: " + t["skipped"])
        print()
        return
    rows = []
    for r in t["rows"]:
        for mode in ("quiet", "back-to-back"):
            d = r.get(mode) or {}
            a, s = d.get("from_ack"), d.get("from_send")
            if not a:
                rows.append([r["throttle"], mode, "-", "-", "-", "-", "-"])
                continue
            lv, ap = d.get("bridge_live") or {}, d.get("bridge_applied") or {}
            rows.append([r["throttle"], mode, a["n"], ms(a["p50"]), ms(a["p90"]),
                         ms(a["max"]), ms(s["p50"]),
                         ms(ap["p50"]) if ap.get("n") else "-",
                         ms(lv["p50"]) if lv.get("n") else "-",
                         ms(lv["p90"]) if lv.get("n") else "-"])
    print(table(["providersThrottleDuration", "pacing", "n", "p50 ms", "p90 ms", "max ms",
                 "p50 from send", "applied p50", "live p50", "live p90"], rows))
    print("  quiet: put %s after the previous change was served; back-to-back: put as soon "
          "as it was served" % "throttle + 0.5 s")
    print("  applied/live: the bridge's canary_bridge_propagation_seconds, from the etcd event "
          "to the API server's answer (applied) and to Traefik's API showing the weights "
          "(live; traefik.api, interval 10ms)")
    print()
