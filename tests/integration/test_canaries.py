"""End to end on real etcd and the Kubernetes API test server: header and cookie
canaries, header Middlewares, sticky sessions, pruning, ownership and the safety
rules.

Ordering claims (create-before-reference, delete-after-dereference) are proven from
the API test server's request log: `seq` is the order in which requests arrived."""
import os
import re
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
from cbtest import Bridge, Etcd, KubeAPI, bridge_config, wait_until, mw_name  # noqa: E402

import yaml  # noqa: E402

G = "traefik.io"
MATCH = "Host(`shop.example.com`) && PathPrefix(`/`)"
ROUTE = """match: Host(`shop.example.com`) && PathPrefix(`/`)
entryPoints: [websecure]
services:
  - name: shop-v1
    port: 80
  - name: shop-v2
    port: 80
"""
ROUTE3 = ROUTE + """  - name: shop-v3
    port: 8080
"""
STICKY = "sticky: {cookie: canary_sticky, secure: true, httpOnly: true, sameSite: lax}\n"
ROUTE_STICKY = ROUTE + STICKY

# A header rule (exact value), a regex header rule and a cookie rule.
RULES3 = r"""
- name: beta
  header: X-Canary
  value: always
  service: shop-v2
- name: version
  header: X-Version
  regex: '^2\.[0-9]+$'
  service: shop-v3
- name: tester
  cookie: canary
  value: "true"
  service: shop-v2
"""
# A rule that sets headers (-> Middleware shop.beta) and a cookie rule that does not.
RULES_MW = """
- name: beta
  header: X-Canary
  value: always
  service: shop-v2
  setRequestHeaders: {X-Canary-Route: beta}
  setResponseHeaders: {X-Served-By: canary}
- name: tester
  cookie: canary
  value: "true"
  service: shop-v2
"""
RULES_COOKIE_ONLY = """
- name: tester
  cookie: canary
  value: "true"
  service: shop-v2
"""
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def weights_of(route):
    return {s["name"]: s.get("weight") for s in route["services"]}


def mw_refs(route):
    return [m["name"] for m in route.get("middlewares") or []]


class Req:
    """One request the bridge made, from the API server's request log."""

    def __init__(self, entry):
        self.seq, self.method, self.status = entry["seq"], entry["method"], entry["status"]
        self.path, self.body, self.query = entry["path"], entry["body"], entry["query"]
        parts = self.path.split("/")
        # /apis/<group>/<version>/namespaces/<ns>/<plural>[/<name>]
        if len(parts) >= 7 and parts[4] == "namespaces":
            self.ns, self.plural = parts[5], parts[6]
            self.name = parts[7] if len(parts) > 7 else \
                ((self.body or {}).get("metadata") or {}).get("name")
        else:
            self.ns = self.plural = self.name = None

    def __repr__(self):
        return "#%d %s %s/%s %s" % (self.seq, self.method, self.plural, self.name, self.status)

    def references(self, mw=None, ts=None):
        """A write of an IngressRoute whose body references Middleware mw / TraefikService ts."""
        if self.plural != "ingressroutes" or self.method not in ("POST", "PUT") or not self.body:
            return False
        for route in self.body["spec"]["routes"]:
            if mw and mw in mw_refs(route):
                return True
            if ts and any(s.get("kind") == "TraefikService" and s["name"] == ts
                          for s in route["services"]):
                return True
        return False


def delete_prefix(etcd, prefix):
    """Delete every key under prefix in one etcd transaction (etcdctl del --prefix)."""
    end = bytearray(prefix.encode())
    end[-1] += 1
    r = etcd.call("/v3/kv/deleterange", {"key": etcd._b64(prefix), "range_end": etcd._b64(bytes(end))})
    return int(r.get("deleted", 0))


class CanaryCase(unittest.TestCase):
    """Fresh etcd + API server per test; the bridge is started by the test."""

    config_overrides = {}
    kube_groups = None
    group = G

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="cb-canary-")
        self.addCleanup(self.tmp.cleanup)
        self.etcd = Etcd(self.tmp.name)
        self.addCleanup(self.etcd.stop)
        self.kube = KubeAPI(self.tmp.name, groups=self.kube_groups)
        self.addCleanup(self.kube.stop)
        self.bridge = None

    def config(self, **overrides):
        return bridge_config(etcd=self.etcd, kube=self.kube,
                             **{**self.config_overrides, **overrides})

    def start_bridge(self, name="bridge", **overrides):
        b = Bridge(self.tmp.name, self.config(**overrides), name=name)
        self.addCleanup(b.stop)
        b.wait_log(r"ready: ", timeout=20)
        self.bridge = b
        return b

    def put(self, leaf, value, route="shop", ns="default"):
        return self.etcd.put("canary/%s/%s/%s" % (ns, route, leaf), value)

    # ---- objects
    def get(self, plural, name="shop", ns="default"):
        return self.kube.get(self.group, ns, plural, name)

    def ir(self, name="shop", ns="default"):
        return self.get("ingressroutes", name, ns)

    def mw(self, name, ns="default"):
        return self.get("middlewares", name, ns)

    def ts(self, name="shop", ns="default"):
        return self.get("traefikservices", name, ns)

    def rv(self, plural, name, ns="default"):
        obj = self.get(plural, name, ns)
        return obj and obj["metadata"]["resourceVersion"]

    def wait_obj(self, plural, name="shop", ns="default", pred=lambda o: True, what=None,
                 timeout=10):
        def check():
            obj = self.get(plural, name, ns)
            return obj if obj is not None and pred(obj) else None
        return wait_until(check, timeout, what=what or "%s %s/%s" % (plural, ns, name))

    def wait_gone(self, plural, name="shop", ns="default", timeout=10):
        wait_until(lambda: self.get(plural, name, ns) is None, timeout,
                   what="%s %s/%s deleted" % (plural, ns, name))

    def wait_routes(self, pred, name="shop", ns="default", what="IngressRoute routes",
                    timeout=10):
        return self.wait_obj("ingressroutes", name, ns, lambda o: pred(o["spec"]["routes"]),
                             what=what, timeout=timeout)

    # ---- the request log
    def reqs(self, since=0):
        """The bridge's own requests on Traefik objects (the test's, and the
        bridge's Events and Lease requests, are left out), as Req."""
        return [Req(e) for e in self.kube.requests(since=since)
                if (e.get("user_agent") or "").startswith("canary-bridge")
                and "/apis/traefik." in e["path"]]

    def writes(self, since=0):
        return [r for r in self.reqs(since) if r.method in WRITE_METHODS]

    def mark(self):
        log = self.kube.requests()
        return log[-1]["seq"] if log else 0

    def one(self, reqs, method, plural, name):
        hits = [r for r in reqs if r.method == method and r.plural == plural and r.name == name]
        self.assertTrue(hits, "no %s %s/%s in %r" % (method, plural, name, reqs))
        return hits[0]

    def assert_no_client_errors(self, since=0, allowed=()):
        bad = [r for r in self.reqs(since) if r.status is not None and r.status >= 400
               and (r.method, r.status) not in allowed]
        self.assertEqual(bad, [], "unexpected 4xx/5xx answers to the bridge")


# --------------------------------------------------------------------------------------------
# 1, 2: header, regex and cookie rules become routes

class HeaderRules(CanaryCase):
    def test_header_regex_and_cookie_rules_become_prioritised_routes(self):
        self.put("route", ROUTE3)
        self.put("weights", "shop-v1=90, shop-v2=10, shop-v3=0")
        self.put("headers", RULES3)
        self.start_bridge()
        routes = self.wait_routes(lambda rs: len(rs) == 4, what="4 routes")["spec"]["routes"]
        beta, version, tester, weighted = routes
        self.assertEqual(beta["match"], "(%s) && Header(`X-Canary`, `always`)" % MATCH)
        self.assertEqual(version["match"], r"(%s) && HeaderRegexp(`X-Version`, `^2\.[0-9]+$`)"
                         % MATCH)
        m = re.fullmatch(r"\((.*)\) && HeaderRegexp\(`Cookie`, `(.*)`\)", tester["match"])
        self.assertIsNotNone(m, tester["match"])
        self.assertEqual(m.group(1), MATCH)
        cookie_re = re.compile(m.group(2))
        for header in ("canary=true", "a=1; canary=true", "canary=true; b=2", "a=1;canary=true",
                       "a=1;  canary=true;b=2"):
            self.assertTrue(cookie_re.search(header), "should match Cookie: %s" % header)
        for header in ("xcanary=true", "canary=truex", "canary=false", "canary=", "a=canary=true",
                       "canary=tru", "my-canary=true; b=1", "b=1; canary=trueish"):
            self.assertFalse(cookie_re.search(header), "should not match Cookie: %s" % header)
        self.assertEqual(weighted["match"], MATCH)
        # Explicit priorities: earlier rules first, every rule above the weighted route,
        # which carries Traefik's default (the rule length) explicitly.
        prios = [r.get("priority") for r in routes]
        self.assertTrue(all(isinstance(p, int) for p in prios), prios)
        self.assertEqual(prios[3], len(MATCH))
        self.assertGreater(prios[0], prios[1])
        self.assertGreater(prios[1], prios[2])
        self.assertGreater(prios[2], prios[3])
        # Each rule route goes to its one service only; the weighted route to all.
        self.assertEqual(beta["services"], [{"name": "shop-v2", "port": 80, "weight": 1}])
        self.assertEqual(version["services"], [{"name": "shop-v3", "port": 8080, "weight": 1}])
        self.assertEqual(tester["services"], [{"name": "shop-v2", "port": 80, "weight": 1}])
        self.assertEqual(weights_of(weighted), {"shop-v1": 90, "shop-v2": 10, "shop-v3": 0})
        for r in routes:
            self.assertEqual(r["kind"], "Rule")
            self.assertNotIn("middlewares", r)   # no rule sets headers: no Middleware
        self.assertEqual(self.kube.list(G, "default", "middlewares")["items"], [])
        self.assert_no_client_errors()

    def test_rules_added_later_land_and_priorities_follow_rule_order(self):
        self.put("route", ROUTE3)
        self.start_bridge()
        self.wait_routes(lambda rs: len(rs) == 1, what="weighted route only")
        self.put("headers", RULES3)
        self.wait_routes(lambda rs: len(rs) == 4, what="rules added")
        # Reorder: the cookie rule first now has the highest priority.
        doc = yaml.safe_load(RULES3)
        self.put("headers", yaml.safe_dump([doc[2], doc[0], doc[1]]))
        routes = self.wait_routes(lambda rs: "Cookie" in rs[0]["match"],
                                  what="cookie rule first")["spec"]["routes"]
        prios = [r["priority"] for r in routes]
        self.assertEqual(prios, sorted(prios, reverse=True))
        self.assertEqual(len(set(prios)), 4)


class HeaderRulesV2(CanaryCase):
    """rule_syntax v2 on an API server that serves only traefik.containo.us (Traefik v2
    before 2.10): the group is auto-detected and the v2.11 CRD schemas accept the objects."""
    kube_groups = ["traefik.containo.us"]
    group = "traefik.containo.us"
    config_overrides = {"traefik": {"api_group": "auto", "rule_syntax": "v2"}}

    def test_v2_syntax_headers_and_headersregexp_pass_crd_validation(self):
        self.put("route", ROUTE3 + "sticky: {cookie: cb, secure: true, httpOnly: true, "
                          "sameSite: strict, maxAge: 3600}\n")
        self.put("weights", "shop-v1=90, shop-v2=10, shop-v3=0")
        self.put("headers", RULES3.replace("service: shop-v2\n", "service: shop-v2\n"
                                           "  setRequestHeaders: {X-Canary-Route: beta}\n", 1))
        self.start_bridge()
        self.bridge.wait_log(r"traefik.api_group auto: using traefik.containo.us/v1alpha1")
        obj = self.wait_routes(lambda rs: len(rs) == 4, what="4 routes")
        self.assertEqual(obj["apiVersion"], "traefik.containo.us/v1alpha1")
        beta, version, tester, weighted = obj["spec"]["routes"]
        self.assertEqual(beta["match"], "(%s) && Headers(`X-Canary`, `always`)" % MATCH)
        self.assertEqual(version["match"], r"(%s) && HeadersRegexp(`X-Version`, `^2\.[0-9]+$`)"
                         % MATCH)
        self.assertTrue(tester["match"].startswith("(%s) && HeadersRegexp(`Cookie`, `" % MATCH),
                        tester["match"])
        self.assertNotIn("Header(", "".join(r["match"] for r in obj["spec"]["routes"]))
        self.assertNotIn("HeaderRegexp(", "".join(r["match"] for r in obj["spec"]["routes"]))
        self.assertGreater(beta["priority"], version["priority"])
        self.assertGreater(version["priority"], tester["priority"])
        self.assertGreater(tester["priority"], weighted["priority"])
        self.assertEqual(mw_refs(beta), [mw_name("shop", "beta")])
        mw = self.mw(mw_name("shop", "beta"))
        self.assertEqual(mw["apiVersion"], "traefik.containo.us/v1alpha1")
        self.assertEqual(mw["spec"]["headers"]["customRequestHeaders"], {"X-Canary-Route": "beta"})
        self.assertEqual(weighted["services"], [{"name": "shop", "kind": "TraefikService"}])
        ts = self.ts()
        self.assertEqual(ts["apiVersion"], "traefik.containo.us/v1alpha1")
        # v2's CRD has no maxAge: it is left out rather than pruned by the server.
        self.assertEqual(ts["spec"]["weighted"]["sticky"]["cookie"],
                         {"name": "cb", "secure": True, "httpOnly": True, "sameSite": "strict"})
        # Every write was accepted by the v2 CRD schemas: 201/200, never 422.
        w = self.writes()
        self.assertTrue(w)
        self.assertEqual([r.status for r in w if r.status not in (200, 201)], [], w)
        self.assertTrue(all("/apis/traefik.containo.us/" in r.path for r in w), w)
        self.assertEqual(self.kube.get(G, "default", "ingressroutes", "shop"), None)


# --------------------------------------------------------------------------------------------
# 3, 4: header Middlewares: created before reference, deleted after dereference

class HeaderMiddlewares(CanaryCase):
    def test_middleware_is_created_before_the_ingressroute_references_it(self):
        self.put("route", ROUTE)
        self.start_bridge()
        self.wait_routes(lambda rs: len(rs) == 1, what="weighted route")
        mark = self.mark()
        self.put("headers", RULES_MW)
        self.wait_routes(lambda rs: len(rs) == 3 and mw_refs(rs[0]) == [mw_name("shop", "beta")],
                         what="rule route referencing shop.beta")
        mw = self.mw(mw_name("shop", "beta"))
        self.assertEqual(mw["kind"], "Middleware")
        self.assertEqual(mw["spec"]["headers"], {
            "customRequestHeaders": {"X-Canary-Route": "beta"},
            "customResponseHeaders": {"X-Served-By": "canary"}})
        meta = mw["metadata"]
        self.assertEqual(meta["labels"]["app.kubernetes.io/managed-by"], "canary-bridge")
        self.assertEqual(meta["labels"]["canary-bridge.io/route"], "shop")
        self.assertEqual(meta["annotations"]["canary-bridge.io/source-prefix"], "canary/")
        routes = self.ir()["spec"]["routes"]
        self.assertEqual(mw_refs(routes[1]), [])   # the cookie rule sets no headers
        self.assertEqual(mw_refs(routes[2]), [])   # nor does the weighted route
        w = self.writes(mark)
        post = self.one(w, "POST", "middlewares", mw_name("shop", "beta"))
        ref = [r for r in w if r.references(mw=mw_name("shop", "beta"))][0]
        self.assertEqual(post.status, 201)
        self.assertLess(post.seq, ref.seq, w)
        self.assertEqual(ref.status, 200)

        # A second rule with headers, added while the IngressRoute exists: its
        # Middleware is created before the PUT that first references it.
        mark = self.mark()
        doc = yaml.safe_load(RULES_MW)
        doc.append({"name": "gamma", "header": "X-Gamma", "value": "1", "service": "shop-v1",
                    "setResponseHeaders": {"X-Gamma": "yes"}})
        self.put("headers", yaml.safe_dump(doc))
        self.wait_routes(lambda rs: len(rs) == 4 and mw_refs(rs[2]) == [mw_name("shop", "gamma")],
                         what="gamma route")
        w = self.writes(mark)
        post = self.one(w, "POST", "middlewares", mw_name("shop", "gamma"))
        ref = [r for r in w if r.references(mw=mw_name("shop", "gamma"))][0]
        self.assertLess(post.seq, ref.seq, w)
        self.assertEqual(self.mw(mw_name("shop", "gamma"))["spec"]["headers"],
                         {"customResponseHeaders": {"X-Gamma": "yes"}})
        # shop-beta was already right: not written again.
        self.assertEqual([r for r in w if r.name == mw_name("shop", "beta")], [])

        # A changed header value: the Middleware is updated; the IngressRoute
        # needs no write for it.
        mark = self.mark()
        doc[0]["setRequestHeaders"] = {"X-Canary-Route": "beta-2"}
        self.put("headers", yaml.safe_dump(doc))
        self.wait_obj("middlewares", mw_name("shop", "beta"), pred=lambda o: o["spec"]["headers"]
                      ["customRequestHeaders"] == {"X-Canary-Route": "beta-2"})
        self.bridge.wait_log(r"Middleware %s written" % re.escape(mw_name("shop", "beta")))
        self.assertEqual([(r.method, r.plural, r.name) for r in self.writes(mark)],
                         [("PUT", "middlewares", mw_name("shop", "beta"))])
        self.assert_no_client_errors()

    def test_removed_rule_sync_dereferences_first_then_deletes_the_middleware(self):
        self.put("route", ROUTE)
        self.put("headers", RULES_MW)
        self.start_bridge(reconcile={"policy": "sync"})
        self.wait_routes(lambda rs: len(rs) == 3, what="rule routes")
        mw = self.mw(mw_name("shop", "beta"))
        mark = self.mark()
        self.put("headers", RULES_COOKIE_ONLY)
        self.wait_gone("middlewares", mw_name("shop", "beta"))
        routes = self.ir()["spec"]["routes"]
        self.assertEqual(len(routes), 2)
        self.assertFalse(any(mw_refs(r) for r in routes))
        w = self.writes(mark)
        put = self.one(w, "PUT", "ingressroutes", "shop")
        dele = self.one(w, "DELETE", "middlewares", mw_name("shop", "beta"))
        self.assertFalse(put.references(mw=mw_name("shop", "beta")))
        self.assertEqual(put.status, 200)
        self.assertLess(put.seq, dele.seq, w)
        self.assertEqual(dele.status, 200)
        # The DELETE is conditional on exactly the version that was judged.
        self.assertEqual(dele.body["preconditions"],
                         {"uid": mw["metadata"]["uid"],
                          "resourceVersion": mw["metadata"]["resourceVersion"]})
        self.assertEqual([(r.method, r.plural) for r in w],
                         [("PUT", "ingressroutes"), ("DELETE", "middlewares")])
        self.bridge.wait_log(r"route default/shop: Middleware %s deleted \(policy sync\)" % re.escape(mw_name("shop", "beta")))

    def test_removed_rule_upsert_only_keeps_the_middleware(self):
        self.put("route", ROUTE)
        self.put("headers", RULES_MW)
        self.start_bridge()   # default policy: upsert-only
        self.wait_routes(lambda rs: len(rs) == 3, what="rule routes")
        rv = self.rv("middlewares", mw_name("shop", "beta"))
        mark = self.mark()
        self.put("headers", RULES_COOKIE_ONLY)
        self.wait_routes(lambda rs: len(rs) == 2 and not any(mw_refs(r) for r in rs),
                         what="shop.beta dereferenced")
        # A later change lands: the pass that could have deleted is long over.
        self.put("weights", "shop-v1=70, shop-v2=30")
        self.wait_routes(lambda rs: weights_of(rs[-1]) == {"shop-v1": 70, "shop-v2": 30},
                         what="later weights")
        self.assertEqual(self.rv("middlewares", mw_name("shop", "beta")), rv)
        self.assertEqual([r for r in self.writes(mark) if r.method == "DELETE"], [])
        self.assertEqual({r.plural for r in self.writes(mark)}, {"ingressroutes"})


# --------------------------------------------------------------------------------------------
# 5, 6: pruning when keys go; never on a source outage; leftovers at start

def full_route_keys(case, route="shop", ns="default"):
    case.put("route", ROUTE_STICKY.replace("shop", route), route, ns)
    case.put("weights", "%s-v1=90, %s-v2=10" % (route, route), route, ns)
    case.put("headers", RULES_MW.replace("shop", route), route, ns)


def wait_full_route(case, route="shop", ns="default"):
    case.wait_obj("middlewares", mw_name(route, "beta"), ns)
    case.wait_obj("traefikservices", route, ns)
    case.wait_routes(lambda rs: len(rs) == 3 and rs[-1]["services"][0].get("kind") ==
                     "TraefikService", route, ns, what="%s/%s with rules and sticky" % (ns, route))


class Pruning(CanaryCase):
    def test_sync_deletes_everything_when_the_keys_go_ingressroute_first(self):
        full_route_keys(self)
        full_route_keys(self, "cart")
        self.start_bridge(reconcile={"policy": "sync"})
        wait_full_route(self)
        wait_full_route(self, "cart")
        mark = self.mark()
        self.assertEqual(delete_prefix(self.etcd, "canary/default/shop/"), 3)
        self.wait_gone("middlewares", mw_name("shop", "beta"))
        self.wait_gone("traefikservices", "shop")
        self.wait_gone("ingressroutes", "shop")
        w = self.writes(mark)
        self.assertEqual([(r.method, r.plural, r.name, r.status) for r in w],
                         [("DELETE", "ingressroutes", "shop", 200),
                          ("DELETE", "traefikservices", "shop", 200),
                          ("DELETE", "middlewares", mw_name("shop", "beta"), 200)])
        # The other route is untouched.
        self.assertIsNotNone(self.ir("cart"))
        self.assertIsNotNone(self.ts("cart"))
        self.assertIsNotNone(self.mw(mw_name("cart", "beta")))

    def test_upsert_only_keeps_everything_when_the_keys_go(self):
        full_route_keys(self)
        self.start_bridge()
        wait_full_route(self)
        objs = (("ingressroutes", "shop"), ("traefikservices", "shop"),
                ("middlewares", mw_name("shop", "beta")))
        before = {o: self.rv(*o) for o in objs}
        mark = self.mark()
        delete_prefix(self.etcd, "canary/default/shop/")
        # A later route lands: the passes queued before it are done.
        self.put("route", ROUTE.replace("shop", "cart"), "cart")
        self.wait_obj("ingressroutes", "cart")
        self.assertEqual({o: self.rv(*o) for o in objs}, before)
        self.assertEqual([r for r in self.writes(mark) if r.method == "DELETE"], [])
        self.assertEqual([(r.method, r.name) for r in self.writes(mark)], [("POST", "cart")])

    def test_source_outage_never_deletes(self):
        full_route_keys(self)
        self.start_bridge(reconcile={"policy": "sync", "resync": "1s"})
        wait_full_route(self)
        mark = self.mark()
        self.etcd.kill()
        self.bridge.wait_log(r"source: disconnected")
        since = self.bridge.log_size()
        # Full resyncs (every route re-checked against the cache) during the outage.
        self.bridge.wait_log(r"resync: re-listing", since=since, timeout=5)
        since = self.bridge.log_size()
        self.bridge.wait_log(r"resync: re-listing", since=since, timeout=5)
        self.assertIsNotNone(self.ir())
        self.assertIsNotNone(self.ts())
        self.assertIsNotNone(self.mw(mw_name("shop", "beta")))
        self.assertEqual(self.writes(mark), [])
        since = self.bridge.log_size()
        self.etcd.restart()
        self.bridge.wait_log(r"source: connected", since=since, timeout=20)
        self.put("weights", "shop-v1=40, shop-v2=60")
        self.wait_obj("traefikservices", pred=lambda o: weights_of(o["spec"]["weighted"]) ==
                      {"shop-v1": 40, "shop-v2": 60}, what="weights after the outage",
                      timeout=20)
        self.assertEqual([r for r in self.writes(mark) if r.method == "DELETE"], [])
        self.assertIsNotNone(self.ir())
        self.assertIsNotNone(self.mw(mw_name("shop", "beta")))

    def test_sync_cleans_up_leftovers_at_start_but_not_foreign_objects(self):
        full_route_keys(self, "old")
        self.put("route", ROUTE.replace("shop", "keep"), "keep")
        first = self.start_bridge(reconcile={"policy": "sync"})
        wait_full_route(self, "old")
        self.wait_obj("ingressroutes", "keep")
        self.assertEqual(first.stop(), 0)
        # While the bridge is down: old's keys vanish, and other objects appear.
        delete_prefix(self.etcd, "canary/default/old/")
        other_prefix = {"apiVersion": "traefik.io/v1alpha1", "kind": "Middleware",
                        "metadata": {"name": "old-team-b", "namespace": "default",
                                     "labels": {"app.kubernetes.io/managed-by": "canary-bridge",
                                                "canary-bridge.io/route": "old"},
                                     "annotations": {"canary-bridge.io/source-prefix": "team-b/"}},
                        "spec": {"headers": {"customRequestHeaders": {"X-Team": "b"}}}}
        other_ir = {"apiVersion": "traefik.io/v1alpha1", "kind": "IngressRoute",
                    "metadata": {"name": "teamb", "namespace": "default",
                                 "labels": {"app.kubernetes.io/managed-by": "canary-bridge",
                                            "canary-bridge.io/route": "teamb"},
                                 "annotations": {"canary-bridge.io/source-prefix": "team-b/"}},
                    "spec": {"routes": [{"kind": "Rule", "match": "Host(`b`)",
                                         "services": [{"name": "b", "port": 80}]}]}}
        unlabelled_ir = {"apiVersion": "traefik.io/v1alpha1", "kind": "IngressRoute",
                         "metadata": {"name": "legacy", "namespace": "default"},
                         "spec": {"routes": [{"kind": "Rule", "match": "Host(`legacy`)",
                                              "services": [{"name": "legacy", "port": 80}]}]}}
        unlabelled_mw = {"apiVersion": "traefik.io/v1alpha1", "kind": "Middleware",
                         "metadata": {"name": "legacy-beta", "namespace": "default"},
                         "spec": {"headers": {"customRequestHeaders": {"X-L": "1"}}}}
        foreign = {}
        for plural, obj in (("middlewares", other_prefix), ("ingressroutes", other_ir),
                            ("ingressroutes", unlabelled_ir), ("middlewares", unlabelled_mw)):
            made = self.kube.create(G, "default", plural, obj)
            foreign[(plural, obj["metadata"]["name"])] = made["metadata"]["resourceVersion"]
        keep_rv = self.rv("ingressroutes", "keep")
        mark = self.mark()
        self.start_bridge(name="bridge2", reconcile={"policy": "sync"})
        self.wait_gone("middlewares", mw_name("old", "beta"))
        self.wait_gone("traefikservices", "old")
        self.wait_gone("ingressroutes", "old")
        # A later route lands: every pass queued at start is done.
        self.put("route", ROUTE.replace("shop", "late"), "late")
        self.wait_obj("ingressroutes", "late")
        w = self.writes(mark)
        self.assertEqual([(r.method, r.plural, r.name) for r in w if r.method == "DELETE"],
                         [("DELETE", "ingressroutes", "old"), ("DELETE", "traefikservices", "old"),
                          ("DELETE", "middlewares", mw_name("old", "beta"))])
        for (plural, name), rv in foreign.items():
            self.assertEqual(self.rv(plural, name), rv, "%s %s was touched" % (plural, name))
            self.assertEqual([r for r in w if r.name == name], [])
        self.assertEqual(self.rv("ingressroutes", "keep"), keep_rv)


# --------------------------------------------------------------------------------------------
# 7: sticky sessions through a TraefikService

class Sticky(CanaryCase):
    def test_sticky_traefikservice_lifecycle(self):
        self.put("route", ROUTE_STICKY)
        self.put("weights", "shop-v1=90, shop-v2=10")
        self.start_bridge(reconcile={"policy": "sync"})
        ir = self.wait_routes(lambda rs: rs[-1]["services"][0].get("kind") == "TraefikService",
                              what="weighted route via the TraefikService")
        self.assertEqual(ir["spec"]["routes"][-1]["services"],
                         [{"name": "shop", "kind": "TraefikService"}])
        ts = self.ts()
        self.assertEqual(ts["kind"], "TraefikService")
        self.assertEqual(ts["metadata"]["labels"]["app.kubernetes.io/managed-by"], "canary-bridge")
        self.assertEqual(ts["metadata"]["annotations"]["canary-bridge.io/source-prefix"], "canary/")
        self.assertEqual(ts["spec"]["weighted"]["services"],
                         [{"name": "shop-v1", "port": 80, "weight": 90},
                          {"name": "shop-v2", "port": 80, "weight": 10}])
        self.assertEqual(ts["spec"]["weighted"]["sticky"],
                         {"cookie": {"name": "canary_sticky", "secure": True, "httpOnly": True,
                                     "sameSite": "lax"}})
        w = self.writes()
        ts_post = self.one(w, "POST", "traefikservices", "shop")
        ir_post = self.one(w, "POST", "ingressroutes", "shop")
        self.assertTrue(ir_post.references(ts="shop"))
        self.assertLess(ts_post.seq, ir_post.seq, w)

        # Shifting weights updates the TraefikService; the IngressRoute needs no write.
        mark = self.mark()
        self.put("weights", "shop-v1=50, shop-v2=50")
        self.wait_obj("traefikservices", pred=lambda o: weights_of(o["spec"]["weighted"]) ==
                      {"shop-v1": 50, "shop-v2": 50}, what="TraefikService weights 50/50")
        self.bridge.wait_log(r"TraefikService shop written")
        self.assertEqual([(r.method, r.plural) for r in self.writes(mark)],
                         [("PUT", "traefikservices")])

        # Sticky off: the IngressRoute goes back to direct services first, then the
        # TraefikService is deleted.
        mark = self.mark()
        self.put("route", ROUTE)
        self.wait_gone("traefikservices", "shop")
        route = self.ir()["spec"]["routes"][-1]
        self.assertEqual(route["services"], [{"name": "shop-v1", "port": 80, "weight": 50},
                                             {"name": "shop-v2", "port": 80, "weight": 50}])
        w = self.writes(mark)
        put = self.one(w, "PUT", "ingressroutes", "shop")
        dele = self.one(w, "DELETE", "traefikservices", "shop")
        self.assertFalse(put.references(ts="shop"))
        self.assertLess(put.seq, dele.seq, w)
        self.assert_no_client_errors()


# --------------------------------------------------------------------------------------------
# 8: ownership

class Ownership(CanaryCase):
    def test_unlabelled_middleware_with_the_rule_name_is_refused(self):
        foreign = {"apiVersion": "traefik.io/v1alpha1", "kind": "Middleware",
                   "metadata": {"name": mw_name("shop", "beta"), "namespace": "default",
                                "labels": {"team": "web"}},
                   "spec": {"headers": {"customRequestHeaders": {"X-Theirs": "1"}}}}
        before = self.kube.create(G, "default", "middlewares", foreign)
        self.put("route", ROUTE)
        self.put("headers", RULES_MW)
        self.put("route", ROUTE.replace("shop", "cart"), "cart")
        self.start_bridge()
        self.bridge.wait_log(r"route default/shop: Middleware default/%s exists and is not "
                             r"managed by canary-bridge" % re.escape(mw_name("shop", "beta")))
        self.wait_obj("ingressroutes", "cart")
        self.put("weights", "cart-v1=20, cart-v2=80", "cart")
        self.wait_routes(lambda rs: weights_of(rs[-1]) == {"cart-v1": 20, "cart-v2": 80}, "cart",
                         what="the other route keeps working")
        after = self.mw(mw_name("shop", "beta"))
        self.assertEqual(after["metadata"]["resourceVersion"], before["metadata"]["resourceVersion"])
        self.assertEqual(after["spec"], before["spec"])
        self.assertNotIn("app.kubernetes.io/managed-by", after["metadata"]["labels"])
        self.assertEqual([r for r in self.writes() if r.name == mw_name("shop", "beta")], [])
        # No IngressRoute may reference a Middleware the bridge could not make its own.
        ir = self.ir()
        self.assertTrue(ir is None or not any(mw_name("shop", "beta") in mw_refs(r)
                                              for r in ir["spec"]["routes"]), ir)
        self.assertTrue(self.bridge.alive())


    def test_object_owned_from_another_prefix_is_not_taken_over(self):
        """Issue 4: "only objects carrying the bridge's label AND source annotation are
        ever updated in owned mode or deleted". A Middleware that another bridge (prefix
        team-b/) manages must not be rewritten by this one."""
        theirs = {"apiVersion": "traefik.io/v1alpha1", "kind": "Middleware",
                  "metadata": {"name": mw_name("shop", "beta"), "namespace": "default",
                               "labels": {"app.kubernetes.io/managed-by": "canary-bridge",
                                          "canary-bridge.io/route": "shop"},
                               "annotations": {"canary-bridge.io/source-prefix": "team-b/"}},
                  "spec": {"headers": {"customRequestHeaders": {"X-Team": "b"}}}}
        before = self.kube.create(G, "default", "middlewares", theirs)
        self.put("route", ROUTE)
        self.put("headers", RULES_MW)
        self.start_bridge()
        self.bridge.wait_log(r"route default/shop: (IngressRoute shop created|.*%s)" % re.escape(mw_name("shop", "beta")))
        self.put("route", ROUTE.replace("shop", "cart"), "cart")
        self.wait_obj("ingressroutes", "cart")   # later work done: shop's pass is over
        after = self.mw(mw_name("shop", "beta"))
        self.assertEqual(after["metadata"]["annotations"]["canary-bridge.io/source-prefix"],
                         "team-b/")
        self.assertEqual(after["spec"], before["spec"])
        self.assertEqual(after["metadata"]["resourceVersion"], before["metadata"]["resourceVersion"])
        self.assertEqual([r for r in self.writes() if r.name == mw_name("shop", "beta")], [])
        self.assertRegex(self.bridge.log_text(), r"route default/shop: .*" + re.escape(mw_name("shop", "beta")))


# --------------------------------------------------------------------------------------------
# 9: safety: bad input leaves the live objects as they were

GOOD_HEADERS = RULES_MW


def rule_doc(**over):
    rule = {"name": "beta", "header": "X-Canary", "value": "always", "service": "shop-v2"}
    rule.update(over)
    return yaml.safe_dump([{k: v for k, v in rule.items() if v is not None}])


def alias_bomb():
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    prev = "a"
    for name in "bcdefghi":
        lines.append("%s: &%s [%s]" % (name, name, ",".join(["*" + prev] * 9)))
        prev = name
    return "\n".join(lines) + "\n"


class Safety(CanaryCase):
    config_overrides = {"reconcile": {"namespaces": ["default"]}}

    def setUp(self):
        super().setUp()
        self.put("route", ROUTE)
        self.put("weights", "shop-v1=90, shop-v2=10")
        self.put("headers", GOOD_HEADERS)
        self.start_bridge()
        self.wait_routes(lambda rs: len(rs) == 3, what="good route")
        self.wait_obj("middlewares", mw_name("shop", "beta"))
        self.rvs = {"ir": self.rv("ingressroutes", "shop"),
                    "mw": self.rv("middlewares", mw_name("shop", "beta"))}

    def assert_refused(self, leaf, value, reason, good=None):
        """Put a bad value: the route fails with a log line naming the key and the
        reason, and the live objects keep their resourceVersion. Then the good value
        again: the route recovers with no write."""
        mark = self.mark()
        since = self.bridge.log_size()
        self.put(leaf, value)
        m = self.bridge.wait_log(r"route default/shop: canary/default/shop/%s: .*%s" % (leaf, reason),
                                 since=since)
        self.assertEqual(self.rv("ingressroutes", "shop"), self.rvs["ir"])
        self.assertEqual(self.rv("middlewares", mw_name("shop", "beta")), self.rvs["mw"])
        since = self.bridge.log_size()
        self.put(leaf, good if good is not None else {"route": ROUTE, "headers": GOOD_HEADERS,
                                                      "weights": "shop-v1=90, shop-v2=10"}[leaf])
        self.bridge.wait_log(r"route default/shop: recovered", since=since)
        self.assertEqual(self.writes(mark), [])
        self.assertTrue(self.bridge.alive())
        return m.group(0)

    def test_header_name_must_be_an_rfc7230_token(self):
        self.assert_refused("headers", rule_doc(header="X Canary"),
                            r"rule 0 \('beta'\): 'X Canary' is not a valid header name")
        self.assert_refused("headers", rule_doc(header="X-Can(ary)"), r"not a valid header name")
        self.assert_refused("headers", rule_doc(header="X-`Canary"), r"not a valid header name")
        self.assert_refused("headers", rule_doc(
            setRequestHeaders={"X Route": "beta"}),
            r"'setRequestHeaders': 'X Route' is not a valid header name")

    def test_backtick_in_a_value_is_refused(self):
        self.assert_refused("headers", rule_doc(value="a`) || Host(`evil"),
                            r"'value' must not contain backticks or control characters")
        self.assert_refused("headers", rule_doc(value=None, regex="^a`b$"),
                            r"'regex' must not contain backticks")
        self.assert_refused("headers", rule_doc(setRequestHeaders={"X-Route": "a`b"}),
                            r"the value of 'X-Route' must be a string without backticks")
        self.assert_refused("headers", rule_doc(header=None, cookie="canary", value="x`y"),
                            r"must not contain backticks")

    def test_control_characters_in_a_value_are_refused(self):
        self.assert_refused("headers", '[{"header": "X-Canary", "value": "a\\u0001b", '
                                       '"service": "shop-v2"}]',
                            r"'value' must not contain backticks or control characters")
        self.assert_refused("headers", rule_doc(value="a\nb"),
                            r"'value' must not contain backticks or control characters")
        self.assert_refused("headers", rule_doc(value="a\rHost: x"),
                            r"must not contain backticks or control characters")
        self.assert_refused("headers", rule_doc(setResponseHeaders={"X-Served-By": "a\r\nX: y"}),
                            r"the value of 'X-Served-By' must be a string without")
        # The log line itself carries no raw control character (no forged lines).
        self.assertNotIn("\x01", self.bridge.log_text())

    def test_regex_that_does_not_compile_is_refused(self):
        self.assert_refused("headers", rule_doc(value=None, regex="([a-z"),
                            r"regex does not compile")
        self.assert_refused("headers", rule_doc(value=None, regex="(a)\\1"),
                            r"backreference")
        self.assert_refused("headers", rule_doc(value=None, regex=""), r"'regex' is empty")

    def test_rule_naming_an_unknown_service_is_refused(self):
        self.assert_refused("headers", rule_doc(service="shop-v9"),
                            r"must be one of the route's services, got 'shop-v9'")
        self.assert_refused("headers", rule_doc(service=None), r"'service' is required")

    def test_headers_without_a_route_key_are_refused(self):
        since = self.bridge.log_size()
        self.put("headers", GOOD_HEADERS.replace("shop", "lonely"), "lonely")
        self.bridge.wait_log(r"route default/lonely: canary/default/lonely/headers: headers need "
                             r"a route key", since=since)
        since = self.bridge.log_size()
        self.put("weights", "lonely-v1=1", "lonely")   # patched mode still refuses headers
        self.bridge.wait_log(r"route default/lonely: (still failing: )?canary/default/lonely/"
                             r"headers: headers need a route key", since=since)
        self.put("route", ROUTE.replace("shop", "cart"), "cart")
        self.wait_obj("ingressroutes", "cart")
        self.assertIsNone(self.ir("lonely"))
        self.assertIsNone(self.mw("lonely-beta"))
        self.assertEqual([r for r in self.writes() if r.name and "lonely" in r.name], [])

    def test_service_namespace_is_refused_without_allow_cross_namespace(self):
        bad = ROUTE.replace("  - name: shop-v2\n", "  - name: shop-v2\n    namespace: other\n")
        self.assert_refused("route", bad, r"services\[1\]: 'namespace' is not allowed")
        # Even the route's own namespace: the rule is simply "no namespace field".
        bad = ROUTE.replace("  - name: shop-v2\n", "  - name: shop-v2\n    namespace: default\n")
        self.assert_refused("route", bad, r"'namespace' is not allowed")

    def test_namespace_outside_the_allow_list_is_refused(self):
        since = self.bridge.log_size()
        self.put("route", ROUTE, ns="other")
        self.put("headers", GOOD_HEADERS, ns="other")
        self.bridge.wait_log(r"route other/shop: namespace other is not in reconcile.namespaces",
                             since=since)
        self.put("route", ROUTE.replace("shop", "cart"), "cart")
        self.wait_obj("ingressroutes", "cart")
        self.assertIsNone(self.ir("shop", "other"))
        self.assertIsNone(self.mw(mw_name("shop", "beta"), "other"))
        self.assertEqual([r for r in self.writes() if r.ns == "other"], [])

    def test_value_over_64_kib_is_refused(self):
        big = GOOD_HEADERS + "#" + "x" * (64 * 1024) + "\n"
        self.assert_refused("headers", big, r"value is %d bytes, over the limit of 65536"
                            % len(big))
        self.assert_refused("route", ROUTE + "#" + "y" * (64 * 1024) + "\n", r"over the limit")

    def test_yaml_alias_bomb_is_refused_quickly(self):
        bomb = alias_bomb()
        t0 = time.monotonic()
        self.assert_refused("headers", bomb, r"aliases and anchors are not allowed")
        self.assertLess(time.monotonic() - t0, 3.0)
        self.assert_refused("route", "match: &m Host(`x`)\nservices: [*m]\n",
                            r"aliases and anchors are not allowed")
        # Still responsive.
        self.put("weights", "shop-v1=10, shop-v2=90")
        self.wait_routes(lambda rs: weights_of(rs[-1]) == {"shop-v1": 10, "shop-v2": 90},
                         what="weights after the bomb")


class CrossNamespaceAllowed(CanaryCase):
    config_overrides = {"reconcile": {"allow_cross_namespace": True}}

    def test_service_namespace_is_passed_through_when_allowed(self):
        self.kube.create_namespace("canary-ns")   # where shop-v2 is (backend checks)
        self.put("route", ROUTE.replace("  - name: shop-v2\n",
                                        "  - name: shop-v2\n    namespace: canary-ns\n"))
        self.put("headers", rule_doc())
        self.start_bridge()
        routes = self.wait_routes(lambda rs: len(rs) == 2, what="rule + weighted")["spec"]["routes"]
        self.assertEqual(routes[0]["services"],
                         [{"name": "shop-v2", "namespace": "canary-ns", "port": 80, "weight": 1}])
        self.assertEqual(routes[1]["services"],
                         [{"name": "shop-v1", "port": 80, "weight": 1},
                          {"name": "shop-v2", "namespace": "canary-ns", "port": 80, "weight": 1}])
        self.assert_no_client_errors()


class LongNames(CanaryCase):
    """Route names are DNS-1123 subdomains (up to 253 characters); every object name the
    bridge derives from one must still be valid, and the server must accept the objects:
    a label value is at most 63 characters, so a longer route name cannot be its label as
    it is (bridge/core/reconcile_pass.c shortens it)."""
    DNS1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")

    def run_long_route(self, name, headers=RULES_MW):
        self.put("route", ROUTE, name)
        if headers:
            self.put("headers", headers, name)
        self.start_bridge()
        # The route's first pass ends either with the IngressRoute created or an error.
        self.bridge.wait_log(r"route default/%s: (IngressRoute \S+ created|.*HTTP \d+)"
                             % re.escape(name))
        self.assertNotRegex(self.bridge.log_text(), r"HTTP 422")
        # No write refused (a request still in flight has no status yet).
        self.assertEqual([r for r in self.writes() if r.status not in (200, 201, None)], [])
        ir = self.ir(name)
        self.assertIsNotNone(ir)
        return ir

    def check_long_route_with_rules(self, name):
        ir = self.run_long_route(name)
        mws = self.kube.list(G, "default", "middlewares")["items"]
        self.assertEqual(len(mws), 1)
        got = mws[0]["metadata"]["name"]
        self.assertLessEqual(len(got), 253)
        self.assertTrue(self.DNS1123.fullmatch(got), got)
        self.assertEqual(mw_refs(ir["spec"]["routes"][0]), [got])
        return got

    def test_route_name_over_63_chars_with_rules(self):
        name = "canary-" + "x" * 70          # 77 chars: a valid name, too long for a label
        got = self.check_long_route_with_rules(name)
        self.assertEqual(got, mw_name(name, "beta"))

    def test_route_name_near_253_chars_gets_a_hashed_middleware_name(self):
        name = ("a" * 60 + ".") * 4 + "b" * 8   # 252 chars; "<name>.beta" would be 257
        got = self.check_long_route_with_rules(name)
        self.assertNotEqual(got, mw_name(name, "beta"))
        self.assertEqual(len(got), 253)

    def test_route_name_over_63_chars_without_rules(self):
        self.run_long_route("canary-" + "y" * 60, headers=None)   # 67 chars

    def test_route_name_of_63_chars_with_rules(self):
        name = "canary-" + "z" * 56            # 63: the longest that fits a label
        self.assertEqual(self.check_long_route_with_rules(name), mw_name(name, "beta"))


# --------------------------------------------------------------------------------------------
# 10: render

class Render(CanaryCase):
    def test_render_prints_every_object_in_write_order_and_writes_nothing(self):
        headers = yaml.safe_load(RULES_MW)
        headers.append({"name": "gamma", "header": "X-Gamma", "regex": "^g", "service": "shop-v1",
                        "setResponseHeaders": {"X-Gamma": "yes"}})
        self.put("route", ROUTE_STICKY)
        self.put("weights", "shop-v1=90, shop-v2=10")
        self.put("headers", yaml.safe_dump(headers))
        self.put("route", ROUTE.replace("shop", "cart"), "cart")
        b = Bridge(self.tmp.name, self.config(), start=False)
        code, out, err = b.run_once(["render", "default/shop"])
        self.assertEqual(code, 0, err)
        docs = [d for d in yaml.safe_load_all(out) if d]
        self.assertEqual([(d["kind"], d["metadata"]["name"]) for d in docs],
                         [("Middleware", mw_name("shop", "beta")), ("Middleware", mw_name("shop", "gamma")),
                          ("TraefikService", "shop"), ("IngressRoute", "shop")])
        self.assertNotIn("cart", out)
        self.assertEqual(out.count("\n---\n") + out.startswith("---\n"), 4)
        mw_beta, mw_gamma, ts, ir = docs
        self.assertEqual(mw_beta["spec"]["headers"]["customRequestHeaders"],
                         {"X-Canary-Route": "beta"})
        self.assertEqual(mw_gamma["spec"]["headers"], {"customResponseHeaders": {"X-Gamma": "yes"}})
        self.assertEqual(weights_of(ts["spec"]["weighted"]), {"shop-v1": 90, "shop-v2": 10})
        self.assertEqual(ts["spec"]["weighted"]["sticky"]["cookie"]["name"], "canary_sticky")
        routes = ir["spec"]["routes"]
        self.assertEqual([mw_refs(r) for r in routes], [[mw_name("shop", "beta")], [], [mw_name("shop", "gamma")], []])
        self.assertEqual(routes[-1]["services"], [{"name": "shop", "kind": "TraefikService"}])
        # Nothing was written: render only lists the objects (to start from the live ones).
        self.assertEqual(self.writes(), [])
        self.assertTrue(self.reqs())
        self.assertEqual([o for o in self.kube.objects()["objects"]
                          if o.get("apiVersion", "").startswith("traefik.")], [])
        # What render shows is what the daemon writes.
        self.start_bridge()
        self.wait_routes(lambda rs: len(rs) == 4, what="written IngressRoute")
        self.wait_obj("middlewares", mw_name("shop", "gamma"))
        for d in docs:
            live = self.get({"Middleware": "middlewares", "TraefikService": "traefikservices",
                             "IngressRoute": "ingressroutes"}[d["kind"]], d["metadata"]["name"])
            self.assertEqual(live["spec"], d["spec"], d["kind"])

    def test_render_of_a_bad_route_fails_naming_the_key(self):
        self.put("route", ROUTE)
        self.put("headers", rule_doc(header="X Canary"))
        code, out, err = Bridge(self.tmp.name, self.config(), start=False).run_once(
            ["render", "default/shop"])
        self.assertEqual(code, 1)
        self.assertIn("canary/default/shop/headers", err)
        self.assertEqual(self.writes(), [])


# --------------------------------------------------------------------------------------------
# 11: a full canary, start to end

class Walkthrough(CanaryCase):
    def test_full_header_and_sticky_canary_from_start_to_cleanup(self):
        self.start_bridge(reconcile={"policy": "sync"})
        headers = [{"name": "beta", "header": "X-Canary", "value": "always", "service": "shop-v2",
                    "setRequestHeaders": {"X-Canary-Route": "beta"}}]
        self.put("route", ROUTE_STICKY)
        self.put("weights", "shop-v1=90, shop-v2=10")
        self.put("headers", yaml.safe_dump(headers))
        self.wait_routes(lambda rs: len(rs) == 2 and mw_refs(rs[0]) == [mw_name("shop", "beta")] and
                         rs[1]["services"] == [{"name": "shop", "kind": "TraefikService"}],
                         what="canary set up")
        self.assertEqual(self.mw(mw_name("shop", "beta"))["spec"]["headers"]["customRequestHeaders"],
                         {"X-Canary-Route": "beta"})

        def ts_weights(want):
            self.wait_obj("traefikservices", pred=lambda o: weights_of(o["spec"]["weighted"]) ==
                          want, what="TraefikService weights %r" % want)

        ts_weights({"shop-v1": 90, "shop-v2": 10})
        for w1, w2 in ((50, 50), (0, 100)):
            self.put("weights", "shop-v1=%d, shop-v2=%d" % (w1, w2))
            ts_weights({"shop-v1": w1, "shop-v2": w2})

        # The header rule ends: its route goes, then its Middleware.
        self.etcd.delete("canary/default/shop/headers")
        self.wait_gone("middlewares", mw_name("shop", "beta"))
        self.assertEqual(len(self.ir()["spec"]["routes"]), 1)
        # Stickiness ends: direct services with the last weights, then no TraefikService.
        self.put("route", ROUTE)
        self.wait_gone("traefikservices", "shop")
        self.assertEqual(self.ir()["spec"]["routes"][-1]["services"],
                         [{"name": "shop-v1", "port": 80, "weight": 0},
                          {"name": "shop-v2", "port": 80, "weight": 100}])
        # The canary is over: every key goes, and so does every object.
        delete_prefix(self.etcd, "canary/default/shop/")
        self.wait_gone("ingressroutes", "shop")
        self.assertEqual([o for o in self.kube.objects()["objects"]
                          if o.get("apiVersion", "").startswith("traefik.")], [])

        w = self.writes()
        self.assertEqual([r for r in w if r.status not in (200, 201)], [])
        self.assert_no_client_errors()
        # Every referenced object existed before its first reference and outlived its last.
        for plural, kw in (("middlewares", {"mw": mw_name("shop", "beta")}),
                           ("traefikservices", {"ts": "shop"})):
            name = list(kw.values())[0]
            refs = [r.seq for r in w if r.references(**kw)]
            post = self.one(w, "POST", plural, name)
            dele = self.one(w, "DELETE", plural, name)
            self.assertTrue(refs)
            self.assertLess(post.seq, min(refs))
            deref = [r.seq for r in w if r.plural == "ingressroutes" and r.method == "PUT"
                     and not r.references(**kw) and r.seq > max(refs)]
            self.assertTrue(deref and deref[0] < dele.seq, w)


if __name__ == "__main__":
    unittest.main()
