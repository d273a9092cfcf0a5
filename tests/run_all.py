#!/usr/bin/python3
"""run_all.py - run every test suite and print one summary line.

Suites: the cmocka unit tests (through `meson test`), then every Python
unittest module under tests/kubeapi, tests/consul and tests/integration. Each unit test
binary counts its cmocka cases; each Python test method counts once.
Exit status 0 only when nothing failed and something ran.
"""
import os
import re
import subprocess
import sys
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_unit():
    """meson test, counting cmocka's own per-case results from the logs."""
    build = os.path.join(ROOT, "build")
    proc = subprocess.run(["meson", "test", "-C", build, "--print-errorlogs", "-v"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout
    sys.stdout.write(out)
    passed = len(re.findall(r"^\[\s+OK\s+\]", out, re.M))
    failed = len(re.findall(r"^\[\s+FAILED\s+\]\s+\w", out, re.M))
    # A binary that crashed before printing its cases still counts as a failure.
    m = re.search(r"^Fail:\s+(\d+)", out, re.M)
    if m and int(m.group(1)) > 0 and failed == 0:
        failed = int(m.group(1))
    if proc.returncode != 0 and failed == 0:
        failed = 1
    return passed, failed


def run_python(start):
    path = os.path.join(ROOT, start)
    if not os.path.isdir(path):
        return 0, 0
    suite = unittest.defaultTestLoader.discover(path, pattern="test_*.py", top_level_dir=ROOT)
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    skipped = len(result.skipped)
    return result.testsRun - failed - skipped, failed


def main():
    sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
    os.environ.setdefault("CANARY_BRIDGE", os.path.join(ROOT, "build", "canary-bridge"))
    total_p = total_f = 0
    for name, fn in (("unit", run_unit),
                     ("kubeapi", lambda: run_python("tests/kubeapi")),
                     ("consul", lambda: run_python("tests/consul")),
                     ("integration", lambda: run_python("tests/integration"))):
        print(f"==== {name} tests", flush=True)
        p, f = fn()
        print(f"==== {name}: {p} passed, {f} failed", flush=True)
        total_p += p
        total_f += f
    print(f"{total_p} passed, {total_f} failed")
    return 0 if total_f == 0 and total_p > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
