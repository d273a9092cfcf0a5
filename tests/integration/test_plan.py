"""End to end: ramp plans (the `plan` key, docs/usage.md section 14) on etcd and on Consul
with the Kubernetes API test server.

Holds are short (1s-2s) and every wait is for a condition (the IngressRoute's weights, the
status key the bridge writes back); nothing asserts how long anything took. Services are
made by the tests (auto_services off) so that one can lack ready endpoints."""
import json
import os
import sys
import tempfile
import unittest
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
from cbtest import Bridge, Etcd, KubeAPI, bridge_config, free_port, wait_until  # noqa: E402
from consul import Consul  # noqa: E402

G = "traefik.io"
ROUTE = """match: Host(`shop.example.com`)
services:
  - name: shop-v1
    port: 80
  - name: shop-v2
    port: 80
"""
KEY = "canary/default/shop/"
WAIT = 20


def weights_of(obj):
    if not obj:
        return None
    return {s["name"]: s.get("weight") for s in obj["spec"]["routes"][-1]["services"]}


class PlanCase:
    """Mixed into a unittest.TestCase with a source (start_source, put, delete, get)."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="cb-plan-")
        self.addCleanup(self.tmp.cleanup)
        self.start_source()
        self.kube = KubeAPI(self.tmp.name, auto_services=False)
        self.addCleanup(self.kube.stop)
        self.kube.add_service("default", "shop-v1", ports=80, ready=1)
        self.bridge = None

    def start_bridge(self):
        self.port = free_port()
        cfg = bridge_config(kube=self.kube, metrics_port=self.port, reconcile={"status": True},
                            **self.source_config())
        self.bridge = Bridge(self.tmp.name, cfg)
        self.addCleanup(self.bridge.stop)
        self.bridge.wait_log(r"ready: ", timeout=WAIT)
        return self.bridge

    def http(self, path):
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.port, path), timeout=10) as r:
            return r.read().decode()

    def events(self, reason):
        r = self.kube.request("GET", "/api/v1/namespaces/default/events")
        return [e for e in r[2].get("items", []) if e.get("reason") == reason]

    def ir(self):
        return self.kube.get(G, "default", "ingressroutes", "shop")

    def status(self):
        text = self.get(KEY + "status")
        return json.loads(text) if text else None

    def wait_status(self, pred, what):
        def ok():
            st = self.status()
            return st if st and pred(st) else None
        return wait_until(ok, WAIT, what="status %s (have %r)" % (what, self.status()))

    def wait_weights(self, want):
        return wait_until(lambda: weights_of(self.ir()) == want, WAIT,
                          what="weights %r (have %r)" % (want, weights_of(self.ir())))

    def plan_step(self, step, paused=None):
        def pred(st):
            p = st.get("plan")
            return p and p["step"] == step and (paused is None or p["paused"] == paused)
        return self.wait_status(pred, "at plan step %d" % step)

    def routed(self):
        self.kube.add_service("default", "shop-v2", ports=80, ready=1)
        self.put(KEY + "route", ROUTE)

    # ---- the tests, for both sources ----

    def test_ramp_restart_resumes_at_the_step(self):
        self.routed()
        self.start_bridge()
        self.put(KEY + "plan", "shop-v2: 50% 1s, 100%")
        self.wait_weights({"shop-v1": 50, "shop-v2": 50})
        st = self.plan_step(2)["plan"]
        self.assertEqual((st["steps"], st["weights"], st["paused"]),
                         (2, "shop-v1=0 shop-v2=100", False))
        self.wait_weights({"shop-v1": 0, "shop-v2": 100})
        start = st["start_ms"]
        # The status page and /metrics show the step; PlanStep Events tell each one.
        self.assertIn("plan step 2 of 2", self.http("/"))
        metrics = self.http("/metrics")
        self.assertIn('canary_bridge_plan_step{namespace="default",route="shop"} 2', metrics)
        self.assertIn("canary_bridge_plan_steps_total 2", metrics)
        # (Events of one reason on one object are aggregated: a count, the last message.)
        events = wait_until(lambda: (lambda ev: ev if sum(e.get("count", 1) for e in ev) == 2
                                     else None)(self.events("PlanStep")),
                            WAIT, what="two PlanStep Events")
        self.assertEqual(events[-1]["message"], "step 2 of 2: shop-v1=0 shop-v2=100, the last step")
        # A restart reads the start back from the status key: still step 2, same start,
        # and no write goes back to step 1's weights.
        self.bridge.stop()
        mark = len(self.kube.requests())
        self.start_bridge()
        self.bridge.wait_log(r"route default/shop: plan revision \d+ goes on from the status key",
                             timeout=WAIT)
        self.bridge.wait_log(r"ready: |sync", timeout=WAIT)
        st = self.plan_step(2)["plan"]
        self.assertEqual(st["start_ms"], start)
        self.assertEqual(weights_of(self.ir()), {"shop-v1": 0, "shop-v2": 100})
        writes = [r for r in self.kube.requests(since=mark)
                  if r["method"] in ("PUT", "POST") and "ingressroutes" in r["path"]]
        self.assertEqual(writes, [])

    def test_rewriting_the_same_plan_restarts_it(self):
        self.routed()
        self.start_bridge()
        plan = "shop-v1=100 shop-v2=0 1s; shop-v1=0 shop-v2=100"
        self.put(KEY + "plan", plan)
        self.plan_step(2)
        self.wait_weights({"shop-v1": 0, "shop-v2": 100})
        first = self.status()["plan"]
        self.write_again(KEY + "plan", plan)    # same text, new revision: a new plan
        st = self.wait_status(lambda s: s.get("plan") and
                              s["plan"]["revision"] != first["revision"],
                              "for the new plan revision")
        self.assertGreater(st["plan"]["start_ms"], first["start_ms"])
        self.plan_step(2)

    def test_weights_edit_pauses_the_plan(self):
        self.routed()
        self.start_bridge()
        self.put(KEY + "plan", "shop-v1=90 shop-v2=10 1h; shop-v1=0 shop-v2=100")
        self.wait_weights({"shop-v1": 90, "shop-v2": 10})
        rev = self.put(KEY + "weights", "shop-v1=70 shop-v2=30")
        self.wait_weights({"shop-v1": 70, "shop-v2": 30})
        st = self.wait_status(lambda s: s.get("plan", {}).get("paused"), "plan paused")
        self.assertEqual(st["message"], "plan paused: weights edited at revision %d" % rev)
        self.assertNotIn("next", st["plan"])

    def test_pause_key_holds_and_resume_keeps_the_rest_of_the_hold(self):
        self.routed()
        self.start_bridge()
        self.put(KEY + "plan", "shop-v1=100 shop-v2=0 2s; shop-v1=0 shop-v2=100")
        self.wait_weights({"shop-v1": 100, "shop-v2": 0})
        self.put(KEY + "pause", "checking the dashboards")
        st = self.plan_step(1, paused=True)
        self.assertEqual(st["plan"]["why"], "pause key: checking the dashboards")
        self.assertEqual(st["message"], "plan paused: pause key: checking the dashboards")
        self.assertNotIn("next", st["plan"])
        start, paused_ms = st["plan"]["start_ms"], st["plan"]["paused_ms"]
        self.assertEqual(weights_of(self.ir()), {"shop-v1": 100, "shop-v2": 0})
        self.delete(KEY + "pause")
        st = self.wait_status(lambda s: s.get("plan") and not s["plan"]["paused"]
                              and s["plan"]["start_ms"] != start, "resumed")
        # The start moved by the time paused: step 1 keeps what was left of its hold.
        self.assertGreater(st["plan"]["start_ms"], start)
        self.assertGreater(paused_ms, start)
        self.plan_step(2, paused=False)
        self.wait_weights({"shop-v1": 0, "shop-v2": 100})

    def test_step_refused_by_a_backend_check_pauses_the_plan(self):
        self.kube.add_service("default", "shop-v2", ports=80, ready=0)
        self.put(KEY + "route", ROUTE)
        self.start_bridge()
        self.put(KEY + "plan", "shop-v1=100 shop-v2=0 1s; shop-v1=0 shop-v2=100")
        self.wait_weights({"shop-v1": 100, "shop-v2": 0})
        st = self.wait_status(lambda s: s["message"].startswith("plan paused at step 2: "),
                              "plan paused at step 2")
        self.assertIn("shop-v2", st["message"])
        self.assertEqual((st["plan"]["step"], st["plan"]["paused"], st["plan"]["refused"]),
                         (2, True, True))
        self.assertEqual(weights_of(self.ir()), {"shop-v1": 100, "shop-v2": 0})
        self.kube.set_endpoints("default", "shop-v2", ready=1)
        self.wait_weights({"shop-v1": 0, "shop-v2": 100})
        self.wait_status(lambda s: s["state"] == "applied" and s.get("plan", {}).get("step") == 2
                         and not s["plan"]["paused"], "step 2 applied")

    def test_deleting_the_plan_leaves_its_weights(self):
        self.routed()
        self.put(KEY + "weights", "shop-v1=95 shop-v2=5")   # older than the plan
        self.start_bridge()
        self.wait_weights({"shop-v1": 95, "shop-v2": 5})
        self.put(KEY + "plan", "shop-v1=40 shop-v2=60")
        self.wait_weights({"shop-v1": 40, "shop-v2": 60})
        self.plan_step(1)
        self.delete(KEY + "plan")
        st = self.wait_status(lambda s: "plan" not in s and s.get("weights_held"),
                              "without a plan, weights held")
        self.assertEqual(st["state"], "applied")
        self.assertEqual(weights_of(self.ir()), {"shop-v1": 40, "shop-v2": 60})

    def test_bad_plan_names_key_and_step_and_loses_nothing(self):
        self.routed()
        self.put(KEY + "weights", "shop-v1=80 shop-v2=20")
        self.start_bridge()
        self.wait_weights({"shop-v1": 80, "shop-v2": 20})
        self.put(KEY + "plan", "steps:\n  - weights: {shop-v1: 50, shop-v2: 50}\n"
                               "  - weights: {shop-v1: 0, shop-v2: 100}\n    hold: 5x\n")
        st = self.wait_status(lambda s: s["state"] == "error", "error")
        self.assertTrue(st["message"].startswith("canary/default/shop/plan: step 2: hold: "),
                        st["message"])
        self.assertEqual(weights_of(self.ir()), {"shop-v1": 80, "shop-v2": 20})


class EtcdPlan(PlanCase, unittest.TestCase):
    def start_source(self):
        self.etcd = Etcd(self.tmp.name)
        self.addCleanup(self.etcd.stop)

    def source_config(self):
        return {"etcd": self.etcd}

    def put(self, key, value):
        self.etcd.put(key, value)
        r = self.etcd.call("/v3/kv/range", {"key": self.etcd._b64(key)})
        return int(r["kvs"][0]["mod_revision"])

    def delete(self, key):
        self.etcd.delete(key)

    def write_again(self, key, value):
        self.put(key, value)        # etcd: a put of the same bytes is a new mod_revision

    def get(self, key):
        return self.etcd.get(key)


class ConsulPlan(PlanCase, unittest.TestCase):
    def start_source(self):
        self.consul = Consul(self.tmp.name)
        self.addCleanup(self.consul.stop)

    def source_config(self):
        return {"consul_address": self.consul.url}

    def put(self, key, value):
        self.assertTrue(self.consul.put(key, value))
        return self.consul.entry(key)["ModifyIndex"]

    def delete(self, key):
        self.consul.delete(key)

    def write_again(self, key, value):
        # Consul keeps the ModifyIndex of a PUT that changes nothing: delete, then write.
        self.delete(key)
        self.put(key, value)

    def get(self, key):
        return self.consul.get(key)


class EtcdPlanLeaderChange(unittest.TestCase):
    """Two bridges, one Lease: the new leader goes on at the step in force (read back from
    the status key the old leader wrote), and a look-only `status` agrees with it."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="cb-plan-ha-")
        self.addCleanup(self.tmp.cleanup)
        self.etcd = Etcd(self.tmp.name)
        self.addCleanup(self.etcd.stop)
        self.kube = KubeAPI(self.tmp.name)
        self.addCleanup(self.kube.stop)
        self.etcd.put(KEY + "route", ROUTE)

    def config(self, identity):
        return bridge_config(etcd=self.etcd, kube=self.kube, reconcile={"status": True},
                             leader_election={
                                 "enabled": True, "namespace": "default", "name": "canary-bridge",
                                 "lease_duration": "2s", "renew_deadline": "1500ms",
                                 "retry_period": "300ms", "identity": identity})

    def start(self, identity):
        b = Bridge(self.tmp.name, self.config(identity), name="bridge-" + identity)
        self.addCleanup(b.stop)
        return b

    def status(self):
        text = self.etcd.get(KEY + "status")
        return json.loads(text) if text else None

    def test_new_leader_goes_on_at_the_step(self):
        a, b = self.start("host-a"), self.start("host-b")
        leader = wait_until(lambda: [x for x in (a, b) if "became leader" in x.log_text()],
                            WAIT, what="a leader")[0]
        follower = b if leader is a else a
        follower.wait_log(r"ready as a follower", timeout=WAIT)
        self.etcd.put(KEY + "plan", "shop-v1=90 shop-v2=10 1s; shop-v1=50 shop-v2=50 1h; "
                                    "shop-v1=0 shop-v2=100")
        st = wait_until(lambda: (lambda s: s if s and s.get("plan", {}).get("step") == 2
                                 and s["state"] == "applied" else None)(self.status()),
                        WAIT, what="step 2 applied (have %r)" % self.status())["plan"]
        self.assertNotIn("plan revision", follower.log_text())   # a follower moves nothing
        # Look-only: `status` works the step out from the status key as the leader did.
        cli = Bridge(self.tmp.name, self.config("cli"), start=False, name="cli")
        code, out, err = cli.run_once(["status", "-o", "json"])
        self.assertEqual(code, 0, out + err)
        row = json.loads(out)["routes"][0]
        self.assertEqual((row["desired"], row["state"]),
                         ({"shop-v1": 50, "shop-v2": 50}, "in sync"))
        mark = len(self.kube.requests())
        leader.stop()                                   # SIGTERM hands the Lease over
        follower.wait_log(r"became leader", timeout=WAIT)
        follower.wait_log(r"route default/shop: plan revision \d+ goes on from the status key",
                          timeout=WAIT)
        wait_until(lambda: self.status()["plan"]["start_ms"] == st["start_ms"] and
                   self.status()["plan"]["step"] == 2, WAIT, what="the same start and step")
        self.assertEqual(weights_of(self.kube.get(G, "default", "ingressroutes", "shop")),
                         {"shop-v1": 50, "shop-v2": 50})
        writes = [r for r in self.kube.requests(since=mark)
                  if r["method"] in ("PUT", "POST") and "ingressroutes" in r["path"]]
        self.assertEqual(writes, [])


if __name__ == "__main__":
    unittest.main()
