#!/usr/bin/env bash
# demo.sh - canary-bridge end to end on this machine, nothing beyond loopback and one
# private network namespace: a weight put with etcdctl and requests through a real
# Traefik following it.
#
# As root: builds the real kube-apiserver and Traefik (tests/real/build.sh), then
# tests/demo_real.py starts etcd, the real kube-apiserver, Traefik, two backends
# shop-v1/shop-v2 (in a network namespace: the apiserver refuses loopback endpoints) and
# the bridge, puts weights with etcdctl and prints how requests through Traefik split.
# Not root (no network namespace): the object-only demo below, with the Kubernetes API
# test server, showing the IngressRoute the bridge writes.
# Everything it starts is stopped when it exits.
set -euo pipefail
cd "$(dirname "$0")/.."

# object_demo: a real etcd and the Kubernetes API test server on free ports in a temp
# dir, the bridge between them, and a weight put with etcdctl landing in the IngressRoute.
object_demo() {
  work=$(mktemp -d /tmp/canary-demo.XXXXXX)
  pids=()
  cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
  }
  trap cleanup EXIT

  free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
  await() { # await SECONDS DESCRIPTION COMMAND...: poll a condition, fail loudly
    local t=$1 what=$2; shift 2
    for _ in $(seq $((t * 20))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done
    echo "demo: timed out waiting for $what" >&2; exit 1
  }

  cport=$(free_port); pport=$(free_port)
  etcd --name demo --data-dir "$work/etcd" \
    --listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
    --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
    --initial-cluster "demo=http://127.0.0.1:$pport" >"$work/etcd.log" 2>&1 &
  pids+=($!)
  export ETCDCTL_API=3 ETCDCTL_ENDPOINTS="http://127.0.0.1:$cport"
  await 20 etcd etcdctl endpoint health

  mkdir -p "$work/kube"
  /usr/bin/python3 tests/kubeapi/server.py --dir "$work/kube" >"$work/kubeapi.log" 2>&1 &
  pids+=($!)
  await 20 "the Kubernetes API test server" test -s "$work/kube/port"
  export KUBECONFIG="$work/kube/kubeconfig"

  cat >"$work/bridge.yaml" <<YAML
source:
  type: etcd
  endpoints: [http://127.0.0.1:$cport]
  prefix: canary/
kubernetes:
  kubeconfig: $work/kube/kubeconfig
server:
  listen: ""
log:
  level: info
YAML

  # The Services the route names, each with a ready endpoint, as a Deployment's controllers
  # would leave them: the bridge gives weight only to a Service that can serve.
  kapi_post() { # kapi_post PATH JSON: create an object in the API test server
    curl -sf --cacert "$work/kube/ca.crt" -H "Authorization: Bearer $(cat "$work/kube/token")" \
      -H "Content-Type: application/json" -X POST -d "$2" \
      "https://127.0.0.1:$(cat "$work/kube/port")$1" >/dev/null
  }
  for svc in shop-v1 shop-v2; do
    kapi_post /api/v1/namespaces/default/services \
      '{"apiVersion":"v1","kind":"Service","metadata":{"name":"'$svc'"},"spec":{"ports":[{"name":"http","port":80,"targetPort":8080}]}}'
    kapi_post /apis/discovery.k8s.io/v1/namespaces/default/endpointslices \
      '{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"'$svc'-demo","labels":{"kubernetes.io/service-name":"'$svc'"}},"addressType":"IPv4","ports":[{"name":"http","port":8080,"protocol":"TCP"}],"endpoints":[{"addresses":["10.0.0.1"],"conditions":{"ready":true}}]}'
  done

  echo "== the route, owned by the bridge: etcdctl put canary/default/shop/route"
  etcdctl put canary/default/shop/route "$(cat <<'ROUTE'
match: Host(`shop.example.com`) && PathPrefix(`/`)
entryPoints: [websecure]
services:
  - name: shop-v1
    port: 80
  - name: shop-v2
    port: 80
ROUTE
  )" >/dev/null
  etcdctl put canary/default/shop/weights 'shop-v1=90, shop-v2=10' >/dev/null

  build/canary-bridge run -c "$work/bridge.yaml" 2>"$work/bridge.log" &
  pids+=($!)

  get_ir() {
    if command -v kubectl >/dev/null; then kubectl get ingressroutes.traefik.io shop -n default -o json
    else curl -sf --cacert "$work/kube/ca.crt" -H "Authorization: Bearer $(cat "$work/kube/token")" \
           "https://127.0.0.1:$(cat "$work/kube/port")/apis/traefik.io/v1alpha1/namespaces/default/ingressroutes/shop"; fi
  }
  weights() { get_ir | /usr/bin/python3 -c 'import json,sys; o=json.load(sys.stdin); print(", ".join("%s=%s" % (s["name"], s["weight"]) for s in o["spec"]["routes"][-1]["services"]))'; }
  has_weights() { [ "$(weights 2>/dev/null)" = "$1" ]; }

  await 20 "the IngressRoute" has_weights "shop-v1=90, shop-v2=10"
  echo "IngressRoute default/shop: $(weights)"

  echo "== shift traffic: etcdctl put canary/default/shop/weights '{\"shop-v1\": 50, \"shop-v2\": 50}'"
  etcdctl put canary/default/shop/weights '{"shop-v1": 50, "shop-v2": 50}' >/dev/null
  await 20 "the new weights" has_weights "shop-v1=50, shop-v2=50"
  echo "IngressRoute default/shop: $(weights)"

  echo "== a typo: etcdctl put canary/default/shop/weights 'shop-v1=fifty'"
  etcdctl put canary/default/shop/weights 'shop-v1=fifty' >/dev/null
  await 20 "the error in the log" grep -q "canary/default/shop/weights" "$work/bridge.log"
  grep "canary/default/shop/weights" "$work/bridge.log" | tail -1
  echo "IngressRoute default/shop still: $(weights)   (the last good state is kept)"

  echo "== the full object"
  if command -v kubectl >/dev/null; then kubectl get ingressroutes.traefik.io shop -n default -o yaml; else get_ir; fi
  echo "== bridge log"
  cat "$work/bridge.log"
}

if [ "$(id -u)" -ne 0 ]; then
  CANARY_REAL=0 bash tests/setup.sh >/dev/null   # the object-only demo needs no real servers
  echo "demo: not root, so no network namespace for the backends: traffic through real" >&2
  echo "demo: Traefik needs root (sudo bash tests/demo.sh). Showing the objects only." >&2
  object_demo
  exit 0
fi

CANARY_REAL=0 CANARY_SANITIZE=0 bash tests/setup.sh >/dev/null
echo "== building the real servers: kube-apiserver, Traefik, Consul (tests/real/build.sh)"
echo "   a first build downloads ~720 MB of Go modules and compiles for about half an hour"
echo "   on 2 cores; later runs take about a minute (caches in ~/.cache/canary-bridge/go)"
bash tests/real/build.sh
exec /usr/bin/python3 tests/demo_real.py
