"""`meson install` puts everything an operator needs in place (issues 5 and 14): the
binary, the example config where the binary looks for it by default, the systemd unit
where systemd looks for units of that prefix and pointing at the same binary and config,
the man page naming those paths; and the installed binary's `check` reads the installed
config. Done for the default prefix (/usr/local) and for --prefix=/usr."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
from cbtest import REPO, Etcd, KubeAPI, bridge_config  # noqa: E402


def systemd_unitdir_for_usr():
    """What meson.build uses for --prefix=/usr: systemd's pkg-config, else /usr/lib/..."""
    p = subprocess.run(["pkg-config", "--variable=systemdsystemunitdir", "systemd"],
                       capture_output=True, text=True)
    return p.stdout.strip() if p.returncode == 0 and p.stdout.strip() else \
        "/usr/lib/systemd/system"


class MesonInstall(unittest.TestCase):
    def setUp(self):
        if os.environ.get("CANARY_SANITIZED"):
            self.skipTest("installs the plain build once")
        self.tmp = tempfile.TemporaryDirectory(prefix="cb-install-")
        self.addCleanup(self.tmp.cleanup)

    def meson_install(self, build, dest):
        p = subprocess.run(["meson", "install", "-C", build, "--destdir", dest, "--no-rebuild"],
                           capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        return p.stdout

    def install(self, *setup_args):
        d = self.tmp.name
        build = os.path.join(d, "build")
        dest = os.path.join(d, "root")
        subprocess.run(["meson", "setup", build, REPO, "-Dwerror=true"] + list(setup_args),
                       check=True, capture_output=True, text=True)
        # Only what gets installed: the test binaries would double the time.
        targets = ["canary-bridge"] + (["docs/canary-bridge.8"] if shutil.which("scdoc")
                                       else [])
        subprocess.run(["ninja", "-C", build] + targets, check=True,
                       capture_output=True, text=True)
        return build, dest, self.meson_install(build, dest)

    def assert_installed(self, build, dest, out, bindir, config, unitdir):
        # The install log: one line per file, no shell script text.
        self.assertNotIn("\\n", out)
        self.assertNotRegex(out, r"install -m|\$DESTDIR|if \[")
        self.assertRegex(out, r"(?m)^Running custom install script '\S*install-config\.sh %s'$"
                         % re.escape(config))
        self.assertEqual(len(out.strip().splitlines()), 4, out)

        binary = dest + bindir + "/canary-bridge"
        self.assertTrue(os.access(binary, os.X_OK))
        out = subprocess.run([binary, "--version"], capture_output=True, text=True)
        self.assertEqual(out.returncode, 0)
        self.assertRegex(out.stdout, r"^canary-bridge \d+\.\d+\.\d+")
        # The compiled-in default is the installed config's path.
        out = subprocess.run([binary, "--help"], capture_output=True, text=True)
        self.assertIn("(default %s)" % config, out.stdout)
        if not os.path.exists(config):  # this host has no such install: check says it looked
            chk = subprocess.run([binary, "check"], capture_output=True, text=True, timeout=60)
            self.assertEqual(chk.returncode, 2, chk.stdout + chk.stderr)
            self.assertIn("FAIL config %s\n" % config, chk.stdout)
        installed_config = dest + config
        self.assertTrue(os.path.isfile(installed_config))

        # The installed example config is valid for the installed binary.
        chk = subprocess.run([binary, "render", "-c", installed_config, "x/y"],
                             capture_output=True, text=True, timeout=60)
        self.assertNotEqual(chk.returncode, 2, chk.stderr)
        # Edited to point at test servers, `check` reads it and passes.
        d = self.tmp.name
        with Etcd(d) as etcd, KubeAPI(d) as kube:
            cfg = yaml.safe_dump(bridge_config(etcd=etcd, kube=kube))
            with open(installed_config, "w") as f:
                f.write(cfg)
            chk = subprocess.run([binary, "check", "-c", installed_config],
                                 capture_output=True, text=True, timeout=60)
            self.assertEqual(chk.returncode, 0, chk.stdout + chk.stderr)
            self.assertIn("ok   config %s\n" % installed_config, chk.stdout)
            self.assertIn("ok   source etcd", chk.stdout)
            self.assertIn("ok   kubernetes", chk.stdout)
        # A second install keeps the operator's file.
        out = self.meson_install(build, dest)
        self.assertIn("install-config.sh %s'" % config, out)
        with open(installed_config) as f:
            self.assertEqual(f.read(), cfg)

        units = [os.path.join(r, f) for r, _, fs in os.walk(dest) for f in fs
                 if f == "canary-bridge.service"]
        self.assertEqual(units, [dest + unitdir + "/canary-bridge.service"])
        with open(units[0]) as f:
            text = f.read()
        self.assertIn("Type=notify", text)
        self.assertIn("\nExecStart=%s/canary-bridge run -c %s\n" % (bindir, config), text)
        self.assertIn("ExecReload=", text)
        self.assertNotRegex(text, r"@\w+@")  # every @var@ filled in

        if shutil.which("scdoc"):
            man = [os.path.join(r, f) for r, _, fs in os.walk(dest) for f in fs
                   if f.startswith("canary-bridge.8")]
            self.assertEqual(len(man), 1, "man page not installed")
            with open(man[0]) as f:
                page = f.read().replace("\\&", "")
            self.assertNotRegex(page, r"@\w+@")
            self.assertIn("Default: \\fI%s\\fR" % config, page)
            self.assertIn("\\fI%s/canary-bridge.service\\fR" % unitdir, page)
            self.assertIn("canary-bridge check -c %s" % config, page)
            # Every config path on the page is this installation's.
            sysconfdir = os.path.dirname(os.path.dirname(config))
            plain = re.sub(r"\\f[BIR]", " ", page)
            paths = re.findall(r"(?<![\w/.-])/[\w/.-]*/canary-bridge/[\w.-]+", plain)
            self.assertGreater(len(paths), 5, paths)
            for path in paths:
                self.assertTrue(path.startswith(sysconfdir + "/"), path)

    def test_install_with_the_default_prefix(self):
        build, dest, out = self.install()
        self.assert_installed(build, dest, out, bindir="/usr/local/bin",
                              config="/usr/local/etc/canary-bridge/bridge.yaml",
                              unitdir="/usr/local/lib/systemd/system")

    def test_install_with_prefix_usr(self):
        build, dest, out = self.install("--prefix=/usr")
        self.assert_installed(build, dest, out, bindir="/usr/bin",
                              config="/etc/canary-bridge/bridge.yaml",
                              unitdir=systemd_unitdir_for_usr())


if __name__ == "__main__":
    unittest.main()
