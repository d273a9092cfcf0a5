"""traefik.api against real Traefik v3 and a real kube-apiserver: after an etcd weight edit
the route's status says served=live once Traefik's own API shows the new weights, and the
propagation histogram has a stage="live" observation; an instance that never shows them
(a second real Traefik whose kubernetesCRD provider watches another namespace), or one
that is stopped, is named in the status, counted in canary_bridge_not_live_total and
told in a NotLive Event, and nothing is rolled back.

Pods mode through the real API server's pod proxy: a real kube-apiserver proxies
/api/v1/namespaces/NS/pods/NAME:PORT/proxy/... to status.podIP:PORT itself (no kubelet
involved), but refuses loopback addresses. So the Pod object (created and given a status
by the test, as a kubelet would) names the host end of a veth pair (NetnsBackends, root
needed), where a small TCP relay forwards to the real Traefik's API on 127.0.0.1. The
bridge runs as the canary-bridge ServiceAccount of deploy/rbac.yaml: first without the
optional pods Role (the status says the list is forbidden), then with that Role as
deploy/rbac.yaml has it, commented out (the route becomes live).

`check` asks the real Traefik's API for its version (ok), and a closed port FAILs."""
import json
import os
import threading
import re
import socket
import sys
import tempfile
import unittest
import urllib.request

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))
from cbtest import Bridge, Etcd, bridge_config, free_port, wait_until  # noqa: E402
from real import RBAC, NetnsBackends, RealKubeAPI, RealTraefik, require_real  # noqa: E402

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


class RealLiveCase(unittest.TestCase):
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

class LiveInRealTraefik(RealLiveCase):
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


class CheckRealTraefik(RealLiveCase):
    def test_check_asks_each_instance(self):
        with urllib.request.urlopen(self.traefik.api_url + "/api/version", timeout=5) as r:
            version = json.loads(r.read())["Version"]
        closed = "http://127.0.0.1:%d" % free_port()
        cfg = bridge_config(etcd=self.etcd, kube=self.kube,
                            traefik={"api": {"urls": [self.traefik.api_url, closed]}})
        b = Bridge(self.tmp.name, cfg, start=False, name="check")
        code, out, err = b.run_once(["check", "--timeout", "20s"])
        self.assertEqual(code, 1, out + err)
        lines = [ln for ln in out.splitlines() if "traefik api" in ln]
        self.assertEqual(lines, [
            "ok   traefik api %s: Traefik %s" % (self.traefik.api_url, version),
            "FAIL traefik api %s: connection refused (is Traefik's API enabled on that "
            "entrypoint?)" % closed], out)
        # Every other part passes: the closed port alone fails check.
        self.assertEqual([ln for ln in out.splitlines() if ln.startswith("FAIL")],
                         lines[1:], out)
        cfg["traefik"]["api"]["urls"] = [self.traefik.api_url]
        b = Bridge(self.tmp.name, cfg, start=False, name="check-ok")
        code, out, err = b.run_once(["check", "--timeout", "20s"])
        self.assertEqual(code, 0, out + err)


class BurstInRealTraefik(RealLiveCase):
    def test_a_burst_of_routes_is_confirmed(self):
        # More routes than a round asks about one by one: one list of every service per
        # Traefik instance (/api/http/services?per_page=...), as real Traefik answers it.
        names = ["burst%d" % k for k in range(12)]
        for n in names:
            self.etcd.put("canary/default/%s/route" % n, ROUTE.replace("shop.example.com",
                                                                       n + ".example.com"))
            self.etcd.put("canary/default/%s/weights" % n, "shop-v1=60, shop-v2=40")
        self.start_bridge([self.traefik.api_url])

        def served():
            out = {}
            for n in names:
                text = self.etcd.get("canary/default/%s/status" % n)
                out[n] = json.loads(text).get("served") if text else None
            return out
        wait_until(lambda: set(served().values()) == {"live"}, 60,
                   what="every route live (have %r)" % served())
        self.assertIn("routes to confirm: one list of all services from each of 1 instances",
                      self.bridge.log_text())


class Relay:
    """TCP relay from (host, any free port) to 127.0.0.1:target, one thread per direction."""

    def __init__(self, host, target):
        self.target = target
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.done = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.done:
            try:
                a, _ = self.sock.accept()
                b = socket.create_connection(("127.0.0.1", self.target), timeout=10)
            except OSError:
                continue
            for x, y in ((a, b), (b, a)):
                threading.Thread(target=self._pump, args=(x, y), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for x in (src, dst):
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self):
        self.done = True
        self.sock.close()


def optional_pods_role(namespace):
    """The commented-out Role and RoleBinding of deploy/rbac.yaml, uncommented."""
    with open(RBAC) as f:
        text = f.read()
    block = text[text.index("# traefik.api.pods"):text.index("# A long-lived token")]
    # The YAML lines: "#apiVersion: ...", "#  name: ..."; the prose: "# The ...".
    lines = [ln[1:] for ln in block.splitlines() if ln.startswith("#") and
             (not ln.startswith("# ") or ln.startswith("#  "))]
    docs = [d for d in yaml.safe_load_all("\n".join(lines)) if d]
    for d in docs:
        d["metadata"]["namespace"] = namespace
    return docs


class PodsThroughTheRealPodProxy(RealLiveCase):
    def test_pods_mode(self):
        if os.geteuid() != 0:
            self.skipTest("needs root for the veth (NetnsBackends)")
        net = NetnsBackends(self.tmp.name, {"unused": 8081})
        self.addCleanup(net.stop)
        relay = Relay(net.host_address, self.traefik.api_port)
        self.addCleanup(relay.stop)
        admin = self.kube
        admin.apply_object({"apiVersion": "v1", "kind": "Namespace",
                            "metadata": {"name": "traefik"}})
        # The ServiceAccount admission wants the namespace's default account (no
        # controller manager here makes it).
        admin.apply_object({"apiVersion": "v1", "kind": "ServiceAccount",
                            "metadata": {"name": "default", "namespace": "traefik"}})
        pods = "/api/v1/namespaces/traefik/pods"
        st, _, body = admin.request("POST", pods, {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "traefik-0", "labels": {"app.kubernetes.io/name": "traefik"}},
            "spec": {"automountServiceAccountToken": False,
                     "containers": [{"name": "traefik", "image": "traefik:v3.6"}]}})
        self.assertEqual(st, 201, body)
        body["status"] = {"phase": "Running", "podIP": net.host_address,
                          "podIPs": [{"ip": net.host_address}],
                          "conditions": [{"type": "Ready", "status": "True"}]}
        st, _, body = admin.request("PUT", pods + "/traefik-0/status", body)
        self.assertEqual(st, 200, body)
        # The real pod proxy reaches the real Traefik's API.
        st, _, body = admin.request(
            "GET", pods + "/traefik-0:%d/proxy/api/version" % relay.port)
        self.assertEqual((st, body.get("Codename") if isinstance(body, dict) else body),
                         (200, "canary-bridge-test"))

        self.etcd.put(KEY + "route", ROUTE)
        self.etcd.put(KEY + "weights", "shop-v1=70, shop-v2=30")
        self.bridge = Bridge(self.tmp.name, bridge_config(
            etcd=self.etcd, kube=self.kube, metrics_port=self.metrics_port,
            reconcile={"require_ready_endpoints": False, "status": True},
            traefik={"api": {"pods": {"namespace": "traefik", "port": relay.port},
                             "interval": "100ms", "timeout": "2s"}}))
        self.addCleanup(self.bridge.stop)
        self.bridge.wait_log(r"ready: ", timeout=30)
        # deploy/rbac.yaml alone does not allow it:
        self.wait_status(lambda s: s.get("served", "").startswith(
            "stale: traefik.api.pods: cannot list the pods: HTTP 403"), "pods forbidden")
        for obj in optional_pods_role("traefik"):
            admin.apply_object(obj)
        self.wait_status(lambda s: s.get("served") == "live" and
                         s.get("weights") == {"shop-v1": 70, "shop-v2": 30},
                         "live through the pod proxy")
        self.etcd.put(KEY + "weights", "shop-v1=20, shop-v2=80")
        self.wait_status(lambda s: s.get("served") == "live" and
                         s.get("weights") == {"shop-v1": 20, "shop-v2": 80}, "the edit live")
        self.assertGreaterEqual(metric(self.metrics(), "canary_bridge_propagation_seconds_count",
                                       {"stage": "live"}), 1)


if __name__ == "__main__":
    unittest.main()
