#!/usr/bin/python3
"""A Consul KV HTTP API stand-in for canary-bridge tests (Python standard library only).

    /usr/bin/python3 tests/consul/server.py --dir DIR [--acl-token T] [--acl-read-token T]
                                            [--acl-prefix-token T=PREFIX] [--acl-anonymous-read P]
                                            [--tls [--tls-client-auth]] [--port N]
                                            [--http-max-conns-per-client N]

Binds 127.0.0.1:0 (or --port N, used by the harness to restart on the same port), persists
the KV store to DIR/state.json on every write (a restart keeps data and indexes, like a
Consul agent keeps its raft data), and writes DIR/port LAST and atomically as the readiness
signal.  With --tls it makes a CA and a server certificate (SAN IP:127.0.0.1) with the
openssl CLI (kept across restarts) and writes DIR/ca.crt; --tls-client-auth also writes
DIR/client.crt + DIR/client.key and requires a client certificate (verify_incoming).
Runs until SIGTERM/SIGINT.

It follows Consul's agent/kvs_endpoint.go, agent/consul/kvs_endpoint.go and
agent/consul/state/kvs.go (see README.md next to this file for the behaviour and for the
places where it differs): GET (single, ?recurse, ?raw, ?keys[&separator=]), blocking
queries (?index=&wait=, jitter wait/16, 5m default, 10m cap), PUT (?cas, ?flags), DELETE
(?recurse, ?cas), X-Consul-Index on every read answer including 404, per-prefix indexes
with tombstones, ACL tokens (X-Consul-Token, Authorization: Bearer, ?token=), 413 above
512 KiB, gzip when asked, chunked bodies above 2 KiB like Go's net/http.

A control API without auth lives under /_test/ on the same port: request log, fault
injection, index reset (snapshot restore), tombstone reaping, wake-ups, store dump.
"""

import argparse
import base64
import codecs
import email.utils
import gzip
import http.server
import json
import os
import random
import re
import select
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid

MAX_VALUE_SIZE = 512 * 1024            # kv_max_value_size default
DEFAULT_QUERY_TIME = 300.0             # 5m
MAX_QUERY_TIME = 600.0                 # 10m
JITTER_FRACTION = 16
CHUNK_THRESHOLD = 2048                 # Go net/http bufferBeforeChunkingSize
DATACENTER = "dc1"
REASONS = http.server.BaseHTTPRequestHandler.responses
HARNESS_ADDRESS = "127.0.0.2"          # tests/lib/consul.py connects from here
ANON_SUFFIX = (". The anonymous token is used implicitly when a request does not specify "
               "a token.")


def log(msg):
    sys.stderr.write("consul %s %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


# Keys are raw bytes in Consul (a Go string is bytes). Here a key is a str holding them
# with surrogateescape: valid UTF-8 as characters, every other byte as U+DC80+byte.
# Go's encoding/json writes each byte that is not part of valid UTF-8 as U+FFFD.
codecs.register_error("go_replace", lambda e: ("\ufffd", e.start + 1))


def key_bytes(key):
    return key.encode("utf-8", "surrogateescape")


def go_utf8(key):
    """A key as Go's encoding/json renders it: invalid bytes -> U+FFFD, one each."""
    return key_bytes(key).decode("utf-8", "go_replace")


def go_quote(s):
    """Go's %q for the key names Consul puts in permission errors."""
    return json.dumps(go_utf8(s), ensure_ascii=False)


# --------------------------------------------------------------------------------------------
# Go durations ("10s", "1m30s", "500ms", "1.5h"); bare numbers other than 0 are errors.

_DUR_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0,
              "m": 60.0, "h": 3600.0}
_DUR_RE = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def parse_go_duration(s):
    orig = s
    sign = 1.0
    if s[:1] in ("+", "-"):
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError("invalid duration %r" % orig)
    total, pos = 0.0, 0
    while pos < len(s):
        m = _DUR_RE.match(s, pos)
        if not m or m.group(1) in ("", "."):
            raise ValueError("invalid duration %r" % orig)
        total += float(m.group(1)) * _DUR_UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def go_query_encode(q):
    """url.Values.Encode(): keys sorted, values in order."""
    parts = []
    for k in sorted(q):
        for v in q[k]:
            parts.append(urllib.parse.quote_plus(k) + "=" + urllib.parse.quote_plus(v))
    return "&".join(parts)


# --------------------------------------------------------------------------------------------
# The KV state store: entries, tombstones (graveyard), raft index, one condition variable.

class Store:
    def __init__(self, path, start_index=10):
        self.path = path
        self.cond = threading.Condition()
        self.entries = {}          # key -> dict(LockIndex, Key, Flags, Value: bytes|None,
        #                                       Session, CreateIndex, ModifyIndex)
        self.tombstones = {}       # key -> index (DELETE leaves one; a recursive DELETE one
        #                            at the prefix itself, like kvsDeleteTreeTxn)
        self.raft_index = start_index   # last raft log index: every KVS.Apply consumes one
        self.kvs_index = 0         # max("kvs", "tombstones") table index
        self.epoch = 0             # bumped by a snapshot restore: blocked queries abandon
        self.wake_gen = 0          # bumped by /_test/wake
        self.stopping = False
        self.waiters = {}          # id -> info, for /_test/waiters
        self.waiter_seq = 0
        self.load()

    # ---- persistence
    def load(self):
        try:
            with open(self.path) as f:
                st = json.load(f)
        except FileNotFoundError:
            return
        self.raft_index = st["raft_index"]
        self.kvs_index = st["kvs_index"]
        self.tombstones = dict(st["tombstones"])
        for e in st["entries"]:
            e = dict(e)
            e["Value"] = None if e["Value"] is None else base64.b64decode(e["Value"])
            self.entries[e["Key"]] = e

    def save(self):
        """Called with the lock held."""
        st = {"raft_index": self.raft_index, "kvs_index": self.kvs_index,
              "tombstones": self.tombstones,
              "entries": [encode_entry(e, session_always=True)
                          for _, e in sorted(self.entries.items())]}
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(st, f, indent=1, sort_keys=True)
        os.rename(tmp, self.path)

    # ---- reads (lock held)
    def get(self, key):
        """-> (index, entry|None) like KVS.Get: the entry's ModifyIndex, or the KV table
        index when the key does not exist."""
        e = self.entries.get(key)
        if e is not None:
            return e["ModifyIndex"], e
        return self.kvs_index or 1, None

    def list(self, prefix):
        """-> (index, [entries]) like kvsListTxn: max ModifyIndex of the entries and the
        tombstones under the prefix, else the whole KV table index; never 0."""
        ents = [e for k, e in sorted(self.entries.items(), key=lambda kv: key_bytes(kv[0]))
                if k.startswith(prefix)]
        idx = self.kvs_index
        if prefix:
            lindex = max([e["ModifyIndex"] for e in ents] +
                         [i for k, i in self.tombstones.items() if k.startswith(prefix)],
                         default=0)
        else:
            lindex = idx
        if lindex:
            idx = lindex
        return idx or 1, ents

    # ---- writes (each one is a raft apply: the raft index moves even for no-ops)
    def _apply(self):
        self.raft_index += 1
        return self.raft_index

    def _changed(self, idx):
        self.kvs_index = max(self.kvs_index, idx)
        self.save()
        self.cond.notify_all()

    def put(self, key, value, flags=0, cas=None):
        with self.cond:
            idx = self._apply()
            existing = self.entries.get(key)
            if cas is not None:
                if cas == 0 and existing is not None:
                    return False
                if cas != 0 and (existing is None or existing["ModifyIndex"] != cas):
                    return False
            value = value or None          # an empty value is stored as nil -> null
            if existing is not None and existing["Value"] == value and \
                    existing["Flags"] == flags:
                return True                # kvsSetTxn: unchanged entry, nothing written
            e = {"LockIndex": existing["LockIndex"] if existing else 0, "Key": key,
                 "Flags": flags, "Value": value,
                 "Session": existing["Session"] if existing else "",
                 "CreateIndex": existing["CreateIndex"] if existing else idx,
                 "ModifyIndex": idx}
            self.entries[key] = e
            self._changed(idx)
            return True

    def delete(self, key, cas=None):
        with self.cond:
            idx = self._apply()
            existing = self.entries.get(key)
            if cas is not None and (existing is None or existing["ModifyIndex"] != cas):
                return existing is None    # kvsDeleteCASTxn
            if existing is None:
                return True
            del self.entries[key]
            self.tombstones[key] = idx
            self._changed(idx)
            return True

    def delete_tree(self, prefix):
        with self.cond:
            idx = self._apply()
            gone = [k for k in self.entries if k.startswith(prefix)]
            if not gone:
                return True
            for k in gone:
                del self.entries[k]
            self.tombstones[prefix] = idx
            self._changed(idx)
            return True

    # ---- test controls
    def restore(self, to):
        """A snapshot restore that takes the raft index back to `to`: every index is moved
        down by the same amount (clamped at 1), the data stays, blocked queries abandon."""
        with self.cond:
            if to < 1:
                raise ValueError("to must be >= 1")
            delta = self.raft_index - to

            def f(i):
                return max(1, i - delta) if i else 0
            for e in self.entries.values():
                e["CreateIndex"], e["ModifyIndex"] = f(e["CreateIndex"]), f(e["ModifyIndex"])
            self.tombstones = {k: f(i) for k, i in self.tombstones.items()}
            self.kvs_index = max([e["ModifyIndex"] for e in self.entries.values()] +
                                 list(self.tombstones.values()), default=0)
            self.raft_index = max(to, self.kvs_index)
            self.epoch += 1
            self.save()
            self.cond.notify_all()
            return {"raft_index": self.raft_index, "kvs_index": self.kvs_index,
                    "delta": delta}

    def reap(self, index=None):
        """Tombstone reaping (ReapTombstones): no index moves, nobody is woken."""
        with self.cond:
            gone = [k for k, i in self.tombstones.items() if index is None or i <= index]
            for k in gone:
                del self.tombstones[k]
            self.save()
            return gone

    def bump(self, n):
        """Raft writes outside the KV store (catalog, sessions ...): gaps in the index."""
        with self.cond:
            self.raft_index += n
            self.save()
            return self.raft_index

    def wake(self):
        with self.cond:
            self.wake_gen += 1
            self.cond.notify_all()
            return len(self.waiters)

    def stop(self):
        with self.cond:
            self.stopping = True
            self.save()
            self.cond.notify_all()

    def block(self, compute, min_index, timeout, info):
        """Run compute() (lock held) until its index is > min_index, the timeout passes,
        a restore abandons the query (-> the answer from before the restore), or
        /_test/wake fires.  -> compute()'s result."""
        with self.cond:
            result = compute()
            if min_index <= 0 or result[0] > min_index:
                return result
            epoch, gen = self.epoch, self.wake_gen
            deadline = time.monotonic() + timeout
            self.waiter_seq += 1
            wid = self.waiter_seq
            self.waiters[wid] = dict(info, id=wid, since=time.time(), min_index=min_index)
            try:
                while not self.stopping:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self.cond.wait(remaining)
                    if self.epoch != epoch:
                        # As Consul v1.16 does: the abandoned query answers at once with
                        # what it had before the restore (its unchanged index), not with
                        # the restored, lower index.
                        break
                    result = compute()
                    if result[0] > min_index or self.wake_gen != gen:
                        break
            finally:
                del self.waiters[wid]
            return result

    def dump(self):
        with self.cond:
            ents = []
            for _, e in sorted(self.entries.items()):
                d = encode_entry(e, session_always=True)
                v = e["Value"]
                try:
                    d["text"] = None if v is None else v.decode("utf-8")
                except UnicodeDecodeError:
                    d["text"] = None
                ents.append(d)
            return {"raft_index": self.raft_index, "kvs_index": self.kvs_index,
                    "entries": ents, "tombstones": dict(self.tombstones),
                    "waiters": len(self.waiters)}


def encode_entry(e, session_always=False, wire=False):
    """DirEntry JSON: LockIndex, Key, Flags, Value (base64 | null), Session (omitempty),
    CreateIndex, ModifyIndex, in Go's field order.  wire: the Key as Consul's JSON shows
    it (U+FFFD for bytes that are not UTF-8); else raw, for the state file and the dump."""
    d = {"LockIndex": e["LockIndex"], "Key": go_utf8(e["Key"]) if wire else e["Key"],
         "Flags": e["Flags"],
         "Value": None if e["Value"] is None else base64.b64encode(e["Value"]).decode()}
    if e.get("Session") or session_always:
        d["Session"] = e.get("Session", "")
    d["CreateIndex"] = e["CreateIndex"]
    d["ModifyIndex"] = e["ModifyIndex"]
    return d


# --------------------------------------------------------------------------------------------
# Request log and fault rules

class RequestLog:
    def __init__(self):
        self.lock = threading.Lock()
        self.entries, self.seq = [], 0

    def add(self, **kw):
        with self.lock:
            self.seq += 1
            e = dict(seq=self.seq, **kw)
            self.entries.append(e)
            return e

    def update(self, entry, fields):
        with self.lock:
            entry.update(fields)

    def snapshot(self, since=0):
        with self.lock:
            return [dict(e) for e in self.entries if e["seq"] > since]

    def clear(self):
        with self.lock:
            self.entries = []


class Faults:
    FIELDS = {"method": None, "path_regex": None, "query_regex": None, "count": 1,
              "status": None, "delay_ms": None, "action": None, "body": None,
              "headers": None}
    ACTIONS = (None, "drop", "drop_mid_wait", "reset", "hang", "truncate")

    def __init__(self):
        self.lock = threading.Lock()
        self.rules, self.seq = [], 0

    def add(self, rule):
        unknown = set(rule) - set(self.FIELDS)
        if unknown:
            raise ValueError("unknown fault fields: %s" % ", ".join(sorted(unknown)))
        r = dict(self.FIELDS)
        r.update(rule)
        if r["action"] not in self.ACTIONS:
            raise ValueError("action must be one of %s" % ", ".join(a for a in self.ACTIONS if a))
        if r["action"] is None and r["status"] is None and r["delay_ms"] is None:
            raise ValueError("a fault needs status, delay_ms or action")
        if not isinstance(r["count"], int) or r["count"] == 0 or r["count"] < -1:
            raise ValueError("count must be a positive integer or -1 (forever)")
        for k in ("path_regex", "query_regex"):
            if r[k] is not None:
                re.compile(r[k])
        with self.lock:
            self.seq += 1
            r["id"], r["hits"] = self.seq, 0
            self.rules.append(r)
        return dict(r)

    def match(self, method, path, query, blocking):
        with self.lock:
            for r in self.rules:
                if r["method"] and r["method"].upper() != method:
                    continue
                if r["path_regex"] and not re.search(r["path_regex"], path):
                    continue
                if r["query_regex"] and not re.search(r["query_regex"], query):
                    continue
                if r["action"] == "drop_mid_wait" and not blocking:
                    continue
                r["hits"] += 1
                if r["count"] != -1:
                    r["count"] -= 1
                    if r["count"] == 0:
                        self.rules.remove(r)
                return dict(r)
        return None

    def list(self):
        with self.lock:
            return [dict(r) for r in self.rules]

    def clear(self):
        with self.lock:
            self.rules = []


class Acl:
    """Token roles, as Consul resolves them under default_policy deny:
    "management" (everything), "read" (key_prefix "" read, no write), "prefix" (key_prefix
    read on some prefixes only, no write) and "anonymous" (no token: the anonymous token's
    policy, by default nothing; anonymous_read gives it key_prefix read rules).  A token
    that is not known gets "ACL not found", like Consul."""

    def __init__(self, token=None, read_tokens=(), prefix_tokens=None, anonymous_read=()):
        self.lock = threading.Lock()
        self.set(token, read_tokens, prefix_tokens, anonymous_read)

    def set(self, token=None, read_tokens=(), prefix_tokens=None, anonymous_read=()):
        with self.lock:
            self.enabled = bool(token)
            self.token = token
            self.read_tokens = [t for t in read_tokens if t]
            self.prefix_tokens = {t: list(p) for t, p in (prefix_tokens or {}).items() if t}
            self.anonymous_read = list(anonymous_read or ())

    def role(self, secret):
        """-> (role, read prefixes, may write), or None for an unknown token."""
        with self.lock:
            if not self.enabled:
                return ("management", [""], True)
            if not secret:
                return ("anonymous", list(self.anonymous_read), False)
            if secret == self.token:
                return ("management", [""], True)
            if secret in self.read_tokens:
                return ("read", [""], False)
            if secret in self.prefix_tokens:
                return ("prefix", list(self.prefix_tokens[secret]), False)
            return None

    def default_policy(self):
        with self.lock:
            return "deny" if self.enabled else "allow"

    def state(self):
        with self.lock:
            return {"enabled": self.enabled, "token_set": bool(self.token),
                    "read_tokens": len(self.read_tokens),
                    "prefix_tokens": len(self.prefix_tokens),
                    "anonymous_read": list(self.anonymous_read)}


def may_read(role, key):
    """key_prefix read rules (every rule here allows)."""
    return any(key.startswith(p) for p in role[1])


def accessor_id(secret):
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "consul-test-token:" + secret))


def permission_denied(role, secret, access, key):
    if role[0] == "anonymous":
        return ("Permission denied: anonymous token lacks permission 'key:%s' on %s%s"
                % (access, go_quote(key), ANON_SUFFIX))
    return ("Permission denied: token with AccessorID '%s' lacks permission 'key:%s' on %s"
            % (accessor_id(secret), access, go_quote(key)))


# --------------------------------------------------------------------------------------------
# HTTP

class Dropped(Exception):
    """The connection was closed on purpose (fault): nothing more to send."""


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    conn_id = 0

    def log_message(self, fmt, *args):       # our own one line per request instead
        pass

    def log_error(self, fmt, *args):
        log("c%d %s" % (self.conn_id, fmt % args))

    # ---- plumbing
    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = b""
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline(65537)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def send(self, status, body=b"", ctype=None, headers=None, explicit_length=False,
             api=True):
        """Headers and body in ONE write (no Nagle/delayed-ACK stall).  Like Go's net/http
        behind Consul's gzip handler: Vary always, gzip when the client accepts it,
        Content-Length up to 2 KiB and chunked above unless the handler set a length."""
        if isinstance(body, str):
            body = body.encode()
        h = []
        if api:
            h.append(("Vary", "Accept-Encoding"))
            # agent/http.go sets it on every API answer (1.9+), "allow" with ACLs off.
            h.append(("X-Consul-Default-Acl-Policy", self.server.acl.default_policy()))
        for k, v in (headers or {}).items():
            h.append((k, v))
        if body and ctype is None:
            ctype = "text/plain; charset=utf-8"      # Go sniffs error text as this
        if ctype:
            h.append(("Content-Type", ctype))
        if api and body and self.accepts_gzip():
            body = gzip.compress(body, mtime=0)
            h.append(("Content-Encoding", "gzip"))
            explicit_length = False
        chunked = (not explicit_length and len(body) > CHUNK_THRESHOLD
                   and self.request_version == "HTTP/1.1")
        if chunked:
            h.append(("Transfer-Encoding", "chunked"))
            wire_body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        else:
            h.append(("Content-Length", str(len(body))))
            wire_body = body
        h.append(("Date", email.utils.formatdate(usegmt=True)))
        if self.close_connection:
            h.append(("Connection", "close"))
        head = "HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, ("",))[0])
        head += "".join("%s: %s\r\n" % kv for kv in h) + "\r\n"
        out = head.encode("latin-1", "replace") + (b"" if self.command == "HEAD" else wire_body)
        idx = (headers or {}).get("X-Consul-Index")
        self.rec.update(status=status, index_header=int(idx) if idx is not None else None,
                        t_done=time.time())
        self.publish()              # logged before the client can see the answer
        if self.fault and self.fault["action"] == "truncate":
            cut = len(head) + max(0, len(wire_body) // 2)
            self.wfile.write(out[:cut])
            self.rec["truncated"] = True
            self.drop()
        self.wfile.write(out)

    def publish(self):
        """Copy this request's record into the request log (visible while in flight)."""
        if self.entry is not None:
            self.server.reqlog.update(self.entry, self.rec)

    def accepts_gzip(self):
        for part in (self.headers.get("Accept-Encoding") or "").split(","):
            bits = [b.strip() for b in part.split(";")]
            if bits[0].lower() == "gzip":
                q = [b for b in bits[1:] if b.startswith("q=")]
                try:
                    return not q or float(q[0][2:]) > 0
                except ValueError:
                    return False
        return False

    def drop(self, reset=False):
        """Close the connection without (a complete) answer."""
        self.close_connection = True
        self.rec.update(dropped="reset" if reset else True, t_done=time.time())
        self.publish()
        sock = self.connection
        try:
            if reset:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        raise Dropped()

    def hang(self, limit):
        """Answer nothing until the client goes away (or `limit` seconds pass)."""
        deadline = None if limit is None else time.monotonic() + limit
        sock = self.connection
        while not self.server.stop_event.is_set():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            r, _, _ = select.select([sock], [], [], remaining)
            if r:
                try:
                    peek = sock.recv(1, socket.MSG_PEEK)
                except (OSError, ssl.SSLError, ValueError):
                    peek = b""
                if not peek:
                    break
                # the client sent more (pipelining): stop hanging, drop it
                break
        self.drop()

    def wait_ms(self, ms):
        if ms:
            self.server.stop_event.wait(ms / 1000.0)

    # ---- entry point for every method
    def dispatch(self):
        t0 = time.time()
        split = urllib.parse.urlsplit(self.path)
        self.raw_path, self.raw_query = split.path, split.query
        # Raw bytes, kept (surrogateescape), as Go's URL parsing keeps them.
        path = urllib.parse.unquote_to_bytes(split.path).decode("utf-8", "surrogateescape")
        q = urllib.parse.parse_qs(split.query, keep_blank_values=True)
        log_query = re.sub(r"(^|&)token=[^&]*", r"\1token=<hidden>", split.query)
        self.fault = None
        token_source = None
        if q.get("token", [""])[0]:
            token_source = "query"
        elif self.headers.get("X-Consul-Token"):
            token_source = "X-Consul-Token"
        elif (self.headers.get("Authorization") or "").lower().startswith("bearer "):
            token_source = "Bearer"
        self.rec = {"t": t0, "t_done": None, "conn": self.conn_id, "method": self.command,
                    "path": path, "query": log_query, "status": None, "index_header": None,
                    "content_type": self.headers.get("Content-Type"),
                    "user_agent": self.headers.get("User-Agent"),
                    "token_source": token_source, "fault": None, "dropped": False}
        control = path.startswith("/_test/")
        self.entry = None if control else self.server.reqlog.add(**self.rec)
        try:
            body = self.read_body()
            if self.command == "PUT" and not control:
                self.rec["body"] = body[:4096].decode("utf-8", "replace")
            if control:
                self.control(path, q, body)
            else:
                self.api(path, q, body)
        except Dropped:
            pass
        except (OSError, ssl.SSLError) as e:
            self.close_connection = True
            self.rec["error"] = repr(e)
        finally:
            if self.rec["t_done"] is None:
                self.rec["t_done"] = time.time()
            self.publish()
            status = self.rec["status"]
            log("c%d %s %s%s -> %s%s %.1fms%s" % (
                self.conn_id, self.command, path, "?" + log_query if log_query else "",
                status if status is not None else "(no answer)",
                " idx=%s" % self.rec["index_header"] if self.rec["index_header"] else "",
                (self.rec["t_done"] - t0) * 1000,
                " [fault %s%s]" % (self.rec["fault"], " dropped" if self.rec["dropped"]
                                   else "") if self.rec["fault"] else ""))

    do_GET = do_PUT = do_DELETE = do_POST = do_HEAD = do_PATCH = do_OPTIONS = dispatch

    # ---- Consul API
    def api(self, path, q, body):
        srv = self.server
        blocking = self.command == "GET" and q.get("index", [""])[0] not in ("", "0")
        rule = srv.faults.match(self.command, path, self.raw_query, blocking) \
            if path.startswith("/v1/") else None
        if rule:
            self.fault = rule
            self.rec["fault"] = rule["id"]
            act = rule["action"]
            if act in ("drop", "reset"):
                self.wait_ms(rule["delay_ms"])
                self.drop(reset=act == "reset")
            if act == "drop_mid_wait":
                info = {"path": path, "query": self.rec["query"], "fault": rule["id"]}
                with srv.store.cond:
                    srv.store.waiter_seq += 1
                    wid = srv.store.waiter_seq
                    srv.store.waiters[wid] = dict(info, id=wid, since=time.time())
                try:
                    self.wait_ms(rule["delay_ms"])
                finally:
                    with srv.store.cond:
                        srv.store.waiters.pop(wid, None)
                self.drop()
            if act == "hang":
                self.hang(rule["delay_ms"] / 1000.0 if rule["delay_ms"] else None)
            self.wait_ms(rule["delay_ms"])
            if rule["status"] is not None:
                msg = rule["body"]
                if msg is None:
                    msg = "No cluster leader" if rule["status"] == 500 else \
                        REASONS.get(rule["status"], ("fault",))[0]
                return self.send(rule["status"], msg, headers=rule["headers"] or None)

        if not path.startswith("/v1/kv/") and path != "/v1/kv":
            if path == "/v1/status/leader":
                return self.send(200, json.dumps("127.0.0.1:8300"), "application/json")
            return self.send(404, "404 page not found\n")

        # cleanhttp.PrintablePathCheckHandler ranges over runes: an invalid byte is
        # RuneError (U+FFFD), which is printable.
        if any(not c.isprintable() for c in go_utf8(path)):
            return self.send(400)
        if self.command not in ("GET", "PUT", "DELETE"):
            allow = "OPTIONS,GET,PUT,DELETE"
            if self.command == "OPTIONS":
                return self.send(200, headers={"Allow": allow})
            return self.send(405, "method %s not allowed" % self.command,
                             headers={"Allow": allow})

        # s.parse(): dc, token, consistency, wait/index
        dc = q.get("dc", [""])[0] or DATACENTER
        secret = q.get("token", [""])[0] or self.headers.get("X-Consul-Token") or ""
        if not secret:
            auth = self.headers.get("Authorization") or ""
            parts = auth.split(" ")
            if len(parts) > 1 and parts[0].lower() == "bearer":
                secret = " ".join(parts[1:]).strip().split(" ")[0].strip()
        stale, consistent, cached = "stale" in q, "consistent" in q, "cached" in q
        if stale and consistent:
            return self.send(400, "Cannot specify ?stale with ?consistent, conflicting semantics.")
        if cached and consistent:
            return self.send(400, "Cannot specify ?cached with ?consistent, conflicting semantics.")
        wait = None
        if q.get("wait", [""])[0]:
            try:
                wait = parse_go_duration(q["wait"][0])
            except ValueError:
                return self.send(400, "Invalid wait time")
        min_index = 0
        if q.get("index", [""])[0]:
            try:
                min_index = int(q["index"][0])
                if min_index < 0 or min_index >= 2 ** 64:
                    raise ValueError
            except ValueError:
                return self.send(400, "Invalid index")
        consistency = "stale" if stale else "consistent" if consistent else "leader"

        # path traversal and key validation (1.21.x+ agents; leading '/' refused)
        raw = self.raw_path
        if "../" in raw or "..\\" in raw or "../" in path:
            return self.send(400, "URL path contains invalid traversal sequence")
        low = raw.lower()
        if any(s in low for s in ("%2e%2e%2f", "%2e%2e/", "..%2f", "%2e%2e%5c", "%252e%252e%252f")):
            return self.send(400, "URL path contains encoded traversal sequence")
        key = path[len("/v1/kv/"):] if path.startswith("/v1/kv/") else ""
        if key:
            err = validate_key(key)
            if err:
                return self.send(400, err)

        if self.command == "GET":
            return self.kv_get(key, q, dc, secret, min_index, wait, consistency)
        if self.command == "PUT":
            return self.kv_put(key, q, dc, secret, body)
        return self.kv_delete(key, q, dc, secret)

    def meta_headers(self, index, consistency, filtered=False):
        h = {"X-Consul-Index": str(max(1, index)), "X-Consul-Knownleader": "true",
             "X-Consul-Lastcontact": "0", "X-Consul-Effective-Consistency": consistency,
             "X-Consul-Query-Backend": "blocking-query"}
        if filtered:
            h["X-Consul-Results-Filtered-By-Acls"] = "true"
        return h

    def rpc_prelude(self, dc, secret):
        """ForwardRPC + ResolveToken: -> role, or None after answering an error."""
        if dc != DATACENTER:
            self.send(500, "No path to datacenter")
            return None
        role = self.server.acl.role(secret)
        if role is None:
            self.send(403, "ACL not found")
            return None
        return role

    def kv_get(self, key, q, dc, secret, min_index, wait, consistency):
        keys, recurse, raw = "keys" in q, "recurse" in q, "raw" in q
        if not keys and not recurse and key == "":
            return self.send(400, "Missing key name")
        sep = None
        if keys:
            if "seperator" in q:
                sep = q["seperator"][0]
            if "separator" in q:
                sep = q["separator"][0]
        role = self.rpc_prelude(dc, secret)
        if role is None:
            return
        # KVS.Get checks KeyReadAllowed whether or not the key exists: 403 without meta.
        if not keys and not recurse and not may_read(role, key):
            return self.send(403, permission_denied(role, secret, "read", key))
        store = self.server.store

        def compute():          # runs with the store lock held: copy what we keep
            if keys or recurse:
                # KVS.List / ListKeys: FilterDirEnt, ResultsFilteredByACLs = total != kept,
                # then SetQueryMeta's maskResultsFilteredByACLs clears the flag for the
                # anonymous token (an empty token): it gets a silently shorter list, or 404.
                idx, ents = store.list(key)
                kept = [dict(e) for e in ents if may_read(role, e["Key"])]
                filtered = len(kept) != len(ents) and secret != ""
                return idx, kept, filtered
            idx, e = store.get(key)
            return idx, ([dict(e)] if e else []), False

        timeout = wait if wait is not None and wait > 0 else DEFAULT_QUERY_TIME
        timeout = min(timeout, MAX_QUERY_TIME)
        timeout += random.uniform(0, timeout / JITTER_FRACTION)
        info = {"path": "/v1/kv/" + key, "query": self.rec["query"], "conn": self.conn_id,
                "timeout": timeout}
        idx, ents, filtered = store.block(compute, min_index, timeout, info)
        if store.stopping:              # SIGTERM: blocked queries lose their connection
            self.drop()
        headers = self.meta_headers(idx, consistency, filtered)
        pretty = "pretty" in q

        def js(obj):
            if pretty:
                return json.dumps(obj, indent=4) + "\n"
            return json.dumps(obj, separators=(",", ":"))
        if keys:
            names, seen = [], set()
            for e in ents:
                k = e["Key"]
                if sep:
                    i = k.find(sep, len(key))
                    if i >= 0:
                        k = k[:i + len(sep)]
                        if k in seen:
                            continue
                        seen.add(k)
                names.append(k)
            if not names and key != "":
                return self.send(404, headers=headers)
            return self.send(200, js([go_utf8(n) for n in names]), "application/json", headers)
        if not ents:
            return self.send(404, headers=headers)
        if raw and not recurse:
            headers.update({"X-Content-Type-Options": "nosniff",
                            "Content-Security-Policy": "sandbox"})
            return self.send(200, ents[0]["Value"] or b"", "text/plain", headers,
                             explicit_length=True)
        return self.send(200, js([encode_entry(e, wire=True) for e in ents]), "application/json",
                         headers)

    def kv_put(self, key, q, dc, secret, body):
        if key == "":
            return self.send(400, "Missing key name")
        flags_set = [f for f in ("cas", "acquire", "release") if f in q]
        if len(flags_set) > 1:
            return self.send(400, "Conflicting flags: %s\n" % go_query_encode(q))
        flags, cas = 0, None
        if "flags" in q:
            try:
                flags = parse_uint(q["flags"][0])
            except ValueError:
                return self.send(500, 'strconv.ParseUint: parsing %s: invalid syntax'
                                 % go_quote(q["flags"][0]))
        if "cas" in q:
            try:
                cas = parse_uint(q["cas"][0])
            except ValueError:
                return self.send(500, 'strconv.ParseUint: parsing %s: invalid syntax'
                                 % go_quote(q["cas"][0]))
        clen = self.headers.get("Content-Length")
        size = int(clen) if clen else len(body)
        if size > MAX_VALUE_SIZE or len(body) > MAX_VALUE_SIZE:
            return self.send(413, "Request body(%d bytes) too large, max size: %d bytes. See "
                             "https://developer.hashicorp.com/docs/agent/config/config-files"
                             "#kv_max_value_size." % (max(size, len(body)), MAX_VALUE_SIZE))
        role = self.rpc_prelude(dc, secret)
        if role is None:
            return
        if not role[2]:
            return self.send(403, permission_denied(role, secret, "write", key))
        if "acquire" in q or "release" in q:
            sess = q.get("acquire", q.get("release"))[0]
            return self.send(500, "invalid session %s" % go_quote(sess))
        ok = self.server.store.put(key, body, flags, cas)
        return self.send(200, "true" if ok else "false", "application/json")

    def kv_delete(self, key, q, dc, secret):
        if "recurse" in q and "cas" in q:
            return self.send(400, "Conflicting flags: %s\n" % go_query_encode(q))
        recurse = "recurse" in q
        if not recurse and key == "":
            return self.send(400, "Missing key name")
        cas = None
        if "cas" in q:
            try:
                cas = parse_uint(q["cas"][0])
            except ValueError:
                return self.send(500, 'strconv.ParseUint: parsing %s: invalid syntax'
                                 % go_quote(q["cas"][0]))
        role = self.rpc_prelude(dc, secret)
        if role is None:
            return
        if not role[2]:
            return self.send(403, permission_denied(role, secret, "write", key))
        store = self.server.store
        if recurse:
            ok = store.delete_tree(key)
        else:
            ok = store.delete(key, cas)
        return self.send(200, "true" if (ok or cas is None) else "false", "application/json")

    # ---- control API
    def control(self, path, q, body):
        srv = self.server
        what = path[len("/_test/"):]
        m = self.command

        def ok(obj):
            return self.send(200, json.dumps(obj), "application/json", api=False)

        def bad(msg, status=400):
            return self.send(status, json.dumps({"error": msg}), "application/json", api=False)
        try:
            args = json.loads(body) if body.strip() else {}
        except ValueError as e:
            return bad("bad JSON: %s" % e)
        try:
            if what == "requests" and m == "GET":
                return ok(srv.reqlog.snapshot(int(q.get("since", ["0"])[0])))
            if what == "requests" and m == "DELETE":
                srv.reqlog.clear()
                return ok({"cleared": True})
            if what == "faults" and m == "POST":
                return ok(srv.faults.add(args))
            if what == "faults" and m == "GET":
                return ok(srv.faults.list())
            if what == "faults" and m == "DELETE":
                srv.faults.clear()
                return ok({"cleared": True})
            if what == "reset-index" and m == "POST":
                return ok(srv.store.restore(int(args["to"])))
            if what == "reap-tombstones" and m == "POST":
                return ok({"reaped": srv.store.reap(args.get("index"))})
            if what == "bump-index" and m == "POST":
                return ok({"raft_index": srv.store.bump(int(args.get("n", 1)))})
            if what == "wake" and m == "POST":
                return ok({"woken": srv.store.wake()})
            if what == "waiters" and m == "GET":
                with srv.store.cond:
                    return ok(sorted(srv.store.waiters.values(), key=lambda w: w["id"]))
            if what == "conns" and m == "GET":
                return ok(srv.conn_stats())
            if what == "conns" and m == "DELETE":
                srv.reset_conn_stats()
                return ok({"reset": True})
            if what == "kv" and m == "GET":
                return ok(srv.store.dump())
            if what == "acl" and m == "POST":
                srv.acl.set(args.get("token"), args.get("read_tokens") or (),
                            args.get("prefix_tokens") or {}, args.get("anonymous_read") or ())
                return ok(srv.acl.state())
            if what == "acl" and m == "GET":
                return ok(srv.acl.state())
        except (ValueError, KeyError, TypeError, re.error) as e:
            return bad(str(e))
        return bad("no such control endpoint: %s %s" % (m, path), 404)


def parse_uint(s):
    if not s.isdigit():
        raise ValueError(s)
    v = int(s)
    if v >= 2 ** 64:
        raise ValueError(s)
    return v


def validate_key(key):
    """The relaxed validation of current agents (hashicorp/consul#22850): path traversal,
    encoded traversal, leading/trailing spaces; plus a leading '/'."""
    if key.startswith("/"):
        return "key must not begin with a '/'"
    if ".." in key.split("/") or "../" in key or "..\\" in key:
        return "key contains path traversal sequence"
    low = key.lower()
    if any(s in low for s in ("%2e%2e%2f", "%2e%2e/", "..%2f", "%2e%2e%5c")):
        return "key contains encoded path traversal sequence"
    if key != key.strip(" "):
        return "key must not begin or end with a space"
    return None


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True          # restart on the same port despite TIME_WAIT
    request_queue_size = 128

    def __init__(self, addr, store, acl, ssl_ctx, max_conns_per_client=0):
        self.store, self.acl, self.ssl_ctx = store, acl, ssl_ctx
        self.reqlog, self.faults = RequestLog(), Faults()
        self.stop_event = threading.Event()
        self.conn_seq = 0
        self.conn_lock = threading.Lock()
        # limits.http_max_conns_per_client: open connections per client IP, idle
        # keep-alive ones included (go-connlimit counts from StateNew to StateClosed).
        self.max_conns_per_client = max_conns_per_client
        self.open_conns, self.max_open = {}, {}     # ip -> count
        self.refused, self.alpn = 0, {}             # 429s; negotiated ALPN -> count
        super().__init__(addr, Handler)

    def conn_stats(self):
        with self.conn_lock:
            return {"limit": self.max_conns_per_client, "open": dict(self.open_conns),
                    "max_open": dict(self.max_open), "refused": self.refused,
                    "alpn": dict(self.alpn)}

    def reset_conn_stats(self):
        with self.conn_lock:
            self.max_open = dict(self.open_conns)
            self.refused, self.alpn = 0, {}

    def get_request(self):
        sock, addr = self.socket.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, addr

    def finish_request(self, request, client_address):
        """Runs in the connection's thread (the TLS handshake too)."""
        ip = client_address[0]
        with self.conn_lock:
            self.conn_seq += 1
            conn_id = self.conn_seq
            n = self.open_conns.get(ip, 0)
            # The harness (tests/lib/consul.py) connects from HARNESS_ADDRESS: counted, never
            # refused, so that its own short requests never race the limit under test.
            over = bool(self.max_conns_per_client) and n >= self.max_conns_per_client and \
                ip != HARNESS_ADDRESS
            if over:
                self.refused += 1
            else:
                self.open_conns[ip] = n + 1
                self.max_open[ip] = max(self.max_open.get(ip, 0), n + 1)
        try:
            self.serve_conn(request, client_address, conn_id, over)
        finally:
            if not over:
                with self.conn_lock:
                    self.open_conns[ip] -= 1
                    if not self.open_conns[ip]:
                        del self.open_conns[ip]

    def serve_conn(self, request, client_address, conn_id, over):
        sock = request
        if self.ssl_ctx is not None:
            try:
                request.settimeout(10)
                sock = self.ssl_ctx.wrap_socket(request, server_side=True)
                sock.settimeout(None)
            except (OSError, ssl.SSLError) as e:
                if not isinstance(e, (ssl.SSLEOFError, ConnectionResetError)):
                    log("c%d TLS handshake failed: %s" % (conn_id, e))
                return
            proto = sock.selected_alpn_protocol() or "none"
            with self.conn_lock:
                self.alpn[proto] = self.alpn.get(proto, 0) + 1
            if proto == "h2":       # offered like Consul's Go server, but not spoken here
                log("c%d negotiated h2; this test server speaks HTTP/1.1 only: closing"
                    % conn_id)
                sock.close()
                return
        try:
            if over:
                # go-connlimit's default handler: a bare 429 at once, then close, with
                # the request (if any) unread.
                log("c%d from %s: over http_max_conns_per_client=%d: 429"
                    % (conn_id, client_address[0], self.max_conns_per_client))
                sock.settimeout(0.1)
                sock.sendall(b"HTTP/1.1 429 Too Many Requests\r\n\r\n")
                return
            handler = Handler.__new__(Handler)
            handler.conn_id = conn_id
            handler.__init__(sock, client_address, self)
        except (OSError, ssl.SSLError):
            pass
        finally:
            if sock is not request:
                try:
                    sock.close()
                except OSError:
                    pass

    def handle_error(self, request, client_address):
        log("connection error: %r" % (sys.exc_info()[1],))


# --------------------------------------------------------------------------------------------
# Certificates, files, main

def make_certs(d, client_auth):
    """CA + server certificate (+ client certificate), kept across restarts."""
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]

    def run(*args):
        subprocess.run(["openssl"] + list(args), check=True, cwd=d,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if not os.path.exists(os.path.join(d, "ca.key")):
        run("req", "-x509", *key, "-nodes", "-keyout", "ca.key.tmp", "-out", "ca.crt.tmp",
            "-days", "3650", "-subj", "/CN=Consul Agent CA test",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        os.rename(os.path.join(d, "ca.crt.tmp"), os.path.join(d, "ca.crt"))
        os.rename(os.path.join(d, "ca.key.tmp"), os.path.join(d, "ca.key"))

    def leaf(name, cn, ext):
        if os.path.exists(os.path.join(d, name + ".crt")):
            return
        run("req", "-new", *key, "-nodes", "-keyout", name + ".key", "-out", name + ".csr",
            "-subj", "/CN=" + cn)
        with open(os.path.join(d, name + ".ext"), "w") as f:
            f.write(ext + "basicConstraints=CA:FALSE\n"
                    "keyUsage=critical,digitalSignature,keyEncipherment\n"
                    "authorityKeyIdentifier=keyid,issuer\nsubjectKeyIdentifier=hash\n")
        run("x509", "-req", "-in", name + ".csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", name + ".crt.tmp", "-days", "3650",
            "-extfile", name + ".ext")
        os.rename(os.path.join(d, name + ".crt.tmp"), os.path.join(d, name + ".crt"))
    leaf("server", "server.dc1.consul",
         "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:server.dc1.consul\n"
         "extendedKeyUsage=serverAuth,clientAuth\n")
    if client_auth:
        leaf("client", "canary-bridge", "extendedKeyUsage=clientAuth\n")


def write_file(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def bind(port, store, acl, ctx, max_conns):
    """Bind 127.0.0.1:port; a fixed port (restart) may still be held for a moment."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return Server(("127.0.0.1", port), store, acl, ctx, max_conns)
        except OSError as e:
            if port == 0 or time.monotonic() >= deadline or \
                    getattr(e, "errno", None) != 98:
                raise
            time.sleep(0.05)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", required=True, help="state.json, certificates, port")
    ap.add_argument("--acl-token", help="enable ACLs (default deny); this token may do all")
    ap.add_argument("--acl-read-token", action="append", default=[],
                    help="a token with key:read on everything and no write (repeatable)")
    ap.add_argument("--acl-prefix-token", action="append", default=[], metavar="T=PREFIX",
                    help="a token with key_prefix read on PREFIX only (repeatable)")
    ap.add_argument("--acl-anonymous-read", action="append", default=[], metavar="PREFIX",
                    help="give the anonymous token key_prefix read on PREFIX (repeatable)")
    ap.add_argument("--tls", action="store_true", help="HTTPS (writes DIR/ca.crt)")
    ap.add_argument("--tls-client-auth", action="store_true",
                    help="require a client certificate signed by the CA (DIR/client.crt)")
    ap.add_argument("--http-max-conns-per-client", type=int, default=200,
                    help="limits.http_max_conns_per_client: 429 past this many open "
                         "connections from one IP (default 200, as Consul; 0 = no limit)")
    ap.add_argument("--port", type=int, default=0, help="0 = any (default)")
    ap.add_argument("--start-index", type=int, default=10,
                    help="raft index of a fresh store (internal raft writes come first)")
    args = ap.parse_args(argv)
    d = os.path.abspath(args.dir)
    os.makedirs(d, exist_ok=True)
    try:
        os.unlink(os.path.join(d, "port"))
    except FileNotFoundError:
        pass
    ctx = None
    if args.tls:
        make_certs(d, args.tls_client_auth)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(d, "server.crt"), os.path.join(d, "server.key"))
        # Consul's Go HTTPS server offers h2 first (setupHTTPS -> http2.ConfigureServer).
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        if args.tls_client_auth:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(os.path.join(d, "ca.crt"))
    store = Store(os.path.join(d, "state.json"), args.start_index)
    prefix_tokens = {}
    for spec in args.acl_prefix_token:
        t, _, prefix = spec.partition("=")
        prefix_tokens.setdefault(t, []).append(prefix)
    acl = Acl(args.acl_token, args.acl_read_token, prefix_tokens, args.acl_anonymous_read)
    srv = bind(args.port, store, acl, ctx, args.http_max_conns_per_client)
    port = srv.server_address[1]

    # Only this thread takes SIGTERM/SIGINT (threads started below inherit the blocked mask).
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    t.start()
    write_file(os.path.join(d, "port"), "%d\n" % port)     # LAST: the readiness signal
    log("serving %s://127.0.0.1:%d acl=%s raft_index=%d keys=%d dir=%s" % (
        "https" if ctx else "http", port, "on" if acl.enabled else "off", store.raft_index,
        len(store.entries), d))
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    log("stopping")
    srv.stop_event.set()
    store.stop()
    srv.shutdown()
    srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
