"""Hold the test servers to the real ones: the same requests go to
tests/kubeapi/server.py and a real kube-apiserver v1.37, and to tests/consul/server.py and a
real Consul v1.16 agent, and every answer is reduced to what canary-bridge reads from it:
the status code, the Status body's status/reason/code/details (causes included) and message,
the objects' names, generations and whether the resourceVersion moved, the list paging
fields, the watch events, and for Consul the X-Consul-Index (as the write it names, since raw
raft indexes differ between servers), X-Consul-Knownleader, X-Consul-Default-Acl-Policy,
X-Consul-Results-Filtered-By-Acls, the content type and the body.  Any difference fails.

Both sides run the cases in one order, on one shared pair of servers per class (the real
ones take a while to start), so the state each case sees is the same on both sides."""
import json
import os
import re
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))
from cbtest import KubeAPI, wait_until  # noqa: E402
from consul import Consul  # noqa: E402
from real import RealConsul, RealKubeAPI, require_real  # noqa: E402

G = "traefik.io"
NS = "cmp"


def _ctype(headers):
    return (headers.get("Content-Type") or "").split(";")[0].strip()


# --------------------------------------------------------------------------------------------
# kube-apiserver

def route(name, weights=(90, 10), rv=None):
    obj = {"apiVersion": "traefik.io/v1alpha1", "kind": "IngressRoute",
           "metadata": {"name": name, "namespace": NS, "labels": {"app": "shop"}},
           "spec": {"entryPoints": ["web"],
                    "routes": [{"kind": "Rule", "match": "Host(`%s.example.com`)" % name,
                                "services": [{"name": "shop-v1", "port": 80,
                                              "weight": weights[0]},
                                             {"name": "shop-v2", "port": 80,
                                              "weight": weights[1]}]}]}}
    if rv is not None:
        obj["metadata"]["resourceVersion"] = rv
    return obj


class KubeSide:
    """One server and the resourceVersions seen on it so far.  Each case method returns
    what the bridge could notice, in a form equal across servers when they agree."""

    def __init__(self, api):
        self.api = api
        self.rv = {}        # label -> resourceVersion seen on this server

    def call(self, method, path, body=None, ctype="application/json", token=True):
        status, headers, data = self.api.request(method, path, body, ctype, token=token)
        return status, headers, data

    def rv_label(self, rv):
        for k, v in self.rv.items():
            if v == rv:
                return k
        return "new" if rv else rv

    def reduce(self, status, headers, data, remember=None):
        out = {"code": status, "type": _ctype(headers)}
        if not isinstance(data, dict):
            out["text"] = data
            return out
        out["kind"], out["apiVersion"] = data.get("kind"), data.get("apiVersion")
        if data.get("kind") == "Status":
            for k in ("status", "reason", "details"):
                out[k] = data.get(k)
            out["status_code"] = data.get("code")
            out["message"] = self.norm_message(data.get("message"))
            return out
        meta = data.get("metadata") or {}
        if data.get("kind", "").endswith("List"):
            out["items"] = [(o["metadata"]["name"], o["metadata"].get("generation"))
                            for o in data.get("items", [])]
            out["continue"] = bool(meta.get("continue"))
            out["remainingItemCount"] = meta.get("remainingItemCount")
            out["listRV"] = bool(meta.get("resourceVersion"))
            return out
        out["name"], out["namespace"] = meta.get("name"), meta.get("namespace")
        out["generation"] = meta.get("generation")
        out["meta_keys"] = sorted(k for k in meta if k != "managedFields")
        out["rv"] = self.rv_label(meta.get("resourceVersion"))
        out["spec"] = data.get("spec")
        if remember:
            self.rv[remember] = meta.get("resourceVersion")
        return out

    def norm_message(self, msg):
        # resourceVersions differ between servers: name them.
        if msg is None:
            return None
        for k, v in sorted(self.rv.items(), key=lambda kv: -len(kv[1] or "")):
            if v:
                msg = re.sub(r"\b%s\b" % re.escape(v), "<%s>" % k, msg)
        return re.sub(r"too old resource version: \d+ \(\d+\)",
                      "too old resource version: <old> (<oldest>)", msg)

    def path(self, plural="ingressroutes", name=None, ns=NS, group=G, **q):
        return self.api.path(group, ns, plural, name, **q)

    # ---- the cases, in order
    def k01_create(self):
        return self.reduce(*self.call("POST", self.path(), route("a")), remember="a1")

    def k02_get(self):
        return self.reduce(*self.call("GET", self.path(name="a")))

    def k03_update_current_rv(self):
        return self.reduce(*self.call("PUT", self.path(name="a"),
                                      route("a", (50, 50), self.rv["a1"])), remember="a2")

    def k04_update_stale_rv_conflict(self):
        return self.reduce(*self.call("PUT", self.path(name="a"),
                                      route("a", (0, 100), self.rv["a1"])))

    def k05_update_without_rv(self):
        return self.reduce(*self.call("PUT", self.path(name="a"), route("a", (0, 100))))

    def k06_create_existing(self):
        return self.reduce(*self.call("POST", self.path(), route("a")))

    def k07_create_invalid(self):
        bad = route("bad")
        bad["spec"]["routes"][0]["services"][0]["weight"] = "heavy"
        bad["spec"]["routes"][0]["services"][1]["weight"] = -1
        return self.reduce(*self.call("POST", self.path(), bad))

    def k08_merge_patch(self):
        return self.reduce(*self.call(
            "PATCH", self.path(name="a"),
            {"spec": {"routes": [route("a", (70, 30))["spec"]["routes"][0]]}},
            "application/merge-patch+json"), remember="a3")

    def k09_merge_patch_stale_rv(self):
        return self.reduce(*self.call(
            "PATCH", self.path(name="a"), {"metadata": {"resourceVersion": self.rv["a2"]}},
            "application/merge-patch+json"))

    def k10_list_limit_continue(self):
        for n in ("b", "c"):
            self.reduce(*self.call("POST", self.path(), route(n)), remember=n)
        pages, cont = [], None
        for _ in range(4):
            status, headers, data = self.call("GET", self.path(limit=1, **(
                {"continue": cont} if cont else {})))
            pages.append(self.reduce(status, headers, data))
            cont = (data.get("metadata") or {}).get("continue") if status == 200 else None
            if not cont:
                break
        return pages

    def k10b_list_continue_is_a_snapshot(self):
        # Pages after the first show the list at the first page's resourceVersion.
        status, headers, data = self.call("GET", self.path(limit=2))
        pages = [self.reduce(status, headers, data)]
        cont = data["metadata"]["continue"]
        for n in ("aa", "d"):       # one sorts into the first page, one after it
            self.reduce(*self.call("POST", self.path(), route(n)), remember=n)
        self.call("DELETE", self.path(name="c"))
        pages.append(self.reduce(*self.call("GET", self.path(limit=5, **{"continue": cont}))))
        self.reduce(*self.call("POST", self.path(), route("c")), remember="c")
        return pages

    def k11_list_bad_continue(self):
        out = self.reduce(*self.call("GET", self.path(limit=1, **{"continue": "bm90LWEtdG9rZW4"})))
        # What follows is the wording of Go's base64/JSON decoders: not compared.
        out["message"] = re.sub(r"(continue key is not valid: ).*", r"\1<why>", out["message"])
        return out

    def k12_watch_from_old_rv(self):
        status, headers, data = self.call("GET", self.path(
            watch="1", resourceVersion=self.rv["a1"], timeoutSeconds="1"))
        out = {"code": status, "type": _ctype(headers)}
        events = [json.loads(line) for line in data.splitlines() if line.strip()] \
            if isinstance(data, str) else [data]
        out["events"] = [(e["type"], e["object"]["metadata"]["name"],
                          e["object"]["metadata"].get("generation"),
                          self.rv_label(e["object"]["metadata"]["resourceVersion"]))
                         for e in events]
        return out

    def k13_watch_expired(self):
        status, headers, data = self.call("GET", self.path(watch="1", resourceVersion="1",
                                                           timeoutSeconds="5"))
        events = [json.loads(line) for line in data.splitlines() if line.strip()] \
            if isinstance(data, str) else [data]
        out = {"code": status, "type": _ctype(headers), "events": []}
        for e in events:
            o = e["object"]
            out["events"].append((e["type"], o.get("kind"), o.get("status"), o.get("reason"),
                                  o.get("code"), self.norm_message(o.get("message", ""))))
        return out

    def k14_get_missing(self):
        return self.reduce(*self.call("GET", self.path(name="nope")))

    def k15_get_unknown_resource(self):
        return self.reduce(*self.call("GET", self.path("nopes", name="x")))

    def k16_merge_patch_missing(self):
        return self.reduce(*self.call("PATCH", self.path(name="nope"), {"metadata": {}},
                                      "application/merge-patch+json"))

    def k17_delete_missing(self):
        return self.reduce(*self.call("DELETE", self.path(name="nope")))

    def k18_bad_token(self):
        return self.reduce(*self.call("GET", self.path(name="a"), token="not-a-token"))

    def k19_create_in_missing_namespace(self):
        obj = route("a")
        obj["metadata"]["namespace"] = "cmp-missing"
        return self.reduce(*self.call("POST", self.path(ns="cmp-missing"), obj))

    def k20_delete(self):
        out = self.reduce(*self.call("DELETE", self.path(name="c")))
        if out.get("details"):
            out["details"] = dict(out["details"], uid=bool(out["details"].get("uid")))
        return out

    def k21_lease_create_update(self):
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": "cmp-lease", "namespace": NS},
                 "spec": {"holderIdentity": "one", "leaseDurationSeconds": 15}}
        p = self.path("leases", group="coordination.k8s.io")
        out = [self.reduce(*self.call("POST", p, lease), remember="l1")]
        lease["spec"]["holderIdentity"] = "two"
        lease["metadata"]["resourceVersion"] = self.rv["l1"]
        out.append(self.reduce(*self.call("PUT", p + "/cmp-lease", lease), remember="l2"))
        lease["spec"]["holderIdentity"] = "three"       # stale: l1
        out.append(self.reduce(*self.call("PUT", p + "/cmp-lease", lease)))
        return out

    def k22_event_create(self):
        ev = {"apiVersion": "v1", "kind": "Event",
              "metadata": {"name": "a.cmp1", "namespace": NS},
              "involvedObject": {"apiVersion": "traefik.io/v1alpha1", "kind": "IngressRoute",
                                 "name": "a", "namespace": NS},
              "reason": "Synced", "message": "weights 70/30", "type": "Normal",
              "source": {"component": "canary-bridge"}, "count": 1}
        out = self.reduce(*self.call("POST", self.path("events", group=""), ev))
        out.pop("spec", None)
        return out


KUBE_CASES = sorted(n for n in vars(KubeSide) if re.match(r"k\d\d[a-z]?_", n))


class CompareKube(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        require_real("kube-apiserver")
        cls.tmp = tempfile.TemporaryDirectory(prefix="cb-cmp-kube-")
        try:
            cls.real = RealKubeAPI(cls.tmp.name, rbac=False)
            cls.fake = KubeAPI(cls.tmp.name)
        except BaseException:
            cls.tearDownClass()
            raise
        for api in (cls.real, cls.fake):
            status, _, data = api.request("POST", "/api/v1/namespaces", {
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
            assert status == 201, (status, data)
        # The test server keeps its whole history; make "2" too old as on the real one.
        cls.fake.compact()
        cls.sides = {"real": KubeSide(cls.real), "test": KubeSide(cls.fake)}
        cls.results = {name: {} for name in cls.sides}
        for name, side in cls.sides.items():
            for case in KUBE_CASES:
                cls.results[name][case] = getattr(side, case)()

    @classmethod
    def tearDownClass(cls):
        for s in ("real", "fake"):
            if hasattr(cls, s):
                getattr(cls, s).stop()
        cls.tmp.cleanup()

    def test_every_case_answers_alike(self):
        real, test = self.results["real"], self.results["test"]
        for case in KUBE_CASES:
            with self.subTest(case=case):
                self.assertEqual(test[case], real[case],
                                 "\n%s: the test server (first) differs from kube-apiserver"
                                 % case)


# --------------------------------------------------------------------------------------------
# Consul

class ConsulSide:
    """One agent.  Indexes are named after the write that produced them ("w3" = the KV
    store's index after the third write), which is the same on both sides when they agree."""

    def __init__(self, agent, mgmt, read_token, shop_token):
        self.c, self.mgmt, self.read, self.shop = agent, mgmt, read_token, shop_token
        self.marks = []         # [(label, index)] in write order

    def root_index(self):
        status, headers, _ = self.c.request("GET", "/v1/kv/?recurse", token=self.mgmt)
        return int(headers["X-Consul-Index"])

    def mark(self, label):
        self.marks.append((label, self.root_index()))

    def label(self, idx):
        if idx is None:
            return None
        idx = int(idx)
        for lab, v in self.marks:
            if v == idx:
                return lab
        below = [lab for lab, v in self.marks if v < idx]
        return "above %s" % below[-1] if below else "below all"

    def req(self, method, path, body=None, token=True, headers=None):
        return self.reduce(*self.fetch(method, path, body, token, headers))

    def fetch(self, method, path, body=None, token=True, headers=None):
        tok = self.mgmt if token is True else token
        return self.c.request(method, path, body, token=tok or None, headers=headers)

    def reduce(self, status, h, raw):
        out = {"code": status, "type": _ctype(h)}
        for k in ("X-Consul-Knownleader", "X-Consul-Default-Acl-Policy",
                  "X-Consul-Results-Filtered-By-Acls"):
            out[k] = h.get(k)
        out["X-Consul-Index"] = self.label(h.get("X-Consul-Index"))
        text = raw.decode("utf-8", "replace")
        if out["type"] == "application/json":
            data = json.loads(text) if text.strip() else None
            if isinstance(data, list) and data and isinstance(data[0], dict):
                data = [dict(e, CreateIndex=self.label(e["CreateIndex"]),
                             ModifyIndex=self.label(e["ModifyIndex"])) for e in data]
            out["json"] = data
        else:
            out["text"] = re.sub(r"AccessorID '[0-9a-f-]+'", "AccessorID '<id>'", text.strip())
        return out

    def put(self, key, value, label, **q):
        r = self.req("PUT", Consul.kv_path(key, **q), value)
        self.mark(label)
        return r

    def delete(self, key, label, **q):
        r = self.req("DELETE", Consul.kv_path(key, **q))
        self.mark(label)
        return r

    # ---- the cases, in order
    def c01_put(self):
        self.mark("w0")
        return [self.put("canary/default/shop/route", "match: Host(`x`)", "w1"),
                self.put("canary/default/shop/weights", "shop-v1=90, shop-v2=10", "w2"),
                self.put("canary/default/cart/weights", "cart-v1=50,cart-v2=50", "w3"),
                self.put("other/x", "y", "w4")]

    def c02_get(self):
        return self.req("GET", "/v1/kv/canary/default/shop/weights")

    def c03_get_missing(self):
        return self.req("GET", "/v1/kv/canary/default/nope/weights")

    def c04_recurse(self):
        return [self.req("GET", "/v1/kv/canary/?recurse"),
                self.req("GET", "/v1/kv/canary/default/shop/?recurse="),
                self.req("GET", "/v1/kv/nothing-here/?recurse")]

    def c05_keys(self):
        return [self.req("GET", "/v1/kv/canary/?keys"),
                self.req("GET", "/v1/kv/canary/?keys&separator=/"),
                self.req("GET", "/v1/kv/?keys&separator=/"),
                self.req("GET", "/v1/kv/nothing-here/?keys")]

    def c06_raw(self):
        return [self.req("GET", "/v1/kv/canary/default/shop/weights?raw"),
                self.req("GET", "/v1/kv/canary/default/nope?raw")]

    def c07_blocking_returns_on_write(self):
        idx = self.root_index()
        box = {}

        def query():
            box["r"] = self.fetch("GET", "/v1/kv/canary/?recurse&index=%d&wait=10s" % idx)
        t = threading.Thread(target=query)
        t.start()
        # Whether the query is already blocked or not, it must answer with this write.
        w = self.req("PUT", "/v1/kv/canary/default/shop/weights", "shop-v1=80, shop-v2=20")
        t.join(30)
        self.mark("w5")
        return [w, self.reduce(*box["r"]) if "r" in box else "no answer"]

    def c08_blocking_times_out_unchanged(self):
        idx = self.root_index()
        return self.req("GET", "/v1/kv/canary/?recurse&index=%d&wait=1s" % idx)

    def c09_blocking_index_ahead(self):
        # An index above the current one (after a snapshot restore) waits out `wait`.
        return self.req("GET", "/v1/kv/canary/?recurse&index=%d&wait=1s"
                        % (self.root_index() + 1000))

    def c10_cas(self):
        e = json.loads(self.c.request("GET", "/v1/kv/canary/default/shop/weights",
                                      token=self.mgmt)[2])[0]
        return [self.put("canary/default/shop/weights", "a", "w6", cas=0),
                self.put("canary/default/shop/weights", "b", "w7", cas=e["ModifyIndex"] - 1),
                self.put("canary/default/shop/weights", "c", "w8", cas=e["ModifyIndex"]),
                self.put("canary/default/new/status", "d", "w9", cas=0),
                self.req("GET", "/v1/kv/canary/default/shop/weights")]

    def c11_delete(self):
        return [self.delete("canary/default/cart/weights", "w10"),
                self.req("GET", "/v1/kv/canary/default/cart/weights"),
                self.req("GET", "/v1/kv/canary/default/cart/?recurse"),
                self.req("GET", "/v1/kv/canary/?recurse"),
                self.delete("canary/default/absent", "w11"),
                self.delete("canary/default/shop/route", "w12", cas=1)]

    def c12_bad_wait(self):
        return self.req("GET", "/v1/kv/canary/?recurse&index=1&wait=10")

    def c13_anonymous(self):
        return [self.req("GET", "/v1/kv/canary/?recurse", token=None),
                self.req("GET", "/v1/kv/?recurse", token=None),
                self.req("GET", "/v1/kv/canary/?keys", token=None),
                self.req("GET", "/v1/kv/canary/", token=None),          # the bridge's probe
                self.req("GET", "/v1/kv/canary/default/shop/weights", token=None),
                self.req("PUT", "/v1/kv/canary/default/shop/status", "x", token=None)]

    def c14_wrong_token(self):
        return [self.req("GET", "/v1/kv/canary/?recurse", token="0badc0de-0000-4000-8000-"
                         "000000000000"),
                self.req("GET", "/v1/kv/canary/", token="not-a-uuid")]

    def c15_read_token(self):
        return [self.req("GET", "/v1/kv/canary/?recurse", token=self.read)["code"],
                self.req("GET", "/v1/kv/canary/", token=self.read),
                self.req("PUT", "/v1/kv/canary/default/shop/status", "x", token=self.read)]

    def c17_restore_abandons_a_blocked_query(self):
        # Last: a real restore takes the data back too.  The test server's restore is
        # /_test/reset-index to the raft index the snapshot was taken at.
        if isinstance(self.c, RealConsul):
            path = os.path.join(self.c.dir, "cmp.snap")
            self.c.consul("snapshot", "save", path)
        else:
            raft = self.c.dump()["raft_index"]
        for i in range(3):
            self.put("canary/default/shop/weights", "shop-v1=%d, shop-v2=%d" % (i, 100 - i),
                     "r%d" % i)
        idx = self.root_index()
        box = {}

        def query():
            t0 = time.monotonic()
            box["r"] = self.fetch("GET", "/v1/kv/canary/?recurse&index=%d&wait=20s" % idx)
            box["early"] = time.monotonic() - t0 < 10
        t = threading.Thread(target=query)
        t.start()
        if isinstance(self.c, RealConsul):
            # No waiters list on a real agent: wait for the query's connection (the
            # harness connects from 127.0.0.2); the restore's CLI round trips take far
            # longer than the agent needs to read the request already sent on it.
            wait_until(lambda: _harness_conn_open(self.c.port), 10,
                       what="the blocking query's connection")
            self.c.consul("snapshot", "restore", path)
        else:
            self.c.wait_waiters(1, path_prefix="/v1/kv/canary/")
            self.c.reset_index(raft)
        t.join(40)
        r = box.get("r")
        after = self.root_index()
        return {"answered_before_its_wait": box.get("early"),
                "code": r and r[0],
                "index": r and self.label(r[1].get("X-Consul-Index")),
                "index_after": "lower" if after < idx else "not lower"}

    def c16_prefix_token(self):
        # A token that may read only part of the prefix: the recursive read leaves the
        # rest out and says so; the bridge must not take that for deletions.
        return [self.req("GET", "/v1/kv/canary/?recurse", token=self.shop),
                self.req("GET", "/v1/kv/canary/?keys", token=self.shop),
                self.req("GET", "/v1/kv/canary/", token=self.shop)]


def _harness_conn_open(port):
    """An ESTABLISHED TCP connection from 127.0.0.2 to 127.0.0.1:port (/proc/net/tcp)."""
    want = "0100007F:%04X" % port
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1].startswith("0200007F:") and fields[2] == want and fields[3] == "01":
                return True
    return False


CONSUL_CASES = sorted(n for n in vars(ConsulSide) if re.match(r"c\d\d_", n))


class CompareConsul(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        require_real("consul")
        cls.tmp = tempfile.TemporaryDirectory(prefix="cb-cmp-consul-")
        try:
            cls.real = RealConsul(cls.tmp.name, acl_default_policy="deny", dev=False)
            real_read = cls.real.create_token('key_prefix "" { policy = "read" }')
            real_shop = cls.real.create_token('key_prefix "canary/default/shop/" '
                                              '{ policy = "read" }')
            read = "11111111-2222-4333-8444-555555555555"
            shop = "66666666-2222-4333-8444-555555555555"
            cls.fake = Consul(cls.tmp.name, acl_token=cls.real.acl_token, read_tokens=[read],
                              prefix_tokens={shop: ["canary/default/shop/"]})
        except BaseException:
            cls.tearDownClass()
            raise
        cls.sides = {"real": ConsulSide(cls.real, cls.real.acl_token, real_read, real_shop),
                     "test": ConsulSide(cls.fake, cls.real.acl_token, read, shop)}
        cls.results = {name: {} for name in cls.sides}
        for name, side in cls.sides.items():
            for case in CONSUL_CASES:
                cls.results[name][case] = getattr(side, case)()

    @classmethod
    def tearDownClass(cls):
        for s in ("real", "fake"):
            if hasattr(cls, s):
                getattr(cls, s).stop()
        cls.tmp.cleanup()

    def test_every_case_answers_alike(self):
        real, test = self.results["real"], self.results["test"]
        for case in CONSUL_CASES:
            with self.subTest(case=case):
                self.assertEqual(test[case], real[case],
                                 "\n%s: the test server (first) differs from Consul" % case)


if __name__ == "__main__":
    unittest.main()
