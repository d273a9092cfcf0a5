"""Real Traefik v3 reading what the bridge wrote to a real kube-apiserver:
the weights an etcdctl put sets reach Traefik's own dynamic configuration, as its API
shows it (the weighted service of the IngressRoute).  Traffic through the entry point
(backends in a network namespace) is tests/real/test_traffic_real.py.

Traefik runs with allowEmptyServices, so Services without endpoints still give the
route and its weighted service (with no servers) instead of being dropped."""
import os
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))
from cbtest import Bridge, Etcd, bridge_config, wait_until  # noqa: E402
from real import RealKubeAPI, RealTraefik, require_real  # noqa: E402

ROUTE = """match: Host(`shop.example.com`)
entryPoints: [web]
services:
  - name: shop-v1
    port: 80
  - name: shop-v2
    port: 80
"""


class TraefikReadsTheBridge(unittest.TestCase):
    def setUp(self):
        require_real("kube-apiserver", "traefik")
        self.tmp = tempfile.TemporaryDirectory(prefix="cb-real-traefik-")
        self.addCleanup(self.tmp.cleanup)
        self.kube = RealKubeAPI(self.tmp.name)
        self.addCleanup(self.kube.stop)
        for name in ("shop-v1", "shop-v2"):
            self.kube.apply_object({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
        self.traefik = RealTraefik(self.tmp.name, self.kube, extra={
            "providers": {"kubernetesCRD": {"allowEmptyServices": True}}})
        self.addCleanup(self.traefik.stop)
        self.etcd = Etcd(self.tmp.name)
        self.addCleanup(self.etcd.stop)

    def traefik_weights(self):
        """{service: weight} of Traefik's weighted service for IngressRoute default/shop."""
        for svc in self.traefik.api("/api/http/services"):
            weighted = svc.get("weighted")
            if svc.get("provider") == "kubernetescrd" and weighted and \
                    svc["name"].startswith("default-shop-"):
                return {w["name"].split("@")[0]: w.get("weight")
                        for w in weighted.get("services", [])}
        return None

    def wait_traefik(self, want):
        try:
            wait_until(lambda: self.traefik_weights() == want, 30,
                       what="Traefik's weighted service %r" % want)
        except AssertionError as e:
            raise AssertionError("%s (have %r)\n--- traefik log ---\n%s" % (
                e, self.traefik_weights(), self.traefik.log_tail(20))) from None

    def test_weights_put_with_etcdctl_reach_traefik(self):
        self.etcd.etcdctl("put", "canary/default/shop/route", ROUTE)
        self.etcd.etcdctl("put", "canary/default/shop/weights", "shop-v1=90, shop-v2=10")
        # The Services have no endpoints (allowEmptyServices above): the bridge checks that
        # they exist and expose the port, not that they are ready.
        bridge = Bridge(self.tmp.name, bridge_config(etcd=self.etcd, kube=self.kube,
                                                     reconcile={"require_ready_endpoints": False}))
        self.addCleanup(bridge.stop)
        bridge.wait_log(r"ready: ", timeout=30)
        self.wait_traefik({"default-shop-v1-80": 90, "default-shop-v2-80": 10})
        routers = [r for r in self.traefik.routers() if r.get("provider") == "kubernetescrd"]
        self.assertEqual([r["rule"] for r in routers], ["Host(`shop.example.com`)"])
        self.assertEqual(routers[0]["entryPoints"], ["web"])
        self.etcd.etcdctl("put", "canary/default/shop/weights", "shop-v1=0, shop-v2=100")
        self.wait_traefik({"default-shop-v1-80": 0, "default-shop-v2-80": 100})


if __name__ == "__main__":
    unittest.main()
