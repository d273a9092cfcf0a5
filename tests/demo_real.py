"""demo_real.py - the canary-bridge demo against real servers (run by tests/demo.sh as root).

etcd, a real kube-apiserver (its own etcd, Traefik CRDs, deploy/rbac.yaml), a real Traefik
(kubernetesCRD provider) and two backends shop-v1/shop-v2 as hosts in a network namespace
(the apiserver refuses loopback endpoints), all on free ports in a temp dir; then the
bridge between etcd and the apiserver.  A route and its weights are put with etcdctl and
requests are sent through Traefik's entry point after each change; the split is printed.
Each change is awaited on Traefik's own API showing the new weights, never a sleep.
Everything is stopped on exit, Ctrl-C or failure (processes, temp dir, netns).

Standard library + PyYAML only, reusing tests/lib (real.py is the harness, and
tests/real/test_traffic_real.py the same scenario as a test).
"""
import http.client
import json
import os
import signal
import sys
import tempfile
from collections import Counter
from contextlib import ExitStack

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
from cbtest import Bridge, Etcd, bridge_config, wait_until  # noqa: E402
from real import NetnsBackends, RealKubeAPI, RealTraefik, require_real  # noqa: E402

NS, ROUTE, HOST = "default", "shop", "shop.example.com"
V1, V2 = "shop-v1", "shop-v2"
PORTS = {V1: 8081, V2: 8082}     # inside the demo's own netns; nothing else listens there
N = 200                          # requests per measured split
THROTTLE = "100ms"               # Traefik's providersThrottleDuration (docs/usage.md)
KEY = "canary/%s/%s/" % (NS, ROUTE)

ROUTE_DOC = """match: Host(`%s`) && PathPrefix(`/`)
entryPoints: [web]
services:
  - name: shop-v1
    port: 80
  - name: shop-v2
    port: 80
""" % HOST


def say(*a):
    print(*a, flush=True)


def step(text):
    say("\n== " + text)


def main():
    require_real("kube-apiserver", "traefik")
    # SIGTERM/SIGHUP end the demo like Ctrl-C does: through the cleanup below.
    def interrupt(signum, frame):
        raise KeyboardInterrupt
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)
    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="canary-demo-"))

        def start(what, make):
            say("starting %s ..." % what)
            obj = make()
            stack.callback(obj.stop)
            return obj

        etcd = start("etcd", lambda: Etcd(tmp))
        kube = start("kube-apiserver (its own etcd, Traefik CRDs, deploy/rbac.yaml)",
                     lambda: RealKubeAPI(tmp))
        hosts = start("backends shop-v1, shop-v2 in a network namespace",
                      lambda: NetnsBackends(tmp, PORTS))
        for name, port in PORTS.items():
            kube.backend_service(NS, name, hosts.address, port)
        traefik = start("traefik (kubernetesCRD provider)",
                        lambda: RealTraefik(tmp, kube, throttle=THROTTLE))
        bridge = start("canary-bridge", lambda: Bridge(tmp, bridge_config(
            etcd=etcd, kube=kube, log={"level": "info"})))
        bridge.wait_log(r"ready: ", timeout=60)
        say("etcd %s, kube-apiserver %s, traefik %s, backends %s:%s"
            % (etcd.url, kube.url, traefik.url, hosts.address,
               "/".join(str(p) for p in PORTS.values())))

        def etcdctl_put(what, value):
            say("$ etcdctl put %s%s '%s'" % (KEY, what, value.strip().replace("\n", "\n  ")))
            etcd.etcdctl("put", KEY + what, value)

        def traefik_weights():
            out = []
            for svc in traefik.api("/api/http/services"):
                w, name = svc.get("weighted"), svc["name"].split("@")[0]
                if w and svc.get("provider") == "kubernetescrd" and \
                        name.startswith("%s-%s-" % (NS, ROUTE)):
                    out.append({c["name"].split("@")[0]: c.get("weight")
                                for c in w.get("services", [])})
            return out

        def wait_traefik(v1, v2):
            want = {"%s-%s-80" % (NS, V1): v1, "%s-%s-80" % (NS, V2): v2}
            try:
                wait_until(lambda: want in traefik_weights(), 30,
                           what="Traefik's API showing weights %r" % want)
            except AssertionError as e:
                raise SystemExit("demo: %s (have %r)\n--- bridge log ---\n%s" % (
                    e, traefik_weights(), bridge.log_tail(15)))
            say("Traefik's API shows %s=%d, %s=%d" % (V1, v1, V2, v2))

        def measure():
            counts = Counter()
            conn = http.client.HTTPConnection("127.0.0.1", traefik.port, timeout=10)
            try:
                for i in range(N):
                    conn.request("GET", "/r%d" % i, headers={"Host": HOST})
                    r = conn.getresponse()
                    body = r.read()
                    if r.status != 200:
                        raise SystemExit("demo: request %d: HTTP %d %r" % (i, r.status, body))
                    counts[json.loads(body)["name"]] += 1
            finally:
                conn.close()
            say("%d requests to http://%s/ via Traefik -> %s: %-4d %s: %d"
                % (N, HOST, V1, counts[V1], V2, counts[V2]))
            return counts

        step("the route, owned by the bridge")
        etcdctl_put("route", ROUTE_DOC)
        for v1, v2 in ((90, 10), (50, 50), (0, 100)):
            step("weights %d/%d" % (v1, v2))
            etcdctl_put("weights", "shop-v1=%d, shop-v2=%d" % (v1, v2))
            wait_traefik(v1, v2)
            last = measure()

        step("a typo in the weights is refused; traffic keeps its last split")
        since = bridge.log_size()
        etcdctl_put("weights", "shop-v1=fifty")
        m = bridge.wait_log(r"[^\n]*%sweights[^\n]*" % KEY, timeout=30, since=since)
        say("bridge log: " + m.group(0).strip())
        wait_traefik(0, 100)
        if measure() != last:
            raise SystemExit("demo: the split changed after the refused put")

        step("stopping everything")
    say("done: all processes stopped, temp dir and network namespace removed")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("\ndemo: interrupted; everything it started is stopped", file=sys.stderr)
        sys.exit(130)
