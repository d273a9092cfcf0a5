"""traefik.api against real Traefik v3 and a real kube-apiserver: after an etcd weight edit
the route's status says served=live once Traefik's own API shows the new weights, and the
propagation histogram has a stage="live" observation; an instance that never shows them
(a second real Traefik whose kubernetesCRD provider watches another namespace), or one
that is stopped, is named in the status, counted in canary_bridge_not_live_total and
told in a NotLive Event, and nothing is rolled back."""
import json
import os
import re
import sys
import tempfile
import unittest
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))
from cbtest import Bridge, Etcd, bridge_config, free_port, wait_until  # noqa: E402
from real import RealKubeAPI, RealTraefik, require_real  # noqa: E402

KEY = "canary/default/shop/"
ROUTE = """match: Host(`shop.example.com`)
entryPoints: [web]
services:
  - name: shop-v1
    port: 80
  - name: shop-v2
    port: 80
"""


def metric(text, name, labels):
    want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"^%s\{([^}]*)\} (\S+)$" % re.escape(name), line)
        if m and ",".join(sorted(m.group(1).split(","))) == want:
            return float(m.group(2))
    return None


class LiveInRealTraefik(unittest.TestCase):
    def setUp(self):
        require_real("kube-apiserver", "traefik")
        self.tmp = tempfile.TemporaryDirectory(prefix="cb-real-live-")
        self.addCleanup(self.tmp.cleanup)
        self.kube = RealKubeAPI(self.tmp.name)
        self.addCleanup(self.kube.stop)
        for name in ("shop-v1", "shop-v2"):
            self.kube.apply_object({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
        self.traefik = RealTraefik(self.tmp.name, self.kube, throttle="200ms", extra={
            "providers": {"kubernetesCRD": {"allowEmptyServices": True}}})
        self.addCleanup(self.traefik.stop)
        self.etcd = Etcd(self.tmp.name)
        self.addCleanup(self.etcd.stop)
        self.metrics_port = free_port()

    def start_bridge(self, urls, timeout="30s"):
        self.bridge = Bridge(self.tmp.name, bridge_config(
            etcd=self.etcd, kube=self.kube, metrics_port=self.metrics_port,
            reconcile={"require_ready_endpoints": False, "status": True},
            traefik={"api": {"urls": urls, "interval": "100ms", "timeout": timeout}}))
        self.addCleanup(self.bridge.stop)
        self.bridge.wait_log(r"ready: ", timeout=30)

    def status(self):
        text = self.etcd.get(KEY + "status")
        return json.loads(text) if text else {}

    def wait_status(self, pred, what, timeout=30):
        try:
            wait_until(lambda: pred(self.status()), timeout, what=what)
        except AssertionError as e:
            raise AssertionError("%s (status %r)\n--- bridge log ---\n%s" % (
                e, self.status(), self.bridge.log_tail(30))) from None

    def metrics(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_port,
                                    timeout=5) as r:
            return r.read().decode()

    def events(self, reason):
        return [e for e in self.kube.list("", "default", "events")["items"]
                if e.get("reason") == reason]

    def test_an_etcd_edit_ends_live(self):
        self.etcd.put(KEY + "route", ROUTE)
        self.etcd.put(KEY + "weights", "shop-v1=90, shop-v2=10")
        self.start_bridge([self.traefik.api_url])
        self.wait_status(lambda s: s.get("served") == "live" and
                         s.get("weights") == {"shop-v1": 90, "shop-v2": 10}, "first split live")
        self.etcd.put(KEY + "weights", "shop-v1=40, shop-v2=60")
        self.wait_status(lambda s: s.get("served") == "live" and s.get("live") is True and
                         s.get("weights") == {"shop-v1": 40, "shop-v2": 60}, "the edit live")
        st = self.status()
        self.assertEqual(st["state"], "applied")
        self.assertRegex(st["live_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        # The etcd edit was timed up to Traefik: a live observation, beside the applied one.
        text = self.metrics()
        self.assertGreaterEqual(metric(text, "canary_bridge_propagation_seconds_count",
                                       {"stage": "live"}), 1)
        self.assertGreaterEqual(metric(text, "canary_bridge_propagation_seconds_count",
                                       {"stage": "applied"}), 1)
        self.assertEqual(self.events("NotLive"), [])

    def test_a_lagging_instance_is_named(self):
        # A second real Traefik that never sees the route: it watches another namespace.
        blind = RealTraefik(self.tmp.name, self.kube, name="traefik-blind", throttle="200ms",
                            extra={"providers": {"kubernetesCRD": {
                                "allowEmptyServices": True, "namespaces": ["elsewhere"]}}})
        self.addCleanup(blind.stop)
        self.etcd.put(KEY + "route", ROUTE)
        self.etcd.put(KEY + "weights", "shop-v1=90, shop-v2=10")
        self.start_bridge([self.traefik.api_url, blind.api_url], timeout="2s")
        self.wait_status(lambda s: s.get("served", "").startswith("stale: "), "stale")
        st = self.status()
        self.assertEqual(st["served"], "stale: %s has no weighted service for IngressRoute "
                         "default/shop" % blind.api_url)
        self.assertIs(st["live"], False)
        self.assertEqual(st["state"], "applied")  # applied in the cluster; nothing rolled back
        self.assertEqual(st["weights"], {"shop-v1": 90, "shop-v2": 10})
        wait_until(lambda: metric(self.metrics(), "canary_bridge_not_live_total",
                                  {"instance": blind.api_url}) == 1, what="not_live counter")
        wait_until(lambda: self.events("NotLive"), 10, what="a NotLive Event")
        self.assertIn(blind.api_url, self.events("NotLive")[0]["message"])

        # The first instance stops: the next change names it, and what it answers.
        self.traefik.stop()
        self.etcd.put(KEY + "weights", "shop-v1=50, shop-v2=50")
        self.wait_status(lambda s: s.get("weights") == {"shop-v1": 50, "shop-v2": 50} and
                         s.get("served", "").startswith("stale: %s does not answer"
                                                        % self.traefik.api_url),
                         "the stopped instance named")


if __name__ == "__main__":
    unittest.main()
