#!/bin/sh
# build-quiet.sh BUILD_DIR - what `make build` does (install the build's
# dependencies, configure, compile), with its output in BUILD_DIR/build.log
# and one line on the terminal; on failure, the log's last 40 lines and its
# path. For the demos, whose point is their own summary.
BUILD=${1:?usage: build-quiet.sh BUILD_DIR}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
mkdir -p "$BUILD" || exit 1
log=$BUILD/build.log
printf 'building baton in %s (output in %s) ... ' "$BUILD" "$log"
{
    sh "$(dirname "$0")/deps.sh" &&
        { [ -f "$BUILD/CMakeCache.txt" ] ||
            cmake -S "$(dirname "$0")/.." -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
                ${PREFIX:+-DCMAKE_INSTALL_PREFIX="$PREFIX"}; } &&
        cmake --build "$BUILD" -j "$JOBS"
} >"$log" 2>&1
st=$?
if [ "$st" != 0 ]; then
    echo "failed"
    tail -n 40 "$log" >&2
    echo "build-quiet: the build failed (exit $st); the whole output is in $log" >&2
    exit 1
fi
echo "done"
