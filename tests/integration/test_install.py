"""`meson install` puts everything an operator needs in place (issue 5): the
binary, the systemd unit pointing at it, the example config, the man page;
and systemd accepts the unit."""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
from cbtest import REPO  # noqa: E402


class MesonInstall(unittest.TestCase):
    def test_install_into_a_destdir(self):
        if os.environ.get("CANARY_SANITIZED"):
            self.skipTest("installs the plain build once")
        with tempfile.TemporaryDirectory(prefix="cb-install-") as d:
            build = os.path.join(d, "build")
            dest = os.path.join(d, "root")
            subprocess.run(["meson", "setup", build, REPO, "--prefix=/usr",
                            "--sysconfdir=/etc", "-Dwerror=true"],
                           check=True, capture_output=True, text=True)
            # Only what gets installed: the test binaries would double the time.
            targets = ["canary-bridge"] + (["docs/canary-bridge.8"] if shutil.which("scdoc")
                                           else [])
            subprocess.run(["ninja", "-C", build] + targets, check=True,
                           capture_output=True, text=True)
            p = subprocess.run(["meson", "install", "-C", build, "--destdir", dest,
                                "--no-rebuild"], capture_output=True, text=True)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            binary = os.path.join(dest, "usr/bin/canary-bridge")
            self.assertTrue(os.access(binary, os.X_OK))
            out = subprocess.run([binary, "--version"], capture_output=True, text=True)
            self.assertEqual(out.returncode, 0)
            self.assertRegex(out.stdout, r"^canary-bridge \d+\.\d+\.\d+")
            config = os.path.join(dest, "etc/canary-bridge/bridge.yaml")
            self.assertTrue(os.path.isfile(config))
            # The installed example config is valid for the installed binary.
            chk = subprocess.run([binary, "render", "-c", config, "x/y"],
                                 capture_output=True, text=True, timeout=60)
            self.assertNotEqual(chk.returncode, 2, chk.stderr)
            units = [os.path.join(r, f) for r, _, fs in os.walk(dest) for f in fs
                     if f == "canary-bridge.service"]
            self.assertEqual(len(units), 1, units)
            text = open(units[0]).read()
            self.assertIn("Type=notify", text)
            self.assertIn("ExecStart=/usr/bin/canary-bridge run -c /etc/canary-bridge/bridge.yaml",
                          text)
            self.assertIn("ExecReload=", text)
            if shutil.which("scdoc"):
                man = [os.path.join(r, f) for r, _, fs in os.walk(dest) for f in fs
                       if f.startswith("canary-bridge.8")]
                self.assertTrue(man, "man page not installed")


if __name__ == "__main__":
    unittest.main()
