"""The brakes a person can pull, end to end with both sources (a real etcd and the Consul
KV test server) and the Kubernetes API test server:

- freeze: P<ns>/<name>/freeze, or P_freeze for every route, holds every change of the
  route (deletions included) until the key goes; the status key says "frozen: <reason>";
- abort: P<ns>/<name>/abort sends all of a route's traffic to its first service and drops
  its header rules, whatever the weights key says, in owned and patched mode;
- max step: reconcile.max_step (or a route's maxStep) refuses a change that moves a share
  of traffic too far, unless the weights value ends with '!';
- each in the status key, /metrics and Events; mistyped keys get a did-you-mean.

Nothing sleeps where a condition can be awaited; nothing asserts on latency."""
import os
import re
import sys
import tempfile
import unittest
import urllib.request

import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cbtest import Bridge, KubeAPI, bridge_config, free_port, wait_until  # noqa: E402
import test_sources as ts  # noqa: E402

G = "traefik.io"
ROUTE = """match: Host(`shop.example.com`)
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
"""


def metrics(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        return r.read().decode()


def series(text, name, **labels):
    """The value of one series, or None when it is not there."""
    want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"^%s(?:\{(.*)\})?\s+(\S+)$" % re.escape(name), line)
        if m and ",".join(sorted((m.group(1) or "").split(","))) == want:
            return float(m.group(2))
    return None


class BrakesSuite:
    """The scenarios; a subclass provides the source (the methods of test_sources)."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="cb-brakes-")
        self.addCleanup(self.tmp.cleanup)
        self.kube = KubeAPI(self.tmp.name)
        self.addCleanup(self.kube.stop)
        self.start_source()
        self.port = free_port()

    def start_bridge(self, **overrides):
        cfg = ts.merged(bridge_config(kube=self.kube, metrics_port=self.port,
                                      **self.source_config()),
                        ts.merged({"reconcile": {"status": True}}, overrides))
        self.bridge = Bridge(self.tmp.name, cfg)
        self.addCleanup(self.bridge.stop)
        self.bridge.wait_log(r"ready: ", timeout=20)
        return self.bridge

    def ir(self, name="shop"):
        return self.kube.get(G, "default", "ingressroutes", name)

    def weights(self, name="shop"):
        return ts.weights_of(self.ir(name))

    def wait_weights(self, want, name="shop"):
        return ts.wait_for(lambda: self.weights(name) == want, "%s weights %r" % (name, want),
                           lambda: self.weights(name))

    def status(self, name="shop"):
        return ts.parse_status(self.get("canary/default/%s/status" % name))

    def wait_status(self, pred, name="shop", what="status"):
        return ts.wait_for(lambda: (lambda s: s if s and pred(s) else None)(self.status(name)),
                           "%s of %s" % (what, name), lambda: self.status(name))

    def events(self, reason):
        r = self.kube.request("GET", "/api/v1/namespaces/default/events")
        items = r[2]["items"] if isinstance(r, tuple) else r["items"]
        return [e for e in items if e["reason"] == reason]

    def shop(self, weights="shop-v1=90, shop-v2=10", headers=False, **overrides):
        self.put("canary/default/shop/route", ROUTE)
        self.put("canary/default/shop/weights", weights)
        if headers:
            self.put("canary/default/shop/headers", HEADERS)
        self.start_bridge(**overrides)
        want = dict(p.strip().split("=") for p in weights.rstrip(" !").split(","))
        self.wait_weights({k: int(v) for k, v in want.items()})
        self.wait_status(lambda s: s["state"] == "applied")

    # ---- freeze
    def test_freeze_holds_a_change_and_its_removal_applies_it(self):
        self.shop()
        self.put("canary/default/shop/freeze", "release train 42\n")
        st = self.wait_status(lambda s: s["state"] == "frozen", what="frozen")
        self.assertEqual(st["message"], "frozen: release train 42")
        self.assertEqual(st["weights"], {"shop-v1": 90, "shop-v2": 10})
        self.assertEqual(series(metrics(self.port), "canary_bridge_route_frozen",
                                namespace="default", route="shop"), 1)
        wait_until(lambda: self.events("Frozen"), what="a Frozen Event")
        mark = ts.last_seq(self.kube)
        self.put("canary/default/shop/weights", "shop-v1=50, shop-v2=50")
        st = self.wait_status(lambda s: s.get("change_waits"), what="a change waiting")
        self.assertEqual(st["message"],
                         "frozen: release train 42; a change waits until the freeze ends")
        self.assertEqual(ts.kube_writes(self.kube, since=mark), [])
        self.assertEqual(self.weights(), {"shop-v1": 90, "shop-v2": 10})
        self.delete("canary/default/shop/freeze")
        self.wait_weights({"shop-v1": 50, "shop-v2": 50})
        st = self.wait_status(lambda s: s["state"] == "applied", what="applied")
        self.assertEqual(st["message"], "")
        self.assertNotIn("change_waits", st)
        self.assertIsNone(series(metrics(self.port), "canary_bridge_route_frozen",
                                 namespace="default", route="shop"))

    def test_prefix_freeze_holds_every_route_and_its_deletions(self):
        self.put("canary/default/cart/route", ROUTE.replace("shop", "cart"))
        self.shop(reconcile={"policy": "sync"})
        self.wait_weights({"cart-v1": 1, "cart-v2": 1}, "cart")
        since = self.bridge.log_size()
        self.put("canary/_freeze", "")
        self.bridge.wait_log(r"canary/_freeze: every route is frozen \(no reason given\)",
                             since=since)
        for name in ("shop", "cart"):
            st = self.wait_status(lambda s: s["state"] == "frozen", name, "frozen")
            self.assertEqual(st["message"], "frozen: no reason given")
        mark = ts.last_seq(self.kube)
        self.delete_folder("canary/default/cart/")
        self.put("canary/default/shop/weights", "shop-v1=10, shop-v2=90")
        self.wait_status(lambda s: s.get("change_waits"), what="shop's change waiting")
        self.wait_status(lambda s: s.get("change_waits"), "cart", "cart's deletion waiting")
        self.assertEqual(ts.kube_writes(self.kube, since=mark), [])
        self.assertIsNotNone(self.ir("cart"))
        self.delete("canary/_freeze")
        self.wait_weights({"shop-v1": 10, "shop-v2": 90})
        wait_until(lambda: self.ir("cart") is None, what="cart deleted once the freeze ends")

    # ---- abort
    def test_abort_sends_all_traffic_to_the_stable_service(self):
        self.shop(headers=True)
        self.assertEqual(len(self.ir()["spec"]["routes"]), 2)
        self.put("canary/default/shop/abort", "5xx rate on v2")
        self.wait_weights({"shop-v1": 100, "shop-v2": 0})
        self.assertEqual(len(self.ir()["spec"]["routes"]), 1)      # the header route is gone
        st = self.wait_status(lambda s: s["state"] == "aborted", what="aborted")
        self.assertEqual(st["message"], "aborted: 5xx rate on v2")
        self.assertEqual(st["weights"], {"shop-v1": 100, "shop-v2": 0})
        ev = wait_until(lambda: self.events("Aborted"), what="an Aborted Event")
        self.assertEqual(ev[0]["type"], "Warning")
        self.assertIn("all traffic on shop-v1", ev[0]["message"])
        self.assertEqual(series(metrics(self.port), "canary_bridge_route_aborted",
                                namespace="default", route="shop"), 1)
        # The weights key no longer counts, nor does a freeze.
        mark = ts.last_seq(self.kube)
        self.put("canary/_freeze", "freeze")
        self.put("canary/default/shop/weights", "shop-v1=0, shop-v2=100")
        self.put("canary/default/cart/weights", "x=1")                  # barrier
        self.wait_status(lambda s: s.get("change_waits"), "cart", "cart frozen")
        self.assertEqual(ts.kube_writes(self.kube, since=mark, name="shop"), [])
        self.delete("canary/_freeze")
        self.delete("canary/default/shop/abort")
        self.wait_weights({"shop-v1": 0, "shop-v2": 100})
        self.assertEqual(len(self.ir()["spec"]["routes"]), 2)
        self.wait_status(lambda s: s["state"] == "applied", what="applied")
        self.assertIsNone(series(metrics(self.port), "canary_bridge_route_aborted",
                                 namespace="default", route="shop"))

    def test_abort_in_patched_mode(self):
        self.kube.create(G, "default", "ingressroutes", {
            "apiVersion": "traefik.io/v1alpha1", "kind": "IngressRoute",
            "metadata": {"name": "shop", "namespace": "default", "labels": {"team": "web"}},
            "spec": {"routes": [{"kind": "Rule", "match": "Host(`shop.example.com`)",
                                 "services": [{"name": "shop-v1", "port": 80, "weight": 1},
                                              {"name": "shop-v2", "port": 80, "weight": 1}]}]}})
        self.put("canary/default/shop/weights", "shop-v1=70, shop-v2=30")
        self.start_bridge()
        self.wait_weights({"shop-v1": 70, "shop-v2": 30})
        self.put("canary/default/shop/abort", "rollback")
        self.wait_weights({"shop-v1": 100, "shop-v2": 0})
        self.wait_status(lambda s: s["state"] == "aborted", what="aborted")
        self.assertEqual(self.ir()["metadata"]["labels"], {"team": "web"})
        self.delete("canary/default/shop/abort")
        self.wait_weights({"shop-v1": 70, "shop-v2": 30})

    # ---- max step
    def test_max_step_refuses_a_big_move_unless_marked(self):
        self.shop(reconcile={"max_step": 20})
        mark = ts.last_seq(self.kube)
        self.put("canary/default/shop/weights", "shop-v1=45, shop-v2=55")
        st = self.wait_status(lambda s: s["state"] == "error", what="refused")
        self.assertIn("shop-v2 would move 45 points, max_step is 20", st["message"])
        self.assertEqual(st["weights"], {"shop-v1": 90, "shop-v2": 10})
        self.assertEqual(ts.kube_writes(self.kube, since=mark), [])
        ev = wait_until(lambda: self.events("StepRefused"), what="a StepRefused Event")
        self.assertEqual(ev[0]["type"], "Warning")
        self.assertEqual(series(metrics(self.port), "canary_bridge_refusals_total",
                                reason="max_step"), 1)
        self.put("canary/default/shop/weights", "shop-v1=45, shop-v2=55 !")
        self.wait_weights({"shop-v1": 45, "shop-v2": 55})
        self.wait_status(lambda s: s["state"] == "applied", what="applied")
        self.put("canary/default/shop/weights", "shop-v1: 0\nshop-v2: 100\n_force: true\n")
        self.wait_weights({"shop-v1": 0, "shop-v2": 100})
        self.assertEqual(series(metrics(self.port), "canary_bridge_refusals_total",
                                reason="max_step"), 1)

    # ---- render
    def test_render_shows_an_abort_and_names_the_brakes(self):
        self.put("canary/default/shop/route", ROUTE)
        self.put("canary/default/shop/weights", "shop-v1=90, shop-v2=10")
        self.put("canary/default/shop/headers", HEADERS)
        self.put("canary/default/shop/abort", "x")
        self.put("canary/default/cart/route", ROUTE.replace("shop", "cart"))
        self.put("canary/default/cart/freeze", "window")
        cfg = bridge_config(kube=self.kube, **self.source_config())
        code, out, err = Bridge(self.tmp.name, cfg, name="render", start=False).run_once(
            ["render"])
        self.assertEqual(code, 0, err)
        irs = {d["metadata"]["name"]: d for d in yaml.safe_load_all(out)
               if d and d["kind"] == "IngressRoute"}
        self.assertEqual(ts.weights_of(irs["shop"]), {"shop-v1": 100, "shop-v2": 0})
        self.assertEqual(len(irs["shop"]["spec"]["routes"]), 1)
        self.assertIn("note: route default/shop is aborted (x): all its traffic goes to its "
                      "first service", err)
        self.assertIn("note: route default/cart is frozen (window): these objects wait until "
                      "the freeze ends", err)
        self.assertEqual(ts.kube_writes(self.kube), [])

    # ---- typos
    def test_mistyped_brakes_are_named(self):
        self.shop()
        self.put("canary/default/shop/frezee", "x")
        st = self.wait_status(lambda s: s["state"] == "error", what="typo")
        self.assertIn("key canary/default/shop/frezee: unknown leaf 'frezee' (did you mean "
                      "'freeze'? ", st["message"])
        self.put("canary/_freez", "x")
        self.bridge.wait_log(r"ignoring key canary/_freez: .*\(did you mean "
                             r"'canary/_freeze'\?\)")
        self.put("canary/default/shop/weights", "shop-v1=80, shop-v2=20")   # not frozen
        self.wait_weights({"shop-v1": 80, "shop-v2": 20})


class EtcdBrakes(BrakesSuite, unittest.TestCase):
    start_source = ts.EtcdSource.start_source
    source_config = ts.EtcdSource.source_config
    put = ts.EtcdSource.put
    delete = ts.EtcdSource.delete
    delete_folder = ts.EtcdSource.delete_folder
    get = ts.EtcdSource.get


class ConsulBrakes(BrakesSuite, unittest.TestCase):
    start_source = ts.ConsulSource.start_source
    source_config = ts.ConsulSource.source_config
    put = ts.ConsulSource.put
    delete = ts.ConsulSource.delete
    delete_folder = ts.ConsulSource.delete_folder
    get = ts.ConsulSource.get
    revision_of = ts.ConsulSource.revision_of


if __name__ == "__main__":
    unittest.main()
