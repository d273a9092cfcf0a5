#!/usr/bin/python3
"""run_all.py - run every test suite and print one summary line.

Suites: the cmocka unit tests (through `meson test`), then every Python
unittest module under tests/kubeapi, tests/consul, tests/integration and tests/real (the
bridge against real Consul, kube-apiserver and Traefik built by tests/real/build.sh;
CANARY_REAL=0 skips those only where they are not built). Each unit test
binary counts its cmocka cases; each Python test method counts once.
Exit status 0 only when nothing failed and something ran.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_unit(build="build"):
    """meson test, counting cmocka's own per-case results from the logs, plus
    each non-cmocka meson test (e.g. the systemd unit check) once."""
    build = os.path.join(ROOT, build)
    proc = subprocess.run(["meson", "test", "-C", build, "--print-errorlogs", "-v"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout
    sys.stdout.write(out)
    passed = len(re.findall(r"^\[\s+OK\s+\]", out, re.M))
    failed = len(re.findall(r"^\[\s+FAILED\s+\]\s+\w", out, re.M))
    passed += len(re.findall(r"^\s*\d+/\d+\s+canary-bridge:(?:systemd|style) / \S+\s+OK", out, re.M))
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


def run_fuzz():
    """Every libFuzzer target for a bounded time (FUZZ_SECONDS each, default
    15), on copies of the seed corpora; a crash is saved as a regression."""
    if not shutil.which("clang"):
        print("fuzzing skipped: clang is not installed", flush=True)
        return 0, 0
    env = dict(os.environ, FUZZ_SECONDS=os.environ.get("FUZZ_SECONDS", "15"))
    for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
        env.pop(k, None)
    proc = subprocess.run(["bash", os.path.join(ROOT, "tests", "fuzz", "run.sh")], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sys.stdout.write(proc.stdout)
    m = re.search(r"^(\d+) passed, (\d+) failed\s*$", proc.stdout, re.M)
    if not m:
        return 0, 1
    return int(m.group(1)), int(m.group(2))


def start_real_build():
    """tests/real/build.sh in the background, at a lower priority than the
    tests: a cold build compiles for half an hour, warm it takes a minute.
    Its output goes to build-real/build.log, printed when the real suite
    waits for it. None when CANARY_REAL=0."""
    if os.environ.get("CANARY_REAL", "1") == "0":
        return None
    os.makedirs(os.path.join(ROOT, "build-real"), exist_ok=True)
    log = open(os.path.join(ROOT, "build-real", "build.log"), "w")
    print("==== building the real servers in the background (build-real/build.log)", flush=True)
    return subprocess.Popen(["nice", "-n", "10", "bash", os.path.join(ROOT, "tests", "real", "build.sh")],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL), log


def wait_real_build(handle):
    if handle is None:
        return True
    proc, log = handle
    print("==== waiting for tests/real/build.sh", flush=True)
    rc = proc.wait()
    log.close()
    with open(log.name, errors="replace") as f:
        sys.stdout.write(f.read())
    return rc == 0


def sanitizer_reports(logdir):
    """Every report ASan/UBSan/LSan wrote (one file per process) counts as a
    failure: a daemon that misbehaves under a test that still passed."""
    found = 0
    for name in sorted(os.listdir(logdir)):
        with open(os.path.join(logdir, name), errors="replace") as f:
            text = f.read()
        if text.strip():
            found += 1
            print(f"==== sanitizer report {name}:\n{text[:8000]}", flush=True)
    return found


def main():
    sanitize = "--no-sanitize" not in sys.argv and os.environ.get("CANARY_SANITIZE", "1") == "1"
    sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
    total_p = total_f = 0
    suites = [("unit", run_unit),
              ("kubeapi", lambda: run_python("tests/kubeapi")),
              ("consul", lambda: run_python("tests/consul")),
              ("integration", lambda: run_python("tests/integration")),
              ("real", lambda: run_python("tests/real"))]
    if "--no-fuzz" not in sys.argv and os.environ.get("CANARY_FUZZ", "1") == "1":
        suites.append(("fuzz", run_fuzz))
    os.environ["CANARY_BRIDGE"] = os.path.join(ROOT, "build", "canary-bridge")
    real_build = start_real_build()
    for name, fn in suites:
        if name == "real" and not wait_real_build(real_build):
            print("==== real: 0 passed, 1 failed (tests/real/build.sh failed)", flush=True)
            total_f += 1
            continue
        print(f"==== {name} tests", flush=True)
        p, f = fn()
        print(f"==== {name}: {p} passed, {f} failed", flush=True)
        total_p += p
        total_f += f
    if sanitize:
        # Second pass: the unit tests and the integration suites against the
        # ASan+UBSan build. Reports go to files so none is lost in a log that
        # a passing test never reads.
        logdir = tempfile.mkdtemp(prefix="cb-sanitizers-")
        os.environ["ASAN_OPTIONS"] = "log_path=%s/asan:detect_leaks=1:abort_on_error=0" % logdir
        os.environ["UBSAN_OPTIONS"] = "log_path=%s/ubsan:print_stacktrace=1:halt_on_error=1" % logdir
        os.environ["CANARY_BRIDGE"] = os.path.join(ROOT, "build-asan", "canary-bridge")
        os.environ["CANARY_SANITIZED"] = "1"
        for name, fn in (("unit (asan+ubsan)", lambda: run_unit("build-asan")),
                         ("integration (asan+ubsan)", lambda: run_python("tests/integration"))):
            print(f"==== {name} tests", flush=True)
            p, f = fn()
            print(f"==== {name}: {p} passed, {f} failed", flush=True)
            total_p += p
            total_f += f
        reports = sanitizer_reports(logdir)
        print(f"==== sanitizer reports: {reports}", flush=True)
        if reports:
            total_f += reports
        else:
            total_p += 1  # the check that no sanitizer report was written
        shutil.rmtree(logdir, ignore_errors=True)
    print(f"{total_p} passed, {total_f} failed")
    return 0 if total_f == 0 and total_p > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
