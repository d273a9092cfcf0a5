"""Harness for canary-bridge integration tests.

    import sys; sys.path.insert(0, "<repo>/tests/lib"); from cbtest import *

    with tempfile.TemporaryDirectory() as d, Etcd(d) as etcd, KubeAPI(d) as kube:
        etcd.put("canary/default/shop/weights", "shop-v1=90, shop-v2=10")
        with Bridge(d, bridge_config(etcd=etcd, kube=kube)) as bridge:
            wait_until(lambda: kube.get("traefik.io", "default", "ingressroutes", "shop"),
                       what="IngressRoute shop")

Every process runs in a temp dir on 127.0.0.1 ports, in its own process group, and is
stopped on `with` exit (SIGTERM, then SIGKILL if it lingers; straight SIGKILL if the block
raised) and at interpreter exit.  Standard library + PyYAML only; run with /usr/bin/python3.
"""

import atexit
import base64
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYTHON = "/usr/bin/python3"
KUBEAPI_SERVER = os.path.join(REPO, "tests", "kubeapi", "server.py")
API_VERSIONS = {"": "v1", "coordination.k8s.io": "v1", "events.k8s.io": "v1",
                "apiextensions.k8s.io": "v1", "authorization.k8s.io": "v1",
                "discovery.k8s.io": "v1"}  # else v1alpha1

__all__ = ["free_port", "wait_until", "Etcd", "EtcdCluster", "KubeAPI", "Bridge", "ApiError",
           "bridge_config", "REPO"]

# Harness sources by URL, and who wants to hear of the keys written through them (see
# KubeAPI.auto_services): a source calls source_wrote before each write it makes.
_SOURCES = {}
_SOURCE_WRITES = {}


def source_wrote(url, key, value):
    for cb in list(_SOURCE_WRITES.get(url, {}).values()):
        cb(key, value)


def free_port():
    """A port that was free on 127.0.0.1 a moment ago (for programs that cannot bind 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout=10, what="condition", interval=0.02, ignore=(OSError,)):
    """Poll pred() until it returns something truthy (and return that), or raise
    AssertionError naming `what`.  Exceptions in `ignore` count as "not yet"."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except ignore as e:
            last_exc = e
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %gs waiting for %s%s" % (
                timeout, what, " (last error: %r)" % last_exc if last_exc else ""))
        time.sleep(interval)


_live = set()


@atexit.register
def _kill_leftovers():
    for p in list(_live):
        p.kill()


class Proc:
    """A child process in its own process group with output captured to a log file."""
    proc = None
    log_path = None

    def _spawn(self, argv, log_path, env=None):
        self.log_path = log_path
        with open(log_path, "ab") as logf:
            self.proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env,
                                         start_new_session=True)
        _live.add(self)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=10):
        """SIGTERM, wait; SIGKILL if it does not exit in time.  Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.send_signal(signal.SIGCONT)     # in case it was pause()d
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reap_group()
        _live.discard(self)
        return self.proc.returncode

    def kill(self):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        self._reap_group()
        _live.discard(self)
        return self.proc.returncode

    def _reap_group(self):
        try:   # children the process left behind in its (our) process group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, n=40):
        return "\n".join(self.log_text().splitlines()[-n:])

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.stop()
        else:
            self.kill()


# --------------------------------------------------------------------------------------------
# etcd

class Etcd(Proc):
    """etcd 3.4 on loopback with a temp data dir; JSON gateway helpers via urllib."""

    def __init__(self, tmpdir, extra_args=(), name="cb-etcd"):
        self.dir = os.path.join(tmpdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.name, self.extra_args = name, list(extra_args)
        self.auth = None        # (user, password) once enable_auth() ran
        self._token = None
        for attempt in range(3):
            self.client_port, self.peer_port = free_port(), free_port()
            if self._start():
                _SOURCES[self.url] = self
                return
        raise RuntimeError("etcd did not start:\n" + self.log_tail())

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.client_port

    def _start(self):
        peer = "http://127.0.0.1:%d" % self.peer_port
        argv = ["etcd", "--name", self.name, "--data-dir", os.path.join(self.dir, "data"),
                "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", "%s=%s" % (self.name, peer)] + self.extra_args
        log_path = os.path.join(self.dir, "etcd.log")
        offset = os.path.getsize(log_path) if os.path.exists(log_path) else 0
        self._spawn(argv, log_path)
        try:
            wait_until(lambda: not self.alive() or self._healthy(), timeout=30,
                       what="etcd /health", ignore=(OSError, ValueError))
        except AssertionError:
            self.kill()
            raise
        if self.alive():
            return True
        if "address already in use" not in self.log_text()[offset:]:
            raise RuntimeError("etcd exited:\n" + self.log_tail())
        return False    # port race: caller retries with new ports

    def _healthy(self):
        with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
            return json.load(r).get("health") == "true"

    def restart(self, timeout=10):
        """Stop and start again with the same ports and data dir."""
        self.stop(timeout)
        if not self._start():
            raise RuntimeError("etcd could not get its ports back:\n" + self.log_tail())

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def harness_items(self, prefix):
        """The keys under prefix a route could name Services in (those that decode)."""
        end = bytearray(prefix.encode())
        end[-1] += 1
        kvs = self.call("/v3/kv/range", {"key": self._b64(prefix),
                                         "range_end": self._b64(bytes(end))}).get("kvs") or []
        out = {}
        for kv in kvs:
            try:
                out[base64.b64decode(kv["key"]).decode()] = \
                    base64.b64decode(kv.get("value", "")).decode()
            except UnicodeDecodeError:
                continue    # garbage a test wrote on purpose: no route names a Service there
        return out

    def _tell_writes(self, path, body):
        """source_wrote for each put in a /v3/kv/put or /v3/kv/txn body."""
        if path == "/v3/kv/put":
            puts = [body]
        elif path == "/v3/kv/txn":
            puts = [op["request_put"] for op in body.get("success", []) + body.get("failure", [])
                    if "request_put" in op]
        else:
            return
        for put in puts:
            source_wrote(self.url, base64.b64decode(put.get("key", "")).decode("utf-8", "replace"),
                         base64.b64decode(put.get("value", "")))

    # ---- JSON gateway (/v3/...)
    def call(self, path, body, timeout=10):
        self._tell_writes(path, body)
        data = json.dumps(body).encode()
        for attempt in (1, 2):
            headers = {"Content-Type": "application/json"}
            if self.auth:
                if not self._token:
                    self._token = self._authenticate()
                headers["Authorization"] = self._token
            req = urllib.request.Request(self.url + path, data=data, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=timeout) as r:
                    return json.load(r)
            except urllib.error.HTTPError as e:
                text = e.read().decode("utf-8", "replace")
                if self.auth and attempt == 1 and ("auth token" in text or e.code == 401):
                    self._token = None
                    continue
                raise RuntimeError("etcd %s -> %d %s" % (path, e.code, text)) from None

    def _authenticate(self):
        req = urllib.request.Request(self.url + "/v3/auth/authenticate", headers={
            "Content-Type": "application/json"}, data=json.dumps(
                {"name": self.auth[0], "password": self.auth[1]}).encode())
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)["token"]

    @staticmethod
    def _b64(s):
        return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()

    def put(self, key, value):
        """Returns the new store revision."""
        r = self.call("/v3/kv/put", {"key": self._b64(key), "value": self._b64(value)})
        return int(r["header"]["revision"])

    def get(self, key):
        """The value as text, or None."""
        kvs = self.call("/v3/kv/range", {"key": self._b64(key)}).get("kvs") or []
        return base64.b64decode(kvs[0].get("value", "")).decode() if kvs else None

    def get_prefix(self, prefix):
        """{key: value} for every key under prefix."""
        end = bytearray(prefix.encode())
        end[-1] += 1
        kvs = self.call("/v3/kv/range", {"key": self._b64(prefix),
                                         "range_end": self._b64(bytes(end))}).get("kvs") or []
        return {base64.b64decode(kv["key"]).decode():
                base64.b64decode(kv.get("value", "")).decode() for kv in kvs}

    def delete(self, key):
        """Returns the number of keys deleted."""
        return int(self.call("/v3/kv/deleterange", {"key": self._b64(key)}).get("deleted", 0))

    def revision(self):
        return int(self.call("/v3/kv/range", {"key": self._b64("\0")})["header"]["revision"])

    def compact(self, rev=None):
        rev = self.revision() if rev is None else rev
        self.call("/v3/kv/compaction", {"revision": str(rev), "physical": True})
        return rev

    def etcdctl(self, *args, input=None, check=True, timeout=30):
        """Run etcdctl (API v3) against this server; returns CompletedProcess (text)."""
        plain = [a for a in args if not a.startswith("-")]
        if plain[:1] == ["put"] and len(plain) >= 2:
            source_wrote(self.url, plain[1], plain[2] if len(plain) > 2 else input)
        argv = ["etcdctl", "--endpoints", self.url]
        if self.auth:
            argv += ["--user", "%s:%s" % self.auth]
        env = dict(os.environ, ETCDCTL_API="3")
        return subprocess.run(argv + list(args), input=input, capture_output=True, text=True,
                              env=env, check=check, timeout=timeout)

    def enable_auth(self, user="root", password="rootpw"):
        """Create `user` with the root role and turn auth on; later calls authenticate."""
        self.etcdctl("user", "add", user, "--new-user-password", password, "--interactive=false")
        if user != "root":
            self.etcdctl("role", "add", "root", check=False)
        self.etcdctl("user", "grant-role", user, "root")
        self.etcdctl("auth", "enable")
        self.auth = (user, password)


class _PeerProxy:
    """A loopback TCP forwarder in front of one etcd member's peer listener.  The cluster
    advertises the proxy's port as the member's peer URL, so all raft traffic TO that member
    passes here.  The raft transport's requests carry an X-Server-From header naming the
    sending member; a connection may open with another request (GET /members) and be reused
    for raft later, so every request going upstream is scanned until one names its sender.
    Knowing both ends, the proxy can cut exactly the links of one member
    (see EtcdCluster.partition)."""

    def __init__(self, cluster, target_name):
        self.cluster, self.target = cluster, target_name
        self.target_port = None          # the member's real peer port, set before it starts
        self.conns = {}                  # socket pair -> sender's member id (or None)
        self.lock = threading.Lock()
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            u = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            u.settimeout(None)
        except OSError:
            _reset(c)
            return
        pair = (c, u)
        with self.lock:
            self.conns[pair] = None
        threading.Thread(target=self._pump, args=(c, u, pair, True), daemon=True).start()
        threading.Thread(target=self._pump, args=(u, c, pair, False), daemon=True).start()

    _SENDER = re.compile(rb"(?i)\r\nX-Server-From:[ \t]*([0-9a-f]+)\r\n")

    def _pump(self, a, b, pair, upstream):
        tail = b""
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                if upstream and self.conns.get(pair) is None:
                    m = self._SENDER.search(tail + data)
                    tail = (tail + data)[-128:]
                    if m:
                        with self.lock:
                            if pair in self.conns:
                                self.conns[pair] = m.group(1).decode()   # member id
                if self.cluster._is_cut(self.conns.get(pair), self.target):
                    break
                b.sendall(data)
        except OSError:
            pass
        with self.lock:
            mine = self.conns.pop(pair, "gone") != "gone"
        if mine:
            for s in pair:
                _reset(s)

    def cut_links(self):
        """Reset every open connection that a partition now forbids."""
        with self.lock:
            doomed = [p for p, sender in self.conns.items()
                      if self.cluster._is_cut(sender, self.target)]
            for p in doomed:
                del self.conns[p]
        for p in doomed:
            for s in p:
                _reset(s)

    def close(self):
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.lsock.close()
        with self.lock:
            pairs, self.conns = list(self.conns), {}
        for p in pairs:
            for s in p:
                _reset(s)


def _reset(s):
    """Abort a connection (RST); shutdown() first wakes a thread blocked in recv() on it."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
    except OSError:
        pass
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()


class _ClusterMember(Etcd):
    """One member of an EtcdCluster (the Etcd gateway helpers, a cluster's command line)."""

    def __init__(self, tmpdir, name, proxy):
        self.dir = os.path.join(tmpdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.name, self.proxy, self.extra_args = name, proxy, []
        self.auth, self._token = None, None
        self.client_port, self.peer_port = free_port(), free_port()
        proxy.target_port = self.peer_port
        _SOURCES[self.url] = self

    def _start_cluster(self, initial_cluster, extra_args):
        argv = ["etcd", "--name", self.name, "--data-dir", os.path.join(self.dir, "data"),
                "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                "--listen-peer-urls", "http://127.0.0.1:%d" % self.peer_port,
                "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % self.proxy.port,
                "--initial-cluster", initial_cluster, "--initial-cluster-state", "new",
                "--initial-cluster-token", "cb-cluster"] + list(extra_args)
        self._spawn(argv, os.path.join(self.dir, "etcd.log"))

    def restart(self, timeout=10):
        raise NotImplementedError("restart a cluster member through its EtcdCluster")


class EtcdCluster:
    """Three (or n) etcd members on loopback, each member's peer traffic through a
    _PeerProxy so that a test can cut one member off from the others (partition) while the
    rest keep their majority.  members[i] has the Etcd gateway helpers (put, get, call...);
    a write through a member of the majority is a write to the cluster."""

    def __init__(self, tmpdir, n=3, extra_args=()):
        self.cut = set()
        self.ids = {}          # member id (hex) -> name
        self.proxies = [_PeerProxy(self, "m%d" % i) for i in range(n)]
        self.members = [_ClusterMember(tmpdir, "m%d" % i, p) for i, p in enumerate(self.proxies)]
        initial = ",".join("%s=http://127.0.0.1:%d" % (m.name, m.proxy.port)
                           for m in self.members)
        try:
            for m in self.members:
                m._start_cluster(initial, extra_args)
            for m in self.members:
                wait_until(lambda: m._healthy() or not m.alive() and _raise_exited(m),
                           timeout=60, what="etcd member %s /health" % m.name,
                           ignore=(OSError, ValueError))
            ms = self.members[0].call("/v3/cluster/member/list", {})["members"]
            self.ids = {"%x" % int(x["ID"]): x["name"] for x in ms}
        except BaseException:
            self.kill()
            raise

    def _name_of(self, member_id):
        return self.ids.get(member_id.lstrip("0") or "0")

    def _is_cut(self, sender_id, target):
        """Whether the partition forbids a link from the member with id `sender_id` (hex, or
        None while unknown) to the member named `target`."""
        return bool(self.cut) and (target in self.cut or
                                   sender_id is not None and self._name_of(sender_id) in self.cut)

    @property
    def urls(self):
        return [m.url for m in self.members]

    def partition(self, member):
        """Cut `member` (an index or a name) off from every other member, both ways."""
        self.cut.add(member if isinstance(member, str) else self.members[member].name)
        for p in self.proxies:
            p.cut_links()

    def heal(self):
        self.cut.clear()

    def put(self, key, value, via, timeout=30):
        """Write through the members in `via` (indexes), retrying until one accepts it (a
        majority may be electing a leader); returns the new revision."""
        def attempt():
            for i in via:
                try:
                    return self.members[i].put(key, value)
                except (OSError, RuntimeError):
                    pass
            return None
        return wait_until(attempt, timeout, what="a write to %r through members %r" % (key, via))

    def stop(self):
        for m in self.members:
            m.stop()
        for p in self.proxies:
            p.close()

    def kill(self):
        for m in self.members:
            m.kill()
        for p in self.proxies:
            p.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.stop()
        else:
            self.kill()


def _raise_exited(m):
    raise RuntimeError("etcd member %s exited:\n%s" % (m.name, m.log_tail()))


# --------------------------------------------------------------------------------------------
# Kubernetes API test server

class ApiError(Exception):
    def __init__(self, status, body, headers=None):
        super().__init__("HTTP %d: %s" % (status, body))
        self.status, self.body, self.headers = status, body, headers or {}


class KubeAPI(Proc):
    """tests/kubeapi/server.py.  Attributes: url, port, token, ca, kubeconfig, dir.

    The bridge gives a service weight only when the Service exists, exposes the route's
    port and has a ready endpoint (backend checks), and the server runs no controllers.
    With auto_services (the default), once bridge_config() ties this server to a source,
    every Service a route key or weights key names in that source (already there, or
    written later through the harness: Etcd.put/call/etcdctl, Consul.put) is created
    here first, ready, as a Deployment would make it: tests that are not about backends
    need not care. A test about backends passes auto_services=False and makes its own
    with add_service."""

    def __init__(self, tmpdir, groups=None, history=None, extra_args=(), name="kubeapi",
                 auto_services=True):
        self.auto_services = auto_services
        self._served = {}       # (ns, name) -> ports created by serve_key
        self.dir = os.path.join(tmpdir, name)
        os.makedirs(self.dir, exist_ok=True)
        argv = [PYTHON, KUBEAPI_SERVER, "--dir", self.dir]
        if groups:
            argv += ["--groups", ",".join([groups] if isinstance(groups, str) else groups)]
        if history is not None:
            argv += ["--history", str(history)]
        self._spawn(argv + list(extra_args), os.path.join(self.dir, "server.log"))
        port_file = os.path.join(self.dir, "port")
        try:
            wait_until(lambda: os.path.exists(port_file) or not self.alive(), timeout=30,
                       what="kubeapi server port file")
        except AssertionError:
            self.kill()
            raise
        if not self.alive():
            raise RuntimeError("kubeapi server exited:\n" + self.log_tail())
        with open(port_file) as f:
            self.port = int(f.read())
        with open(os.path.join(self.dir, "token")) as f:
            self.token = f.read().strip()
        self.url = "https://127.0.0.1:%d" % self.port
        self.ca = os.path.join(self.dir, "ca.crt")
        self.kubeconfig = os.path.join(self.dir, "kubeconfig")
        self.ssl_context = ssl.create_default_context(cafile=self.ca)

    # ---- raw access
    def connection(self, timeout=10):
        """A fresh keep-alive http.client connection to the server."""
        return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout,
                                           context=self.ssl_context)

    def request(self, method, path, body=None, content_type="application/json", headers=None,
                token=True, timeout=10):
        """-> (status, headers, body): body parsed as JSON when it is JSON, else text.
        token: True = the server's token, None/False = no Authorization, str = that token."""
        h = {"Accept": "application/json"}
        if token:
            h["Authorization"] = "Bearer " + (self.token if token is True else token)
        data = None
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            data = data.encode() if isinstance(data, str) else data
            h["Content-Type"] = content_type
        h.update(headers or {})
        conn = self.connection(timeout)
        try:
            conn.request(method, path, body=data, headers=h)
            r = conn.getresponse()
            raw = r.read()
            text = raw.decode("utf-8", "replace")
            try:
                parsed = json.loads(text) if text else None
            except ValueError:
                parsed = text
            return r.status, r.headers, parsed
        finally:
            conn.close()

    @staticmethod
    def path(group, ns, plural, name=None, version=None, **query):
        version = version or API_VERSIONS.get(group, "v1alpha1")
        p = "/api/%s" % version if not group else "/apis/%s/%s" % (group, version)
        if ns:
            p += "/namespaces/" + ns
        p += "/" + plural
        if name:
            p += "/" + name
        q = {k: v for k, v in query.items() if v is not None}
        return p + ("?" + urllib.parse.urlencode(q) if q else "")

    def _ok(self, method, path, body=None, content_type="application/json", want=(200, 201)):
        status, headers, data = self.request(method, path, body, content_type)
        if status not in want:
            raise ApiError(status, data, headers)
        return data

    # ---- typed helpers (raise ApiError on failure, except get -> None on 404)
    def get(self, group, ns, plural, name):
        status, headers, data = self.request("GET", self.path(group, ns, plural, name))
        if status == 404:
            return None
        if status != 200:
            raise ApiError(status, data, headers)
        return data

    def list(self, group, ns, plural, label_selector=None, **query):
        return self._ok("GET", self.path(group, ns, plural, labelSelector=label_selector,
                                         **query))

    def create(self, group, ns, plural, obj, **query):
        return self._ok("POST", self.path(group, ns, plural, **query), obj)

    def create_namespace(self, name):
        """Namespaces must exist before anything is created in them (404 otherwise)."""
        return self._ok("POST", "/api/v1/namespaces", {
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    def put(self, group, ns, plural, obj, **query):
        return self._ok("PUT", self.path(group, ns, plural, obj["metadata"]["name"], **query),
                        obj)

    def merge_patch(self, group, ns, plural, name, patch, **query):
        return self._ok("PATCH", self.path(group, ns, plural, name, **query), patch,
                        "application/merge-patch+json")

    def json_patch(self, group, ns, plural, name, ops, **query):
        return self._ok("PATCH", self.path(group, ns, plural, name, **query), ops,
                        "application/json-patch+json")

    def apply(self, group, ns, plural, obj, field_manager="cbtest", force=True, **query):
        return self._ok("PATCH", self.path(group, ns, plural, obj["metadata"]["name"],
                                           fieldManager=field_manager,
                                           force="true" if force else None, **query),
                        obj, "application/apply-patch+yaml")

    def delete(self, group, ns, plural, name, **query):
        return self._ok("DELETE", self.path(group, ns, plural, name, **query))

    def watch(self, group, ns, plural, timeout=10, **query):
        """Yield watch events (dicts) until the server ends the stream.  `timeout` is the
        socket timeout; pass timeoutSeconds=... to have the server end the watch."""
        query.setdefault("watch", "1")
        conn = self.connection(timeout)
        try:
            conn.request("GET", self.path(group, ns, plural, **query),
                         headers={"Authorization": "Bearer " + self.token})
            r = conn.getresponse()
            if r.status != 200:
                raise ApiError(r.status, r.read().decode("utf-8", "replace"), r.headers)
            while True:
                line = r.readline()
                if not line:
                    return
                yield json.loads(line)
        finally:
            conn.close()

    # ---- Services and their endpoints (the bridge checks them before giving weight)
    @staticmethod
    def _service_ports(ports):
        """80, [80, 8080], [("http", 80)] or [{"name": "http", "port": 80}] -> Service ports."""
        out = []
        for p in ports if isinstance(ports, (list, tuple)) else [ports]:
            if isinstance(p, dict):
                out.append(dict(p))
            elif isinstance(p, tuple):
                out.append({"name": p[0], "port": p[1]})
            else:
                out.append({"port": p})
        return out

    def _put_or_create(self, group, ns, plural, obj):
        try:
            return self.put(group, ns, plural, obj)
        except ApiError as e:
            if e.status != 404:
                raise
            return self.create(group, ns, plural, obj)

    def add_service(self, ns, name, ports=80, ready=1, not_ready=0, external_name=None):
        """Create (or replace) Service ns/name exposing `ports` (see _service_ports) and,
        unless it is an ExternalName Service, its EndpointSlice "<name>-cbtest" with
        `ready` ready and `not_ready` unready endpoints, as a Deployment's controllers
        would. The namespace must exist ("default" always does)."""
        spec = {"ports": self._service_ports(ports)}
        if external_name:
            spec.update(type="ExternalName", externalName=external_name)
        svc = self._put_or_create("", ns, "services", {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns}, "spec": spec})
        if not external_name:
            self.set_endpoints(ns, name, ready, not_ready)
        return svc

    def add_services(self, ns, *names, ports=80, ready=1):
        """add_service for each name, with the same ports and endpoints."""
        for name in names:
            self.add_service(ns, name, ports=ports, ready=ready)

    def set_endpoints(self, ns, name, ready=1, not_ready=0):
        """Replace Service ns/name's EndpointSlice: `ready` ready and `not_ready` unready
        endpoints behind every port of the Service (which must exist)."""
        svc = self.get("", ns, "services", name)
        ports = [{k: v for k, v in (("name", p.get("name")), ("port", p["port"]),
                                    ("protocol", "TCP")) if v is not None}
                 for p in svc["spec"].get("ports") or []]
        eps = [{"addresses": ["10.0.%d.%d" % (i // 250, i % 250 + 1)],
                "conditions": {"ready": i < ready}} for i in range(ready + not_ready)]
        return self._put_or_create("discovery.k8s.io", ns, "endpointslices", {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name + "-cbtest", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "ports": ports, "endpoints": eps})

    # ---- Services for the routes of a source (auto_services)
    SERVED_PORTS = (("http", 80), ("http-alt", 8080))

    def serve_key(self, prefix, key, value):
        """Create the Services that route or weights key `key` (under prefix) names, ready,
        exposing SERVED_PORTS and the route's own port; nothing for other keys, for a
        namespace that does not exist, or a value that does not parse."""
        if not key.startswith(prefix) or value is None:
            return
        parts = key[len(prefix):].split("/")
        if len(parts) != 3 or parts[2] not in ("route", "weights"):
            return
        ns = parts[0]
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        value = value.lstrip("\ufeff")
        try:
            # compose, not load: an alias bomb (the soak tests write them) stays one node.
            plain = len(value) < 65536 and value.count("[") + value.count("{") < 64
            node = yaml.compose(value) if plain else None
        except Exception:       # garbage: nothing to serve
            node = None

        def items(n):
            """{key: node} of a YAML mapping node, else {}."""
            return {k.value: v for k, v in n.value if isinstance(k, yaml.ScalarNode)} \
                if isinstance(n, yaml.MappingNode) else {}

        def scalar(n):
            if not isinstance(n, yaml.ScalarNode):
                return None
            return int(n.value) if n.value.isdigit() else n.value
        want = []   # (ns, name, port)
        if parts[2] == "route":
            svcs = items(node).get("services")
            for svc in svcs.value if isinstance(svcs, yaml.SequenceNode) else []:
                f = items(svc)
                name = scalar(f.get("name"))
                if isinstance(name, str):
                    want.append((scalar(f.get("namespace")) or ns, name, scalar(f.get("port"))))
        else:
            # "a=90, b=10": split, not a regex (a backtracking one is quadratic on garbage).
            names = list(items(node)) if isinstance(node, yaml.MappingNode) else \
                [t.split("=")[0].strip() for t in re.split(r"[,\n]", value) if "=" in t]
            want = [(ns, n, None) for n in names]
        label = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
        for sns, name, port in want:
            if not (isinstance(sns, str) and isinstance(name, str) and label.match(sns) and
                    label.match(name)):
                continue        # not a name a Service can have
            ports = list(self._served.get((sns, name), self.SERVED_PORTS))
            if isinstance(port, (str, int)) and not isinstance(port, bool) and \
                    all(port not in p for p in ports):
                ports.append((port, 9000 + len(ports)) if isinstance(port, str)
                             else ("p%d" % port, port))
            if self._served.get((sns, name)) == ports:
                continue
            try:
                self.add_service(sns, name, ports=ports)
            except (ApiError, OSError):   # no such namespace, a bad name, the server down
                continue
            self._served[(sns, name)] = ports

    def serve_source(self, prefix, urls):
        """Serve the routes of the harness source(s) at urls: those there now, and (through
        the source's write hooks) those written later."""
        for url in urls:
            src = _SOURCES.get(url)
            if src is None:
                continue
            _SOURCE_WRITES.setdefault(url, {})[id(self)] = \
                lambda key, value, prefix=prefix: self.serve_key(prefix, key, value)
            for key, value in src.harness_items(prefix).items():
                self.serve_key(prefix, key, value)

    def _unserve(self):
        for listeners in _SOURCE_WRITES.values():
            listeners.pop(id(self), None)

    def stop(self, timeout=10):
        self._unserve()
        return super().stop(timeout)

    def kill(self):
        self._unserve()
        return super().kill()

    # ---- control API (/_test/)
    def control(self, method, what, body=None):
        status, _, data = self.request(method, "/_test/" + what, body, token=None)
        if status != 200:
            raise ApiError(status, data)
        return data

    def requests(self, clear=False, since=0):
        """The request log: dicts with seq, t, t_done, method, path, query, content_type,
        status, body, user_agent, conn (connection number), fault (rule id or None)."""
        out = self.control("GET", "requests?since=%d" % since)
        if clear:
            self.clear_requests()
        return out

    def clear_requests(self):
        self.control("DELETE", "requests")

    def fault(self, **rule):
        """Add a fault rule: method, path_regex, query_regex, count (-1 = forever), status,
        retry_after, delay_ms, action (drop|hang|drop_mid), message, when (before|after)."""
        return self.control("POST", "faults", rule)

    def faults(self):
        return self.control("GET", "faults")

    def clear_faults(self):
        self.control("DELETE", "faults")

    def compact(self):
        """Forget watch history and end open watches: re-watches from older RVs get 410."""
        return self.control("POST", "compact")

    def close_watches(self):
        return self.control("POST", "close-watches")

    def bookmark(self):
        """Ask every open watch with allowWatchBookmarks to send a BOOKMARK now."""
        return self.control("POST", "bookmark")

    def watches(self):
        """Open watch streams: [{conn, path, resource, namespace, since}]."""
        return self.control("GET", "watches")

    def objects(self):
        """Every stored object (CRDs and namespaces left out) and the current RV."""
        return self.control("GET", "objects")


# --------------------------------------------------------------------------------------------
# canary-bridge

def _deep_update(base, over):
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_update(base[k], v)
        else:
            base[k] = v
    return base


def bridge_config(etcd=None, kube=None, consul_address=None, prefix="canary/", metrics_port=None,
                  **sections):
    """A config dict (the bridge.yaml schema, docs/usage.md) for the given servers; `sections` deep-merge on top,
    e.g. reconcile={"policy": "sync"}, log={"level": "debug"}."""
    cfg = {"source": {"prefix": prefix}, "traefik": {"api_group": "auto",
                                                     "rule_syntax": "v3"},
           "server": {"listen": "127.0.0.1:%d" % metrics_port if metrics_port else ""},
           "log": {"level": "debug"}}
    if etcd is not None:
        cfg["source"].update(type="etcd", endpoints=[etcd.url])
    elif consul_address:
        cfg["source"].update(type="consul", address=consul_address)
    if kube is not None:
        cfg["kubernetes"] = {"kubeconfig": kube.kubeconfig}
    cfg = _deep_update(cfg, sections)
    if kube is not None and getattr(kube, "auto_services", False):
        src = cfg["source"]
        urls = src.get("endpoints") or [] if src.get("type") == "etcd" else [src.get("address")]
        kube.serve_source(src.get("prefix", prefix), urls if isinstance(urls, list) else [urls])
    return cfg


class Bridge(Proc):
    """build/canary-bridge (or $CANARY_BRIDGE) with a config file in a temp dir."""

    def __init__(self, tmpdir, config, binary=None, args=("run",), start=True, env=None,
                 name="bridge"):
        self.dir = os.path.join(tmpdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.binary = binary or os.environ.get("CANARY_BRIDGE") or \
            os.path.join(REPO, "build", "canary-bridge")
        self.config_path = os.path.join(self.dir, "bridge.yaml")
        self.env = env
        self.write_config(config)
        self.log_path = os.path.join(self.dir, "bridge.log")
        if start:
            self.start(args)

    def write_config(self, config):
        """Text is written as is; a dict is dumped as YAML.  (Then .signal(SIGHUP) reloads.)"""
        text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, self.config_path)

    def argv(self, args):
        args = list(args)
        return [self.binary] + args[:1] + ["-c", self.config_path] + args[1:]

    def start(self, args=("run",)):
        self._spawn(self.argv(args), self.log_path, self.env)
        return self

    def wait_log(self, regex, timeout=10, since=0):
        """Wait for `regex` in the log (from byte offset `since`); returns the match."""
        pat = re.compile(regex)

        def found():
            m = pat.search(self.log_text(), since)
            if m is None and not self.alive():
                raise AssertionError("bridge exited (%s) before logging %r:\n%s"
                                     % (self.proc.returncode, regex, self.log_tail()))
            return m
        try:
            return wait_until(found, timeout, what="bridge log %r" % regex)
        except AssertionError as e:
            raise AssertionError("%s\n--- bridge log tail ---\n%s" % (e, self.log_tail()))

    def log_size(self):
        """Current log length: pass as wait_log(since=...) to only see newer lines."""
        return len(self.log_text())

    def run_once(self, args, timeout=60, input=None):
        """A one-shot command (sync, render, check ...) with this config:
        returns (exit code, stdout, stderr)."""
        args = [args] if isinstance(args, str) else list(args)
        p = subprocess.run(self.argv(args), capture_output=True, text=True, timeout=timeout,
                           input=input, env=self.env)
        return p.returncode, p.stdout, p.stderr


def mw_name(route, rule):
    """The Middleware name the bridge gives rule `rule` of route `route` (sinks/traefik.c):
    "<route>-<rule>-<40 bits of FNV-1a over "<route>/<rule>">", distinct even after
    Traefik folds every run of characters other than letters and digits into one '-'.
    Names longer than 253 characters are shortened by the bridge; tests of those read
    the name from the cluster."""
    h = 1469598103934665603
    for c in ("%s/%s" % (route, rule)).encode():
        h = ((h ^ c) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return "%s-%s-%010x" % (route, rule, h & 0xFFFFFFFFFF)


def mirror_name(route):
    """The mirroring TraefikService name of a route with a `mirror` (sinks/traefik.c):
    "<route>-mirror-<40 bits of FNV-1a over "<route>//mirror">" (routes up to 235
    characters; longer ones are shortened by the bridge)."""
    h = 1469598103934665603
    for c in ("%s//mirror" % route).encode():
        h = ((h ^ c) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return "%s-mirror-%010x" % (route, h & 0xFFFFFFFFFF)
