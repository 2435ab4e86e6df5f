#!/usr/bin/env bash
# echo-upgrades.sh BUILD_DIR [UPGRADES] - one connection lives through
# UPGRADES (default 20) upgrades of baton-echo.
#
# Starts baton-echo, then baton-echo-client --one-connection (a numbered
# line every 10 ms, each reply checked; the server closing the connection
# is an error), and meanwhile replaces the server UPGRADES times, about a
# second apart, rotating through the three ways a successor comes to be: a
# second copy started by hand, `baton upgrade DIR` and SIGHUP to the owner.
# Each upgrade is waited for with `baton wait DIR --generation N`. Prints
# the client's summary and a final line with the largest gap between two
# replies (at least the 10 ms pace) and the longest wait for the reply to
# one line (the pause itself); exits 0 only if every upgrade succeeded and
# the client saw no error on its single connection. bench/pause.c
# (baton-bench-pause) measures the pause finer and says where it goes.
#
# shellcheck disable=SC2317 # cleanup runs from a trap
#
# Every wait is bounded; every process started here, and every server copy
# that took over, is stopped on exit, even on failure.

set -u

BUILD=${1:?usage: echo-upgrades.sh BUILD_DIR [UPGRADES]}
UPGRADES=${2:-20}
BIN=$BUILD/bin
INTERVAL_MS=10
# One upgrade a second, with room before the first and after the last.
DURATION=$((UPGRADES + 5))

for prog in baton-echo baton-echo-client baton; do
    if [[ ! -x $BIN/$prog ]]; then
        echo "echo-upgrades: $BIN/$prog is missing (build first)" >&2
        exit 2
    fi
done

T=$(mktemp -d "${TMPDIR:-/tmp}/baton-echo.XXXXXX") || exit 1
DIR=$T/coord
SERVERS=() # every server pid seen, started here or not
CLIENT_PID=""

log() {
    echo "echo-upgrades: $*"
}

# True when pid $1 is alive and is a baton-echo (pids get reused).
is_echo() {
    [[ -n $1 ]] && kill -0 "$1" 2>/dev/null &&
        tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" | grep -q 'baton-echo '
}

owner_pid() {
    "$BIN/baton" status "$DIR" --json 2>/dev/null |
        sed -n 's/.*"pid":\([0-9][0-9]*\).*/\1/p'
}

remember_owner() {
    local pid
    pid=$(owner_pid)
    [[ -n $pid ]] && SERVERS+=("$pid")
}

show_logs() {
    local f
    for f in "$T"/*.err; do
        [[ -s $f ]] || continue
        echo "--- $(basename "$f")"
        tail -n 25 "$f"
    done
}

cleanup() {
    local status=$? pid left=() still i
    trap - EXIT INT TERM
    [[ -n $CLIENT_PID ]] && kill "$CLIENT_PID" 2>/dev/null
    remember_owner
    for pid in "${SERVERS[@]}"; do
        if is_echo "$pid"; then
            kill -TERM "$pid" 2>/dev/null
            left+=("$pid")
        fi
    done
    # SIGTERM drains; give it up to 5 s, then cut it short.
    for ((i = 0; i < 50 && ${#left[@]} > 0; i++)); do
        still=()
        for pid in "${left[@]}"; do
            is_echo "$pid" && still+=("$pid")
        done
        left=("${still[@]}")
        ((${#left[@]} > 0)) && sleep 0.1
    done
    for pid in "${left[@]}"; do
        log "server $pid did not stop after SIGTERM; killing it"
        kill -KILL "$pid" 2>/dev/null
    done
    rm -rf "$T"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start_copy N: a copy of the server, its output in echo-N.*
start_copy() {
    "$BIN/baton-echo" --dir "$DIR" >"$T/echo-$1.out" 2>"$T/echo-$1.err" &
    SERVERS+=($!)
}

# upgrade N: replaces generation N-1 by N, the way chosen by N.
upgrade() {
    local gen=$1 pid
    case $((gen % 3)) in
    2)
        start_copy "$gen"
        ;;
    0)
        "$BIN/baton" upgrade "$DIR" --timeout 10 >/dev/null || return 1
        ;;
    1)
        pid=$(owner_pid)
        [[ -n $pid ]] && kill -HUP "$pid" || return 1
        ;;
    esac
    "$BIN/baton" wait "$DIR" --generation "$gen" --timeout 10 >/dev/null || return 1
    remember_owner
}

start_copy 1
if ! "$BIN/baton" wait "$DIR" --generation 1 --timeout 10 >/dev/null; then
    log "baton-echo did not get ready within 10 s"
    show_logs
    exit 1
fi
remember_owner

"$BIN/baton-echo-client" --connect "unix:$DIR/echo.sock" --interval "$INTERVAL_MS" \
    --duration "$DURATION" --one-connection >"$T/client.out" 2>"$T/client.err" &
CLIENT_PID=$!
log "client on one connection for $DURATION s; $UPGRADES upgrades"

failed=0
sleep 2
for ((gen = 2; gen <= UPGRADES + 1; gen++)); do
    if ! upgrade "$gen"; then
        log "upgrade to generation $gen failed"
        failed=1
        break
    fi
    sleep 1
done

# The client stops by itself after DURATION s (plus its reply timeout).
for ((i = 0; i < (DURATION + 15) * 10; i++)); do
    kill -0 "$CLIENT_PID" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$CLIENT_PID" 2>/dev/null; then
    log "the client did not finish"
    failed=1
    client_status=1
else
    wait "$CLIENT_PID"
    client_status=$?
fi
CLIENT_PID=""

cat "$T/client.out"
result=$(tail -n 1 "$T/client.out")
errors=$(sed -n 's/.*errors=\([0-9]*\).*/\1/p' <<<"$result")
conns=$(sed -n 's/.*connections=\([0-9]*\).*/\1/p' <<<"$result")
gap=$(sed -n 's/.*max_gap_ms=\([0-9.]*\).*/\1/p' <<<"$result")
wait_ms=$(sed -n 's/.*max_wait_ms=\([0-9.]*\).*/\1/p' <<<"$result")
if ((client_status != 0 || failed)) || [[ $errors != 0 || $conns != 1 ]]; then
    sed -n '1,20p' "$T/client.err"
    show_logs
    log "FAILED: ${errors:-?} errors, ${conns:-?} connection(s), largest gap ${gap:-?} ms"
    exit 1
fi
log "$UPGRADES upgrades, ${errors} errors, 1 connection, largest gap ${gap} ms" \
    "(a line every $INTERVAL_MS ms), longest wait for one reply ${wait_ms} ms"
