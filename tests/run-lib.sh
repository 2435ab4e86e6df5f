#!/usr/bin/env bash
# run-lib.sh - sourced by the tests/run-*.sh tests: an unmodified server
# under `baton run`, restarted RESTARTS times by running the same command
# again while baton-load drives it, must answer every request, and every
# copy but the last must be gone afterwards.
#
# A test sets BUILD (the build dir), sources this file, prepares its server
# (run_tmp, run_port, run_need), defines CMD (the server's command line as
# an array) and calls run_restarts. The load is baton-load on URLPATH, or
# the test's own function run_load (called with the duration in seconds;
# its exit status 0 means no request failed). Exit status: 0 pass, 1 fail,
# 77 skip.
# Every process started here is stopped on exit, even on failure.

set -u

RESTARTS=${RESTARTS:-10}
INTERVAL=${INTERVAL:-1.5}
CONNS=${CONNS:-20}
RATE=${RATE:-50}
BIN=$BUILD/bin
SERVERS=()
LOAD_PID=""
NAME=${NAME:-run}

say() { echo "$NAME: $*"; }
skip() {
    say "SKIP: $*"
    exit 77
}
fail() {
    say "FAIL: $*"
    show_logs
    [[ -z ${RUN_DEBUG:-} ]] || debug_procs
    exit 1
}

run_need() {
    local p
    for p in "$@"; do
        [[ -x $p ]] || command -v "$p" >/dev/null 2>&1 || skip "$p is not installed (scripts/deps-run.sh)"
    done
}

run_tmp() {
    T=$(mktemp -d "${TMPDIR:-/tmp}/baton-$NAME.XXXXXX") || exit 1
    DIR=$T/coord
    trap run_cleanup EXIT INT TERM
}

# A loopback port that was free a moment ago.
run_port() {
    PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
}

show_logs() {
    local f
    for f in "$T"/*.log "$T"/*.err; do
        [[ -s $f ]] || continue
        echo "--- $(basename "$f")"
        tail -n 30 "$f"
    done
}

# Where every process of ours waits, and who holds the directory's lock.
debug_procs() {
    local p t
    for p in $(pgrep -f "${CMD[*]:0:2}"); do
        echo "== $p $(grep PPid "/proc/$p/status" | tr -d '\t') $(ls -l "/proc/$p/fd" 2>/dev/null | grep -c coord/lock) lock"
        for t in /proc/"$p"/task/*; do echo "   $(cat "$t/wchan") $(tr -d '\0' <"$t/comm")"; done
    done
}

# Running, not a zombie. The state follows the command name, which may hold
# spaces (redis-server sets its title to "redis-server 127.0.0.1:PORT").
alive() {
    local st
    [[ -n $1 ]] && kill -0 "$1" 2>/dev/null && st=$(cat "/proc/$1/stat" 2>/dev/null) &&
        st=${st##*) } && [[ ${st:0:1} != Z ]]
}

# Wait until PID has exited, at most S seconds: woken by its pidfd, not by
# polling. 0 once it is gone (or was never there), 1 if it still runs. A
# process we did not fork stays a zombie until its parent reaps it; its
# pidfd is readable from its exit.
wait_gone() {
    /usr/bin/python3 - "$1" "$2" <<'PY'
import os, select, sys
pid, limit = int(sys.argv[1]), max(0.0, float(sys.argv[2]))
try:
    fd = os.pidfd_open(pid)
except ProcessLookupError:
    sys.exit(0)
sys.exit(0 if select.select([fd], [], [], limit)[0] else 1)
PY
}

run_cleanup() {
    local st=$? pid
    trap - EXIT INT TERM
    exec 2>/dev/null # bash reports the copies it kills here as "Killed"
    [[ -n $LOAD_PID ]] && kill "$LOAD_PID" 2>/dev/null
    for pid in "${SERVERS[@]}"; do
        alive "$pid" && pkill -KILL -P "$pid" 2>/dev/null
        alive "$pid" && kill -KILL "$pid" 2>/dev/null
    done
    wait 2>/dev/null
    [[ -n ${RUN_KEEP:-} ]] || rm -rf "$T"
    exit "$st"
}

# Start one copy in the background: baton run execs, so $! is the server.
# It stays our job, so that exit_status can tell how it ended.
start_copy() {
    local n=$1
    BATON_RUN_LOG=$T/shim.log "$BIN/baton" run --dir "$DIR" --drain-timeout "${DRAIN:-20}" \
        ${STOP_SIGNAL:+--stop-signal "$STOP_SIGNAL"} ${RUN_OPTS[@]+"${RUN_OPTS[@]}"} \
        -- "${CMD[@]}" >>"$T/server.err" 2>&1 &
    SERVERS+=("$!")
    "$BIN/baton" wait "$DIR" --generation "$n" --timeout 20 >/dev/null ||
        fail "generation $n never served"
}

# The exit status of copy PID (started by start_copy) once it has exited;
# nothing while it runs.
exit_status() {
    alive "$1" && return 0
    wait "$1" 2>/dev/null
    echo "$?"
}

run_restarts() {
    local i duration st left pid deadline
    duration=$(awk -v n="$RESTARTS" -v i="$INTERVAL" 'BEGIN { printf "%d", n * i + 4 }')
    start_copy 1
    if declare -F run_load >/dev/null; then
        run_load "$duration" >"$T/load.log" 2>&1 &
    else
        "$BIN/baton-load" --url "http://127.0.0.1:$PORT${URLPATH:-/}" -c "$CONNS" -r "$RATE" \
            -d "$duration" -t 5000 >"$T/load.log" 2>&1 &
    fi
    LOAD_PID=$!
    sleep 1
    for ((i = 2; i <= RESTARTS + 1; i++)); do
        start_copy "$i"
        sleep "$INTERVAL"
    done
    wait "$LOAD_PID"
    st=$?
    LOAD_PID=""
    cat "$T/load.log"
    [[ $st == 0 ]] || fail "baton-load saw errors (exit $st)"
    # Every copy but the last is gone: each drained and stopped itself.
    deadline=$((SECONDS + 15))
    while :; do
        left=()
        for pid in "${SERVERS[@]:0:${#SERVERS[@]}-1}"; do
            alive "$pid" && left+=("$pid")
        done
        [[ ${#left[@]} == 0 ]] && break
        ((SECONDS < deadline)) || fail "old copies still running: ${left[*]}"
        sleep 0.2
    done
    alive "${SERVERS[-1]}" || fail "the last copy is not running"
    pid=$("$BIN/baton" status "$DIR" --json | sed -n 's/.*"pid":\([0-9]*\).*/\1/p')
    [[ $pid == "${SERVERS[-1]}" ]] || fail "owner is $pid, not the last copy ${SERVERS[-1]}"
    say "PASS: $RESTARTS restarts under load, 0 errors, every old copy gone"
}

# The compatibility suite (tests/compat/) reuses these tests with its own
# load and checks: it names the file that redefines them.
[[ -z ${RUN_LIB_HOOK:-} ]] || . "$RUN_LIB_HOOK"
