#!/bin/bash
# Time to move 1,000 live sessions between two hosts, and the pause their
# clients see, across veth links between network namespaces (root only).
#
#   bench/session-move.sh [BUILD_DIR] [SESSIONS] [RUNS]
#
# BUILD_DIR defaults to build-bench-session, configured RelWithDebInfo
# without sanitizers. Each run moves every session A->B then B->A under
# continuous traffic (tests/session-netns.c) and must lose nothing. Three
# configurations, alternating run by run so that all see the same machine:
#   window   the library's default move window (BATON_SESSION_MOVE_WINDOW),
#            plain TCP (the insecure option)
#   all      every session told MOVE at once (a window as large as the
#            session count): the baseline, what the library did before
#   tls      the default window with TLS 1.3 on both links (certificates
#            on client links and peer links): what encryption costs
# Prints per-run figures, then medians over runs and both moves, the
# window's figures as ratios of the baseline's, and TLS's as ratios of
# the plain window's.
# Targets: all 1,000 moved in under 1 s; client pause p99 under 50 ms.
set -eu
cd "$(dirname "$0")/.."
BUILD=${1:-build-bench-session}
N=${2:-1000}
RUNS=${3:-5}
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$BUILD" -j 2 --target test-session-netns >/dev/null
[ "$(id -u)" -eq 0 ] || { echo "session-move: needs root (network namespaces)" >&2; exit 77; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for ((i = 1; i <= RUNS; i++)); do
    for cfg in window all tls; do
        if [ "$cfg" = all ]; then w=$N; else w=0; fi
        if [ "$cfg" = tls ]; then tls=cert; else tls=plain; fi
        res=$(TS_TLS=$tls TS_MOVE_WINDOW=$w "$BUILD/tests/test-session-netns" plain "$N" 2>&1) || {
            echo "run $i ($cfg) failed:" >&2
            echo "$res" >&2
            exit 1
        }
        echo "run $i, $cfg:"
        echo "$res" | grep -E "^(move|client|errors)" | sed 's/^/  /'
        # "move A->B: N sessions moved, 0 failed, in X ms"
        echo "$res" | awk -v c="$cfg" '/^move /{print c, "move", $(NF-1)}' >>"$out"
        # "client pause: p50 X ms p99 Y ms max Z ms over M moves"
        echo "$res" | awk -v c="$cfg" '/^client pause/{print c, "p50", $4; print c, "p99", $7; print c, "max", $10}' >>"$out"
    done
done
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
echo
echo "medians over $RUNS runs ($N sessions; move: each direction counted):"
printf "  %-8s %12s %12s %12s %12s\n" "" "move ms" "pause p50" "pause p99" "pause max"
declare -A m
for cfg in window all tls; do
    for k in move p50 p99 max; do
        m[$cfg.$k]=$(awk -v c="$cfg" -v k="$k" '$1==c && $2==k {print $3}' "$out" | median)
    done
    printf "  %-8s %12s %12s %12s %12s\n" "$cfg" "${m[$cfg.move]}" "${m[$cfg.p50]}" "${m[$cfg.p99]}" "${m[$cfg.max]}"
done
printf "  %-8s %12s %12s %12s %12s\n" "ratio" \
    "$(awk -v a="${m[window.move]}" -v b="${m[all.move]}" 'BEGIN{printf "%.2f", a/b}')" \
    "$(awk -v a="${m[window.p50]}" -v b="${m[all.p50]}" 'BEGIN{printf "%.2f", a/b}')" \
    "$(awk -v a="${m[window.p99]}" -v b="${m[all.p99]}" 'BEGIN{printf "%.2f", a/b}')" \
    "$(awk -v a="${m[window.max]}" -v b="${m[all.max]}" 'BEGIN{printf "%.2f", a/b}')"
printf "  %-8s %12s %12s %12s %12s\n" "tls/win" \
    "$(awk -v a="${m[tls.move]}" -v b="${m[window.move]}" 'BEGIN{printf "%.2f", a/b}')" \
    "$(awk -v a="${m[tls.p50]}" -v b="${m[window.p50]}" 'BEGIN{printf "%.2f", a/b}')" \
    "$(awk -v a="${m[tls.p99]}" -v b="${m[window.p99]}" 'BEGIN{printf "%.2f", a/b}')" \
    "$(awk -v a="${m[tls.max]}" -v b="${m[window.max]}" 'BEGIN{printf "%.2f", a/b}')"
echo "targets: every move under 1000 ms; pause p99 under 50 ms (window row)"
echo "(tls: every client does one TLS 1.3 handshake with the next server per move;"
echo " here all 1,000 clients share one process and two cores with both servers)"
