#!/usr/bin/env bash
# setup.sh - install what canary-bridge needs on Debian bookworm, then build.
# Idempotent: installs only missing packages; re-running just rebuilds.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(build-essential meson ninja-build pkg-config
      libuv1-dev libcurl4-openssl-dev libcjson-dev libyaml-dev libcmocka-dev
      scdoc systemd valgrind clang libclang-rt-14-dev clang-format
      etcd-server etcd-client python3 python3-yaml openssl iproute2 kubectl chromium)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  # kubectl is optional (the benchmark baseline and one server self-test use it):
  # it is not in Debian bookworm's archive, so never fail over it.
  # chromium (the status page's browser test) is installed on its own, and a
  # failure only makes that test skip, saying why.
  want=()
  optional=()
  for p in "${missing[@]}"; do
    [ "$p" = kubectl ] && continue
    [ "$p" = chromium ] && { optional+=("$p"); continue; }
    want+=("$p")
  done
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  if [ ${#want[@]} -gt 0 ] || [ ${#optional[@]} -gt 0 ]; then
    $SUDO apt-get update -qq
  fi
  if [ ${#want[@]} -gt 0 ]; then
    echo "setup: installing ${want[*]}"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
  fi
  for p in "${optional[@]}"; do
    echo "setup: installing $p"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$p" >/dev/null ||
      echo "setup: $p could not be installed; the tests that need it will be skipped"
  done
fi

# The Debian package starts a system etcd on the default ports; the tests never
# use it (each starts its own on free ports), so leave it alone.
if [ ! -f build/build.ninja ]; then
  meson setup build --werror >/dev/null
fi
ninja -C build

# The same code under AddressSanitizer + UndefinedBehaviorSanitizer, for the
# second test pass (tests/run_all.py --sanitize).
if [ "${CANARY_SANITIZE:-1}" = 1 ]; then
  if [ ! -f build-asan/build.ninja ]; then
    meson setup build-asan --werror -Db_sanitize=address,undefined -Db_lundef=false \
      -Dbuildtype=debug >/dev/null
  fi
  ninja -C build-asan
fi

# The real servers the tests/real suites run against (kube-apiserver, Traefik, Consul) are
# built by tests/real/build.sh from pinned Go modules. tests/run_all.py starts that build in
# the background, so that a first (cold, ~35 min on 2 cores) build overlaps the other suites;
# CANARY_REAL_BUILD=1 builds them here instead, CANARY_REAL=0 not at all.
if [ "${CANARY_REAL:-1}" != 0 ] && [ "${CANARY_REAL_BUILD:-0}" = 1 ]; then
  bash tests/real/build.sh
fi
