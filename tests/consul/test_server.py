"""Self-tests of the Consul KV test server (tests/consul/server.py) and its harness
(tests/lib/consul.py).

    /usr/bin/python3 -m unittest discover -s tests/consul -t . -v      (from the repo root)
    /usr/bin/python3 tests/consul/test_server.py -v                    (same tests)
"""

import base64
import gzip
import http.client
import itertools
import json
import os
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from consul import Consul, ConsulError, wait_until  # noqa: E402

consul = None
_tmp = None
_prefixes = itertools.count(1)

META = ("X-Consul-Index", "X-Consul-KnownLeader", "X-Consul-LastContact",
        "X-Consul-Effective-Consistency")
ENTRY_FIELDS = ["LockIndex", "Key", "Flags", "Value", "CreateIndex", "ModifyIndex"]


def setUpModule():
    global consul, _tmp
    _tmp = tempfile.TemporaryDirectory(prefix="consul-test-")
    consul = Consul(_tmp.name)


def tearDownModule():
    code = consul.stop()
    _tmp.cleanup()
    assert code == 0, "server did not exit 0 on SIGTERM: %r" % code


def uprefix():
    return "t%d/" % next(_prefixes)


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


class Async:
    """Run one HTTP request in a thread: .result() -> (status, headers, body, seconds)."""

    def __init__(self, server, method, path, timeout=30, headers=None):
        self.out, self.exc = None, None
        self.t0 = time.monotonic()

        def run():
            try:
                s, h, b = server.request(method, path, timeout=timeout, headers=headers)
                self.out = (s, h, b, time.monotonic() - self.t0)
            except Exception as e:      # noqa: BLE001 - reported to the test
                self.exc = e
                self.elapsed = time.monotonic() - self.t0
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def done(self):
        return not self.thread.is_alive()

    def result(self, timeout=30):
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise AssertionError("request still running after %ss" % timeout)
        if self.exc:
            raise self.exc
        return self.out


class Base(unittest.TestCase):
    srv = None      # None = the shared module server

    @property
    def c(self):
        return self.srv or consul

    def setUp(self):
        self.p = uprefix()

    def tearDown(self):
        self.c.clear_faults()

    def get(self, path, **kw):
        return self.c.request("GET", path, **kw)

    def assertMeta(self, headers, consistency="leader"):
        for h in META:
            self.assertIn(h, headers, "header %s missing" % h)
        self.assertGreaterEqual(int(headers["X-Consul-Index"]), 1)
        self.assertEqual(headers["X-Consul-KnownLeader"], "true")
        self.assertEqual(headers["X-Consul-LastContact"], "0")
        self.assertEqual(headers["X-Consul-Effective-Consistency"], consistency)


# --------------------------------------------------------------------------------------------

class TestReads(Base):
    def test_recurse_entries_base64_and_null(self):
        p = self.p
        self.assertTrue(self.c.put(p + "b", "bravo\n"))
        self.assertTrue(self.c.put(p + "a", '{"shop-v1": 90}'))
        self.assertTrue(self.c.put(p + "empty", ""))
        self.assertTrue(self.c.put(p[:-1] + "x", "outside"))     # same chars, not the prefix
        s, h, b = self.get(Consul.kv_path(p, recurse=True))
        self.assertEqual(s, 200)
        self.assertEqual(h["Content-Type"], "application/json")
        self.assertMeta(h)
        ents = json.loads(b)
        self.assertEqual([e["Key"] for e in ents], [p + "a", p + "b", p + "empty"])
        for e in ents:
            self.assertEqual(list(e), ENTRY_FIELDS)      # no Session when unset, Go order
        self.assertEqual(ents[0]["Value"], b64('{"shop-v1": 90}'))
        self.assertEqual(ents[1]["Value"], b64("bravo\n"))
        self.assertIsNone(ents[2]["Value"])
        self.assertIn(b'"Value":null', b)
        self.assertEqual(int(h["X-Consul-Index"]), max(e["ModifyIndex"] for e in ents))
        for e in ents:
            self.assertEqual(e["CreateIndex"], e["ModifyIndex"])
            self.assertEqual((e["LockIndex"], e["Flags"]), (0, 0))

    def test_recurse_param_with_value_and_without(self):
        self.c.put(self.p + "k", "v")
        for q in ("recurse", "recurse=", "recurse=true", "recurse=false"):
            s, _, b = self.get("/v1/kv/%s?%s" % (self.p, q))
            self.assertEqual(s, 200, q)     # only the presence of the parameter counts
            self.assertEqual(len(json.loads(b)), 1)

    def test_404_on_empty_prefix_carries_index(self):
        self.c.put("elsewhere/" + self.p, "x")
        s, h, b = self.get(Consul.kv_path(self.p, recurse=True))
        self.assertEqual(s, 404)
        self.assertEqual(b, b"")
        self.assertMeta(h)
        # nothing under the prefix ever: the whole KV table index
        self.assertEqual(int(h["X-Consul-Index"]), self.c.dump()["kvs_index"])
        s, h, b = self.get(Consul.kv_path(self.p + "missing"))
        self.assertEqual((s, b), (404, b""))
        self.assertMeta(h)

    def test_single_key_index_is_modify_index(self):
        self.c.put(self.p + "k", "1")
        self.c.put(self.p + "other", "2")
        e = self.c.entry(self.p + "k")
        s, h, _ = self.get(Consul.kv_path(self.p + "k"))
        self.assertEqual(int(h["X-Consul-Index"]), e["ModifyIndex"])
        self.assertLess(e["ModifyIndex"], self.c.index())

    def test_raw(self):
        self.c.put(self.p + "w", b"shop-v1=90\x00\xff\n", content_type="application/octet-stream")
        s, h, b = self.get(Consul.kv_path(self.p + "w", raw=True))
        self.assertEqual(s, 200)
        self.assertEqual(b, b"shop-v1=90\x00\xff\n")
        self.assertEqual(h["Content-Type"], "text/plain")
        self.assertEqual(h["X-Content-Type-Options"], "nosniff")
        self.assertMeta(h)
        self.c.put(self.p + "e", "")
        s, h, b = self.get(Consul.kv_path(self.p + "e", raw=True))
        self.assertEqual((s, b, h["Content-Length"]), (200, b"", "0"))
        # raw is ignored with recurse
        s, h, b = self.get("/v1/kv/%s?recurse&raw" % self.p)
        self.assertEqual(h["Content-Type"], "application/json")
        self.assertEqual(len(json.loads(b)), 2)
        s, h, b = self.get(Consul.kv_path(self.p + "nope", raw=True))
        self.assertEqual((s, b), (404, b""))

    def test_keys_and_separator(self):
        for k in ("a", "d1/x", "d1/y", "d2/", "d2/z/deep"):
            self.c.put(self.p + k, "v")
        s, h, b = self.get(Consul.kv_path(self.p, keys=True))
        self.assertEqual(s, 200)
        self.assertMeta(h)
        self.assertEqual(json.loads(b), [self.p + k for k in ("a", "d1/x", "d1/y", "d2/",
                                                                "d2/z/deep")])
        s, h, b = self.get(Consul.kv_path(self.p, keys=True, separator="/"))
        self.assertEqual(json.loads(b), [self.p + "a", self.p + "d1/", self.p + "d2/"])
        s, h, b = self.get(Consul.kv_path(self.p + "zzz", keys=True))
        self.assertEqual((s, b), (404, b""))
        self.assertMeta(h)

    def test_missing_key_name(self):
        s, _, b = self.get("/v1/kv/")
        self.assertEqual((s, b), (400, b"Missing key name"))

    def test_consistency_modes_and_flags(self):
        self.c.put(self.p + "k", "v")
        for q, mode in (("stale", "stale"), ("consistent", "consistent"), ("", "leader"),
                        ("cached", "leader")):
            s, h, _ = self.get("/v1/kv/%sk?%s" % (self.p, q))
            self.assertEqual(s, 200, q)
            self.assertMeta(h, mode)
        s, _, b = self.get("/v1/kv/%sk?stale&consistent" % self.p)
        self.assertEqual((s, b), (400, b"Cannot specify ?stale with ?consistent, conflicting "
                                       b"semantics."))

    def test_datacenter(self):
        self.c.put(self.p + "k", "v")
        s, _, _ = self.get("/v1/kv/%sk?dc=dc1" % self.p)
        self.assertEqual(s, 200)
        s, h, b = self.get("/v1/kv/%sk?dc=dc2" % self.p)
        self.assertEqual((s, b), (500, b"No path to datacenter"))
        self.assertNotIn("X-Consul-Index", h)
        s, _, b = self.c.request("PUT", "/v1/kv/%sk?dc=east" % self.p, "x")
        self.assertEqual((s, b), (500, b"No path to datacenter"))
        self.assertEqual(self.c.get(self.p + "k"), "v")

    def test_gzip_and_chunked_like_go(self):
        for i in range(40):
            self.c.put("%sk%02d" % (self.p, i), "value-%d" % i)
        s, h, b = self.get(Consul.kv_path(self.p, recurse=True))
        self.assertEqual(h["Transfer-Encoding"], "chunked")   # > 2 KiB, no Content-Length
        self.assertNotIn("Content-Length", h)
        self.assertEqual(h["Vary"], "Accept-Encoding")
        plain = json.loads(b)
        self.assertEqual(len(plain), 40)
        s, h, b = self.get(Consul.kv_path(self.p, recurse=True),
                           headers={"Accept-Encoding": "gzip"})
        self.assertEqual(h["Content-Encoding"], "gzip")
        self.assertEqual(json.loads(gzip.decompress(b)), plain)
        s, h, b = self.get(Consul.kv_path(self.p + "k01"))
        self.assertEqual(h["Content-Length"], str(len(b)))    # small: Content-Length

    def test_bad_wait_and_index(self):
        s, _, b = self.get("/v1/kv/%s?recurse&index=1&wait=10" % self.p)
        self.assertEqual((s, b), (400, b"Invalid wait time"))
        s, _, b = self.get("/v1/kv/%s?recurse&index=x&wait=1s" % self.p)
        self.assertEqual((s, b), (400, b"Invalid index"))


class TestWrites(Base):
    def test_put_returns_true_and_ui_text(self):
        s, h, b = self.c.request("PUT", Consul.kv_path(self.p + "weights"),
                                 "shop-v1: 90\nshop-v2: 10\n",
                                 content_type="text/plain; charset=utf-8")
        self.assertEqual((s, b), (200, b"true"))
        self.assertEqual(h["Content-Type"], "application/json")
        self.assertEqual(self.c.get(self.p + "weights"), "shop-v1: 90\nshop-v2: 10\n")
        rec = [r for r in self.c.requests() if r["method"] == "PUT"][-1]
        self.assertEqual(rec["content_type"], "text/plain; charset=utf-8")
        self.assertEqual(rec["body"], "shop-v1: 90\nshop-v2: 10\n")

    def test_ui_folder_keys(self):
        self.assertTrue(self.c.put_folder(self.p + "default"))
        self.c.put(self.p + "default/shop/weights", "shop-v1=100")
        idx, ents = self.c.list(self.p)
        self.assertEqual([(e["Key"], e["Value"]) for e in ents],
                         [(self.p + "default/", None),
                          (self.p + "default/shop/weights", b64("shop-v1=100"))])

    def test_cas(self):
        k = self.p + "c"
        self.assertTrue(self.c.put(k, "one", cas=0))
        self.assertFalse(self.c.put(k, "two", cas=0))          # create-only
        mi = self.c.entry(k)["ModifyIndex"]
        self.assertFalse(self.c.put(k, "two", cas=mi + 100))
        self.assertFalse(self.c.put(self.p + "absent", "x", cas=mi))
        self.assertIsNone(self.c.entry(self.p + "absent"))
        self.assertEqual(self.c.get(k), "one")
        self.assertTrue(self.c.put(k, "two", cas=mi))
        e = self.c.entry(k)
        self.assertGreater(e["ModifyIndex"], mi)
        self.assertEqual(e["CreateIndex"], mi)
        self.assertFalse(self.c.delete(k, cas=mi))               # stale index
        self.assertFalse(self.c.delete(k, cas=0))                # 0 never deletes
        self.assertEqual(self.c.get(k), "two")
        self.assertTrue(self.c.delete(k, cas=e["ModifyIndex"]))
        self.assertIsNone(self.c.get(k))
        s, _, b = self.c.request("DELETE", "/v1/kv/%s?recurse&cas=3" % self.p)
        self.assertEqual(s, 400)
        self.assertTrue(b.startswith(b"Conflicting flags: cas=3&recurse="), b)

    def test_identical_put_keeps_modify_index(self):
        k = self.p + "same"
        self.c.put(k, "v")
        mi = self.c.entry(k)["ModifyIndex"]
        self.c.put(k, "v")
        self.assertEqual(self.c.entry(k)["ModifyIndex"], mi)
        self.c.put(k, "v", flags=7)
        e = self.c.entry(k)
        self.assertGreater(e["ModifyIndex"], mi)
        self.assertEqual(e["Flags"], 7)

    def test_raft_index_gaps(self):
        self.c.put(self.p + "a", "1")
        first = self.c.entry(self.p + "a")["ModifyIndex"]
        self.c.bump_index(5)
        self.c.put(self.p + "b", "2")
        self.assertEqual(self.c.entry(self.p + "b")["ModifyIndex"], first + 6)

    def test_value_size_limit(self):
        k = self.p + "big"
        self.assertTrue(self.c.put(k, b"x" * (512 * 1024)))
        with self.assertRaises(ConsulError) as cm:
            self.c.put(self.p + "too-big", b"x" * (512 * 1024 + 1))
        self.assertEqual(cm.exception.status, 413)
        self.assertIn("too large", cm.exception.body)
        self.assertIsNone(self.c.entry(self.p + "too-big"))
        self.assertTrue(self.c.delete(k))       # keep state.json small for the others

    def test_key_validation(self):
        for path, why in (("/v1/kv//lead", "key must not begin with a '/'"),
                          ("/v1/kv/%sa/../b" % self.p, "traversal"),
                          ("/v1/kv/%sa/%%2e%%2e%%2fb" % self.p, "traversal"),
                          ("/v1/kv/%s.." % self.p, "traversal")):
            s, _, b = self.c.request("PUT", path, "x")
            self.assertEqual(s, 400, path)
            self.assertIn(why, b.decode(), path)
        s, _, b = self.c.request("PUT", "/v1/kv/", "x")
        self.assertEqual((s, b), (400, b"Missing key name"))
        self.assertEqual(self.c.list(self.p)[1], [])

    def test_delete_and_recursive_delete(self):
        for k in ("a", "b/c", "b/d"):
            self.c.put(self.p + k, "v")
        self.assertTrue(self.c.delete(self.p + "a"))
        self.assertTrue(self.c.delete(self.p + "a"))            # absent: still true
        self.assertTrue(self.c.delete(self.p + "b/", recurse=True))
        self.assertEqual(self.c.list(self.p)[1], [])
        s, _, b = self.c.request("DELETE", "/v1/kv/")
        self.assertEqual((s, b), (400, b"Missing key name"))

    def test_delete_leaves_tombstone_index_and_reaping_lowers_it(self):
        self.c.put(self.p + "a", "1")
        self.c.put(self.p + "b", "2")
        a_idx = self.c.entry(self.p + "a")["ModifyIndex"]
        before = self.c.index(self.p)
        self.c.put("unrelated/" + self.p, "x")
        self.c.delete(self.p + "b")
        idx, ents = self.c.list(self.p)
        self.assertGreater(idx, before)                  # the tombstone's index
        self.assertEqual([e["Key"] for e in ents], [self.p + "a"])
        self.c.delete(self.p + "a")
        s, h, _ = self.get(Consul.kv_path(self.p, recurse=True))
        self.assertEqual(s, 404)
        tomb = int(h["X-Consul-Index"])
        self.assertEqual(tomb, self.c.dump()["tombstones"][self.p + "a"])
        self.c.put(self.p + "a", "again")
        self.c.reap_tombstones()
        idx = self.c.index(self.p)
        self.assertGreater(idx, a_idx)
        self.c.put(self.p + "z", "z")
        z = self.c.entry(self.p + "z")["ModifyIndex"]
        self.c.delete(self.p + "z")
        self.assertEqual(self.c.index(self.p), z + 1)
        self.c.reap_tombstones()
        self.assertLess(self.c.index(self.p), z + 1)     # went backwards: Consul does this


class TestBlocking(Base):
    def block(self, prefix, index, wait="10s", recurse=True):
        q = "?%sindex=%d&wait=%s" % ("recurse&" if recurse else "", index, wait)
        return Async(self.c, "GET", "/v1/kv/" + prefix + q)

    def test_returns_on_write_under_prefix(self):
        self.c.put(self.p + "route", "r")
        idx = self.c.index(self.p)
        req = self.block(self.p, idx)
        self.c.wait_waiters(1, path_prefix="/v1/kv/" + self.p)
        self.assertFalse(req.done())
        t0 = time.monotonic()
        self.c.put(self.p + "weights", "shop-v1=90")
        s, h, b, _ = req.result(10)
        latency = time.monotonic() - t0
        self.assertEqual(s, 200)
        self.assertGreater(int(h["X-Consul-Index"]), idx)
        self.assertEqual([e["Key"] for e in json.loads(b)], [self.p + "route", self.p + "weights"])
        self.assertLess(latency, 0.5)
        self.assertEqual(self.c.waiters(), [])

    def test_write_elsewhere_does_not_change_the_answer(self):
        self.c.put(self.p + "k", "v")
        idx = self.c.index(self.p)
        req = self.block(self.p, idx, wait="800ms")
        self.c.wait_waiters(1, path_prefix="/v1/kv/" + self.p)
        self.c.put("other-" + self.p + "k", "v")      # outside the prefix
        self.c.put(self.p[:-1] + "x", "v")            # shares characters, not the prefix
        s, h, b, took = req.result(10)
        self.assertEqual(s, 200)
        self.assertEqual(int(h["X-Consul-Index"]), idx)
        self.assertGreaterEqual(took, 0.8)
        self.assertLess(took, 0.8 * (1 + 1 / 16.0) + 0.5)

    def test_timeout_returns_same_index_with_jitter_bound(self):
        s, h, _ = self.get(Consul.kv_path(self.p, recurse=True))
        self.assertEqual(s, 404)
        idx = int(h["X-Consul-Index"])
        req = self.block(self.p, idx, wait="300ms")
        s, h2, b, took = req.result(10)
        self.assertEqual((s, b), (404, b""))
        self.assertEqual(int(h2["X-Consul-Index"]), idx)
        self.assertGreaterEqual(took, 0.3)
        self.assertLess(took, 0.3 * (1 + 1 / 16.0) + 0.3)

    def test_index_zero_and_missing_do_not_block(self):
        for q in ("?recurse&index=0&wait=5s", "?recurse&wait=5s"):
            t0 = time.monotonic()
            s, _, _ = self.get("/v1/kv/" + self.p + q)
            self.assertEqual(s, 404)
            self.assertLess(time.monotonic() - t0, 1.0, q)

    def test_index_below_current_returns_at_once(self):
        self.c.put(self.p + "k", "v")
        idx = self.c.index(self.p)
        t0 = time.monotonic()
        s, h, _ = self.get("/v1/kv/%s?recurse&index=%d&wait=5s" % (self.p, idx - 1))
        self.assertEqual((s, int(h["X-Consul-Index"])), (200, idx))
        self.assertLess(time.monotonic() - t0, 1.0)

    def test_empty_prefix_blocks_until_first_key(self):
        s, h, _ = self.get(Consul.kv_path(self.p, recurse=True))
        idx = int(h["X-Consul-Index"])
        req = self.block(self.p, idx)
        self.c.wait_waiters(1, path_prefix="/v1/kv/" + self.p)
        self.c.put(self.p + "first", "1")
        s, h, b, _ = req.result(10)
        self.assertEqual(s, 200)
        self.assertEqual(json.loads(b)[0]["Key"], self.p + "first")

    def test_delete_under_prefix_wakes(self):
        self.c.put(self.p + "a", "1")
        self.c.put(self.p + "b", "2")
        idx = self.c.index(self.p)
        req = self.block(self.p, idx)
        self.c.wait_waiters(1, path_prefix="/v1/kv/" + self.p)
        self.c.delete(self.p + "a")
        s, h, b, _ = req.result(10)
        self.assertEqual(s, 200)
        self.assertGreater(int(h["X-Consul-Index"]), idx)
        self.assertEqual([e["Key"] for e in json.loads(b)], [self.p + "b"])
        idx = int(h["X-Consul-Index"])
        req = self.block(self.p, idx)
        self.c.wait_waiters(1, path_prefix="/v1/kv/" + self.p)
        self.c.delete(self.p, recurse=True)
        s, h, b, _ = req.result(10)
        self.assertEqual((s, b), (404, b""))
        self.assertGreater(int(h["X-Consul-Index"]), idx)

    def test_single_key_blocking(self):
        self.c.put(self.p + "k", "1")
        mi = self.c.entry(self.p + "k")["ModifyIndex"]
        req = self.block(self.p + "k", mi, recurse=False)
        self.c.wait_waiters(1, path_prefix="/v1/kv/" + self.p)
        self.c.put(self.p + "k", "2")
        s, h, b, _ = req.result(10)
        self.assertEqual(json.loads(b)[0]["Value"], b64("2"))
        self.assertEqual(int(h["X-Consul-Index"]), json.loads(b)[0]["ModifyIndex"])

    def test_wake_returns_same_index(self):
        self.c.put(self.p + "k", "v")
        idx = self.c.index(self.p)
        req = self.block(self.p, idx, wait="30s")
        self.c.wait_waiters(1, path_prefix="/v1/kv/" + self.p)
        self.assertGreaterEqual(self.c.wake(), 1)
        s, h, _, took = req.result(10)
        self.assertEqual((s, int(h["X-Consul-Index"])), (200, idx))
        self.assertLess(took, 5)

    def test_wait_default_cap_and_jitter(self):
        self.c.put(self.p + "k", "v")
        idx = self.c.index(self.p)
        cases = {"": (300, 300 * 17 / 16), "wait=20m": (600, 600 * 17 / 16),
                 "wait=0s": (300, 300 * 17 / 16), "wait=90s": (90, 90 * 17 / 16)}
        reqs = [Async(self.c, "GET", "/v1/kv/%s?recurse&index=%d&%s" % (self.p, idx, q))
                for q in cases]
        try:
            ws = self.c.wait_waiters(len(cases), path_prefix="/v1/kv/" + self.p)
            by_query = {w["query"].rsplit("&", 1)[1]: w for w in ws}
            for q, (lo, hi) in cases.items():
                self.assertGreaterEqual(by_query[q]["timeout"], lo, q)
                self.assertLessEqual(by_query[q]["timeout"], hi, q)
        finally:
            self.c.wake()
        for r in reqs:
            self.assertEqual(r.result(10)[0], 200)

    def test_many_waiters_all_wake(self):
        self.c.put(self.p + "k", "v")
        idx = self.c.index(self.p)
        reqs = [self.block(self.p, idx) for _ in range(8)]
        self.c.wait_waiters(8, path_prefix="/v1/kv/" + self.p)
        self.c.put(self.p + "k", "v2")
        for r in reqs:
            s, h, _, _ = r.result(10)
            self.assertGreater(int(h["X-Consul-Index"]), idx)


class TestIndexReset(Base):
    def test_reset_goes_backwards_and_wakes_blocked_queries(self):
        for i in range(5):
            self.c.put(self.p + "k%d" % i, str(i))
        before = self.c.index(self.p)
        whole = self.c.index()
        req = Async(self.c, "GET", "/v1/kv/%s?recurse&index=%d&wait=30s" % (self.p, before))
        self.c.wait_waiters(1, path_prefix="/v1/kv/" + self.p)
        out = self.c.reset_index(whole - 20)
        self.assertEqual(out["raft_index"], whole - 20)
        s, h, b, took = req.result(10)
        self.assertLess(took, 5)                         # abandoned, not timed out
        self.assertEqual(s, 200)
        # As Consul v1.16.3 answers (tests/real/test_compare.py): the abandoned query
        # carries the index it blocked on, not the restored one.
        self.assertEqual(int(h["X-Consul-Index"]), before)
        self.assertEqual(len(json.loads(b)), 5)          # same data
        after = self.c.index(self.p)
        self.assertLess(after, before)
        self.assertEqual([self.c.get(self.p + "k%d" % i) for i in range(5)],
                         [str(i) for i in range(5)])
        # a client that keeps its old (higher) index blocks until the wait runs out
        t0 = time.monotonic()
        s, h, _ = self.get("/v1/kv/%s?recurse&index=%d&wait=300ms" % (self.p, before))
        self.assertGreaterEqual(time.monotonic() - t0, 0.3)
        self.assertEqual(int(h["X-Consul-Index"]), after)
        # writes continue from the restored raft index
        self.c.put(self.p + "new", "n")
        self.assertEqual(self.c.entry(self.p + "new")["ModifyIndex"], whole - 19)
        self.assertEqual(self.c.index(self.p), whole - 19)

    def test_reset_rejects_zero(self):
        with self.assertRaises(ConsulError) as cm:
            self.c.reset_index(0)
        self.assertEqual(cm.exception.status, 400)


class TestFaults(Base):
    def test_status_fault_with_count(self):
        self.c.put(self.p + "k", "v")
        rule = self.c.fault(path_regex="^/v1/kv/" + self.p, status=500, count=2)
        self.assertEqual(rule["count"], 2)
        path = Consul.kv_path(self.p, recurse=True)
        for _ in range(2):
            s, h, b = self.get(path)
            self.assertEqual((s, b), (500, b"No cluster leader"))
            self.assertNotIn("X-Consul-Index", h)
        s, h, _ = self.get(path)
        self.assertEqual(s, 200)
        self.assertEqual(self.c.faults(), [])
        log = [r for r in self.c.requests() if r["path"] == "/v1/kv/" + self.p]
        self.assertEqual([r["fault"] for r in log[-3:]], [rule["id"], rule["id"], None])
        self.assertEqual([r["status"] for r in log[-3:]], [500, 500, 200])

    def test_forever_fault_method_filter_and_clear(self):
        self.c.put(self.p + "k", "v")
        self.c.fault(path_regex="^/v1/kv/" + self.p, method="PUT", status=503, count=-1,
                     body="unavailable")
        for _ in range(3):
            with self.assertRaises(ConsulError) as cm:
                self.c.put(self.p + "k", "w")
            self.assertEqual((cm.exception.status, cm.exception.body), (503, "unavailable"))
        self.assertEqual(self.c.get(self.p + "k"), "v")          # GET not affected
        self.assertEqual(len(self.c.faults()), 1)
        self.c.clear_faults()
        self.assertTrue(self.c.put(self.p + "k", "w"))

    def test_delay(self):
        self.c.put(self.p + "k", "v")
        self.c.fault(path_regex="^/v1/kv/" + self.p, delay_ms=300)
        t0 = time.monotonic()
        s, _, _ = self.get(Consul.kv_path(self.p + "k"))
        self.assertEqual(s, 200)
        self.assertGreaterEqual(time.monotonic() - t0, 0.3)

    def test_drop_mid_wait_closes_the_connection(self):
        self.c.put(self.p + "k", "v")
        idx = self.c.index(self.p)
        rule = self.c.fault(path_regex="^/v1/kv/" + self.p, action="drop_mid_wait",
                            delay_ms=300)
        # a non-blocking read is not a wait: it passes and leaves the rule armed
        s, _, _ = self.get(Consul.kv_path(self.p, recurse=True))
        self.assertEqual(s, 200)
        self.assertEqual(len(self.c.faults()), 1)
        req = Async(self.c, "GET", "/v1/kv/%s?recurse&index=%d&wait=30s" % (self.p, idx))
        self.c.wait_waiters(1, path_prefix="/v1/kv/" + self.p)
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionError)):
            req.result(10)
        self.assertGreaterEqual(req.elapsed, 0.3)
        self.assertLess(req.elapsed, 5)
        rec = [r for r in self.c.requests() if r["fault"] == rule["id"]][-1]
        self.assertIsNone(rec["status"])
        self.assertTrue(rec["dropped"])
        self.assertEqual(self.c.faults(), [])

    def test_drop_reset_truncate(self):
        self.c.put(self.p + "k", "v")
        path = Consul.kv_path(self.p, recurse=True)
        self.c.fault(path_regex="^/v1/kv/" + self.p, action="drop")
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionError)):
            self.get(path)
        self.c.fault(path_regex="^/v1/kv/" + self.p, action="reset")
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionError)):
            self.get(path)
        self.c.fault(path_regex="^/v1/kv/" + self.p, action="truncate")
        with self.assertRaises((http.client.IncompleteRead, ConnectionError)):
            self.get(path)
        self.assertEqual(self.get(path)[0], 200)

    def test_hang_until_client_gives_up(self):
        self.c.fault(path_regex="^/v1/kv/" + self.p, action="hang")
        t0 = time.monotonic()
        with self.assertRaises((socket.timeout, TimeoutError)):
            self.get(Consul.kv_path(self.p, recurse=True), timeout=0.5)
        self.assertGreaterEqual(time.monotonic() - t0, 0.5)

        def logged():
            recs = [r for r in self.c.requests() if r["path"] == "/v1/kv/" + self.p]
            return recs and recs[-1]["t_done"] is not None and recs[-1]
        rec = wait_until(logged, 5, what="hung request ended")
        self.assertIsNone(rec["status"])

    def test_bad_rules_rejected(self):
        for rule in ({"action": "explode"}, {"path_regex": "("}, {"path_regex": "x"},
                     {"status": 500, "count": 0}, {"status": 500, "bogus": 1}):
            with self.assertRaises(ConsulError, msg=rule) as cm:
                self.c.fault(**rule)
            self.assertEqual(cm.exception.status, 400)


class TestRequestLogAndTransport(Base):
    def test_request_log(self):
        self.c.clear_requests()
        self.c.put(self.p + "k", "v")
        s, h, _ = self.get(Consul.kv_path(self.p, recurse=True),
                           headers={"User-Agent": "canary-bridge/test"})
        log = self.c.requests()
        self.assertEqual([(r["method"], r["path"]) for r in log],
                         [("PUT", "/v1/kv/%sk" % self.p), ("GET", "/v1/kv/" + self.p)])
        r = log[1]
        self.assertEqual(r["query"], "recurse")
        self.assertEqual(r["status"], 200)
        self.assertEqual(r["index_header"], int(h["X-Consul-Index"]))
        self.assertEqual(r["user_agent"], "canary-bridge/test")
        self.assertLessEqual(r["t"], r["t_done"])
        self.assertGreater(r["seq"], log[0]["seq"])
        self.assertEqual(self.c.requests(since=r["seq"]), [])
        self.assertEqual(len(self.c.requests(clear=True)), 2)
        self.assertEqual(self.c.requests(), [])

    def test_keepalive_and_no_delayed_ack_stall(self):
        self.c.put(self.p + "k", "v")
        conn = self.c.connection()
        times = []
        try:
            for _ in range(20):
                t0 = time.monotonic()
                conn.request("GET", Consul.kv_path(self.p + "k"))
                r = conn.getresponse()
                r.read()
                times.append(time.monotonic() - t0)
                self.assertEqual(r.status, 200)
                conn.request("PUT", Consul.kv_path(self.p + "k"), body=b"v%d" % len(times))
                r = conn.getresponse()
                self.assertEqual(r.read(), b"true")
        finally:
            conn.close()
        conns = {r["conn"] for r in self.c.requests() if r["path"] == "/v1/kv/%sk" % self.p}
        self.assertEqual(len(conns), 2)          # the put() above, then one keep-alive conn
        self.assertLess(statistics.median(times), 0.02, times)

    def test_control_requests_not_logged(self):
        self.c.clear_requests()
        self.c.faults()
        self.c.dump()
        self.assertEqual(self.c.requests(), [])


class TestAcl(Base):
    TOKEN = "5e0b3c8a-1111-4d6e-9c6a-acl-management"
    READ = "read-only-token"

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="consul-acl-")
        cls.srv = Consul(cls.tmp.name, acl_token=cls.TOKEN, read_tokens=[cls.READ])
        cls.srv.put("canary/default/shop/weights", "shop-v1=90")

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()
        cls.tmp.cleanup()

    def test_anonymous_single_key_is_denied(self):
        s, h, b = self.c.request("GET", "/v1/kv/canary/default/shop/weights", token=None)
        self.assertEqual(s, 403)
        self.assertEqual(b.decode(), "Permission denied: anonymous token lacks permission "
                         "'key:read' on \"canary/default/shop/weights\". The anonymous token "
                         "is used implicitly when a request does not specify a token.")
        self.assertEqual(h["Content-Type"], "text/plain; charset=utf-8")
        self.assertNotIn("X-Consul-Index", h)

    def test_anonymous_recurse_is_a_plain_404(self):
        # KVS.List filters, then maskResultsFilteredByACLs clears the flag for an empty
        # token: the anonymous token cannot tell "denied" from "empty".
        s, h, b = self.c.request("GET", "/v1/kv/canary/?recurse", token=None)
        self.assertEqual((s, b), (404, b""))
        self.assertNotIn("X-Consul-Results-Filtered-By-ACLs", h)
        self.assertEqual(h["X-Consul-Default-ACL-Policy"], "deny")
        self.assertMeta(h)
        s, h, b = self.c.request("GET", "/v1/kv/?keys", token=None)
        self.assertEqual((s, json.loads(b)), (200, []))
        self.assertNotIn("X-Consul-Results-Filtered-By-ACLs", h)
        # A single key that does not even exist is still 403: the check comes first.
        s, h, b = self.c.request("GET", "/v1/kv/canary/", token=None)
        self.assertEqual(s, 403)
        self.assertIn(b"anonymous token lacks permission 'key:read' on \"canary/\"", b)

    def test_partial_tokens_get_a_shorter_list(self):
        self.c.put("canary/other/cart/route", "x")
        try:
            self.c.set_acl(self.TOKEN, [self.READ], {"part": ["canary/default/"]},
                           anonymous_read=["canary/other/"])
            # A real token: the keys it may not read are left out, and it is told so.
            s, h, b = self.c.request("GET", "/v1/kv/canary/?recurse", token="part")
            self.assertEqual(s, 200)
            got = [e["Key"] for e in json.loads(b)]
            self.assertIn("canary/default/shop/weights", got)
            self.assertTrue(all(k.startswith("canary/default/") for k in got), got)
            self.assertEqual(h["X-Consul-Results-Filtered-By-ACLs"], "true")
            s, h, _ = self.c.request("GET", "/v1/kv/canary/other/?recurse", token="part")
            self.assertEqual(s, 404)
            self.assertEqual(h["X-Consul-Results-Filtered-By-ACLs"], "true")
            self.assertEqual(self.c.request("GET", "/v1/kv/canary/", token="part")[0], 403)
            # The anonymous token with some rights: silently filtered.
            s, h, b = self.c.request("GET", "/v1/kv/canary/?recurse", token=None)
            self.assertEqual(s, 200)
            self.assertEqual([e["Key"] for e in json.loads(b)], ["canary/other/cart/route"])
            self.assertNotIn("X-Consul-Results-Filtered-By-ACLs", h)
            # Everything visible: no header.
            s, h, _ = self.c.request("GET", "/v1/kv/canary/?recurse", token=self.READ)
            self.assertEqual(s, 200)
            self.assertNotIn("X-Consul-Results-Filtered-By-ACLs", h)
        finally:
            self.c.set_acl(self.TOKEN, [self.READ])
            self.c.delete("canary/other/cart/route")

    def test_unknown_token(self):
        for hdrs in ({"X-Consul-Token": "wrong"}, {"Authorization": "Bearer wrong"}):
            s, h, b = self.c.request("GET", "/v1/kv/canary/?recurse", token=None, headers=hdrs)
            self.assertEqual((s, b), (403, b"ACL not found"))
            self.assertNotIn("X-Consul-Index", h)
        s, _, b = self.c.request("PUT", "/v1/kv/canary/x", "v", token="wrong")
        self.assertEqual((s, b), (403, b"ACL not found"))

    def test_token_header_bearer_and_query(self):
        for kw in ({"token": self.TOKEN},
                   {"token": None, "headers": {"Authorization": "Bearer " + self.TOKEN}}):
            s, _, b = self.c.request("GET", "/v1/kv/canary/?recurse", **kw)
            self.assertEqual(s, 200, kw)
            self.assertIn("canary/default/shop/weights", [e["Key"] for e in json.loads(b)])
        s, _, _ = self.c.request("GET", "/v1/kv/canary/?recurse&token=" + self.TOKEN,
                                 token=None)
        self.assertEqual(s, 200)
        sources = [r["token_source"] for r in self.c.requests()[-3:]]
        self.assertEqual(sources, ["X-Consul-Token", "Bearer", "query"])
        self.assertNotIn(self.TOKEN, json.dumps(self.c.requests()))
        self.assertNotIn(self.TOKEN, self.c.log_text())

    def test_read_token_cannot_write(self):
        s, _, _ = self.c.request("GET", "/v1/kv/canary/?recurse", token=self.READ)
        self.assertEqual(s, 200)
        s, _, b = self.c.request("PUT", "/v1/kv/canary/default/shop/status", "{}",
                                 token=self.READ)
        self.assertEqual(s, 403)
        self.assertRegex(b.decode(), r"^Permission denied: token with AccessorID '[0-9a-f-]{36}' "
                         r"lacks permission 'key:write' on \"canary/default/shop/status\"$")
        s, _, _ = self.c.request("DELETE", "/v1/kv/canary/default/shop/weights",
                                 token=self.READ)
        self.assertEqual(s, 403)
        self.assertEqual(self.c.get("canary/default/shop/weights"), "shop-v1=90")
        s, _, b = self.c.request("PUT", "/v1/kv/canary/anon", "x", token=None)
        self.assertEqual(s, 403)
        self.assertIn(b"anonymous token lacks permission 'key:write'", b)

    def test_blocking_works_with_token_and_rotation(self):
        idx = self.c.index("canary/")
        req = Async(self.c, "GET", "/v1/kv/canary/?recurse&index=%d&wait=10s" % idx,
                    headers={"X-Consul-Token": self.TOKEN})
        self.c.wait_waiters(1, path_prefix="/v1/kv/canary/")
        self.c.put("canary/default/shop/route", "match: Host(`x`)")
        s, h, _, _ = req.result(10)
        self.assertEqual(s, 200)
        self.assertGreater(int(h["X-Consul-Index"]), idx)
        try:
            self.c.set_acl("rotated", [self.READ])
            s, _, b = self.c.request("GET", "/v1/kv/canary/?recurse", token=self.TOKEN)
            self.assertEqual((s, b), (403, b"ACL not found"))
            self.assertEqual(self.c.request("GET", "/v1/kv/canary/?recurse")[0], 200)
        finally:
            self.c.set_acl(self.TOKEN, [self.READ])


class TestFreshStore(Base):
    def test_fresh_store_index_1_blocks_until_first_write(self):
        # "It is always safe to use an index of 1 to wait for updates when the data being
        # requested doesn't exist yet" (blocking.mdx); raft writes come before the first KV
        # write, so that one does not get index 1 or 2.
        with tempfile.TemporaryDirectory(prefix="consul-fresh-") as d:
            with Consul(d, start_index=40) as c:
                for path in ("/v1/kv/canary/?recurse", "/v1/kv/?recurse", "/v1/kv/canary/x"):
                    s, h, b = c.request("GET", path)
                    self.assertEqual((s, b, h["X-Consul-Index"]), (404, b"", "1"), path)
                s, _, b = c.request("GET", "/v1/kv/?keys")
                self.assertEqual((s, json.loads(b)), (200, []))   # the root is never 404
                req = Async(c, "GET", "/v1/kv/canary/?recurse&index=1&wait=10s")
                c.wait_waiters(1)
                c.put("canary/default/shop/weights", "shop-v1=100")
                s, h, b, _ = req.result(10)
                self.assertEqual((s, h["X-Consul-Index"]), (200, "41"))


class TestRestart(Base):
    def test_restart_keeps_data_index_and_port(self):
        with tempfile.TemporaryDirectory(prefix="consul-restart-") as d:
            with Consul(d) as c:
                c.put("canary/a", "1")
                c.put_folder("canary/f")
                c.put("canary/b", "2")
                c.delete("canary/b")
                port, idx, ents = c.port, c.index("canary/"), c.list("canary/")[1]
                raft = c.dump()["raft_index"]
                c.restart()
                self.assertEqual(c.port, port)
                self.assertEqual(c.index("canary/"), idx)       # tombstone index kept too
                self.assertEqual(c.list("canary/")[1], ents)
                c.restart(kill=True)                             # SIGKILL: data was on disk
                self.assertEqual(c.port, port)
                self.assertEqual(c.list("canary/")[1], ents)
                c.put("canary/c", "3")
                self.assertEqual(c.entry("canary/c")["ModifyIndex"], raft + 1)
                # a client blocked across a restart sees its connection end
                req = Async(c, "GET", "/v1/kv/canary/?recurse&index=%d&wait=30s"
                            % c.index("canary/"))
                c.wait_waiters(1)
                c.restart()
                with self.assertRaises((http.client.RemoteDisconnected, ConnectionError)):
                    req.result(10)
                self.assertEqual(c.get("canary/c"), "3")
            self.assertFalse(c.alive())


class TestRawKeyBytes(Base):
    def test_keys_keep_their_bytes_and_json_shows_ufffd(self):
        a, b = (self.p + "sh\xffop/weights").encode("latin-1"), \
            (self.p + "sh\xfeop/weights").encode("latin-1")
        trunc = self.p.encode() + b"x\xe2\x82y"        # a cut 3-byte sequence: 2 bytes
        self.assertTrue(self.c.put(a, "a=1"))
        self.assertTrue(self.c.put(b, "b=1"))
        self.assertTrue(self.c.put(trunc, "t"))
        # Two keys, one name on the wire (Go's encoding/json: one U+FFFD per bad byte).
        s, _, body = self.get("/v1/kv/" + self.p + "?recurse")
        self.assertEqual(s, 200)
        keys = [e["Key"] for e in json.loads(body)]
        self.assertEqual(sorted(keys), sorted([self.p + "sh\ufffdop/weights"] * 2 +
                                              [self.p + "x\ufffd\ufffdy"]))
        self.assertNotIn(b"\\udc", body)
        s, _, body = self.get("/v1/kv/" + self.p + "?keys")
        self.assertEqual(json.loads(body).count(self.p + "sh\ufffdop/weights"), 2)
        # Each raw key is its own entry.
        self.assertEqual(self.c.get(a), "a=1")
        self.assertEqual(self.c.get(b), "b=1")
        self.assertTrue(self.c.delete(a))
        self.assertIsNone(self.c.get(a))
        self.assertEqual(self.c.get(b), "b=1")


class TestConnLimit(Base):
    def test_429_past_the_per_client_limit_idle_ones_counted(self):
        with tempfile.TemporaryDirectory(prefix="consul-conns-") as d:
            with Consul(d, max_conns_per_client=2) as c:
                held = [socket.create_connection(("127.0.0.1", c.port)) for _ in range(2)]
                try:
                    held[0].sendall(b"GET /v1/kv/canary/?recurse HTTP/1.1\r\nHost: x\r\n\r\n")
                    self.assertIn(b"404", held[0].recv(4096))     # kept alive, now idle
                    wait_until(lambda: c.conns()["open"].get("127.0.0.1") == 2,
                               what="two open connections")
                    third = socket.create_connection(("127.0.0.1", c.port))
                    third.sendall(b"GET /v1/kv/canary/?recurse HTTP/1.1\r\nHost: x\r\n\r\n")
                    got = b""
                    while True:
                        chunk = third.recv(4096)
                        if not chunk:
                            break
                        got += chunk
                    third.close()
                    self.assertEqual(got, b"HTTP/1.1 429 Too Many Requests\r\n\r\n")
                    # The harness connects from 127.0.0.2: its own limit.
                    self.assertTrue(c.put("canary/k", "v"))
                    st = c.conns()
                    self.assertEqual((st["refused"], st["max_open"]["127.0.0.1"]), (1, 2))
                finally:
                    for h in held:
                        h.close()
                # Closed ones no longer count.
                wait_until(lambda: "127.0.0.1" not in c.conns()["open"], what="closed")
                s = socket.create_connection(("127.0.0.1", c.port))
                s.sendall(b"GET /v1/kv/canary/k HTTP/1.1\r\nHost: x\r\n\r\n")
                self.assertIn(b"200 OK", s.recv(4096))
                s.close()


class TestTls(Base):
    def test_alpn_offers_h2_first_like_consul(self):
        with tempfile.TemporaryDirectory(prefix="consul-alpn-") as d:
            with Consul(d, tls=True) as c:
                for offer, want in ((["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1")):
                    ctx = ssl.create_default_context(cafile=c.ca)
                    ctx.set_alpn_protocols(offer)
                    with socket.create_connection(("127.0.0.1", c.port)) as raw:
                        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as t:
                            self.assertEqual(t.selected_alpn_protocol(), want)
                # (the harness's own connections offer no ALPN: "none")
                wait_until(lambda: {k: v for k, v in c.conns()["alpn"].items()
                                    if k != "none"} == {"h2": 1, "http/1.1": 1},
                           what="both negotiations counted")

    def test_https_with_ca_and_client_certificates(self):
        with tempfile.TemporaryDirectory(prefix="consul-tls-") as d:
            with Consul(d, tls=True) as c:
                self.assertTrue(c.url.startswith("https://127.0.0.1:"))
                self.assertTrue(os.path.exists(c.ca))
                self.assertTrue(c.put("canary/k", "v"))
                self.assertEqual(c.get("canary/k"), "v")
                bad = ssl.create_default_context()         # system CAs only: must fail
                conn = http.client.HTTPSConnection("127.0.0.1", c.port, context=bad, timeout=5)
                with self.assertRaises(ssl.SSLError):
                    conn.request("GET", "/v1/kv/canary/k")
                conn.close()
            with Consul(d, tls=True, client_auth=True, name="mtls") as c:
                self.assertEqual(c.put("canary/k", "v"), True)
                self.assertTrue(os.path.exists(c.client_cert))
                nocert = ssl.create_default_context(cafile=c.ca)
                conn = http.client.HTTPSConnection("127.0.0.1", c.port, context=nocert,
                                                   timeout=5)
                with self.assertRaises((ssl.SSLError, ConnectionError)):
                    conn.request("GET", "/v1/kv/canary/k")
                    conn.getresponse().read()
                conn.close()
                with open(c.ca) as f:
                    ca_before = f.read()
                c.restart()                                  # same CA after a restart
                with open(c.ca) as f:
                    self.assertEqual(f.read(), ca_before)
                self.assertEqual(c.get("canary/k"), "v")


class TestGoDuration(unittest.TestCase):
    def test_parse(self):
        import importlib.util
        spec = importlib.util.spec_from_file_location(
            "consul_test_server", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                               "server.py"))
        server = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(server)
        for s, v in (("10s", 10), ("500ms", 0.5), ("1m30s", 90), ("1.5h", 5400), ("0", 0),
                     ("5m", 300), ("100us", 1e-4), ("-1s", -1)):
            self.assertAlmostEqual(server.parse_go_duration(s), v, msg=s)
        for s in ("10", "", "s", "1x", "1.s5"):
            with self.assertRaises(ValueError, msg=s):
                server.parse_go_duration(s)


if __name__ == "__main__":
    unittest.main()
