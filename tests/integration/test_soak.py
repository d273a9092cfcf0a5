"""Garbage soak: thousands of hostile values pushed into every key kind (route,
weights, headers and stray keys, including badly named ones) while the daemon runs (CI runs
this a second time against the ASan+UBSan build).  Then:
  - the daemon is alive and still serving /healthz;
  - every key that got garbage was reported (at least one error line naming it; stray keys
    one "ignoring key" warning each);
  - the last good objects stayed exactly as they were (same resourceVersion), and a route
    edited meanwhile with valid values kept working;
  - nothing was deleted (reconcile.policy: sync);
  - after valid values are written, every route converges on them.

The garbage is drawn from a seeded RNG.  The seed is printed; replay a failure with
CB_SOAK_SEED=<seed> (and CB_SOAK_VALUES=<n> to change the count, 2000 by default)."""
import base64
import json
import os
import random
import re
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
from cbtest import Bridge, Etcd, KubeAPI, bridge_config, free_port, wait_until, mw_name  # noqa: E402
from consul import Consul, ConsulError  # noqa: E402

G = "traefik.io"
NS = "default"
TRAEFIK = ("IngressRoute", "Middleware", "TraefikService")
SANITIZED = os.environ.get("CANARY_SANITIZED") == "1"
SLOW = 3 if SANITIZED else 1       # wait budgets only
N_VALUES = int(os.environ.get("CB_SOAK_VALUES", "2000"))
VALUE_LIMIT = 64 * 1024            # bridge/lib/value.h VALUE_MAX_BYTES


def seed_from_env():
    s = os.environ.get("CB_SOAK_SEED")
    return int(s) if s else random.SystemRandom().randrange(2 ** 32)


def route_doc(name, w=None):
    ws = ("", "") if w is None else (", weight: %d" % w[0], ", weight: %d" % w[1])
    return ("match: Host(`%s.example.com`) && PathPrefix(`/`)\n"
            "services:\n"
            "  - {name: %s-v1, port: 80%s}\n"
            "  - {name: %s-v2, port: 80%s}\n" % (name, name, ws[0], name, ws[1]))


def headers_doc(name, value="always"):
    return ("- name: beta\n  header: X-Canary\n  value: %s\n  service: %s-v2\n"
            "  setRequestHeaders: {X-Canary-Route: beta}\n" % (value, name))


def weights_of(obj):
    if not obj:
        return None
    return {s["name"]: s.get("weight") for s in obj["spec"]["routes"][-1]["services"]}


def http_get(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as r:
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


# =============================================================================================
# Garbage.  Every generator returns bytes that are NOT a valid value for its leaf (so the
# route must fail and keep its last good objects), except where a class says otherwise.

def deep(n, open_, close, inner=b"1"):
    return open_ * n + inner + close * n


def billion_laughs(levels=9):
    lines = [b'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(b"a%d: &a%d [%s]" % (i, i, b",".join([b"*a%d" % (i - 1)] * 9)))
    return b"\n".join(lines) + b"\n"


def garbage_common(rng, n):
    """Classes that are bad for any leaf.  n: the route name (bytes)."""
    big = rng.choice([VALUE_LIMIT + 1, 1024 * 1024])
    return [
        ("random", lambda: bytes(rng.getrandbits(8) for _ in range(rng.choice(
            [1, 2, 3, 8, 40, 300, 2000])))),
        ("random-text", lambda: "".join(chr(rng.randrange(0x20, 0x2fff))
                                        for _ in range(rng.randint(1, 200))).encode()),
        ("huge", lambda: (b"%s-v1=1, " % n) * (big // (len(n) + 8) + 1)),
        ("huge-comment", lambda: b"#" + b"x" * big),
        ("deep-flow-seq", lambda: deep(10000, b"[", b"]")),
        ("deep-flow-map", lambda: deep(10000, b"{a: ", b"}")),
        ("deep-json", lambda: deep(10000, b'{"a":', b"}")),
        ("deep-block", lambda: b"".join(b" " * i + b"a:\n" for i in range(300)) + b" " * 300 +
         b"a: 1\n"),
        ("alias-bomb", lambda: billion_laughs(rng.randint(3, 9))),
        ("alias-self", lambda: b"a: &a [*a]\n"),
        ("alias-undefined", lambda: b"a: *nowhere\n"),
        ("merge-key", lambda: b"base: &b {x: 1}\nm:\n  <<: *b\n"),
        ("tag", lambda: rng.choice([b"!!binary aGVsbG8=", b"!!python/object:os.system ls",
                                    b"!custom {a: 1}", b"%YAML 1.1\n---\n!!set {a}"])),
        ("nul", lambda: b"%s-v1=50\x00, %s-v2=50" % (n, n)),
        ("nul-only", lambda: b"\x00" * rng.randint(1, 10)),
        ("control", lambda: b"%s-v1=5%s, %s-v2=5" % (n, bytes([rng.choice(
            [1, 2, 7, 8, 0x0b, 0x0c, 0x1b, 0x7f])]), n)),
        ("invalid-utf8", lambda: b"%s-v1: 5\n%s-v2: %s\n" % (n, n, rng.choice(
            [b"\xff", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
             b"\xe2\x82", b"5\x80"]))),
        ("bom-then-garbage", lambda: b"\xef\xbb\xbf\xef\xbb\xbf[[["),
        ("multi-doc", lambda: b"%s-v1: 1\n---\n%s-v2: 2\n" % (n, n)),
        ("empty", lambda: rng.choice([b"", b" ", b"\n\n", b"\t", b"---", b"# only a comment",
                                      b"...", b"--- \n..."])),
        ("unbalanced", lambda: rng.choice([b"{", b"[", b"}", b"]]", b'"', b"'", b"{a: [}",
                                           b"- - - -", b": :", b"?"])),
    ]


def garbage_weights(rng, n):
    svc1, svc2 = n + b"-v1", n + b"-v2"
    # Only numbers no reading makes a valid weight (0x10, 1_000, 1e3, +5 are left out:
    # whether they are integers is a matter of YAML version, not garbage).
    nums = [b"1e999", b"-1e999", b"9223372036854775808", b"-9223372036854775809",
            b"18446744073709551616", b"1.5", b".inf", b"-.inf", b".nan", b"NaN", b"-1",
            b"1000001", b"true", b"null", b"~", b"\xef\xbc\x91\xef\xbc\x90", b"5e-1",
            b"1e-999"]
    return [
        ("number-json", lambda: b'{"%s": %s, "%s": 1}' % (svc1, rng.choice(nums), svc2)),
        ("number-compact", lambda: b"%s=%s, %s=1" % (svc1, rng.choice(nums), svc2)),
        ("minus-zero-all", lambda: b'{"%s": -0, "%s": -0}' % (svc1, svc2)),
        ("all-zero", lambda: b"%s=0, %s=0" % (svc1, svc2)),
        ("duplicate-json", lambda: b'{"%s": 1, "%s": 2, "%s": 3}' % (svc1, svc1, svc2)),
        ("duplicate-yaml", lambda: b"%s: 1\n%s: 2\n" % (svc1, svc1)),
        ("duplicate-compact", lambda: b"%s=1, %s=2" % (svc1, svc1)),
        ("unknown-service", lambda: b"%s=1, other-svc=1" % svc1),
        ("many-keys", lambda: b"{" + b",".join(b'"k%d": 1' % i for i in range(5000)) + b"}"),
        ("list", lambda: b"[%s, %s]" % (svc1, svc2)),
        ("backtick", lambda: b"%s`) || Host(`evil=1" % svc1),
    ] + garbage_common(rng, n)


def garbage_route(rng, n):
    good = route_doc(n.decode()).encode()
    return [
        ("no-match", lambda: good.replace(b"match:", b"mat\xd1\x81h:")),   # a Cyrillic s
        ("control-in-match", lambda: good.replace(b"Host(", b"Host(\x01")),
        ("duplicate-match", lambda: b'{"match": "Host(`a`)", "match": "Host(`b`)", "services":'
         b' [{"name": "%s-v1", "port": 80}]}' % n),
        ("no-services", lambda: b"match: Host(`x`)\nservices: []\n"),
        ("bad-port", lambda: good.replace(b"port: 80}", b"port: %s}" % rng.choice(
            [b"1e999", b"-1", b"70000", b"9223372036854775808", b"[]", b"\"\""]), 1)),
        ("bad-weight", lambda: good.replace(b"port: 80}", b"port: 80, weight: %s}" % rng.choice(
            [b"1e999", b"-0.5", b"9223372036854775808", b"x"]), 1)),
        ("cross-ns", lambda: good.replace(b"port: 80}", b"port: 80, namespace: other}", 1)),
        ("bad-service-name", lambda: good.replace(b"name: %s-v1" % n, b"name: %s" % rng.choice(
            [b"UPPER", b"a" * 300, b'"a b"', b'"`"', b'"-x"', b'"\xc3\xa9"']), 1)),
        ("unknown-field", lambda: good + b"surprise: true\n"),
        ("priority", lambda: good + b"priority: %s\n" % rng.choice(
            [b"1e999", b"9223372036854775808", b"-9223372036854775809", b"1.5"])),
        ("scalar", lambda: b"Host(`x`)"),
    ] + garbage_common(rng, n)


def garbage_headers(rng, n):
    svc2 = n + b"-v2"

    def rule(**kv):
        body = b"".join(b"  %s: %s\n" % (k.encode(), v) for k, v in kv.items())
        return b"- " + body[2:]
    inj = [b'"a`) || Host(`evil"', b'"x\\u0001y"', b'"x\\ny"', b'"x\\ty"', b'"\\u007f"',
           b'"`"', b'"a\\u0000b"']
    return [
        ("backtick-value", lambda: rule(header=b"X-Canary", value=rng.choice(inj),
                                        service=svc2)),
        ("backtick-header", lambda: rule(header=rng.choice(inj + [b'"X Canary"', b'"X:C"', b'""']),
                                         value=b"v", service=svc2)),
        ("backtick-cookie", lambda: rule(cookie=b"c", value=rng.choice(inj + [b'"a;b"', b'"a,b"']),
                                         service=svc2)),
        ("regex-injection", lambda: rule(header=b"X-Canary", regex=rng.choice(
            [b'"`"', b'""', b'"("', b'"x\\u0001"']), service=svc2)),
        ("both-value-and-regex", lambda: rule(header=b"X", value=b"a", regex=b"b",
                                              service=svc2)),
        ("unknown-service", lambda: rule(header=b"X", value=b"a", service=b"nobody")),
        ("set-headers-injection", lambda: rule(header=b"X", value=b"a", service=svc2,
                                               setRequestHeaders=b'{"X-A": "a\\u0001"}')),
        ("duplicate-name", lambda: rule(name=b"r", header=b"X", value=b"a", service=svc2) +
         rule(name=b"r", header=b"Y", value=b"b", service=svc2)),
        ("duplicate-key", lambda: b"- {header: X, header: Y, value: a, service: %s}" % svc2),
        ("mapping", lambda: b"header: X\nvalue: a\nservice: %s\n" % svc2),
        ("many-rules", lambda: b"".join(rule(header=b"X-%d" % i, value=b"v", service=svc2)
                                        for i in range(3000))),
    ] + garbage_common(rng, n)


def bad_key_names(rng):
    """Keys under the prefix that are not <namespace>/<name>/<leaf>, or have bad names."""
    keys = [b"canary/Default/shop/weights", b"canary/default/Shop/weights",
            b"canary/default/shop/Weights", b"canary/default/%s/weights" % (b"a" * 254),
            b"canary/%s/shop/weights" % (b"n" * 64), b"canary//shop/weights",
            b"canary/default//weights", b"canary/default/shop//weights",
            b"canary/default/shop/weights/", b"canary/default/shop/weights/extra",
            b"canary/default/../weights", b"canary/../default/shop/weights",
            b"canary/default/./weights", b"canary/default/sh\xc3\xb6p/weights",
            b"canary/d\xc3\xa9fault/shop/weights", b"canary/default/\xff\xfe/weights",
            b"canary/default/sh op/weights", b"canary/default/shop\x01/weights",
            b"canary/default/shop\x1b[31m/weights", b"canary/default/-shop/weights",
            b"canary/default/shop-/weights", b"canary/default/shop_1/weights",
            b"canary/default/shop`/weights", b"canary/default/shop", b"canary/default",
            b"canary/", b"canary/x", b"canary/default/shop/status/x",
            b"canary/default/shop/route.bak", b"canary/default/shop/weights\xe2\x80\x8b",
            b"canary/\xf0\x9f\x90\xa4/shop/weights", b"canary/default/shop/\x7f"]
    for _ in range(8):    # random leaf names and random bytes in the name
        keys.append(b"canary/default/g-stray-%d/%s" % (rng.randrange(10 ** 6), bytes(
            rng.choice(b"abcXYZ019-_.`~\xff\x01 ") for _ in range(rng.randint(1, 12)))))
    return keys


def log_form(key):
    """How a key shows in the bridge's log read back as text: line breaks and
    tabs folded to spaces, other control bytes shown as '?' (bridge/lib/log.c)."""
    out = bytearray()
    for c in key:
        out += b" " if c in (0x0a, 0x0d, 0x09) else b"?" if c < 0x20 or c == 0x7f else bytes([c])
    return bytes(out).decode("utf-8", "replace")


# =============================================================================================

class SoakCase(unittest.TestCase):
    K = 3             # routes per leaf kind
    n_values = N_VALUES

    def setUp(self):
        self.seed = seed_from_env()
        sys.stderr.write("\n[%s] soak seed %d (replay: CB_SOAK_SEED=%d)\n"
                         % (self.id(), self.seed, self.seed))
        sys.stderr.flush()
        self.rng = random.Random(self.seed)
        self.tmp = tempfile.TemporaryDirectory(prefix="cb-soak-")
        self.addCleanup(self.tmp.cleanup)
        self.kube = KubeAPI(self.tmp.name)
        self.addCleanup(self.kube.stop)
        self.start_source()
        self.port = free_port()
        self.refused = set()               # keys the source refused to store

    def silent(self, key):
        """A stray key the source itself skips without a warning."""
        return False

    def fail(self, msg=None):
        super().fail("[soak seed %d] %s" % (self.seed, msg))

    def key(self, name, leaf):
        return ("canary/%s/%s/%s" % (NS, name, leaf)).encode()

    def ir(self, name):
        return self.kube.get(G, NS, "ingressroutes", name)

    def objects(self):
        return {(o["kind"], o["metadata"]["name"]): o
                for o in self.kube.objects()["objects"] if o.get("kind") in TRAEFIK}

    def wait_weights(self, want, timeout=60):
        def have():
            return {n: weights_of(self.ir(n)) for n in want}
        try:
            wait_until(lambda: have() == want, timeout * SLOW, what="convergence", interval=0.1)
        except AssertionError:
            self.fail("did not converge:\n want %r\n have %r\n--- bridge log tail ---\n%s"
                      % (want, have(), self.bridge.log_tail(40)))

    def run_soak(self):
        rng = self.rng
        leaves = {"route": garbage_route, "weights": garbage_weights, "headers": garbage_headers}
        targets = {}                       # garbage key -> (route, leaf)
        base = {}                          # route -> weights its objects have before the soak
        for leaf in leaves:
            for i in range(self.K):
                name = "g%s-%d" % (leaf, i)
                w = (10 + i, 90 - i)
                self.put(self.key(name, "route"), route_doc(name).encode())
                self.put(self.key(name, "weights"),
                         ("%s-v1=%d, %s-v2=%d" % (name, w[0], name, w[1])).encode())
                base[name] = {name + "-v1": w[0], name + "-v2": w[1]}
                targets[self.key(name, leaf)] = (name, leaf)
        self.put(self.key("calm", "route"), route_doc("calm").encode())
        self.put(self.key("calm", "headers"), headers_doc("calm").encode())
        self.put(self.key("calm", "weights"), b"calm-v1=50, calm-v2=50")
        base["calm"] = {"calm-v1": 50, "calm-v2": 50}

        cfg = bridge_config(kube=self.kube, metrics_port=self.port,
                            reconcile={"policy": "sync", "status": True}, **self.source_config())
        self.bridge = b = Bridge(self.tmp.name, cfg)
        self.addCleanup(b.stop)
        b.wait_log(r"ready: ", timeout=30 * SLOW)
        self.wait_weights(base)
        before = self.objects()

        # ---- the garbage
        strays = bad_key_names(rng)
        gens = {k: leaves[leaf](rng, name.encode()) for k, (name, leaf) in targets.items()}
        stray_gens = garbage_common(rng, b"stray")
        history = {}                       # key -> [(class, first bytes)] for failure reports
        since = b.log_size()
        t0 = time.monotonic()
        counts = {}
        calm_at = self.n_values // 2
        for i in range(self.n_values):
            if i == calm_at:               # a valid edit elsewhere, mid-storm
                self.put(self.key("calm", "weights"), b"calm-v1=30, calm-v2=70")
            if rng.random() < 0.75:
                key = rng.choice(list(targets))
                cls, gen = rng.choice(gens[key])
            else:
                key = rng.choice(strays)
                cls, gen = rng.choice(stray_gens)
            value = gen()
            counts[cls] = counts.get(cls, 0) + 1
            history.setdefault(key, []).append((cls, value[:60]))
            self.put(key, value)
        # Every garbage key got at least one value, and its LAST value is garbage.
        for key in list(targets) + strays:
            if key not in history:
                cls, gen = (rng.choice(gens[key]) if key in targets else rng.choice(stray_gens))
                history[key] = [(cls, b"")]
                self.put(key, gen())
        strays = [k for k in strays if k not in self.refused and not self.silent(k)]
        push_s = time.monotonic() - t0
        sys.stderr.write("[%s] %d values (%s) in %.1f s\n" % (
            self.id(), self.n_values, ", ".join("%s %d" % kv for kv in sorted(counts.items())),
            push_s))

        # ---- it stays up and reports each
        self.assertTrue(b.alive(), "the bridge died during the soak:\n" + b.log_tail())
        self.assertEqual(http_get(self.port, "/healthz")[0], 200)

        def unreported():
            text = b.log_text()[since:]
            out = []
            for key, (name, leaf) in targets.items():
                if not re.search(r"route default/%s: canary/default/%s/%s: " % (name, name, leaf),
                                 text):
                    out.append(key)
            for key in strays:
                if "ignoring key %s: " % log_form(key) not in text:
                    out.append(key)
            return out
        try:
            wait_until(lambda: not unreported(), 60 * SLOW, what="an error line for every key",
                       interval=0.2)
        except AssertionError:
            self.fail("keys that got garbage but were never reported:\n%s\n--- bridge log tail "
                      "---\n%s" % ("\n".join("  %r: last values %r" % (k, history.get(k, [])[-3:])
                                             for k in unreported()), b.log_tail(30)))
        # The status key of every failing route says so, as strict JSON in valid UTF-8 (the
        # message quotes parts of the garbage).
        routes = sorted({n for n, _ in targets.values()})
        self.wait_status(routes, "error")
        # ... and so does the routes gauge ...
        wait_until(lambda: metric(http_get(self.port, "/metrics")[1], "canary_bridge_routes",
                                  {"state": "error"}) == len(routes), 10 * SLOW,
                   what="canary_bridge_routes{state=error} == %d" % len(routes))
        # ... and Kubernetes Events say so on the objects (rate-limited per object).
        events = [o for o in self.kube.objects()["objects"]
                  if o.get("kind") == "Event" and o.get("reason") == "RouteFailed"]
        self.assertTrue({(e.get("involvedObject") or e.get("regarding") or {}).get("name")
                         for e in events} & set(routes), "no RouteFailed event")
        # One warning per stray key, not one per event.
        text = b.log_text()[since:]
        for key in strays:
            n = text.count("ignoring key %s: " % log_form(key))
            self.assertEqual(n, 1, "stray key %r warned %d times" % (key, n))

        # ---- the last good objects stayed; the route edited meanwhile kept working
        self.wait_weights({"calm": {"calm-v1": 30, "calm-v2": 70}})
        after = self.objects()
        for (kind, name), obj in before.items():
            if name.startswith("calm"):
                continue
            self.assertIn((kind, name), after, "%s %s disappeared" % (kind, name))
            rv = after[(kind, name)]["metadata"]["resourceVersion"]
            if rv != obj["metadata"]["resourceVersion"]:
                route = name
                leaf_keys = [k for k, (n, _) in targets.items() if n == route]
                self.fail("%s %s was rewritten by garbage; last values: %r" % (
                    kind, name, {k: history.get(k, [])[-3:] for k in leaf_keys}))
        self.assertTrue(b.alive())

        # ---- valid values: everything converges
        want = {}
        for name in sorted({n for n, _ in targets.values()}):
            w = (rng.randint(1, 99), rng.randint(1, 99))
            self.put(self.key(name, "route"), route_doc(name).encode())
            self.put(self.key(name, "headers"), headers_doc(name, "v%d" % w[0]).encode())
            self.put(self.key(name, "weights"),
                     ("%s-v1=%d, %s-v2=%d" % (name, w[0], name, w[1])).encode())
            want[name] = {name + "-v1": w[0], name + "-v2": w[1]}
        self.wait_weights(want)
        for name in want:
            mw = self.kube.get(G, NS, "middlewares", mw_name(name, "beta"))
            self.assertIsNotNone(mw, "Middleware %s.beta" % name)
        deletes = [r["path"] for r in self.kube.requests() if r["method"] == "DELETE"]
        self.assertEqual(deletes, [])
        self.assertTrue(b.alive(), b.log_tail())
        self.assertRegex(b.log_text()[since:], r"route default/g\w+-\d: recovered")
        self.wait_status(routes, "applied")

    def status(self, name):
        """The route's status document, parsed strictly (bytes must be UTF-8 JSON)."""
        raw = self.get_raw(self.key(name, "status"))
        return None if raw is None else json.loads(raw)

    def wait_status(self, routes, state):
        def wrong():
            out = {}
            for n in routes:
                try:
                    st = self.status(n)
                except ValueError as e:      # UnicodeDecodeError is a ValueError too
                    out[n] = "unparsable: %s: %r" % (e, self.get_raw(self.key(n, "status"))[:300])
                    continue
                if not st or st.get("state") != state:
                    out[n] = st
            return out
        try:
            wait_until(lambda: not wrong(), 30 * SLOW, what="status %s" % state, interval=0.1)
        except AssertionError:
            self.fail("status keys not %r:\n%s" % (state, "\n".join(
                "  %s: %r" % kv for kv in sorted(wrong().items()))))


class EtcdSoak(SoakCase):
    def start_source(self):
        self.etcd = Etcd(self.tmp.name)
        self.addCleanup(self.etcd.stop)

    def source_config(self):
        return {"source": {"type": "etcd", "endpoints": [self.etcd.url]}}

    def put(self, key, value):
        return self.etcd.put(key, value)

    def get_raw(self, key):
        kvs = self.etcd.call("/v3/kv/range", {"key": self.etcd._b64(key)}).get("kvs") or []
        return base64.b64decode(kvs[0].get("value", "")) if kvs else None

    def test_garbage_in_every_key(self):
        self.run_soak()

    def test_a_key_with_a_nul_byte_is_not_another_key(self):
        """etcd keys are bytes: `<prefix>default/shop/weights\\0x` is a different key from
        `.../weights` and is not a valid key name; it must be ignored with a warning and
        must never stand in for the real weights."""
        self.put(self.key("shop", "route"), route_doc("shop").encode())
        self.put(self.key("shop", "weights"), b"shop-v1=50, shop-v2=50")
        self.put(self.key("calm", "route"), route_doc("calm").encode())
        cfg = bridge_config(kube=self.kube, metrics_port=self.port,
                            reconcile={"policy": "sync"}, **self.source_config())
        self.bridge = b = Bridge(self.tmp.name, cfg)
        self.addCleanup(b.stop)
        b.wait_log(r"ready: ", timeout=30 * SLOW)
        self.wait_weights({"shop": {"shop-v1": 50, "shop-v2": 50}})
        since = b.log_size()
        self.put(self.key("shop", "weights") + b"\x00evil", b"shop-v1=1, shop-v2=99")
        self.put(self.key("calm", "weights"), b"calm-v1=2, calm-v2=3")      # a barrier
        self.wait_weights({"calm": {"calm-v1": 2, "calm-v2": 3}})
        self.assertEqual(weights_of(self.ir("shop")), {"shop-v1": 50, "shop-v2": 50})
        b.wait_log(r"ignoring key canary/default/shop/weights", since=since)


class ConsulSoak(SoakCase):
    """The same through Consul (values travel base64 in JSON).  Fewer values: the test server
    rewrites its whole state file on every write."""
    K = 2
    n_values = max(1, N_VALUES // 5)

    def start_source(self):
        self.consul = Consul(self.tmp.name)
        self.addCleanup(self.consul.stop)

    def source_config(self):
        return {"source": {"type": "consul", "address": self.consul.url}}

    def put(self, key, value):
        if len(value) > 512 * 1024:         # Consul's own limit (413): keep it just under
            value = value[:512 * 1024]
        try:
            return self.consul.put(key.decode("utf-8", "replace"), value)
        except ConsulError as e:
            if e.status == 400:             # Consul refuses such a key path outright
                self.refused.add(key)
                return None
            raise

    def get_raw(self, key):
        e = self.consul.entry(key.decode())
        return None if e is None else base64.b64decode(e["Value"] or "")

    def silent(self, key):
        return key.endswith(b"/")           # a Consul (UI) folder: structure, skipped

    def test_garbage_in_every_key(self):
        self.run_soak()


if __name__ == "__main__":
    unittest.main()
