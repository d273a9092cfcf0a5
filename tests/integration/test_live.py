"""traefik.api.pods on real etcd and the Kubernetes API test server: the Traefik pods are
listed and each one's API is read through the API server's pod proxy
(/api/v1/namespaces/NS/pods/NAME:PORT/proxy/api/http/services), which the test server
forwards to status.podIP and the port, as a real one does. The "pods" are small Traefik API
stand-ins on 127.0.0.1 and 127.0.0.2 whose answers the tests set (the answers a real
Traefik v3.6 gives; tests/real/test_live_real.py runs the real one, over traefik.api.urls
and through a real kube-apiserver's pod proxy, which refuses loopback pod addresses).

Also: without traefik.api nothing is asked and the status has no served field; `check`
asks for the pods rights only in pods mode, and asks every instance (URLs, or the pods
through the proxy) for /api/version, one ok/FAIL line each."""
import http.server
import json
import os
import socket
import sys
import tempfile
import threading
import unittest
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
from cbtest import Bridge, Etcd, KubeAPI, bridge_config, free_port, wait_until  # noqa: E402

KEY = "canary/default/shop/"
ROUTE = """match: Host(`shop.example.com`)
services:
  - name: shop-v1
    port: 80
  - name: shop-v2
    port: 80
"""


class FakeTraefik:
    """/api/http/services?search=... answering the weighted service of IngressRoute
    default/shop with self.weights (None: not loaded); /api/version with self.version
    (None: 404, as when the port is not the API's entrypoint)."""

    def __init__(self, host, port, version="3.6.12"):
        self.weights, self.asked, self.version = None, 0, version
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                q = urllib.parse.parse_qs(url.query)
                fake.asked += 1
                if url.path == "/api/version" and fake.version:
                    body = json.dumps({"Version": fake.version, "Codename": "ramequin",
                                       "startDate": "2026-01-01T00:00:00Z"}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if url.path != "/api/http/services":
                    self.send_error(404)
                    return
                items = []
                if fake.weights is not None:
                    items.append({
                        "name": "default-shop-38bcef08ab977d6de43a@kubernetescrd",
                        "provider": "kubernetescrd", "type": "weighted", "status": "enabled",
                        "weighted": {"services": [{"name": "default-%s-80" % s, "weight": w}
                                                  for s, w in fake.weights.items()]}})
                search = (q.get("search") or [""])[0]
                body = json.dumps([i for i in items if search in i["name"]]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer((host, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def port_free_on_both():
    """A port free on 127.0.0.1 and 127.0.0.2 (pods mode asks every pod on one port)."""
    for _ in range(50):
        port = free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.2", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no port free on both loopback addresses")


RESOURCES = ["ingressroutes", "middlewares", "traefikservices", "events", "services",
             "endpointslices", "leases", "namespaces", "customresourcedefinitions", "pods",
             "pods/proxy"]


def rules_without(resource):
    """Everything the bridge may use, but resource."""
    return [{"verbs": ["*"], "apiGroups": ["*"],
             "resources": [r for r in RESOURCES if r != resource]}]


class LiveCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="cb-live-")
        self.addCleanup(self.tmp.cleanup)
        self.etcd = Etcd(self.tmp.name)
        self.addCleanup(self.etcd.stop)
        self.kube = KubeAPI(self.tmp.name)
        self.addCleanup(self.kube.stop)
        self.kube.create_namespace("traefik")
        self.metrics_port = free_port()

    def add_pod(self, name, ip, phase="Running", labels=None):
        self.kube.create("", "traefik", "pods", {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "traefik",
                         "labels": labels or {"app.kubernetes.io/name": "traefik"}},
            "spec": {"containers": [{"name": "traefik", "image": "traefik:v3.6"}]},
            "status": {"phase": phase, "podIP": ip}})

    def start_bridge(self, traefik=None):
        cfg = bridge_config(etcd=self.etcd, kube=self.kube, metrics_port=self.metrics_port,
                            reconcile={"status": True}, traefik=traefik or {})
        self.bridge = Bridge(self.tmp.name, cfg)
        self.addCleanup(self.bridge.stop)
        self.bridge.wait_log(r"ready: ", timeout=20)

    def status(self):
        text = self.etcd.get(KEY + "status")
        return json.loads(text) if text else {}

    def wait_status(self, pred, what, timeout=15):
        try:
            wait_until(lambda: pred(self.status()), timeout, what=what)
        except AssertionError as e:
            raise AssertionError("%s (status %r)\n--- bridge log ---\n%s" % (
                e, self.status(), self.bridge.log_tail(30))) from None

    def events(self, reason):
        return [e for e in self.kube.list("", "default", "events")["items"]
                if e.get("reason") == reason]


class PodsMode(LiveCase):
    def setUp(self):
        super().setUp()
        self.port = port_free_on_both()
        self.a = FakeTraefik("127.0.0.1", self.port)
        self.addCleanup(self.a.stop)
        self.b = FakeTraefik("127.0.0.2", self.port)
        self.addCleanup(self.b.stop)
        self.add_pod("traefik-a", "127.0.0.1")
        self.add_pod("traefik-b", "127.0.0.2")
        self.add_pod("traefik-starting", "127.0.0.3", phase="Pending")   # never asked
        self.add_pod("other", "127.0.0.4", labels={"app": "other"})      # not selected
        self.api = {"api": {"pods": {"namespace": "traefik", "port": self.port},
                            "interval": "50ms", "timeout": "1s"}}

    def test_every_pod_confirms_and_a_lagging_pod_is_named(self):
        self.a.weights = self.b.weights = {"shop-v1": 90, "shop-v2": 10}
        self.etcd.put(KEY + "route", ROUTE)
        self.etcd.put(KEY + "weights", "shop-v1=90, shop-v2=10")
        self.start_bridge(self.api)
        self.wait_status(lambda s: s.get("served") == "live" and s.get("live") is True,
                         "live in both pods")
        self.assertTrue(self.a.asked and self.b.asked)
        proxied = [r["path"] for r in self.kube.requests() if "/proxy/" in r["path"]]
        self.assertIn("/api/v1/namespaces/traefik/pods/traefik-a:%d/proxy/api/http/services"
                      % self.port, proxied)
        self.assertFalse([p for p in proxied if "traefik-starting" in p or "other" in p])
        # `status` shows it, from the status key.
        cli = Bridge(self.tmp.name, bridge_config(etcd=self.etcd, kube=self.kube),
                     start=False, name="cli")
        code, out, err = cli.run_once(["status"])
        self.assertEqual(code, 0, out + err)
        lines = out.splitlines()
        self.assertEqual(lines[0].split()[4:6], ["APPLIED", "SERVED"])
        self.assertRegex(lines[1], r"Z  live  ")   # after APPLIED's time
        code, out, err = cli.run_once(["status", "-o", "json"])
        self.assertEqual(json.loads(out)["routes"][0]["served"], "live")

        # Pod a loads the change, pod b never does: b is named, with what it reports.
        self.a.weights = {"shop-v1": 50, "shop-v2": 50}
        self.etcd.put(KEY + "weights", "shop-v1=50, shop-v2=50")
        self.wait_status(lambda s: s.get("served", "").startswith("stale"), "stale")
        st = self.status()
        self.assertEqual(st["served"], "stale: traefik/traefik-b reports shop-v1=90 (the route "
                                       "gives it 50)")
        self.assertIs(st["live"], False)
        self.assertEqual((st["state"], st["weights"]), ("applied", {"shop-v1": 50, "shop-v2": 50}))
        wait_until(lambda: self.events("NotLive"), 10, what="a NotLive Event")
        ev = self.events("NotLive")[0]
        self.assertEqual(ev["involvedObject"]["kind"], "IngressRoute")
        self.assertIn("traefik/traefik-b reports shop-v1=90", ev["message"])

        # b catches up: the route is asked again (every timeout) and becomes live.
        self.b.weights = {"shop-v1": 50, "shop-v2": 50}
        self.wait_status(lambda s: s.get("served") == "live", "live once b caught up")

    def test_pods_that_cannot_be_listed_are_said(self):
        self.kube.control("POST", "rbac", {"token": self.kube.token,
                                           "rules": rules_without("pods")})
        self.etcd.put(KEY + "route", ROUTE)
        self.start_bridge(self.api)
        self.wait_status(lambda s: s.get("served", "").startswith("stale"), "stale")
        self.assertRegex(self.status()["served"],
                         r"^stale: traefik.api.pods: cannot list the pods: HTTP 403")
        # An optional right that is missing is this feature's problem, not the bridge's:
        # still ready, and no word of the API server refusing the bridge.
        with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % self.metrics_port,
                                    timeout=5) as r:
            self.assertEqual(r.status, 200)
        self.assertNotIn("refuses the bridge", self.bridge.log_text())
        # Said once, not at every round.
        self.assertEqual(self.bridge.log_text().count("cannot list the pods"), 2)  # + not served


class Off(LiveCase):
    def test_without_traefik_api_nothing_is_asked(self):
        self.etcd.put(KEY + "route", ROUTE)
        self.etcd.put(KEY + "weights", "shop-v1=90, shop-v2=10")
        self.start_bridge()
        self.wait_status(lambda s: s.get("state") == "applied", "applied")
        self.assertNotIn("served", self.status())
        self.assertNotIn("live", self.status())
        self.assertFalse([r for r in self.kube.requests() if "/pods" in r["path"]])


class Check(LiveCase):
    def check(self, traefik=None, args=()):
        b = Bridge(self.tmp.name, bridge_config(etcd=self.etcd, kube=self.kube,
                                                traefik=traefik or {}),
                   start=False, name="check")
        return b.run_once(["check"] + list(args))

    def test_check_asks_for_the_pods_rights_in_pods_mode_only(self):
        port = free_port()
        fake = FakeTraefik("127.0.0.1", port)
        self.addCleanup(fake.stop)
        self.add_pod("traefik-a", "127.0.0.1")
        api = {"api": {"pods": {"namespace": "traefik", "port": port}}}
        code, out, err = self.check(api)
        self.assertEqual(code, 0, out + err)
        self.assertIn("ok   list pods in ns traefik\n", out)
        self.assertIn("ok   get pods/proxy in ns traefik\n", out)
        # Everything but the pod proxy.
        self.kube.control("POST", "rbac", {"token": self.kube.token,
                                           "rules": rules_without("pods/proxy")})
        code, out, err = self.check(api)
        self.assertEqual(code, 1, out + err)
        self.assertIn("FAIL get pods/proxy in ns traefik: denied", out)
        self.assertIn("ok   list pods in ns traefik\n", out)
        code, out, err = self.check()
        self.assertNotIn("pods", out)
        self.assertNotIn("traefik api", out)

    def test_check_asks_each_url_for_its_version(self):
        ok_port, api_less_port, closed_port = free_port(), free_port(), free_port()
        good = FakeTraefik("127.0.0.1", ok_port)
        self.addCleanup(good.stop)
        api_less = FakeTraefik("127.0.0.1", api_less_port, version=None)
        self.addCleanup(api_less.stop)
        urls = ["http://cb:s3cret@127.0.0.1:%d" % ok_port,
                "http://127.0.0.1:%d/" % api_less_port,
                "http://127.0.0.1:%d" % closed_port]
        code, out, err = self.check({"api": {"urls": urls}})
        self.assertEqual(code, 1, out + err)
        lines = [l for l in out.splitlines() if "traefik api" in l]
        self.assertEqual(lines[0], "ok   traefik api http://127.0.0.1:%d: Traefik 3.6.12" % ok_port)
        self.assertRegex(lines[1], r"^FAIL traefik api http://127.0.0.1:%d/: GET /api/version: "
                                   r"HTTP 404 \(.*api\.insecure.*entrypoint" % api_less_port)
        self.assertEqual(lines[2], "FAIL traefik api http://127.0.0.1:%d: connection refused "
                                   "(is Traefik's API enabled on that entrypoint?)" % closed_port)
        self.assertEqual(len(lines), 3, out)
        self.assertNotIn("s3cret", out + err)
        # The other checks still print and pass.
        self.assertIn("ok   source etcd", out)
        # All instances fine: check passes.
        code, out, err = self.check({"api": {"urls": urls[:1]}})
        self.assertEqual(code, 0, out + err)
        self.assertIn("ok   traefik api http://127.0.0.1:%d: Traefik 3.6.12\n" % ok_port, out)

    def test_check_gives_up_on_a_silent_instance_at_the_timeout(self):
        silent = socket.socket()
        self.addCleanup(silent.close)
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)   # connections complete in the kernel; nothing ever answers
        url = "http://127.0.0.1:%d" % silent.getsockname()[1]
        code, out, err = self.check({"api": {"urls": [url], "request_timeout": "60s"}},
                                    ["--timeout", "2s"])
        self.assertEqual(code, 1, out + err)
        self.assertRegex(out, r"\nFAIL traefik api %s: [^\n]*(no answer within 2 s|[Tt]imed? ?out)"
                         % url)

    def test_check_asks_each_traefik_pod(self):
        port = port_free_on_both()
        a = FakeTraefik("127.0.0.1", port)
        self.addCleanup(a.stop)
        api = {"api": {"pods": {"namespace": "traefik", "port": port}}}
        code, out, err = self.check(api)
        self.assertEqual(code, 1, out + err)
        self.assertIn("FAIL traefik api pods traefik/app.kubernetes.io/name=traefik: "
                      "no pod matches\n", out)
        self.add_pod("traefik-a", "127.0.0.1")
        self.add_pod("traefik-b", "127.0.0.2")   # nothing listens there
        self.add_pod("traefik-starting", "127.0.0.3", phase="Pending")   # not asked
        code, out, err = self.check(api)
        self.assertEqual(code, 1, out + err)
        lines = [l for l in out.splitlines() if "traefik api" in l]
        self.assertEqual(lines[0], "ok   traefik api pod traefik/traefik-a: Traefik 3.6.12")
        self.assertRegex(lines[1], r"^FAIL traefik api pod traefik/traefik-b: .*refused.*"
                                   r"\(is Traefik's API enabled on that entrypoint\?\)$")
        self.assertEqual(len(lines), 2, out)
        proxied = [r["path"] for r in self.kube.requests() if "/proxy/" in r["path"]]
        self.assertIn("/api/v1/namespaces/traefik/pods/traefik-a:%d/proxy/api/version" % port,
                      proxied)


if __name__ == "__main__":
    unittest.main()
