"""The README's demo command: its object-only part (what a user without root gets) runs to
the end and shows what it says: the weights put with etcdctl land in the IngressRoute and a
typo keeps the last good state. The part as root (real kube-apiserver and Traefik) runs the
same steps through tests/demo_real.py, whose pieces the real-server suites cover.

The demo's function is run as it is, sourced from tests/demo.sh, so the test follows the
script; it uses build/canary-bridge, as the demo does."""
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
from cbtest import REPO  # noqa: E402

RUN_OBJECT_DEMO = r"""set -euo pipefail
source <(sed -n '/^object_demo() {/,/^}/p' tests/demo.sh)
object_demo
"""


class ObjectDemo(unittest.TestCase):
    def setUp(self):
        if os.environ.get("CANARY_SANITIZED"):
            self.skipTest("the demo runs the plain build")
        if not os.path.exists(os.path.join(REPO, "build", "canary-bridge")):
            self.fail("build/canary-bridge is not built")

    def test_object_demo_runs_to_the_end(self):
        p = subprocess.run(["bash", "-c", RUN_OBJECT_DEMO], cwd=REPO, capture_output=True,
                           text=True, timeout=180)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("IngressRoute default/shop: shop-v1=90, shop-v2=10\n", p.stdout)
        self.assertIn("IngressRoute default/shop: shop-v1=50, shop-v2=50\n", p.stdout)
        self.assertIn("IngressRoute default/shop still: shop-v1=50, shop-v2=50   (the last "
                      "good state is kept)", p.stdout)
        self.assertIn("must be a non-negative integer, got fifty", p.stdout)


if __name__ == "__main__":
    unittest.main()
