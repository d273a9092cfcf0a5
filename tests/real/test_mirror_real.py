"""Traffic mirroring through real Traefik: with `mirror: {service, percent}` in a route
document, the mirror backend gets about that share of the route's requests, and clients
only ever get the answers of the route's own services.

The setup is test_traffic_real.py's: one real kube-apiserver (Traefik CRDs,
deploy/rbac.yaml), one real Traefik v3 (kubernetesCRD provider), one etcd and one bridge
for the class; the backends shop-v1 and shop-v2 (tests/lib/backend.py) run as the test's
own hosts in a network namespace (real.NetnsBackends), behind core Services and
EndpointSlices.  Every change is awaited on a condition -- Traefik's API showing the
mirroring -- before requests are sent.

What the mirror saw is asked from the backend itself (backend.py's /_seen counts the
requests whose path starts with a prefix the test makes unique).  Traefik sends a mirror
its copy after the client's answer, from a goroutine, so the count is awaited up to its
lower bound, never slept for, and read again at the end of the test (after Traefik has
applied a later configuration) against the upper bound.

Bounds: N requests each copied with probability p give a count with mean N*p and standard
deviation sqrt(N*p*(1-p)); 6 sd around it, as in test_traffic_real.py.  N = 200, p = 0.5:
mean 100, sd 7.1, bounds [58, 142].  (Traefik in fact copies exactly when
copied*100 < seen*percent, so the count comes out at 100 give or take one; the bounds hold
for a random mirror too, and an unmirrored route, 0, or a mirror of every request, 200,
fall far outside.)  No timing is asserted anywhere.
"""
import http.client
import json
import math
import os
import secrets
import sys
import tempfile
import unittest
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))
from cbtest import Bridge, Etcd, bridge_config, mirror_name, wait_until  # noqa: E402
from real import NetnsBackends, RealKubeAPI, RealTraefik, require_real  # noqa: E402

NS = "default"
V1, V2 = "shop-v1", "shop-v2"
PORTS = {V1: 8081, V2: 8082}
N = 200
SIGMAS = 6
THROTTLE = "100ms"   # see test_traffic_real.py


def bare(name):
    """A Traefik service name without its @provider."""
    return (name or "").split("@")[0]


def bounds(n, p):
    sd = math.sqrt(n * p * (1 - p))
    return n * p - SIGMAS * sd, n * p + SIGMAS * sd


class MirroringThroughTraefik(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        require_real("kube-apiserver", "traefik")
        tmp = tempfile.TemporaryDirectory(prefix="cb-real-mirror-")
        cls.addClassCleanup(tmp.cleanup)
        cls.tmp = tmp.name
        cls.kube = RealKubeAPI(cls.tmp)
        cls.addClassCleanup(cls.kube.stop)
        cls.hosts = NetnsBackends(cls.tmp, PORTS)
        cls.addClassCleanup(cls.hosts.stop)
        for name, port in PORTS.items():
            cls.kube.backend_service(NS, name, cls.hosts.address, port)
        cls.traefik = RealTraefik(cls.tmp, cls.kube, throttle=THROTTLE)
        cls.addClassCleanup(cls.traefik.stop)
        cls.etcd = Etcd(cls.tmp)
        cls.addClassCleanup(cls.etcd.stop)
        cls.bridge = Bridge(cls.tmp, bridge_config(etcd=cls.etcd, kube=cls.kube,
                                                   reconcile={"policy": "sync"}))
        cls.addClassCleanup(cls.bridge.stop)
        cls.bridge.wait_log(r"ready: ", timeout=60)

    # ---- helpers
    def put(self, route, what, value):
        self.etcd.etcdctl("put", "canary/%s/%s/%s" % (NS, route, what), value)

    def send(self, route, prefix, n):
        """n GETs of <prefix>/r<i> for Host <route>.test through Traefik, on one kept-alive
        connection and without cookies -> [(backend name, response headers)]."""
        out = []
        conn = http.client.HTTPConnection("127.0.0.1", self.traefik.port, timeout=10)
        try:
            for i in range(n):
                conn.request("GET", "%s/r%d" % (prefix, i), headers={"Host": route + ".test"})
                r = conn.getresponse()
                body = r.read()
                self.assertEqual(r.status, 200, "Host %s.test: %d %r" % (route, r.status, body))
                out.append((json.loads(body)["name"], r.headers))
        finally:
            conn.close()
        return out

    def traefik_service(self, name):
        """Traefik's view of the kubernetescrd service <namespace>-<name>, or None."""
        for svc in self.traefik.api("/api/http/services"):
            if svc["name"] == "%s-%s@kubernetescrd" % (NS, name):
                return svc
        return None

    def weights(self, name):
        """[(service, weight)] of Traefik's weighted service <namespace>-<name>."""
        svc = self.traefik_service(name) or {}
        return [(bare(s["name"]), s.get("weight"))
                for s in (svc.get("weighted") or {}).get("services") or []]

    def wait_traefik(self, pred, what, timeout=30):
        try:
            wait_until(pred, timeout, what=what)
        except AssertionError as e:
            raise AssertionError("%s\n--- bridge log ---\n%s\n--- traefik ---\n%s" % (
                e, self.bridge.log_tail(15), self.traefik.log_tail(15))) from None

    def wait_mirroring(self, route, main, percent):
        """Traefik serves route's mirroring: main service `main` (a Traefik service name
        without the provider) and one mirror, shop-v2:80, at `percent`."""
        def live():
            svc = self.traefik_service(mirror_name(route))
            m = svc and svc.get("mirroring")
            return bool(m) and svc.get("status") == "enabled" and \
                bare(m.get("service")) == main and \
                [(bare(x["name"]), x.get("percent", 0)) for x in m.get("mirrors") or []] == \
                [("%s-%s-80" % (NS, V2), percent)]

        def routed():
            return any(bare(r.get("service")) == "%s-%s" % (NS, mirror_name(route)) and
                       r.get("status") == "enabled" for r in self.traefik.routers()
                       if r.get("provider") == "kubernetescrd")
        self.wait_traefik(lambda: live() and routed(),
                          "Traefik routing %s through its mirroring (%s, %d%%)" % (route, main,
                                                                                  percent))

    def wait_seen(self, prefix, low):
        wait_until(lambda: self.hosts.seen(V2, prefix) >= low, 30,
                   what="the mirror seeing at least %d requests of %s" % (low, prefix))

    def assert_mirrored_share(self, count, p, what):
        lo, hi = bounds(N, p)
        self.assertTrue(lo <= count <= hi, "%s: the mirror saw %d of %d requests, want [%.0f, "
                        "%.0f] (share %.2f +- %d sd)" % (what, count, N, lo, hi, p, SIGMAS))

    # ---- tests
    def test_one_service_mirrored_at_50_percent(self):
        route, prefix = "mone", "/" + secrets.token_hex(4)
        self.put(route, "route", "match: Host(`mone.test`)\nentryPoints: [web]\n"
                 "services: [{name: shop-v1, port: 80}]\n"
                 "mirror: {service: shop-v2, port: 80, percent: 50}\n")
        self.wait_mirroring(route, "%s-%s-80" % (NS, V1), 50)
        got = Counter(name for name, _ in self.send(route, prefix, N))
        # Clients only ever get the main service's answers.
        self.assertEqual(got, Counter({V1: N}))
        lo, _ = bounds(N, 0.5)
        self.wait_seen(prefix, math.ceil(lo))

        # Mirror off: the route goes straight to shop-v1 again and the mirroring goes.
        self.put(route, "route", "match: Host(`mone.test`)\nentryPoints: [web]\n"
                 "services: [{name: shop-v1, port: 80}]\n")
        self.wait_traefik(lambda: self.traefik_service(mirror_name(route)) is None,
                          "Traefik without the mirroring of %s" % route)
        self.assertEqual(Counter(name for name, _ in self.send(route, prefix + "-after", 20)),
                         Counter({V1: 20}))
        # Every copy of the first batch has long arrived: Traefik applied a configuration since.
        self.assert_mirrored_share(self.hosts.seen(V2, prefix + "/"), 0.5, "mirror at 50%")

    def test_mirror_with_weights_and_sticky(self):
        """Weights and sticky go through the weighted TraefikService, which the mirroring
        names: the canary shop-v2 is shadowed at 50% before it takes any traffic, then
        takes half of it while still being mirrored."""
        route = "msplit"
        doc = ("match: Host(`msplit.test`)\nentryPoints: [web]\n"
               "services: [{name: shop-v1, port: 80}, {name: shop-v2, port: 80}]\n"
               "sticky: {cookie: cb_mirror}\n"
               "mirror: {service: shop-v2, percent: 50}\n")
        self.put(route, "route", doc)
        self.put(route, "weights", "shop-v1=100, shop-v2=0")
        self.wait_mirroring(route, "%s-%s" % (NS, route), 50)
        self.wait_traefik(lambda: self.weights(route) == [("%s-%s-80" % (NS, V1), 100),
                                                          ("%s-%s-80" % (NS, V2), 0)],
                          "Traefik's weighted service of %s at 100/0" % route)

        # Shadowing only: every answer from shop-v1, each with the sticky cookie.
        shadow = "/" + secrets.token_hex(4)
        answers = self.send(route, shadow, N)
        self.assertEqual(Counter(name for name, _ in answers), Counter({V1: N}))
        for _, headers in answers:
            self.assertTrue(any(c.startswith("cb_mirror=") for c in
                                headers.get_all("Set-Cookie") or []), headers)
        lo, _ = bounds(N, 0.5)
        self.wait_seen(shadow, math.ceil(lo))

        # 50/50 and still mirrored: shop-v2 gets its half of the answers, and copies
        # of about half of all requests on top.
        self.put(route, "weights", "shop-v1=50, shop-v2=50")
        self.wait_traefik(lambda: [w for _, w in self.weights(route)] == [50, 50],
                          "Traefik's weighted service of %s at 50/50" % route)
        split = "/" + secrets.token_hex(4)
        served = Counter(name for name, _ in self.send(route, split, N))
        self.assertEqual(set(served), {V1, V2}, served)
        slo, shi = bounds(N, 0.5)
        self.assertTrue(slo <= served[V2] <= shi, served)
        self.wait_seen(split, served[V2] + math.ceil(lo))

        # A later configuration: every copy of both batches has arrived by now.
        self.put(route, "route", doc.replace("percent: 50", "percent: 0"))
        self.wait_mirroring(route, "%s-%s" % (NS, route), 0)
        self.assert_mirrored_share(self.hosts.seen(V2, shadow + "/"), 0.5, "shadowing at 50%")
        self.assert_mirrored_share(self.hosts.seen(V2, split + "/") - served[V2], 0.5,
                                   "mirror at 50% with a 50/50 split")


if __name__ == "__main__":
    unittest.main()
