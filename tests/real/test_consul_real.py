"""The bridge against a real Consul agent (issue 12): the source behaviour suite that
tests/integration/test_sources.py runs against etcd and the Consul KV test server, run
again with `consul agent -dev` (v1.16.3, built by tests/real/build.sh) as the source,
and a plain put through the consul CLI landing in the IngressRoute.

The Kubernetes side is the API test server here (its request log is how the suite counts
object writes); tests/real/test_kube_real.py puts the bridge against a real apiserver."""
import os
import re
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
from real import RealConsul, require_real  # noqa: E402
from tests.integration.test_sources import ROUTE, SourceSuite, weights_of  # noqa: E402

G = "traefik.io"


class RealConsulSource(SourceSuite, unittest.TestCase):
    """SourceSuite with a real agent.  Every scenario but the restart runs on `consul
    agent -dev`; an in-memory dev agent forgets its KV store when it stops, so the restart
    scenario uses a one-node server with a data dir, as a production agent would."""
    source_name = "consul"

    @classmethod
    def setUpClass(cls):
        require_real("consul")

    def start_source(self):
        dev = self._testMethodName != "test_source_restart_survived"
        self.consul = RealConsul(self.tmp.name, dev=dev)
        self.addCleanup(self.consul.stop)

    def source_config(self):
        return {"source": {"type": "consul", "address": self.consul.url, "prefix": "canary/"}}

    def put(self, key, value):
        self.assertTrue(self.consul.put(key, value))       # as the UI writes: text/plain, no cas
        return self.revision_of(key)

    def delete(self, key):
        self.consul.delete(key)

    def delete_folder(self, prefix):
        self.consul.delete(prefix, recurse=True)    # the UI's "Delete folder"

    def get(self, key):
        return self.consul.get(key)

    def revision_of(self, key):
        return self.consul.entry(key)["ModifyIndex"]

    def status_writes(self, key):
        # A real agent has no request log API, but at log level debug it logs every HTTP
        # request it finished ("Request finished: method=PUT url=/v1/kv/<key>?cas=...").
        pat = re.compile(r"Request finished: method=PUT url=/v1/kv/%s(\?\S*)? "
                         % re.escape(key))
        return len(pat.findall(self.consul.log_text()))

    def kill_source(self):
        self.consul.kill()

    def restart_source(self):
        self.consul.start()      # same ports, same data dir (dev=False for this scenario)


class RealConsulCLI(unittest.TestCase):
    """`consul kv put`, the operator's command line, moves the weights."""

    @classmethod
    def setUpClass(cls):
        require_real("consul")

    def test_consul_kv_put_lands_in_the_ingressroute(self):
        import tempfile
        from cbtest import Bridge, KubeAPI, bridge_config, wait_until
        tmp = tempfile.TemporaryDirectory(prefix="cb-real-consul-")
        self.addCleanup(tmp.cleanup)
        kube = KubeAPI(tmp.name)
        self.addCleanup(kube.stop)
        consul = RealConsul(tmp.name)
        self.addCleanup(consul.stop)
        consul.consul("kv", "put", "canary/default/shop/route", ROUTE)
        bridge = Bridge(tmp.name, bridge_config(consul_address=consul.url, kube=kube))
        self.addCleanup(bridge.stop)
        bridge.wait_log(r"ready: ", timeout=20)

        def weights():
            return weights_of(kube.get(G, "default", "ingressroutes", "shop"))
        wait_until(lambda: weights() == {"shop-v1": 80, "shop-v2": 20}, 20,
                   what="IngressRoute from the route key")
        out = consul.consul("kv", "put", "canary/default/shop/weights", "shop-v1=25, shop-v2=75")
        self.assertIn("Success!", out.stdout)
        wait_until(lambda: weights() == {"shop-v1": 25, "shop-v2": 75}, 20,
                   what="weights 25/75 after consul kv put")
        ann = kube.get(G, "default", "ingressroutes", "shop")["metadata"]["annotations"]
        self.assertEqual(ann["canary-bridge.io/source"], "consul")
        self.assertEqual(ann["canary-bridge.io/source-revision"],
                         str(consul.entry("canary/default/shop/weights")["ModifyIndex"]))


if __name__ == "__main__":
    unittest.main()
