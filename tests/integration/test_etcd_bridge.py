"""End to end on real etcd and the Kubernetes API test server: what a user does
with etcdctl, and what must then be true of the IngressRoutes."""
import base64
import json
import os
import signal
import sys
import tempfile
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
from cbtest import Bridge, Etcd, KubeAPI, bridge_config, free_port, wait_until  # noqa: E402

G = "traefik.io"
ROUTE = """match: Host(`shop.example.com`) && PathPrefix(`/`)
entryPoints: [websecure]
services:
  - name: shop-v1
    port: 80
  - name: shop-v2
    port: 80
"""


def weights_of(obj, route_index=-1):
    if not obj:
        return None
    return {s["name"]: s.get("weight") for s in obj["spec"]["routes"][route_index]["services"]}


def writes(kube, since=0, plural="ingressroutes"):
    return [r for r in kube.requests(since=since)
            if r["method"] in ("POST", "PUT", "PATCH", "DELETE") and plural in r["path"]]


class BridgeCase(unittest.TestCase):
    """Fresh etcd + API server + bridge per test."""

    config_overrides = {}

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="cb-it-")
        self.addCleanup(self.tmp.cleanup)
        self.etcd = Etcd(self.tmp.name)
        self.addCleanup(self.etcd.stop)
        self.kube = KubeAPI(self.tmp.name)
        self.addCleanup(self.kube.stop)

    def start_bridge(self, **overrides):
        cfg = bridge_config(etcd=self.etcd, kube=self.kube, **{**self.config_overrides, **overrides})
        self.bridge = Bridge(self.tmp.name, cfg)
        self.addCleanup(self.bridge.stop)
        self.bridge.wait_log(r"ready: ", timeout=20)
        return self.bridge

    def ir(self, name="shop", ns="default"):
        return self.kube.get(G, ns, "ingressroutes", name)

    def wait_weights(self, want, name="shop", ns="default", timeout=10):
        return wait_until(lambda: weights_of(self.ir(name, ns)) == want, timeout,
                          what="IngressRoute %s/%s weights %r (have %r)"
                          % (ns, name, want, weights_of(self.ir(name, ns))))


class OwnedMode(BridgeCase):
    def test_route_and_weights_create_the_ingressroute(self):
        self.etcd.put("canary/default/shop/route", ROUTE)
        self.etcd.put("canary/default/shop/weights", "shop-v1=90, shop-v2=10")
        self.start_bridge()
        self.wait_weights({"shop-v1": 90, "shop-v2": 10})
        obj = self.ir()
        meta = obj["metadata"]
        self.assertEqual(meta["labels"]["app.kubernetes.io/managed-by"], "canary-bridge")
        self.assertEqual(meta["annotations"]["canary-bridge.io/source-prefix"], "canary/")
        rev = self.etcd.get_prefix("canary/default/shop/")
        self.assertTrue(meta["annotations"]["canary-bridge.io/source-revision"].isdigit())
        self.assertTrue(rev)
        route = obj["spec"]["routes"][-1]
        self.assertEqual(route["kind"], "Rule")
        self.assertEqual(route["match"], "Host(`shop.example.com`) && PathPrefix(`/`)")
        self.assertEqual(obj["spec"]["entryPoints"], ["websecure"])
        self.assertEqual([s["port"] for s in route["services"]], [80, 80])

    def test_weights_in_all_three_forms_mean_the_same(self):
        self.etcd.put("canary/default/shop/route", ROUTE)
        self.start_bridge()
        self.wait_weights({"shop-v1": 1, "shop-v2": 1})  # no weight anywhere: Traefik's 1
        for text, want in (('{"shop-v1": 70, "shop-v2": 30}', {"shop-v1": 70, "shop-v2": 30}),
                           ("shop-v1: 60\nshop-v2: 40\n", {"shop-v1": 60, "shop-v2": 40}),
                           ("shop-v1=50, shop-v2=50", {"shop-v1": 50, "shop-v2": 50})):
            self.etcd.put("canary/default/shop/weights", text)
            self.wait_weights(want)

    def test_labels_and_annotations_added_by_others_are_kept(self):
        self.etcd.put("canary/default/shop/route", ROUTE)
        self.start_bridge()
        self.wait_weights({"shop-v1": 1, "shop-v2": 1})
        self.kube.merge_patch(G, "default", "ingressroutes", "shop", {
            "metadata": {"labels": {"team": "web"}, "annotations": {"argocd.io/x": "y"}}})
        self.etcd.put("canary/default/shop/weights", "shop-v1=80, shop-v2=20")
        self.wait_weights({"shop-v1": 80, "shop-v2": 20})
        meta = self.ir()["metadata"]
        self.assertEqual(meta["labels"]["team"], "web")
        self.assertEqual(meta["annotations"]["argocd.io/x"], "y")
        self.assertEqual(meta["labels"]["app.kubernetes.io/managed-by"], "canary-bridge")

    def test_unlabelled_object_is_never_taken_over(self):
        foreign = {"apiVersion": "traefik.io/v1alpha1", "kind": "IngressRoute",
                   "metadata": {"name": "shop", "namespace": "default"},
                   "spec": {"routes": [{"kind": "Rule", "match": "Host(`x`)",
                                        "services": [{"name": "legacy", "port": 80}]}]}}
        self.kube.create(G, "default", "ingressroutes", foreign)
        before = self.ir()
        mark = self.kube.requests()[-1]["seq"]
        self.etcd.put("canary/default/shop/route", ROUTE)
        self.start_bridge()
        self.bridge.wait_log(r"route default/shop: .*not managed by canary-bridge")
        self.assertEqual(self.ir()["metadata"]["resourceVersion"],
                         before["metadata"]["resourceVersion"])
        self.assertEqual(writes(self.kube, since=mark), [])


class PatchedMode(BridgeCase):
    def existing(self):
        return {"apiVersion": "traefik.io/v1alpha1", "kind": "IngressRoute",
                "metadata": {"name": "shop", "namespace": "default",
                             "labels": {"app": "shop", "helm.sh/chart": "shop-1.2.3"},
                             "annotations": {"meta.helm.sh/release-name": "shop"}},
                "spec": {"entryPoints": ["web"],
                         "routes": [
                             {"kind": "Rule", "match": "Host(`a.example.com`)", "priority": 5,
                              "middlewares": [{"name": "auth"}],
                              "services": [{"name": "shop-v1", "port": 80, "weight": 100},
                                           {"name": "shop-v2", "port": "http", "weight": 0}]},
                             {"kind": "Rule", "match": "Host(`b.example.com`)",
                              "services": [{"name": "shop-v1", "port": 80},
                                           {"name": "shop-v2", "port": 80, "passHostHeader": False}]}],
                         "tls": {"secretName": "shop-tls"}}}

    def test_only_named_weights_change_everything_else_is_kept(self):
        self.kube.create(G, "default", "ingressroutes", self.existing())
        before = self.ir()
        self.start_bridge()
        self.etcd.put("canary/default/shop/weights", '{"shop-v2": 25}')
        wait_until(lambda: weights_of(self.ir(), 0) == {"shop-v1": 100, "shop-v2": 25},
                   what="patched weight")
        after = self.ir()
        self.assertEqual(weights_of(after, 1), {"shop-v1": None, "shop-v2": 25})
        # Everything but the weights and server bookkeeping is byte-for-byte the same.
        for obj in (before, after):
            for route in obj["spec"]["routes"]:
                for s in route["services"]:
                    s.pop("weight", None)
            for k in ("resourceVersion", "generation", "managedFields"):
                obj["metadata"].pop(k, None)
        self.assertEqual(before, after)
        self.assertNotIn("app.kubernetes.io/managed-by", after["metadata"]["labels"])

    def test_unknown_service_fails_the_route_only(self):
        self.kube.create(G, "default", "ingressroutes", self.existing())
        rv = self.ir()["metadata"]["resourceVersion"]
        self.start_bridge()
        self.etcd.put("canary/default/shop/weights", "shop-v1=50, shop-v9=50")
        self.bridge.wait_log(r"canary/default/shop/weights: .*shop-v9")
        self.assertEqual(self.ir()["metadata"]["resourceVersion"], rv)

    def test_missing_object_is_reported_then_patched_when_it_appears(self):
        self.start_bridge()
        self.etcd.put("canary/default/shop/weights", "shop-v1=10, shop-v2=90")
        self.bridge.wait_log(r"route default/shop: IngressRoute default/shop not found")
        self.kube.create(G, "default", "ingressroutes", self.existing())
        wait_until(lambda: weights_of(self.ir(), 0) == {"shop-v1": 10, "shop-v2": 90},
                   what="weights applied once the object exists")


class Concurrency(BridgeCase):
    def test_409_conflicts_are_retried_until_the_write_lands(self):
        self.etcd.put("canary/default/shop/route", ROUTE)
        self.start_bridge()
        self.wait_weights({"shop-v1": 1, "shop-v2": 1})
        self.kube.clear_requests()
        self.kube.fault(method="PUT", path_regex="/ingressroutes/shop$", status=409, count=3)
        self.etcd.put("canary/default/shop/weights", "shop-v1=75, shop-v2=25")
        self.wait_weights({"shop-v1": 75, "shop-v2": 25})
        puts = [r for r in self.kube.requests() if r["method"] == "PUT"]
        self.assertEqual([r["status"] for r in puts], [409, 409, 409, 200])
        # Every retry follows a fresh read (no blind retries on a stale version).
        seq = [(r["method"], r["status"]) for r in self.kube.requests()
               if "/ingressroutes/shop" in r["path"] and "watch" not in r["query"]]
        for i, (m, st) in enumerate(seq[:-1]):
            if m == "PUT" and st == 409:
                self.assertEqual(seq[i + 1][0], "GET")

    def test_concurrent_writer_changes_are_merged_not_lost(self):
        self.etcd.put("canary/default/shop/route", ROUTE)
        self.start_bridge()
        self.wait_weights({"shop-v1": 1, "shop-v2": 1})
        # Someone labels the object; the bridge's cached version is now stale.
        self.kube.merge_patch(G, "default", "ingressroutes", "shop",
                              {"metadata": {"labels": {"owner": "ops"}}})
        self.etcd.put("canary/default/shop/weights", "shop-v1=5, shop-v2=95")
        self.wait_weights({"shop-v1": 5, "shop-v2": 95})
        self.assertEqual(self.ir()["metadata"]["labels"]["owner"], "ops")


class BadInput(BridgeCase):
    def test_bad_value_fails_only_its_route_and_keeps_the_last_good_object(self):
        self.etcd.put("canary/default/shop/route", ROUTE)
        self.etcd.put("canary/default/shop/weights", "shop-v1=90, shop-v2=10")
        self.etcd.put("canary/default/cart/route", ROUTE.replace("shop", "cart"))
        self.start_bridge()
        self.wait_weights({"shop-v1": 90, "shop-v2": 10})
        self.wait_weights({"cart-v1": 1, "cart-v2": 1}, name="cart")
        good = self.ir()
        for bad, why in (("shop-v1=ninety", "non-numeric"), ("shop-v1=-1", "negative"),
                         ("shop-v1=0, shop-v2=0", "all zero"), ("shop-v1=1.5", "fractional"),
                         ("shop-v1=1, shop-v1=2", "duplicate"), ("shop-v3=10", "unknown")):
            since = self.bridge.log_size()
            self.etcd.put("canary/default/shop/weights", bad)
            self.bridge.wait_log(r"canary/default/shop/weights: ", since=since)
            self.assertEqual(self.ir()["metadata"]["resourceVersion"],
                             good["metadata"]["resourceVersion"], why)
        # The other route keeps working, and the daemon is alive.
        self.etcd.put("canary/default/cart/weights", "cart-v1=3, cart-v2=7")
        self.wait_weights({"cart-v1": 3, "cart-v2": 7}, name="cart")
        self.assertTrue(self.bridge.alive())
        # A fix is picked up.
        self.etcd.put("canary/default/shop/weights", "shop-v1=60, shop-v2=40")
        self.wait_weights({"shop-v1": 60, "shop-v2": 40})

    def test_bad_route_document_and_stray_keys(self):
        self.start_bridge()
        self.etcd.put("canary/default/shop/route", "match: [unclosed")
        self.bridge.wait_log(r"canary/default/shop/route: ")
        self.etcd.put("canary/default/shop/route", "services: []\n")
        self.bridge.wait_log(r"canary/default/shop/route: .*match")
        for _ in range(3):
            self.etcd.put("canary/Not_A_Namespace/x/weights", "a=1")
        self.etcd.put("canary/default/shop/route", ROUTE)
        self.wait_weights({"shop-v1": 1, "shop-v2": 1})
        self.assertEqual(self.bridge.log_text().count("ignoring key canary/Not_A_Namespace/x/weights"),
                         1)
        self.assertIsNone(self.ir("x", "Not_A_Namespace"))


class NoNeedlessWrites(BridgeCase):
    config_overrides = {"reconcile": {"resync": "1s"}}

    def test_nothing_written_when_nothing_changed(self):
        self.etcd.put("canary/default/shop/route", ROUTE)
        self.etcd.put("canary/default/shop/weights", "shop-v1=90, shop-v2=10")
        self.start_bridge()
        self.wait_weights({"shop-v1": 90, "shop-v2": 10})
        mark = self.kube.requests()[-1]["seq"]
        self.etcd.put("canary/default/shop/weights", "shop-v1=90, shop-v2=10")  # same bytes
        self.etcd.put("canary/default/shop/weights", '{"shop-v1": 90, "shop-v2": 10}')  # same meaning
        self.etcd.put("canary/other/thing/notes", "not ours")
        # Two resync periods: full re-list of source and objects, every route re-checked.
        self.bridge.wait_log(r"resync", timeout=10)
        lists = lambda: [r for r in self.kube.requests(since=mark)
                         if r["method"] == "GET" and "watch" not in r["query"]
                         and r["path"].endswith("/ingressroutes")]
        wait_until(lambda: len(lists()) >= 2, timeout=10, what="two resyncs")
        self.assertEqual(writes(self.kube, since=mark), [])


class Bursts(BridgeCase):
    """A script rewriting many routes in a row is written once per route, with the last
    state, not once per change (API writes <= routes + retries)."""
    # A quiet period far above the gap between back-to-back transactions, so the test
    # does not depend on how fast this machine is.
    config_overrides = {"reconcile": {"burst_quiet": "2s", "burst_hold": "1m"}}
    N = 20

    def txn_weights(self, names, v2):
        b64 = lambda s: base64.b64encode(s.encode()).decode()
        self.etcd.call("/v3/kv/txn", {"success": [
            {"requestPut": {"key": b64("canary/default/%s/weights" % n),
                            "value": b64("%s-v1=%d, %s-v2=%d" % (n, 100 - v2, n, v2))}}
            for n in names]})

    def test_transactions_over_many_routes_are_written_once_per_route(self):
        names = ["r%02d" % i for i in range(self.N)]
        for n in names:
            self.etcd.put("canary/default/%s/route" % n, ROUTE.replace("shop", n))
        self.metrics_port = free_port()
        self.start_bridge(metrics_port=self.metrics_port)
        for n in names:
            self.wait_weights({n + "-v1": 1, n + "-v2": 1}, name=n)
        mark = self.kube.requests()[-1]["seq"]
        log_mark = self.bridge.log_size()
        for v2 in (10, 20, 30, 40, 50):
            self.txn_weights(names, v2)
        for n in names:
            self.wait_weights({n + "-v1": 50, n + "-v2": 50}, name=n, timeout=30)
        self.bridge.wait_log(r"burst: over after \d+ ms and \d+ route changes",
                             since=log_mark)
        ws = writes(self.kube, since=mark)
        self.assertEqual(sorted(w["body"]["metadata"]["name"] for w in ws), names,
                         "one write per route: %r" % [(w["method"], w["path"]) for w in ws])
        for w in ws:
            self.assertEqual(weights_of(w["body"]), {w["body"]["metadata"]["name"] + "-v1": 50,
                                                     w["body"]["metadata"]["name"] + "-v2": 50})
        self.assertIsNotNone(self.bridge.wait_log(r"burst: more than 8 routes changed at once",
                                                  since=log_mark, timeout=1))
        text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_port,
                                      timeout=10).read().decode()
        self.assertIn("canary_bridge_burst_holds_total 1\n", text)
        self.assertIn("canary_bridge_burst_holding 0\n", text)

    def test_a_single_edit_is_not_held(self):
        """Edits one at a time, as a person makes them, never trip a hold: with a 2 s
        quiet period a held edit would take seconds, and the log would say so."""
        self.etcd.put("canary/default/shop/route", ROUTE)
        self.start_bridge()
        self.wait_weights({"shop-v1": 1, "shop-v2": 1})
        log_mark = self.bridge.log_size()
        for v2 in (10, 20, 30):
            self.etcd.put("canary/default/shop/weights", "shop-v1=%d, shop-v2=%d" % (100 - v2, v2))
            self.wait_weights({"shop-v1": 100 - v2, "shop-v2": v2})
        self.assertNotIn("burst:", self.bridge.log_text()[log_mark:])


def metric_value(port, name):
    """A series without labels from /metrics, or None when the bridge has no such series."""
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


class HotKey(BridgeCase):
    """One key rewritten in a tight loop (a script, a broken controller): at most
    reconcile.object_writes_per_second writes to the object, the last one carrying the
    last value; a person's edit after a quiet spell goes out at once."""
    config_overrides = {"reconcile": {"object_writes_per_second": 10}}
    PUTS = 1000

    def setUp(self):
        super().setUp()
        self.etcd.put("canary/default/shop/route", ROUTE)
        self.metrics_port = free_port()
        self.start_bridge(metrics_port=self.metrics_port)
        self.wait_weights({"shop-v1": 1, "shop-v2": 1})

    def ir_writes(self, since):
        return [w for w in writes(self.kube, since=since)
                if w["path"].endswith("/ingressroutes/shop") or
                (w["method"] == "POST" and w["body"]["metadata"]["name"] == "shop")]

    def test_a_key_rewritten_in_a_loop_is_written_at_most_n_times_a_second(self):
        mark = self.kube.requests()[-1]["seq"]
        # Weights are relative: every put is a new split, moving one way.
        for i in range(1, self.PUTS + 1):
            self.etcd.put("canary/default/shop/weights",
                          "shop-v1=%d, shop-v2=%d" % (self.PUTS - i, i))
        self.wait_weights({"shop-v1": 0, "shop-v2": self.PUTS}, timeout=20)
        ws = self.ir_writes(mark)
        span = ws[-1]["t"] - ws[0]["t"]
        sys.stderr.write("[hot key] %d puts -> %d writes over %.2f s\n"
                         % (self.PUTS, len(ws), span))
        # A bucket of one token refilled 10 times a second; +1 for the first write, +1 for
        # the server's clock reading arrivals, not sends.
        self.assertLessEqual(len(ws), int(span * 10) + 2,
                             "%d writes in %.2f s" % (len(ws), span))
        # Coalesced, never stale: each write carries a later value than the one before,
        # and the last one the last put.
        got = [weights_of(w["body"])["shop-v2"] for w in ws]
        self.assertEqual(got, sorted(got))
        self.assertEqual(got[-1], self.PUTS)
        self.assertGreater(metric_value(self.metrics_port, "canary_bridge_writes_delayed_total"), 0)

    def test_a_single_edit_after_quiet_is_written_at_once(self):
        # Quiet: the last write is more than two write periods (2 x 100 ms) old.
        last = self.ir_writes(0)[-1]
        wait_until(lambda: time.time() > last["t_done"] + 0.2, 5, what="a quiet spell")
        delayed = metric_value(self.metrics_port, "canary_bridge_writes_delayed_total")
        mark = self.kube.requests()[-1]["seq"]
        self.etcd.put("canary/default/shop/weights", "shop-v1=70, shop-v2=30")
        self.wait_weights({"shop-v1": 70, "shop-v2": 30})
        ws = self.ir_writes(mark)
        self.assertEqual([(w["method"], weights_of(w["body"])["shop-v2"]) for w in ws],
                         [("PUT", 30)])
        # Written at once: the pass that wrote it did not wait for a write slot.
        self.assertEqual(metric_value(self.metrics_port, "canary_bridge_writes_delayed_total"),
                         delayed)
        self.assertEqual(delayed, 0)


class PagedLists(BridgeCase):
    """IngressRoutes are listed 500 at a time (limit + continue, as client-go does), so the
    event loop is never stuck parsing thousands of objects in one answer; a continue token
    that expired between pages (410) starts the list again."""

    def test_large_lists_come_in_pages_and_an_expired_page_restarts_the_list(self):
        conn = self.kube.connection()
        for i in range(1100):     # other people's IngressRoutes: listed, never touched
            obj = {"apiVersion": "traefik.io/v1alpha1", "kind": "IngressRoute",
                   "metadata": {"name": "x%04d" % i, "namespace": "default"},
                   "spec": {"routes": [{"kind": "Rule", "match": "Host(`x%d`)" % i,
                                        "services": [{"name": "x", "port": 80}]}]}}
            conn.request("POST", "/apis/%s/v1alpha1/namespaces/default/ingressroutes" % G,
                         json.dumps(obj), {"Content-Type": "application/json",
                                           "Authorization": "Bearer " + self.kube.token})
            r = conn.getresponse()
            r.read()
            self.assertEqual(r.status, 201)
        conn.close()
        self.kube.fault(method="GET", path_regex="/ingressroutes$", query_regex="continue=",
                        status=410, count=1,
                        message="The provided continue parameter is too old to display a "
                                "consistent list result.")
        mark = self.kube.requests()[-1]["seq"]
        self.etcd.put("canary/default/shop/route", ROUTE)
        self.etcd.put("canary/default/shop/weights", "shop-v1=70, shop-v2=30")
        self.start_bridge()
        self.wait_weights({"shop-v1": 70, "shop-v2": 30})
        self.bridge.wait_log(r"list of ingressroutes expired between pages; listing again")
        lists = [r for r in self.kube.requests(since=mark) if r["method"] == "GET"
                 and r["path"].endswith("/ingressroutes") and "watch" not in r["query"]]
        self.assertTrue(all(r["query"].get("limit") == "500" for r in lists), lists)
        self.assertEqual([(r["status"], "continue" in r["query"]) for r in lists[:5]],
                         [(200, False), (410, True), (200, False), (200, True), (200, True)])
        # Nothing but the route's own object was written.
        self.assertEqual([w["path"].rsplit("/", 1)[-1] if w["method"] != "POST" else
                          w["body"]["metadata"]["name"] for w in writes(self.kube, since=mark)],
                         ["shop"])


class Drift(BridgeCase):
    def test_hand_edit_of_a_managed_field_is_put_back(self):
        self.etcd.put("canary/default/shop/route", ROUTE)
        self.etcd.put("canary/default/shop/weights", "shop-v1=90, shop-v2=10")
        self.start_bridge()
        self.wait_weights({"shop-v1": 90, "shop-v2": 10})
        obj = self.ir()
        obj["spec"]["routes"][-1]["services"][1]["weight"] = 100
        self.kube.put(G, "default", "ingressroutes", obj)
        self.wait_weights({"shop-v1": 90, "shop-v2": 10})
        self.bridge.wait_log(r"IngressRoute shop written")

    def test_deleted_object_is_recreated_and_watch_expiry_relists(self):
        self.etcd.put("canary/default/shop/route", ROUTE)
        self.start_bridge()
        self.wait_weights({"shop-v1": 1, "shop-v2": 1})
        self.kube.compact()  # the bridge's watch ends; resuming gets 410 Expired
        self.kube.delete(G, "default", "ingressroutes", "shop")
        self.wait_weights({"shop-v1": 1, "shop-v2": 1})


class SourceFaults(BridgeCase):
    def test_etcd_restarted_mid_watch(self):
        self.etcd.put("canary/default/shop/route", ROUTE)
        self.start_bridge()
        self.wait_weights({"shop-v1": 1, "shop-v2": 1})
        self.etcd.kill()
        self.bridge.wait_log(r"source: disconnected")
        self.etcd.restart()
        self.etcd.put("canary/default/shop/weights", "shop-v1=33, shop-v2=67")
        self.wait_weights({"shop-v1": 33, "shop-v2": 67}, timeout=20)
        self.assertTrue(self.bridge.alive())

    def test_compaction_past_the_watch_revision(self):
        self.etcd.put("canary/default/shop/route", ROUTE)
        self.start_bridge()
        self.wait_weights({"shop-v1": 1, "shop-v2": 1})
        # Freeze the bridge, break its watch, move etcd on and compact the
        # history it would resume from.
        self.bridge.signal(signal.SIGSTOP)
        try:
            self.etcd.kill()
            self.etcd.restart()
            for i in range(1, 6):
                self.etcd.put("canary/default/shop/weights", "shop-v1=%d, shop-v2=50" % i)
            self.etcd.put("canary/default/gone/route", ROUTE.replace("shop", "gone"))
            self.etcd.compact()
        finally:
            self.bridge.signal(signal.SIGCONT)
        self.wait_weights({"shop-v1": 5, "shop-v2": 50}, timeout=20)
        self.wait_weights({"gone-v1": 1, "gone-v2": 1}, name="gone", timeout=20)
        self.bridge.wait_log(r"compact", timeout=5)


class KubeAuth(BridgeCase):
    def test_rotated_token_file_is_picked_up(self):
        """A kubeconfig with tokenFile (as for projected service-account tokens):
        when the server moves to a new token and the file follows, the bridge
        re-reads it after the 401 and carries on."""
        import yaml
        token_path = os.path.join(self.tmp.name, "sa-token")
        with open(token_path, "w") as f:
            f.write(self.kube.token + "\n")
        with open(self.kube.kubeconfig) as f:
            kc = yaml.safe_load(f)
        kc["users"][0]["user"] = {"tokenFile": token_path}
        kc_path = os.path.join(self.tmp.name, "kubeconfig-tokenfile")
        with open(kc_path, "w") as f:
            yaml.safe_dump(kc, f)
        self.etcd.put("canary/default/shop/route", ROUTE)
        cfg = bridge_config(etcd=self.etcd, kube=self.kube)
        cfg["kubernetes"] = {"kubeconfig": kc_path}
        self.bridge = Bridge(self.tmp.name, cfg)
        self.addCleanup(self.bridge.stop)
        self.wait_weights({"shop-v1": 1, "shop-v2": 1})
        self.kube.control("POST", "token", {"token": "rotated-token-2"})
        self.kube.token = "rotated-token-2"  # the test client follows too
        with open(token_path + ".tmp", "w") as f:
            f.write("rotated-token-2\n")
        os.rename(token_path + ".tmp", token_path)
        self.etcd.put("canary/default/shop/weights", "shop-v1=20, shop-v2=80")
        self.bridge.wait_log(r"token file .* changed")
        self.wait_weights({"shop-v1": 20, "shop-v2": 80}, timeout=15)
        self.assertNotIn("rotated-token-2", self.bridge.log_text())


class OneShotCommands(BridgeCase):
    def make(self, **overrides):
        cfg = bridge_config(etcd=self.etcd, kube=self.kube, **overrides)
        return Bridge(self.tmp.name, cfg, start=False)

    def test_sync_writes_once_and_exits_zero(self):
        self.etcd.put("canary/default/shop/route", ROUTE)
        self.etcd.put("canary/default/shop/weights", "shop-v1=90, shop-v2=10")
        code, out, err = self.make().run_once("sync")
        self.assertEqual(code, 0, err)
        self.assertEqual(weights_of(self.ir()), {"shop-v1": 90, "shop-v2": 10})
        code, out, err = self.make().run_once("sync")  # nothing to do the second time
        self.assertEqual(code, 0, err)
        self.assertEqual(len(writes(self.kube)), 1)

    def test_sync_fails_with_1_when_a_route_fails(self):
        self.etcd.put("canary/default/shop/weights", "shop-v1=x")
        code, out, err = self.make().run_once("sync")
        self.assertEqual(code, 1, err)
        self.assertIn("canary/default/shop/weights", err)

    def test_sync_dry_run_writes_nothing(self):
        self.etcd.put("canary/default/shop/route", ROUTE)
        code, out, err = self.make().run_once(["sync", "--dry-run"])
        self.assertEqual(code, 0, err)
        self.assertIsNone(self.ir())
        self.assertTrue(all("dryRun=All" in r["path"] + str(r["query"]) or r["query"].get("dryRun")
                            for r in writes(self.kube)))
        self.assertTrue(writes(self.kube))

    def test_render_prints_the_objects_and_writes_nothing(self):
        self.etcd.put("canary/default/shop/route", ROUTE)
        self.etcd.put("canary/default/shop/weights", "shop-v1=90, shop-v2=10")
        self.etcd.put("canary/default/cart/route", ROUTE.replace("shop", "cart"))
        code, out, err = self.make().run_once(["render", "default/shop"])
        self.assertEqual(code, 0, err)
        self.assertIn("kind: IngressRoute", out)
        self.assertIn("name: shop", out)
        self.assertNotIn("cart", out)
        self.assertIn("weight: 90", out)
        self.assertEqual(writes(self.kube), [])

    def test_check_reaches_source_and_api(self):
        code, out, err = self.make().run_once("check")
        self.assertEqual(code, 0, out + err)
        self.assertIn("ok   source", out)
        self.assertIn("ok   kubernetes", out)

    def test_check_fails_when_crds_are_missing(self):
        self.kube.stop()
        kube2 = KubeAPI(self.tmp.name, groups=["traefik.containo.us"], name="kube2")
        self.addCleanup(kube2.stop)
        cfg = bridge_config(etcd=self.etcd, kube=kube2, traefik={"api_group": "traefik.io"})
        code, out, err = Bridge(self.tmp.name, cfg, start=False).run_once("check")
        self.assertEqual(code, 1, out + err)
        self.assertIn("FAIL kubernetes", out)

    def test_auto_group_detects_traefik_v2_only_cluster(self):
        """api_group auto on an API server that serves only traefik.containo.us
        (Traefik before v2.10): check says so, and run writes there."""
        self.kube.stop()
        kube2 = KubeAPI(self.tmp.name, groups=["traefik.containo.us"], name="kube2")
        self.addCleanup(kube2.stop)
        cfg = bridge_config(etcd=self.etcd, kube=kube2, traefik={"api_group": "auto"})
        code, out, err = Bridge(self.tmp.name, cfg, start=False).run_once("check")
        self.assertEqual(code, 0, out + err)
        self.assertIn("traefik.containo.us/v1alpha1 serves", out)
        self.etcd.put("canary/default/shop/route", ROUTE)
        b = Bridge(self.tmp.name, cfg, name="bridge-run")
        self.addCleanup(b.stop)
        obj = wait_until(lambda: kube2.get("traefik.containo.us", "default", "ingressroutes",
                                           "shop"), what="IngressRoute in traefik.containo.us")
        self.assertEqual(obj["apiVersion"], "traefik.containo.us/v1alpha1")

    def test_bad_config_exits_2_naming_the_line(self):
        b = self.make()
        b.write_config("source:\n  type: etcd\n  prefixx: canary/\n")
        code, out, err = b.run_once("run")
        self.assertEqual(code, 2)
        self.assertIn("bridge.yaml:3:", err)
        self.assertIn("prefixx", err)

    def test_usage_errors_exit_2(self):
        code, out, err = self.make().run_once(["frobnicate"])
        self.assertEqual(code, 2)


if __name__ == "__main__":
    unittest.main()
