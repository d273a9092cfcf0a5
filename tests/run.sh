#!/usr/bin/env bash
# run.sh - set up (if needed), build, and run every test: cmocka unit tests,
# the API test server's self-tests, and the integration suites on real etcd.
# Ends with one line "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh || { echo "0 passed, 1 failed"; exit 1; }
exec /usr/bin/python3 tests/run_all.py "$@"
