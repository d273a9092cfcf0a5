"""Smoke test of the benchmarks: `bench/run.py --quick --only propagation` runs to
the end and prints its table with numbers in it.  No timing is asserted here: how fast the
bridge is belongs to bench/, and a slow CI machine must not fail over a figure."""
import os
import subprocess
import sys
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN = os.path.join(REPO, "bench", "run.py")
NUM = r"-?\d+\.\d+"


class BenchSmoke(unittest.TestCase):
    def test_quick_propagation_prints_a_table(self):
        env = dict(os.environ)
        env.setdefault("CANARY_BRIDGE", os.path.join(REPO, "build", "canary-bridge"))
        p = subprocess.run(["/usr/bin/python3", RUN, "--quick", "--only", "propagation"],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        out = p.stdout
        self.assertEqual(p.returncode, 0, "bench/run.py failed:\n%s\n%s" % (
            out[-3000:], p.stderr[-3000:]))
        self.assertIn("canary-bridge benchmarks", out)
        self.assertRegex(out, r"machine: \d+ CPUs")
        self.assertRegex(out, r"path\s+changes\s+p50\s+p90\s+p99\s+max")
        for row in ("bridge, etcd", r"bridge, consul \(\d\.\d\d s apart\)",
                    r"bridge, consul \(back-to-back\)"):
            # label, a count, then p50 p90 p99 max as numbers
            self.assertRegex(out, r"(?m)^\s*%s\s+\d+\s+%s\s+%s\s+%s\s+%s" % (
                row, NUM, NUM, NUM, NUM), "no numeric row %r in:\n%s" % (row, out))
        # The back-to-back rows take routes in turn, so write pacing (a route written less
        # than 0.1 s ago waits) is not what they measure; each row says how many waited.
        for row in ("etcd", "consul_b2b"):
            self.assertRegex(out, r"(?m)^\s*%s: \d+ routes in turn: .*passes delayed by write "
                             r"pacing: \d+; burst holds: \d+$" % row)
        self.assertIn("Targets", out)
        self.assertRegex(out, r"(?m)^total \d+ s$")


if __name__ == "__main__":
    sys.exit(unittest.main())
