#!/usr/bin/env bash
# run.sh - run every libFuzzer target for a bounded time (CI and by hand).
#
#   tests/fuzz/run.sh [TARGET...]      default: all targets
#
# Environment:
#   FUZZ_SECONDS     time per target (default 20), libFuzzer -max_total_time
#   FUZZ_BUILD       build directory (default <repo>/build-fuzz); configured
#                    with clang, -Dfuzz=true and ASan+UBSan when missing
#   FUZZ_FAIL_FAST   1: stop at the first target that fails
#   FUZZ_CORPUS_OUT  a directory to copy the grown corpora into (e.g. a CI
#                    cache); by default they are thrown away
#   CB_FUZZ_SKIP     switch off checks for known open bugs (see fuzz_common.h)
#
# Each target runs on a copy of its seed corpus in a temporary directory, so
# the repository stays clean. libFuzzer stops a target at its first crash,
# sanitizer report, leak, timeout or broken invariant; the input is copied to
# tests/fuzz/regressions/<target>/ (where the replay tests pick it up) and
# printed. The last line is "N passed, N failed".
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${FUZZ_BUILD:-$root/build-fuzz}
seconds=${FUZZ_SECONDS:-20}

all=(value weights route config kubeconfig etcd_stream consul kube_object)
# Inputs larger than any realistic value of that kind only slow the search
# down: keys are small, a kubeconfig or a watch message somewhat larger.
declare -A max_len=([value]=4096 [weights]=1024 [route]=8192 [config]=4096 [kubeconfig]=8192
                    [etcd_stream]=8192 [consul]=16384 [kube_object]=8192)

targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")
for t in "${targets[@]}"; do
    if [ -z "${max_len[$t]:-}" ]; then
        echo "run.sh: unknown target '$t' (known: ${all[*]})" >&2
        exit 2
    fi
done

if [ ! -f "$build/build.ninja" ]; then
    CC=clang meson setup "$build" "$root" -Dfuzz=true -Db_sanitize=address,undefined \
        -Db_lundef=false || exit 2
fi
# Only the fuzz targets: a broken unrelated test must not stop fuzzing.
ninja -C "$build" $(printf 'tests/fuzz/fuzz_%s ' "${targets[@]}") || exit 2

work=$(mktemp -d "${TMPDIR:-/tmp}/cb-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
# UBSan reports must stop the run (the targets are also built with
# -fno-sanitize-recover); leaks count as failures.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}

# Print an input readably: as text when it is text, else as a hex dump.
show_input() {
    if LC_ALL=C grep -qP '[^\t\n\r\x20-\x7e]' "$1" 2>/dev/null; then
        od -A d -t x1z -v "$1" | head -n 64
    else
        head -c 4096 "$1"
        echo
    fi
}

passed=0
failed=0
for t in "${targets[@]}"; do
    dir=$work/$t
    mkdir -p "$dir/corpus" "$dir/artifacts" "$dir/tmp"
    cp -R "$here/corpus/$t/." "$dir/corpus/" 2>/dev/null || true
    args=(-max_total_time="$seconds" -max_len="${max_len[$t]}" -timeout=10 -rss_limit_mb=2048
          -artifact_prefix="$dir/artifacts/" -print_final_stats=1)
    [ -f "$here/$t.dict" ] && args+=(-dict="$here/$t.dict")

    echo "== fuzz_$t (${seconds}s, max_len ${max_len[$t]})"
    # TMPDIR: the kubeconfig target's scratch file lives and dies with $work.
    TMPDIR=$dir/tmp "$build/tests/fuzz/fuzz_$t" "${args[@]}" "$dir/corpus" >"$dir/log" 2>&1
    rc=$?

    shopt -s nullglob
    found=()
    for a in "$dir"/artifacts/*; do
        case $(basename "$a") in slow-unit-*) ;; *) found+=("$a") ;; esac
    done
    shopt -u nullglob

    if [ $rc -eq 0 ] && [ ${#found[@]} -eq 0 ]; then
        passed=$((passed + 1))
        grep -E '^#[0-9]+[[:space:]]+DONE' "$dir/log" | tail -n 1
        grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$dir/log"
    else
        failed=$((failed + 1))
        echo "FAILED: fuzz_$t (exit $rc)"
        # The report: from the first sanitizer/invariant line on.
        grep -n -m1 -E 'invariant broken|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error|SUMMARY' "$dir/log" >/dev/null &&
            sed -n "$(grep -n -m1 -E 'invariant broken|ERROR: |runtime error' "$dir/log" | cut -d: -f1),+40p" "$dir/log"
        [ ${#found[@]} -eq 0 ] && tail -n 30 "$dir/log"
        mkdir -p "$here/regressions/$t"
        for a in "${found[@]}"; do
            cp "$a" "$here/regressions/$t/"
            echo "-- input saved as tests/fuzz/regressions/$t/$(basename "$a"):"
            show_input "$a"
        done
    fi
    if [ -n "${FUZZ_CORPUS_OUT:-}" ]; then
        mkdir -p "$FUZZ_CORPUS_OUT/$t"
        cp -R "$dir/corpus/." "$FUZZ_CORPUS_OUT/$t/"
    fi
    if [ "${FUZZ_FAIL_FAST:-0}" = 1 ] && [ $failed -gt 0 ]; then
        break
    fi
done

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
