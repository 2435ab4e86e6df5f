#!/usr/bin/env bash
# httpd-upgrades.sh BUILD_DIR [UPGRADES] - keep-alive connections live
# through UPGRADES (default 10) upgrades of baton-httpd.
#
# Starts baton-httpd on a loopback port the kernel picks, then baton-load
# with 50 keep-alive connections held for the whole run
# (--same-connections), and meanwhile replaces the server UPGRADES times,
# about 1.5 s apart, rotating through the three ways a successor comes to
# be: a second copy started by hand, `baton upgrade DIR` and SIGHUP to the
# owner. Each upgrade is waited for with `baton wait DIR --generation N`.
# Prints baton-load's report and a final line; exits 0 only if every
# upgrade succeeded, no request failed and the server closed none of the
# 50 connections (each was handed from copy to copy).
#
# shellcheck disable=SC2317 # cleanup runs from a trap
#
# Every wait is bounded; every process started here, and every server copy
# that took over, is stopped on exit, even on failure.

set -u

BUILD=${1:?usage: httpd-upgrades.sh BUILD_DIR [UPGRADES]}
UPGRADES=${2:-10}
BIN=$BUILD/bin
CONNS=50
# An upgrade every 1.5 s, with room before the first and after the last.
DURATION=$((UPGRADES * 3 / 2 + 5))

for prog in baton-httpd baton-load baton; do
    if [[ ! -x $BIN/$prog ]]; then
        echo "httpd-upgrades: $BIN/$prog is missing (build first)" >&2
        exit 2
    fi
done

T=$(mktemp -d "${TMPDIR:-/tmp}/baton-httpd.XXXXXX") || exit 1
DIR=$T/coord
SERVERS=() # every server pid seen, started here or not
CLIENT_PID=""

log() {
    echo "httpd-upgrades: $*"
}

# True when pid $1 is alive and is a baton-httpd (pids get reused).
is_server() {
    [[ -n $1 ]] && kill -0 "$1" 2>/dev/null &&
        tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" | grep -q 'baton-httpd '
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
        if is_server "$pid"; then
            kill -TERM "$pid" 2>/dev/null
            left+=("$pid")
        fi
    done
    # SIGTERM drains; give it up to 5 s, then cut it short.
    for ((i = 0; i < 50 && ${#left[@]} > 0; i++)); do
        still=()
        for pid in "${left[@]}"; do
            is_server "$pid" && still+=("$pid")
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

# The "local" address of the first named fd, e.g. 127.0.0.1:43117.
owner_local() {
    # shellcheck disable=SC2020 # both characters become newlines
    "$BIN/baton" status "$DIR" --json 2>/dev/null | tr '{,' '\n\n' |
        sed -n 's/^"local":"\([^"]*\)".*/\1/p' | head -n 1
}

# start_copy N: a copy of the server, its output in httpd-N.*
start_copy() {
    "$BIN/baton-httpd" --dir "$DIR" --listen tcp://127.0.0.1:0 \
        >"$T/httpd-$1.out" 2>"$T/httpd-$1.err" &
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
    log "baton-httpd did not get ready within 10 s"
    show_logs
    exit 1
fi
remember_owner
ADDR=$(owner_local)

"$BIN/baton-load" --connect "$ADDR" -c "$CONNS" -d "$DURATION" --same-connections \
    >"$T/load.out" 2>"$T/load.err" &
CLIENT_PID=$!
log "$CONNS keep-alive connections to $ADDR for $DURATION s; $UPGRADES upgrades"

failed=0
for ((gen = 2; gen <= UPGRADES + 1; gen++)); do
    sleep 1.5
    if ! upgrade "$gen"; then
        log "upgrade to generation $gen failed"
        failed=1
        break
    fi
done

# baton-load stops by itself after DURATION s (plus its request timeout).
for ((i = 0; i < (DURATION + 15) * 10; i++)); do
    kill -0 "$CLIENT_PID" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$CLIENT_PID" 2>/dev/null; then
    log "baton-load did not finish"
    failed=1
    load_status=1
else
    wait "$CLIENT_PID"
    load_status=$?
fi
CLIENT_PID=""

cat "$T/load.out"
errors=$(sed -n 's/^errors *\([0-9]*\).*/\1/p' "$T/load.out")
closed=$(sed -n 's/^same-conns *[0-9]* held, \([0-9]*\) closed.*, \([0-9]*\) lost.*/\1+\2/p' \
    "$T/load.out")
maxlat=$(sed -n 's/^latency ms.* max \([0-9.]*\).*/\1/p' "$T/load.out")
if ((load_status != 0 || failed)) || [[ $errors != 0 || $closed != 0+0 ]]; then
    sed -n '1,20p' "$T/load.err"
    show_logs
    log "FAILED: ${errors:-?} errors, ${closed:-?} connections closed+lost"
    exit 1
fi
log "$UPGRADES upgrades, 0 errors, 0 of $CONNS connections closed, slowest request ${maxlat} ms"
