#!/bin/bash
# Time to move 1,000 live sessions between two hosts, and the pause their
# clients see, across veth links between network namespaces (root only).
#
#   bench/session-move.sh [BUILD_DIR] [SESSIONS] [RUNS]
#
# BUILD_DIR defaults to build-bench-session, configured RelWithDebInfo
# without sanitizers. Each run moves every session A->B then B->A under
# continuous traffic (tests/session-netns.c) and must lose nothing.
# Targets: all 1,000 moved in under 1 s; client pause p99 under 50 ms.
set -eu
cd "$(dirname "$0")/.."
BUILD=${1:-build-bench-session}
N=${2:-1000}
RUNS=${3:-3}
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$BUILD" -j 2 --target test-session-netns >/dev/null
[ "$(id -u)" -eq 0 ] || { echo "session-move: needs root (network namespaces)" >&2; exit 77; }
for ((i = 1; i <= RUNS; i++)); do
    echo "run $i:"
    "$BUILD/tests/test-session-netns" plain "$N" 2>&1 | grep -E "^(move|client|errors)" | sed 's/^/  /'
done
