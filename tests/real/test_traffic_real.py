"""Traffic through real Traefik: HTTP requests sent to Traefik v3's
entry point land on the backend the bridge's weights and rules choose.

One real kube-apiserver (its own etcd, Traefik CRDs, deploy/rbac.yaml), one real Traefik
(kubernetesCRD provider), one etcd and one bridge serve the whole class; each test uses a
route (IngressRoute, Host) of its own.  The backends are tests/lib/backend.py (each
answers with its name and echoes the request headers; no cookies) running as the test's
own hosts in a network namespace on a private /30 (real.NetnsBackends): the real
apiserver refuses loopback addresses in EndpointSlices.  The test creates core Services
shop-v1 and shop-v2 and EndpointSlices pointing them at those backends.

Every weight change is awaited on a condition -- Traefik's own API showing the new
weights -- and only then are requests measured.

Splits are checked against binomial bounds at 6 standard deviations: N requests, each
sent to the canary with probability p, give a canary count with mean N*p and standard
deviation sqrt(N*p*(1-p)).  With N = 400:
    p = 0.10: mean  40, sd sqrt(400*0.1*0.9) =  6, bounds [  4,  76]
    p = 0.50: mean 200, sd sqrt(400*0.5*0.5) = 10, bounds [140, 260]
    p = 0.90: mean 360, sd  6,                     bounds [324, 396]
    p = 0 or 1: every request to the one backend (sd 0).
A right split falls outside with probability P(|Z| > 6) ~ 2e-9 per case, so it never
flakes; a wrong one (90/10 swapped gives a canary mean of 360, i.e. 47 sd above the 90/10
bound, and 90/10 given for 50/50 is 10 sd above that bound) fails with overwhelming
probability.  (Traefik's weighted round robin is in fact deterministic, earliest deadline
first, so the counts come out at N*p give or take one; the bounds would hold for a
random balancer too.)
"""
import http.client
import json
import math
import os
import sys
import tempfile
import unittest
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))
from cbtest import Bridge, Etcd, bridge_config, wait_until, mw_name  # noqa: E402
from real import NetnsBackends, RealKubeAPI, RealTraefik, require_real  # noqa: E402

NS = "default"
G = "traefik.io"
V1, V2 = "shop-v1", "shop-v2"
PORTS = {V1: 8081, V2: 8082}          # inside the private netns; nothing else listens there
N = 400                               # requests per measured split
SIGMAS = 6

# Traefik applies a provider's configuration at once, then ignores the provider's next
# configurations for providersThrottleDuration (default 2 s) and applies only the latest
# one after that.  These tests change the configuration dozens of times in a row (and the
# bridge writes a Middleware, then the IngressRoute naming it: two configurations), so at
# the default every change would wait up to 2 s: the suite would take minutes longer and
# measure nothing more.  100 ms keeps it short; docs/usage.md tells operators why to lower
# it too, and bench/ measures both.
THROTTLE = "100ms"


def route_doc(name, extra=""):
    return ("match: Host(`%s.test`)\nentryPoints: [web]\nservices:\n"
            "  - {name: shop-v1, port: 80}\n  - {name: shop-v2, port: 80}\n%s") % (name, extra)


def bounds(n, p):
    """(low, high) canary counts allowed for n requests at canary share p (6 sd)."""
    sd = math.sqrt(n * p * (1 - p))
    return n * p - SIGMAS * sd, n * p + SIGMAS * sd


class TrafficThroughTraefik(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        require_real("kube-apiserver", "traefik")
        tmp = tempfile.TemporaryDirectory(prefix="cb-real-traffic-")
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
        cls.bridge = Bridge(cls.tmp, bridge_config(etcd=cls.etcd, kube=cls.kube))
        cls.addClassCleanup(cls.bridge.stop)
        cls.bridge.wait_log(r"ready: ", timeout=60)

    # ---- helpers
    def put(self, route, what, value):
        self.etcd.etcdctl("put", "canary/%s/%s/%s" % (NS, route, what), value)

    def send(self, route, n=1, headers=None):
        """n GETs for Host <route>.test to Traefik's entry point on one kept-alive
        connection -> [(backend name, response headers, echoed request headers)]."""
        out = []
        conn = http.client.HTTPConnection("127.0.0.1", self.traefik.port, timeout=10)
        try:
            for i in range(n):
                conn.request("GET", "/r%d" % i, headers=dict({"Host": route + ".test"},
                                                              **(headers or {})))
                r = conn.getresponse()
                body = r.read()
                self.assertEqual(r.status, 200, "Host %s.test: %d %r" % (route, r.status, body))
                doc = json.loads(body)
                out.append((doc["name"], r.headers, doc["headers"]))
        finally:
            conn.close()
        return out

    def count(self, route, n=N, headers=None):
        return Counter(name for name, _, _ in self.send(route, n, headers))

    def assert_split(self, counts, canary_share, what):
        n = sum(counts.values())
        lo, hi = bounds(n, canary_share)
        self.assertTrue(lo <= counts[V2] <= hi and counts[V1] + counts[V2] == n,
                        "%s: %r, want %s in [%.0f, %.0f] of %d (share %.2f +- %d sd)"
                        % (what, dict(counts), V2, lo, hi, n, canary_share, SIGMAS))

    def traefik_weights(self, ir):
        """[{service: weight}] of Traefik's weighted services built for IngressRoute or
        TraefikService `ir` (names default-<ir>-<hash> / default-<ir>)."""
        out = []
        for svc in self.traefik.api("/api/http/services"):
            w = svc.get("weighted")
            name = svc["name"].split("@")[0]
            if w and svc.get("provider") == "kubernetescrd" and \
                    (name == "%s-%s" % (NS, ir) or name.startswith("%s-%s-" % (NS, ir))):
                out.append({c["name"].split("@")[0]: c.get("weight")
                            for c in w.get("services", [])})
        return out

    def wait_traefik(self, ir, v1, v2, timeout=30):
        want = {"%s-%s-80" % (NS, V1): v1, "%s-%s-80" % (NS, V2): v2}
        try:
            wait_until(lambda: want in self.traefik_weights(ir), timeout,
                       what="Traefik's API showing %s weights %r" % (ir, want))
        except AssertionError as e:
            raise AssertionError("%s (have %r)\n--- bridge log ---\n%s\n--- traefik ---\n%s"
                                 % (e, self.traefik_weights(ir), self.bridge.log_tail(15),
                                    self.traefik.log_tail(15))) from None

    def shift(self, route, v1, v2):
        """etcdctl put of new weights; wait until Traefik serves them."""
        self.put(route, "weights", "shop-v1=%d, shop-v2=%d" % (v1, v2))
        self.wait_traefik(route, v1, v2)

    # ---- tests
    def test_weights_give_binomial_splits(self):
        self.put("split", "route", route_doc("split"))
        for v1, v2 in ((90, 10), (50, 50), (0, 100)):
            with self.subTest(weights=(v1, v2)):
                self.shift("split", v1, v2)
                counts = self.count("split")
                self.assert_split(counts, v2 / (v1 + v2), "weights %d/%d" % (v1, v2))
                if v1 == 0:
                    self.assertEqual(counts, Counter({V2: N}))

    def test_etcdctl_put_moves_the_following_requests(self):
        self.put("move", "route", route_doc("move"))
        self.shift("move", 100, 0)
        self.assertEqual(self.count("move", 100), Counter({V1: 100}))
        self.shift("move", 10, 90)
        self.assert_split(self.count("move"), 0.9, "after the put of 10/90")
        self.shift("move", 100, 0)
        self.assertEqual(self.count("move", 100), Counter({V1: 100}))

    def test_ramp_plan_moves_the_share_of_v2_from_0_to_100(self):
        """A 2-step ramp plan (docs/usage.md section 14) through real Traefik: first every
        request to v1, then, the plan's timer moving the route on, every one to v2. The
        pause key holds step 1 while it is measured, so no hold races the requests."""
        self.put("ramp", "route", route_doc("ramp"))
        self.put("ramp", "pause", "measuring step 1")
        self.put("ramp", "plan", "shop-v1=100 shop-v2=0 1s; shop-v1=0 shop-v2=100")
        self.wait_traefik("ramp", 100, 0)
        self.assertEqual(self.count("ramp", 100), Counter({V1: 100}))
        self.etcd.etcdctl("del", "canary/%s/ramp/pause" % NS)
        self.wait_traefik("ramp", 0, 100)
        self.assertEqual(self.count("ramp", 100), Counter({V2: 100}))

    RULES = """
- name: beta
  header: X-Canary
  value: always
  service: shop-v2
  setRequestHeaders: {X-Canary-Route: beta}
  setResponseHeaders: {X-Served-By: canary}
- name: staff
  header: X-Employee
  regex: "^[0-9]{4,}$"
  service: shop-v2
- name: optin
  cookie: canary
  value: "true"
  service: shop-v2
- name: stable
  header: X-Canary
  regex: "^(always|never)$"
  service: shop-v1
"""

    def rules_route(self):
        """Route `rules` at 50/50 with the four rules above, live in Traefik."""
        if getattr(TrafficThroughTraefik, "_rules_live", False):
            return
        self.put("rules", "route", route_doc("rules"))
        self.put("rules", "headers", self.RULES)
        self.shift("rules", 50, 50)

        def routers_enabled():
            rs = [r for r in self.traefik.routers() if r.get("provider") == "kubernetescrd"
                  and r["name"].startswith("%s-rules-" % NS)]
            mws = {m["name"] for m in self.traefik.api("/api/http/middlewares")}
            # Traefik's ID of the rule's Middleware: "<namespace>-<name>", every run of
            # characters other than letters and digits turned into one "-".
            return len(rs) == 5 and all(r.get("status") == "enabled" for r in rs) and \
                "%s-%s@kubernetescrd" % (NS, mw_name("rules", "beta")) in mws
        try:
            wait_until(routers_enabled, 30, what="Traefik routing the 4 rules of route rules")
        except AssertionError as e:
            raise AssertionError("%s\nrouters %s\nmiddlewares %s\n--- bridge ---\n%s" % (
                e, json.dumps(self.traefik.routers()),
                json.dumps(self.traefik.api("/api/http/middlewares")),
                self.bridge.log_tail(15))) from None
        TrafficThroughTraefik._rules_live = True

    def test_header_and_cookie_rules_send_matches_to_the_canary(self):
        self.rules_route()
        # At 50/50 a rule that did not match would send about half of these to shop-v1.
        matching = {"exact header": {"X-Canary": "always"},
                    "regex header": {"X-Employee": "12345"},
                    "cookie alone": {"Cookie": "canary=true"},
                    "cookie among others": {"Cookie": "a=1; canary=true; b=2"}}
        for what, headers in matching.items():
            with self.subTest(what):
                self.assertEqual(self.count("rules", 100, headers), Counter({V2: 100}),
                                 "%s %r" % (what, headers))
        # The rest goes by weight, 50/50.
        rest = {"no header": {}, "other value": {"X-Canary": "sometimes"},
                "regex not matched": {"X-Employee": "123"},
                "regex not matched (letters)": {"X-Employee": "12a45"},
                "cookie value differs": {"Cookie": "canary=false"},
                "cookie name differs": {"Cookie": "notcanary=true"},
                "cookie value longer": {"Cookie": "canary=truex"}}
        for what, headers in rest.items():
            with self.subTest(what):
                self.assert_split(self.count("rules", N, headers), 0.5, "%s %r" % (what,
                                                                                 headers))

    def test_earlier_rule_beats_later_rule(self):
        self.rules_route()
        # X-Canary: always matches rule 0 (beta -> shop-v2) and rule 3 (stable -> shop-v1).
        self.assertEqual(self.count("rules", 100, {"X-Canary": "always"}), Counter({V2: 100}))
        # The later rule does route on its own: `never` matches only rule 3.
        self.assertEqual(self.count("rules", 100, {"X-Canary": "never"}), Counter({V1: 100}))

    def test_rule_headers_reach_backend_and_client(self):
        self.rules_route()
        for name, resp, echoed in self.send("rules", 20, {"X-Canary": "always"}):
            self.assertEqual(name, V2)
            self.assertEqual(echoed.get("X-Canary-Route"), "beta")
            self.assertEqual(resp.get("X-Served-By"), "canary")
        # Requests the rule does not match get neither header (the other rules and the
        # weighted route have no Middleware).
        for headers in ({}, {"X-Canary": "never"}, {"X-Employee": "12345"}):
            for name, resp, echoed in self.send("rules", 20, headers):
                self.assertNotIn("X-Canary-Route", echoed, headers)
                self.assertIsNone(resp.get("X-Served-By"), headers)

    # Found by this suite: Traefik's kubernetesCRD provider turns a Middleware's
    # namespace/name into its ID with provider.Normalize, which replaces every run of
    # characters other than letters and digits by one "-".  Names `col.x-y` and `col-x.y`
    # became one middleware "default-col-x-y", and route col's requests got route col-x's
    # headers.  Middleware names now carry a hash of the exact (route, rule) pair.
    def test_middlewares_of_two_routes_stay_apart_in_traefik(self):
        # Route col rule x-y and route col-x rule y: without the hash both Middlewares
        # fold to one Traefik ID.  Each route's requests must get its own header.
        for route, rule in (("col", "x-y"), ("col-x", "y")):
            self.put(route, "route", route_doc(route))
            self.put(route, "headers", "\n- {name: %s, header: X-Col, value: 'on', "
                     "service: shop-v2, setResponseHeaders: {X-Rule-Of: %s}}\n" % (rule, route))
            self.shift(route, 1, 1)
        for route in ("col", "col-x"):
            wait_until(lambda: any(r.get("middlewares") for r in self.traefik.routers()
                                   if r["name"].startswith("%s-%s-" % (NS, route))), 30,
                       what="route %s's rule router with its Middleware" % route)
        # Traefik may route a rule before it has loaded the Middleware (and "col-" also
        # prefixes col-x's routers), so wait for each route's own header, then check it
        # holds for every request.
        for route in ("col", "col-x"):
            def rule_of(route=route):
                return {resp.get("X-Rule-Of")
                        for _, resp, _ in self.send(route, 10, {"X-Col": "on"})}
            wait_until(lambda: rule_of() == {route}, 30,
                       what="route %s's requests with its own rule's header" % route)
            self.assertEqual(rule_of(), {route}, "route %s" % route)

    def test_sticky_route_keeps_a_client_on_one_version(self):
        self.put("sticky", "route", route_doc("sticky", "sticky: {cookie: cb_sticky}\n"))
        self.shift("sticky", 50, 50)
        first = Counter()
        for client in range(20):
            [(version, resp, _)] = self.send("sticky", 1)
            cookies = [c.split(";")[0] for c in resp.get_all("Set-Cookie") or []
                       if c.startswith("cb_sticky=")]
            self.assertEqual(len(cookies), 1, "client %d: Set-Cookie %r" % (
                client, resp.get_all("Set-Cookie")))
            first[version] += 1
            seen = Counter(n for n, _, _ in self.send("sticky", 30, {"Cookie": cookies[0]}))
            self.assertEqual(seen, Counter({version: 30}),
                             "client %d with %s first served by %s" % (client, cookies[0],
                                                                        version))
        # Without a cookie the weights spread new clients over both versions (at 50/50 a
        # random balancer would give one version all 20 first requests with p = 2^-19).
        self.assertEqual(set(first), {V1, V2}, first)

    def test_patched_mode_shifts_a_helm_ingressroute(self):
        helm = {"apiVersion": "traefik.io/v1alpha1", "kind": "IngressRoute",
                "metadata": {"name": "legacy", "namespace": NS,
                             "labels": {"app": "legacy", "helm.sh/chart": "legacy-1.2.3",
                                        "app.kubernetes.io/managed-by": "Helm"},
                             "annotations": {"meta.helm.sh/release-name": "legacy"}},
                "spec": {"entryPoints": ["web"],
                         "routes": [{"kind": "Rule", "match": "Host(`legacy.test`)",
                                     "services": [{"name": V1, "port": 80, "weight": 100},
                                                  {"name": V2, "port": 80, "weight": 0}]}]}}
        self.kube.create(G, NS, "ingressroutes", helm, fieldManager="helm")
        self.wait_traefik("legacy", 100, 0)
        self.assertEqual(self.count("legacy", 100), Counter({V1: 100}))
        self.shift("legacy", 10, 90)
        self.assert_split(self.count("legacy"), 0.9, "patched 10/90")
        meta = self.kube.get(G, NS, "ingressroutes", "legacy")["metadata"]
        self.assertEqual(meta["labels"], helm["metadata"]["labels"])
        self.assertEqual(meta["annotations"].get("meta.helm.sh/release-name"), "legacy")


if __name__ == "__main__":
    unittest.main()
