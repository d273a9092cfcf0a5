"""Backend checks against a real kube-apiserver: the Service and EndpointSlice caches
(sinks/backends.h) see real objects, with the canary-bridge ServiceAccount of
deploy/rbac.yaml (so the read rights that file grants are the ones the checks need), and a
change reaches them through the watch.

tests/tools/backends_probe.c (built next to the bridge, in <build>/tests/) runs the module
alone and prints the check of one service each time its answer changes; the bridge itself
refuses a route whose service has no ready endpoint and applies it once one is ready.  The
real apiserver runs no controllers, so the tests write the EndpointSlices themselves, as
the EndpointSlice controller would."""
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))
from cbtest import REPO, Bridge, Etcd, bridge_config, wait_until  # noqa: E402
from real import RealKubeAPI, require_real  # noqa: E402

D = "discovery.k8s.io"


def probe_binary():
    bridge = os.environ.get("CANARY_BRIDGE") or os.path.join(REPO, "build", "canary-bridge")
    return os.path.join(os.path.dirname(bridge), "tests", "backends_probe")


class Probe:
    """backends_probe on one service; its output lines in a queue."""

    def __init__(self, kubeconfig, ns, svc, port):
        self.proc = subprocess.Popen([probe_binary(), kubeconfig, ns, svc, port],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = queue.Queue()
        self.err = []
        self.pumps = [threading.Thread(target=self._pump, args=(f, put), daemon=True)
                      for f, put in ((self.proc.stdout, self.lines.put),
                                     (self.proc.stderr, self.err.append))]
        for t in self.pumps:
            t.start()

    @staticmethod
    def _pump(f, put):
        for line in f:
            put(line.rstrip("\n"))

    def next(self, timeout=30):
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("backends_probe printed nothing in %ss; stderr:\n%s"
                                 % (timeout, "\n".join(self.err))) from None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=30)
        for t in self.pumps:      # both pipes are at their end once it exited
            t.join(timeout=10)
        self.proc.stdout.close()
        self.proc.stderr.close()
        return rc


class BackendsReal(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        require_real("kube-apiserver")
        if not os.access(probe_binary(), os.X_OK):
            raise AssertionError("not built: %s (ninja -C <build>)" % probe_binary())
        cls.tmp = tempfile.TemporaryDirectory(prefix="cb-real-backends-")
        try:
            cls.kube = RealKubeAPI(cls.tmp.name)
        except BaseException:
            cls.tmp.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.kube.stop()
        cls.tmp.cleanup()

    def test_caches_see_a_real_service_and_endpointslice(self):
        kube, ns = self.kube, "backends1"
        kube.create_namespace(ns)
        kube.create("", ns, "services", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "shop-v2"},
            "spec": {"selector": {"app": "shop"},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
        endpoints = [{"addresses": ["10.1.0.1"], "conditions": {"ready": False}}]
        kube.create(D, ns, "endpointslices", {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "shop-v2-abcde",
                         "labels": {"kubernetes.io/service-name": "shop-v2"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints})
        probe = Probe(kube.kubeconfig, ns, "shop-v2", "80")   # the bridge's identity
        try:
            self.assertEqual(probe.next(), "not-ready shop-v2 has no ready endpoints (1 not ready)")
            endpoints[0]["conditions"]["ready"] = True
            kube.merge_patch(D, ns, "endpointslices", "shop-v2-abcde", {"endpoints": endpoints})
            self.assertEqual(probe.next(), "ok shop-v2 has 1 ready endpoint on port 80")
            kube.merge_patch("", ns, "services", "shop-v2", {"spec": {"ports": [
                {"name": "http", "port": 8081, "targetPort": 8080}]}})
            self.assertEqual(probe.next(),
                             "no-port shop-v2 does not expose port 80 (it has 8081/http)")
            kube.delete("", ns, "services", "shop-v2")
            self.assertEqual(probe.next(), "missing Service shop-v2 not found in namespace "
                             + ns)
        finally:
            self.assertEqual(probe.stop(), 0, "\n".join(probe.err))

    def test_bridge_refuses_a_service_without_ready_endpoints_until_one_is_ready(self):
        kube, ns = self.kube, "backends2"
        kube.create_namespace(ns)
        kube.add_service(ns, "shop-v1", ports=[("http", 80)], ready=1)
        kube.add_service(ns, "shop-v2", ports=[("http", 80)], ready=0, not_ready=1)
        d = tempfile.mkdtemp(prefix="bridge-", dir=self.tmp.name)
        etcd = Etcd(d)
        self.addCleanup(etcd.stop)
        key = "canary/%s/shop/" % ns
        etcd.etcdctl("put", key + "route", "match: Host(`shop.example.com`)\nservices:\n"
                     "  - {name: shop-v1, port: 80}\n  - {name: shop-v2, port: http}\n")
        etcd.etcdctl("put", key + "weights", "shop-v1=90, shop-v2=10")
        bridge = Bridge(d, bridge_config(etcd=etcd, kube=kube, reconcile={"status": True}))
        self.addCleanup(bridge.stop)

        def status():
            text = etcd.get(key + "status")
            return json.loads(text) if text else {}
        wait_until(lambda: status().get("state") == "error", 30,
                   what="an error status (have %r)" % status())
        self.assertIn("shop-v2 has no ready endpoints (1 not ready)", status()["message"])
        self.assertIsNone(kube.get("traefik.io", ns, "ingressroutes", "shop"))
        kube.set_endpoints(ns, "shop-v2", ready=1)      # no key is written
        wait_until(lambda: (kube.get("traefik.io", ns, "ingressroutes", "shop") or {}).get(
            "spec", {}).get("routes"), 30, what="the IngressRoute, once shop-v2 is ready")
        services = kube.get("traefik.io", ns, "ingressroutes", "shop")["spec"]["routes"][-1][
            "services"]
        self.assertEqual({s["name"]: s["weight"] for s in services},
                         {"shop-v1": 90, "shop-v2": 10})
        wait_until(lambda: status().get("state") == "applied", 30, what="an applied status")


if __name__ == "__main__":
    unittest.main()
