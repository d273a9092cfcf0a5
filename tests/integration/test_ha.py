"""Two bridges, one Lease: exactly one writes; the other keeps its
caches warm, takes over when the leader dies (within about one lease
duration) or hands over (at once, on SIGTERM); Events record what changed."""
import os
import re
import signal
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
from cbtest import Bridge, Etcd, KubeAPI, bridge_config, wait_until  # noqa: E402

G = "traefik.io"
ROUTE = """match: Host(`shop.example.com`)
services:
  - {name: shop-v1, port: 80}
  - {name: shop-v2, port: 80}
"""
WROTE = r"route default/shop: IngressRoute shop (created|written)"


def weights_of(obj):
    return obj and {s["name"]: s.get("weight") for s in obj["spec"]["routes"][-1]["services"]}


class LeaderElection(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="cb-ha-")
        self.addCleanup(self.tmp.cleanup)
        self.etcd = Etcd(self.tmp.name)
        self.addCleanup(self.etcd.stop)
        self.kube = KubeAPI(self.tmp.name)
        self.addCleanup(self.kube.stop)
        self.etcd.put("canary/default/shop/route", ROUTE)

    def start(self, identity):
        cfg = bridge_config(etcd=self.etcd, kube=self.kube, leader_election={
            "enabled": True, "namespace": "default", "name": "canary-bridge",
            "lease_duration": "2s", "renew_deadline": "1500ms", "retry_period": "300ms",
            "identity": identity})
        b = Bridge(self.tmp.name, cfg, name="bridge-" + identity)
        self.addCleanup(b.stop)
        return b

    def ir(self):
        return self.kube.get(G, "default", "ingressroutes", "shop")

    def leader_of(self, *bridges):
        leaders = [b for b in bridges if re.search(r"became leader", b.log_text())]
        return leaders[0] if len(leaders) == 1 else None

    def test_one_leader_follower_takes_over_and_writes_nothing_before(self):
        a, b = self.start("host-a"), self.start("host-b")
        leader = wait_until(lambda: self.leader_of(a, b), what="one leader")
        follower = b if leader is a else a
        follower.wait_log(r"ready as a follower")
        wait_until(lambda: weights_of(self.ir()) == {"shop-v1": 1, "shop-v2": 1},
                   what="the leader's first sync")
        self.etcd.put("canary/default/shop/weights", "shop-v1=80, shop-v2=20")
        wait_until(lambda: weights_of(self.ir()) == {"shop-v1": 80, "shop-v2": 20},
                   what="an edit through the leader")
        lease = self.kube.get("coordination.k8s.io", "default", "leases", "canary-bridge")
        self.assertEqual(lease["spec"]["holderIdentity"],
                         "host-a" if leader is a else "host-b")
        self.assertNotRegex(follower.log_text(), WROTE)  # the follower never wrote
        # The leader dies without releasing: the follower waits the lease out.
        since = follower.log_size()
        leader.kill()
        follower.wait_log(r"became leader", since=since, timeout=15)
        self.etcd.put("canary/default/shop/weights", "shop-v1=30, shop-v2=70")
        wait_until(lambda: weights_of(self.ir()) == {"shop-v1": 30, "shop-v2": 70},
                   what="an edit through the new leader")
        # The weights are in the API server before the writer logs the write.
        follower.wait_log(WROTE, since=since)

    def test_sigterm_hands_the_lease_over(self):
        a = self.start("host-a")
        a.wait_log(r"became leader")
        wait_until(lambda: self.ir(), what="first sync")
        b = self.start("host-b")
        b.wait_log(r"ready as a follower")
        since = b.log_size()
        a.signal(signal.SIGTERM)
        self.assertEqual(a.proc.wait(timeout=15), 0)
        lease = self.kube.get("coordination.k8s.io", "default", "leases", "canary-bridge")
        # Released: empty holder (or already taken by b), never still host-a.
        self.assertNotEqual(lease["spec"].get("holderIdentity"), "host-a")
        b.wait_log(r"became leader", since=since, timeout=10)


class Events(unittest.TestCase):
    def test_events_record_weight_changes_and_failures(self):
        with tempfile.TemporaryDirectory(prefix="cb-ev-") as d, Etcd(d) as etcd, \
                KubeAPI(d) as kube:
            etcd.put("canary/default/shop/route", ROUTE)
            b = Bridge(d, bridge_config(etcd=etcd, kube=kube))
            try:
                etcd.put("canary/default/shop/weights", "shop-v1=90, shop-v2=10")
                wait_until(lambda: weights_of(kube.get(G, "default", "ingressroutes", "shop"))
                           == {"shop-v1": 90, "shop-v2": 10}, what="weights")

                def events():
                    r = kube.request("GET", "/api/v1/namespaces/default/events")
                    return r[2]["items"] if isinstance(r, tuple) else r["items"]

                def applied():
                    return [e for e in events() if e["reason"] == "Applied"
                            and "shop-v1=90 shop-v2=10" in e["message"]]
                ev = wait_until(applied, what="an Applied event")[0]
                self.assertEqual(ev["involvedObject"]["kind"], "IngressRoute")
                self.assertEqual(ev["involvedObject"]["name"], "shop")
                self.assertEqual(ev["type"], "Normal")
                self.assertRegex(ev["message"], r"from etcd revision \d+")
                etcd.put("canary/default/shop/weights", "shop-v1=oops")
                failed = wait_until(lambda: [e for e in events() if e["reason"] == "RouteFailed"],
                                    what="a RouteFailed event")[0]
                self.assertEqual(failed["type"], "Warning")
                self.assertIn("canary/default/shop/weights", failed["message"])
            finally:
                b.stop()


if __name__ == "__main__":
    unittest.main()
