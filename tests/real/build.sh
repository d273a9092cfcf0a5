#!/usr/bin/env bash
# Build the real servers that tests/real/ runs against: kube-apiserver, traefik and
# consul, each from the released Go module pinned by the go.mod/go.sum beside this
# script, into build-real/bin/, and the kubectl of the same Kubernetes release (from
# kube-apiserver's module, so client and server versions match). The module and build
# caches live under build-real/ too, so a second run on the same machine only checks
# them and takes seconds.
#
# Each binary has its own small module (tests/real/<name>/go.mod) so that the three
# dependency graphs stay the ones their releases were tested with: one module would make
# Go's minimal version selection give all three the newest of every shared dependency.
#
# Usage: bash tests/real/build.sh [name...]   (names: kube-apiserver kubectl traefik consul)
# Env:   GO (default /usr/local/go/bin/go), CANARY_REAL_DIR (default <repo>/build-real: the
#        binaries), CANARY_GO_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/canary-bridge/go: the
#        Go module and build caches, outside the clone so that every clone on a machine, a
#        fresh CI clone included, shares one download and one compile)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${CANARY_REAL_DIR:-$repo/build-real}
cache=${CANARY_GO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/canary-bridge/go}
GO=${GO:-/usr/local/go/bin/go}

if ! [ -x "$GO" ] && ! command -v "$GO" >/dev/null 2>&1; then
    echo "build.sh: no Go toolchain at $GO (set GO=...)" >&2
    exit 1
fi
mkdir -p "$out/bin"
mkdir -p "$cache"
export GOPATH="$cache/gopath" GOMODCACHE="$cache/gomodcache" GOCACHE="$cache/gocache"
export GOFLAGS="-modcacherw -mod=readonly" CGO_ENABLED=0 GOTOOLCHAIN=local
unset GOOS GOARCH

names=("$@")
[ ${#names[@]} -gt 0 ] || names=(kube-apiserver kubectl traefik consul)

now() { date +%s; }
# version_of MODULE -> the version our go.mod selects (e.g. v1.37.2)
version_of() { "$GO" list -m -f '{{.Version}}' "$1"; }
# commit_of MODULE VERSION -> the VCS hash the module proxy recorded for that version
commit_of() {
    "$GO" mod download -json "$1@$2" |
        sed -n 's/.*"Hash": *"\([0-9a-f]*\)".*/\1/p' | sed -n 1p
}

# download MODULE_DIR PKG: fetch the modules that building PKG needs (not the modules only
# their tests need), naming any module or version that the proxy does not serve.
download() {
    local log
    log=$(mktemp)
    if ! (cd "$1" && "$GO" list -deps -f '{{with .Module}}{{.Path}}@{{.Version}}{{end}}' "$2") \
        >"$log" 2>&1; then
        echo "build.sh: a module or version is not served (or the download broke):" >&2
        grep -E 'reading|not found|403|404|410|unknown revision|verifying' "$log" >&2 ||
            tail -n 20 "$log" >&2
        rm -f "$log"
        return 1
    fi
    echo "  $(sort -u "$log" | grep -c @) modules in place"
    rm -f "$log"
}

build_one() {
    local name=$1 dir="$here/$1" pkg mod ver commit ldflags
    case $name in
    kube-apiserver)
        pkg=k8s.io/kubernetes/cmd/kube-apiserver mod=k8s.io/kubernetes ;;
    kubectl)
        dir="$here/kube-apiserver" pkg=k8s.io/kubernetes/cmd/kubectl mod=k8s.io/kubernetes ;;
    traefik)
        pkg=github.com/traefik/traefik/v3/cmd/traefik mod=github.com/traefik/traefik/v3 ;;
    consul)
        pkg=github.com/hashicorp/consul mod=github.com/hashicorp/consul ;;
    *)
        echo "build.sh: unknown name '$name' (kube-apiserver kubectl traefik consul)" >&2
        return 2 ;;
    esac
    local t0
    t0=$(now)
    echo "== $name: $mod (modules for $dir)"
    download "$dir" "$pkg"
    ver=$(cd "$dir" && version_of "$mod")
    commit=$(cd "$dir" && commit_of "$mod" "$ver")
    # Stamp the version the way each project's release build does, so that the binary's
    # own --version line names the release it was built from.
    case $name in
    kube-apiserver | kubectl)
        local minor=${ver#v1.}
        minor=${minor%%.*}
        ldflags="-X k8s.io/component-base/version.gitVersion=$ver"
        ldflags+=" -X k8s.io/component-base/version.gitMajor=1"
        ldflags+=" -X k8s.io/component-base/version.gitMinor=$minor"
        ldflags+=" -X k8s.io/component-base/version.gitCommit=$commit"
        ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
        ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$ver"
        ldflags+=" -X k8s.io/client-go/pkg/version.gitMajor=1"
        ldflags+=" -X k8s.io/client-go/pkg/version.gitMinor=$minor"
        ldflags+=" -X k8s.io/client-go/pkg/version.gitCommit=$commit"
        ldflags+=" -X k8s.io/client-go/pkg/version.gitTreeState=clean" ;;
    traefik)
        ldflags="-X github.com/traefik/traefik/v3/pkg/version.Version=$ver"
        ldflags+=" -X github.com/traefik/traefik/v3/pkg/version.Codename=canary-bridge-test" ;;
    consul)
        ldflags="-X github.com/hashicorp/consul/version.GitCommit=${commit:0:8}"
        ldflags+=" -X github.com/hashicorp/consul/version.VersionPrerelease=" ;;
    esac
    echo "  building $pkg@$ver${commit:+ (commit $commit)} [$(date -u +%H:%M:%S)]"
    (cd "$dir" && "$GO" build -trimpath -ldflags "-s -w $ldflags" -o "$out/bin/$name" "$pkg")
    echo "  $name: $(( $(now) - t0 ))s, $(du -h "$out/bin/$name" | cut -f1)"
}

start=$(now)
echo "build.sh: building ${names[*]} into $out/bin ($("$GO" version))"
echo "  (a first build downloads ~720 MB of module archives, 4.6 GB unpacked, in ~6 minutes,"
echo "   then compiles for a long while on 2 cores; it prints each step. Later runs reuse"
echo "   the caches in $cache and take seconds)"
for n in "${names[@]}"; do
    build_one "$n"
done
echo "== versions"
for n in "${names[@]}"; do
    case $n in
    kube-apiserver) "$out/bin/$n" --version ;;
    kubectl) "$out/bin/$n" version --client | sed -n 1p ;;
    traefik) "$out/bin/$n" version | sed -n '1,3p' ;;
    # sed, not head: head exits after one line, consul may get SIGPIPE writing the rest,
    # and with pipefail that failed the whole build (seen once).
    consul) "$out/bin/$n" version | sed -n 1p ;;
    esac
done
echo "build.sh: done in $(( $(now) - start ))s"
