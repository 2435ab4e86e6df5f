#!/usr/bin/env bash
# run-overhead.sh BUILD_DIR - what libbaton-preload.so costs a server:
# requests/s through lighttpd with and without the shim, in the same run,
# alternating, 3 rounds each of DURATION seconds (default 5) with baton-load
# (keep-alive connections); prints both medians and their ratio. The
# target is a difference under 2%.
set -u
BUILD=${1:?usage: run-overhead.sh BUILD_DIR [DURATION] [CONNS]}
DURATION=${2:-5}
CONNS=${3:-20}
BIN=$BUILD/bin
LIGHTTPD=$(command -v lighttpd || echo /usr/sbin/lighttpd)
[[ -x $LIGHTTPD ]] || { echo "run-overhead: lighttpd is not installed (scripts/deps-run.sh)"; exit 77; }
for p in "$BIN/baton" "$BIN/baton-load" "$BUILD/lib/libbaton-preload.so"; do
    [[ -e $p ]] || { echo "run-overhead: $p is missing (build first)" >&2; exit 2; }
done
T=$(mktemp -d "${TMPDIR:-/tmp}/baton-overhead.XXXXXX") || exit 1
SERVER=""
trap '[[ -n $SERVER ]] && kill -KILL "$SERVER" 2>/dev/null; rm -rf "$T"' EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$T/www"
echo "hello" >"$T/www/index.html"
cat >"$T/lighttpd.conf" <<CONF
server.document-root = "$T/www"
server.bind = "127.0.0.1"
server.port = $PORT
server.errorlog = "$T/lighttpd.err"
server.max-keep-alive-requests = 100000
server.pid-file = ""
index-file.names = ( "index.html" )
CONF

# One round: start lighttpd (plain, or under `baton run`), load it, stop it.
round() {
    local mode=$1 rps i
    if [[ $mode == shim ]]; then
        "$BIN/baton" run --dir "$T/coord-$RANDOM" -- "$LIGHTTPD" -D -f "$T/lighttpd.conf" &
    else
        "$LIGHTTPD" -D -f "$T/lighttpd.conf" &
    fi
    SERVER=$!
    for ((i = 0; i < 50; i++)); do
        curl -s -o /dev/null "http://127.0.0.1:$PORT/" 2>/dev/null && break
        sleep 0.1
    done
    rps=$("$BIN/baton-load" --url "http://127.0.0.1:$PORT/index.html" -c "$CONNS" -d "$DURATION" --json |
        sed -n 's/.*"req_per_s":\([0-9.]*\).*/\1/p')
    kill -KILL "$SERVER" 2>/dev/null
    wait "$SERVER" 2>/dev/null
    SERVER=""
    echo "${rps:-0}"
}

plain=() shim=()
for r in 1 2 3; do
    plain+=("$(round plain)")
    shim+=("$(round shim)")
    echo "round $r: plain ${plain[-1]} req/s, shim ${shim[-1]} req/s"
done
median() { printf '%s\n' "$@" | sort -n | sed -n 2p; }
mp=$(median "${plain[@]}")
ms=$(median "${shim[@]}")
awk -v p="$mp" -v s="$ms" 'BEGIN {
    printf "lighttpd median of 3: plain %.0f req/s, under baton run %.0f req/s, ratio %.4f (%+.2f%%)\n",
           p, s, s / p, (s / p - 1) * 100 }'
