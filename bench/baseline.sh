#!/bin/bash
# bench/baseline.sh - what a user would write instead of canary-bridge: a shell loop
# that turns etcd weight keys into IngressRoute weights with kubectl. bench/run.py runs it
# (with KUBECONFIG, ETCD_ENDPOINTS and PREFIX set) as the baseline of section 2.
#
#   PREFIX<namespace>/<name>/weights = "svc-a=90, svc-b=10"
#     -> kubectl -n <namespace> patch ingressroute <name> --type merge -p '{"spec":...}'
#
# A merge patch replaces the whole routes list, so the loop writes the full route; it knows
# the match (Host(`<name>.bench.example`)) and the port (80) as a user's script would.
# One kubectl process per change: that process start, its config and discovery cache
# loading, a GET and then the PATCH are what this baseline costs.
set -u
: "${ETCD_ENDPOINTS:?}" "${PREFIX:?}"

etcdctl --endpoints "$ETCD_ENDPOINTS" watch --prefix "$PREFIX" |
while read -r op && read -r key && read -r value; do
    [ "$op" = PUT ] || continue
    case "$key" in */weights) ;; *) continue ;; esac
    rest=${key#"$PREFIX"}
    ns=${rest%%/*}
    rest=${rest#*/}
    name=${rest%%/*}
    services=""
    IFS=',' read -ra pairs <<< "$value"
    for p in "${pairs[@]}"; do
        p=${p// /}
        services="$services${services:+,}{\"name\":\"${p%%=*}\",\"port\":80,\"weight\":${p#*=}}"
    done
    kubectl -n "$ns" patch ingressroute "$name" --type merge -p \
        "{\"spec\":{\"routes\":[{\"match\":\"Host(\`$name.bench.example\`)\",\"kind\":\"Rule\",\"services\":[$services]}]}}" \
        >/dev/null || echo "baseline: kubectl patch $ns/$name failed" >&2
done
