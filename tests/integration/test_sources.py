"""Both key sources, end to end: the same behavioural suite against a real
etcd and against the Consul KV test server, so the two stay equal; then what only
Consul has (UI-style writes, the idle long poll, index resets, faults, ACL tokens)
and etcd authentication with a token that expires mid-watch.

Each scenario runs a fresh source, the Kubernetes API test server and the bridge.
Nothing sleeps where a condition can be awaited; nothing asserts on latency."""
import json
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
from cbtest import Bridge, Etcd, KubeAPI, bridge_config, free_port, wait_until  # noqa: E402
from consul import Consul  # noqa: E402

G = "traefik.io"
ROUTE = """match: Host(`shop.example.com`) && PathPrefix(`/`)
entryPoints: [websecure]
services:
  - name: shop-v1
    port: 80
    weight: 80
  - name: shop-v2
    port: 80
    weight: 20
"""
ROUTE_WEIGHTS = {"shop-v1": 80, "shop-v2": 20}     # what ROUTE says without a weights key


def route_doc(name):
    return ROUTE.replace("shop", name)


def weights_of(obj):
    if not obj:
        return None
    return {s["name"]: s.get("weight") for s in obj["spec"]["routes"][-1]["services"]}


def kube_writes(kube, since=0, name=None, plural="ingressroutes"):
    """Writes the API server saw to `plural` (optionally to one object) after seq `since`."""
    out = []
    for r in kube.requests(since=since):
        if r["method"] not in ("POST", "PUT", "PATCH", "DELETE") or plural not in r["path"]:
            continue
        if name is not None and not (r["path"].endswith("/" + name) or
                                     (r["method"] == "POST" and name in str(r.get("body")))):
            continue
        out.append(r)
    return out


def last_seq(kube):
    reqs = kube.requests()
    return reqs[-1]["seq"] if reqs else 0


def merged(base, over):
    """base with over deep-merged into it."""
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            merged(base[k], v)
        else:
            base[k] = v
    return base


def wait_for(pred, what, have, timeout=10):
    """wait_until, with what there is (have()) at the time it gives up."""
    try:
        return wait_until(pred, timeout, what=what)
    except AssertionError as e:
        raise AssertionError("%s (have %r)" % (e, have())) from None


def parse_status(text):
    return json.loads(text) if text else None


# =============================================================================================
# One behavioural suite, two sources

class SourceSuite:
    """The scenarios.  A subclass provides the source: start_source, source_config,
    put (-> the source revision of that write: etcd mod_revision, Consul ModifyIndex),
    delete, delete_folder, get, revision_of, kill_source, restart_source and
    status_writes (how many times a key has been written)."""

    source_name = None

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="cb-src-")
        self.addCleanup(self.tmp.cleanup)
        self.kube = KubeAPI(self.tmp.name)
        self.addCleanup(self.kube.stop)
        self.start_source()

    # ---- helpers shared by both sources
    def start_bridge(self, **overrides):
        cfg = merged(bridge_config(kube=self.kube, **self.source_config()), overrides)
        self.bridge = Bridge(self.tmp.name, cfg)
        self.addCleanup(self.bridge.stop)
        self.bridge.wait_log(r"ready: ", timeout=20)
        return self.bridge

    def ir(self, name="shop", ns="default"):
        return self.kube.get(G, ns, "ingressroutes", name)

    def wait_weights(self, want, name="shop", ns="default", timeout=10):
        return wait_for(lambda: weights_of(self.ir(name, ns)) == want,
                        "IngressRoute %s/%s weights %r" % (ns, name, want),
                        lambda: weights_of(self.ir(name, ns)), timeout)

    def status(self, name="shop", ns="default"):
        return parse_status(self.get("canary/%s/%s/status" % (ns, name)))

    def wait_status(self, pred, name="shop", what="status"):
        return wait_for(lambda: (lambda st: st if st and pred(st) else None)(self.status(name)),
                        "%s of %s" % (what, name), lambda: self.status(name))

    def wait_source_event(self, key, rev, kind="put", since=0):
        """The bridge saw this event from its source (debug log of both sources)."""
        return self.bridge.wait_log(r"(etcd|consul): %s %s at (revision|index) %d\b"
                                    % (kind, re.escape(key), rev), since=since)

    # ---- scenarios
    def test_initial_sync(self):
        self.put("canary/default/shop/route", ROUTE)
        rev = self.put("canary/default/shop/weights", "shop-v1=90, shop-v2=10")
        self.put("canary/default/cart/route", route_doc("cart"))
        self.start_bridge()
        self.wait_weights({"shop-v1": 90, "shop-v2": 10})
        self.wait_weights({"cart-v1": 80, "cart-v2": 20}, name="cart")
        meta = self.ir()["metadata"]
        self.assertEqual(meta["labels"]["app.kubernetes.io/managed-by"], "canary-bridge")
        self.assertEqual(meta["annotations"]["canary-bridge.io/source"], self.source_name)
        self.assertEqual(meta["annotations"]["canary-bridge.io/source-revision"], str(rev))

    def test_edit_propagates(self):
        self.put("canary/default/shop/route", ROUTE)
        self.start_bridge()
        self.wait_weights(ROUTE_WEIGHTS)
        rev = self.put("canary/default/shop/weights", "shop-v1=70, shop-v2=30")
        self.wait_weights({"shop-v1": 70, "shop-v2": 30})
        rev2 = self.put("canary/default/shop/weights", '{"shop-v1": 5, "shop-v2": 95}')
        self.assertGreater(rev2, rev)
        self.wait_weights({"shop-v1": 5, "shop-v2": 95})
        self.assertEqual(self.ir()["metadata"]["annotations"]["canary-bridge.io/source-revision"],
                         str(rev2))

    def test_deleting_weights_keeps_the_weights_in_force(self):
        # Issue 11, defect 2: deleting a key never moves traffic; the route
        # document's 80/20 applies once the document itself changes.
        self.put("canary/default/shop/route", ROUTE)
        self.put("canary/default/shop/weights", "shop-v1=10, shop-v2=90")
        self.start_bridge()
        self.wait_weights({"shop-v1": 10, "shop-v2": 90})
        since = self.bridge.log_size()
        self.delete("canary/default/shop/weights")
        self.bridge.wait_log(r"route default/shop: weights key gone: keeping the weights in "
                             r"force shop-v1=10 shop-v2=90", since=since)
        self.assertEqual(weights_of(self.ir()), {"shop-v1": 10, "shop-v2": 90})
        self.put("canary/default/shop/route", ROUTE + "priority: 5\n")
        self.wait_weights(ROUTE_WEIGHTS)

    def test_deleting_route_keys_leaves_the_object_in_upsert_only(self):
        self.put("canary/default/shop/route", ROUTE)
        self.put("canary/default/shop/weights", "shop-v1=10, shop-v2=90")
        self.put("canary/default/cart/route", route_doc("cart"))
        self.start_bridge()
        self.wait_weights({"shop-v1": 10, "shop-v2": 90})
        self.wait_weights({"cart-v1": 80, "cart-v2": 20}, name="cart")
        before = self.ir()
        mark = last_seq(self.kube)
        self.delete_folder("canary/default/shop/")       # route and weights at once
        self.bridge.wait_log(r"(etcd|consul): delete canary/default/shop/route at")
        self.bridge.wait_log(r"(etcd|consul): delete canary/default/shop/weights at")
        # Barrier: a later edit of another route has gone all the way through.
        self.put("canary/default/cart/weights", "cart-v1=1, cart-v2=2")
        self.wait_weights({"cart-v1": 1, "cart-v2": 2}, name="cart")
        self.assertEqual(self.ir()["metadata"]["resourceVersion"],
                         before["metadata"]["resourceVersion"])
        self.assertEqual(kube_writes(self.kube, since=mark, name="shop"), [])
        self.assertTrue(self.bridge.alive())

    def test_bad_input_is_isolated(self):
        self.put("canary/default/shop/route", ROUTE)
        self.put("canary/default/shop/weights", "shop-v1=90, shop-v2=10")
        self.put("canary/default/cart/route", route_doc("cart"))
        self.start_bridge()
        self.wait_weights({"shop-v1": 90, "shop-v2": 10})
        self.wait_weights({"cart-v1": 80, "cart-v2": 20}, name="cart")
        rv = self.ir()["metadata"]["resourceVersion"]
        for bad in ("shop-v1=ninety", "shop-v3=10", "{not: [valid"):
            since = self.bridge.log_size()
            self.put("canary/default/shop/weights", bad)
            self.bridge.wait_log(r"route default/shop: canary/default/shop/weights: ", since=since)
            self.assertEqual(self.ir()["metadata"]["resourceVersion"], rv, bad)
        # Good weights again (nothing to write: the object already says so), then a
        # broken route document.
        since = self.bridge.log_size()
        self.put("canary/default/shop/weights", "shop-v1=90, shop-v2=10")
        self.bridge.wait_log(r"route default/shop: recovered", since=since)
        since = self.bridge.log_size()
        self.put("canary/default/shop/route", "match: [unclosed")
        self.bridge.wait_log(r"route default/shop: canary/default/shop/route: ", since=since)
        # Other routes keep working, the daemon is alive, the last good object stays.
        self.put("canary/default/cart/weights", "cart-v1=3, cart-v2=7")
        self.wait_weights({"cart-v1": 3, "cart-v2": 7}, name="cart")
        self.assertTrue(self.bridge.alive())
        self.assertEqual(self.ir()["metadata"]["resourceVersion"], rv)
        self.assertEqual(weights_of(self.ir()), {"shop-v1": 90, "shop-v2": 10})
        # A fix is picked up.
        self.put("canary/default/shop/route", ROUTE)
        self.put("canary/default/shop/weights", "shop-v1=60, shop-v2=40")
        self.wait_weights({"shop-v1": 60, "shop-v2": 40})

    def test_source_restart_survived(self):
        self.put("canary/default/shop/route", ROUTE)
        self.start_bridge()
        self.wait_weights(ROUTE_WEIGHTS)
        since = self.bridge.log_size()
        self.kill_source()
        self.bridge.wait_log(r"source: disconnected", since=since)
        self.restart_source()
        self.put("canary/default/shop/weights", "shop-v1=33, shop-v2=67")
        self.wait_weights({"shop-v1": 33, "shop-v2": 67}, timeout=20)
        self.bridge.wait_log(r"source: connected", since=since)
        self.assertTrue(self.bridge.alive())

    def test_status_applied_then_error(self):
        self.put("canary/default/shop/route", ROUTE)
        self.start_bridge(reconcile={"status": True})
        self.wait_weights(ROUTE_WEIGHTS)
        rev = self.put("canary/default/shop/weights", "shop-v1=70, shop-v2=30")
        self.wait_weights({"shop-v1": 70, "shop-v2": 30})
        st = self.wait_status(lambda s: s.get("revision") == rev, what="status at %d" % rev)
        self.assertEqual(st["state"], "applied")
        self.assertEqual(st["resourceVersion"], self.ir()["metadata"]["resourceVersion"])
        self.assertEqual(set(st), {"state", "message", "revision", "resourceVersion", "weights",
                                   "time"})
        self.assertEqual(st["weights"], {"shop-v1": 70, "shop-v2": 30})  # the weights in force
        self.assertRegex(st["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        rv = self.ir()["metadata"]["resourceVersion"]
        self.put("canary/default/shop/weights", "shop-v1=lots")
        st = self.wait_status(lambda s: s["state"] == "error", what="error status")
        self.assertIn("canary/default/shop/weights", st["message"])
        self.assertEqual(self.ir()["metadata"]["resourceVersion"], rv)
        # Fixed: applied again, at the fix's revision.
        fix = self.put("canary/default/shop/weights", "shop-v1=50, shop-v2=50")
        st = self.wait_status(lambda s: s["state"] == "applied" and s["revision"] == fix,
                              what="applied again")
        self.assertEqual(st["message"], "")
        self.assertEqual(st["resourceVersion"], self.ir()["metadata"]["resourceVersion"])

    def test_error_status_names_the_revision_of_the_bad_edit(self):
        self.put("canary/default/shop/route", ROUTE)
        self.start_bridge(reconcile={"status": True})
        self.wait_status(lambda s: s["state"] == "applied", what="applied")
        bad = self.put("canary/default/shop/weights", "shop-v1=lots")
        st = self.wait_status(lambda s: s["state"] == "error", what="error status")
        self.assertEqual(st["revision"], bad)

    def test_status_written_only_on_change_and_never_reacted_to(self):
        self.put("canary/default/shop/route", ROUTE)
        self.put("canary/default/shop/weights", "shop-v1=90, shop-v2=10")
        self.put("canary/default/cart/route", route_doc("cart"))
        # A short resync: every route is re-checked again and again meanwhile.
        self.start_bridge(reconcile={"status": True, "resync": "1s"})
        self.wait_status(lambda s: s["state"] == "applied", what="shop applied")
        self.wait_status(lambda s: s["state"] == "applied", name="cart", what="cart applied")
        key = "canary/default/shop/status"
        n0 = self.status_writes(key)
        self.assertEqual(n0, 1)
        mark = last_seq(self.kube)

        # Three resyncs: every route passes through the reconciler again, unchanged.
        since = self.bridge.log_size()
        for _ in range(3):
            since = self.bridge.wait_log(r"resync: re-listing", since=since).end()
        barrier = self.put("canary/default/cart/weights", "cart-v1=4, cart-v2=6")
        self.wait_status(lambda s: s["revision"] == barrier, name="cart", what="cart barrier")
        self.assertEqual(self.status_writes(key), n0)
        self.assertEqual(kube_writes(self.kube, since=mark, name="shop"), [])

        # A real edit: one object write and one status write, and the bridge's own
        # status write (which it sees come back from the source) causes nothing more.
        rev = self.put("canary/default/shop/weights", "shop-v1=20, shop-v2=80")
        self.wait_status(lambda s: s["revision"] == rev, what="status of the edit")
        self.wait_source_event(key, self.revision_of(key))
        barrier = self.put("canary/default/cart/weights", "cart-v1=5, cart-v2=5")
        self.wait_status(lambda s: s["revision"] == barrier, name="cart", what="cart barrier")
        self.assertEqual(len(kube_writes(self.kube, since=mark, name="shop")), 1)  # the edit's
        self.assertEqual(self.status_writes(key), n0 + 1)
        self.assertEqual(weights_of(self.ir()), {"shop-v1": 20, "shop-v2": 80})

    def test_identical_value_again_writes_no_status(self):
        self.put("canary/default/shop/route", ROUTE)
        self.put("canary/default/shop/weights", "shop-v1=90, shop-v2=10")
        self.put("canary/default/cart/route", route_doc("cart"))
        self.start_bridge(reconcile={"status": True, "resync": "1s"})
        st = self.wait_status(lambda s: s["state"] == "applied", what="shop applied")
        self.wait_status(lambda s: s["state"] == "applied", name="cart", what="cart applied")
        key = "canary/default/shop/status"
        n0 = self.status_writes(key)
        mark = last_seq(self.kube)
        # The same bytes again (a UI "Save" without a change), then three resyncs.
        self.put("canary/default/shop/weights", "shop-v1=90, shop-v2=10")
        since = self.bridge.log_size()
        for _ in range(3):
            since = self.bridge.wait_log(r"resync: re-listing", since=since).end()
        barrier = self.put("canary/default/cart/weights", "cart-v1=4, cart-v2=6")
        self.wait_status(lambda s: s["revision"] == barrier, name="cart", what="cart barrier")
        self.assertEqual(kube_writes(self.kube, since=mark, name="shop"), [])
        self.assertEqual(self.status_writes(key), n0,
                         "status now %r, was %r; the object says source-revision %s"
                         % (self.status(), st, self.ir()["metadata"]["annotations"]
                            ["canary-bridge.io/source-revision"]))


    def wait_full_sync(self, bridge, since=0):
        """The bridge's first pass over every route is done, and any status write it made
        has landed: a barrier edit's status comes back after them."""
        bridge.wait_log(r"first full sync done", since=since, timeout=20)
        self.barriers = getattr(self, "barriers", 0) + 1
        barrier = self.put("canary/default/cart/weights", "cart-v1=%d, cart-v2=1" % self.barriers)
        self.wait_status(lambda s: s.get("revision") == barrier, name="cart", what="cart barrier")

    def test_restart_and_reload_rewrite_no_status(self):
        """The status key already says what a new pass finds: a restart or a reload must not
        rewrite it just to move its time."""
        self.put("canary/default/shop/route", ROUTE)
        self.put("canary/default/shop/weights", "shop-v1=90, shop-v2=10")
        self.put("canary/default/cart/route", route_doc("cart"))
        b = self.start_bridge(reconcile={"status": True})
        st = self.wait_status(lambda s: s["state"] == "applied", what="shop applied")
        self.assertEqual(st["weights"], {"shop-v1": 90, "shop-v2": 10})
        self.wait_full_sync(b)
        key = "canary/default/shop/status"
        n0 = self.status_writes(key)
        since = b.log_size()
        b.signal(signal.SIGHUP)                                  # the same file: a reload
        b.wait_log(r"restarting the pipeline", since=since)
        self.wait_full_sync(b, since)
        self.assertEqual(self.status_writes(key), n0, "reload rewrote %r" % self.status())
        self.assertEqual(b.stop(), 0)
        cfg = merged(bridge_config(kube=self.kube, **self.source_config()),
                     {"reconcile": {"status": True}})
        again = Bridge(self.tmp.name, cfg, name="bridge-again")  # a restart
        self.addCleanup(again.stop)
        self.wait_full_sync(again)
        self.assertEqual(self.status_writes(key), n0, "restart rewrote %r" % self.status())
        self.assertEqual(self.status(), st)
        # A real change is still written, with the new weights in force.
        rev = self.put("canary/default/shop/weights", "shop-v1=80, shop-v2=20")
        st = self.wait_status(lambda s: s["revision"] == rev, what="status of the edit")
        self.assertEqual(st["weights"], {"shop-v1": 80, "shop-v2": 20})

    def test_mistyped_leaf_is_an_error_in_the_route_status(self):
        """canary/default/shop/weight (no s) is not input: the route's status says so, naming
        the key, with a did-you-mean."""
        self.put("canary/default/shop/route", ROUTE)
        self.put("canary/default/shop/weight", "shop-v1=10, shop-v2=90")
        self.put("canary/default/cart/wieghts", "cart-v1=10, cart-v2=90")   # nothing else
        self.start_bridge(reconcile={"status": True})
        st = self.wait_status(lambda s: s["state"] == "error", what="shop error")
        self.assertIn("key canary/default/shop/weight: unknown leaf 'weight' "
                      "(did you mean 'weights'? ", st["message"])
        self.assertEqual(st["objects"], "applied")          # the rest of the route still works
        self.assertEqual(weights_of(self.ir()), ROUTE_WEIGHTS)
        st = self.wait_status(lambda s: s["state"] == "error", name="cart", what="cart error")
        self.assertIn("key canary/default/cart/wieghts: unknown leaf 'wieghts' "
                      "(did you mean 'weights'? ", st["message"])
        self.assertIsNone(self.ir("cart"))
        # A mistyped leaf made later, then the typo fixed: error, then applied again.
        self.put("canary/default/shop/headres", "x-canary: always")
        st = self.wait_status(lambda s: "headres" in s["message"], what="two typos")
        self.assertIn("did you mean 'headers'?", st["message"])
        self.delete("canary/default/shop/weight")
        self.delete("canary/default/shop/headres")
        rev = self.put("canary/default/shop/weights", "shop-v1=10, shop-v2=90")
        st = self.wait_status(lambda s: s["state"] == "applied" and s["revision"] == rev,
                              what="applied once the typos are gone")
        self.assertEqual(st["message"], "")
        self.assertNotIn("objects", st)

class EtcdSource(SourceSuite, unittest.TestCase):
    source_name = "etcd"

    def start_source(self):
        self.etcd = Etcd(self.tmp.name)
        self.addCleanup(self.etcd.stop)

    def source_config(self):
        return {"source": {"type": "etcd", "endpoints": [self.etcd.url], "prefix": "canary/"}}

    def put(self, key, value):
        return self.etcd.put(key, value)

    def delete(self, key):
        self.etcd.delete(key)

    def delete_folder(self, prefix):
        end = bytearray(prefix.encode())
        end[-1] += 1
        self.etcd.call("/v3/kv/deleterange", {"key": self.etcd._b64(prefix),
                                              "range_end": self.etcd._b64(bytes(end))})

    def get(self, key):
        return self.etcd.get(key)

    def _kv(self, key):
        kvs = self.etcd.call("/v3/kv/range", {"key": self.etcd._b64(key)}).get("kvs") or []
        return kvs[0] if kvs else None

    def revision_of(self, key):
        return int(self._kv(key)["mod_revision"])

    def status_writes(self, key):
        kv = self._kv(key)   # version counts the writes since the key was created
        return int(kv.get("version", 0)) if kv else 0

    def kill_source(self):
        self.etcd.kill()

    def restart_source(self):
        self.etcd.restart()


class ConsulSource(SourceSuite, unittest.TestCase):
    source_name = "consul"

    def start_source(self):
        self.consul = Consul(self.tmp.name)
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
        return len([r for r in self.consul.requests()
                    if r["method"] == "PUT" and r["path"] == "/v1/kv/" + key])

    def kill_source(self):
        self.consul.kill()

    def restart_source(self):
        self.consul.start()      # same port, same data and indexes


# =============================================================================================
# Consul only

class ConsulCase(unittest.TestCase):
    acl_token = None
    read_tokens = ()
    tls = False
    max_conns_per_client = None     # the test server's default: Consul's 200

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="cb-consul-")
        self.addCleanup(self.tmp.cleanup)
        self.kube = KubeAPI(self.tmp.name)
        self.addCleanup(self.kube.stop)
        self.consul = Consul(self.tmp.name, acl_token=self.acl_token,
                             read_tokens=self.read_tokens, tls=self.tls,
                             max_conns_per_client=self.max_conns_per_client)
        self.addCleanup(self.consul.stop)

    def config(self, **sections):
        return bridge_config(consul_address=self.consul.url, kube=self.kube, **sections)

    def start_bridge(self, env=None, wait_ready=True, name="bridge", **sections):
        self.bridge = Bridge(self.tmp.name, self.config(**sections), env=env, name=name)
        self.addCleanup(self.bridge.stop)
        if wait_ready:
            self.bridge.wait_log(r"ready: ", timeout=20)
        return self.bridge

    def ir(self, name="shop", ns="default"):
        return self.kube.get(G, ns, "ingressroutes", name)

    def wait_weights(self, want, name="shop", ns="default", timeout=10):
        return wait_for(lambda: weights_of(self.ir(name, ns)) == want,
                        "IngressRoute %s/%s weights %r" % (ns, name, want),
                        lambda: weights_of(self.ir(name, ns)), timeout)

    def list_gets(self, since=0):
        return [r for r in self.consul.requests(since=since)
                if r["method"] == "GET" and r["path"].startswith("/v1/kv/canary/")]

    def last_seq(self):
        reqs = self.consul.requests()
        return reqs[-1]["seq"] if reqs else 0

    def blocked(self):
        """The bridge's blocking query is parked on the server."""
        return self.consul.wait_waiters(1, path_prefix="/v1/kv/canary/")


class ConsulUI(ConsulCase):
    def test_ui_style_writes_and_folders(self):
        # The UI creates folders as `name/` keys with no value, and its code editor
        # leaves a trailing newline; PUT is text/plain without cas.
        for folder in ("canary/", "canary/default/", "canary/default/shop/"):
            self.consul.put_folder(folder)
        self.consul.put("canary/default/shop/route", ROUTE + "\n")
        self.consul.put("canary/default/shop/weights", "shop-v1=90, shop-v2=10\n")
        self.start_bridge()
        self.wait_weights({"shop-v1": 90, "shop-v2": 10})
        self.consul.put("canary/default/shop/weights", '{"shop-v1": 60, "shop-v2": 40}\n\n')
        self.wait_weights({"shop-v1": 60, "shop-v2": 40})
        self.consul.put("canary/default/shop/weights", "shop-v1: 30\nshop-v2: 70\n")
        self.wait_weights({"shop-v1": 30, "shop-v2": 70})
        # A folder made while running, then a route in it.
        self.kube.create_namespace("staging")
        self.consul.put_folder("canary/staging/")
        self.consul.put_folder("canary/staging/cart/")
        self.consul.put("canary/staging/cart/route", route_doc("cart") + "\n")
        self.wait_weights({"cart-v1": 80, "cart-v2": 20}, name="cart", ns="staging")
        puts = [r for r in self.consul.requests() if r["method"] == "PUT"]
        self.assertTrue(puts and all(r["content_type"].startswith("text/plain") for r in puts))
        # Folder keys are structure: skipped without a word.
        log = self.bridge.log_text()
        self.assertNotIn("ignoring key", log)
        self.assertFalse([l for l in log.splitlines()
                          if re.search(r"\b(warn|error)\b", l) and "canary/" in l], log)


class ConsulLongPoll(ConsulCase):
    def test_idle_long_poll_is_a_few_requests_per_wait(self):
        wait = 2.0
        self.consul.put("canary/default/shop/route", ROUTE)
        self.start_bridge(source={"wait": "2s"})
        self.wait_weights(ROUTE_WEIGHTS)
        index = self.blocked()[0]["min_index"]
        self.assertEqual(index, self.consul.index("canary/"))
        mark, t0 = self.last_seq(), time.time()
        # Nothing changes: await three blocking queries that ran out their wait.
        wait_until(lambda: len([r for r in self.list_gets(mark) if r["status"] is not None]) >= 3,
                   timeout=6 * wait + 10, what="three idle blocking queries answered")
        elapsed = time.time() - t0
        gets = self.list_gets(mark)
        self.assertLessEqual(len(gets), 2 * elapsed / wait + 3,
                             "%d GETs in %.1fs with wait=%gs: %r" % (len(gets), elapsed, wait,
                                                                    gets))
        for r in gets:   # each one blocks on the current index, none is a plain re-read
            self.assertIn("index=%d" % index, r["query"], r)
            self.assertIn("wait=2s", r["query"], r)
        # And an edit still goes straight through the parked query.
        self.consul.put("canary/default/shop/weights", "shop-v1=1, shop-v2=2")
        self.wait_weights({"shop-v1": 1, "shop-v2": 2})

    def test_wakeups_without_change_do_not_spin(self):
        # "A return does not guarantee a change": answers with an unchanged index draw
        # from the idle token bucket instead of being re-sent in a tight loop.
        self.consul.put("canary/default/shop/route", ROUTE)
        self.start_bridge(source={"wait": "30s"})
        self.wait_weights(ROUTE_WEIGHTS)
        self.blocked()
        mark, t0 = self.last_seq(), time.time()
        woken = []      # wake whatever is parked, every poll, until five were woken
        wait_until(lambda: woken.append(self.consul.wake()) or sum(woken) >= 5, timeout=20,
                   what="five wake-ups")
        elapsed = time.time() - t0
        gets = self.list_gets(mark)
        # Burst 2, then one per second (refill = max(1s, wait/30)); generous margin.
        self.assertLessEqual(len(gets), 4 + 1.5 * elapsed,
                             "%d GETs in %.1fs" % (len(gets), elapsed))
        self.consul.put("canary/default/shop/weights", "shop-v1=3, shop-v2=4")
        self.wait_weights({"shop-v1": 3, "shop-v2": 4})


class ConsulFaults(ConsulCase):
    def test_index_reset_is_logged_and_later_edits_converge(self):
        self.consul.put("canary/default/shop/route", ROUTE)
        self.consul.put("canary/default/shop/weights", "shop-v1=90, shop-v2=10")
        self.start_bridge()
        self.wait_weights({"shop-v1": 90, "shop-v2": 10})
        self.blocked()
        before = self.consul.index("canary/")
        self.consul.reset_index(3)       # a snapshot restore: the raft index goes back
        self.assertLess(self.consul.index("canary/"), before)
        self.bridge.wait_log(r"consul: index of 'canary/' went backwards from %d" % before)
        self.consul.put("canary/default/shop/weights", "shop-v1=40, shop-v2=60")
        self.wait_weights({"shop-v1": 40, "shop-v2": 60})
        self.consul.put("canary/default/cart/route", route_doc("cart"))
        self.wait_weights({"cart-v1": 80, "cart-v2": 20}, name="cart")
        # It blocks on the new, lower index, not on the old one.
        now = self.consul.index("canary/")
        self.assertLess(now, before)
        wait_for(lambda: [w for w in self.consul.waiters() if w["min_index"] == now],
                 "a query blocked on index %d" % now, self.consul.waiters)
        self.assertTrue(self.bridge.alive())

    def test_5xx_for_a_while_then_recovers(self):
        self.consul.put("canary/default/shop/route", ROUTE)
        self.start_bridge(source={"wait": "30s"})   # error retries: 1/s, not 1/10s
        self.wait_weights(ROUTE_WEIGHTS)
        self.blocked()
        since = self.bridge.log_size()
        mark, t0 = self.last_seq(), time.time()
        self.consul.fault(method="GET", path_regex="^/v1/kv/canary/", status=500, count=-1)
        self.consul.wake()               # the parked query returns; the next ones get 500
        self.bridge.wait_log(r"source: disconnected: .*HTTP 500", since=since)
        wait_until(lambda: len([r for r in self.list_gets(mark) if r["status"] == 500]) >= 3,
                   timeout=15, what="three 500 answers")
        self.consul.put("canary/default/shop/weights", "shop-v1=11, shop-v2=89")  # during
        elapsed = time.time() - t0
        failed = [r for r in self.list_gets(mark) if r["status"] == 500]
        self.assertLessEqual(len(failed), 4 + 2 * elapsed, "a hot loop on errors")
        self.consul.clear_faults()
        self.wait_weights({"shop-v1": 11, "shop-v2": 89}, timeout=20)
        self.bridge.wait_log(r"consul: reconnected to", since=since)
        self.consul.put("canary/default/shop/weights", "shop-v1=12, shop-v2=88")  # after
        self.wait_weights({"shop-v1": 12, "shop-v2": 88})

    def test_connections_dropped_mid_wait_then_recovers(self):
        self.consul.put("canary/default/shop/route", ROUTE)
        self.start_bridge(source={"wait": "30s"})   # error retries: 1/s, not 1/10s
        self.wait_weights(ROUTE_WEIGHTS)
        self.blocked()
        since = self.bridge.log_size()
        mark = self.last_seq()
        self.consul.fault(action="drop_mid_wait", path_regex="^/v1/kv/canary/", delay_ms=200,
                          count=-1)
        self.consul.wake()               # re-parks under the fault rule
        wait_until(lambda: len([r for r in self.list_gets(mark) if r["dropped"]]) >= 3,
                   timeout=20, what="three dropped blocking queries")
        self.bridge.wait_log(r"source: disconnected", since=since)
        self.consul.put("canary/default/shop/weights", "shop-v1=21, shop-v2=79")
        self.wait_weights({"shop-v1": 21, "shop-v2": 79}, timeout=20)
        self.consul.clear_faults()
        self.consul.put("canary/default/shop/weights", "shop-v1=22, shop-v2=78")
        self.wait_weights({"shop-v1": 22, "shop-v2": 78}, timeout=20)
        # And it parks a blocking query again.
        self.blocked()
        self.assertTrue(self.bridge.alive())


class ConsulOddKeys(ConsulCase):
    def test_one_odd_key_costs_only_itself(self):
        # Flags up to 2^64-1 (consul lock sets 0x2ddccbc058a50c18); two keys that differ
        # only in bytes that are not UTF-8, which Consul's JSON shows with one name; values
        # starting with a UTF-8 byte order mark, as Windows editors write them.
        self.consul.put("canary/default/shop/route", "\ufeff" + ROUTE, flags=2 ** 64 - 1)
        self.consul.put("canary/default/shop/weights", "\ufeffshop-v1=70, shop-v2=30",
                        flags=0x2ddccbc058a50c18)
        self.consul.put("canary/default/cart/route", "\ufeff" + json.dumps(
            {"match": "Host(`cart.example.com`)", "services": [
                {"name": "cart-v1", "port": 80, "weight": 60},
                {"name": "cart-v2", "port": 80, "weight": 40}]}))
        for raw in (b"canary/default/sh\xffop/weights", b"canary/default/sh\xfeop/weights"):
            self.consul.put(raw, "shop-v1=1, shop-v2=99")
        self.start_bridge(source={"wait": "30s"})
        self.wait_weights({"shop-v1": 70, "shop-v2": 30})
        self.wait_weights({"cart-v1": 60, "cart-v2": 40}, name="cart")
        self.consul.put("canary/default/shop/weights", "\ufeffshop-v1: 55\nshop-v2: 45\n")
        self.wait_weights({"shop-v1": 55, "shop-v2": 45})
        self.consul.put("canary/default/shop/weights", "shop-v1=50, shop-v2=50")
        self.wait_weights({"shop-v1": 50, "shop-v2": 50})
        log = self.bridge.log_text()
        warned = re.findall(r".*\bwarn\b.*consul: ignoring key canary/default/sh\ufffdop/weights: "
                            r"2 keys have this name.*", log)
        self.assertEqual(len(warned), 1, warned)      # one warning, not one per answer
        self.assertNotRegex(log, r"bad answer|appears twice|malformed")
        self.assertTrue(self.bridge.alive())


class ConsulConnections(ConsulCase):
    # Consul answers 429 past limits.http_max_conns_per_client open connections from one
    # IP, idle keep-alive ones counted. The bridge keeps at most 8 to its Consul.
    max_conns_per_client = 10
    ROUTES = 120

    def test_many_routes_with_status_stay_under_the_connection_limit(self):
        names = ["r%03d" % i for i in range(self.ROUTES)]
        for n in names:
            self.consul.put("canary/default/%s/route" % n, route_doc(n))
        self.start_bridge(source={"wait": "30s"}, reconcile={"status": True})

        def statuses():
            return [e for e in self.consul.dump()["entries"] if e["Key"].endswith("/status")]
        wait_for(lambda: len(statuses()) == self.ROUTES, "a status key for every route",
                 lambda: (len(statuses()), self.consul.conns()), timeout=60)
        self.assertTrue(all(json.loads(e["text"])["state"] == "applied" for e in statuses()))
        # An edit to every route: another burst of writes, while the read is parked.
        self.blocked()
        for n in names:
            self.consul.put("canary/default/%s/weights" % n, "%s-v1=7, %s-v2=3" % (n, n))
        self.wait_weights({"%s-v1" % names[-1]: 7, "%s-v2" % names[-1]: 3}, name=names[-1],
                          timeout=30)
        def all_current():
            ents = {e["Key"]: e for e in self.consul.dump()["entries"]}
            return all(json.loads(e["text"])["revision"] ==
                       ents[k[:-len("status")] + "weights"]["ModifyIndex"]
                       for k, e in ents.items() if k.endswith("/status"))
        wait_for(all_current, "every status naming its weights revision", self.consul.conns,
                 timeout=60)
        st = self.consul.conns()
        self.assertEqual(st["refused"], 0, st)
        self.assertLessEqual(st["max_open"]["127.0.0.1"], 8, st)
        bad = re.findall(r".*(?:HTTP 429|Too Many Requests|cannot write).*",
                         self.bridge.log_text())
        self.assertEqual(bad, [])


class ConsulHTTPS(ConsulCase):
    # Consul's HTTPS listener offers h2 first; the bridge pins HTTP/1.1 for Consul, so the
    # blocking read and the writes each have a connection of their own (the test server,
    # like Python's, does not speak h2: a client that took it would get nothing).
    tls = True

    def test_https_speaks_http11_to_consul(self):
        self.consul.put("canary/default/shop/route", ROUTE)
        self.start_bridge(source={"wait": "30s", "tls": {"ca_file": self.consul.ca}},
                          reconcile={"status": True})
        self.wait_weights(ROUTE_WEIGHTS)
        self.consul.put("canary/default/shop/weights", "shop-v1=66, shop-v2=34")
        self.wait_weights({"shop-v1": 66, "shop-v2": 34})
        wait_until(lambda: (parse_status(self.consul.get("canary/default/shop/status")) or
                            {}).get("state") == "applied", what="status written over HTTPS")
        alpn = self.consul.conns()["alpn"]
        self.assertNotIn("h2", alpn)
        self.assertGreaterEqual(alpn.get("http/1.1", 0), 1, alpn)


MGMT_TOKEN = "6f1f0c8e-0b5a-4c55-9d43-secret-mgmt"
READ_TOKEN = "2b7e3d11-77aa-4c1f-8e0e-secret-read"


class ConsulACL(ConsulCase):
    acl_token = MGMT_TOKEN
    read_tokens = (READ_TOKEN,)

    def token_file(self, token):
        path = os.path.join(self.tmp.name, "consul-token")
        with open(path, "w") as f:
            f.write(token + "\n")
        return path

    def assert_no_secrets_logged(self):
        log = self.bridge.log_text()
        for secret in (MGMT_TOKEN, READ_TOKEN, "secret-mgmt", "secret-read"):
            self.assertNotIn(secret, log)

    def test_token_file_works_and_is_never_logged(self):
        self.consul.put("canary/default/shop/route", ROUTE)
        self.start_bridge(source={"token_file": self.token_file(MGMT_TOKEN)},
                          reconcile={"status": True})
        self.wait_weights(ROUTE_WEIGHTS)
        self.consul.put("canary/default/shop/weights", "shop-v1=15, shop-v2=85")
        self.wait_weights({"shop-v1": 15, "shop-v2": 85})
        wait_until(lambda: parse_status(self.consul.get("canary/default/shop/status")),
                   what="status written with the token")
        # The bridge's requests: its recursive reads and its status writes.
        bridge_reqs = [r for r in self.consul.requests() if "recurse" in r["query"] or
                       (r["method"] == "PUT" and r["path"].endswith("/status"))]
        self.assertTrue(bridge_reqs)
        self.assertEqual({r["token_source"] for r in bridge_reqs}, {"X-Consul-Token"})
        self.assertEqual({r["status"] for r in bridge_reqs if r["status"] is not None}, {200})
        self.assert_no_secrets_logged()

    def test_token_from_the_environment(self):
        self.consul.put("canary/default/shop/route", ROUTE)
        self.start_bridge(env=dict(os.environ, CONSUL_HTTP_TOKEN=MGMT_TOKEN))
        self.wait_weights(ROUTE_WEIGHTS)
        self.assert_no_secrets_logged()

    def test_wrong_inline_token_is_denied_and_never_logged(self):
        wrong = "0000dead-beef-4bad-8bad-secret-wrong"
        self.consul.put("canary/default/shop/route", ROUTE)
        self.start_bridge(wait_ready=False, source={"token": wrong})
        self.bridge.wait_log(r"permission denied reading canary/")
        wait_until(lambda: [r for r in self.consul.requests() if r["status"] == 403],
                   what="a 403 for the unknown token")
        self.assertNotIn(wrong, self.bridge.log_text())
        self.assertNotIn("secret-wrong", self.bridge.log_text())
        self.assertIsNone(self.ir())

    def metric(self, name):
        text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_port,
                                      timeout=5).read().decode()
        m = re.search(r"^%s (\S+)$" % re.escape(name), text, re.M)
        return float(m.group(1)) if m else None

    def acl_warnings(self):
        return [l for l in self.bridge.log_text().splitlines()
                if re.search(r"\bwarn\b.*consul: .*ACL: permission denied reading canary/", l)]

    def probes(self, status=None):
        """The bridge's single-key reads of the prefix itself (its read permission check)."""
        return [r for r in self.consul.requests()
                if r["method"] == "GET" and r["path"] == "/v1/kv/canary/" and
                "recurse" not in r["query"] and (status is None or r["status"] == status)]

    def kube_deletes(self):
        return [r for r in self.kube.requests() if r["method"] == "DELETE"]

    def test_no_token_is_an_acl_error_not_an_empty_prefix(self):
        # Consul answers an anonymous recursive read under default-deny with a plain 404 +
        # X-Consul-Index (maskResultsFilteredByACLs drops the filtered header for an empty
        # token): only the single-key read of the prefix (403) tells denied from empty.
        self.consul.put("canary/default/shop/route", ROUTE)
        self.metrics_port = free_port()
        self.start_bridge(wait_ready=False, source={"wait": "30s"}, reconcile={"policy": "sync"},
                          metrics_port=self.metrics_port)
        self.bridge.wait_log(r"ACL: permission denied reading canary/ with the anonymous token")
        wait_until(lambda: len([r for r in self.consul.requests()
                                if "recurse" in r["query"] and r["status"] == 404]) >= 3,
                   what="three anonymous recursive reads")
        wait_until(lambda: len(self.probes(403)) >= 3, what="three refused permission checks")
        for r in self.consul.requests():    # as real Consul: nothing says "filtered"
            self.assertNotIn("filtered", json.dumps(r).lower())
        self.assertEqual(len(self.acl_warnings()), 1, self.acl_warnings())  # once per outage
        self.assertRegex(self.acl_warnings()[0], r"default ACL policy deny")
        self.assertEqual(self.metric("canary_bridge_source_acl_denied"), 1)
        self.assertEqual(self.metric("canary_bridge_source_connected"), 0)
        self.assertIsNone(self.ir())
        self.assertNotRegex(self.bridge.log_text(), r"ready: |initial list")
        self.assertTrue(self.bridge.alive())

    def test_sync_restart_with_an_empty_token_file_deletes_nothing(self):
        for name in ("shop", "cart"):
            self.consul.put("canary/default/%s/route" % name, route_doc(name))
        token_file = self.token_file(MGMT_TOKEN)
        self.start_bridge(source={"token_file": token_file, "wait": "30s"},
                          reconcile={"policy": "sync"})
        for name in ("shop", "cart"):
            self.wait_weights({"%s-v1" % name: 80, "%s-v2" % name: 20}, name=name)
        self.bridge.stop()
        with open(token_file, "w") as f:
            f.write("\n")                  # emptied (a secret mount not populated yet)
        self.start_bridge(wait_ready=False, name="bridge2", reconcile={"policy": "sync"},
                          source={"token_file": token_file, "wait": "30s"})
        self.bridge.wait_log(r"ACL: permission denied reading canary/ with the anonymous token")
        wait_until(lambda: len(self.probes(403)) >= 3, what="three refused permission checks")
        self.assertEqual(self.kube_deletes(), [])
        for name in ("shop", "cart"):
            self.assertEqual(weights_of(self.ir(name)), {"%s-v1" % name: 80, "%s-v2" % name: 20})
        self.assertNotRegex(self.bridge.log_text(), r"ready: |initial list")
        # The token comes back (rotated in): the bridge reads again and carries on.
        self.token_file(MGMT_TOKEN)
        self.bridge.wait_log(r"ready: ", timeout=30)
        self.consul.put("canary/default/shop/weights", "shop-v1=5, shop-v2=95")
        self.wait_weights({"shop-v1": 5, "shop-v2": 95})
        self.assertEqual(self.kube_deletes(), [])

    def test_anonymous_rights_revoked_while_running_deletes_nothing(self):
        # The anonymous token may read the prefix, so the bridge runs without a token; then
        # its policy loses the rule: the parked query answers a plain 404, as if every key
        # had been deleted.
        for name in ("shop", "cart"):
            self.consul.put("canary/default/%s/route" % name, route_doc(name))
        self.consul.set_acl(MGMT_TOKEN, [READ_TOKEN], anonymous_read=["canary/"])
        self.metrics_port = free_port()
        self.start_bridge(source={"wait": "30s"}, reconcile={"policy": "sync"},
                          metrics_port=self.metrics_port)
        for name in ("shop", "cart"):
            self.wait_weights({"%s-v1" % name: 80, "%s-v2" % name: 20}, name=name)
        self.blocked()
        self.assertEqual(self.metric("canary_bridge_source_acl_denied"), 0)
        self.consul.set_acl(MGMT_TOKEN, [READ_TOKEN])
        # A parked query keeps the rights it was resolved with (as in Consul): wake each
        # one until a query under the new policy answered.
        wait_until(lambda: self.consul.wake() is None or self.acl_warnings(), timeout=20,
                   what="the ACL warning")
        self.assertRegex(self.acl_warnings()[0], r"with the anonymous token")
        wait_until(lambda: len(self.probes(403)) >= 2, what="refused permission checks")
        self.assertEqual(self.metric("canary_bridge_source_acl_denied"), 1)
        self.assertEqual(self.kube_deletes(), [])
        for name in ("shop", "cart"):
            self.assertEqual(weights_of(self.ir(name)), {"%s-v1" % name: 80, "%s-v2" % name: 20})
        # Rights back: it converges again, and a real deletion still deletes.
        self.consul.set_acl(MGMT_TOKEN, [READ_TOKEN], anonymous_read=["canary/"])
        self.bridge.wait_log(r"consul: reconnected to", timeout=30)
        self.assertEqual(self.metric("canary_bridge_source_acl_denied"), 0)
        self.consul.delete("canary/default/cart/route")
        wait_for(lambda: self.ir("cart") is None, "cart deleted", lambda: self.ir("cart"))
        self.assertIsNotNone(self.ir("shop"))

    def test_partial_rights_are_an_acl_error(self):
        # A token that may read part of the prefix gets a shorter list: a real token is told
        # so in a header; the anonymous token is not, and only the permission check shows it.
        self.consul.put("canary/default/shop/route", ROUTE)
        self.consul.put("canary/other/cart/route", route_doc("cart"))
        self.consul.set_acl(MGMT_TOKEN, [READ_TOKEN], {"part-token": ["canary/default/"]},
                            anonymous_read=["canary/default/"])
        self.start_bridge(wait_ready=False, source={"token": "part-token"})
        self.bridge.wait_log(r"ACL: permission denied reading canary/ .*Consul left keys out")
        self.bridge.stop()
        self.start_bridge(wait_ready=False, name="bridge2")
        self.bridge.wait_log(r"ACL: permission denied reading canary/ with the anonymous token")
        self.assertIsNone(self.ir())
        self.assertNotRegex(self.bridge.log_text(), r"ready: |initial list")

    def test_read_only_token_status_write_fails_logged_once_and_syncing_goes_on(self):
        for name in ("shop", "cart", "blog"):
            self.consul.put("canary/default/%s/route" % name, route_doc(name))
        self.start_bridge(source={"token_file": self.token_file(READ_TOKEN)},
                          reconcile={"status": True})
        for name in ("shop", "cart", "blog"):
            self.wait_weights({"%s-v1" % name: 80, "%s-v2" % name: 20}, name=name)

        def denied():
            return [r for r in self.consul.requests()
                    if r["method"] == "PUT" and r["path"].endswith("/status") and
                    r["status"] == 403]
        wait_until(lambda: len({r["path"] for r in denied()}) >= 3,
                   what="a refused status write for each route")
        n = len(denied())
        self.consul.put("canary/default/shop/weights", "shop-v1=1, shop-v2=9")
        self.wait_weights({"shop-v1": 1, "shop-v2": 9})
        wait_until(lambda: len(denied()) > n, what="the edit's status write refused too")
        self.consul.put("canary/default/cart/weights", "cart-v1=2, cart-v2=8")
        self.wait_weights({"cart-v1": 2, "cart-v2": 8}, name="cart")
        log = self.bridge.log_text()
        self.assertEqual(len(re.findall(r"status feedback: cannot write", log)), 1, log)
        self.assertRegex(log, r"status feedback: cannot write .*permission denied")
        self.assertIsNone(self.consul.get("canary/default/shop/status"))
        self.assertTrue(self.bridge.alive())
        self.assert_no_secrets_logged()


# =============================================================================================
# etcd authentication

class TcpProxy:
    """A loopback TCP relay to target_port.  cut() closes every relayed connection at
    once (both sides), as a network blip or a load balancer would, while the server
    itself keeps running (and keeps its auth tokens)."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.conns = set()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def _accept(self):
        while True:
            try:
                down, _ = self.sock.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                up.settimeout(None)
            except OSError:
                down.close()
                continue
            with self.lock:
                self.conns.update((down, up))
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for x in (src, dst):
            self._close(x)

    def _close(self, x):
        with self.lock:
            self.conns.discard(x)
        try:
            x.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        x.close()

    def cut(self):
        with self.lock:
            conns = list(self.conns)
        for x in conns:
            self._close(x)
        return len(conns)

    def close(self):
        self.sock.close()
        self.cut()


ETCD_ROOT_PW = "root-pw-4f1c"
BRIDGE_PW = "bridge-pw-93a7e1-secret"
TOKEN_TTL = 2   # seconds


class EtcdAuth(unittest.TestCase):
    """A real etcd with auth on, the bridge as user `bridge` with a role limited to
    the prefix, simple tokens that expire after TOKEN_TTL idle seconds."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="cb-auth-")
        self.addCleanup(self.tmp.cleanup)
        # zap at debug: etcd logs each authentication and each expired token, with the
        # user name; that is what the tests await instead of sleeping.
        self.etcd = Etcd(self.tmp.name, extra_args=[
            "--auth-token-ttl", str(TOKEN_TTL), "--logger", "zap", "--log-outputs", "stderr",
            "--log-level", "debug"])
        self.addCleanup(self.etcd.stop)
        ctl = self.etcd.etcdctl
        ctl("user", "add", "root", "--new-user-password", ETCD_ROOT_PW, "--interactive=false")
        ctl("user", "grant-role", "root", "root")
        ctl("user", "add", "bridge", "--new-user-password", BRIDGE_PW, "--interactive=false")
        ctl("role", "add", "canary-rw")
        ctl("role", "grant-permission", "canary-rw", "readwrite", "canary/", "--prefix=true")
        ctl("user", "grant-role", "bridge", "canary-rw")
        ctl("auth", "enable")
        self.etcd.auth = ("root", ETCD_ROOT_PW)
        self.kube = KubeAPI(self.tmp.name)
        self.addCleanup(self.kube.stop)
        self.pw_file = os.path.join(self.tmp.name, "etcd-password")
        with open(self.pw_file, "w") as f:
            f.write(BRIDGE_PW + "\n")

    def start_bridge(self, via=None, **sections):
        cfg = bridge_config(etcd=self.etcd, kube=self.kube,
                            source={"username": "bridge", "password_file": self.pw_file},
                            **sections)
        if via is not None:
            cfg["source"]["endpoints"] = [via.url]
        self.bridge = Bridge(self.tmp.name, cfg)
        self.addCleanup(self.bridge.stop)
        self.bridge.wait_log(r"ready: ", timeout=20)
        return self.bridge

    def ir(self):
        return self.kube.get(G, "default", "ingressroutes", "shop")

    def wait_weights(self, want, timeout=10):
        return wait_for(lambda: weights_of(self.ir()) == want, "weights %r" % (want,),
                        lambda: weights_of(self.ir()), timeout)

    def etcd_log_count(self, msg):
        return len(re.findall(r'"msg":"%s","user-name":"bridge"' % msg, self.etcd.log_text()))

    def wait_bridge_token_expired(self, n=1):
        """etcd dropped the bridge's simple token for lack of use (TTL)."""
        wait_until(lambda: self.etcd_log_count("deleted a simple token") >= n,
                   timeout=TOKEN_TTL + 10, what="etcd expiring the bridge's token")

    def assert_no_secrets_logged(self):
        log = self.bridge.log_text()
        self.assertNotIn(BRIDGE_PW, log)
        tokens = re.findall(r'"msg":"authenticated a user","user-name":"bridge","token":"([^"]+)"',
                            self.etcd.log_text())
        self.assertTrue(tokens)
        for t in tokens:
            self.assertNotIn(t, log)

    def test_token_expires_mid_watch_and_an_edit_still_lands(self):
        # The bridge reaches etcd through a relay, so its connections can be cut while
        # etcd keeps running.  (A restarted etcd replays Authenticate from its WAL and
        # so revives old simple tokens: a restart would not test expiry.)
        proxy = TcpProxy(self.etcd.client_port)
        self.addCleanup(proxy.close)
        self.etcd.put("canary/default/shop/route", ROUTE)
        self.start_bridge(via=proxy)
        self.wait_weights(ROUTE_WEIGHTS)
        self.assertEqual(self.etcd_log_count("authenticated a user"), 1)
        self.wait_bridge_token_expired()
        # The open watch still delivers.
        self.etcd.put("canary/default/shop/weights", "shop-v1=45, shop-v2=55")
        self.wait_weights({"shop-v1": 45, "shop-v2": 55})
        # The connection breaks: the watch is re-created with the dead token, etcd
        # cancels it for "invalid auth token", the bridge authenticates again.
        since = self.bridge.log_size()
        self.assertGreaterEqual(proxy.cut(), 1)
        self.bridge.wait_log(r"source: disconnected", since=since)
        self.bridge.wait_log(r"etcd: auth token rejected \(.*invalid auth token.*\); "
                             r"re-authenticating", since=since, timeout=20)
        self.etcd.put("canary/default/shop/weights", "shop-v1=46, shop-v2=54")
        self.wait_weights({"shop-v1": 46, "shop-v2": 54}, timeout=20)
        self.assertEqual(self.etcd_log_count("authenticated a user"), 2)
        self.assert_no_secrets_logged()

    def test_relist_after_expiry_reauthenticates(self):
        # A resync period longer than the TTL: every re-list finds the token expired,
        # gets 401 "invalid auth token", authenticates again and carries on.
        self.etcd.put("canary/default/shop/route", ROUTE)
        self.start_bridge(reconcile={"resync": "%ds" % (2 * TOKEN_TTL)})
        self.wait_weights(ROUTE_WEIGHTS)
        self.bridge.wait_log(r"etcd: auth token rejected \(.*invalid auth token.*\); "
                             r"re-authenticating", timeout=4 * TOKEN_TTL + 10)
        self.etcd.put("canary/default/shop/weights", "shop-v1=47, shop-v2=53")
        self.wait_weights({"shop-v1": 47, "shop-v2": 53})
        self.assertGreaterEqual(self.etcd_log_count("authenticated a user"), 2)
        self.assertNotIn("source: disconnected", self.bridge.log_text())
        self.assert_no_secrets_logged()

    def test_status_write_after_token_expiry(self):
        self.etcd.put("canary/default/shop/route", ROUTE)
        self.start_bridge(reconcile={"status": True})
        self.wait_weights(ROUTE_WEIGHTS)
        wait_until(lambda: parse_status(self.etcd.get("canary/default/shop/status")),
                   what="first status")
        n = self.etcd_log_count("deleted a simple token")
        self.wait_bridge_token_expired(n + 1)
        since = self.bridge.log_size()
        rev = self.etcd.put("canary/default/shop/weights", "shop-v1=48, shop-v2=52")
        self.wait_weights({"shop-v1": 48, "shop-v2": 52})

        def outcome():
            st = parse_status(self.etcd.get("canary/default/shop/status")) or {}
            if st.get("revision") == rev:
                return "written"
            if "status feedback: cannot write" in self.bridge.log_text()[since:]:
                return "refused"
            return None
        self.assertEqual(wait_until(outcome, what="the status write of the edit"), "written",
                         self.bridge.log_tail(5))
        self.assert_no_secrets_logged()


if __name__ == "__main__":
    unittest.main()
