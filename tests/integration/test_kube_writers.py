"""The bridge against what a real kube-apiserver does to its writes: a namespace that
does not exist, Events on quick edits, an object another canary-bridge owns, and two bridges that disagree about one object.

Each test runs its own etcd(s), API test server and bridge(s) on free loopback ports."""
import json
import os
import re
import socket
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
    port: 80
"""


def weights_of(obj, route_index=-1):
    return {s["name"]: s.get("weight") for s in obj["spec"]["routes"][route_index]["services"]}


def metric(text, name, labels=None):
    """The value of one series in Prometheus text, or None."""
    for line in text.splitlines():
        m = re.match(r'^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$', line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if labels is None or all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return None


class KubeCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="cb-kw-")
        self.addCleanup(self.tmp.cleanup)
        self.etcd = Etcd(self.tmp.name)
        self.addCleanup(self.etcd.stop)
        self.kube = KubeAPI(self.tmp.name)
        self.addCleanup(self.kube.stop)

    def start_bridge(self, name="bridge", etcd=None, **overrides):
        port = free_port()
        cfg = bridge_config(etcd=etcd or self.etcd, kube=self.kube, metrics_port=port,
                            **overrides)
        b = Bridge(self.tmp.name, cfg, name=name)
        b.metrics_port = port
        self.addCleanup(b.stop)
        b.wait_log(r"ready: ", timeout=20)
        return b

    def metrics(self, bridge):
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % bridge.metrics_port,
                                    timeout=5) as r:
            return r.read().decode()

    def ir(self, name="shop", ns="default"):
        return self.kube.get(G, ns, "ingressroutes", name)

    def status(self, route="default/shop", prefix="canary/", etcd=None):
        text = (etcd or self.etcd).get("%s%s/status" % (prefix, route))
        return json.loads(text) if text else None

    def wait_status(self, pred, route="default/shop", prefix="canary/", etcd=None, what=None):
        return wait_until(lambda: (lambda s: s if s and pred(s) else None)(
            self.status(route, prefix, etcd)), 10, what=what or "status of " + route)

    def writes(self, plural="ingressroutes", method=None, ns=None, since=0):
        out = []
        for e in self.kube.requests(since=since):
            if not (e.get("user_agent") or "").startswith("canary-bridge"):
                continue
            if e["method"] not in ("POST", "PUT", "PATCH", "DELETE") or \
                    "/" + plural not in e["path"]:
                continue
            if (method and e["method"] != method) or \
                    (ns and "/namespaces/%s/" % ns not in e["path"]):
                continue
            out.append(e)
        return out


class MissingNamespace(KubeCase):
    """Defect 10: a route in a namespace that does not exist."""

    def test_error_in_status_log_and_metrics_one_create_per_pass(self):
        # The route's Services live in default: a namespace that does not exist has none,
        # and the backend checks would refuse the route before any create.
        b = self.start_bridge(reconcile={"status": True, "allow_cross_namespace": True})
        self.etcd.put("canary/nowhere/shop/route",
                      ROUTE.replace("    port: 80\n", "    port: 80\n    namespace: default\n"))
        st = self.wait_status(lambda s: s["state"] == "error", route="nowhere/shop")
        self.assertIn("namespace nowhere does not exist", st["message"])
        b.wait_log(r"error +route nowhere/shop: namespace nowhere does not exist")
        wait_until(lambda: metric(self.metrics(b), "canary_bridge_reconcile_total",
                                  {"result": "error"}), 5, what="an error pass in the metrics")
        self.assertEqual(metric(self.metrics(b), "canary_bridge_routes", {"state": "error"}), 1)
        # One create per pass, not a burst of retries: a second pass (a key change)
        # makes exactly one more.
        self.assertEqual(len(self.writes(ns="nowhere")), 1, self.writes(ns="nowhere"))
        # Writes name their writer: canary-bridge@<hostname> unless configured.
        self.assertEqual(self.writes(ns="nowhere")[0]["query"].get("fieldManager"),
                         "canary-bridge@" + socket.gethostname())
        self.etcd.put("canary/nowhere/shop/weights", "shop-v1=90\nshop-v2=10\n")
        wait_until(lambda: len(self.writes(ns="nowhere")) >= 2, 10, what="the second create")
        st = self.wait_status(lambda s: s["state"] == "error" and s["revision"] > st["revision"],
                              route="nowhere/shop")
        self.assertEqual(len(self.writes(ns="nowhere")), 2, self.writes(ns="nowhere"))
        # Once the namespace exists, the next pass creates the route.
        self.kube.create_namespace("nowhere")
        self.etcd.put("canary/nowhere/shop/weights", "shop-v1=80\nshop-v2=20\n")
        wait_until(lambda: self.ir(ns="nowhere"), 10, what="IngressRoute nowhere/shop")
        self.assertEqual(weights_of(self.ir(ns="nowhere")), {"shop-v1": 80, "shop-v2": 20})
        self.wait_status(lambda s: s["state"] == "applied", route="nowhere/shop")


class PatchedModeOwnedObject(KubeCase):
    """Defect 13: patched mode never writes an object a canary-bridge owns."""

    def test_refuses_an_object_another_bridge_owns_naming_its_prefix(self):
        owner = self.start_bridge(name="owner")
        self.etcd.put("canary/default/shop/route", ROUTE)
        self.etcd.put("canary/default/shop/weights", "shop-v1=90\nshop-v2=10\n")
        wait_until(lambda: self.ir() and weights_of(self.ir()) == {"shop-v1": 90, "shop-v2": 10},
                   10, what="the owner's IngressRoute")
        rv = self.ir()["metadata"]["resourceVersion"]
        mark = self.kube.requests()[-1]["seq"]
        b = self.start_bridge(name="team-b", prefix="team-b/", reconcile={"status": True})
        self.etcd.put("team-b/default/shop/weights", "shop-v1=10\nshop-v2=90\n")
        st = self.wait_status(lambda s: s["state"] == "error", prefix="team-b/")
        self.assertIn("managed by canary-bridge from prefix canary/", st["message"])
        b.wait_log(r"error +route default/shop: IngressRoute default/shop is managed by "
                   r"canary-bridge from prefix canary/")
        puts = [e for e in self.writes(since=mark) if e["method"] != "POST"]
        self.assertEqual(puts, [])
        self.assertEqual(self.ir()["metadata"]["resourceVersion"], rv)
        self.assertTrue(owner.alive())


class QuickEdits(KubeCase):
    """Defect 12: after six quick edits the IngressRoute's Event shows the newest weights."""

    def test_newest_weights_are_in_the_event(self):
        self.start_bridge()
        self.etcd.put("canary/default/shop/route", ROUTE)
        wait_until(self.ir, 10, what="the IngressRoute created")
        for i in range(1, 7):
            want = {"shop-v1": 100 - 10 * i, "shop-v2": 10 * i}
            self.etcd.put("canary/default/shop/weights",
                          "shop-v1=%d\nshop-v2=%d\n" % (100 - 10 * i, 10 * i))
            wait_until(lambda: self.ir() and weights_of(self.ir()) == want, 10,
                       what="weights %r" % want)

        def applied():
            return [e for e in self.kube.list("", "default", "events")["items"]
                    if e["reason"] == "Applied" and e["involvedObject"]["name"] == "shop"]
        ev = wait_until(lambda: [e for e in applied()
                                 if "weights shop-v1=40 shop-v2=60 " in e["message"]], 25,
                        what="an Applied Event with the newest weights")[0]
        self.assertEqual(len(applied()), 1, applied())
        self.assertEqual(ev["count"], 7)   # the create and six edits, folded


HEADERS = """
- name: beta
  header: X-Canary
  value: always
  service: shop-v2
"""


class TwoWriters(KubeCase):
    """Defect 14: two bridges that disagree about one IngressRoute back off and say so."""

    def writes_by(self, manager, since):
        return [e for e in self.writes(since=since) if e["method"] in ("POST", "PUT") and
                (e.get("query") or {}).get("fieldManager") == manager]

    def undone(self, bridge):
        return metric(self.metrics(bridge), "canary_bridge_undone_writes_total") or 0

    def assert_fight_reported_and_backed_off(self, a, b, status_etcd_a, status_etcd_b):
        for me, other, bridge in (("bridge-a", "bridge-b", a), ("bridge-b", "bridge-a", b)):
            bridge.wait_log(r'warn +route default/shop: another writer, field manager "%s", '
                            r"keeps undoing this bridge's writes to IngressRoute default/shop "
                            r'\(this bridge writes as "%s"\)' % (other, me), timeout=30)
            self.assertEqual(len(re.findall(r"warn +route default/shop: another writer",
                                            bridge.log_text())), 1, "warned once")
            wait_until(lambda: self.undone(bridge) >= 3, 10, what="undone writes counted")
        for etcd in (status_etcd_a, status_etcd_b):
            st = self.wait_status(lambda s: s["state"] == "error", etcd=etcd)
            self.assertIn("keeps undoing this bridge's writes", st["message"])
        events = wait_until(lambda: [e for e in self.kube.list("", "default", "events")["items"]
                                     if e["reason"] == "WritesUndone"] or None, 10,
                            what="WritesUndone Events")
        self.assertTrue(all(e["type"] == "Warning" and
                            e["involvedObject"]["kind"] == "IngressRoute" for e in events))
        self.assertEqual({m for e in events for m in ("bridge-a", "bridge-b")
                          if 'field manager "%s"' % m in e["message"]},
                         {"bridge-a", "bridge-b"})
        # Backed off: while the test touches a label of the object 200 times (each touch
        # is a watch event and a pass in both bridges), each bridge writes only a few
        # times. At full speed they would write hundreds of times meanwhile.
        mark = self.kube.requests()[-1]["seq"]
        for i in range(200):
            self.kube.merge_patch(G, "default", "ingressroutes", "shop",
                                  {"metadata": {"labels": {"tick": str(i)}}})
        wait_until(lambda: all(m["t_done"] for m in self.kube.requests(since=mark)
                               if m["method"] != "GET"), 5, what="requests answered")
        for m in ("bridge-a", "bridge-b"):
            self.assertTrue(self.writes_by(m, 0), "no write under field manager " + m)
            self.assertLessEqual(len(self.writes_by(m, mark)), 8,
                                 "%s kept writing: %r" % (m, self.writes_by(m, mark)))
        self.assertTrue(a.alive() and b.alive())

    def test_two_etcd_clusters_behind_one_prefix(self):
        etcd2 = Etcd(self.tmp.name, name="cb-etcd2")
        self.addCleanup(etcd2.stop)
        for etcd, w in ((self.etcd, "shop-v1=90\nshop-v2=10\n"),
                        (etcd2, "shop-v1=10\nshop-v2=90\n")):
            etcd.put("canary/default/shop/route", ROUTE)
            etcd.put("canary/default/shop/weights", w)
        a = self.start_bridge("a", kubernetes={"field_manager": "bridge-a"},
                              reconcile={"status": True})
        b = self.start_bridge("b", etcd=etcd2, kubernetes={"field_manager": "bridge-b"},
                              reconcile={"status": True})
        self.assert_fight_reported_and_backed_off(a, b, self.etcd, etcd2)

    def test_rule_syntax_v3_and_v2_on_one_etcd(self):
        self.etcd.put("canary/default/shop/route", ROUTE)
        self.etcd.put("canary/default/shop/headers", HEADERS)
        a = self.start_bridge("a", kubernetes={"field_manager": "bridge-a"},
                              traefik={"rule_syntax": "v3"}, reconcile={"status": True})
        b = self.start_bridge("b", kubernetes={"field_manager": "bridge-b"},
                              traefik={"rule_syntax": "v2"}, reconcile={"status": True})
        self.assert_fight_reported_and_backed_off(a, b, self.etcd, self.etcd)


if __name__ == "__main__":
    unittest.main()
