"""Harness for the real servers that tests/real/ runs against: Consul, kube-apiserver
(on its own etcd) and Traefik, built from released Go modules by tests/real/build.sh
into build-real/bin/ (or $CANARY_REAL_BIN).

    import sys; sys.path.insert(0, "<repo>/tests/lib"); from real import *

    require_real("consul", "kube-apiserver", "traefik")     # in setUpClass / setUp
    with tempfile.TemporaryDirectory() as d, RealKubeAPI(d) as kube, \\
            RealTraefik(d, kube) as traefik, RealConsul(d) as consul:
        consul.put("canary/default/shop/weights", "shop-v1=90, shop-v2=10")
        kube.get("traefik.io", "default", "ingressroutes", "shop")
        traefik.get("/api/http/routers")

RealConsul has the KV helpers of tests/lib/consul.py's Consul (put, delete, entry, get,
list, index, request), RealKubeAPI those of cbtest's KubeAPI (get, list, create, put,
merge_patch, apply, delete, watch, request) but none of the test servers' /_test/ control
API: the real servers have no fault injection.  `kube.kubeconfig` is the bridge's own
identity: the canary-bridge ServiceAccount of deploy/rbac.yaml with a token the apiserver
issued; `kube.token` (the default for request()) is an administrator's.

Every server listens on free 127.0.0.1 ports, keeps its files in a temp dir, runs in its
own process group and is stopped on `with` exit or stop() (and at interpreter exit).
Readiness is awaited on a condition (a health endpoint, a leader, an Established CRD),
never a fixed sleep.  Standard library + PyYAML only; run with /usr/bin/python3.
"""

import http.client
import ipaddress
import json
import os
import random
import secrets
import signal
import ssl
import subprocess
import sys
import unittest
import urllib.parse
import urllib.request

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cbtest import REPO, Etcd, KubeAPI, Proc, free_port, wait_until  # noqa: E402
import cbtest as _cbtest_mod  # noqa: E402
import consul as _consul_mod  # noqa: E402
from consul import Consul  # noqa: E402

BIN = os.environ.get("CANARY_REAL_BIN") or os.path.join(REPO, "build-real", "bin")
CRDS = os.path.join(REPO, "tests", "kubeapi", "crds", "traefik-v3-crds.yaml")
RBAC = os.path.join(REPO, "deploy", "rbac.yaml")
NAMES = ("kube-apiserver", "traefik", "consul")

__all__ = ["BIN", "require_real", "binary", "RealConsul", "RealKubeAPI", "RealTraefik",
           "NetnsBackends", "free_port", "wait_until"]


def binary(name):
    return os.path.join(BIN, name)


def require_real(*names):
    """Check that the real servers are built.  A missing one skips the calling test(s)
    only when CANARY_REAL=0 (a machine that cannot build them); otherwise it fails, so
    a suite that was meant to run against the real servers can never pass by skipping."""
    missing = [n for n in (names or NAMES) if not os.access(binary(n), os.X_OK)]
    if not missing:
        return
    msg = "not built: %s in %s (run bash tests/real/build.sh)" % (", ".join(missing), BIN)
    if os.environ.get("CANARY_REAL") == "0":
        raise unittest.SkipTest("CANARY_REAL=0 and " + msg)
    raise AssertionError(msg + "; set CANARY_REAL=0 to skip the real-server suites")


def _http_json(url, token=None, context=None, timeout=5, header="Authorization"):
    headers = {}
    if token:
        headers[header] = ("Bearer " + token) if header == "Authorization" else token
    req = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout, context=context) as r:
        body = r.read()
        return r.status, (json.loads(body) if body else None)


# --------------------------------------------------------------------------------------------
# Consul

class RealConsul(Consul):
    """`consul agent -dev` (in memory) or, with dev=False, a one-node server with a data
    dir that survives restart().  acl_default_policy="deny" turns ACLs on with `acl_token`
    as the initial management token.  extra_config deep-merges into the agent's JSON
    config (e.g. {"limits": {"http_max_conns_per_client": 8}})."""

    def __init__(self, tmpdir, dev=True, acl_token=None, acl_default_policy=None,
                 extra_config=None, name="consul-real", start=True):
        if acl_default_policy and not acl_token:
            acl_token = secrets.token_hex(16)
        self.dev, self.acl_default_policy = dev, acl_default_policy
        self.extra_config = extra_config or {}
        self.ports = None
        super().__init__(tmpdir, acl_token=acl_token, name=name, start=False)
        self.log_path = os.path.join(self.dir, "consul.log")
        if start:
            self.start()

    def _config(self):
        p = self.ports
        cfg = {"node_name": "cb-real", "datacenter": "dc1", "log_level": "debug",
               "bind_addr": "127.0.0.1", "client_addr": "127.0.0.1",
               "advertise_addr": "127.0.0.1", "disable_update_check": True,
               "ports": {"http": p["http"], "dns": -1, "grpc": -1, "grpc_tls": -1,
                         "serf_lan": p["serf_lan"], "serf_wan": p["serf_wan"],
                         "server": p["server"]}}
        if not self.dev:
            cfg.update(server=True, bootstrap_expect=1,
                       data_dir=os.path.join(self.dir, "data"))
        if self.acl_default_policy:
            cfg["acl"] = {"enabled": True, "default_policy": self.acl_default_policy,
                          "enable_token_persistence": False,
                          "tokens": {"initial_management": self.acl_token,
                                     "agent": self.acl_token}}
        return _merge(cfg, json.loads(json.dumps(self.extra_config)))

    def start(self, timeout=60):
        """Start the agent; a restart keeps the ports (and, with dev=False, the data)."""
        if self.alive():
            raise RuntimeError("consul already running")
        for attempt in range(3):
            if self.ports is None or attempt:
                self.ports = {k: free_port() for k in ("http", "serf_lan", "serf_wan",
                                                        "server")}
            self.port = self.ports["http"]
            conf = os.path.join(self.dir, "agent.json")
            with open(conf, "w") as f:
                json.dump(self._config(), f, indent=1)
            argv = [binary("consul"), "agent", "-config-file", conf]
            if self.dev:
                argv.insert(2, "-dev")
            offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
            with open(self.log_path, "ab") as logf:
                self.proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True)
            _consul_mod._live.add(self)
            try:
                wait_until(lambda: not self.alive() or self._ready(), timeout,
                           what="consul leader and KV", ignore=(OSError, ValueError))
            except AssertionError:
                self.kill()
                raise AssertionError("consul not ready:\n" + self.log_tail()) from None
            if self.alive():
                _cbtest_mod._SOURCES[self.url] = self
                return self
            if "address already in use" not in self.log_text()[offset:]:
                raise RuntimeError("consul exited:\n" + self.log_tail())
        raise RuntimeError("consul could not bind its ports:\n" + self.log_tail())

    def _ready(self):
        status, leader = _http_json(self.url + "/v1/status/leader")
        if status != 200 or not leader:
            return False
        # A leader is elected; KV reads go through raft once it has applied its first
        # entries and (with ACLs) bootstrapped the management token.
        status, _, _ = self.request("GET", "/v1/kv/?keys")
        return status in (200, 404)

    def kill(self):
        """SIGKILL the agent (with dev=False the data written so far is kept)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        return self.proc.returncode

    def consul(self, *args, check=True, token=True, timeout=60):
        """Run the consul CLI against this agent; -> CompletedProcess (text)."""
        env = dict(os.environ, CONSUL_HTTP_ADDR=self.url)
        env.pop("CONSUL_HTTP_TOKEN", None)
        tok = self.acl_token if token is True else token
        if tok:
            env["CONSUL_HTTP_TOKEN"] = tok
        return subprocess.run([binary("consul")] + list(args), capture_output=True, text=True,
                              env=env, check=check, timeout=timeout)

    def create_token(self, rules, description="canary-bridge test"):
        """A policy with these HCL rules and a token holding it: -> its SecretID."""
        name = "p-" + secrets.token_hex(4)
        status, _, body = self.request("PUT", "/v1/acl/policy", json.dumps(
            {"Name": name, "Rules": rules}), content_type="application/json")
        if status != 200:
            raise RuntimeError("consul policy: %d %s" % (status, body))
        status, _, body = self.request("PUT", "/v1/acl/token", json.dumps(
            {"Description": description, "Policies": [{"Name": name}]}),
            content_type="application/json")
        if status != 200:
            raise RuntimeError("consul token: %d %s" % (status, body))
        return json.loads(body)["SecretID"]

    # The test server's /_test/ control API has no counterpart in a real agent.
    def control(self, *a, **kw):
        raise NotImplementedError("a real Consul agent has no /_test/ control API")


def _merge(base, over):
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v
    return base


# --------------------------------------------------------------------------------------------
# kube-apiserver

def _openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True)


def _make_pki(d):
    """A CA, a serving cert for 127.0.0.1/localhost signed by it, and the service-account
    signing key pair."""
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=cb-real-ca",
             cwd=d)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", "serving.key", "-out", "serving.csr", "-subj", "/CN=kube-apiserver",
             cwd=d)
    with open(os.path.join(d, "serving.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                "extendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n")
    _openssl("x509", "-req", "-in", "serving.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "serving.crt", "-days", "2", "-extfile", "serving.ext",
             cwd=d)
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
             "-out", "sa.key", cwd=d)
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)


def write_kubeconfig(path, server, ca, token, namespace="default"):
    cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "real",
           "clusters": [{"name": "real", "cluster": {"server": server,
                                                     "certificate-authority": ca}}],
           "users": [{"name": "u", "user": {"token": token}}],
           "contexts": [{"name": "real", "context": {"cluster": "real", "user": "u",
                                                     "namespace": namespace}}]}
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    return path


# kind -> (group/version path prefix, plural, namespaced), for the manifests applied here
KINDS = {
    "Namespace": ("/api/v1", "namespaces", False),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "Service": ("/api/v1", "services", True),
    "ClusterRole": ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "CustomResourceDefinition": ("/apis/apiextensions.k8s.io/v1",
                                 "customresourcedefinitions", False),
    "EndpointSlice": ("/apis/discovery.k8s.io/v1", "endpointslices", True),
}


class RealKubeAPI(KubeAPI):
    """kube-apiserver on its own etcd, RBAC on, the Traefik v3 CRDs applied and
    Established, deploy/rbac.yaml applied.  Attributes: url, port, ca, token (admin),
    bridge_token, kubeconfig (the bridge's), admin_kubeconfig, etcd, dir."""

    def __init__(self, tmpdir, name="kube-real", rbac=True, crds=True, extra_args=()):
        require_real("kube-apiserver")
        self.dir = os.path.join(tmpdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.etcd = Etcd(self.dir, name="etcd")
        try:
            self._start(extra_args, rbac, crds)
        except BaseException:
            self.kill()
            raise

    def _start(self, extra_args, rbac, crds):
        d = self.dir
        _make_pki(d)
        self.ca = os.path.join(d, "ca.crt")
        self.token = secrets.token_hex(16)
        self.traefik_token = secrets.token_hex(16)
        with open(os.path.join(d, "tokens.csv"), "w") as f:
            f.write('%s,cb-admin,cb-admin-uid,"system:masters"\n' % self.token)
            f.write('%s,cb-traefik,cb-traefik-uid,"system:masters"\n' % self.traefik_token)
        self.ssl_context = ssl.create_default_context(cafile=self.ca)
        for attempt in range(3):
            self.port = free_port()
            self.url = "https://127.0.0.1:%d" % self.port
            argv = [binary("kube-apiserver"),
                    "--etcd-servers", self.etcd.url,
                    "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
                    "--secure-port", str(self.port),
                    "--tls-cert-file", os.path.join(d, "serving.crt"),
                    "--tls-private-key-file", os.path.join(d, "serving.key"),
                    "--cert-dir", os.path.join(d, "certs"),
                    "--token-auth-file", os.path.join(d, "tokens.csv"),
                    "--authorization-mode", "RBAC",
                    "--service-account-key-file", os.path.join(d, "sa.pub"),
                    "--service-account-signing-key-file", os.path.join(d, "sa.key"),
                    "--service-account-issuer", "https://kubernetes.default.svc",
                    "--service-cluster-ip-range", "10.96.0.0/24",
                    # The default reconciler writes the advertise address into the
                    # `kubernetes` Endpoints and refuses a loopback one at start-up.
                    "--endpoint-reconciler-type", "none",
                    "--profiling=false", "--v=1"] + list(extra_args)
            log_path = os.path.join(d, "kube-apiserver.log")
            offset = os.path.getsize(log_path) if os.path.exists(log_path) else 0
            self._argv = argv
            self._spawn(argv, log_path)
            try:
                wait_until(lambda: not self.alive() or self._ready(), timeout=180,
                           what="kube-apiserver /readyz", ignore=(OSError, ValueError))
            except AssertionError:
                raise AssertionError("kube-apiserver not ready:\n" + self.log_tail()) from None
            if self.alive():
                break
            if "address already in use" not in self.log_text()[offset:]:
                raise RuntimeError("kube-apiserver exited:\n" + self.log_tail())
        else:
            raise RuntimeError("kube-apiserver could not bind a port:\n" + self.log_tail())
        self.admin_kubeconfig = write_kubeconfig(os.path.join(d, "admin.kubeconfig"),
                                                 self.url, self.ca, self.token)
        self.traefik_kubeconfig = write_kubeconfig(os.path.join(d, "traefik.kubeconfig"),
                                                   self.url, self.ca, self.traefik_token)
        if crds:
            self.apply_crds()
        self.kubeconfig = self.admin_kubeconfig
        self.bridge_token = None
        if rbac:
            self.apply_file(RBAC)
            self.bridge_token = self.service_account_token("canary-bridge", "canary-bridge")
            self.kubeconfig = write_kubeconfig(os.path.join(d, "bridge.kubeconfig"),
                                               self.url, self.ca, self.bridge_token)
            if crds:   # RBAC's authorizer sees the new binding a moment after the write
                wait_until(lambda: self.request(
                    "GET", self.path("traefik.io", None, "ingressroutes"),
                    token=self.bridge_token)[0] == 200, timeout=30,
                    what="the bridge's ServiceAccount allowed to list ingressroutes")

    def _ready(self):
        status, _, body = self.request("GET", "/readyz", timeout=5)
        return status == 200

    def restart_apiserver(self, timeout=180):
        """Stop the apiserver (not its etcd) and start it again on the same port with the
        same flags, as a crash or rollout does: every watch breaks, and the new watch cache
        starts at etcd's current revision."""
        Proc.kill(self)      # this process group only; RealKubeAPI.kill() would take etcd
        self._spawn(self._argv, self.log_path)
        try:
            wait_until(lambda: not self.alive() or self._ready(), timeout,
                       what="kube-apiserver /readyz after restart", ignore=(OSError, ValueError))
        except AssertionError:
            raise AssertionError("kube-apiserver not ready:\n" + self.log_tail()) from None
        if not self.alive():
            raise RuntimeError("kube-apiserver exited on restart:\n" + self.log_tail())

    def stop(self, timeout=20):
        rc = super().stop(timeout)
        self.etcd.stop()
        return rc

    def kill(self):
        rc = super().kill()
        self.etcd.kill()
        return rc

    # ---- manifests
    def object_path(self, obj, name=True):
        prefix, plural, namespaced = KINDS[obj["kind"]]
        meta = obj["metadata"]
        p = prefix
        if namespaced:
            p += "/namespaces/" + meta.get("namespace", "default")
        p += "/" + plural
        return p + ("/" + meta["name"] if name else "")

    def apply_object(self, obj, field_manager="cb-real-test"):
        """Server-side apply of one manifest object of a kind in KINDS."""
        status, headers, data = self.request(
            "PATCH", self.object_path(obj) + "?fieldManager=%s&force=true" % field_manager,
            json.dumps(obj), "application/apply-patch+yaml")
        if status not in (200, 201):
            raise RuntimeError("apply %s %s: %d %s" % (obj["kind"], obj["metadata"]["name"],
                                                       status, data))
        return data

    def apply_file(self, path):
        with open(path) as f:
            return [self.apply_object(o) for o in yaml.safe_load_all(f) if o]

    def apply_crds(self, path=CRDS, timeout=60):
        names = [self.apply_object(o)["metadata"]["name"] for o in self._docs(path)]

        def established(name):
            _, _, crd = self.request(
                "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/" + name)
            return any(c.get("type") == "Established" and c.get("status") == "True"
                       # a CRD just created may answer "conditions": null
                       for c in ((crd or {}).get("status") or {}).get("conditions") or [])
        for n in names:
            wait_until(lambda: established(n), timeout, what="CRD %s Established" % n)
        # Established: the API serves it; wait until the group's handler answers too.
        for n in names:
            plural, group = n.split(".", 1)
            wait_until(lambda: self.request("GET", self.path(group, None, plural))[0] == 200,
                       timeout, what="%s served" % n)
        return names

    @staticmethod
    def _docs(path):
        with open(path) as f:
            return [o for o in yaml.safe_load_all(f) if o]

    def service_account_token(self, ns, name, seconds=86400):
        """A token the apiserver issues for ServiceAccount ns/name (TokenRequest)."""
        status, _, data = self.request(
            "POST", "/api/v1/namespaces/%s/serviceaccounts/%s/token" % (ns, name),
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
             "spec": {"expirationSeconds": seconds}})
        if status != 201:
            raise RuntimeError("TokenRequest %s/%s: %d %s" % (ns, name, status, data))
        return data["status"]["token"]

    def backend_service(self, ns, name, address, target_port, port=80, port_name="http"):
        """A core Service `name` (port -> target_port, no selector) and the
        discovery.k8s.io/v1 EndpointSlice `<name>-test` (labelled
        kubernetes.io/service-name) that points it at address:target_port, ready and
        serving: what an EndpointSlice controller would write for one pod."""
        self.apply_object({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"ports": [{"name": port_name, "port": port, "targetPort": target_port,
                                "protocol": "TCP"}]}})
        self.apply_object({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name + "-test", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": name,
                                    "endpointslice.kubernetes.io/managed-by": "cb-real-test"}},
            "addressType": "IPv4",
            "ports": [{"name": port_name, "port": target_port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [address],
                           "conditions": {"ready": True, "serving": True,
                                          "terminating": False}}]})

    # The test server's /_test/ control API has no counterpart in a real apiserver.
    def control(self, *a, **kw):
        raise NotImplementedError("a real kube-apiserver has no /_test/ control API")


# --------------------------------------------------------------------------------------------
# Traefik

class RealTraefik(Proc):
    """Traefik v3 with the kubernetesCRD provider reading `kube`, one entry point `web`
    (url, port) and the API and ping on entry point `traefik` (api_url, api_port)."""

    def __init__(self, tmpdir, kube, name="traefik-real", throttle="2s", extra=None):
        require_real("traefik")
        self.dir = os.path.join(tmpdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.kube = kube
        for attempt in range(3):
            self.port, self.api_port = free_port(), free_port()
            cfg = {"global": {"checkNewVersion": False, "sendAnonymousUsage": False},
                   "entryPoints": {"web": {"address": "127.0.0.1:%d" % self.port},
                                   "traefik": {"address": "127.0.0.1:%d" % self.api_port}},
                   "api": {"insecure": True, "dashboard": False},
                   "ping": {"entryPoint": "traefik"},
                   "log": {"level": "DEBUG"},
                   "providers": {"providersThrottleDuration": throttle,
                                 "kubernetesCRD": {"endpoint": kube.url,
                                                   "token": kube.traefik_token,
                                                   "certAuthFilePath": kube.ca}}}
            _merge(cfg, extra or {})
            conf = os.path.join(self.dir, "traefik.yaml")
            with open(conf, "w") as f:
                yaml.safe_dump(cfg, f)
            log_path = os.path.join(self.dir, "traefik.log")
            offset = os.path.getsize(log_path) if os.path.exists(log_path) else 0
            self._spawn([binary("traefik"), "--configFile=" + conf], log_path)
            try:
                wait_until(lambda: not self.alive() or self._ready(), 60,
                           what="traefik ping and its kubernetescrd provider",
                           ignore=(OSError, ValueError))
            except AssertionError:
                self.kill()
                raise AssertionError("traefik not ready:\n" + self.log_tail()) from None
            if self.alive():
                return
            if "address already in use" not in self.log_text()[offset:]:
                raise RuntimeError("traefik exited:\n" + self.log_tail())
        raise RuntimeError("traefik could not bind its ports:\n" + self.log_tail())

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    @property
    def api_url(self):
        return "http://127.0.0.1:%d" % self.api_port

    def api(self, path):
        return _http_json(self.api_url + path)[1]

    def _ready(self):
        with urllib.request.urlopen(self.api_url + "/ping", timeout=5) as r:
            if r.status != 200:
                return False
        # The provider has sent its first configuration once its router shows up
        # (or, with no objects yet, once it is listed among the providers).
        ov = self.api("/api/overview")
        return any(p.lower() == "kubernetescrd" for p in ov.get("providers") or [])

    def routers(self):
        return self.api("/api/http/routers")


# --------------------------------------------------------------------------------------------
# Backends in a network namespace

def _ip(*args, check=True):
    return subprocess.run(["ip"] + list(args), capture_output=True, text=True, check=check)


class NetnsBackends(Proc):
    """Test backends (tests/lib/backend.py: each answers with its name and echoes the
    request headers) as the test's own hosts in a network namespace the test creates.

    The real apiserver refuses loopback (and link-local) addresses in EndpointSlices, so
    the backends cannot sit on 127.0.0.1.  Instead: `ip netns add cb-<random>`, a veth
    pair `cbh<random>` (root namespace, `host_address`) / `cbn<random>` (the netns,
    `address`) on one private /30, the backends bound to `address` inside the netns
    (`ip netns exec`), and Traefik in the root namespace reaching them over the veth.
    No address other than that /30 (and the netns's own loopback) is ever configured:
    IPv6 address generation is off on both veth ends.

    The /30 is drawn at random from 10.253.0.0/16: private (RFC 1918), not the apiserver's
    service range (10.96.0.0/24), and checked against every IPv4 address and route of the
    root namespace, so it collides with nothing here; two runs at once draw different /30s
    (and a clash would fail the check of the second).  The ports inside the netns are
    fixed (`backends` {name: port}); nothing else listens there.

    stop()/kill() (and interpreter exit) end the backends, then delete the veth and the
    netns.  Needs root and iproute2."""

    POOL = ipaddress.ip_network("10.253.0.0/16")

    def __init__(self, tmpdir, backends, name="netns"):
        self.dir = os.path.join(tmpdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.backends = dict(backends)
        tag = secrets.token_hex(3)
        self.netns, self.veth_host, self.veth_ns = "cb-" + tag, "cbh" + tag, "cbn" + tag
        self.created = False
        if os.geteuid() != 0:
            raise RuntimeError("NetnsBackends needs root (ip netns add, veth); run the "
                               "traffic suite as root, or CANARY_REAL=0 to skip it")
        _cbtest_mod._live.add(self)   # interpreter exit: kill() (removes the netns too)
        try:
            self.subnet = self._pick_subnet()
            hosts = list(self.subnet.hosts())
            self.host_address, self.address = str(hosts[0]), str(hosts[1])
            self._setup()
            self._spawn(["ip", "netns", "exec", self.netns, sys.executable,
                         os.path.join(os.path.dirname(os.path.abspath(__file__)), "backend.py"),
                         "--address", self.address] +
                        ["%s=%d" % nv for nv in self.backends.items()],
                        os.path.join(self.dir, "backends.log"))
            for bname, port in self.backends.items():
                wait_until(lambda: not self.alive() or self._answers(bname, port), 30,
                           what="backend %s on %s:%d over the veth" % (bname, self.address,
                                                                        port),
                           ignore=(OSError, ValueError))
                if not self.alive():
                    raise RuntimeError("backends exited:\n" + self.log_tail())
        except BaseException:
            self.kill()
            raise

    def _pick_subnet(self):
        used = []
        for args in (("-4", "-o", "addr", "show"), ("-4", "route", "show", "table", "all")):
            for line in _ip(*args).stdout.splitlines():
                for word in line.split():
                    try:
                        used.append(ipaddress.ip_network(word, strict=False))
                    except ValueError:
                        pass
        for _ in range(100):
            net = ipaddress.ip_network("%s/30" % (self.POOL.network_address +
                                                  4 * random.randrange(self.POOL.num_addresses
                                                                       // 4)))
            if not any(net.overlaps(u) for u in used if u.version == 4 and
                       u.prefixlen > 0):
                return net
        raise RuntimeError("no free /30 in %s" % self.POOL)

    def _setup(self):
        p = "/%d" % self.subnet.prefixlen
        _ip("netns", "add", self.netns)
        self.created = True
        _ip("link", "add", self.veth_host, "type", "veth", "peer", "name", self.veth_ns,
            "netns", self.netns)
        _ip("link", "set", "dev", self.veth_host, "addrgenmode", "none")
        _ip("-n", self.netns, "link", "set", "dev", self.veth_ns, "addrgenmode", "none")
        _ip("addr", "add", self.host_address + p, "dev", self.veth_host)
        _ip("-n", self.netns, "addr", "add", self.address + p, "dev", self.veth_ns)
        _ip("link", "set", "dev", self.veth_host, "up")
        _ip("-n", self.netns, "link", "set", "dev", self.veth_ns, "up")
        _ip("-n", self.netns, "link", "set", "dev", "lo", "up")
        # The /30 must be reachable through our veth only (another run's equal /30 would
        # show up as a second route).
        routes = _ip("-4", "route", "show", "match", str(self.subnet)).stdout.splitlines()
        mine = [r for r in routes if r.split()[0] == str(self.subnet)]
        if len(mine) != 1 or ("dev %s " % self.veth_host) not in mine[0] + " ":
            raise RuntimeError("%s is routed elsewhere too: %r" % (self.subnet, routes))

    def _answers(self, name, port):
        conn = http.client.HTTPConnection(self.address, port, timeout=2)   # never a proxy
        try:
            conn.request("GET", "/")
            return json.loads(conn.getresponse().read()).get("name") == name
        finally:
            conn.close()

    def seen(self, name, prefix):
        """How many requests backend `name` has had whose path starts with `prefix`
        (backend.py's /_seen, asked over the veth; the question itself is not counted)."""
        conn = http.client.HTTPConnection(self.address, self.backends[name], timeout=5)
        try:
            conn.request("GET", "/_seen?prefix=" + urllib.parse.quote(prefix, safe=""))
            return json.loads(conn.getresponse().read())["count"]
        finally:
            conn.close()

    def kill(self):
        rc = super().kill() if self.proc is not None else None
        self._teardown()
        return rc

    def stop(self, timeout=10):
        rc = super().stop(timeout) if self.proc is not None else None
        self._teardown()
        return rc

    def _teardown(self):
        _cbtest_mod._live.discard(self)
        if not self.created:
            return
        # Deleting the netns takes the veth end inside it, and with it its peer; delete
        # the root end explicitly as well in case the netns is still pinned.
        _ip("link", "del", self.veth_host, check=False)
        _ip("netns", "del", self.netns, check=False)
        self.created = False
