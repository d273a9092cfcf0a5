"""Consul KV test server for canary-bridge tests (see server.py, README.md)."""
