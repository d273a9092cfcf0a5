"""The bridge against a real kube-apiserver (issue 12): v1.37 built by tests/real/build.sh,
on its own etcd, RBAC on, the Traefik v3 CRDs from tests/kubeapi/crds/ applied and
deploy/rbac.yaml applied; the bridge authenticates as the canary-bridge ServiceAccount
with a token the apiserver issued, so it holds exactly the permissions rbac.yaml grants.

The source is a real etcd written with etcdctl, as an operator would.  One apiserver
serves the whole class (it takes a while to start on a busy 2-core machine); each test
works in a namespace of its own."""
import itertools
import os
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))
from cbtest import Bridge, Etcd, bridge_config, wait_until  # noqa: E402
from real import RealKubeAPI, require_real  # noqa: E402

G = "traefik.io"
ROUTE = """match: Host(`shop.example.com`) && PathPrefix(`/`)
entryPoints: [web]
services:
  - name: shop-v1
    port: 80
    weight: 80
  - name: shop-v2
    port: 80
    weight: 20
"""
_ns = itertools.count(1)


def weights_of(obj, route=-1):
    if not obj:
        return None
    return {s["name"]: s.get("weight") for s in obj["spec"]["routes"][route]["services"]}


class RealKubeCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        require_real("kube-apiserver")
        cls.tmp = tempfile.TemporaryDirectory(prefix="cb-real-kube-")
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
        self.ns = "t%d" % next(_ns)
        self.kube.apply_object({"apiVersion": "v1", "kind": "Namespace",
                                "metadata": {"name": self.ns}})
        self.dir = tempfile.mkdtemp(prefix="t-", dir=self.tmp.name)
        self.etcd = Etcd(self.dir)
        self.addCleanup(self.etcd.stop)

    def start_bridge(self, **sections):
        cfg = bridge_config(etcd=self.etcd, kube=self.kube, **sections)
        self.bridge = Bridge(self.dir, cfg)
        self.addCleanup(self.bridge.stop)
        self.bridge.wait_log(r"ready: ", timeout=30)
        return self.bridge

    def key(self, name, what):
        return "canary/%s/%s/%s" % (self.ns, name, what)

    def ir(self, name="shop"):
        return self.kube.get(G, self.ns, "ingressroutes", name)

    def wait_weights(self, want, name="shop", route=-1, timeout=20):
        try:
            return wait_until(lambda: weights_of(self.ir(name), route) == want, timeout,
                              what="IngressRoute %s/%s weights %r" % (self.ns, name, want))
        except AssertionError as e:
            raise AssertionError("%s (have %r)\n--- bridge log ---\n%s" % (
                e, weights_of(self.ir(name), route), self.bridge.log_tail())) from None


class OwnedMode(RealKubeCase):
    def test_etcdctl_put_lands_in_the_ingressroute(self):
        self.etcd.etcdctl("put", self.key("shop", "route"), ROUTE)
        self.start_bridge()
        self.wait_weights({"shop-v1": 80, "shop-v2": 20})
        rev = self.etcd.etcdctl("put", self.key("shop", "weights"), "shop-v1=90, shop-v2=10",
                                "-w", "json").stdout
        self.wait_weights({"shop-v1": 90, "shop-v2": 10})
        obj = self.ir()
        meta = obj["metadata"]
        self.assertEqual(meta["labels"]["app.kubernetes.io/managed-by"], "canary-bridge")
        self.assertEqual(meta["annotations"]["canary-bridge.io/source"], "etcd")
        self.assertIn('"revision":%s' % meta["annotations"]["canary-bridge.io/source-revision"],
                      rev.replace(" ", ""))
        # The real apiserver recorded the bridge's ServiceAccount as a field manager.
        self.assertTrue(meta.get("managedFields"))
        self.assertEqual(obj["spec"]["routes"][0]["match"],
                         "Host(`shop.example.com`) && PathPrefix(`/`)")
        # A second edit moves the weights again.
        self.etcd.etcdctl("put", self.key("shop", "weights"), "shop-v1=0, shop-v2=100")
        self.wait_weights({"shop-v1": 0, "shop-v2": 100})

    def test_route_in_a_namespace_that_does_not_exist_yet(self):
        # The API test server stores objects in any namespace; the real apiserver
        # answers 404 NotFound for the namespace until it exists.
        ns = self.ns + "-later"
        self.etcd.etcdctl("put", "canary/%s/shop/route" % ns, ROUTE)
        self.start_bridge()
        self.bridge.wait_log(r"route %s/shop: namespace %s does not exist \(creating IngressRoute "
                             r"%s/shop: HTTP 404 NotFound: namespaces \"%s\" not found\)"
                             % (ns, ns, ns, ns))
        self.kube.apply_object({"apiVersion": "v1", "kind": "Namespace",
                                "metadata": {"name": ns}})
        # A missing namespace is retried after 30 s, then less often, and at once when the
        # route's keys change: an operator who created the namespace edits a key.
        self.etcd.etcdctl("put", "canary/%s/shop/route" % ns, ROUTE + "\n# namespace created\n")
        wait_until(lambda: weights_of(self.kube.get(G, ns, "ingressroutes", "shop")) ==
                   {"shop-v1": 80, "shop-v2": 20}, 30,
                   what="IngressRoute created once the namespace exists")


class PatchedMode(RealKubeCase):
    def helm_route(self):
        return {"apiVersion": "traefik.io/v1alpha1", "kind": "IngressRoute",
                "metadata": {"name": "shop", "namespace": self.ns,
                             "labels": {"app": "shop", "helm.sh/chart": "shop-1.2.3"},
                             "annotations": {"meta.helm.sh/release-name": "shop"}},
                "spec": {"entryPoints": ["web"],
                         "routes": [
                             {"kind": "Rule", "match": "Host(`a.example.com`)", "priority": 5,
                              "services": [{"name": "shop-v1", "port": 80, "weight": 100},
                                           {"name": "shop-v2", "port": "http", "weight": 0}]},
                             {"kind": "Rule", "match": "Host(`b.example.com`)",
                              "services": [{"name": "shop-v1", "port": 80},
                                           {"name": "shop-v2", "port": 80}]}]}}

    def test_weights_put_patches_an_object_it_does_not_own(self):
        self.kube.create(G, self.ns, "ingressroutes", self.helm_route(),
                         fieldManager="helm")
        before = self.ir()
        self.start_bridge()
        self.etcd.etcdctl("put", self.key("shop", "weights"), '{"shop-v2": 25}')
        self.wait_weights({"shop-v1": 100, "shop-v2": 25}, route=0)
        after = self.ir()
        self.assertEqual(weights_of(after, 1), {"shop-v1": None, "shop-v2": 25})
        self.assertNotIn("app.kubernetes.io/managed-by", after["metadata"]["labels"])
        for obj in (before, after):
            for route in obj["spec"]["routes"]:
                for s in route["services"]:
                    s.pop("weight", None)
            for k in ("resourceVersion", "generation", "managedFields"):
                obj["metadata"].pop(k, None)
        self.assertEqual(before, after)
        self.assertEqual(self.ir()["metadata"]["generation"], 2)


if __name__ == "__main__":
    unittest.main()
