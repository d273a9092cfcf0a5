#!/usr/bin/python3
"""A test backend for the traffic tests (tests/real/test_traffic_real.py and
test_mirror_real.py): one HTTP/1.1 server per NAME=PORT argument, all bound to
--address, each answering every request with 200 and JSON {"name": NAME, "method",
"path", "headers": {name: value}} (the request headers as received, so a test can see
what Traefik forwarded).  The header X-Backend carries the name too.  It never sets a
cookie: stickiness the tests see is Traefik's own.  Prints "ready" once every listener
is bound.

Each backend remembers the paths it was asked for: GET /_seen?prefix=P answers
{"name": NAME, "count": n}, the number of requests so far whose path starts with P (not
counting itself), so a test can see what reached a backend whose answers never reach a
client (a mirror).

    ip netns exec NS python3 backend.py --address 10.x.y.2 shop-v1=8081 shop-v2=8082

Standard library only."""
import argparse
import http.server
import json
import sys
import threading
import urllib.parse


def handler_for(name):
    paths, lock = [], threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body leave in two writes: without TCP_NODELAY, Nagle holds the
        # body until the peer's delayed ACK, 40 ms per request.
        disable_nagle_algorithm = True

        def _answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            url = urllib.parse.urlsplit(self.path)
            if url.path == "/_seen":
                prefix = urllib.parse.parse_qs(url.query).get("prefix", [""])[0]
                with lock:
                    n = sum(1 for p in paths if p.startswith(prefix))
                body = json.dumps({"name": name, "count": n}).encode()
            else:
                with lock:
                    paths.append(self.path)
                body = json.dumps({"name": name, "method": self.command, "path": self.path,
                                   "headers": {k: v for k, v in self.headers.items()}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Backend", name)
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer

        def log_message(self, *args):
            pass

    return Handler


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--address", required=True)
    ap.add_argument("backends", nargs="+", metavar="NAME=PORT")
    args = ap.parse_args()
    servers = []
    for spec in args.backends:
        name, port = spec.rsplit("=", 1)
        srv = http.server.ThreadingHTTPServer((args.address, int(port)), handler_for(name))
        srv.daemon_threads = True
        servers.append(srv)
    for srv in servers[1:]:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    print("ready", flush=True)
    sys.stdout.flush()
    servers[0].serve_forever()


if __name__ == "__main__":
    main()
