"""The bridge against a real kube-apiserver: v1.37 built by tests/real/build.sh,
on its own etcd, RBAC on, the Traefik v3 CRDs from tests/kubeapi/crds/ applied and
deploy/rbac.yaml applied; the bridge authenticates as the canary-bridge ServiceAccount
with a token the apiserver issued, so it holds exactly the permissions rbac.yaml grants.

The source is a real etcd written with etcdctl, as an operator would.  One apiserver
serves the whole class (it takes a while to start on a busy 2-core machine); each test
works in a namespace of its own."""
import itertools
import os
import re
import subprocess
import sys
import tempfile
import threading
import unittest
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))
from cbtest import Bridge, Etcd, bridge_config, free_port, wait_until  # noqa: E402
from real import RBAC, RealKubeAPI, binary, require_real, write_kubeconfig  # noqa: E402

import yaml  # noqa: E402

G = "traefik.io"
ROUTE = """match: Host(`shop.example.com`) && PathPrefix(`/`)
entryPoints: [web]
services:
  - name: shop-v1
    port: 80
    weight: 80
  - name: shop-v2
    port: 80
    weight: 20
"""
_ns = itertools.count(1)


def weights_of(obj, route=-1):
    if not obj:
        return None
    return {s["name"]: s.get("weight") for s in obj["spec"]["routes"][route]["services"]}


class RealKubeCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        require_real("kube-apiserver")
        cls.tmp = tempfile.TemporaryDirectory(prefix="cb-real-kube-")
        try:
            cls.kube = RealKubeAPI(cls.tmp.name)
        except BaseException:
            cls.tmp.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.kube.stop()
        cls.tmp.cleanup()

    def setUp(self):
        self.ns = "t%d" % next(_ns)
        self.kube.apply_object({"apiVersion": "v1", "kind": "Namespace",
                                "metadata": {"name": self.ns}})
        # The bridge gives weight only to Services that can serve (backend checks).
        self.kube.add_services(self.ns, "shop-v1", "shop-v2", ports=[("http", 80)])
        self.dir = tempfile.mkdtemp(prefix="t-", dir=self.tmp.name)
        self.etcd = Etcd(self.dir)
        self.addCleanup(self.etcd.stop)

    def start_bridge(self, name="bridge", ready=r"ready: ", **sections):
        cfg = bridge_config(etcd=self.etcd, kube=self.kube, **sections)
        self.bridge = Bridge(self.dir, cfg, name=name)
        self.addCleanup(self.bridge.stop)
        if ready:
            self.bridge.wait_log(ready, timeout=30)
        return self.bridge

    def key(self, name, what):
        return "canary/%s/%s/%s" % (self.ns, name, what)

    def ir(self, name="shop"):
        return self.kube.get(G, self.ns, "ingressroutes", name)

    def wait_weights(self, want, name="shop", route=-1, timeout=20):
        try:
            return wait_until(lambda: weights_of(self.ir(name), route) == want, timeout,
                              what="IngressRoute %s/%s weights %r" % (self.ns, name, want))
        except AssertionError as e:
            raise AssertionError("%s (have %r)\n--- bridge log ---\n%s" % (
                e, weights_of(self.ir(name), route), self.bridge.log_tail())) from None


class OwnedMode(RealKubeCase):
    def test_etcdctl_put_lands_in_the_ingressroute(self):
        self.etcd.etcdctl("put", self.key("shop", "route"), ROUTE)
        self.start_bridge()
        self.wait_weights({"shop-v1": 80, "shop-v2": 20})
        rev = self.etcd.etcdctl("put", self.key("shop", "weights"), "shop-v1=90, shop-v2=10",
                                "-w", "json").stdout
        self.wait_weights({"shop-v1": 90, "shop-v2": 10})
        obj = self.ir()
        meta = obj["metadata"]
        self.assertEqual(meta["labels"]["app.kubernetes.io/managed-by"], "canary-bridge")
        self.assertEqual(meta["annotations"]["canary-bridge.io/source"], "etcd")
        self.assertIn('"revision":%s' % meta["annotations"]["canary-bridge.io/source-revision"],
                      rev.replace(" ", ""))
        # The real apiserver recorded the bridge's ServiceAccount as a field manager.
        self.assertTrue(meta.get("managedFields"))
        self.assertEqual(obj["spec"]["routes"][0]["match"],
                         "Host(`shop.example.com`) && PathPrefix(`/`)")
        # A second edit moves the weights again.
        self.etcd.etcdctl("put", self.key("shop", "weights"), "shop-v1=0, shop-v2=100")
        self.wait_weights({"shop-v1": 0, "shop-v2": 100})

    def test_route_in_a_namespace_that_does_not_exist_yet(self):
        # The API test server stores objects in any namespace; the real apiserver
        # answers 404 NotFound for the namespace until it exists.
        ns = self.ns + "-later"
        # Its Services live in the test's namespace: a namespace that does not exist has
        # none, and the backend checks would refuse the route before any create.
        route = ROUTE.replace("    port: 80\n", "    port: 80\n    namespace: %s\n" % self.ns)
        self.etcd.etcdctl("put", "canary/%s/shop/route" % ns, route)
        self.start_bridge(reconcile={"allow_cross_namespace": True})
        self.bridge.wait_log(r"route %s/shop: namespace %s does not exist \(creating IngressRoute "
                             r"%s/shop: HTTP 404 NotFound: namespaces \"%s\" not found\)"
                             % (ns, ns, ns, ns))
        self.kube.apply_object({"apiVersion": "v1", "kind": "Namespace",
                                "metadata": {"name": ns}})
        # A missing namespace is retried after 30 s, then less often, and at once when the
        # route's keys change: an operator who created the namespace edits a key.
        self.etcd.etcdctl("put", "canary/%s/shop/route" % ns, route + "\n# namespace created\n")
        wait_until(lambda: weights_of(self.kube.get(G, ns, "ingressroutes", "shop")) ==
                   {"shop-v1": 80, "shop-v2": 20}, 30,
                   what="IngressRoute created once the namespace exists")


class PatchedMode(RealKubeCase):
    def helm_route(self):
        return {"apiVersion": "traefik.io/v1alpha1", "kind": "IngressRoute",
                "metadata": {"name": "shop", "namespace": self.ns,
                             "labels": {"app": "shop", "helm.sh/chart": "shop-1.2.3"},
                             "annotations": {"meta.helm.sh/release-name": "shop"}},
                "spec": {"entryPoints": ["web"],
                         "routes": [
                             {"kind": "Rule", "match": "Host(`a.example.com`)", "priority": 5,
                              "services": [{"name": "shop-v1", "port": 80, "weight": 100},
                                           {"name": "shop-v2", "port": "http", "weight": 0}]},
                             {"kind": "Rule", "match": "Host(`b.example.com`)",
                              "services": [{"name": "shop-v1", "port": 80},
                                           {"name": "shop-v2", "port": 80}]}]}}

    def test_weights_put_patches_an_object_it_does_not_own(self):
        self.kube.create(G, self.ns, "ingressroutes", self.helm_route(),
                         fieldManager="helm")
        before = self.ir()
        self.start_bridge()
        self.etcd.etcdctl("put", self.key("shop", "weights"), '{"shop-v2": 25}')
        self.wait_weights({"shop-v1": 100, "shop-v2": 25}, route=0)
        after = self.ir()
        self.assertEqual(weights_of(after, 1), {"shop-v1": None, "shop-v2": 25})
        self.assertNotIn("app.kubernetes.io/managed-by", after["metadata"]["labels"])
        for obj in (before, after):
            for route in obj["spec"]["routes"]:
                for s in route["services"]:
                    s.pop("weight", None)
            for k in ("resourceVersion", "generation", "managedFields"):
                obj["metadata"].pop(k, None)
        self.assertEqual(before, after)
        self.assertEqual(self.ir()["metadata"]["generation"], 2)


def metric(port, name):
    """One unlabelled series from the bridge's /metrics, or None."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        text = r.read().decode()
    m = re.search(r"^%s(?:\{[^}]*\})?\s+(\S+)$" % re.escape(name), text, re.M)
    return float(m.group(1)) if m else None


class Behaviour(RealKubeCase):
    """What the API test server can only fake: real 409s from a rival writer, a hand edit
    put back, a watch the restarted apiserver expires after etcd was compacted, Lease
    leader election, Events, and the RBAC of deploy/rbac.yaml refusing what it does not
    grant."""

    def test_rbac_refuses_what_rbac_yaml_does_not_grant(self):
        tok = self.kube.bridge_token
        sa = "system:serviceaccount:canary-bridge:canary-bridge"
        for verb, method, path in (
                ("list", "GET", "/api/v1/namespaces/%s/secrets" % self.ns),
                ("get", "GET", "/api/v1/namespaces/%s/secrets/x" % self.ns),
                ("list", "GET", "/api/v1/namespaces/%s/configmaps" % self.ns),
                ("list", "GET", "/apis/coordination.k8s.io/v1/namespaces/%s/leases" % self.ns),
                ("delete", "DELETE",
                 "/apis/coordination.k8s.io/v1/namespaces/%s/leases/x" % self.ns),
                ("list", "GET", "/api/v1/namespaces/%s/events" % self.ns),
                ("create", "POST", "/api/v1/namespaces/%s/services" % self.ns),
                ("delete", "DELETE",
                 "/apis/discovery.k8s.io/v1/namespaces/%s/endpointslices/x" % self.ns),
                ("create", "POST", "/api/v1/namespaces")):
            with self.subTest(verb=verb, path=path):
                status, _, body = self.kube.request(method, path, {} if method == "POST"
                                                    else None, token=tok)
                self.assertEqual(status, 403, body)
                self.assertEqual(body["reason"], "Forbidden")
                self.assertIn('User "%s" cannot %s resource' % (sa, verb), body["message"])
        # ... and grants what the bridge needs (the same token, the same namespace).
        for path in (self.kube.path(G, self.ns, "ingressroutes"),
                     self.kube.path(G, self.ns, "middlewares"),
                     self.kube.path(G, self.ns, "traefikservices"),
                     self.kube.path("", self.ns, "services"),          # backend checks
                     self.kube.path("discovery.k8s.io", self.ns, "endpointslices")):
            self.assertEqual(self.kube.request("GET", path, token=tok)[0], 200, path)

    def test_hand_edit_is_put_back(self):
        self.etcd.etcdctl("put", self.key("shop", "route"), ROUTE)
        self.etcd.etcdctl("put", self.key("shop", "weights"), "shop-v1=90, shop-v2=10")
        self.start_bridge()
        self.wait_weights({"shop-v1": 90, "shop-v2": 10})
        # kubectl edit (a full PUT by an administrator)
        obj = self.ir()
        obj["spec"]["routes"][-1]["services"][0]["weight"] = 0
        obj["spec"]["routes"][-1]["services"][1]["weight"] = 100
        self.kube.put(G, self.ns, "ingressroutes", obj)
        self.wait_weights({"shop-v1": 90, "shop-v2": 10})
        # kubectl patch --type merge of the managed field
        routes = self.ir()["spec"]["routes"]
        routes[-1]["services"][0]["weight"] = 1
        self.kube.merge_patch(G, self.ns, "ingressroutes", "shop", {"spec": {"routes": routes}})
        self.wait_weights({"shop-v1": 90, "shop-v2": 10})
        self.assertRegex(self.bridge.log_text(), r"route %s/shop: IngressRoute shop written"
                         % self.ns)

    def test_rival_writer_gets_real_409s_and_the_bridge_converges(self):
        port = free_port()
        self.etcd.etcdctl("put", self.key("shop", "route"), ROUTE)
        # Unpaced, so the bridge's writes race the rival's (pacing would space
        # them 100 ms apart and a 409 might not happen at all).
        self.start_bridge(server={"listen": "127.0.0.1:%d" % port},
                          reconcile={"object_writes_per_second": 0})
        self.wait_weights({"shop-v1": 80, "shop-v2": 20})
        stop, ticks = threading.Event(), {"n": 0, "error": None}

        def rival():    # another controller stamping an annotation as fast as it can
            try:
                while not stop.is_set():
                    n = ticks["n"] + 1
                    self.kube.merge_patch(G, self.ns, "ingressroutes", "shop", {
                        "metadata": {"annotations": {"example.com/rival": str(n)}}})
                    ticks["n"] = n
            except Exception as e:       # noqa: BLE001 - reported below
                ticks["error"] = e
        t = threading.Thread(target=rival, daemon=True)
        t.start()
        try:
            for i in range(1, 31):
                self.etcd.put(self.key("shop", "weights"), "shop-v1=%d, shop-v2=%d"
                              % (i, 100 - i))
                if (metric(port, "canary_bridge_conflicts_total") or 0) >= 1 and i >= 10:
                    break
            self.wait_weights({"shop-v1": i, "shop-v2": 100 - i}, timeout=60)
        finally:
            stop.set()
            t.join(30)
        self.assertIsNone(ticks["error"])
        self.assertGreaterEqual(metric(port, "canary_bridge_conflicts_total") or 0, 1,
                                "no conflict counted in /metrics:\n" + self.bridge.log_tail())
        self.wait_weights({"shop-v1": i, "shop-v2": 100 - i})
        ann = self.ir()["metadata"]["annotations"]
        self.assertEqual(ann.get("example.com/rival"), str(ticks["n"]))

    def test_watch_expired_after_compaction_relists(self):
        self.etcd.etcdctl("put", self.key("shop", "route"), ROUTE)
        self.start_bridge()
        self.wait_weights({"shop-v1": 80, "shop-v2": 20})
        since = self.bridge.log_size()
        # Writes the bridge does not watch move etcd's revision on; compact there, then
        # restart the apiserver: its new watch cache starts past the bridge's
        # resourceVersion, so the bridge's re-watch is answered 410 Expired.
        for i in range(3):
            self.kube.apply_object({"apiVersion": "v1", "kind": "Namespace",
                                    "metadata": {"name": "%s-pad%d" % (self.ns, i)}})
        rev = str(self.kube.etcd.revision())
        self.kube.etcd.etcdctl("compact", rev)
        self.kube.restart_apiserver()
        self.bridge.wait_log(r"kubernetes: watch of ingressroutes expired \(.*too old "
                             r"resource version.*\); re-listing", since=since, timeout=60)
        self.etcd.etcdctl("put", self.key("shop", "weights"), "shop-v1=5, shop-v2=95")
        self.wait_weights({"shop-v1": 5, "shop-v2": 95}, timeout=30)
        # and a hand edit after the re-list is still seen and put back
        obj = self.ir()
        obj["spec"]["routes"][-1]["services"][0]["weight"] = 50
        self.kube.put(G, self.ns, "ingressroutes", obj)
        self.wait_weights({"shop-v1": 5, "shop-v2": 95})

    def test_events_posted_by_the_bridge(self):
        self.etcd.etcdctl("put", self.key("shop", "route"), ROUTE)
        self.start_bridge()
        self.etcd.etcdctl("put", self.key("shop", "weights"), "shop-v1=90, shop-v2=10")
        self.wait_weights({"shop-v1": 90, "shop-v2": 10})

        def events(reason):
            items = self.kube.list("", self.ns, "events")["items"]
            return [e for e in items if e["reason"] == reason]
        ev = wait_until(lambda: [e for e in events("Applied")
                                 if "shop-v1=90 shop-v2=10" in e["message"]], 20,
                        what="an Applied event")[0]
        self.assertEqual(ev["involvedObject"]["kind"], "IngressRoute")
        self.assertEqual(ev["involvedObject"]["name"], "shop")
        self.assertEqual(ev["involvedObject"]["namespace"], self.ns)
        self.assertEqual(ev["type"], "Normal")
        self.etcd.etcdctl("put", self.key("shop", "weights"), "shop-v1=oops")
        failed = wait_until(lambda: events("RouteFailed"), 20, what="a RouteFailed event")[0]
        self.assertEqual(failed["type"], "Warning")
        self.assertIn(self.key("shop", "weights"), failed["message"])
        self.assertNotRegex(self.bridge.log_text(), r"(?i)event.*(403|forbidden)")

    def test_lease_leader_election(self):
        self.etcd.etcdctl("put", self.key("shop", "route"), ROUTE)

        def start(identity):
            return self.start_bridge(name="bridge-" + identity, ready=None, leader_election={
                "enabled": True, "namespace": self.ns, "name": "canary-bridge",
                "lease_duration": "3s", "renew_deadline": "2s", "retry_period": "500ms",
                "identity": identity})
        a, b = start("host-a"), start("host-b")

        def leader():
            ls = [x for x in (a, b) if "became leader" in x.log_text()]
            return ls[0] if len(ls) == 1 else None
        first = wait_until(leader, 30, what="one leader")
        other = b if first is a else a
        other.wait_log(r"ready as a follower", timeout=30)
        self.bridge = first
        self.wait_weights({"shop-v1": 80, "shop-v2": 20})
        lease = self.kube.get("coordination.k8s.io", self.ns, "leases", "canary-bridge")
        self.assertEqual(lease["spec"]["holderIdentity"],
                         "host-a" if first is a else "host-b")
        since = other.log_size()
        first.kill()                                   # no release: the lease runs out
        other.wait_log(r"became leader", since=since, timeout=30)
        self.bridge = other
        self.etcd.etcdctl("put", self.key("shop", "weights"), "shop-v1=30, shop-v2=70")
        self.wait_weights({"shop-v1": 30, "shop-v2": 70})
        lease = self.kube.get("coordination.k8s.io", self.ns, "leases", "canary-bridge")
        self.assertEqual(lease["spec"]["holderIdentity"],
                         "host-b" if first is a else "host-a")
        self.assertGreaterEqual(lease["spec"].get("leaseTransitions", 0), 1)
        self.assertNotRegex(other.log_text()[:since], r"IngressRoute shop (created|written)")


class Commands(RealKubeCase):
    """check, and render piped into kubectl, against the real apiserver's RBAC and
    validation; kubectl is the one of the apiserver's release (tests/real/build.sh)."""

    SA_USER = "system:serviceaccount:%s:%s"

    def run_cmd(self, *args, kubeconfig=None, **sections):
        cfg = bridge_config(etcd=self.etcd, kube=self.kube, **sections)
        if kubeconfig:
            cfg["kubernetes"] = {"kubeconfig": kubeconfig}
        return Bridge(self.dir, cfg, start=False, name="cli").run_once(list(args), timeout=90)

    def limited_identity(self, rules):
        """A ServiceAccount of this test's namespace bound to a ClusterRole with these
        rules: its kubeconfig, once RBAC's authorizer has seen the binding."""
        name = "cb-limited-" + self.ns
        self.kube.apply_object({"apiVersion": "v1", "kind": "ServiceAccount",
                                "metadata": {"name": "cb-limited", "namespace": self.ns}})
        self.kube.apply_object({"apiVersion": "rbac.authorization.k8s.io/v1",
                                "kind": "ClusterRole", "metadata": {"name": name},
                                "rules": rules})
        self.kube.apply_object({"apiVersion": "rbac.authorization.k8s.io/v1",
                                "kind": "ClusterRoleBinding", "metadata": {"name": name},
                                "roleRef": {"apiGroup": "rbac.authorization.k8s.io",
                                            "kind": "ClusterRole", "name": name},
                                "subjects": [{"kind": "ServiceAccount", "name": "cb-limited",
                                              "namespace": self.ns}]})
        token = self.kube.service_account_token(self.ns, "cb-limited")
        wait_until(lambda: self.kube.request("GET", self.kube.path(G, None, "ingressroutes"),
                                             token=token)[0] == 200, 30,
                   what="the limited ServiceAccount allowed to list ingressroutes")
        return write_kubeconfig(os.path.join(self.dir, "limited.kubeconfig"), self.kube.url,
                                self.kube.ca, token)

    def test_check_passes_with_rbac_yaml_and_names_a_right_taken_away(self):
        sections = {"reconcile": {"policy": "sync"},
                    "leader_election": {"enabled": True, "namespace": self.ns}}
        code, out, err = self.run_cmd("check", **sections)
        self.assertEqual(code, 0, out + err)
        for kind in ("middlewares", "traefikservices", "ingressroutes"):
            for verb in ("list", "watch", "get", "create", "update", "delete"):
                self.assertIn("ok   %s %s.traefik.io in all namespaces\n" % (verb, kind), out)
        self.assertIn("ok   patch events in all namespaces\n", out)
        self.assertIn("ok   watch services in all namespaces\n", out)
        self.assertIn("ok   list endpointslices.discovery.k8s.io in all namespaces\n", out)
        for verb in ("get", "create", "update"):
            self.assertIn("ok   %s leases.coordination.k8s.io in ns %s\n" % (verb, self.ns), out)
        self.assertNotIn("FAIL", out)
        # The same ClusterRole without `update` on IngressRoutes (and without Leases).
        with open(RBAC) as f:
            rules = [d for d in yaml.safe_load_all(f) if d and d["kind"] == "ClusterRole"][0][
                "rules"]
        limited = []
        for r in rules:
            if "ingressroutes" in r["resources"]:
                limited.append(dict(r, resources=["middlewares", "traefikservices"]))
                limited.append(dict(r, resources=["ingressroutes"],
                                    verbs=[v for v in r["verbs"] if v != "update"]))
            elif "leases" not in r["resources"]:
                limited.append(r)
        kubeconfig = self.limited_identity(limited)
        code, out, err = self.run_cmd("check", kubeconfig=kubeconfig, **sections)
        self.assertEqual(code, 1, out + err)
        self.assertIn("FAIL update ingressroutes.traefik.io in all namespaces: denied\n", out)
        self.assertIn("ok   update middlewares.traefik.io in all namespaces\n", out)
        for verb in ("get", "create", "update"):
            self.assertIn("FAIL %s leases.coordination.k8s.io in ns %s: denied\n"
                          % (verb, self.ns), out)
        self.assertEqual(len(re.findall(r"^FAIL", out, re.M)), 4, out)
        # What check said is what the apiserver does with that identity.
        with open(kubeconfig) as f:
            token = yaml.safe_load(f)["users"][0]["user"]["token"]
        status, _, body = self.kube.request(
            "PUT", self.kube.path(G, self.ns, "ingressroutes", "x"),
            {"apiVersion": G + "/v1alpha1", "kind": "IngressRoute",
             "metadata": {"name": "x", "namespace": self.ns}, "spec": {"routes": []}},
            token=token)
        self.assertEqual(status, 403, body)
        self.assertIn('User "%s" cannot update resource "ingressroutes"'
                      % (self.SA_USER % (self.ns, "cb-limited")), body["message"])

    def kubectl(self, *args, input):
        require_real("kubectl")
        return subprocess.run([binary("kubectl"), "--kubeconfig", self.kube.admin_kubeconfig]
                              + list(args), input=input, capture_output=True, text=True,
                              timeout=120)

    def test_render_is_accepted_by_kubectl_apply_dry_run_and_kubectl_diff(self):
        require_real("kubectl")
        # An owned route the bridge applied, whose weights then changed; an object Helm
        # owns whose weights the bridge patches; a new route with a header Middleware.
        self.etcd.etcdctl("put", self.key("shop", "route"), ROUTE)
        helm = PatchedMode.helm_route(self)
        helm["metadata"]["name"] = "web"
        self.kube.create(G, self.ns, "ingressroutes", helm, fieldManager="helm")
        self.etcd.etcdctl("put", self.key("web", "weights"), '{"shop-v2": 25}')
        code, out, err = self.run_cmd("sync")
        self.assertEqual(code, 0, err)
        self.etcd.etcdctl("put", self.key("shop", "weights"), "shop-v1=50, shop-v2=50")
        self.etcd.etcdctl("put", self.key("web", "weights"), '{"shop-v2": 40}')
        self.etcd.etcdctl("put", self.key("new", "route"), ROUTE)
        self.etcd.put(self.key("new", "headers"), yaml.safe_dump([
            {"name": "beta", "header": "X-Canary", "value": "always", "service": "shop-v2",
             "setRequestHeaders": {"X-Canary-Route": "beta"}}]))
        self.kube.merge_patch(G, self.ns, "ingressroutes", "shop", {"metadata": {
            "labels": {"team": "checkout"}}})
        before = {n: self.ir(n) for n in ("shop", "web")}
        code, rendered, err = self.run_cmd("render")
        self.assertEqual(code, 0, err)
        docs = [d for d in yaml.safe_load_all(rendered) if d]
        self.assertEqual([(d["kind"], d["metadata"]["name"]) for d in docs],
                         [("Middleware", docs[0]["metadata"]["name"]), ("IngressRoute", "new"),
                          ("IngressRoute", "shop"), ("IngressRoute", "web")])

        applied = self.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered)
        self.assertEqual(applied.returncode, 0, applied.stdout + applied.stderr)
        self.assertNotIn("Required value", applied.stderr)
        for name, verb in (("shop", "configured"), ("web", "configured"),
                           ("new", "created")):
            self.assertIn("ingressroute.traefik.io/%s %s (server dry run)" % (name, verb),
                          applied.stdout)
        diffed = self.kubectl("diff", "-f", "-", input=rendered)
        self.assertEqual(diffed.returncode, 1, diffed.stdout + diffed.stderr)  # 1: differences
        self.assertRegex(diffed.stdout, r"\n-\s+weight: 80\n(.*\n)*?\+\s+weight: 50\n")
        self.assertEqual(len(re.findall(r"\n-\s+weight: 25\n\+\s+weight: 40\n", diffed.stdout)),
                         2, diffed.stdout)    # both routes of the patched object
        # A dry run: nothing changed; and the patched object kept Helm's labels.
        self.assertEqual({n: self.ir(n) for n in ("shop", "web")}, before)
        web = [d for d in docs if d["metadata"]["name"] == "web"][0]
        self.assertEqual(web["metadata"]["labels"], {"app": "shop", "helm.sh/chart": "shop-1.2.3"})
        self.assertEqual(weights_of(web, 0), {"shop-v1": 100, "shop-v2": 40})
        shop = [d for d in docs if d["metadata"]["name"] == "shop"][0]
        self.assertEqual(shop["metadata"]["labels"]["team"], "checkout")


if __name__ == "__main__":
    unittest.main()
