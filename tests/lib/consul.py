"""Harness for the Consul KV test server (tests/consul/server.py).

    import sys; sys.path.insert(0, "<repo>/tests/lib"); from consul import Consul

    with tempfile.TemporaryDirectory() as d, Consul(d) as consul:
        consul.put("canary/default/shop/weights", "shop-v1=90, shop-v2=10")   # as the UI does
        index, entries = consul.list("canary/")
        consul.fault(path_regex="^/v1/kv/canary/", status=500, count=2)
        consul.restart()                     # same port, same data and indexes

The server runs in its own process group with its log in DIR/consul/server.log, is stopped
on `with` exit (SIGTERM; SIGKILL if the block raised) and at interpreter exit.
Standard library only; run with /usr/bin/python3.
"""

import atexit
import base64
import http.client
import json
import os
import signal
import ssl
import subprocess
import urllib.parse

import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cbtest import _SOURCES, free_port, source_wrote, wait_until  # noqa: E402  (the shared harness helpers)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYTHON = "/usr/bin/python3"
CONSUL_SERVER = os.path.join(REPO, "tests", "consul", "server.py")
UI_CONTENT_TYPE = "text/plain; charset=utf-8"

__all__ = ["Consul", "ConsulError", "free_port", "wait_until", "UI_CONTENT_TYPE"]

_live = set()


@atexit.register
def _kill_leftovers():
    for c in list(_live):
        c.kill()


class ConsulError(Exception):
    def __init__(self, status, body, headers=None):
        super().__init__("HTTP %s: %s" % (status, body))
        self.status, self.body, self.headers = status, body, headers


class Consul:
    """One test server.  Attributes: url, port, dir, acl_token, read_tokens, tls, ca
    (DIR/ca.crt with tls), client_cert/client_key (with client_auth), log_path."""

    def __init__(self, tmpdir, acl_token=None, tls=False, read_tokens=(), client_auth=False,
                 name="consul", start_index=None, start=True, prefix_tokens=None,
                 anonymous_read=(), max_conns_per_client=None):
        self.dir = os.path.join(tmpdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.acl_token, self.read_tokens = acl_token, list(read_tokens)
        self.prefix_tokens = dict(prefix_tokens or {})    # token -> [key_prefix read]
        self.anonymous_read = list(anonymous_read)       # the anonymous token's prefixes
        self.max_conns_per_client = max_conns_per_client  # None = Consul's default, 200
        self.tls, self.client_auth = tls, client_auth
        self.start_index = start_index
        self.log_path = os.path.join(self.dir, "server.log")
        self.proc, self.port = None, None
        self.ca = os.path.join(self.dir, "ca.crt") if tls else None
        self.client_cert = os.path.join(self.dir, "client.crt") if client_auth else None
        self.client_key = os.path.join(self.dir, "client.key") if client_auth else None
        self.ssl_context = None
        if start:
            self.start()

    # ---- process
    @property
    def url(self):
        return "%s://127.0.0.1:%d" % ("https" if self.tls else "http", self.port)

    address = url

    def start(self, timeout=30):
        """Start the server (on self.port if it ran before: same port on restart)."""
        if self.alive():
            raise RuntimeError("consul test server already running")
        port_file = os.path.join(self.dir, "port")
        try:
            os.unlink(port_file)
        except FileNotFoundError:
            pass
        argv = [PYTHON, CONSUL_SERVER, "--dir", self.dir]
        if self.acl_token:
            argv += ["--acl-token", self.acl_token]
        for t in self.read_tokens:
            argv += ["--acl-read-token", t]
        for t, prefixes in self.prefix_tokens.items():
            for p in prefixes:
                argv += ["--acl-prefix-token", "%s=%s" % (t, p)]
        for p in self.anonymous_read:
            argv += ["--acl-anonymous-read", p]
        if self.max_conns_per_client is not None:
            argv += ["--http-max-conns-per-client", str(self.max_conns_per_client)]
        if self.tls:
            argv.append("--tls")
            if self.client_auth:
                argv.append("--tls-client-auth")
        if self.port:
            argv += ["--port", str(self.port)]
        if self.start_index is not None:
            argv += ["--start-index", str(self.start_index)]
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        _live.add(self)
        try:
            wait_until(lambda: os.path.exists(port_file) or not self.alive(), timeout,
                       what="consul test server port file")
        except AssertionError:
            self.kill()
            raise
        if not self.alive():
            raise RuntimeError("consul test server exited:\n" + self.log_tail())
        with open(port_file) as f:
            self.port = int(f.read())
        _SOURCES[self.url] = self
        if self.tls:
            self.ssl_context = ssl.create_default_context(cafile=self.ca)
            if self.client_auth:
                self.ssl_context.load_cert_chain(self.client_cert, self.client_key)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=10):
        """SIGTERM, wait; SIGKILL if it lingers.  Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return self.kill()
        _live.discard(self)
        return self.proc.returncode

    def kill(self):
        """SIGKILL (a crashed agent: the data written so far is kept)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        _live.discard(self)
        return self.proc.returncode

    def restart(self, kill=False):
        """Stop (or kill) and start again on the same port with the same data and index."""
        self.kill() if kill else self.stop()
        return self.start()

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

    # ---- raw HTTP
    # The harness connects from another loopback address, so that the server's
    # per-client connection limit counts the bridge (127.0.0.1) alone.
    CLIENT_ADDRESS = ("127.0.0.2", 0)

    def connection(self, timeout=10):
        """A fresh keep-alive http.client connection to the server."""
        if self.tls:
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout,
                                               context=self.ssl_context,
                                               source_address=self.CLIENT_ADDRESS)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout,
                                          source_address=self.CLIENT_ADDRESS)

    def request(self, method, path, body=None, headers=None, token=True, timeout=10,
                content_type=None):
        """-> (status, headers, raw body bytes).  token: True = the server's ACL token
        (if any) as X-Consul-Token, None/False = none, str = that token."""
        h = {}
        if token is True:
            token = self.acl_token
        if token:
            h["X-Consul-Token"] = token
        if body is not None:
            body = body.encode() if isinstance(body, str) else body
            if content_type:
                h["Content-Type"] = content_type
        h.update(headers or {})
        conn = self.connection(timeout)
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            return r.status, r.headers, r.read()
        finally:
            conn.close()

    @staticmethod
    def kv_path(key, **query):
        p = "/v1/kv/" + urllib.parse.quote(key, safe="/")
        parts = []
        for k, v in query.items():
            if v is None or v is False:
                continue
            parts.append(k if v is True else "%s=%s" % (k, urllib.parse.quote(str(v), safe="")))
        return p + ("?" + "&".join(parts) if parts else "")

    # ---- KV, the way the Consul UI and CLI do it
    def put(self, key, value, content_type=UI_CONTENT_TYPE, cas=None, flags=None,
            token=True):
        """PUT the raw value (str or bytes), as the UI does (text/plain, no cas unless
        given).  -> True/False (the cas outcome); raises ConsulError on HTTP errors."""
        source_wrote(self.url, key, value)
        status, headers, body = self.request(
            "PUT", self.kv_path(key, cas=cas, flags=flags),
            value if value is not None else b"", token=token, content_type=content_type)
        if status != 200:
            raise ConsulError(status, body.decode("utf-8", "replace"), headers)
        return json.loads(body)

    def harness_items(self, prefix):
        """{key: value} under prefix, for the harness (KubeAPI.auto_services): read
        through the control API, so the request log and the connections stay the test's."""
        try:
            entries = self.dump()["entries"]
        except (ConsulError, NotImplementedError, KeyError, TypeError):
            entries = [dict(e, text=base64.b64decode(e["Value"] or "").decode("utf-8", "replace"))
                       for e in self.list(prefix)[1]]
        return {e["Key"]: e.get("text") for e in entries if e["Key"].startswith(prefix)}

    def put_folder(self, name, token=True):
        """A UI folder: the key `name/` with no value (null)."""
        return self.put(name if name.endswith("/") else name + "/", b"", token=token)

    def delete(self, key, recurse=False, cas=None, token=True):
        status, headers, body = self.request(
            "DELETE", self.kv_path(key, recurse=recurse or None, cas=cas), token=token)
        if status != 200:
            raise ConsulError(status, body.decode("utf-8", "replace"), headers)
        return json.loads(body)

    def entry(self, key, token=True):
        """The DirEntry dict of one key (Value base64 as Consul sends it) or None."""
        status, headers, body = self.request("GET", self.kv_path(key), token=token)
        if status == 404:
            return None
        if status != 200:
            raise ConsulError(status, body.decode("utf-8", "replace"), headers)
        return json.loads(body)[0]

    def get(self, key, token=True):
        """The decoded value of one key as text ("" for a null value), or None if absent."""
        e = self.entry(key, token=token)
        if e is None:
            return None
        return base64.b64decode(e["Value"]).decode("utf-8") if e["Value"] else ""

    def list(self, prefix="", token=True, **query):
        """GET ?recurse: -> (X-Consul-Index, [DirEntry]) ([] on 404)."""
        status, headers, body = self.request("GET", self.kv_path(prefix, recurse=True, **query),
                                             token=token)
        if status not in (200, 404):
            raise ConsulError(status, body.decode("utf-8", "replace"), headers)
        return int(headers["X-Consul-Index"]), (json.loads(body) if status == 200 else [])

    def index(self, prefix="", token=True):
        """X-Consul-Index of a recurse read of `prefix` ("" = the whole KV store)."""
        return self.list(prefix, token=token)[0]

    # ---- control API (/_test/)
    def control(self, method, what, body=None):
        status, _, data = self.request(method, "/_test/" + what,
                                       None if body is None else json.dumps(body),
                                       token=None, content_type="application/json")
        parsed = json.loads(data) if data else None
        if status != 200:
            raise ConsulError(status, parsed)
        return parsed

    def requests(self, clear=False, since=0):
        """The request log: dicts with seq, t, t_done, conn, method, path, query (token
        hidden), status, index_header, content_type, user_agent, token_source
        ("X-Consul-Token" | "Bearer" | "query" | None), body (PUT), fault, dropped."""
        out = self.control("GET", "requests?since=%d" % since)
        if clear:
            self.clear_requests()
        return out

    def clear_requests(self):
        self.control("DELETE", "requests")

    def fault(self, **rule):
        """Add a fault rule: method, path_regex, query_regex, count (1; -1 = forever),
        status, body, headers, delay_ms, action (drop | drop_mid_wait | reset | hang |
        truncate).  Returns the rule (with its id)."""
        return self.control("POST", "faults", rule)

    def faults(self):
        return self.control("GET", "faults")

    def clear_faults(self):
        self.control("DELETE", "faults")

    def reset_index(self, to):
        """Snapshot restore: the raft index goes back to `to`, blocked queries return."""
        return self.control("POST", "reset-index", {"to": to})

    def reap_tombstones(self, index=None):
        """Forget delete tombstones (all, or those <= index): list indexes may go back."""
        return self.control("POST", "reap-tombstones", {"index": index})["reaped"]

    def bump_index(self, n=1):
        """Raft writes outside KV: the next KV write gets an index n higher."""
        return self.control("POST", "bump-index", {"n": n})["raft_index"]

    def wake(self):
        """Return every blocked query now, with an unchanged index."""
        return self.control("POST", "wake")["woken"]

    def waiters(self):
        """Blocked queries right now: [{id, path, query, min_index, since, conn}]."""
        return self.control("GET", "waiters")

    def wait_waiters(self, n=1, timeout=10, path_prefix=None):
        """Wait until at least n queries block (optionally on paths starting with ...)."""
        def enough():
            ws = [w for w in self.waiters()
                  if path_prefix is None or w["path"].startswith(path_prefix)]
            return ws if len(ws) >= n else None
        return wait_until(enough, timeout, what="%d blocked quer%s" % (n, "y" if n == 1
                                                                        else "ies"))

    def set_acl(self, token=None, read_tokens=(), prefix_tokens=None, anonymous_read=()):
        """Change the tokens of the running server (kept for restart())."""
        self.acl_token, self.read_tokens = token, list(read_tokens)
        self.prefix_tokens = dict(prefix_tokens or {})
        self.anonymous_read = list(anonymous_read)
        return self.control("POST", "acl", {"token": token, "read_tokens": list(read_tokens),
                                            "prefix_tokens": self.prefix_tokens,
                                            "anonymous_read": self.anonymous_read})

    def conns(self):
        """{limit, open: {ip: n}, max_open: {ip: n}, refused, alpn: {protocol: n}}."""
        return self.control("GET", "conns")

    def reset_conns(self):
        """max_open back to what is open now; refused and alpn to zero."""
        return self.control("DELETE", "conns")

    def dump(self):
        """{raft_index, kvs_index, entries (with "text"), tombstones, waiters}."""
        return self.control("GET", "kv")
