"""Fault injection: the source dies, stalls, compacts or resets; the Kubernetes API
answers 503/429, hangs, drops connections mid-answer, conflicts, or goes away; the bridge is
SIGKILLed mid-burst or reloaded mid-write.

After every fault the same three things must hold, and `FaultCase.check_invariants` checks
them:
  1. the objects CONVERGE to the last value written to the source (weights and the
     source-revision annotation of the last write);
  2. nothing else is touched: routes whose keys did not change keep their objects at the
     same resourceVersion;
  3. no route is ever deleted by a fault: the bridge runs with `reconcile.policy: sync`
     (where deleting would be possible), and the API server's request log holds no DELETE
     at all.

Waits are on conditions, never on time; the only timing claims are orderings on the API
test server's clock (the request log's `t`).

OUTAGE_S is how long the "for a while" outages last (API 503s, the API server gone, Consul
5xx). The issue asks for 30 s; CI uses 6 s (the backoff reaches its multi-second steps by
then, which is what the test is about). `CB_FAULT_OUTAGE_S=30` runs the full length."""
import json
import math
import os
import re
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
from cbtest import Bridge, Etcd, KubeAPI, bridge_config, free_port, wait_until, mw_name  # noqa: E402
from consul import Consul  # noqa: E402

import yaml  # noqa: E402

OUTAGE_S = float(os.environ.get("CB_FAULT_OUTAGE_S", "6"))
# The client's per-request timeout (sinks/kube.c KUBE_TIMEOUT_MS): a hung request ends then.
KUBE_TIMEOUT_S = 15
# The reconcile workqueue's backoff (bridge/lib/workqueue.c): base 50 ms, doubling, jitter in
# [half, full]; used to bound how many requests an outage may cost.
WQ_BACKOFF_BASE_S = 0.050
# How long the concurrent writer of the 409 storm keeps patching (the weights change 20
# times during its first second).
STORM_S = 3

G = "traefik.io"
NS = "default"
TRAEFIK = ("IngressRoute", "Middleware", "TraefikService")
WRITES = ("POST", "PUT", "PATCH", "DELETE")
SANITIZED = os.environ.get("CANARY_SANITIZED") == "1"
SLOW = 3 if SANITIZED else 1       # wait budgets only; no assertion depends on speed


def route_doc(name):
    return ("match: Host(`%s.example.com`) && PathPrefix(`/`)\n"
            "services:\n"
            "  - {name: %s-v1, port: 80}\n"
            "  - {name: %s-v2, port: 80}\n" % (name, name, name))


def headers_doc(name):
    """One header rule that sets headers: a Middleware <name>.beta besides the IngressRoute."""
    return ("- name: beta\n"
            "  header: X-Canary\n"
            "  value: always\n"
            "  service: %s-v2\n"
            "  setRequestHeaders: {X-Canary-Route: beta}\n" % name)


def weights_of(obj):
    if not obj:
        return None
    return {s["name"]: s.get("weight") for s in obj["spec"]["routes"][-1]["services"]}


def http_get(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


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


def merged(base, over):
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            merged(base[k], v)
        else:
            base[k] = v
    return base


class TcpProxy:
    """A loopback TCP forwarder in front of the API test server.  stop() is the API server
    going away (the listener closes, every connection is reset, new connections are
    refused); start() brings it back on the SAME port.  The store behind it persists, as a
    real API server's etcd does across a restart.  (tests/kubeapi/server.py keeps its store
    in memory and has no --port, so restarting the process itself would be a different
    cluster on a different port.)"""

    def __init__(self, target_port):
        self.target = target_port
        self.port = None
        self.lsock = None
        self.conns = set()
        self.lock = threading.Lock()
        self.start()

    def start(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port or 0))
        s.listen(64)
        self.port = s.getsockname()[1]
        self.lsock = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def _accept(self, lsock):
        while True:
            try:
                c, _ = lsock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.target), timeout=5)
                u.settimeout(None)
            except OSError:
                self._reset(c)
                continue
            with self.lock:
                self.conns.update((c, u))
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    @staticmethod
    def _reset(s):
        """Abort the connection (RST).  shutdown() first: close() alone would not wake a
        pump thread blocked in recv() on it, and the socket would stay open."""
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()

    def stop(self):
        if self.lsock is not None:
            try:
                self.lsock.shutdown(socket.SHUT_RDWR)    # wakes accept()
            except OSError:
                pass
            self.lsock.close()
            self.lsock = None
        with self.lock:
            conns, self.conns = self.conns, set()
        for s in conns:
            self._reset(s)

    close = stop


# =============================================================================================
# The common frame: a few routes, the bridge under policy sync, and the invariants

class FaultCase(unittest.TestCase):
    """Subclasses provide the source: start_source, put, delete, revision_of, source_config."""

    ROUTES = ("alpha", "beta", "gamma")     # gamma also has a headers key (a Middleware)

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="cb-fault-")
        self.addCleanup(self.tmp.cleanup)
        self.kube = KubeAPI(self.tmp.name)
        self.addCleanup(self.kube.stop)
        self.start_source()
        self.port = free_port()
        self.want = {}          # route -> the weights it must end with (the source's last value)
        self.changed = set()    # routes whose keys changed after the bridge's first sync
        self.bridge = None

    # ---- the source side
    def key(self, name, leaf):
        return "canary/%s/%s/%s" % (NS, name, leaf)

    def add_route(self, name, w1=1, w2=1, headers=False):
        self.put(self.key(name, "route"), route_doc(name))
        if headers:
            self.put(self.key(name, "headers"), headers_doc(name))
        return self.set_weights(name, w1, w2)

    def set_weights(self, name, w1, w2, record=True):
        rev = self.put(self.key(name, "weights"), "%s-v1=%d, %s-v2=%d" % (name, w1, name, w2))
        if record:
            self.want[name] = {name + "-v1": w1, name + "-v2": w2}
            if self.bridge is not None:
                self.changed.add(name)
        return rev

    def source_revision(self, name):
        """What the route's objects must carry as source revision: its newest key."""
        revs = [self.revision_of(self.key(name, leaf)) for leaf in ("route", "weights", "headers")]
        return max(r for r in revs if r is not None)

    # ---- the bridge
    def config(self, **overrides):
        cfg = bridge_config(kube=self.kube, metrics_port=self.port,
                            reconcile={"policy": "sync"}, **self.source_config())
        return merged(cfg, overrides)

    def start_bridge(self, name="bridge", **overrides):
        for r in self.ROUTES:
            if r not in self.want:
                self.add_route(r, headers=(r == "gamma"))
        b = Bridge(self.tmp.name, self.config(**overrides), name=name)
        self.addCleanup(b.stop)
        self.bridge = b
        b.wait_log(r"ready: ", timeout=30 * SLOW)
        self.converged()
        self.before = self.objects()
        if "gamma" in self.ROUTES:
            self.assertIn(("Middleware", NS, mw_name("gamma", "beta")), self.before)
        return b

    # ---- the API side
    def ir(self, name):
        return self.kube.get(G, NS, "ingressroutes", name)

    def objects(self):
        return {(o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]): o
                for o in self.kube.objects()["objects"] if o.get("kind") in TRAEFIK}

    def last_seq(self):
        reqs = self.kube.requests()
        return reqs[-1]["seq"] if reqs else 0

    def writes(self, since=0, name=None, methods=WRITES):
        """Traefik object writes after seq `since` (optionally to one IngressRoute)."""
        out = []
        for r in self.kube.requests(since=since):
            if r["method"] not in methods or "/apis/%s/" % G not in r["path"]:
                continue
            if name is not None and not (r["path"].endswith("/ingressroutes/" + name) or
                                         (r["method"] == "POST" and
                                          (r.get("body") or {}).get("metadata", {})
                                          .get("name") == name)):
                continue
            out.append(r)
        return out

    def converged(self, names=None, timeout=30, revisions="all"):
        """Wait until the routes' IngressRoutes carry the source's last weights and the
        source revision of their newest key (revisions="changed": only for the routes whose
        keys changed; "none": weights only)."""
        names = list(self.want) if names is None else names

        def state(n):
            obj = self.ir(n)
            if not obj:
                return None
            return (weights_of(obj),
                    obj["metadata"].get("annotations", {}).get("canary-bridge.io/source-revision"))

        def want(n):
            if revisions == "all" or revisions == "changed" and n in self.changed:
                return (self.want[n], str(self.source_revision(n)))
            return (self.want[n], state(n) and state(n)[1])

        def done():
            return all(state(n) == want(n) for n in names)
        try:
            wait_until(done, timeout * SLOW, what="convergence", interval=0.05)
        except AssertionError:
            have = {n: state(n) for n in names}
            want = {n: want(n) for n in names}
            raise AssertionError("objects did not converge to the source's last values:\n"
                                 "  want %r\n  have %r\n--- bridge log tail ---\n%s"
                                 % (want, have, self.bridge.log_tail(60) if self.bridge else ""))

    def check_invariants(self, untouched_by="resourceVersion", revisions="all", timeout=30):
        """Converged; the routes whose keys did not change untouched; nothing deleted."""
        self.converged(timeout=timeout, revisions=revisions)
        after = self.objects()
        missing = sorted(set(self.before) - set(after))
        self.assertEqual(missing, [], "objects gone after the fault")
        for key, was in self.before.items():
            route = key[2] if key[0] != "Middleware" else key[2].rsplit("-", 1)[0]
            if route in self.changed:
                continue
            now = after[key]
            if untouched_by == "resourceVersion":
                self.assertEqual(now["metadata"]["resourceVersion"],
                                 was["metadata"]["resourceVersion"],
                                 "%s %s was rewritten though its keys did not change" % (key[0],
                                                                                        key[2]))
            else:
                self.assertEqual(now["spec"], was["spec"], "%s %s spec changed" % (key[0], key[2]))
        deletes = [(r["method"], r["path"]) for r in self.kube.requests()
                   if r["method"] == "DELETE"]
        self.assertEqual(deletes, [], "a fault made the bridge delete something")
        self.assertTrue(self.bridge.alive(), "the bridge died:\n" + self.bridge.log_tail())


class EtcdFaultCase(FaultCase):
    def start_source(self):
        self.etcd = Etcd(self.tmp.name)
        self.addCleanup(self.etcd.stop)

    def source_config(self):
        return {"source": {"type": "etcd", "endpoints": [self.etcd.url]}}

    def put(self, key, value):
        return self.etcd.put(key, value)

    def delete(self, key):
        return self.etcd.delete(key)

    def revision_of(self, key):
        kvs = self.etcd.call("/v3/kv/range", {"key": self.etcd._b64(key)}).get("kvs") or []
        return int(kvs[0]["mod_revision"]) if kvs else None


# =============================================================================================
# etcd

class EtcdFaults(EtcdFaultCase):
    def test_killed_and_restarted_mid_watch(self):
        b = self.start_bridge()
        since = b.log_size()
        # An edit just before the kill: etcd acknowledged it, so it is durable; whether the
        # bridge saw it before the kill or not, it must end up applied.
        self.set_weights("alpha", 11, 89)
        self.etcd.kill()
        b.wait_log(r"source: disconnected", since=since, timeout=10 * SLOW)
        self.etcd.restart()
        self.set_weights("beta", 22, 78)           # made after the restart
        b.wait_log(r"source: connected", since=since, timeout=30 * SLOW)
        self.check_invariants()

    def test_frozen_then_thawed(self):
        """etcd stops answering (SIGSTOP) with the watch open.  Meanwhile someone edits an
        object by hand: the bridge puts it back from its cache of the keys (a frozen source
        is not an empty one).  Then etcd carries on and a new edit lands."""
        b = self.start_bridge()
        self.etcd.pause()
        try:
            self.assertEqual(http_get(self.port, "/healthz")[0], 200)
            self.kube.merge_patch(G, NS, "ingressroutes", "alpha", {"spec": {"routes": [{
                "kind": "Rule", "match": "Host(`alpha.example.com`) && PathPrefix(`/`)",
                "services": [{"name": "alpha-v1", "port": 80, "weight": 99}]}]}})
            self.changed.add("alpha")
            wait_until(lambda: weights_of(self.ir("alpha")) == self.want["alpha"], 10 * SLOW,
                       what="the hand edit undone while etcd is frozen")
        finally:
            self.etcd.resume()
        self.set_weights("beta", 12, 88)
        self.check_invariants()
        self.assertTrue(b.alive())

    def test_compaction_while_the_bridge_is_paused(self):
        """SIGSTOP the bridge, edit, compact past its revision, SIGCONT.  Whatever path the
        bridge takes (buffered events or a re-list), it converges."""
        b = self.start_bridge()
        b.signal(signal.SIGSTOP)
        try:
            for i in range(1, 6):
                self.set_weights("alpha", i, 100 - i)
            self.add_route("delta", 3, 4)
            self.changed.add("delta")
            self.set_weights("beta", 40, 60)
            self.etcd.compact()
        finally:
            b.signal(signal.SIGCONT)
        self.check_invariants()

    def test_compaction_past_the_revision_forces_a_relist(self):
        """The deterministic version: while the bridge is paused its watch connection dies
        (etcd restarts), edits land and etcd compacts; on SIGCONT the bridge re-watches from
        a compacted revision, must notice, re-list, and converge."""
        b = self.start_bridge()
        since = b.log_size()
        b.signal(signal.SIGSTOP)
        try:
            self.etcd.restart()
            for i in range(1, 6):
                self.set_weights("alpha", i, 100 - i)
            self.put(self.key("gamma", "headers"), headers_doc("gamma").replace("always", "yes"))
            self.changed.add("gamma")
            self.etcd.compact()
        finally:
            b.signal(signal.SIGCONT)
        b.wait_log(r"etcd: .*compacted", since=since, timeout=30 * SLOW)
        self.check_invariants()
        mw = self.kube.get(G, NS, "middlewares", mw_name("gamma", "beta"))
        self.assertIsNotNone(mw)


# =============================================================================================
# Kubernetes API faults

class ApiFaults(EtcdFaultCase):
    def test_503_for_a_while(self):
        b = self.start_bridge(reconcile={"status": True})
        since = b.log_size()
        mark = self.last_seq()
        for m in ("PUT", "POST"):
            self.kube.fault(method=m, path_regex="^/apis/%s/" % G, status=503, count=-1)
        t0 = time.monotonic()
        edits = 0
        self.set_weights("alpha", 31, 69)
        edits += 1
        self.add_route("delta", 5, 5)          # a new route: its POST fails too
        self.changed.add("delta")
        b.wait_log(r"route default/alpha: writing IngressRoute default/alpha: HTTP 503.*"
                   r"\(retrying\)", since=since, timeout=10 * SLOW)
        b.wait_log(r"route default/delta: writing IngressRoute default/delta: HTTP 503.*"
                   r"\(retrying\)", since=since, timeout=10 * SLOW)
        # Keep editing through the outage: each edit may cost one immediate pass.
        while time.monotonic() - t0 < OUTAGE_S:
            if edits < 4:
                self.set_weights("alpha", 31 + edits, 69 - edits)
                edits += 1
            time.sleep(0.25)     # the outage is a span of time; nothing to await here
            self.assertTrue(b.alive())
        outage = time.monotonic() - t0
        self.assertEqual(http_get(self.port, "/healthz")[0], 200)
        # What the user sees meanwhile: the status key says pending, with the reason, and the
        # reconcile counter counts retries.
        st = wait_until(lambda: (lambda v: v and json.loads(v))(
            self.etcd.get(self.key("alpha", "status"))), 10 * SLOW, what="alpha status")
        wait_until(lambda: json.loads(self.etcd.get(self.key("alpha", "status")))["state"]
                   == "pending", 10 * SLOW, what="status pending")
        st = json.loads(self.etcd.get(self.key("alpha", "status")))
        self.assertIn("503", st["message"])
        self.assertGreaterEqual(metric(http_get(self.port, "/metrics")[1],
                                       "canary_bridge_reconcile_total", {"result": "retry"}), 1)
        failed = [r for r in self.writes(since=mark) if r["status"] == 503]
        self.kube.clear_faults()
        self.check_invariants()
        wait_until(lambda: json.loads(self.etcd.get(self.key("alpha", "status")))["state"]
                   == "applied", 10 * SLOW, what="status applied again")
        # No busy loop: per failing route, the workqueue backoff allows about
        # log2(outage / base) retries, plus one immediate pass per edit. Allow double.
        per_route = 2 * (math.ceil(math.log2(outage / WQ_BACKOFF_BASE_S + 1)) + 1)
        bound = per_route * 2 + 2 * edits
        sys.stderr.write("[503 outage] %d failed writes in %.1f s for 2 routes and %d edits "
                         "(bound %d)\n" % (len(failed), outage, edits, bound))
        self.assertGreaterEqual(len(failed), 2, "the outage was not noticed")
        self.assertLessEqual(len(failed), bound,
                             "%d writes in a %.1f s outage (bound %d): a busy loop"
                             % (len(failed), outage, bound))

    def test_429_retry_after_is_honoured(self):
        self.start_bridge()
        mark = self.last_seq()
        self.kube.fault(method="PUT", path_regex="/ingressroutes/alpha$", status=429,
                        retry_after=2, count=2)
        self.set_weights("alpha", 41, 59)
        self.check_invariants()
        puts = [r for r in self.writes(since=mark, name="alpha") if r["method"] == "PUT"]
        self.assertEqual([r["status"] for r in puts][:3], [429, 429, 200])
        for prev, nxt in zip(puts, puts[1:]):
            if prev["status"] == 429:
                # Server clock: the next attempt came no sooner than Retry-After allowed.
                self.assertGreaterEqual(nxt["t"], prev["t_done"] + 2 - 0.05,
                                        "retried %.3f s after a 429 with Retry-After: 2"
                                        % (nxt["t"] - prev["t_done"]))

    def test_429_retry_after_holds_even_when_the_key_changes_again(self):
        """The server asked for 2 s of quiet; an edit arriving meanwhile must wait too."""
        b = self.start_bridge()
        mark = self.last_seq()
        since = b.log_size()
        self.kube.fault(method="PUT", path_regex="/ingressroutes/alpha$", status=429,
                        retry_after=2, count=1)
        self.set_weights("alpha", 42, 58)
        b.wait_log(r"route default/alpha: writing IngressRoute default/alpha: HTTP 429",
                   since=since, timeout=10 * SLOW)
        self.set_weights("alpha", 43, 57)
        self.check_invariants()
        puts = [r for r in self.writes(since=mark, name="alpha") if r["method"] == "PUT"]
        self.assertEqual(puts[0]["status"], 429)
        self.assertGreaterEqual(puts[1]["t"], puts[0]["t_done"] + 2 - 0.05,
                                "PUT %.3f s after a 429 with Retry-After: 2"
                                % (puts[1]["t"] - puts[0]["t_done"]))

    def test_hanging_request_times_out_and_the_loop_never_wedges(self):
        b = self.start_bridge()
        since = b.log_size()
        mark = self.last_seq()
        self.kube.fault(method="PUT", path_regex="/ingressroutes/alpha$", action="hang", count=1)
        self.set_weights("alpha", 51, 49)
        hung = wait_until(lambda: [r for r in self.writes(since=mark, name="alpha")
                                   if r["fault"] is not None], 10 * SLOW,
                          what="the PUT reached the server and hangs")[0]
        # While that PUT hangs: the endpoints answer and other routes are written.
        self.assertEqual(http_get(self.port, "/healthz"), (200, "ok\n"))
        self.assertEqual(http_get(self.port, "/metrics")[0], 200)
        self.set_weights("beta", 52, 48)
        self.converged(["beta"])
        beta_put = [r for r in self.writes(since=mark, name="beta") if r["status"] == 200][-1]
        # The client gives up after its timeout and retries: alpha converges.
        self.converged(["alpha"], timeout=KUBE_TIMEOUT_S + 30)
        b.wait_log(r"route default/alpha: Kubernetes API unreachable: .*(timed out|[Tt]imeout)",
                   since=since)
        hung = next(r for r in self.kube.requests(since=mark) if r["seq"] == hung["seq"])
        self.assertIsNone(hung["status"])
        # Server clock: beta was written while alpha's PUT was still hanging.
        self.assertLess(beta_put["t_done"], hung["t_done"])
        self.check_invariants()

    def test_connection_dropped_after_the_write_happened(self):
        """The write is persisted but its answer is lost (drop_mid: half an answer; drop
        after: none): the bridge must converge without writing twice or anything else."""
        self.start_bridge()
        for i, rule in enumerate(({"action": "drop_mid"}, {"action": "drop", "when": "after"})):
            with self.subTest(**rule):
                before = self.ir("alpha")
                mark = self.last_seq()
                self.kube.fault(method="PUT", path_regex="/ingressroutes/alpha$", count=1, **rule)
                self.set_weights("alpha", 61 + i, 39 - i)
                self.converged(["alpha"])
                dropped = [r for r in self.writes(since=mark, name="alpha")
                           if r["fault"] is not None]
                self.assertEqual(len(dropped), 1)
                # Exactly one spec change landed: the generation moved by one.
                self.assertEqual(self.ir("alpha")["metadata"]["generation"],
                                 before["metadata"]["generation"] + 1)
        self.check_invariants()

    def test_create_answer_lost_then_409_already_exists(self):
        """POST persisted, answer cut: the retry meets 409 AlreadyExists (or the watch event
        first) and must read, not create a second object or fail the route."""
        self.start_bridge()
        mark = self.last_seq()
        self.kube.fault(method="POST", path_regex="/ingressroutes$", action="drop_mid", count=1)
        # One key, weights inline: a single desired state, so one spec version (generation 1).
        self.put(self.key("delta", "route"),
                 route_doc("delta").replace("port: 80}", "port: 80, weight: %d}") % (7, 3))
        self.want["delta"] = {"delta-v1": 7, "delta-v2": 3}
        self.changed.add("delta")
        self.check_invariants()
        obj = self.ir("delta")
        self.assertEqual(obj["metadata"]["generation"], 1)
        self.assertEqual(obj["metadata"]["labels"]["app.kubernetes.io/managed-by"],
                         "canary-bridge")
        posts = [r for r in self.writes(since=mark, name="delta") if r["method"] == "POST"]
        self.assertEqual(posts[0]["fault"] is not None, True)
        self.assertTrue(all(r["status"] in (None, 200, 201, 409) for r in posts), posts)

    def test_watch_cut_mid_event_then_drift_is_still_seen(self):
        """The object watch breaks in the middle of an event (headers, half a chunk, then
        the connection closes), twice.  The informer must re-watch, and a hand edit made
        after that must still be noticed and put back."""
        b = self.start_bridge()
        since = b.log_size()
        self.kube.fault(method="GET", path_regex="/ingressroutes$", query_regex="watch=",
                        action="drop_mid", count=2)
        t0 = time.time()
        self.kube.close_watches()                  # clean end: the informers re-watch
        b.wait_log(r"kubernetes: watch ingressroutes failed", since=since, timeout=10 * SLOW)
        wait_until(lambda: not self.kube.faults() and [
            w for w in self.kube.watches()
            if "ingressroutes" in w["resource"] and w["since"] > t0], 30 * SLOW,
            what="the ingressroutes watch open again past the faults")
        self.kube.merge_patch(G, NS, "ingressroutes", "alpha", {"spec": {"routes": [{
            "kind": "Rule", "match": "Host(`alpha.example.com`) && PathPrefix(`/`)",
            "services": [{"name": "alpha-v1", "port": 80, "weight": 99}]}]}})
        self.changed.add("alpha")
        self.check_invariants()

    def test_409_storm_from_a_concurrent_writer(self):
        """Another writer merge-patches an annotation as fast as it can while the weights
        change: the bridge's PUTs meet 409s; it must end with the last weights, and the other
        writer's annotation must survive."""
        b = self.start_bridge()
        mark = self.last_seq()
        stop = threading.Event()
        ticks = {"n": 0, "error": None}

        def writer():
            deadline = time.monotonic() + STORM_S
            try:
                while not stop.is_set() and time.monotonic() < deadline:
                    n = ticks["n"] + 1
                    self.kube.merge_patch(G, NS, "ingressroutes", "alpha", {
                        "metadata": {"annotations": {"example.com/other-writer": str(n)}}})
                    ticks["n"] = n
            except Exception as e:       # noqa: BLE001 - reported below
                ticks["error"] = e
        t = threading.Thread(target=writer, daemon=True)
        t.start()
        try:
            for i in range(1, 21):
                self.set_weights("alpha", i, 100 - i)
                time.sleep(0.05)         # spread the edits over the storm
            t.join(STORM_S + 30)
        finally:
            stop.set()
        self.assertIsNone(ticks["error"])
        self.assertGreater(ticks["n"], 10)
        self.check_invariants()
        ann = self.ir("alpha")["metadata"]["annotations"]
        self.assertEqual(ann.get("example.com/other-writer"), str(ticks["n"]))
        conflicts = [r for r in self.writes(since=mark, name="alpha") if r["status"] == 409]
        self.assertGreater(len(conflicts), 0, "no 409 happened: the storm did not storm")
        # What the user sees: the conflicts counter (conflicts are logged at debug only).
        self.assertGreaterEqual(metric(http_get(self.port, "/metrics")[1],
                                       "canary_bridge_conflicts_total"), 1)
        self.assertTrue(b.alive())

    def test_api_server_gone_and_back_on_the_same_port(self):
        proxy = TcpProxy(self.kube.port)
        self.addCleanup(proxy.close)
        with open(self.kube.kubeconfig) as f:
            kc = yaml.safe_load(f)
        kc["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:%d" % proxy.port
        path = os.path.join(self.tmp.name, "proxy-kubeconfig")
        with open(path, "w") as f:
            yaml.safe_dump(kc, f)
        b = self.start_bridge(kubernetes={"kubeconfig": path})
        since = b.log_size()
        proxy.stop()
        b.wait_log(r"kubernetes: watch \w+ failed", since=since, timeout=10 * SLOW)
        t0 = time.monotonic()
        self.set_weights("alpha", 71, 29)
        b.wait_log(r"route default/alpha: Kubernetes API unreachable", since=since,
                   timeout=10 * SLOW)
        self.assertEqual(http_get(self.port, "/healthz")[0], 200)
        while time.monotonic() - t0 < OUTAGE_S:
            time.sleep(0.25)     # the outage is a span of time
        self.set_weights("beta", 72, 28)
        proxy.start()
        self.check_invariants()

    def test_routes_converge_as_soon_as_the_api_server_is_back(self):
        """A route whose write failed while the API server was gone converges right after
        it comes back, not after its backoff: the backoff here starts at 5 minutes, far
        past every wait of this test, so converging at all shows the wait was ended."""
        proxy = TcpProxy(self.kube.port)
        self.addCleanup(proxy.close)
        with open(self.kube.kubeconfig) as f:
            kc = yaml.safe_load(f)
        kc["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:%d" % proxy.port
        path = os.path.join(self.tmp.name, "proxy-kubeconfig")
        with open(path, "w") as f:
            yaml.safe_dump(kc, f)
        b = self.start_bridge(kubernetes={"kubeconfig": path},
                              reconcile={"retry_min": "5m", "retry_max": "10m"})
        since = b.log_size()
        proxy.stop()
        self.set_weights("alpha", 81, 19)
        b.wait_log(r"route default/alpha: Kubernetes API unreachable", since=since,
                   timeout=10 * SLOW)
        self.set_weights("beta", 82, 18)
        b.wait_log(r"route default/beta: Kubernetes API unreachable", since=since,
                   timeout=10 * SLOW)
        mark = self.last_seq()
        proxy.start()
        self.check_invariants()
        b.wait_log(r"kubernetes: the API server answers again \(.*\); retrying 2 routes now",
                   since=since, timeout=5)
        # One write each after the outage: the retry, not a storm.
        for name in ("alpha", "beta"):
            puts = [r for r in self.writes(since=mark, name=name) if r["method"] == "PUT"]
            self.assertEqual([r["status"] for r in puts], [200], name)


# =============================================================================================
# The bridge itself: killed, reloaded

class BridgeFaults(EtcdFaultCase):
    def test_sigkill_in_the_middle_of_a_burst(self):
        self.ROUTES = tuple("burst-%02d" % i for i in range(20))
        b = self.start_bridge()
        mark = self.last_seq()
        puts, killed_at = 0, None
        for round_ in range(10):
            for name in self.ROUTES:
                self.set_weights(name, round_ + 1, 100 - round_)
                puts += 1
            if killed_at is None and round_ >= 4 and self.writes(since=mark):
                b.kill()                 # SIGKILL to the process group, mid-burst
                killed_at = puts
        self.assertEqual(puts, 200)
        self.assertIsNotNone(killed_at, "the bridge wrote nothing during half the burst")
        since = b.log_size()
        b.start()
        b.wait_log(r"ready: ", timeout=30 * SLOW, since=since)
        self.check_invariants()
        self.assertEqual(len(self.objects()), len(self.before))

    def test_sighup_during_a_write(self):
        b = self.start_bridge()
        since = b.log_size()
        mark = self.last_seq()
        self.kube.fault(method="PUT", path_regex="/ingressroutes/alpha$", delay_ms=1500,
                        count=1)
        self.set_weights("alpha", 81, 19)
        wait_until(lambda: [r for r in self.writes(since=mark, name="alpha")
                            if r["fault"] is not None], 10 * SLOW, what="the PUT in flight")
        b.write_config(self.config(log={"level": "debug"}, reconcile={"resync": "4m"}))
        b.signal(signal.SIGHUP)
        self.set_weights("alpha", 82, 18)        # an edit during the reload
        b.wait_log(r"reload: .* is valid; restarting the pipeline", since=since)
        b.wait_log(r"ready: ", since=since, timeout=30 * SLOW)
        self.check_invariants()
        delayed = [r for r in self.writes(since=mark, name="alpha") if r["fault"] is not None]
        self.assertIn(delayed[0]["status"], (200, 409))     # it completed (or lost a race)
        self.assertEqual(http_get(self.port, "/healthz")[0], 200)
        self.set_weights("beta", 83, 17)          # and the new pipeline keeps syncing
        self.check_invariants()


# =============================================================================================
# Consul

class ConsulFaultCase(FaultCase):
    def start_source(self):
        self.consul = Consul(self.tmp.name)
        self.addCleanup(self.consul.stop)

    def source_config(self):
        return {"source": {"type": "consul", "address": self.consul.url}}

    def put(self, key, value):
        self.assertTrue(self.consul.put(key, value))
        return self.revision_of(key)

    def delete(self, key):
        return self.consul.delete(key)

    def revision_of(self, key):
        # From the control API's store dump: a fault on /v1/kv/ reads must not hit the test.
        for e in self.consul.dump()["entries"]:
            if e["Key"] == key:
                return e["ModifyIndex"]
        return None

    def kv_requests(self, since=0):
        return [r for r in self.consul.requests(since=since)
                if r["path"].startswith("/v1/kv/canary")]

    def consul_seq(self):
        reqs = self.consul.requests()
        return reqs[-1]["seq"] if reqs else 0


class ConsulFaults(ConsulFaultCase):
    def test_5xx_for_a_while(self):
        b = self.start_bridge()
        since = b.log_size()
        mark = self.consul_seq()
        self.consul.fault(method="GET", path_regex="^/v1/kv/canary/", status=500, count=-1)
        self.consul.wake()                  # the parked query returns and meets the fault
        t0 = time.monotonic()
        self.set_weights("alpha", 91, 9)    # the bridge cannot read this one yet
        b.wait_log(r"consul: .*retrying with backoff", since=since, timeout=10 * SLOW)
        while time.monotonic() - t0 < OUTAGE_S:
            time.sleep(0.25)     # the outage is a span of time
            self.assertTrue(b.alive())
        failed = [r for r in self.kv_requests(since=mark) if r["status"] == 500]
        # A source that errors is not an empty source: nothing may be pruned meanwhile.
        self.assertEqual(set(self.before), set(self.objects()))
        self.consul.clear_faults()
        self.set_weights("beta", 92, 8)
        self.check_invariants()
        bound = 4 * (math.ceil(math.log2(OUTAGE_S / 0.1 + 1)) + 2)
        sys.stderr.write("[consul 5xx] %d failed reads in %g s (bound %d)\n"
                         % (len(failed), OUTAGE_S, bound))
        self.assertGreaterEqual(len(failed), 1)
        self.assertLessEqual(len(failed), bound, "%d reads in a %g s outage: a busy loop"
                             % (len(failed), OUTAGE_S))

    def test_index_reset(self):
        """A snapshot restore: every index goes back.  Later edits must still be seen.
        The routes that did not change are not rewritten (their objects keep the old
        index in their source-revision annotation: same bytes, nothing to write)."""
        b = self.start_bridge()
        since = b.log_size()
        self.consul.reset_index(3)
        self.set_weights("alpha", 93, 7)
        b.wait_log(r"consul: index of 'canary/' went backwards", since=since,
                   timeout=10 * SLOW)
        self.set_weights("beta", 94, 6)
        self.check_invariants(revisions="none")

    def test_index_reset_then_an_edit_names_the_new_index(self):
        """After a restore, a route edited at index N must say N in its source-revision
        annotation (the status key carries the same number), not an index from before the
        restore that the store no longer has."""
        b = self.start_bridge(reconcile={"status": True})
        since = b.log_size()
        self.consul.reset_index(3)
        b.wait_log(r"consul: index of 'canary/' went backwards", since=since,
                   timeout=10 * SLOW)
        rev = self.set_weights("alpha", 93, 7)
        self.converged(["alpha"], revisions="none")
        raft = self.consul.dump()["raft_index"]
        ann = self.ir("alpha")["metadata"]["annotations"]["canary-bridge.io/source-revision"]
        self.assertLessEqual(int(ann), raft, "annotation names index %s; the restored store "
                             "is at %d" % (ann, raft))
        self.assertEqual(ann, str(rev))

    def test_connection_dropped_mid_wait(self):
        b = self.start_bridge()
        mark = self.consul_seq()
        self.consul.fault(action="drop_mid_wait", path_regex="^/v1/kv/canary/", delay_ms=200,
                          count=-1)
        self.consul.wake()
        wait_until(lambda: [r for r in self.kv_requests(since=mark) if r.get("dropped")],
                   10 * SLOW, what="a dropped blocking query")
        self.set_weights("alpha", 95, 5)      # while blocking queries are being dropped
        # After an error the source rate-limits its queries (Consul's guidance: a burst of
        # 2, then one per wait/30 = 10 s): wait for the next query to be dropped too.
        n = len([r for r in self.kv_requests(since=mark) if r.get("dropped")])
        wait_until(lambda: len([r for r in self.kv_requests(since=mark) if r.get("dropped")]) > n
                   or self.ir("alpha") and weights_of(self.ir("alpha"))["alpha-v1"] == 95,
                   20 * SLOW, what="another dropped query (or alpha read meanwhile)")
        self.consul.clear_faults()
        self.set_weights("beta", 96, 4)
        self.check_invariants(timeout=40)
        self.assertTrue(b.alive())

    def test_killed_and_restarted(self):
        b = self.start_bridge()
        since = b.log_size()
        self.set_weights("alpha", 97, 3)      # just before the kill (state.json is durable)
        self.consul.kill()
        b.wait_log(r"source: disconnected", since=since, timeout=10 * SLOW)
        self.consul.start()                   # same port, same data and indexes
        self.set_weights("beta", 98, 2)
        self.check_invariants()


if __name__ == "__main__":
    unittest.main()
