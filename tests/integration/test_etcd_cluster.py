"""A three-member etcd cluster on loopback: the watched member stops
being worth watching while the rest of the cluster carries on, and the bridge must move.

  - Partition: the watched member is cut off from its two peers (its raft links go through
    cuttable proxies, see cbtest.EtcdCluster), the other two keep their majority and take
    writes.  The bridge opens its watch with etcd's require-leader flag, so the member,
    once it has no leader, ends the watch ("etcdserver: no leader") and the bridge moves to
    another endpoint.
  - Freeze: the watched member is SIGSTOPped.  Its kernel still answers on the watch's
    TCP connection, so only the bridge's liveness check (source.liveness_check, default 5s)
    notices, and the bridge moves to another endpoint.

In both cases a write made through the majority must reach the API test server, and the
watch resumes from the last revision (nothing is listed again).  Waits are on conditions;
the budgets are generous because a leader election and the default liveness interval take
seconds."""
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
from cbtest import Bridge, EtcdCluster, KubeAPI, bridge_config, wait_until  # noqa: E402

G = "traefik.io"
SLOW = 3 if os.environ.get("CANARY_SANITIZED") == "1" else 1
ROUTE = """match: Host(`shop.example.com`) && PathPrefix(`/`)
services:
  - {name: shop-v1, port: 80}
  - {name: shop-v2, port: 80}
"""


def weights_of(obj):
    if not obj:
        return None
    return {s["name"]: s.get("weight") for s in obj["spec"]["routes"][-1]["services"]}


class ClusterCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="cb-cluster-")
        self.addCleanup(self.tmp.cleanup)
        self.kube = KubeAPI(self.tmp.name)
        self.addCleanup(self.kube.stop)
        self.etcd = EtcdCluster(self.tmp.name)
        self.addCleanup(self.etcd.stop)
        self.etcd.put("canary/default/shop/route", ROUTE, via=[0])
        self.etcd.put("canary/default/shop/weights", "shop-v1=90, shop-v2=10", via=[0])
        cfg = bridge_config(kube=self.kube, source={"type": "etcd", "endpoints": self.etcd.urls})
        self.bridge = Bridge(self.tmp.name, cfg)
        self.addCleanup(self.bridge.stop)
        # The first endpoint is the one watched.
        self.bridge.wait_log(r"watching 'canary/' from revision", timeout=20 * SLOW)
        self.assertIn("connected to %s," % self.etcd.members[0].url, self.bridge.log_text())
        self.wait_weights({"shop-v1": 90, "shop-v2": 10})

    def ir(self):
        return self.kube.get(G, "default", "ingressroutes", "shop")

    def wait_weights(self, want, timeout=20):
        try:
            wait_until(lambda: weights_of(self.ir()) == want, timeout * SLOW,
                       what="IngressRoute default/shop weights %r" % want)
        except AssertionError as e:
            raise AssertionError("%s (have %r)\n--- bridge log tail ---\n%s"
                                 % (e, weights_of(self.ir()), self.bridge.log_tail(30)))

    def assert_moved_without_relisting(self, since):
        log = self.bridge.log_text()[since:]
        others = [m.url for m in self.etcd.members[1:]]
        self.assertTrue(any("reconnected to %s," % u in log for u in others),
                        "the bridge did not move to another member:\n" + log)
        self.assertNotIn("re-list", log)


class Partition(ClusterCase):
    def test_a_member_cut_off_from_its_peers_is_left_for_the_majority(self):
        since = self.bridge.log_size()
        self.etcd.partition(0)
        self.addCleanup(self.etcd.heal)
        # The other two elect a leader if they must, and take the write.
        self.etcd.put("canary/default/shop/weights", "shop-v1=40, shop-v2=60", via=[1, 2])
        self.wait_weights({"shop-v1": 40, "shop-v2": 60}, timeout=40)
        self.assertIn("etcdserver: no leader", self.bridge.log_text()[since:])
        self.assert_moved_without_relisting(since)


class Freeze(ClusterCase):
    def test_a_frozen_member_is_left_for_another(self):
        since = self.bridge.log_size()
        m0 = self.etcd.members[0]
        m0.pause()
        self.addCleanup(m0.resume)
        self.etcd.put("canary/default/shop/weights", "shop-v1=30, shop-v2=70", via=[1, 2])
        self.wait_weights({"shop-v1": 30, "shop-v2": 70}, timeout=40)
        self.assertIn("did not answer the liveness check", self.bridge.log_text()[since:])
        self.assert_moved_without_relisting(since)


if __name__ == "__main__":
    unittest.main()
