#!/bin/bash
# bench-preflight.sh BUILD SRC - `make bench` without a load tool: it must
# stop before its first phase with exit 1, naming what is missing, instead
# of running every phase without load and blaming the servers; and it must
# leave the report it did not replace (BENCH_OUT/takeover.txt) alone.
# wrk and ab are hidden by a PATH of links to every other program.
set -u
BUILD=${1:?usage: bench-preflight.sh BUILD SRC}
SRC=${2:?usage: bench-preflight.sh BUILD SRC}
T=$(mktemp -d "${TMPDIR:-/tmp}/bench-preflight.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
mkdir "$T/bin" "$T/out" || exit 1
for d in /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin; do
    [ -d "$d" ] && cp -sn "$d"/* "$T/bin/" 2>/dev/null
done
rm -f "$T/bin/wrk" "$T/bin/ab"
echo "an earlier report" >"$T/out/takeover.txt"

PATH=$T/bin BENCH_NO_INSTALL=1 BENCH_OUT=$T/out BENCH_CANDIDATES=baton-second \
    BENCH_LOADS="wrk ab" BENCH_RUNS=1 BENCH_SECONDS=2 BENCH_UPGRADES=1 \
    timeout -k 5 120 bash "$SRC/bench/run.sh" "$BUILD" >"$T/log" 2>&1
rc=$?
fail() {
    echo "bench-preflight: FAIL: $*" >&2
    sed 's/^/  | /' "$T/log" >&2
    exit 1
}
[ "$rc" = 1 ] || fail "exit status $rc, not 1"
grep -q "missing: wrk (Debian: wrk) ab (Debian: apache2-utils)" "$T/log" ||
    fail "the error does not name wrk and ab"
! grep -q "run 1:" "$T/log" || fail "a phase ran"
[ "$(cat "$T/out/takeover.txt")" = "an earlier report" ] || fail "BENCH_OUT/takeover.txt was touched"
echo "bench-preflight: PASS: exit 1 before any phase, naming wrk and ab; the old report kept"
