"""Issue 11, defects 1 (second half), 2 and 15, end to end with both sources (a real
etcd and the Consul KV test server):

- the deletion guard: one source read that would delete most (or all) of the routes that
  own objects under policy sync deletes nothing, says so (log, metric, Event, /readyz)
  and waits for P_confirm-delete or for the keys to come back;
- partial weights: with a `weights` key every service needs an explicit weight, and
  deleting `weights` (or `route`) never moves traffic;
- Middleware names are unique per route.

Nothing sleeps where a condition can be awaited; nothing asserts on latency."""
import os
import re
import sys
import tempfile
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cbtest import Bridge, KubeAPI, bridge_config, free_port, wait_until, mw_name  # noqa: E402
import test_sources as ts  # noqa: E402

G = "traefik.io"
ROUTE = """match: Host(`shop.example.com`)
services:
  - name: shop-v1
    port: 80
    weight: 80
  - name: shop-v2
    port: 80
    weight: 20
"""
ROUTE_NO_WEIGHTS = """match: Host(`shop.example.com`)
services:
  - name: shop-v1
    port: 80
  - name: shop-v2
    port: 80
"""
HEADERS = """
- name: beta
  header: X-Canary
  value: always
  service: shop-v2
  setRequestHeaders: {X-Canary-Route: beta}
"""
ROUTES = ("alpha", "bravo", "charlie")


def http_get(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric(text, name):
    m = re.search(r"^%s(?:\{\})?\s+(\S+)$" % re.escape(name), text, re.M)
    return float(m.group(1)) if m else None


class GuardSuite:
    """The scenarios; a subclass provides the source (the methods of test_sources)."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="cb-guard-")
        self.addCleanup(self.tmp.cleanup)
        self.kube = KubeAPI(self.tmp.name)
        self.addCleanup(self.kube.stop)
        self.start_source()
        self.port = free_port()

    def start_bridge(self, name="bridge", **overrides):
        cfg = ts.merged(bridge_config(kube=self.kube, metrics_port=self.port,
                                      **self.source_config()), overrides)
        self.bridge = Bridge(self.tmp.name, cfg, name=name)
        self.addCleanup(self.bridge.stop)
        self.bridge.wait_log(r"ready: ", timeout=20)
        return self.bridge

    def ir(self, name="shop", ns="default"):
        return self.kube.get(G, ns, "ingressroutes", name)

    def weights(self, name="shop"):
        return ts.weights_of(self.ir(name))

    def wait_weights(self, want, name="shop", timeout=10):
        return ts.wait_for(lambda: self.weights(name) == want, "%s weights %r" % (name, want),
                           lambda: self.weights(name), timeout)

    def events(self, reason):
        r = self.kube.request("GET", "/api/v1/namespaces/default/events")
        items = r[2]["items"] if isinstance(r, tuple) else r["items"]
        return [e for e in items if e["reason"] == reason]

    def deletes(self, since):
        return [r for r in self.kube.requests(since=since) if r["method"] == "DELETE"
                and "/apis/traefik." in r["path"]]

    def three_routes(self):
        for name in ROUTES:
            self.put("canary/default/%s/route" % name, ROUTE.replace("shop", name))
        self.start_bridge(reconcile={"policy": "sync"})
        for name in ROUTES:
            self.wait_weights({name + "-v1": 80, name + "-v2": 20}, name)
        wait_until(lambda: http_get(self.port, "/readyz")[0] == 200, what="ready")

    def wait_held(self, since=0):
        token = self.bridge.wait_log(r"deletion guard: .* put canary/_confirm-delete = "
                                     r"([0-9a-f]{8})", since=since).group(1)
        # Every held route's pass is done: each posts one DeletionHeld Event.
        wait_until(lambda: {e["involvedObject"]["name"] for e in self.events("DeletionHeld")}
                   >= set(ROUTES), what="a DeletionHeld Event on every route")
        return token

    # ---- defect 1: the deletion guard
    def test_deleting_every_route_at_once_is_held_until_confirmed(self):
        self.three_routes()
        mark = ts.last_seq(self.kube)
        since = self.bridge.log_size()
        self.delete_folder("canary/")
        token = self.wait_held(since)
        self.bridge.wait_log(r"lack 3 of the 3 routes that own objects", since=since)
        status, body = http_get(self.port, "/readyz")
        self.assertEqual(status, 503)
        self.assertIn("deletion held", body)
        self.assertIn("canary/_confirm-delete = " + token, body)
        text = http_get(self.port, "/metrics")[1]
        self.assertEqual(metric(text, "canary_bridge_deletion_held"), 1)
        self.assertEqual(metric(text, "canary_bridge_deletion_held_routes"), 3)
        self.assertEqual(self.deletes(mark), [])
        for name in ROUTES:
            self.assertIsNotNone(self.ir(name))
        # A wrong token confirms nothing.
        since = self.bridge.log_size()
        self.put("canary/_confirm-delete", "00000000" if token != "00000000" else "00000001")
        self.put("canary/default/unrelated/weights", "x=1")       # barrier: a later read
        self.bridge.wait_log(r"unrelated", since=since)
        self.assertEqual(self.deletes(mark), [])
        self.put("canary/_confirm-delete", token + "\n")
        for name in ROUTES:
            wait_until(lambda: self.ir(name) is None, what="%s deleted after confirming" % name)
        wait_until(lambda: http_get(self.port, "/readyz")[0] == 200, what="ready again")
        self.assertEqual(metric(http_get(self.port, "/metrics")[1],
                                "canary_bridge_deletion_held"), 0)

    def test_hold_ends_when_the_keys_come_back(self):
        self.three_routes()
        mark = ts.last_seq(self.kube)
        self.delete_folder("canary/")
        self.wait_held()
        since = self.bridge.log_size()
        for name in ROUTES:
            self.put("canary/default/%s/route" % name, ROUTE.replace("shop", name))
        self.bridge.wait_log(r"deletion guard: hold ended", since=since)
        wait_until(lambda: http_get(self.port, "/readyz")[0] == 200, what="ready again")
        self.put("canary/default/alpha/weights", "alpha-v1=1, alpha-v2=2")   # barrier
        self.wait_weights({"alpha-v1": 1, "alpha-v2": 2}, "alpha")
        self.assertEqual(self.deletes(mark), [])

    def test_restart_into_an_empty_prefix_deletes_nothing(self):
        self.three_routes()
        self.assertEqual(self.bridge.stop(), 0)
        self.delete_folder("canary/")
        mark = ts.last_seq(self.kube)
        self.start_bridge(name="bridge2", reconcile={"policy": "sync"})
        self.wait_held()
        self.assertEqual(http_get(self.port, "/readyz")[0], 503)
        self.assertEqual(self.deletes(mark), [])
        for name in ROUTES:
            self.assertIsNotNone(self.ir(name))

    def test_one_shot_sync_into_an_empty_prefix_fails_and_deletes_nothing(self):
        self.three_routes()
        self.assertEqual(self.bridge.stop(), 0)
        self.delete_folder("canary/")
        mark = ts.last_seq(self.kube)
        cfg = ts.merged(bridge_config(kube=self.kube, **self.source_config()),
                        {"reconcile": {"policy": "sync"}})
        b = Bridge(self.tmp.name, cfg, name="oneshot", start=False)
        code, out, err = b.run_once(["sync"])
        self.assertEqual(code, 1, err)
        self.assertRegex(out + err, r"deletion guard: .* put canary/_confirm-delete = [0-9a-f]{8}")
        self.assertEqual(self.deletes(mark), [])
        for name in ROUTES:
            self.assertIsNotNone(self.ir(name))

    def test_deleting_one_route_of_three_is_not_held(self):
        self.three_routes()
        self.delete_folder("canary/default/alpha/")
        wait_until(lambda: self.ir("alpha") is None, what="alpha deleted")
        self.assertIsNotNone(self.ir("bravo"))
        self.assertEqual(http_get(self.port, "/readyz")[0], 200)

    # ---- defect 2: partial weights, and deleting weights never moves traffic
    def test_weights_key_must_cover_every_service(self):
        self.put("canary/default/shop/route", ROUTE_NO_WEIGHTS)
        self.put("canary/default/shop/weights", "shop-v1=95, shop-v2=5")
        self.start_bridge()
        self.wait_weights({"shop-v1": 95, "shop-v2": 5})
        since = self.bridge.log_size()
        self.put("canary/default/shop/weights", "shop-v2=10")
        self.bridge.wait_log(r"route default/shop: canary/default/shop/weights: .*no explicit "
                             r"weight for shop-v1", since=since)
        self.assertEqual(self.weights(), {"shop-v1": 95, "shop-v2": 5})   # last good stays

    def promotion_cleanup(self, policy):
        self.put("canary/default/shop/route", ROUTE_NO_WEIGHTS)
        self.put("canary/default/shop/weights", "shop-v1=95, shop-v2=5")
        self.start_bridge(reconcile={"policy": policy, "status": True})
        self.wait_weights({"shop-v1": 95, "shop-v2": 5})
        self.put("canary/default/shop/weights", "shop-v1=0, shop-v2=100")
        self.wait_weights({"shop-v1": 0, "shop-v2": 100})
        mark = ts.last_seq(self.kube)
        since = self.bridge.log_size()
        self.delete("canary/default/shop/weights")
        self.bridge.wait_log(r"route default/shop: weights key gone: keeping the weights in "
                             r"force shop-v1=0 shop-v2=100", since=since)
        st = wait_until(lambda: (lambda s: s if s and s.get("weights_held") else None)(
            ts.parse_status(self.get("canary/default/shop/status"))), what="status weights_held")
        self.assertEqual(st["state"], "applied")
        self.assertEqual(self.weights(), {"shop-v1": 0, "shop-v2": 100})
        # A restart keeps them too: "in force" is the live object.
        self.bridge.stop()
        self.start_bridge(name="bridge2", reconcile={"policy": policy})
        self.put("canary/default/cart/route", ROUTE.replace("shop", "cart"))     # barrier
        self.wait_weights({"cart-v1": 80, "cart-v2": 20}, "cart")
        self.assertEqual(self.weights(), {"shop-v1": 0, "shop-v2": 100})
        self.delete("canary/default/shop/route")
        return mark

    def assert_never_moved(self, mark, want):
        """Every write of shop since mark kept the weights want (the only PUT is the
        one that marks the weights as held, in the annotation)."""
        writes = ts.kube_writes(self.kube, since=mark, name="shop")
        self.assertTrue([w for w in writes if w["method"] == "PUT" and w["body"]["metadata"]
                         ["annotations"]["canary-bridge.io/weights-from"].startswith("held:")],
                        "the hold is recorded on the live object")
        for w in writes:
            if w["method"] in ("POST", "PUT"):
                self.assertEqual(ts.weights_of(w["body"]), want)
        return writes

    def test_promotion_cleanup_upsert_only(self):
        mark = self.promotion_cleanup("upsert-only")
        self.put("canary/default/cart/weights", "cart-v1=1, cart-v2=3")      # barrier
        self.wait_weights({"cart-v1": 1, "cart-v2": 3}, "cart")
        self.assertEqual(self.weights(), {"shop-v1": 0, "shop-v2": 100})
        writes = self.assert_never_moved(mark, {"shop-v1": 0, "shop-v2": 100})
        self.assertNotIn("DELETE", [w["method"] for w in writes])

    def test_promotion_cleanup_sync(self):
        mark = self.promotion_cleanup("sync")
        wait_until(lambda: self.ir() is None, what="shop deleted with its last key")
        # Until then, it only ever held 0/100.
        writes = self.assert_never_moved(mark, {"shop-v1": 0, "shop-v2": 100})
        self.assertEqual(writes[-1]["method"], "DELETE")

    def test_deleting_weights_of_a_sticky_route_keeps_them(self):
        # A sticky route keeps its weights in the TraefikService: that is where the
        # weights in force are read from.
        def ts_weights():
            t = self.kube.get(G, "default", "traefikservices", "shop")
            return t and {x["name"]: x["weight"] for x in t["spec"]["weighted"]["services"]}
        self.put("canary/default/shop/route", ROUTE_NO_WEIGHTS + "sticky: {cookie: cb}\n")
        self.put("canary/default/shop/weights", "shop-v1=0, shop-v2=100")
        self.start_bridge(reconcile={"policy": "sync"})
        wait_until(lambda: ts_weights() == {"shop-v1": 0, "shop-v2": 100}, what="0/100")
        since = self.bridge.log_size()
        self.delete("canary/default/shop/weights")
        self.bridge.wait_log(r"route default/shop: weights key gone: keeping the weights in "
                             r"force shop-v1=0 shop-v2=100", since=since)
        self.put("canary/default/cart/route", ROUTE.replace("shop", "cart"))     # barrier
        self.wait_weights({"cart-v1": 80, "cart-v2": 20}, "cart")
        self.assertEqual(ts_weights(), {"shop-v1": 0, "shop-v2": 100})

    def test_new_route_weights_after_a_deleted_weights_key_apply(self):
        self.put("canary/default/shop/route", ROUTE)
        self.put("canary/default/shop/weights", "shop-v1=10, shop-v2=90")
        self.start_bridge()
        self.wait_weights({"shop-v1": 10, "shop-v2": 90})
        since = self.bridge.log_size()
        self.delete("canary/default/shop/weights")
        self.bridge.wait_log(r"weights key gone: keeping", since=since)
        self.assertEqual(self.weights(), {"shop-v1": 10, "shop-v2": 90})
        # A new route document is a new value: its weights apply.
        self.put("canary/default/shop/route", ROUTE.replace("weight: 20", "weight: 30"))
        self.wait_weights({"shop-v1": 80, "shop-v2": 30})

    # ---- defect 15: one Middleware per route and rule
    def mw(self, name):
        return self.kube.get(G, "default", "middlewares", name)

    def test_routes_never_share_a_middleware(self):
        # Route api rule v2-beta and route api-v2 rule beta once both made api-v2-beta.
        self.put("canary/default/api/route", ROUTE.replace("shop", "api"))
        self.put("canary/default/api/headers", HEADERS.replace("shop", "api")
                 .replace("name: beta", "name: v2-beta").replace("Route: beta", "Route: api"))
        self.put("canary/default/api-v2/route", ROUTE.replace("shop", "api-v2"))
        self.put("canary/default/api-v2/headers", HEADERS.replace("shop", "api-v2")
                 .replace("Route: beta", "Route: api-v2"))
        self.start_bridge(reconcile={"policy": "sync"})
        a = wait_until(lambda: self.mw(mw_name("api", "v2-beta")), what="Middleware api.v2-beta")
        b = wait_until(lambda: self.mw(mw_name("api-v2", "beta")), what="Middleware api-v2.beta")
        self.assertEqual(a["spec"]["headers"]["customRequestHeaders"], {"X-Canary-Route": "api"})
        self.assertEqual(b["spec"]["headers"]["customRequestHeaders"],
                         {"X-Canary-Route": "api-v2"})
        self.assertEqual(a["metadata"]["annotations"]["canary-bridge.io/route"], "api")
        self.assertEqual(b["metadata"]["annotations"]["canary-bridge.io/route"], "api-v2")
        refs = [m["name"] for r in self.ir("api")["spec"]["routes"]
                for m in r.get("middlewares") or []]
        self.assertEqual(refs, [mw_name("api", "v2-beta")])
        # Renaming the rule of api-v2 under sync deletes only api-v2's Middleware.
        self.put("canary/default/api-v2/headers", HEADERS.replace("shop", "api-v2")
                 .replace("name: beta", "name: gamma").replace("Route: beta", "Route: api-v2"))
        wait_until(lambda: self.mw(mw_name("api-v2", "gamma")), what="Middleware api-v2.gamma")
        wait_until(lambda: self.mw(mw_name("api-v2", "beta")) is None, what="api-v2.beta deleted")
        self.assertEqual(self.mw(mw_name("api", "v2-beta"))["metadata"]["resourceVersion"],
                         a["metadata"]["resourceVersion"])

    def test_an_object_of_another_route_is_never_written(self):
        # A Middleware by the name shop's rule wants, but labelled for route other.
        self.kube.create(G, "default", "middlewares", {
            "apiVersion": "traefik.io/v1alpha1", "kind": "Middleware",
            "metadata": {"name": mw_name("shop", "beta"), "namespace": "default",
                         "labels": {"app.kubernetes.io/managed-by": "canary-bridge",
                                    "canary-bridge.io/route": "other"},
                         "annotations": {"canary-bridge.io/source-prefix": "canary/",
                                         "canary-bridge.io/route": "other"}},
            "spec": {"headers": {"customRequestHeaders": {"X-Other": "1"}}}})
        rv = self.mw(mw_name("shop", "beta"))["metadata"]["resourceVersion"]
        self.put("canary/default/shop/route", ROUTE)
        self.put("canary/default/shop/headers", HEADERS)
        mark = ts.last_seq(self.kube)
        self.start_bridge()      # upsert-only: sync would prune it as route other's leftover
        self.bridge.wait_log(r"route default/shop: Middleware default/%s belongs to "
                             r"route default/other .*refusing to overwrite it"
                             % re.escape(mw_name("shop", "beta")))
        self.assertEqual(self.mw(mw_name("shop", "beta"))["metadata"]["resourceVersion"], rv)
        self.assertEqual(ts.kube_writes(self.kube, since=mark, plural="middlewares"), [])


class EtcdGuard(GuardSuite, unittest.TestCase):
    start_source = ts.EtcdSource.start_source
    source_config = ts.EtcdSource.source_config
    put = ts.EtcdSource.put
    delete = ts.EtcdSource.delete
    delete_folder = ts.EtcdSource.delete_folder
    get = ts.EtcdSource.get


class ConsulGuard(GuardSuite, unittest.TestCase):
    start_source = ts.ConsulSource.start_source
    source_config = ts.ConsulSource.source_config
    put = ts.ConsulSource.put
    delete = ts.ConsulSource.delete
    delete_folder = ts.ConsulSource.delete_folder
    get = ts.ConsulSource.get
    revision_of = ts.ConsulSource.revision_of


if __name__ == "__main__":
    unittest.main()
