"""The operator's one-shot commands against real etcd and the Kubernetes API test server:
`check` asking the API server for every right the bridge will use (the server answers
SelfSubjectAccessReviews from the rules of deploy/rbac.yaml, or fewer); `status` and `diff`,
which read the source and the cluster and write to neither; `render`, whose objects are the
live ones with what a pass would change."""
import json
import os
import re
import sys
import tempfile
import unittest

import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
from cbtest import REPO, Bridge, Etcd, KubeAPI, bridge_config, wait_until  # noqa: E402

G = "traefik.io"
ROUTE = """match: Host(`shop.example.com`)
services:
  - {name: shop-v1, port: 80}
  - {name: shop-v2, port: 80}
"""
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
SSAR = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"


def rbac_rules():
    """The ClusterRole rules of deploy/rbac.yaml, as the test server's /_test/rbac takes them."""
    with open(os.path.join(REPO, "deploy", "rbac.yaml")) as f:
        role = [d for d in yaml.safe_load_all(f) if d and d["kind"] == "ClusterRole"][0]
    return role["rules"]


def without(rules, verb, resource, group=None):
    """rules with `verb` taken away from `resource` (in `group`, or every group)."""
    out = []
    for r in rules:
        if resource in r["resources"] and verb in r["verbs"] and \
                (group is None or group in r["apiGroups"]):
            rest = dict(r, resources=[x for x in r["resources"] if x != resource])
            if rest["resources"]:
                out.append(rest)
            out.append(dict(r, resources=[resource], verbs=[v for v in r["verbs"] if v != verb]))
        else:
            out.append(r)
    return out


def weights_of(obj, route=-1):
    return obj and {s["name"]: s.get("weight") for s in obj["spec"]["routes"][route]["services"]}


class CommandCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="cb-cmds-")
        self.addCleanup(self.tmp.cleanup)
        self.etcd = Etcd(self.tmp.name)
        self.addCleanup(self.etcd.stop)
        self.kube = KubeAPI(self.tmp.name)
        self.addCleanup(self.kube.stop)
        for ns in ("shop", "cart"):
            self.kube.create_namespace(ns)

    def run_cmd(self, *args, bridge_name="cli", **sections):
        cfg = bridge_config(etcd=self.etcd, kube=self.kube, **sections)
        b = Bridge(self.tmp.name, cfg, start=False, name=bridge_name)
        return b.run_once(list(args))

    def set_rules(self, rules):
        """Authorize the bridge's token (the kubeconfig's) by these rules only."""
        self.kube.control("POST", "rbac", {"token": self.kube.token, "rules": rules})

    def writes(self, since=0):
        """The bridge's writes (the harness creates the Services routes name, too)."""
        return [r for r in self.kube.requests(since=since) if r["method"] in WRITE_METHODS
                and (r.get("user_agent") or "").startswith("canary-bridge/")]

    def mark(self):
        log = self.kube.requests()
        return log[-1]["seq"] if log else 0

    def sync(self, **sections):
        code, out, err = self.run_cmd("sync", bridge_name="sync", **sections)
        self.assertEqual(code, 0, err)

    def ir(self, name="shop", ns="default"):
        return self.kube.get(G, ns, "ingressroutes", name)


# --------------------------------------------------------------------------------------------
# check

class Check(CommandCase):
    def reviews(self):
        return [r["body"]["spec"]["resourceAttributes"] for r in self.kube.requests()
                if r["path"] == SSAR]

    def test_check_asks_for_each_right_the_bridge_uses_and_passes_with_rbac_yaml(self):
        self.set_rules(rbac_rules())
        code, out, err = self.run_cmd("check")
        self.assertEqual(code, 0, out + err)
        for kind in ("middlewares", "traefikservices", "ingressroutes"):
            for verb in ("list", "watch", "get", "create", "update"):
                self.assertIn("ok   %s %s.traefik.io in all namespaces\n" % (verb, kind), out)
            self.assertNotIn("delete %s" % kind, out)    # upsert-only never deletes
            self.assertNotIn("patch %s" % kind, out)     # a pass writes with PUT
        for verb in ("create", "patch"):
            self.assertIn("ok   %s events in all namespaces\n" % verb, out)
        self.assertNotIn("leases", out)                  # no leader election configured
        # The backend checks' list+watch caches of Services and EndpointSlices.
        for verb in ("list", "watch"):
            self.assertIn("ok   %s services in all namespaces\n" % verb, out)
            self.assertIn("ok   %s endpointslices.discovery.k8s.io in all namespaces\n" % verb,
                          out)
        self.assertNotIn("get services", out)            # a check never GETs one
        self.assertNotIn("FAIL", out)
        asked = self.reviews()
        self.assertEqual(len(asked), 21)
        self.assertIn({"namespace": "", "verb": "watch", "group": G,
                       "resource": "ingressroutes"}, asked)
        self.assertIn({"namespace": "", "verb": "patch", "group": "", "resource": "events"},
                      asked)

    def test_check_fails_naming_what_is_denied(self):
        self.set_rules(without(rbac_rules(), "update", "ingressroutes"))
        code, out, err = self.run_cmd("check")
        self.assertEqual(code, 1, out + err)
        self.assertIn("FAIL update ingressroutes.traefik.io in all namespaces: denied\n", out)
        self.assertIn("ok   update middlewares.traefik.io in all namespaces\n", out)
        self.assertEqual(len(re.findall(r"^FAIL", out, re.M)), 1, out)
        # Events: the bridge posts core (v1) Events and patches their counts.
        self.set_rules([r for r in rbac_rules() if r["apiGroups"] != [""]])
        code, out, err = self.run_cmd("check")
        self.assertEqual(code, 1, out + err)
        self.assertIn("FAIL create events in all namespaces: denied\n", out)
        self.assertIn("FAIL patch events in all namespaces: denied\n", out)
        # Services and EndpointSlices, which the backend checks list and watch.
        self.set_rules([r for r in rbac_rules() if "endpointslices" not in r["resources"]])
        code, out, err = self.run_cmd("check")
        self.assertEqual(code, 1, out + err)
        self.assertIn("ok   watch services in all namespaces\n", out)
        for verb in ("list", "watch"):
            self.assertIn("FAIL %s endpointslices.discovery.k8s.io in all namespaces: denied\n"
                          % verb, out)
        self.assertEqual(len(re.findall(r"^FAIL", out, re.M)), 2, out)

    def test_check_asks_per_namespace_of_reconcile_namespaces_and_for_sync_and_leases(self):
        # A ClusterRole to list and watch, Roles to write in `shop` only, Leases in
        # kube-system: what rbac.yaml's comment suggests for a per-namespace setup.
        traefik = {"apiGroups": [G], "resources": ["ingressroutes", "middlewares",
                                                   "traefikservices"]}
        self.set_rules([dict(traefik, verbs=["list", "watch"]),
                        dict(traefik, verbs=["get", "create", "update", "delete"],
                             namespaces=["shop"]),
                        {"apiGroups": [""], "resources": ["events"],
                         "verbs": ["create", "patch"], "namespaces": ["shop", "cart"]},
                        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                         "verbs": ["get", "create"], "namespaces": ["kube-system"]},
                        {"apiGroups": [""], "resources": ["services"],
                         "verbs": ["list", "watch"], "namespaces": ["shop", "cart"]},
                        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                         "verbs": ["list", "watch"], "namespaces": ["shop"]}])
        code, out, err = self.run_cmd(
            "check", reconcile={"namespaces": ["shop", "cart"], "policy": "sync"},
            leader_election={"enabled": True, "namespace": "kube-system"})
        self.assertEqual(code, 1, out + err)
        self.assertIn("ok   list ingressroutes.traefik.io in all namespaces\n", out)
        for verb in ("get", "create", "update", "delete"):
            self.assertIn("ok   %s ingressroutes.traefik.io in ns shop\n" % verb, out)
            self.assertIn("FAIL %s ingressroutes.traefik.io in ns cart: denied\n" % verb, out)
        self.assertNotIn("create ingressroutes.traefik.io in all namespaces", out)
        self.assertIn("ok   create events in ns cart\n", out)
        self.assertIn("ok   get leases.coordination.k8s.io in ns kube-system\n", out)
        self.assertIn("FAIL update leases.coordination.k8s.io in ns kube-system: denied\n", out)
        self.assertIn("ok   list services in ns cart\n", out)
        self.assertIn("ok   watch endpointslices.discovery.k8s.io in ns shop\n", out)
        self.assertIn("FAIL watch endpointslices.discovery.k8s.io in ns cart: denied\n", out)
        self.assertEqual(len(re.findall(r"^FAIL", out, re.M)), 3 * 4 + 1 + 2, out)

    def test_check_says_which_reviews_got_no_answer(self):
        self.kube.fault(path_regex="selfsubjectaccessreviews", action="hang", count=-1)
        code, out, err = self.run_cmd("check", "--timeout", "3s")
        self.assertEqual(code, 1, out + err)
        self.assertRegex(out, r"FAIL kubernetes: 21 of 21 access reviews "
                              r"\(SelfSubjectAccessReview\) not answered within 3 s\n")


# --------------------------------------------------------------------------------------------
# status

HELM_IR = {"apiVersion": G + "/v1alpha1", "kind": "IngressRoute",
           "metadata": {"name": "web", "namespace": "shop",
                        "labels": {"app": "web", "helm.sh/chart": "web-1.0.0"},
                        "annotations": {"meta.helm.sh/release-name": "web"}},
           "spec": {"entryPoints": ["websecure"],
                    "routes": [{"kind": "Rule", "match": "Host(`a.example.com`)",
                                "services": [{"name": "web-v1", "port": 80, "weight": 100},
                                             {"name": "web-v2", "port": 80, "weight": 0}]},
                               {"kind": "Rule", "match": "Host(`b.example.com`)",
                                "services": [{"name": "web-v1", "port": 80},
                                             {"name": "web-v2", "port": 80}]}]}}


class Status(CommandCase):
    def rows(self, *args, **sections):
        code, out, err = self.run_cmd("status", "-o", "json", *args, **sections)
        self.assertEqual(code, 0, out + err)
        return {r["route"]: r for r in json.loads(out)["routes"]}

    def test_status_one_line_per_route_with_desired_live_state_and_writes_nothing(self):
        self.etcd.put("canary/default/shop/route", ROUTE)
        self.etcd.put("canary/default/shop/weights", "shop-v1=90, shop-v2=10")
        self.etcd.put("canary/default/cart/route", ROUTE.replace("shop", "cart"))
        self.etcd.put("canary/shop/web/weights", '{"web-v2": 25}')
        self.kube.create(G, "shop", "ingressroutes", HELM_IR)
        status_on = {"reconcile": {"status": True}}
        # The daemon applies them and writes the status keys (section 7 of docs/usage.md).
        daemon = Bridge(self.tmp.name, bridge_config(etcd=self.etcd, kube=self.kube,
                                                     **status_on), name="daemon")
        self.addCleanup(daemon.stop)
        for route in ("default/shop", "default/cart", "shop/web"):
            wait_until(lambda: '"state":"applied"' in (self.etcd.get(
                "canary/%s/status" % route) or ""), 20, what="status key of " + route)
        daemon.stop()
        self.etcd.put("canary/default/cart/weights", "cart-v1=50, cart-v2=50")   # not synced
        self.etcd.put("canary/default/gone/route", ROUTE)                       # no object yet
        self.etcd.put("canary/default/bad/route", ROUTE)
        self.etcd.put("canary/default/bad/weights", "shop-v1=fifty")
        rev, since = self.etcd.revision(), self.mark()

        code, out, err = self.run_cmd("status", **status_on)
        self.assertEqual(code, 0, out + err)
        lines = out.splitlines()
        self.assertEqual(lines[0].split(), ["ROUTE", "STATE", "DESIRED", "LIVE", "APPLIED",
                                            "REVISION", "ERROR"])
        by_route = {ln.split()[0]: ln for ln in lines[1:]}
        self.assertEqual(sorted(by_route), ["default/bad", "default/cart", "default/gone",
                                            "default/shop", "shop/web"])
        self.assertRegex(by_route["default/shop"],
                         r"^default/shop +in sync +shop-v1=90,shop-v2=10 +shop-v1=90,shop-v2=10"
                         r" +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ +\d+ +-$")
        self.assertRegex(by_route["default/cart"],
                         r"^default/cart +differs +cart-v1=50,cart-v2=50 +cart-v1=1,cart-v2=1 ")
        self.assertRegex(by_route["default/gone"], r"^default/gone +missing +shop-v1=1,shop-v2=1"
                                                   r" +- +- +- +-$")
        self.assertRegex(by_route["default/bad"], r"^default/bad +error +- +- +- +- +"
                                                  r"canary/default/bad/weights: .*fifty")
        self.assertRegex(by_route["shop/web"], r"^shop/web +in sync +web-v2=25 +web-v2=25 ")
        # Read only: nothing written to the API server or to etcd (no status key either).
        self.assertEqual(self.writes(since), [])
        self.assertEqual(self.etcd.revision(), rev)

        rows = self.rows(**status_on)
        shop = rows["default/shop"]
        self.assertEqual((shop["mode"], shop["state"], shop["desired"], shop["live"]),
                         ("owned", "in sync", {"shop-v1": 90, "shop-v2": 10},
                          {"shop-v1": 90, "shop-v2": 10}))
        ann = self.ir()["metadata"]["annotations"]
        self.assertEqual(shop["revision"], int(ann["canary-bridge.io/source-revision"]))
        self.assertEqual(shop["status_key"]["state"], "applied")
        self.assertEqual(shop["applied"], shop["status_key"]["time"])
        self.assertIsNone(shop["error"])
        web = rows["shop/web"]
        self.assertEqual((web["mode"], web["state"], web["live"]),
                         ("patched", "in sync", {"web-v2": 25}))
        self.assertEqual(rows["default/cart"]["live"], {"cart-v1": 1, "cart-v2": 1})
        self.assertIsNone(rows["default/gone"]["live"])
        self.assertEqual(rows["default/bad"]["state"], "error")
        self.assertIsNone(rows["default/bad"]["desired"])
        # One route by name.
        self.assertEqual(list(self.rows("default/cart")), ["default/cart"])
        code, out, err = self.run_cmd("status", "default/nope")
        self.assertEqual(code, 1)
        self.assertIn("no keys for route default/nope under canary/", err)
        self.assertEqual(self.writes(since), [])
        self.assertEqual(self.etcd.revision(), rev)

    def test_status_shows_drift_an_unowned_object_and_a_namespace_not_allowed(self):
        self.etcd.put("canary/default/shop/route", ROUTE)
        self.etcd.put("canary/cart/shop/route", ROUTE)
        self.sync()
        obj = self.ir()
        obj["spec"]["routes"][-1]["services"][0]["weight"] = 7    # a hand edit
        self.kube.put(G, "default", "ingressroutes", obj)
        self.kube.create(G, "shop", "ingressroutes", dict(
            HELM_IR, metadata={"name": "shop", "namespace": "shop"}))
        self.etcd.put("canary/shop/shop/route", ROUTE)
        rows = self.rows(reconcile={"namespaces": ["default", "shop"]})
        self.assertEqual((rows["default/shop"]["state"], rows["default/shop"]["live"]),
                         ("differs", {"shop-v1": 7, "shop-v2": 1}))
        self.assertEqual(rows["shop/shop"]["state"], "error")
        self.assertIn("IngressRoute shop/shop exists and is not managed by canary-bridge",
                      rows["shop/shop"]["error"])
        self.assertEqual(rows["cart/shop"]["state"], "error")
        self.assertEqual(rows["cart/shop"]["error"],
                         "namespace cart is not in reconcile.namespaces")

    def test_status_options_are_checked(self):
        for args, msg in ((["status", "-o", "yaml"], "-o takes json, got 'yaml'"),
                          (["diff", "-o", "json"], "-o goes with status"),
                          (["status", "shop"], "status takes a route as NAMESPACE/NAME, got "
                                               "'shop'"),
                          (["diff", "--dry-run"], "--dry-run goes with run or sync (render, "
                                                  "status, diff and check never write)")):
            code, out, err = self.run_cmd(*args)
            self.assertEqual(code, 2, args)
            self.assertIn("canary-bridge: " + msg + "\n", err)



# --------------------------------------------------------------------------------------------
# diff

class Diff(CommandCase):
    def test_diff_exits_0_1_2_as_kubectl_diff_and_writes_nothing(self):
        self.etcd.put("canary/default/shop/route", ROUTE)
        self.etcd.put("canary/default/shop/weights", "shop-v1=90, shop-v2=10")
        # Nothing there yet: the whole object would be created.
        code, out, err = self.run_cmd("diff")
        self.assertEqual(code, 1, out + err)
        self.assertTrue(out.startswith("--- live/IngressRoute/default/shop\n"
                                       "+++ desired/IngressRoute/default/shop\n@@ -0,0 +1,"), out)
        self.assertIn("\n+kind: IngressRoute\n", out)
        self.sync()
        code, out, err = self.run_cmd("diff")
        self.assertEqual((code, out), (0, ""), err)
        # A weight change: a unified diff of the live object against what a pass writes.
        self.etcd.put("canary/default/shop/weights", "shop-v1=50, shop-v2=50")
        since = self.mark()
        code, out, err = self.run_cmd("diff")
        self.assertEqual(code, 1, out + err)
        self.assertEqual(self.writes(since), [])
        hunks = re.findall(r"^@@ -(\d+),(\d+) \+(\d+),(\d+) @@$", out, re.M)
        self.assertTrue(hunks, out)
        removed = [ln for ln in out.splitlines() if ln.startswith("-") and not ln.startswith("---")]
        added = [ln for ln in out.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
        self.assertEqual(removed, ['-    canary-bridge.io/source-revision: "%s"'
                                   % self.ir()["metadata"]["annotations"][
                                       "canary-bridge.io/source-revision"],
                                   "-          weight: 90", "-          weight: 10"])
        self.assertEqual(added[1:], ["+          weight: 50", "+          weight: 50"])
        self.assertNotIn("managedFields", out)
        # The diff is exactly the change a pass makes.
        self.sync()
        self.assertEqual(weights_of(self.ir()), {"shop-v1": 50, "shop-v2": 50})
        self.assertEqual(self.run_cmd("diff")[:2], (0, ""))
        # A route that would fail: its error, exit 2, and the other routes' diffs still.
        self.etcd.put("canary/default/bad/route", ROUTE)
        self.etcd.put("canary/default/bad/weights", "shop-v1=fifty")
        self.etcd.put("canary/default/shop/weights", "shop-v1=40, shop-v2=60")
        since = self.mark()
        code, out, err = self.run_cmd("diff")
        self.assertEqual(code, 2, out + err)
        self.assertIn("error: route default/bad: canary/default/bad/weights:", err)
        self.assertIn("+          weight: 40\n", out)
        # One route by name.
        code, out, err = self.run_cmd("diff", "default/shop")
        self.assertEqual(code, 1, out + err)
        self.assertNotIn("default/bad", out + err)
        # No answer from the API server is an error, not "no changes".
        self.kube.fault(path_regex="ingressroutes", action="hang", count=-1)
        code, out, err = self.run_cmd("diff", "--timeout", "2s")
        self.assertEqual(code, 2, out + err)
        self.assertIn("diff: not finished within 2 s", err)
        self.assertEqual(self.writes(since), [])

    def test_diff_of_a_patched_route_and_of_a_deletion(self):
        self.kube.create(G, "shop", "ingressroutes", HELM_IR)
        self.etcd.put("canary/shop/web/weights", '{"web-v2": 25}')
        self.etcd.put("canary/default/cart/route", ROUTE.replace("shop", "cart"))
        self.sync(reconcile={"policy": "sync"})
        self.etcd.put("canary/shop/web/weights", '{"web-v2": 40}')
        self.etcd.delete("canary/default/cart/route")
        self.etcd.put("canary/default/keep/route", ROUTE)     # the guard allows one deletion
        self.sync(reconcile={"policy": "sync"})
        self.etcd.put("canary/shop/web/weights", '{"web-v2": 60}')
        since = self.mark()
        code, out, err = self.run_cmd("diff", reconcile={"policy": "sync"})
        self.assertEqual(code, 1, out + err)
        self.assertIn("--- live/IngressRoute/shop/web\n+++ desired/IngressRoute/shop/web\n", out)
        changed = [ln for ln in out.splitlines() if ln[:1] in "+-" and ln[:3] not in "---+++"]
        # Only the weight, in both routes of the object; its labels and annotations stay.
        self.assertEqual(changed, ["-          weight: 40", "+          weight: 60"] * 2, out)
        self.assertEqual(self.writes(since), [])
        # Keys gone under policy sync: the objects would be deleted.
        self.etcd.delete("canary/default/keep/route")
        code, out, err = self.run_cmd("diff", "default/keep", reconcile={"policy": "sync"})
        self.assertEqual(code, 1, out + err)
        self.assertRegex(out, r"^--- live/IngressRoute/default/keep\n"
                              r"\+\+\+ desired/IngressRoute/default/keep\n@@ -1,\d+ \+0,0 @@\n")
        self.assertEqual(self.writes(since), [])


class Brakes(CommandCase):
    """status and diff judge the brakes (docs/usage.md section 15) as a pass does."""

    def test_freeze_abort_and_max_step_in_status_and_diff(self):
        for name in ("shop", "cart", "big"):
            self.etcd.put("canary/default/%s/route" % name, ROUTE)
            self.etcd.put("canary/default/%s/weights" % name, "shop-v1=90, shop-v2=10")
        self.sync()
        self.etcd.put("canary/default/shop/freeze", "release window")
        self.etcd.put("canary/default/shop/weights", "shop-v1=50, shop-v2=50")
        self.etcd.put("canary/default/cart/abort", "5xx on v2")
        self.etcd.put("canary/default/big/weights", "shop-v1=10, shop-v2=90")
        since, rev = self.mark(), self.etcd.revision()
        code, out, err = self.run_cmd("status", "-o", "json", reconcile={"max_step": 25})
        self.assertEqual(code, 0, out + err)
        rows = {r["route"]: r for r in json.loads(out)["routes"]}
        shop, cart, big = rows["default/shop"], rows["default/cart"], rows["default/big"]
        self.assertEqual((shop["state"], shop["brake"], shop["error"]),
                         ("frozen", "frozen", "frozen: release window; a change waits"))
        self.assertEqual(shop["live"], {"shop-v1": 90, "shop-v2": 10})
        self.assertEqual((cart["state"], cart["brake"], cart["desired"]),
                         ("differs", "aborted", {"shop-v1": 100, "shop-v2": 0}))
        self.assertEqual(cart["error"], "aborted: 5xx on v2; all traffic on the first service")
        self.assertEqual(big["state"], "error")
        self.assertRegex(big["error"], r"^max step: shop-v\d would move 80 points, max_step is 25")

        code, out, err = self.run_cmd("diff", "default/shop")
        self.assertEqual(code, 0, out + err)           # a sync now writes nothing
        self.assertIn("+          weight: 50\n", out)   # but the change that waits shows
        self.assertIn("note: route default/shop is frozen (release window): its change waits "
                      "until the freeze ends", err)
        code, out, err = self.run_cmd("diff", "default/cart")
        self.assertEqual(code, 1, out + err)
        self.assertIn("+          weight: 100\n", out)
        self.assertIn("note: route default/cart is aborted (5xx on v2)", err)
        code, out, err = self.run_cmd("diff", "default/big", reconcile={"max_step": 25})
        self.assertEqual((code, out), (2, ""), err)
        self.assertIn("error: route default/big: max step:", err)
        self.assertEqual(self.writes(since), [])
        self.assertEqual(self.etcd.revision(), rev)
        # What status said is what a sync does (and it fails over the refused step).
        code, out, err = self.run_cmd("sync", reconcile={"max_step": 25})
        self.assertEqual(code, 1, err)
        weights = {n: weights_of(self.ir(n)) for n in ("shop", "cart", "big")}
        self.assertEqual(weights, {"shop": {"shop-v1": 90, "shop-v2": 10},
                                   "cart": {"shop-v1": 100, "shop-v2": 0},
                                   "big": {"shop-v1": 90, "shop-v2": 10}})


# --------------------------------------------------------------------------------------------
# render

class Render(CommandCase):
    def render(self, *args, **sections):
        code, out, err = self.run_cmd("render", *args, **sections)
        return code, [d for d in yaml.safe_load_all(out) if d], err

    def test_render_of_a_patched_route_is_the_live_object_with_the_new_weights(self):
        self.kube.create(G, "shop", "ingressroutes", HELM_IR)
        self.etcd.put("canary/shop/web/weights", '{"web-v2": 25}')
        since = self.mark()
        code, docs, err = self.render("shop/web")
        self.assertEqual(code, 0, err)
        self.assertEqual(len(docs), 1)
        obj = docs[0]
        self.assertNotIn("weights", obj)
        want = json.loads(json.dumps(HELM_IR))
        for route in want["spec"]["routes"]:
            route["services"][1]["weight"] = 25
        self.assertEqual(obj, want)        # no server fields: uid, resourceVersion, ...
        self.assertEqual(self.writes(since), [])

    def test_render_keeps_the_live_labels_and_annotations_of_an_owned_object(self):
        self.etcd.put("canary/default/shop/route", ROUTE)
        self.sync()
        self.kube.merge_patch(G, "default", "ingressroutes", "shop", {"metadata": {
            "labels": {"team": "checkout"}, "annotations": {"example.com/owner": "ops"}}})
        self.etcd.put("canary/default/shop/weights", "shop-v1=70, shop-v2=30")
        code, docs, err = self.render()
        self.assertEqual(code, 0, err)
        meta = docs[0]["metadata"]
        self.assertEqual(meta["labels"]["team"], "checkout")
        self.assertEqual(meta["labels"]["app.kubernetes.io/managed-by"], "canary-bridge")
        self.assertEqual(meta["annotations"]["example.com/owner"], "ops")
        self.assertEqual(weights_of(docs[0]), {"shop-v1": 70, "shop-v2": 30})
        for field in ("resourceVersion", "uid", "creationTimestamp", "generation",
                      "managedFields"):
            self.assertNotIn(field, meta)

    def test_render_honours_reconcile_namespaces(self):
        self.etcd.put("canary/shop/a/route", ROUTE)
        self.etcd.put("canary/cart/b/route", ROUTE)
        code, docs, err = self.render(reconcile={"namespaces": ["shop"]})
        self.assertEqual(code, 1, err)
        self.assertEqual([(d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs],
                         [("shop", "a")])
        self.assertIn("error: route cart/b: namespace cart is not in reconcile.namespaces", err)


if __name__ == "__main__":
    unittest.main()
