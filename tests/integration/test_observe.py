"""Watching it run: log.format json, the process_* metrics and the per-route state
series on /metrics, and the status page at / loaded in a real headless browser
(Debian's chromium), its DOM and its screenshot inspected; with traefik.api, the page's
Served column."""
import html.parser
import http.server
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
from cbtest import Bridge, Etcd, KubeAPI, bridge_config, free_port, wait_until  # noqa: E402

G = "traefik.io"


def route_yaml(name):
    return ("match: Host(`%s.example.com`)\nservices:\n"
            "  - {name: %s-v1, port: 80}\n  - {name: %s-v2, port: 80}\n" % (name, name, name))


def http_get(port, path, method="GET"):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def series(text, name):
    """{frozenset(labels.items()): value} of every sample of `name`."""
    out = {}
    for line in text.splitlines():
        m = re.match(r'^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$', line)
        if m and m.group(1) == name:
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            out[frozenset(labels.items())] = float(m.group(3))
    return out


def value(text, name):
    s = series(text, name)
    return s.get(frozenset()) if s else None


def route_states(port):
    """{"ns/name": state} from canary_bridge_route_state; fails on two series of one route."""
    got = {}
    for labels, v in series(http_get(port, "/metrics")[2], "canary_bridge_route_state").items():
        d = dict(labels)
        rid = "%s/%s" % (d["namespace"], d["route"])
        assert v == 1, (rid, v)
        assert rid not in got, "two state series for %s: %s and %s" % (rid, got[rid], d["state"])
        got[rid] = d["state"]
    return got


class ObserveCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="cb-observe-")
        self.addCleanup(self.tmp.cleanup)
        self.etcd = Etcd(self.tmp.name)
        self.addCleanup(self.etcd.stop)
        self.kube = KubeAPI(self.tmp.name)
        self.addCleanup(self.kube.stop)
        self.port = free_port()

    def bridge(self, **overrides):
        b = Bridge(self.tmp.name, bridge_config(etcd=self.etcd, kube=self.kube,
                                                metrics_port=self.port, **overrides))
        self.addCleanup(b.stop)
        wait_until(lambda: http_get(self.port, "/healthz")[0] == 200, what="the HTTP server")
        return b

    def put_route(self, name, weights, ns="default"):
        self.etcd.put("canary/%s/%s/route" % (ns, name), route_yaml(name))
        self.etcd.put("canary/%s/%s/weights" % (ns, name), weights)


class JsonLogs(ObserveCase):
    def test_every_line_is_one_json_object_with_fields(self):
        self.put_route("shop", "shop-v1=90, shop-v2=10")
        bad_rev = self.etcd.put("canary/default/bad/weights", "bad-v1=abc")
        # A hostile key: quotes, a newline that would forge a line, a byte that is no UTF-8.
        self.etcd.put(b"canary/default/x\"y\n{\"forged\":1}\xff/typo", "1")
        b = self.bridge(log={"level": "debug", "format": "json"})
        wait_until(lambda: self.kube.get(G, "default", "ingressroutes", "shop"), what="shop")
        b.wait_log(r'"route":"default/shop","revision":\d+\}')
        b.wait_log(r'"route":"default/bad","revision":\d+\}')
        lines = [l for l in b.log_text().split("\n") if l]
        self.assertGreater(len(lines), 5)
        objs = []
        for l in lines:
            o = json.loads(l)  # every line, whole
            self.assertIsInstance(o, dict, l)
            self.assertRegex(o["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
            self.assertIn(o["level"], ("error", "warn", "info", "debug"))
            self.assertIsInstance(o["message"], str)
            objs.append(o)
        written = [o for o in objs if o.get("route") == "default/shop" and "created" in o["message"]]
        self.assertEqual(len(written), 1, lines)
        w = written[0]
        self.assertEqual(w["level"], "info")
        self.assertIsInstance(w["revision"], int)
        self.assertIn("source revision %d" % w["revision"], w["message"])
        failed = [o for o in objs if o.get("route") == "default/bad"]
        self.assertEqual(len(failed), 1, lines)
        self.assertEqual(failed[0]["level"], "error")
        self.assertEqual(failed[0]["revision"], bad_rev)
        self.assertIn("got abc", failed[0]["message"])
        ignored = [o for o in objs if "key" in o]
        self.assertEqual(len(ignored), 1, lines)
        self.assertEqual(ignored[0]["level"], "warn")
        self.assertEqual(ignored[0]["key"], "canary/default/x\"y\n{\"forged\":1}\ufffd/typo")
        self.assertTrue(ignored[0]["message"].startswith("ignoring key canary/default/x\"y\n"))
        self.assertFalse(any("forged" in o for o in objs))
        # Lines about no route carry no route field.
        self.assertTrue(any(o["message"].startswith("source: ") and "route" not in o
                            for o in objs))

    def test_text_stays_the_default_and_a_reload_switches(self):
        self.put_route("shop", "shop-v1=90, shop-v2=10")
        b = self.bridge()
        b.wait_log(r"route default/shop: IngressRoute shop created")
        for l in b.log_text().splitlines():
            self.assertRegex(l, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (error|warn |info |debug) ")
        mark = b.log_size()
        b.write_config(bridge_config(etcd=self.etcd, kube=self.kube, metrics_port=self.port,
                                     log={"level": "debug", "format": "json"}))
        b.signal(signal.SIGHUP)
        b.wait_log(r'\{"time":"[^"]+","level":"info","message":"ready: 1 routes', since=mark)
        self.etcd.put("canary/default/shop/weights", "shop-v1=80, shop-v2=20")
        m = b.wait_log(r'\{[^\n]*"route":"default/shop","revision":\d+\}\n', since=mark)
        self.assertIn("IngressRoute shop written", json.loads(m.group(0))["message"])


class ProcessAndRouteMetrics(ObserveCase):
    def test_process_metrics(self):
        t0 = time.time()
        b = self.bridge()

        def stat():
            with open("/proc/%d/stat" % b.proc.pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks = os.sysconf("SC_CLK_TCK")
            return (int(fields[21]) * os.sysconf("SC_PAGESIZE"), int(fields[20]),  # rss, vsize
                    (int(fields[11]) + int(fields[12])) / ticks)  # utime + stime

        before = stat()
        status, headers, text = http_get(self.port, "/metrics")
        after = stat()
        self.assertEqual(status, 200)
        for name, kind in (("process_cpu_seconds_total", "counter"),
                           ("process_resident_memory_bytes", "gauge"),
                           ("process_virtual_memory_bytes", "gauge"),
                           ("process_start_time_seconds", "gauge"),
                           ("process_open_fds", "gauge"), ("process_max_fds", "gauge")):
            self.assertIn("# TYPE %s %s\n" % (name, kind), text)
        # Memory as the kernel says just before and after the scrape (a little slack: the
        # bridge allocates while it answers).
        for i, name in enumerate(("process_resident_memory_bytes",
                                  "process_virtual_memory_bytes")):
            lo, hi = min(before[i], after[i]), max(before[i], after[i])
            self.assertGreaterEqual(value(text, name), lo - (1 << 20), name)
            self.assertLessEqual(value(text, name), hi + (1 << 20), name)
        cpu = value(text, "process_cpu_seconds_total")
        self.assertGreaterEqual(cpu, before[2])
        self.assertLessEqual(cpu, after[2])
        # Started by this test (boot time is whole seconds: a second of slack).
        self.assertGreaterEqual(value(text, "process_start_time_seconds"), t0 - 1.5)
        self.assertLessEqual(value(text, "process_start_time_seconds"), time.time())
        fds = len(os.listdir("/proc/%d/fd" % b.proc.pid))
        self.assertLess(abs(value(text, "process_open_fds") - fds), 4)
        with open("/proc/%d/limits" % b.proc.pid) as f:
            soft = re.search(r"^Max open files\s+(\d+)", f.read(), re.M).group(1)
        self.assertEqual(value(text, "process_max_fds"), int(soft))
        # CPU time only grows.
        for _ in range(20):
            http_get(self.port, "/metrics")
        self.assertGreaterEqual(value(http_get(self.port, "/metrics")[2],
                                      "process_cpu_seconds_total"), cpu)

    def test_one_state_series_per_route_following_it(self):
        self.put_route("shop", "shop-v1=90, shop-v2=10")
        self.put_route("cart", "cart-v1=abc")
        self.etcd.put("canary/default/typo/weight", "x=1")  # only a mistyped key
        self.bridge()
        want = {"default/shop": "applied", "default/cart": "error", "default/typo": "error"}
        wait_until(lambda: route_states(self.port) == want, what="states %s" % want)
        # Fixed: the series moves to applied, the error one is gone.
        self.etcd.put("canary/default/cart/weights", "cart-v1=50, cart-v2=50")
        want["default/cart"] = "applied"
        wait_until(lambda: route_states(self.port) == want, what="cart applied")
        # Gone: so is its series.
        self.etcd.delete("canary/default/cart/route")
        self.etcd.delete("canary/default/cart/weights")
        self.etcd.delete("canary/default/typo/weight")
        del want["default/cart"], want["default/typo"]
        wait_until(lambda: route_states(self.port) == want, what="cart and typo gone")
        text = http_get(self.port, "/metrics")[2]
        self.assertNotIn('route="cart"', "\n".join(l for l in text.splitlines()
                                                   if l.startswith("canary_bridge_route_state")))

    def test_held_deletions_show_as_held(self):
        self.put_route("shop", "shop-v1=90, shop-v2=10")
        self.put_route("cart", "cart-v1=50, cart-v2=50")
        b = self.bridge(reconcile={"policy": "sync"})
        want = {"default/shop": "applied", "default/cart": "applied"}
        wait_until(lambda: route_states(self.port) == want, what="both applied")
        # Every key at once (one transaction): the guard holds both deletions.
        self.etcd.call("/v3/kv/deleterange", {"key": self.etcd._b64("canary/"),
                                              "range_end": self.etcd._b64("canary0")})
        b.wait_log(r"deletion guard: ")
        want = {"default/shop": "held", "default/cart": "held"}
        wait_until(lambda: route_states(self.port) == want, what="both held")
        page = http_get(self.port, "/")[2]
        self.assertIn('<tr data-route="default/shop" data-state="held">', page)
        self.assertIn('<p class="notice">deletion held', page)
        self.assertIsNotNone(self.kube.get(G, "default", "ingressroutes", "shop"))


# ---- the status page in a real browser ----

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# Bar colours of the first two services of a route (bridge/app_page.c).
FIRST = (0x2b, 0x6c, 0xb0)
SECOND = (0xdd, 0x6b, 0x20)
ERROR_BADGE = (0xc5, 0x30, 0x30)


def png_pixels(path):
    """(width, height, rows) of an 8-bit RGB or RGBA PNG, rows as lists of (r, g, b)."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, hdr = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
        pos += 12 + n
    width, height, depth, ctype, _, _, interlace = hdr
    assert depth == 8 and ctype in (2, 6) and interlace == 0, hdr
    bpp = 4 if ctype == 6 else 3
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        off = y * (stride + 1)
        ftype, line = raw[off], bytearray(raw[off + 1:off + 1 + stride])
        if ftype == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xff
        elif ftype == 2:
            for i in range(stride):
                line[i] = (line[i] + prev[i]) & 0xff
        elif ftype == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xff
        elif ftype == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xff
        rows.append([tuple(line[x * bpp:x * bpp + 3]) for x in range(width)])
        prev = line
    return width, height, rows


class Dom(html.parser.HTMLParser):
    """The page's rows: {route: {"state", "services": {name: weight}, "error", "tags",
    "served", "served_tags"}} plus every start tag seen (to find injected elements), the
    title and the column headers."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.rows, self.tags, self.title, self.headers = {}, [], "", []
        self.row = None
        self.cell = ""  # the class of the row's cell we are in
        self.in_title = self.in_th = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "title":
            self.in_title = True
        if tag == "th":
            self.in_th = True
            self.headers.append("")
        if tag == "tr" and "data-route" in a:
            self.row = {"state": a["data-state"], "services": {}, "error": "", "tags": [],
                        "served": None, "served_tags": []}
            self.rows[a["data-route"]] = self.row
            self.cell = ""
        elif self.row is not None:
            if tag == "td":
                self.cell = (a.get("class") or "").split(" ")[0]
                if self.cell == "served":
                    self.row["served"] = ""
            elif self.cell == "err":
                self.row["tags"].append(tag)  # anything inside the error cell
            elif self.cell == "served":
                self.row["served_tags"].append(tag)
            if "data-service" in a:
                self.row["services"][a["data-service"]] = float(a["data-weight"])

    def handle_endtag(self, tag):
        if tag == "title":
            self.in_title = False
        if tag == "th":
            self.in_th = False
        if tag == "tr":
            self.row = None

    def handle_data(self, data):
        if self.in_title:
            self.title += data
        if self.in_th:
            self.headers[-1] += data
        if self.row is not None and self.cell == "err":
            self.row["error"] += data
        if self.row is not None and self.cell == "served":
            self.row["served"] += data


@unittest.skipUnless(CHROMIUM, "chromium is not installed (apt-get install chromium; "
                     "tests/setup.sh installs it)")
class StatusPage(ObserveCase):
    HOSTILE = "<b>&amp;<i>pwn</i></b>"

    def chromium(self, *args):
        profile = tempfile.mkdtemp(prefix="chromium-", dir=self.tmp.name)
        argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--hide-scrollbars", "--force-device-scale-factor=1",
                "--user-data-dir=" + profile] + list(args)
        p = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                           stdin=subprocess.DEVNULL)
        self.assertEqual(p.returncode, 0, p.stderr[-2000:])
        return p.stdout

    def test_page_in_a_browser(self):
        self.put_route("shop", "shop-v1=75, shop-v2=25")
        self.put_route("cart", "cart-v1=40, cart-v2=60")
        self.put_route("bad", "bad-v1=abc")
        self.put_route("evil", json.dumps({self.HOSTILE: 5}))
        self.bridge()
        want = {"default/shop": "applied", "default/cart": "applied", "default/bad": "error",
                "default/evil": "error"}
        wait_until(lambda: route_states(self.port) == want, what="states %s" % want)
        url = "http://127.0.0.1:%d/" % self.port

        status, headers, body = http_get(self.port, "/")
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"], "text/html; charset=utf-8")
        self.assertIn("default-src 'none'", headers["Content-Security-Policy"])
        self.assertIn('<meta http-equiv="refresh" content="5">', body)
        self.assertNotIn(self.HOSTILE, body)  # only ever escaped
        self.assertNotRegex(body, r"(?i)<script|https?://|src=")  # no script, no external asset
        self.assertEqual(http_get(self.port, "/", "HEAD")[0], 200)

        dom = Dom()
        dom.feed(self.chromium("--dump-dom", url))
        self.assertEqual(set(dom.rows), set(want))
        for rid, state in want.items():
            self.assertEqual(dom.rows[rid]["state"], state, rid)
        self.assertEqual(dom.rows["default/shop"]["services"], {"shop-v1": 75, "shop-v2": 25})
        self.assertEqual(dom.rows["default/cart"]["services"], {"cart-v1": 40, "cart-v2": 60})
        self.assertEqual(dom.rows["default/bad"]["services"], {})
        self.assertIn("weight for 'bad-v1' must be a non-negative integer, got abc",
                      dom.rows["default/bad"]["error"])
        self.assertEqual(dom.rows["default/shop"]["error"].strip(), "")
        # The hostile service name shows as the text it is: no element came of it.
        self.assertIn(self.HOSTILE, dom.rows["default/evil"]["error"])
        self.assertEqual(dom.rows["default/evil"]["tags"], [])
        self.assertNotIn("i", [t for t, _ in dom.tags])
        # Problems first, then by name.
        order = [rid for rid in dom.rows]
        self.assertEqual(order, ["default/bad", "default/evil", "default/cart", "default/shop"])
        self.assertRegex(dom.title, r"^4 routes, 2 with problems")
        self.assertEqual(dom.headers, ["Route", "State", "Weights in force", "Last change",
                                       "Error"])  # no Served column without traefik.api

        png = os.path.join(self.tmp.name, "page.png")
        self.chromium("--screenshot=" + png, "--window-size=1100,560", url)
        width, height, rows = png_pixels(png)
        self.assertEqual((width, height), (1100, 560))
        # Each bar is a band of rows holding both colours; across it their widths are in
        # the proportion of the weights. Legend swatches are a few pixels: not a bar.
        bars = []
        for y, row in enumerate(rows):
            a, b = row.count(FIRST), row.count(SECOND)
            if a + b > 100:
                share = a / (a + b)
                if bars and bars[-1]["end"] == y - 1 and abs(bars[-1]["share"] - share) < 0.01:
                    bars[-1]["end"] = y
                else:
                    bars.append({"start": y, "end": y, "share": share, "width": a + b})
        self.assertEqual(len(bars), 2, bars)
        cart, shop = bars  # cart's row comes first
        self.assertAlmostEqual(cart["share"], 0.40, delta=0.01)
        self.assertAlmostEqual(shop["share"], 0.75, delta=0.01)
        for bar in bars:
            self.assertGreaterEqual(bar["end"] - bar["start"] + 1, 10)  # a bar, not a line
            self.assertGreater(bar["width"], 250)
        self.assertLess(cart["end"], shop["start"])
        # The failing routes' error badges are there, above the bars.
        badge_rows = [y for y, row in enumerate(rows) if row.count(ERROR_BADGE) > 20]
        self.assertTrue(badge_rows)
        self.assertLess(max(badge_rows), cart["start"])

    def test_served_column_with_traefik_api(self):
        """shop is served by the (fake) Traefik instance with its weights: live; cart's
        weighted service also has a child the route does not name, whose name is markup:
        stale once traefik.api.timeout passes, the reason shown as text."""
        fake = FakeTraefikServices({
            "shop": [("default-shop-v1-80", 75), ("default-shop-v2-80", 25)],
            "cart": [("default-cart-v1-80", 40), ("default-cart-v2-80", 60),
                     (self.HOSTILE, 1)]})
        self.addCleanup(fake.stop)
        self.put_route("shop", "shop-v1=75, shop-v2=25")
        self.put_route("cart", "cart-v1=40, cart-v2=60")
        self.bridge(traefik={"api": {"urls": [fake.url], "interval": "50ms", "timeout": "1s"}})
        url = "http://127.0.0.1:%d/" % self.port

        def served():
            body = http_get(self.port, "/")[2]
            return re.findall(r'data-served="(\w+)"', body)
        wait_until(lambda: sorted(served()) == ["live", "stale"], what="shop live, cart stale")
        body = http_get(self.port, "/")[2]
        self.assertNotIn(self.HOSTILE, body)  # only ever escaped

        dom = Dom()
        dom.feed(self.chromium("--dump-dom", url))
        self.assertEqual(dom.headers, ["Route", "State", "Weights in force", "Served",
                                       "Last change", "Error"])
        self.assertEqual(dom.rows["default/shop"]["served"], "live")
        self.assertEqual(dom.rows["default/cart"]["served"],
                         "stale: %s still serves %s" % (fake.url, self.HOSTILE))
        self.assertEqual(dom.rows["default/cart"]["served_tags"], [])
        self.assertNotIn("i", [t for t, _ in dom.tags])


class FakeTraefikServices:
    """A Traefik API stand-in: /api/http/services?search=default-<route> answers route's
    weighted service with the given (child, weight) pairs, as Traefik v3.6 names them."""

    def __init__(self, routes):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                search = (q.get("search") or [""])[0]
                items = [{"name": "default-%s-0123456789abcdef0123@kubernetescrd" % name,
                          "provider": "kubernetescrd", "type": "weighted",
                          "status": "enabled",
                          "weighted": {"services": [{"name": c, "weight": w}
                                                    for c, w in children]}}
                         for name, children in routes.items()]
                body = json.dumps([i for i in items if search in i["name"]]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


if __name__ == "__main__":
    unittest.main()
