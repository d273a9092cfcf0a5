"""The bridge against a real Consul agent: the source behaviour suite that
tests/integration/test_sources.py runs against etcd and the Consul KV test server, run
again with `consul agent -dev` (v1.16.3, built by tests/real/build.sh) as the source,
a plain put through the consul CLI landing in the IngressRoute, ACLs on with default deny
(anonymous, read-only and wrong tokens), `consul snapshot save` / `restore`, and
`limits.http_max_conns_per_client` 12 with many routes and status feedback.

The Kubernetes side is the API test server here (its request log is how the suite counts
object writes); tests/real/test_kube_real.py puts the bridge against a real apiserver."""
import base64
import json
import os
import re
import sys
import tempfile
import unittest
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
from cbtest import Bridge, KubeAPI, bridge_config, free_port, wait_until  # noqa: E402
from real import RealConsul, require_real  # noqa: E402
from tests.integration.test_sources import ROUTE, SourceSuite, route_doc, weights_of  # noqa: E402

G = "traefik.io"


class RealConsulSource(SourceSuite, unittest.TestCase):
    """SourceSuite with a real agent.  Every scenario but the restart runs on `consul
    agent -dev`; an in-memory dev agent forgets its KV store when it stops, so the restart
    scenario uses a one-node server with a data dir, as a production agent would."""
    source_name = "consul"

    @classmethod
    def setUpClass(cls):
        require_real("consul")

    def start_source(self):
        dev = self._testMethodName != "test_source_restart_survived"
        self.consul = RealConsul(self.tmp.name, dev=dev)
        self.addCleanup(self.consul.stop)

    def source_config(self):
        return {"source": {"type": "consul", "address": self.consul.url, "prefix": "canary/"}}

    def put(self, key, value):
        self.assertTrue(self.consul.put(key, value))       # as the UI writes: text/plain, no cas
        return self.revision_of(key)

    def delete(self, key):
        self.consul.delete(key)

    def delete_folder(self, prefix):
        self.consul.delete(prefix, recurse=True)    # the UI's "Delete folder"

    def get(self, key):
        return self.consul.get(key)

    def revision_of(self, key):
        return self.consul.entry(key)["ModifyIndex"]

    def status_writes(self, key):
        # A real agent has no request log API, but at log level debug it logs every HTTP
        # request it finished ("Request finished: method=PUT url=/v1/kv/<key>?cas=...").
        pat = re.compile(r"Request finished: method=PUT url=/v1/kv/%s(\?\S*)? "
                         % re.escape(key))
        return len(pat.findall(self.consul.log_text()))

    def kill_source(self):
        self.consul.kill()

    def restart_source(self):
        self.consul.start()      # same ports, same data dir (dev=False for this scenario)


class RealConsulCLI(unittest.TestCase):
    """`consul kv put`, the operator's command line, moves the weights."""

    @classmethod
    def setUpClass(cls):
        require_real("consul")

    def test_consul_kv_put_lands_in_the_ingressroute(self):
        import tempfile
        from cbtest import Bridge, KubeAPI, bridge_config, wait_until
        tmp = tempfile.TemporaryDirectory(prefix="cb-real-consul-")
        self.addCleanup(tmp.cleanup)
        kube = KubeAPI(tmp.name)
        self.addCleanup(kube.stop)
        consul = RealConsul(tmp.name)
        self.addCleanup(consul.stop)
        consul.consul("kv", "put", "canary/default/shop/route", ROUTE)
        bridge = Bridge(tmp.name, bridge_config(consul_address=consul.url, kube=kube))
        self.addCleanup(bridge.stop)
        bridge.wait_log(r"ready: ", timeout=20)

        def weights():
            return weights_of(kube.get(G, "default", "ingressroutes", "shop"))
        wait_until(lambda: weights() == {"shop-v1": 80, "shop-v2": 20}, 20,
                   what="IngressRoute from the route key")
        out = consul.consul("kv", "put", "canary/default/shop/weights", "shop-v1=25, shop-v2=75")
        self.assertIn("Success!", out.stdout)
        wait_until(lambda: weights() == {"shop-v1": 25, "shop-v2": 75}, 20,
                   what="weights 25/75 after consul kv put")
        ann = kube.get(G, "default", "ingressroutes", "shop")["metadata"]["annotations"]
        self.assertEqual(ann["canary-bridge.io/source"], "consul")
        self.assertEqual(ann["canary-bridge.io/source-revision"],
                         str(consul.entry("canary/default/shop/weights")["ModifyIndex"]))


def metric(port, name):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        m = re.search(r"^%s (\S+)$" % re.escape(name), r.read().decode(), re.M)
    return float(m.group(1)) if m else None


class RealConsulCase(unittest.TestCase):
    """One real agent (and one API test server) per class; each test uses a prefix and
    route names of its own."""
    agent_args = {}

    @classmethod
    def setUpClass(cls):
        require_real("consul")
        cls.tmp = tempfile.TemporaryDirectory(prefix="cb-real-consul-")
        try:
            cls.kube = KubeAPI(cls.tmp.name)
            cls.consul = RealConsul(cls.tmp.name, **cls.agent_args)
        except BaseException:
            if hasattr(cls, "kube"):
                cls.kube.stop()
            cls.tmp.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.consul.stop()
        cls.kube.stop()
        cls.tmp.cleanup()

    def setUp(self):
        self.prefix = "%s/" % self._testMethodName.replace("test_", "")[:40].replace("_", "-")
        self.seq = self.kube.requests()[-1]["seq"] if self.kube.requests() else 0

    def start_bridge(self, name="bridge", token=None, ready=True, **sections):
        source = {"wait": "30s"}
        if token:
            source["token"] = token
        source.update(sections.pop("source", {}))
        sections["source"] = source
        self.metrics_port = free_port()
        cfg = bridge_config(consul_address=self.consul.url, kube=self.kube, prefix=self.prefix,
                            metrics_port=self.metrics_port, **sections)
        b = Bridge(self.tmp.name, cfg, name="%s-%s" % (name, self._testMethodName))
        self.addCleanup(b.stop)
        if ready:
            b.wait_log(r"ready: ", timeout=30)
        self.bridge = b
        return b

    def put(self, key, value, token=True):
        self.assertTrue(self.consul.put(self.prefix + key, value, token=token))

    def ir(self, name):
        return self.kube.get(G, "default", "ingressroutes", name)

    def wait_weights(self, name, want, timeout=20):
        try:
            wait_until(lambda: weights_of(self.ir(name)) == want, timeout,
                       what="IngressRoute %s weights %r" % (name, want))
        except AssertionError as e:
            raise AssertionError("%s (have %r)\n--- bridge log ---\n%s" % (
                e, weights_of(self.ir(name)), self.bridge.log_tail())) from None

    def kube_deletes(self):
        return [r for r in self.kube.requests(since=self.seq) if r["method"] == "DELETE"]


class RealConsulACL(RealConsulCase):
    """ACLs on with default deny, a management token made at start-up, and tokens made
    through the HTTP API (/v1/acl/policy, /v1/acl/token)."""
    agent_args = {"acl_default_policy": "deny"}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.read_token = cls.consul.create_token('key_prefix "" { policy = "read" }',
                                                 "read-only")

    def sync_then_stop(self, name):
        """A bridge with the management token and policy sync makes the IngressRoute;
        it is stopped, so that the next bridge finds an object it owns."""
        self.put("default/%s/route" % name, route_doc(name))
        b = self.start_bridge(name="first", token=self.consul.acl_token,
                              reconcile={"policy": "sync"})
        self.wait_weights(name, {"%s-v1" % name: 80, "%s-v2" % name: 20})
        b.stop()
        self.seq = self.kube.requests()[-1]["seq"]

    def test_anonymous_token_is_an_acl_error_and_deletes_nothing(self):
        self.sync_then_stop("anon")
        # Anonymous under default deny: Consul answers the recursive read with a plain
        # 404 + X-Consul-Index, as if the prefix were empty; policy sync would delete the
        # IngressRoute if the bridge believed it.  Its single-key probe gets the 403.
        status, headers, _ = self.consul.request("GET", "/v1/kv/%s?recurse" % self.prefix,
                                                 token=None)
        self.assertEqual((status, bool(headers.get("X-Consul-Index"))), (404, True))
        # No deletion guard to hide behind: a bridge that took the 404 for an empty
        # prefix would delete the IngressRoute at once.
        b = self.start_bridge(name="anon", ready=False,
                              reconcile={"policy": "sync", "max_delete_percent": 100})
        wait_until(lambda: metric(self.metrics_port, "canary_bridge_source_acl_denied") == 1
                   or self.kube_deletes(), 30, what="an ACL error (or a deletion)")
        self.assertEqual(self.kube_deletes(), [])
        self.assertEqual(weights_of(self.ir("anon")), {"anon-v1": 80, "anon-v2": 20})
        b.wait_log(r"warn +consul: \S+: ACL: permission denied reading %s with the anonymous "
                   r"token .*under Consul's default ACL policy deny.*Consul: Permission denied: "
                   r"anonymous token lacks permission 'key:read' on \"%s\""
                   % (re.escape(self.prefix), re.escape(self.prefix)), timeout=30)
        self.assertTrue(b.alive())
        self.assertNotRegex(b.log_text(), r"ready: ")
        self.assertEqual(self.kube_deletes(), [])

    def test_wrong_token_is_an_acl_error_and_deletes_nothing(self):
        self.sync_then_stop("wrong")
        wrong = "0000dead-beef-4bad-8bad-00000000cafe"
        b = self.start_bridge(name="wrong", token=wrong, ready=False,
                              reconcile={"policy": "sync", "max_delete_percent": 100})
        wait_until(lambda: metric(self.metrics_port, "canary_bridge_source_acl_denied") == 1
                   or self.kube_deletes(), 30, what="an ACL error (or a deletion)")
        self.assertEqual(self.kube_deletes(), [])
        b.wait_log(r"warn +consul: \S+: ACL: permission denied reading %s \(check the ACL token\): "
                   r"ACL not found" % re.escape(self.prefix), timeout=30)
        self.assertNotIn(wrong, b.log_text())
        self.assertEqual(weights_of(self.ir("wrong")), {"wrong-v1": 80, "wrong-v2": 20})
        self.assertEqual(self.kube_deletes(), [])

    def test_read_only_token_applies_routes_and_says_status_writes_are_refused(self):
        self.put("default/ro/route", route_doc("ro"))
        b = self.start_bridge(name="ro", token=self.read_token, reconcile={"status": True})
        self.wait_weights("ro", {"ro-v1": 80, "ro-v2": 20})
        b.wait_log(r"warn +status feedback: cannot write %sdefault/ro/status: permission "
                   r"denied writing %sdefault/ro/status \(syncing goes on"
                   % (re.escape(self.prefix), re.escape(self.prefix)), timeout=30)
        self.put("default/ro/weights", "ro-v1=35, ro-v2=65")
        self.wait_weights("ro", {"ro-v1": 35, "ro-v2": 65})
        self.assertIsNone(self.consul.get(self.prefix + "default/ro/status"))
        self.assertEqual(len(re.findall(r"status feedback: cannot write", b.log_text())), 1)
        self.assertNotIn(self.read_token, b.log_text())


class RealConsulSnapshot(RealConsulCase):
    """`consul snapshot save` / `restore` on a one-node server: the restore takes the
    index back, and the data with it; the bridge follows and keeps working."""
    agent_args = {"dev": False}

    def test_snapshot_restore_takes_the_index_back_and_the_bridge_follows(self):
        self.put("default/snap/route", route_doc("snap"))
        self.put("default/snap/weights", "snap-v1=90, snap-v2=10")
        # With a wait of 5m, only an answer that shows the restore at once can pass.
        self.start_bridge(name="snap", source={"wait": "5m"})
        self.wait_weights("snap", {"snap-v1": 90, "snap-v2": 10})
        path = os.path.join(self.tmp.name, "kv.snap")
        self.consul.consul("snapshot", "save", path)
        before = self.consul.index(self.prefix)
        for i in range(5):
            self.put("default/snap/weights", "snap-v1=%d, snap-v2=%d" % (20 + i, 80 - i))
        self.wait_weights("snap", {"snap-v1": 24, "snap-v2": 76})
        high = self.consul.index(self.prefix)
        since = self.bridge.log_size()
        self.consul.consul("snapshot", "restore", path)
        self.assertLess(self.consul.index(self.prefix), high)
        self.assertEqual(self.consul.index(self.prefix), before)
        self.bridge.wait_log(r"consul: index of '%s' went backwards from \d+ to \d+"
                             % re.escape(self.prefix), since=since, timeout=30)
        self.wait_weights("snap", {"snap-v1": 90, "snap-v2": 10})     # the restored data
        self.put("default/snap/weights", "snap-v1=33, snap-v2=67")
        self.wait_weights("snap", {"snap-v1": 33, "snap-v2": 67})


class RealConsulConnLimit(RealConsulCase):
    """limits.http_max_conns_per_client 12: the bridge keeps to its 8 connections, so
    many routes with status feedback never meet Consul's 429."""
    agent_args = {"extra_config": {"limits": {"http_max_conns_per_client": 12}}}
    N = 40

    def test_many_routes_with_status_feedback_under_a_limit_of_12(self):
        for i in range(self.N):
            self.put("default/r%02d/route" % i, route_doc("r%02d" % i))
        b = self.start_bridge(name="many", reconcile={"status": True})
        for i in range(self.N):
            self.put("default/r%02d/weights" % i, "r%02d-v1=%d, r%02d-v2=%d"
                     % (i, i, i, 100 - i))

        def statuses():
            _, entries = self.consul.list(self.prefix)
            out = {}
            for e in entries:
                if e["Key"].endswith("/status") and e["Value"]:
                    st = json.loads(base64.b64decode(e["Value"]))
                    out[e["Key"]] = st
            return out

        def done():
            st = statuses()
            return len(st) == self.N and all(
                v["state"] == "applied" and v["weights"]["r%s-v1" % k.split("/")[-2][1:]]
                == int(k.split("/")[-2][1:]) for k, v in st.items())
        try:
            wait_until(done, 90, what="%d status keys saying applied" % self.N)
        except AssertionError as e:
            raise AssertionError("%s\n%s" % (e, b.log_tail())) from None
        bad = re.findall(r".*(?:HTTP 429|Too Many Requests|cannot write).*", b.log_text())
        self.assertEqual(bad, [], "Consul refused the bridge")
        for i in (0, self.N - 1):
            self.assertEqual(weights_of(self.ir("r%02d" % i)),
                             {"r%02d-v1" % i: i, "r%02d-v2" % i: 100 - i})


if __name__ == "__main__":
    unittest.main()
