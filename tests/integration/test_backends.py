"""End to end on real etcd and the Kubernetes API test server: a service gets weight only
when it can serve (backend checks, docs/usage.md).

The test server runs no controllers: the tests write Services and EndpointSlices
themselves (KubeAPI.add_service / set_endpoints), as a Deployment's controllers would.
"Without a new key write" is checked on etcd: the route's keys keep the revision they
had when the route was refused; only the bridge's own status key moves."""
import json
import os
import re
import sys
import tempfile
import unittest
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
from cbtest import Bridge, Etcd, KubeAPI, bridge_config, free_port, wait_until  # noqa: E402

G = "traefik.io"
ROUTE = """match: Host(`shop.example.com`)
services:
  - name: shop-v1
    port: 80
  - name: shop-v2
    port: %s
"""
KEY = "canary/default/shop/"


def weights_of(obj, route_index=-1):
    if not obj:
        return None
    return {s["name"]: s.get("weight") for s in obj["spec"]["routes"][route_index]["services"]}


class BackendCase(unittest.TestCase):
    """Fresh etcd + API server per test; shop-v1 always serves."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="cb-backends-")
        self.addCleanup(self.tmp.cleanup)
        self.etcd = Etcd(self.tmp.name)
        self.addCleanup(self.etcd.stop)
        self.kube = KubeAPI(self.tmp.name, auto_services=False)   # each test makes its own
        self.addCleanup(self.kube.stop)
        self.kube.add_service("default", "shop-v1", ports=80, ready=2)
        self.metrics_port = free_port()

    def start_bridge(self, **reconcile):
        cfg = bridge_config(etcd=self.etcd, kube=self.kube, metrics_port=self.metrics_port,
                            reconcile={"status": True, **reconcile})
        self.bridge = Bridge(self.tmp.name, cfg)
        self.addCleanup(self.bridge.stop)
        self.bridge.wait_log(r"ready: ", timeout=20)

    def ir(self, name="shop"):
        return self.kube.get(G, "default", "ingressroutes", name)

    def status(self):
        text = self.etcd.get(KEY + "status")
        return json.loads(text) if text else None

    def wait_status(self, pred, what):
        return wait_until(lambda: (lambda st: st if st and pred(st) else None)(self.status()),
                          10, what="status %s (have %r)" % (what, self.status()))

    def wait_weights(self, want, name="shop"):
        return wait_until(lambda: weights_of(self.ir(name)) == want, 10,
                          what="IngressRoute weights %r (have %r)" % (want, weights_of(self.ir(name))))

    def key_revisions(self):
        """mod_revision of the route's input keys (the status key left out)."""
        out = {}
        for key in ("route", "weights"):
            r = self.etcd.call("/v3/kv/range", {"key": self.etcd._b64(KEY + key)})
            out[key] = int(r["kvs"][0]["mod_revision"])
        return out

    def ir_writes(self, since=0):
        return [r for r in self.kube.requests(since=since)
                if r["method"] in ("POST", "PUT", "PATCH") and "/ingressroutes" in r["path"]]

    def events(self, reason):
        items = self.kube.list("", "default", "events")["items"]
        return [e for e in items if e["reason"] == reason]

    def metric(self, name, **labels):
        text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_port,
                                      timeout=5).read().decode()
        want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
        m = re.search(r"^%s\{%s\} (\S+)$" % (re.escape(name), re.escape(want)), text, re.M)
        return float(m.group(1)) if m else None

    def put_route(self, w2=10, port="80"):
        self.etcd.put(KEY + "route", ROUTE % port)
        self.etcd.put(KEY + "weights", "shop-v1=%d, shop-v2=%d" % (100 - w2, w2))


class Refused(BackendCase):
    def test_missing_service_is_refused_with_a_status_then_applied_when_it_appears(self):
        self.put_route()
        self.start_bridge()
        st = self.wait_status(lambda s: s["state"] == "error", "error")
        self.assertIn("Service shop-v2 not found in namespace default", st["message"])
        self.assertIsNone(self.ir(), "nothing is written for a refused route")
        revs = self.key_revisions()
        seq = self.kube.requests()[-1]["seq"]
        self.kube.add_service("default", "shop-v2", ready=1)   # watch-driven: no key write
        self.wait_weights({"shop-v1": 90, "shop-v2": 10})
        self.wait_status(lambda s: s["state"] == "applied", "applied")
        self.assertEqual(self.key_revisions(), revs)
        self.assertEqual(len(self.ir_writes(seq)), 1)

    def test_no_ready_endpoints_refuses_the_change_and_the_last_good_object_stays(self):
        self.kube.add_service("default", "shop-v2", ready=0, not_ready=2)
        self.put_route(w2=0)                          # weight 0: needs no endpoint
        self.start_bridge()
        self.wait_weights({"shop-v1": 100, "shop-v2": 0})
        self.etcd.put(KEY + "weights", "shop-v1=90, shop-v2=10")
        st = self.wait_status(lambda s: s["state"] == "error", "error")
        self.assertIn("shop-v2 has no ready endpoints (2 not ready)", st["message"])
        self.assertEqual(weights_of(self.ir()), {"shop-v1": 100, "shop-v2": 0})
        wait_until(lambda: self.events("RouteFailed"), 10, what="a RouteFailed Event")
        # Endpoints become ready: applied at once, with no new key write.
        revs = self.key_revisions()
        self.kube.set_endpoints("default", "shop-v2", ready=1)
        self.wait_weights({"shop-v1": 90, "shop-v2": 10})
        self.wait_status(lambda s: s["state"] == "applied", "applied")
        self.assertEqual(self.key_revisions(), revs)

    def test_require_ready_endpoints_off_checks_existence_and_port_only(self):
        self.kube.add_service("default", "shop-v2", ready=0)
        self.put_route()
        self.start_bridge(require_ready_endpoints=False)
        self.wait_weights({"shop-v1": 90, "shop-v2": 10})
        self.etcd.put(KEY + "route", ROUTE % "8080")
        st = self.wait_status(lambda s: s["state"] == "error", "error")
        self.assertIn("shop-v2 does not expose port 8080 (it has 80)", st["message"])

    def test_port_by_name(self):
        self.kube.add_service("default", "shop-v2", ports=[("http", 80)], ready=1)
        self.put_route(port="http")
        self.start_bridge()
        self.wait_weights({"shop-v1": 90, "shop-v2": 10})
        self.etcd.put(KEY + "route", ROUTE % "grpc")
        st = self.wait_status(lambda s: s["state"] == "error", "error")
        self.assertIn("shop-v2 does not expose port grpc (it has 80/http)", st["message"])
        self.assertEqual(self.ir()["spec"]["routes"][-1]["services"][1]["port"], "http")

    def test_external_name_service_needs_only_to_exist(self):
        self.kube.add_service("default", "shop-v2", ports=80, external_name="shop.example.net")
        self.put_route()
        self.start_bridge()
        self.wait_weights({"shop-v1": 90, "shop-v2": 10})
        self.wait_status(lambda s: s["state"] == "applied", "applied")


class TraefikServiceReference(BackendCase):
    """Patched mode: the weights go into an IngressRoute someone else owns, whose
    entries say what each service is; a TraefikService reference needs only to exist."""

    def existing(self):
        self.kube.create(G, "default", "ingressroutes", {
            "apiVersion": G + "/v1alpha1", "kind": "IngressRoute",
            "metadata": {"name": "shop", "namespace": "default"},
            "spec": {"routes": [{"match": "Host(`shop.example.com`)", "kind": "Rule",
                                 "services": [
                                     {"name": "shop-v1", "port": 80, "weight": 100},
                                     {"name": "shop-canary", "kind": "TraefikService",
                                      "weight": 0}]}]}})

    def test_traefikservice_reference_must_exist(self):
        self.existing()
        self.etcd.put(KEY + "weights", "shop-v1=80, shop-canary=20")
        self.start_bridge()
        st = self.wait_status(lambda s: s["state"] == "error", "error")
        self.assertIn("TraefikService shop-canary not found in namespace default",
                      st["message"])
        self.assertEqual(weights_of(self.ir()), {"shop-v1": 100, "shop-canary": 0})
        self.kube.create(G, "default", "traefikservices", {
            "apiVersion": G + "/v1alpha1", "kind": "TraefikService",
            "metadata": {"name": "shop-canary", "namespace": "default"},
            "spec": {"weighted": {"services": [{"name": "shop-v1", "port": 80}]}}})
        self.wait_weights({"shop-v1": 80, "shop-canary": 20})


class Reported(BackendCase):
    def test_weighted_service_losing_its_endpoints_is_reported_and_keeps_its_weight(self):
        self.kube.add_service("default", "shop-v2", ready=1)
        self.put_route()
        self.start_bridge()
        self.wait_weights({"shop-v1": 90, "shop-v2": 10})
        self.wait_status(lambda s: s["state"] == "applied", "applied")
        seq = self.kube.requests()[-1]["seq"]
        self.kube.set_endpoints("default", "shop-v2", ready=0, not_ready=1)
        st = self.wait_status(lambda s: "warning" in s, "with a warning")
        self.assertEqual(st["state"], "applied")
        self.assertIn("shop-v2 has no ready endpoints", st["warning"])
        ev = wait_until(lambda: self.events("BackendNotReady"), 10, what="a BackendNotReady Event")
        self.assertEqual(ev[0]["involvedObject"]["name"], "shop")
        self.assertIn("weights are left as they are", ev[0]["message"])
        wait_until(lambda: self.metric("canary_bridge_backend_unready", namespace="default",
                                       route="shop", service="shop-v2") == 1, 10,
                   what="canary_bridge_backend_unready 1")
        self.assertEqual(weights_of(self.ir()), {"shop-v1": 90, "shop-v2": 10})
        self.assertEqual(self.ir_writes(seq), [], "the weights are not rewritten")
        # Back again: the report ends.
        self.kube.set_endpoints("default", "shop-v2", ready=1)
        self.wait_status(lambda s: "warning" not in s, "without a warning")
        wait_until(lambda: self.metric("canary_bridge_backend_unready", namespace="default",
                                       route="shop", service="shop-v2") is None, 10,
                   what="the canary_bridge_backend_unready series gone")
        self.assertEqual(self.ir_writes(seq), [])


if __name__ == "__main__":
    unittest.main()
