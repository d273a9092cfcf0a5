"""Traffic mirroring (`mirror` in the route document) on real etcd and the Kubernetes API
test server: the mirroring TraefikService, the weighted TraefikService it names, and the
IngressRoute that names it are written in that order and deleted in the reverse order.

Ordering claims are proven from the API test server's request log, as in
test_canaries.py: `seq` is the order in which requests arrived."""
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
from cbtest import Bridge, mirror_name, mw_name  # noqa: E402

from tests.integration.test_canaries import (  # noqa: E402
    CanaryCase, ROUTE, RULES_MW, STICKY, delete_prefix, weights_of)

M = mirror_name("shop")
MIRROR = "mirror: {service: shop-v2, percent: 10}\n"
ROUTE_MIRROR = ROUTE + MIRROR
ROUTE1 = """match: Host(`shop.example.com`) && PathPrefix(`/`)
entryPoints: [websecure]
services:
  - name: shop-v1
    port: 80
"""
MIRROR_OTHER = "mirror: {service: shop-shadow, port: 8080, percent: 50}\n"


def via(ts):
    """The weighted route's services when it goes through TraefikService ts."""
    return [{"name": ts, "kind": "TraefikService"}]


class Mirroring(CanaryCase):
    def weighted_services(self, routes):
        return routes[-1]["services"]

    def wait_via(self, ts, what=None):
        return self.wait_routes(lambda rs: rs[-1]["services"] == via(ts),
                                what=what or "weighted route via %s" % ts)

    def test_objects_written_in_order_and_deleted_after_the_reference_goes(self):
        self.put("route", ROUTE_MIRROR)
        self.put("weights", "shop-v1=90, shop-v2=10")
        self.start_bridge(reconcile={"policy": "sync"})
        self.wait_via(M)
        mirror = self.ts(M)
        self.assertEqual(mirror["spec"], {"mirroring": {
            "name": "shop", "kind": "TraefikService",
            "mirrors": [{"name": "shop-v2", "port": 80, "percent": 10}]}})
        meta = mirror["metadata"]
        self.assertEqual(meta["labels"]["app.kubernetes.io/managed-by"], "canary-bridge")
        self.assertEqual(meta["labels"]["canary-bridge.io/route"], "shop")
        self.assertEqual(meta["annotations"]["canary-bridge.io/source-prefix"], "canary/")
        # The split lives in the weighted TraefikService (no sticky: none was asked for).
        self.assertEqual(self.ts()["spec"], {"weighted": {"services": [
            {"name": "shop-v1", "port": 80, "weight": 90},
            {"name": "shop-v2", "port": 80, "weight": 10}]}})
        w = self.writes()
        self.assertEqual([(r.method, r.plural, r.name, r.status) for r in w],
                         [("POST", "traefikservices", "shop", 201),
                          ("POST", "traefikservices", M, 201),
                          ("POST", "ingressroutes", "shop", 201)])
        self.assertTrue(w[2].references(ts=M))

        # New mirror settings: only the mirroring is written.
        mark = self.mark()
        self.put("route", ROUTE + "mirror: {service: shop-v2, percent: 25, mirrorBody: false, "
                 "maxBodySize: 1024}\n")
        self.wait_obj("traefikservices", M, pred=lambda o: o["spec"]["mirroring"].get(
            "maxBodySize") == 1024, what="new mirror settings")
        self.bridge.wait_log(r"TraefikService %s written" % M)
        self.assertEqual(self.ts(M)["spec"]["mirroring"],
                         {"name": "shop", "kind": "TraefikService", "mirrorBody": False,
                          "maxBodySize": 1024,
                          "mirrors": [{"name": "shop-v2", "port": 80, "percent": 25}]})
        self.assertEqual([(r.method, r.name) for r in self.writes(mark)], [("PUT", M)])

        # New weights: only the weighted TraefikService is written.
        mark = self.mark()
        self.put("weights", "shop-v1=50, shop-v2=50")
        self.wait_obj("traefikservices", pred=lambda o: weights_of(o["spec"]["weighted"]) ==
                      {"shop-v1": 50, "shop-v2": 50}, what="weights 50/50")
        self.bridge.wait_log(r"TraefikService shop written")
        self.assertEqual([(r.method, r.name) for r in self.writes(mark)], [("PUT", "shop")])

        # Mirror off: the IngressRoute goes back to its services first; then the
        # mirroring goes, and after it the weighted TraefikService it named.
        mark = self.mark()
        self.put("route", ROUTE)
        self.wait_gone("traefikservices", "shop")
        self.assertIsNone(self.ts(M))
        self.assertEqual(self.weighted_services(self.ir()["spec"]["routes"]),
                         [{"name": "shop-v1", "port": 80, "weight": 50},
                          {"name": "shop-v2", "port": 80, "weight": 50}])
        w = self.writes(mark)
        self.assertEqual([(r.method, r.plural, r.name, r.status) for r in w],
                         [("PUT", "ingressroutes", "shop", 200),
                          ("DELETE", "traefikservices", M, 200),
                          ("DELETE", "traefikservices", "shop", 200)])
        self.assertFalse(w[0].references(ts=M))
        self.assert_no_client_errors()

    def test_sticky_stays_when_the_mirror_goes(self):
        self.put("route", ROUTE + STICKY + MIRROR)
        self.put("weights", "shop-v1=90, shop-v2=10")
        self.start_bridge(reconcile={"policy": "sync"})
        self.wait_via(M)
        self.assertEqual(self.ts()["spec"]["weighted"]["sticky"]["cookie"]["name"],
                         "canary_sticky")
        self.assertEqual(self.ts(M)["spec"]["mirroring"]["name"], "shop")
        ts_rv = self.rv("traefikservices", "shop")
        mark = self.mark()
        self.put("route", ROUTE + STICKY)
        self.wait_gone("traefikservices", M)
        self.wait_via("shop")
        w = self.writes(mark)
        self.assertEqual([(r.method, r.plural, r.name) for r in w],
                         [("PUT", "ingressroutes", "shop"), ("DELETE", "traefikservices", M)])
        self.assertTrue(w[0].references(ts="shop"))
        self.assertEqual(self.rv("traefikservices", "shop"), ts_rv)

        # And back: the mirroring exists before the IngressRoute names it.
        mark = self.mark()
        self.put("route", ROUTE + STICKY + MIRROR)
        self.wait_via(M)
        w = self.writes(mark)
        self.assertEqual([(r.method, r.plural, r.name) for r in w],
                         [("POST", "traefikservices", M), ("PUT", "ingressroutes", "shop")])
        self.assert_no_client_errors()

    def test_one_service_mirrors_straight_from_the_service(self):
        """One service: the mirroring's main service is the Service itself; a second
        service brings the weighted TraefikService, created before the mirroring names it."""
        self.put("route", ROUTE1 + MIRROR_OTHER)
        self.start_bridge(reconcile={"policy": "sync"})
        self.wait_via(M)
        self.assertEqual(self.ts(M)["spec"]["mirroring"],
                         {"name": "shop-v1", "port": 80,
                          "mirrors": [{"name": "shop-shadow", "port": 8080, "percent": 50}]})
        self.assertIsNone(self.ts())

        mark = self.mark()
        self.put("route", ROUTE + MIRROR_OTHER)
        self.wait_obj("traefikservices", M, pred=lambda o: o["spec"]["mirroring"].get("kind") ==
                      "TraefikService", what="mirroring of the weighted TraefikService")
        self.assertEqual(weights_of(self.ts()["spec"]["weighted"]), {"shop-v1": 1, "shop-v2": 1})
        w = self.writes(mark)
        self.assertEqual([(r.method, r.plural, r.name) for r in w],
                         [("POST", "traefikservices", "shop"), ("PUT", "traefikservices", M)])

        mark = self.mark()
        self.put("route", ROUTE1 + MIRROR_OTHER)
        self.wait_gone("traefikservices", "shop")
        self.assertEqual(self.ts(M)["spec"]["mirroring"]["name"], "shop-v1")
        w = self.writes(mark)
        self.assertEqual([(r.method, r.plural, r.name) for r in w],
                         [("PUT", "traefikservices", M), ("DELETE", "traefikservices", "shop")])
        self.assert_no_client_errors()

    def test_deleting_weights_keeps_the_weights_in_force(self):
        """The weights in force are read back from the weighted TraefikService behind the
        mirroring: deleting the weights key moves no traffic, as without a mirror."""
        self.put("route", ROUTE_MIRROR)
        self.put("weights", "shop-v1=0, shop-v2=100")
        self.start_bridge()
        self.wait_via(M)
        self.wait_obj("traefikservices", pred=lambda o: weights_of(o["spec"]["weighted"]) ==
                      {"shop-v1": 0, "shop-v2": 100}, what="weights 0/100")
        ts_rv = self.rv("traefikservices", "shop")
        since = self.bridge.log_size()
        self.etcd.delete("canary/default/shop/weights")
        self.bridge.wait_log(r"weights key gone: keeping the weights in force shop-v1=0 "
                             r"shop-v2=100", since=since)
        self.wait_obj("ingressroutes", pred=lambda o: o["metadata"]["annotations"].get(
            "canary-bridge.io/weights-from", "").startswith("held:"), what="held weights")
        self.assertEqual(self.rv("traefikservices", "shop"), ts_rv)
        self.assertEqual(weights_of(self.ts()["spec"]["weighted"]),
                         {"shop-v1": 0, "shop-v2": 100})

    def test_sync_deletes_ingressroute_then_mirroring_then_the_rest(self):
        self.put("route", ROUTE + STICKY + MIRROR)
        self.put("weights", "shop-v1=90, shop-v2=10")
        self.put("headers", RULES_MW)
        self.start_bridge(reconcile={"policy": "sync"})
        self.wait_obj("middlewares", mw_name("shop", "beta"))
        self.wait_via(M)
        mark = self.mark()
        self.assertEqual(delete_prefix(self.etcd, "canary/default/shop/"), 3)
        self.wait_gone("middlewares", mw_name("shop", "beta"))
        self.assertEqual([(r.method, r.plural, r.name, r.status) for r in self.writes(mark)],
                         [("DELETE", "ingressroutes", "shop", 200),
                          ("DELETE", "traefikservices", M, 200),
                          ("DELETE", "traefikservices", "shop", 200),
                          ("DELETE", "middlewares", mw_name("shop", "beta"), 200)])

    def test_upsert_only_keeps_the_mirroring(self):
        self.put("route", ROUTE_MIRROR)
        self.start_bridge()   # default policy: upsert-only
        self.wait_via(M)
        rvs = {n: self.rv("traefikservices", n) for n in ("shop", M)}
        mark = self.mark()
        self.put("route", ROUTE)
        self.wait_routes(lambda rs: len(rs[-1]["services"]) == 2, what="services inline")
        self.put("weights", "shop-v1=70, shop-v2=30")   # a later pass: the first is over
        self.wait_routes(lambda rs: weights_of(rs[-1]) == {"shop-v1": 70, "shop-v2": 30},
                         what="later weights")
        self.assertEqual({n: self.rv("traefikservices", n) for n in ("shop", M)}, rvs)
        self.assertEqual({(r.method, r.plural) for r in self.writes(mark)},
                         {("PUT", "ingressroutes")})

    def test_bad_mirror_is_refused_naming_the_key_and_changes_nothing(self):
        self.put("route", ROUTE_MIRROR)
        self.start_bridge()
        self.wait_via(M)
        rvs = {n: self.rv("traefikservices", n) for n in ("shop", M)}
        rvs["ir"] = self.rv("ingressroutes", "shop")
        mark = self.mark()
        for mirror, reason in (
                ("{service: shop-v2, percent: 150}",
                 "mirror: 'percent' must be a whole number from 0 to 100"),
                ("{service: shop-v2, percnt: 10}",
                 r"mirror: unknown field 'percnt' \(did you mean 'percent'\?\)"),
                ("{service: Shop_V2, port: 80, percent: 10}",
                 "mirror: 'service' must be a DNS-1123 label"),
                ("{service: shop-v3, percent: 10}",
                 "mirror: 'port' is required unless 'service' names one of the route's "
                 "services"),
                ("{service: shop-v2, port: 80, namespace: other, percent: 10}",
                 "mirror: 'namespace' is not allowed")):
            with self.subTest(mirror=mirror):
                since = self.bridge.log_size()
                self.put("route", ROUTE + "mirror: %s\n" % mirror)
                self.bridge.wait_log(r"route default/shop: canary/default/shop/route: %s" % reason,
                                     since=since)
        since = self.bridge.log_size()
        self.put("route", ROUTE_MIRROR)
        self.bridge.wait_log(r"route default/shop: recovered", since=since)
        self.assertEqual(self.writes(mark), [])
        self.assertEqual({n: self.rv("traefikservices", n) for n in ("shop", M)},
                         {n: rvs[n] for n in ("shop", M)})
        self.assertEqual(self.rv("ingressroutes", "shop"), rvs["ir"])

    def test_render_prints_the_mirroring_in_write_order(self):
        self.put("route", ROUTE + STICKY + "mirror: {service: shop-v2, percent: 10, "
                 "mirrorBody: false, maxBodySize: 4096}\n")
        self.put("weights", "shop-v1=90, shop-v2=10")
        import yaml
        code, out, err = Bridge(self.tmp.name, self.config(), start=False).run_once(
            ["render", "default/shop"])
        self.assertEqual(code, 0, err)
        docs = [d for d in yaml.safe_load_all(out) if d]
        self.assertEqual([(d["kind"], d["metadata"]["name"]) for d in docs],
                         [("TraefikService", "shop"), ("TraefikService", M),
                          ("IngressRoute", "shop")])
        self.assertEqual(self.writes(), [])  # render reads the live objects, writes nothing
        # What render shows is what the daemon writes, and the CRD keeps all of it.
        self.start_bridge()
        self.wait_via(M)
        for d in docs:
            plural = {"TraefikService": "traefikservices", "IngressRoute": "ingressroutes"}
            self.assertEqual(self.get(plural[d["kind"]], d["metadata"]["name"])["spec"],
                             d["spec"], d["kind"])


class MirroringV2(CanaryCase):
    """rule_syntax v2 on traefik.containo.us: v2.11's CRD has no mirrorBody, so it is left
    out (not pruned by the server, which would make every resync write again)."""
    kube_groups = ["traefik.containo.us"]
    group = "traefik.containo.us"
    config_overrides = {"traefik": {"api_group": "auto", "rule_syntax": "v2"}}

    def test_v2_mirroring_passes_crd_validation_without_mirror_body(self):
        self.put("route", ROUTE + "mirror: {service: shop-v2, percent: 10, mirrorBody: false, "
                 "maxBodySize: 0}\n")
        self.start_bridge(reconcile={"resync": "1s"})
        self.wait_routes(lambda rs: rs[-1]["services"] == via(M), what="weighted route via M")
        mirror = self.ts(M)
        self.assertEqual(mirror["apiVersion"], "traefik.containo.us/v1alpha1")
        self.assertEqual(mirror["spec"]["mirroring"],
                         {"name": "shop", "kind": "TraefikService", "maxBodySize": 0,
                          "mirrors": [{"name": "shop-v2", "port": 80, "percent": 10}]})
        # Two full resyncs later, nothing was written again.
        mark = self.mark()
        for _ in range(2):
            since = self.bridge.log_size()
            self.bridge.wait_log(r"resync: re-listing", since=since, timeout=5)
        self.assertEqual(self.writes(mark), [])
        self.assertEqual([r for r in self.writes() if r.status not in (200, 201)], [])


if __name__ == "__main__":
    unittest.main()
