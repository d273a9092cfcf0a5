"""The brakes against a real kube-apiserver (built by tests/real/build.sh, RBAC on, the
Traefik v3 CRDs and deploy/rbac.yaml applied; the bridge runs as the canary-bridge
ServiceAccount): an abort in patched mode sets the weights of an IngressRoute the bridge
does not own, in every route of it, and nothing else, and an abort and a freeze are told
in real Events; a freeze writes nothing, so the object's resourceVersion stays.

The source is a real etcd written with etcdctl, as an operator would.  One apiserver serves
the whole class; each test works in a namespace of its own."""
import itertools
import json
import os
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))
from cbtest import Bridge, Etcd, bridge_config, wait_until  # noqa: E402
from real import RealKubeAPI, require_real  # noqa: E402

G = "traefik.io"
ROUTE = """match: Host(`shop.example.com`)
entryPoints: [web]
services:
  - name: shop-v1
    port: 80
  - name: shop-v2
    port: 80
"""
_ns = itertools.count(1)


def weights_of(obj, route=-1):
    if not obj:
        return None
    return {s["name"]: s.get("weight") for s in obj["spec"]["routes"][route]["services"]}


class RealBrakes(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        require_real("kube-apiserver")
        cls.tmp = tempfile.TemporaryDirectory(prefix="cb-real-brakes-")
        try:
            cls.kube = RealKubeAPI(cls.tmp.name)
        except BaseException:
            cls.tmp.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.kube.stop()
        cls.tmp.cleanup()

    def setUp(self):
        self.ns = "brake%d" % next(_ns)
        self.kube.apply_object({"apiVersion": "v1", "kind": "Namespace",
                                "metadata": {"name": self.ns}})
        # The bridge gives weight only to Services that can serve (backend checks).
        self.kube.add_services(self.ns, "shop-v1", "shop-v2", ports=[("http", 80)])
        self.dir = tempfile.mkdtemp(prefix="t-", dir=self.tmp.name)
        self.etcd = Etcd(self.dir)
        self.addCleanup(self.etcd.stop)

    def start_bridge(self):
        cfg = bridge_config(etcd=self.etcd, kube=self.kube, reconcile={"status": True})
        self.bridge = Bridge(self.dir, cfg)
        self.addCleanup(self.bridge.stop)
        self.bridge.wait_log(r"ready: ", timeout=30)

    def key(self, what, name="shop"):
        return "canary/%s/%s/%s" % (self.ns, name, what)

    def ir(self):
        return self.kube.get(G, self.ns, "ingressroutes", "shop")

    def wait_weights(self, want, route=-1):
        try:
            return wait_until(lambda: weights_of(self.ir(), route) == want, 20,
                              what="IngressRoute %s/shop weights %r" % (self.ns, want))
        except AssertionError as e:
            raise AssertionError("%s (have %r)\n--- bridge log ---\n%s" % (
                e, weights_of(self.ir(), route), self.bridge.log_tail())) from None

    def status(self):
        text = self.etcd.get(self.key("status"))
        return json.loads(text) if text else None

    def wait_state(self, state):
        return wait_until(lambda: (lambda s: s if s and s["state"] == state else None)(
            self.status()), 20, what="status %s (have %r)" % (state, self.status()))

    def events(self, reason):
        items = self.kube.list("", self.ns, "events")["items"]
        return [e for e in items if e["reason"] == reason]

    def test_abort_in_patched_mode(self):
        # Helm's IngressRoute: two routes carry the services, one without weights.
        self.kube.create(G, self.ns, "ingressroutes", {
            "apiVersion": "traefik.io/v1alpha1", "kind": "IngressRoute",
            "metadata": {"name": "shop", "namespace": self.ns,
                         "labels": {"app": "shop", "helm.sh/chart": "shop-1.2.3"}},
            "spec": {"entryPoints": ["web"], "routes": [
                {"kind": "Rule", "match": "Host(`a.example.com`)",
                 "services": [{"name": "shop-v1", "port": 80, "weight": 1},
                              {"name": "shop-v2", "port": 80, "weight": 1}]},
                {"kind": "Rule", "match": "Host(`b.example.com`)",
                 "services": [{"name": "shop-v1", "port": 80},
                              {"name": "shop-v2", "port": 80}]}]}}, fieldManager="helm")
        self.etcd.etcdctl("put", self.key("weights"), "shop-v1=70, shop-v2=30")
        self.start_bridge()
        self.wait_weights({"shop-v1": 70, "shop-v2": 30}, route=0)
        self.etcd.etcdctl("put", self.key("abort"), "error rate on v2")
        self.wait_weights({"shop-v1": 100, "shop-v2": 0}, route=0)
        self.assertEqual(weights_of(self.ir(), 1), {"shop-v1": 100, "shop-v2": 0})
        st = self.wait_state("aborted")
        self.assertEqual(st["message"], "aborted: error rate on v2")
        meta = self.ir()["metadata"]
        self.assertEqual(meta["labels"], {"app": "shop", "helm.sh/chart": "shop-1.2.3"})
        ev = wait_until(lambda: self.events("Aborted"), 20, what="an Aborted Event")[0]
        self.assertEqual(ev["type"], "Warning")
        self.assertEqual(ev["involvedObject"]["name"], "shop")
        # The weights key does not count while the abort holds; its end applies it.
        self.etcd.etcdctl("put", self.key("weights"), "shop-v1=20, shop-v2=80")
        self.etcd.etcdctl("del", self.key("abort"))
        self.wait_weights({"shop-v1": 20, "shop-v2": 80}, route=0)
        self.wait_state("applied")

    def test_freeze_writes_nothing(self):
        self.etcd.etcdctl("put", self.key("route"), ROUTE)
        self.etcd.etcdctl("put", self.key("weights"), "shop-v1=90, shop-v2=10")
        self.start_bridge()
        self.wait_weights({"shop-v1": 90, "shop-v2": 10})
        self.etcd.etcdctl("put", self.key("freeze"), "change window")
        self.wait_state("frozen")
        rv = self.ir()["metadata"]["resourceVersion"]
        self.etcd.etcdctl("put", self.key("weights"), "shop-v1=10, shop-v2=90")
        st = wait_until(lambda: (lambda s: s if s and s.get("change_waits") else None)(
            self.status()), 20, what="a change waiting")
        self.assertEqual(st["message"],
                         "frozen: change window; a change waits until the freeze ends")
        self.assertEqual(self.ir()["metadata"]["resourceVersion"], rv)
        ev = wait_until(lambda: self.events("Frozen"), 20, what="a Frozen Event")[0]
        self.assertEqual(ev["type"], "Normal")
        self.etcd.etcdctl("del", self.key("freeze"))
        self.wait_weights({"shop-v1": 10, "shop-v2": 90})


if __name__ == "__main__":
    unittest.main()
