"""The daemon through a whole scenario under valgrind: start,
initial sync, edits, a bad value, a 409, drift, then SIGTERM. memcheck must
report no errors and no definite or indirect leaks (valgrind's exit code)."""
import os
import shutil
import signal
import stat
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
from cbtest import Bridge, Etcd, KubeAPI, REPO, bridge_config, wait_until, mw_name  # noqa: E402

G = "traefik.io"
ROUTE = """match: Host(`shop.example.com`)
services:
  - {name: shop-v1, port: 80}
  - {name: shop-v2, port: 80}
"""
HEADERS = """- name: beta
  header: X-Canary
  value: always
  service: shop-v2
  setRequestHeaders: {X-Canary-Route: beta}
"""
VALGRIND_ERROR = 99


def weights_of(obj):
    return obj and {s["name"]: s.get("weight") for s in obj["spec"]["routes"][-1]["services"]}


class UnderValgrind(unittest.TestCase):
    def setUp(self):
        # Decided per run, not at import: the sanitizer pass re-runs this module.
        if shutil.which("valgrind") is None:
            self.skipTest("valgrind is not installed")
        if os.environ.get("CANARY_SANITIZED"):
            self.skipTest("valgrind and ASan do not mix")

    def test_scenario_is_clean(self):
        with tempfile.TemporaryDirectory(prefix="cb-vg-") as d, Etcd(d) as etcd, \
                KubeAPI(d) as kube:
            binary = os.environ.get("CANARY_BRIDGE") or os.path.join(REPO, "build",
                                                                     "canary-bridge")
            wrapper = os.path.join(d, "bridge-under-valgrind")
            with open(wrapper, "w") as f:
                f.write("#!/bin/sh\nexec valgrind --quiet --error-exitcode=%d "
                        "--leak-check=full --errors-for-leak-kinds=definite,indirect "
                        "--show-leak-kinds=definite,indirect --track-fds=no %s \"$@\"\n"
                        % (VALGRIND_ERROR, binary))
            os.chmod(wrapper, stat.S_IRWXU)
            etcd.put("canary/default/shop/route", ROUTE)
            etcd.put("canary/default/shop/weights", "shop-v1=90, shop-v2=10")
            etcd.put("canary/default/shop/headers", HEADERS)
            cfg = bridge_config(etcd=etcd, kube=kube, reconcile={"policy": "sync"})
            b = Bridge(d, cfg, binary=wrapper)
            try:
                ir = lambda: kube.get(G, "default", "ingressroutes", "shop")
                wait_until(lambda: weights_of(ir()) == {"shop-v1": 90, "shop-v2": 10},
                           timeout=60, what="first sync under valgrind")
                etcd.put("canary/default/shop/weights", "shop-v1=bad")
                b.wait_log(r"canary/default/shop/weights: ", timeout=30)
                kube.fault(method="PUT", path_regex="/ingressroutes/shop$", status=409, count=1)
                etcd.put("canary/default/shop/weights", "shop-v1=50, shop-v2=50")
                wait_until(lambda: weights_of(ir()) == {"shop-v1": 50, "shop-v2": 50},
                           timeout=60, what="write after a 409")
                obj = ir()
                obj["spec"]["routes"][-1]["services"][0]["weight"] = 7
                kube.put(G, "default", "ingressroutes", obj)
                wait_until(lambda: weights_of(ir()) == {"shop-v1": 50, "shop-v2": 50},
                           timeout=60, what="drift put back")
                etcd.delete("canary/default/shop/headers")
                wait_until(lambda: kube.get(G, "default", "middlewares", mw_name("shop", "beta")) is None,
                           timeout=60, what="middleware pruned")
            finally:
                b.signal(signal.SIGTERM)
                code = b.proc.wait(timeout=60)
            self.assertNotEqual(code, VALGRIND_ERROR, "valgrind found errors:\n" + b.log_text())
            self.assertEqual(code, 0, b.log_text())


if __name__ == "__main__":
    unittest.main()
