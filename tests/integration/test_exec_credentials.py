"""kubeconfig exec credential plugins against the Kubernetes API test server:
the bridge gets its token from a plugin script, keeps it while it
is valid, runs the plugin again after a 401 (token rotation) and after the
credential's expirationTimestamp, and never logs the token."""
import json
import os
import sys
import tempfile
import unittest

import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
from cbtest import Bridge, Etcd, KubeAPI, bridge_config, wait_until  # noqa: E402

G = "traefik.io"
ROUTE = """match: Host(`shop.example.com`)
services:
  - {name: shop-v1, port: 80}
  - {name: shop-v2, port: 80}
"""

# The plugin: counts its runs, records what it was given, and answers the
# token in $PLUGIN_DIR/token with the expiry in $PLUGIN_DIR/expiry.
PLUGIN = """#!/bin/sh
d="$PLUGIN_DIR"
echo run >> "$d/runs"
printf '%s\\n' "$KUBERNETES_EXEC_INFO" > "$d/exec-info"
printf '%s\\n' "$@" > "$d/args"
printf '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential",'
printf '"status":{"token":"%s","expirationTimestamp":"%s"}}\\n' "$(cat "$d/token")" "$(cat "$d/expiry")"
"""


def weights_of(obj):
    return obj and {s["name"]: s.get("weight") for s in obj["spec"]["routes"][-1]["services"]}


class ExecPlugin(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="cb-exec-")
        self.addCleanup(self.tmp.cleanup)
        self.etcd = Etcd(self.tmp.name)
        self.addCleanup(self.etcd.stop)
        self.kube = KubeAPI(self.tmp.name)
        self.addCleanup(self.kube.stop)
        self.pdir = os.path.join(self.tmp.name, "plugin")
        os.makedirs(self.pdir)
        self.plugin = os.path.join(self.pdir, "get-token")
        with open(self.plugin, "w") as f:
            f.write(PLUGIN)
        os.chmod(self.plugin, 0o755)
        self.set_token(self.kube.token)
        self.set_expiry("2099-01-01T00:00:00Z")
        with open(self.kube.kubeconfig) as f:
            kc = yaml.safe_load(f)
        kc["users"][0]["user"] = {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": self.plugin,
            "args": ["token", "--cluster", "test"],
            "env": [{"name": "PLUGIN_DIR", "value": self.pdir}],
            "interactiveMode": "IfAvailable",
            "provideClusterInfo": True,
        }}
        self.kc_path = os.path.join(self.tmp.name, "kubeconfig-exec")
        with open(self.kc_path, "w") as f:
            yaml.safe_dump(kc, f)

    def set_token(self, token):
        with open(os.path.join(self.pdir, "token"), "w") as f:
            f.write(token)

    def set_expiry(self, when):
        with open(os.path.join(self.pdir, "expiry"), "w") as f:
            f.write(when)

    def runs(self):
        try:
            with open(os.path.join(self.pdir, "runs")) as f:
                return len(f.read().split())
        except FileNotFoundError:
            return 0

    def start_bridge(self):
        cfg = bridge_config(etcd=self.etcd, kube=self.kube)
        cfg["kubernetes"] = {"kubeconfig": self.kc_path}
        self.bridge = Bridge(self.tmp.name, cfg)
        self.addCleanup(self.bridge.stop)
        return self.bridge

    def wait_weights(self, want, timeout=15):
        def ir():
            return self.kube.get(G, "default", "ingressroutes", "shop")
        wait_until(lambda: weights_of(ir()) == want, timeout,
                   what="weights %r (have %r)" % (want, weights_of(ir())))

    def test_token_from_plugin_rerun_after_401(self):
        self.etcd.put("canary/default/shop/route", ROUTE)
        self.start_bridge()
        self.wait_weights({"shop-v1": 1, "shop-v2": 1})
        # One run served every request so far (list, watch, writes).
        self.assertEqual(self.runs(), 1)
        with open(os.path.join(self.pdir, "args")) as f:
            self.assertEqual(f.read().split(), ["token", "--cluster", "test"])
        with open(os.path.join(self.pdir, "exec-info")) as f:
            info = json.load(f)
        self.assertEqual(info["kind"], "ExecCredential")
        self.assertEqual(info["apiVersion"], "client.authentication.k8s.io/v1")
        self.assertIs(info["spec"]["interactive"], False)
        self.assertEqual(info["spec"]["cluster"]["server"], self.kube.url)
        self.assertTrue(info["spec"]["cluster"]["certificate-authority-data"])

        # The server rotates to a new token; the plugin hands it out.
        self.kube.control("POST", "token", {"token": "rotated-exec-token"})
        self.kube.token = "rotated-exec-token"
        self.set_token("rotated-exec-token")
        self.etcd.put("canary/default/shop/weights", "shop-v1=20, shop-v2=80")
        self.wait_weights({"shop-v1": 20, "shop-v2": 80})
        self.bridge.wait_log(r"rejected the credential of exec plugin .*\(401\)")
        self.assertGreaterEqual(self.runs(), 2)
        log = self.bridge.log_text()
        self.assertNotIn("rotated-exec-token", log)
        self.assertNotIn(self.kube.token, log)

    def test_expired_credential_runs_the_plugin_again(self):
        # Every credential the plugin gives has already expired: each new
        # request needs a new run (the waiting ones use the fresh one).
        self.set_expiry("2001-01-01T00:00:00Z")
        self.etcd.put("canary/default/shop/route", ROUTE)
        self.start_bridge()
        self.wait_weights({"shop-v1": 1, "shop-v2": 1})
        self.etcd.put("canary/default/shop/weights", "shop-v1=30, shop-v2=70")
        self.wait_weights({"shop-v1": 30, "shop-v2": 70})
        wait_until(lambda: self.runs() >= 3, 10, what="plugin runs >= 3 (have %d)" % self.runs())

    def test_check_uses_the_plugin(self):
        cfg = bridge_config(etcd=self.etcd, kube=self.kube)
        cfg["kubernetes"] = {"kubeconfig": self.kc_path}
        code, out, err = Bridge(self.tmp.name, cfg, start=False).run_once("check")
        self.assertEqual(code, 0, out + err)
        self.assertEqual(self.runs(), 1)
        self.assertNotIn(self.kube.token, out + err)

    def test_failing_plugin_is_reported(self):
        with open(self.plugin, "w") as f:
            f.write("#!/bin/sh\necho 'no SSO session; run: aws sso login' >&2\nexit 2\n")
        self.etcd.put("canary/default/shop/route", ROUTE)
        self.start_bridge()
        self.bridge.wait_log(r"exec plugin .*get-token \(user 'test'\): failed with exit code 2: "
                             r"no SSO session; run: aws sso login", timeout=15)
        self.assertTrue(self.bridge.alive())


if __name__ == "__main__":
    unittest.main()
