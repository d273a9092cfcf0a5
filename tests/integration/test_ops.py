"""Operations: HTTP endpoints and metrics, sd_notify readiness and
watchdog, SIGHUP reload (good and broken), SIGTERM with a write in flight; the command
line: options anywhere, --credentials-dir, --dry-run in every line."""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import unittest
import urllib.request

import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
from cbtest import REPO, Bridge, Etcd, KubeAPI, bridge_config, free_port, wait_until  # noqa: E402
from consul import Consul  # noqa: E402

G = "traefik.io"
ROUTE = """match: Host(`shop.example.com`)
services:
  - {name: shop-v1, port: 80}
  - {name: shop-v2, port: 80}
"""


def weights_of(obj):
    return obj and {s["name"]: s.get("weight") for s in obj["spec"]["routes"][-1]["services"]}


def http_get(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric(text, name, labels=None):
    """The value of one series in Prometheus text, or None."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$', line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if labels is None or all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return None


class Notify:
    """A service manager's end of the sd_notify protocol: a unix datagram socket in the
    temp dir, read all the time by a thread as systemd does (reading=False: a manager that
    has stopped reading, so the socket's queue fills).  Messages are kept in order in .msgs."""

    def __init__(self, tmpdir, name="notify.sock", reading=True):
        self.path = os.path.join(tmpdir, name)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.msgs = []
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True) if reading else None
        if self.thread:
            self.thread.start()

    def _read(self):
        while not self.done.is_set():
            try:
                m = self.sock.recv(4096).decode()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.msgs.append(m)

    def close(self):
        self.done.set()
        if self.thread:
            self.thread.join()
        self.sock.close()

    def env(self, watchdog_usec=200000):
        env = dict(os.environ, NOTIFY_SOCKET=self.path, WATCHDOG_USEC=str(watchdog_usec))
        env.pop("WATCHDOG_PID", None)
        return env

    def snapshot(self):
        with self.lock:
            return list(self.msgs)

    def mark(self):
        return len(self.snapshot())

    def got(self, pred, since=0):
        """The first message from index `since` on that satisfies pred, or None."""
        return next((m for m in self.snapshot()[since:] if pred(m)), None)

    def index(self, text, since=0):
        """Index of the first message from `since` on with `text` as a whole line, or None."""
        return next((i for i, m in enumerate(self.snapshot()) if i >= since
                     and text in m.split("\n")), None)

    def wait(self, text, since=0, what=None, timeout=10):
        """Wait for a message with `text` as a whole line after index `since`; its index."""
        return wait_until(lambda: self.index(text, since) is not None and
                          self.index(text, since) + 1, timeout=timeout, what=what or text) - 1


class OpsCase(unittest.TestCase):
    """Every bridge here runs as under a service manager: with NOTIFY_SOCKET and a watchdog
    (the timer must never keep a stopped or reloaded pipeline alive)."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="cb-ops-")
        self.addCleanup(self.tmp.cleanup)
        self.etcd = Etcd(self.tmp.name)
        self.addCleanup(self.etcd.stop)
        self.kube = KubeAPI(self.tmp.name)
        self.addCleanup(self.kube.stop)
        self.port = free_port()
        self.notify = Notify(self.tmp.name)
        self.addCleanup(self.notify.close)

    def bridge(self, env=None, **overrides):
        cfg = bridge_config(etcd=self.etcd, kube=self.kube, metrics_port=self.port, **overrides)
        b = Bridge(self.tmp.name, cfg, env=env or self.notify.env())
        self.addCleanup(b.stop)
        return b

    def assert_stops(self, b, code=0):
        """SIGTERM: STOPPING=1, then the process exits with `code`."""
        mark = self.notify.mark()
        b.signal(signal.SIGTERM)
        self.notify.wait("STOPPING=1", mark)
        try:
            self.assertEqual(b.proc.wait(timeout=15), code)
        except subprocess.TimeoutExpired:
            self.fail("SIGTERM: STOPPING=1 sent but the process did not exit:\n" + b.log_tail())
        # Every generation (each reload starts one) closed every handle it opened.
        self.assertNotRegex(b.log_text(), r"handles still open")

    def ir(self):
        return self.kube.get(G, "default", "ingressroutes", "shop")


class Endpoints(OpsCase):
    def test_healthz_readyz_and_every_metric(self):
        self.etcd.put("canary/default/shop/route", ROUTE)
        self.etcd.put("canary/default/shop/weights", "shop-v1=90, shop-v2=10")
        b = self.bridge()
        wait_until(lambda: weights_of(self.ir()) == {"shop-v1": 90, "shop-v2": 10},
                   what="first sync")
        self.assertEqual(http_get(self.port, "/healthz"), (200, "ok\n"))
        wait_until(lambda: http_get(self.port, "/readyz")[0] == 200, what="ready")
        self.assertEqual(http_get(self.port, "/nope")[0], 404)
        self.etcd.put("canary/default/shop/weights", "shop-v1=70, shop-v2=30")
        wait_until(lambda: weights_of(self.ir()) == {"shop-v1": 70, "shop-v2": 30},
                   what="second change")
        lbl = {"namespace": "default", "route": "shop"}
        # The series is set when the write's answer arrives, just after the server stored it.
        wait_until(lambda: metric(http_get(self.port, "/metrics")[1], "canary_bridge_route_weight",
                                  {**lbl, "service": "shop-v1"}) == 70, what="the weight series")
        status, text = http_get(self.port, "/metrics")
        self.assertEqual(status, 200)
        for name in ("canary_bridge_reconcile_total", "canary_bridge_conflicts_total",
                     "canary_bridge_kube_requests_total", "canary_bridge_source_events_total",
                     "canary_bridge_propagation_seconds", "canary_bridge_routes",
                     "canary_bridge_route_weight", "canary_bridge_source_connected",
                     "canary_bridge_last_sync_timestamp_seconds", "canary_bridge_leader",
                     "canary_bridge_build_info"):
            self.assertIn("# TYPE " + name, text)
        lbl = {"namespace": "default", "route": "shop"}
        self.assertEqual(metric(text, "canary_bridge_route_weight", {**lbl, "service": "shop-v1"}), 70)
        self.assertEqual(metric(text, "canary_bridge_route_weight", {**lbl, "service": "shop-v2"}), 30)
        self.assertGreaterEqual(metric(text, "canary_bridge_reconcile_total", {"result": "applied"}), 2)
        self.assertGreaterEqual(metric(text, "canary_bridge_propagation_seconds_count"), 1)
        self.assertGreaterEqual(metric(text, "canary_bridge_source_events_total"), 1)
        self.assertEqual(metric(text, "canary_bridge_source_connected"), 1)
        self.assertEqual(metric(text, "canary_bridge_routes", {"state": "applied"}), 1)
        self.assertGreater(metric(text, "canary_bridge_last_sync_timestamp_seconds"), 1.7e9)
        self.assertTrue(b.alive())

    def test_route_weight_series_follow_the_services_and_go_with_the_route(self):
        """Each pass updates only its own route's series: a service dropped from the route
        loses its series, another route's series stay, and a route whose keys are gone
        loses all of its own."""
        self.etcd.put("canary/default/shop/route", ROUTE)
        self.etcd.put("canary/default/cart/route", ROUTE.replace("shop", "cart"))
        self.bridge()
        lbl = {"namespace": "default", "route": "shop"}
        series = lambda svc, route="shop": metric(http_get(self.port, "/metrics")[1],
                                                  "canary_bridge_route_weight",
                                                  {"namespace": "default", "route": route,
                                                   "service": svc})
        wait_until(lambda: series("shop-v2") == 1 and series("cart-v1", "cart") == 1,
                   what="weight series of both routes")
        self.etcd.put("canary/default/shop/route", ROUTE.replace("shop-v2", "shop-v3"))
        self.etcd.put("canary/default/shop/weights", "shop-v1=60, shop-v3=40")
        wait_until(lambda: series("shop-v3") == 40, what="the new service's series")
        self.assertIsNone(series("shop-v2"))
        self.assertEqual(series("shop-v1"), 60)
        self.assertEqual(series("cart-v1", "cart"), 1)
        self.etcd.delete("canary/default/shop/route")
        self.etcd.delete("canary/default/shop/weights")
        wait_until(lambda: series("shop-v1") is None and series("shop-v3") is None,
                   what="the deleted route's series gone")
        self.assertEqual(series("cart-v2", "cart"), 1)
        self.assertIsNone(metric(http_get(self.port, "/metrics")[1],
                                 "canary_bridge_route_weight", lbl))

    def test_readyz_503_when_source_is_down(self):
        self.etcd.put("canary/default/shop/route", ROUTE)
        b = self.bridge()
        wait_until(lambda: http_get(self.port, "/readyz")[0] == 200, what="ready")
        self.etcd.kill()
        b.wait_log(r"source: disconnected")
        self.assertEqual(http_get(self.port, "/readyz")[0], 503)
        self.assertEqual(metric(http_get(self.port, "/metrics")[1],
                                "canary_bridge_source_connected"), 0)
        self.etcd.restart()
        wait_until(lambda: http_get(self.port, "/readyz")[0] == 200, timeout=20,
                   what="ready again")


class SinkReadiness(OpsCase):
    """/readyz follows the Kubernetes side as it follows the source (defects 11, 16)."""

    IR_PATH = "/apis/traefik.io/v1alpha1/ingressroutes"

    def ready_bridge(self):
        self.etcd.put("canary/default/shop/route", ROUTE)
        b = self.bridge()
        wait_until(lambda: http_get(self.port, "/readyz")[0] == 200, what="ready")
        return b

    def failed_ir_reads(self, since):
        return [r for r in self.kube.requests(since=since)
                if r["method"] == "GET" and r["path"] == self.IR_PATH and r["status"] == 401]

    def test_revoked_credentials_not_ready_with_the_reason_and_backoff(self):
        b = self.ready_bridge()
        mark = self.kube.requests()[-1]["seq"]
        since = b.log_size()
        self.kube.control("POST", "token", {"token": "someone-else"})   # ours is revoked
        self.kube.close_watches()        # the informers watch again: 401
        status, body = wait_until(lambda: (lambda r: r[0] == 503 and r)(
            http_get(self.port, "/readyz")), what="not ready")
        self.assertRegex(body, r"^kubernetes: the API server refuses the bridge's credentials "
                               r"\(\w+ \w+\): HTTP 401 Unauthorized\n$")
        # Backoff: the second attempt at the same watch waits seconds, not ~200 ms.
        tries = wait_until(lambda: len(self.failed_ir_reads(mark)) >= 2 and
                           self.failed_ir_reads(mark), timeout=15, what="a second attempt")
        self.assertGreaterEqual(tries[1]["t"] - tries[0]["t"], 2.0)
        log = b.log_text()[since:]
        # One clear line with the reason (not "HTTP 401 )"), not one per retry.
        self.assertEqual(len(re.findall(r"warn .*refuses the bridge's credentials.*"
                                        r"HTTP 401 Unauthorized", log)), 1, log)
        self.assertNotIn("HTTP 401 )", log)
        self.assertNotRegex(log, r"warn .*watch \w+ failed \(HTTP 401")
        # The right token again: ready again once the next attempt succeeds.
        self.kube.control("POST", "token", {"token": self.kube.token})
        wait_until(lambda: http_get(self.port, "/readyz")[0] == 200, timeout=40,
                   what="ready with the token accepted again")
        b.wait_log(r"kubernetes: the API server answers again", since=since)

    def test_forbidden_list_is_not_ready_with_the_status_message(self):
        b = self.ready_bridge()
        self.kube.fault(method="GET", path_regex=self.IR_PATH + "$", status=403, count=-1,
                        message='ingressroutes.traefik.io is forbidden: User "bridge" cannot '
                                'watch resource "ingressroutes"')
        self.kube.close_watches()
        status, body = wait_until(lambda: (lambda r: r[0] == 503 and r)(
            http_get(self.port, "/readyz")), what="not ready")
        self.assertRegex(body, r"^kubernetes: .*watch ingressroutes\)?: HTTP 403 Forbidden: "
                               r"ingressroutes\.traefik\.io is forbidden: User \"bridge\"")
        self.kube.clear_faults()
        wait_until(lambda: http_get(self.port, "/readyz")[0] == 200, timeout=40,
                   what="ready again")
        self.assert_stops(b)

    def test_api_server_unreachable_after_start_up_is_not_ready(self):
        b = self.ready_bridge()
        self.kube.fault(action="drop", count=-1)    # every connection closed unanswered
        self.kube.close_watches()
        status, body = wait_until(lambda: (lambda r: r[0] == 503 and r)(
            http_get(self.port, "/readyz")), what="not ready")
        self.assertIn("kubernetes: ", body)
        self.kube.clear_faults()
        wait_until(lambda: http_get(self.port, "/readyz")[0] == 200, timeout=40,
                   what="ready again once the watches are open")
        self.kube.kill()                            # gone: connection refused
        status, body = wait_until(lambda: (lambda r: r[0] == 503 and r)(
            http_get(self.port, "/readyz")), what="not ready with the API server gone")
        self.assertRegex(body, r"^kubernetes: ")
        self.assert_stops(b)


class SdNotify(OpsCase):
    def test_ready_after_first_sync_status_and_watchdog(self):
        self.etcd.put("canary/default/shop/route", ROUTE)
        b = self.bridge()
        n = self.notify
        n.wait("READY=1")
        # READY only after the first full sync: the IngressRoute already exists.
        self.assertIsNotNone(self.ir())
        n.wait("WATCHDOG=1", what="watchdog ping")
        wait_until(lambda: n.got(lambda m: m.startswith("STATUS=in sync")), what="STATUS")
        ready_index = n.index("READY=1")
        self.assertFalse(any("STATUS=in sync" in m for m in n.snapshot()[:ready_index]))
        self.assert_stops(b)

    def test_a_service_manager_that_stops_reading_never_stalls_the_loop(self):
        """The notify socket's queue full (the manager busy): messages are dropped, the
        loop keeps serving and syncing, and SIGTERM still ends the process."""
        stalled = Notify(self.tmp.name, "stalled.sock", reading=False)
        self.addCleanup(stalled.close)
        self.etcd.put("canary/default/shop/route", ROUTE)
        b = self.bridge(env=stalled.env(watchdog_usec=20000))  # a ping every 10 ms
        wait_until(lambda: self.ir(), what="first sync")
        b.wait_log(r"sd_notify [A-Z]+: Resource temporarily unavailable")  # the queue is full
        self.etcd.put("canary/default/shop/weights", "shop-v1=30, shop-v2=70")
        wait_until(lambda: weights_of(self.ir()) == {"shop-v1": 30, "shop-v2": 70},
                   what="syncing with the notify queue full")
        self.assertEqual(http_get(self.port, "/healthz"), (200, "ok\n"))
        b.signal(signal.SIGTERM)
        try:
            self.assertEqual(b.proc.wait(timeout=15), 0)
        except subprocess.TimeoutExpired:
            self.fail("SIGTERM with the notify queue full: the process did not exit:\n"
                      + b.log_tail())


class CommandLine(OpsCase):
    """The one-shot commands as an operator types them: options before or after
    the command, a config that names ${CREDENTIALS_DIRECTORY} checked from a shell, and a
    dry run that says so in every line."""

    def config(self, name="bridge.yaml", etcd=True, **overrides):
        path = os.path.join(self.tmp.name, name)
        with open(path, "w") as f:
            f.write(yaml.safe_dump(bridge_config(etcd=self.etcd if etcd else None, kube=self.kube,
                                                 **overrides)))
        return path

    def cli(self, *args, env=None):
        binary = os.environ.get("CANARY_BRIDGE") or os.path.join(REPO, "build", "canary-bridge")
        p = subprocess.run([binary] + list(args), capture_output=True, text=True, timeout=60,
                           env=env)
        return p.returncode, p.stdout, p.stderr

    def test_global_options_before_or_after_the_command(self):
        cfg = self.config(log={"level": "error"})
        for args in (["-c", cfg, "check"], ["check", "-c", cfg], ["--config=" + cfg, "check"]):
            code, out, err = self.cli(*args)
            self.assertEqual(code, 0, "%s: %s%s" % (args, out, err))
            self.assertIn("ok   config %s\n" % cfg, out)
            self.assertIn("ok   kubernetes", out)
            self.assertNotIn("etcd: starting", err)  # log.level error
        for args in (["-v", "-c", cfg, "check"], ["check", "-c", cfg, "-v"]):
            code, out, err = self.cli(*args)
            self.assertEqual(code, 0, out + err)
            self.assertIn("etcd: starting", err, "%s: -v logs below log.level" % args)
        self.etcd.put("canary/default/shop/route", ROUTE)
        code, out, err = self.cli("--dry-run", "-c", cfg, "sync")
        self.assertEqual(code, 0, err)
        self.assertIsNone(self.ir())
        code, out, err = self.cli("--dry-run", "-c", cfg, "render")
        self.assertEqual(code, 2, err)
        self.assertIn("--dry-run goes with run or sync", err)
        code, out, err = self.cli("-c", cfg, "check", "extra")
        self.assertEqual(code, 2, err)
        self.assertIn("unexpected argument 'extra'", err)

    def test_check_takes_the_credentials_directory(self):
        creds = os.path.join(self.tmp.name, "creds")
        os.makedirs(creds)
        shutil.copy(self.kube.kubeconfig, os.path.join(creds, "kubeconfig"))
        cfg = self.config(kubernetes={"kubeconfig": "${CREDENTIALS_DIRECTORY}/kubeconfig"})
        env = dict(os.environ)
        env.pop("CREDENTIALS_DIRECTORY", None)
        code, out, err = self.cli("check", "-c", cfg, env=env)
        self.assertEqual(code, 2, out + err)
        self.assertIn("kubernetes.kubeconfig", err)
        self.assertIn("CREDENTIALS_DIRECTORY", err)
        for args in (["--credentials-dir", creds], ["--credentials-dir=" + creds]):
            code, out, err = self.cli("check", "-c", cfg, *args, env=env)
            self.assertEqual(code, 0, out + err)
            self.assertIn("ok   kubernetes", out)
        # It wins over the environment, as a directory that exists.
        env["CREDENTIALS_DIRECTORY"] = self.tmp.name
        code, out, err = self.cli("--credentials-dir", creds, "check", "-c", cfg, env=env)
        self.assertEqual(code, 0, out + err)
        code, out, err = self.cli("check", "-c", cfg, "--credentials-dir",
                                  os.path.join(creds, "missing"), env=env)
        self.assertEqual(code, 2, out + err)
        self.assertIn("--credentials-dir %s/missing: No such file or directory" % creds, err)

    def test_check_timeout_bounds_the_whole_check(self):
        """A source that accepts connections and never answers: --timeout ends the check
        (the default is 30 s) with a result line naming what did not answer."""
        silent = socket.socket()
        self.addCleanup(silent.close)
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        cfg = self.config(source={"endpoints": ["http://127.0.0.1:%d" % silent.getsockname()[1]]})
        code, out, err = self.cli("check", "-c", cfg, "--timeout", "1500ms")
        self.assertEqual(code, 1, out + err)
        self.assertIn("FAIL source etcd: no answer within 1.5 s\n", out)
        self.assertIn("ok   kubernetes", out)
        code, out, err = self.cli("--timeout=0", "check", "-c", cfg)
        self.assertEqual(code, 2, out + err)
        self.assertIn("--timeout: want a duration such as 10s", err)

    def test_check_fails_at_once_when_the_source_refuses_the_credentials(self):
        """A wrong etcd password or Consul token: the FAIL line carries the server's answer
        as soon as it comes, not "no answer" at the deadline."""
        self.etcd.enable_auth()
        cfg = self.config(source={"username": "root", "password": "wrong"})
        code, out, err = self.cli("check", "-c", cfg, "--timeout", "25s")
        self.assertEqual(code, 1, out + err)
        self.assertRegex(out, r"FAIL source etcd: authentication failed: HTTP 400: "
                              r"etcdserver: authentication failed, invalid user ID or password\n")
        self.assertIn("ok   kubernetes", out)
        self.assertNotIn("no answer", out)
        self.assertNotIn("wrong", out + err)  # the password is never printed

        consul = Consul(self.tmp.name, acl_token="the-token")
        self.addCleanup(consul.stop)
        cfg = self.config(name="consul.yaml", etcd=None, consul_address=consul.url,
                          source={"type": "consul", "token": "not-the-token"})
        code, out, err = self.cli("check", "-c", cfg, "--timeout", "25s")
        self.assertEqual(code, 1, out + err)
        self.assertRegex(out, r"FAIL source consul: ACL: permission denied reading canary/.*"
                              r"ACL not found\n")
        self.assertIn("ok   kubernetes", out)
        self.assertNotIn("no answer", out)

    def test_check_names_the_context_server_and_user_one_result_line_each(self):
        with open(self.kube.kubeconfig) as f:
            kc = yaml.safe_load(f)
        kc["contexts"][0]["name"] = "ops-ctx"
        kc["contexts"][0]["context"]["user"] = "ops-user"
        kc["users"][0]["name"] = "ops-user"
        kc["current-context"] = "ops-ctx"
        path = os.path.join(self.tmp.name, "kubeconfig")
        with open(path, "w") as f:
            yaml.safe_dump(kc, f)
        cfg = self.config(kubernetes={"kubeconfig": path}, log={"level": "debug"})
        code, out, err = self.cli("check", "-c", cfg)
        self.assertEqual(code, 0, out + err)
        self.assertIn("ok   kubernetes: context ops-ctx, server %s, user ops-user, credential "
                      "token\n" % self.kube.url, out)
        self.assertNotIn(self.kube.token, out + err)
        # Results only on stdout, one line per check; the log lines go to stderr: config,
        # connection, source, CRDs, then one per right the bridge will use (list, watch,
        # get, create and update of three Traefik kinds, create and patch of Events, list
        # and watch of Services and EndpointSlices).
        self.assertEqual(len(out.splitlines()), 4 + 3 * 5 + 2 + 4, out)
        for line in out.splitlines():
            self.assertRegex(line, r"^(ok  |FAIL) \w+", line)
        self.assertTrue(err)
        cfg = self.config(name="other.yaml", kubernetes={"kubeconfig": path, "context": "nope"})
        code, out, err = self.cli("check", "-c", cfg)
        self.assertNotEqual(code, 0, out + err)
        self.assertRegex(out, r"FAIL kubernetes: .*nope.*ops-ctx")

    def test_dry_run_says_so_in_every_log_line_and_summary(self):
        self.etcd.put("canary/default/shop/route", ROUTE)
        self.etcd.put("canary/default/shop/weights", "shop-v1=90, shop-v2=10")
        cfg = self.config(log={"level": "info"})
        code, out, err = self.cli("sync", "-c", cfg, "--dry-run")
        self.assertEqual(code, 0, err)
        self.assertIsNone(self.ir())
        lines = err.splitlines()
        self.assertGreater(len(lines), 2, err)
        for line in lines:
            self.assertRegex(line, r"^\S+ \w+ +dry-run: ", line)
        self.assertRegex(err, r"sync: done, [1-9]\d* writes \(dry run: validated by the API "
                              r"server, none persisted\), 0 routes failed")
        # The daemon too, and its systemd STATUS=.
        b = Bridge(self.tmp.name, bridge_config(etcd=self.etcd, kube=self.kube,
                                                log={"level": "info"}),
                   args=("run", "--dry-run"), env=self.notify.env(), name="bridge-run")
        self.addCleanup(b.stop)
        b.wait_log(r"first full sync done")
        self.notify.wait("READY=1")
        self.assertIsNone(self.ir())
        for line in b.log_text().splitlines():
            self.assertRegex(line, r"^\S+ \w+ +dry-run: ", line)
        status = [line for m in self.notify.snapshot() for line in m.splitlines()
                  if line.startswith("STATUS=")]
        self.assertTrue(status)
        for m in status:
            self.assertTrue(m.startswith("STATUS=dry-run: "), m)


class Signals(OpsCase):
    def reload(self, b, config):
        """Write `config`, SIGHUP, and wait for the systemd side of a reload: RELOADING=1,
        then READY=1.  Returns the index of the first message after the signal."""
        b.write_config(config)
        mark = self.notify.mark()
        b.signal(signal.SIGHUP)
        self.notify.wait("RELOADING=1", mark)
        self.notify.wait("READY=1", mark, what="READY=1 after the reload")
        return mark

    def test_sighup_with_a_broken_config_keeps_the_old_one(self):
        self.etcd.put("canary/default/shop/route", ROUTE)
        b = self.bridge()
        wait_until(lambda: self.ir(), what="first sync")
        since = b.log_size()
        self.reload(b, "source: {type: etcd, prefix: [not, a, string]}\n")
        b.wait_log(r"reload: .*bridge\.yaml:1:.*keeping the running configuration", since=since)
        self.etcd.put("canary/default/shop/weights", "shop-v1=5, shop-v2=95")
        wait_until(lambda: weights_of(self.ir()) == {"shop-v1": 5, "shop-v2": 95},
                   what="still syncing with the old config")
        self.assertTrue(b.alive())
        self.assert_stops(b)

    def test_sighup_with_a_new_prefix_relists(self):
        self.etcd.put("canary/default/shop/route", ROUTE)
        self.etcd.put("other/default/cart/route", ROUTE.replace("shop", "cart"))
        self.etcd.put("other/default/cart/weights", "cart-v1=11, cart-v2=89")
        b = self.bridge()
        wait_until(lambda: weights_of(self.ir()) == {"shop-v1": 1, "shop-v2": 1},
                   what="first sync")
        self.assertIsNone(self.kube.get(G, "default", "ingressroutes", "cart"))
        cfg = bridge_config(etcd=self.etcd, kube=self.kube, metrics_port=self.port,
                            prefix="other/")
        mark = self.reload(b, cfg)
        cart = lambda: self.kube.get(G, "default", "ingressroutes", "cart")
        wait_until(lambda: weights_of(cart()) == {"cart-v1": 11, "cart-v2": 89},
                   what="the new prefix listed and applied")
        self.assertEqual(cart()["metadata"]["annotations"]["canary-bridge.io/source-prefix"],
                         "other/")
        wait_until(lambda: http_get(self.port, "/healthz")[0] == 200, what="endpoints back")
        # A reload is not a stop, and the new pipeline pings the watchdog again.
        self.assertIsNone(self.notify.got(lambda m: "STOPPING=1" in m, mark))
        ready = self.notify.index("READY=1", mark)
        self.notify.wait("WATCHDOG=1", ready + 1, what="watchdog pings after the reload")
        self.assertTrue(b.alive())
        self.assert_stops(b)

    def test_valid_reload_after_a_refused_one_restarts_and_then_stops(self):
        """Under a service manager with a watchdog: refused reload, valid reload, SIGTERM.
        The valid one must restart the pipeline, and the stop must end the process."""
        self.etcd.put("canary/default/shop/route", ROUTE)
        self.etcd.put("other/default/cart/route", ROUTE.replace("shop", "cart"))
        b = self.bridge()
        self.notify.wait("READY=1")
        wait_until(lambda: self.ir(), what="first sync")
        since = b.log_size()
        self.reload(b, "source: {type: etcd, prefix: [not, a, string]}\n")
        b.wait_log(r"keeping the running configuration", since=since)
        cfg = bridge_config(etcd=self.etcd, kube=self.kube, metrics_port=self.port,
                            prefix="other/")
        since = b.log_size()
        self.reload(b, cfg)
        b.wait_log(r"restarting the pipeline", since=since)
        wait_until(lambda: self.kube.get(G, "default", "ingressroutes", "cart"),
                   what="the reloaded pipeline syncing the new prefix")
        wait_until(lambda: http_get(self.port, "/readyz")[0] == 200, what="ready after reload")
        self.assert_stops(b)

    def test_sigterm_after_a_reload_exits(self):
        self.etcd.put("canary/default/shop/route", ROUTE)
        b = self.bridge()
        wait_until(lambda: self.ir(), what="first sync")
        self.reload(b, bridge_config(etcd=self.etcd, kube=self.kube, metrics_port=self.port))
        wait_until(lambda: http_get(self.port, "/readyz")[0] == 200, what="ready after reload")
        self.assert_stops(b)

    def test_sigterm_finishes_the_write_in_flight_and_exits_0(self):
        self.etcd.put("canary/default/shop/route", ROUTE)
        b = self.bridge()
        wait_until(lambda: self.ir(), what="first sync")
        self.kube.fault(method="PUT", path_regex="/ingressroutes/shop$", delay_ms=1500)
        mark = self.kube.requests()[-1]["seq"]
        self.etcd.put("canary/default/shop/weights", "shop-v1=42, shop-v2=58")
        wait_until(lambda: [r for r in self.kube.requests(since=mark) if r["method"] == "PUT"],
                   what="the PUT reached the server")
        self.assert_stops(b)
        self.assertEqual(weights_of(self.ir()), {"shop-v1": 42, "shop-v2": 58})
        self.assertRegex(b.log_text(), r"IngressRoute shop written")


if __name__ == "__main__":
    unittest.main()
