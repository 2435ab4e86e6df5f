#!/bin/sh
# demo.sh BUILD_DIR - zero-downtime upgrades under load, on loopback.
#
# Starts baton-httpd, puts it under baton-load (50 keep-alive connections
# plus 100 fresh connections a second, 20 s), and meanwhile replaces the
# server 10 times, about 1.5 s apart, alternating the two ways a successor
# comes to be: a second copy started by hand with the same arguments, and
# `baton upgrade DIR` (the owner starts its own successor). Prints
# baton-load's summary and a final line, and exits with baton-load's status
# (0: not one request failed), or 1 if an upgrade failed.
#
# shellcheck disable=SC2317 # cleanup and its helpers run from a trap
#
# POSIX sh. Every wait is bounded and every process started here (and every
# server copy that took over) is stopped on exit, even on failure.

BUILD=${1:-build}
BIN=$BUILD/bin
UPGRADES=${DEMO_UPGRADES:-10}
DURATION=${DEMO_DURATION:-20}

for prog in baton-httpd baton baton-load; do
    if [ ! -x "$BIN/$prog" ]; then
        echo "demo: $BIN/$prog is missing (build first: make build)" >&2
        exit 2
    fi
done

T=$(mktemp -d "${TMPDIR:-/tmp}/baton-demo.XXXXXX") || exit 1
DIR=$T/coord
SERVERS=""   # pids of every server copy seen, started here or not
LOAD_PID=""

log() {
    echo "demo: $*"
}

# True when pid $1 is alive and is a baton-httpd (pids get reused).
is_httpd() {
    [ -n "$1" ] && kill -0 "$1" 2>/dev/null &&
        tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q baton-httpd
}

remember() {
    case " $SERVERS " in
    *" $1 "*) ;;
    *) SERVERS="$SERVERS $1" ;;
    esac
}

cleanup() {
    status=$?
    trap - EXIT INT TERM
    [ -n "$LOAD_PID" ] && kill "$LOAD_PID" 2>/dev/null
    # The current owner, which `baton upgrade` may have started.
    pid=$(owner_pid)
    [ -n "$pid" ] && remember "$pid"
    left=""
    for pid in $SERVERS; do
        if is_httpd "$pid"; then
            kill -TERM "$pid" 2>/dev/null
            left="$left $pid"
        fi
    done
    # SIGTERM drains; give it up to 5 s, then cut it short.
    i=0
    while [ -n "$left" ] && [ "$i" -lt 50 ]; do
        still=""
        for pid in $left; do
            is_httpd "$pid" && still="$still $pid"
        done
        left=$still
        [ -n "$left" ] && sleep 0.1
        i=$((i + 1))
    done
    for pid in $left; do
        log "server $pid did not stop after SIGTERM; killing it"
        kill -KILL "$pid" 2>/dev/null
    done
    rm -rf "$T"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The pid in `baton status --json`, or nothing.
owner_pid() {
    "$BIN/baton" status "$DIR" --json 2>/dev/null |
        sed -n 's/.*"pid":\([0-9][0-9]*\).*/\1/p'
}

# The "local" address of the first named fd, e.g. 127.0.0.1:43117.
owner_local() {
    # shellcheck disable=SC2020 # both characters become newlines
    "$BIN/baton" status "$DIR" --json 2>/dev/null | tr '{,' '\n\n' |
        sed -n 's/^"local":"\([^"]*\)".*/\1/p' | head -n 1
}

# Prints the tail of every server log (for a failure).
show_logs() {
    for f in "$T"/httpd*.out "$T"/httpd*.err; do
        [ -s "$f" ] || continue
        echo "--- $(basename "$f")"
        tail -n 20 "$f"
    done
}

# start_copy NAME: starts a copy of the server, its output in httpd-NAME.*
start_copy() {
    "$BIN/baton-httpd" --dir "$DIR" --listen tcp://127.0.0.1:0 \
        >"$T/httpd-$1.out" 2>"$T/httpd-$1.err" &
    remember $!
    COPY_PID=$!
}

# wait_ready_line FILE PID: waits up to 10 s for the server's ready line.
wait_ready_line() {
    i=0
    while [ "$i" -lt 100 ]; do
        grep -q '^ready pid=' "$1" 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}

# The generation in `baton status --json`, or nothing.
owner_generation() {
    "$BIN/baton" status "$DIR" --json 2>/dev/null |
        sed -n 's/.*"generation":\([0-9][0-9]*\).*/\1/p'
}

# upgrade N: the Nth upgrade; odd ones start a second copy by hand, even
# ones ask the owner with `baton upgrade`.
upgrade() {
    gen=$(owner_generation)
    [ -n "$gen" ] || return 1
    gen=$((gen + 1))
    if [ $(($1 % 2)) -eq 1 ]; then
        how="second copy"
        start_copy "upgrade$1"
        "$BIN/baton" wait "$DIR" --generation "$gen" --timeout 10 >/dev/null || return 1
    else
        how="baton upgrade"
        "$BIN/baton" upgrade "$DIR" --timeout 10 >/dev/null || return 1
    fi
    pid=$(owner_pid)
    remember "$pid"
    log "upgrade $1 ($how): generation $(owner_generation) serves, pid $pid"
}

start_copy first
if ! wait_ready_line "$T/httpd-first.out" "$COPY_PID"; then
    if kill -0 "$COPY_PID" 2>/dev/null; then
        log "baton-httpd did not get ready within 10 s"
    else
        log "baton-httpd exited before it was ready"
    fi
    show_logs
    exit 1
fi
ADDR=$(owner_local)
if [ -z "$ADDR" ]; then
    log "no bound address in: $("$BIN/baton" status "$DIR" --json 2>&1)"
    show_logs
    exit 1
fi
log "baton-httpd pid $COPY_PID serves $ADDR; load for $DURATION s, $UPGRADES upgrades"

"$BIN/baton-load" --connect "$ADDR" -c 50 --rate 100 -d "$DURATION" >"$T/load.out" 2>&1 &
LOAD_PID=$!

failed=0
n=1
while [ $n -le "$UPGRADES" ]; do
    sleep 1.5
    if ! kill -0 "$LOAD_PID" 2>/dev/null; then
        log "baton-load ended early"
        break
    fi
    if ! upgrade "$n"; then
        log "upgrade $n failed"
        failed=$((failed + 1))
        show_logs
    fi
    n=$((n + 1))
done
done_upgrades=$((n - 1 - failed))

# baton-load stops by itself after the duration plus its 2 s request timeout;
# the bound here only guards against a bug there.
i=0
while kill -0 "$LOAD_PID" 2>/dev/null && [ "$i" -lt $(((DURATION + 30) * 10)) ]; do
    sleep 0.1
    i=$((i + 1))
done
if kill -0 "$LOAD_PID" 2>/dev/null; then
    log "baton-load did not stop by itself; killing it"
    kill "$LOAD_PID"
fi
wait "$LOAD_PID"
load_status=$?
LOAD_PID=""

cat "$T/load.out"
result=$(sed -n 's/^result *//p' "$T/load.out")
ok=$(echo "$result" | sed -n 's/.*ok=\([0-9]*\).*/\1/p')
errors=$(echo "$result" | sed -n 's/.*errors=\([0-9]*\).*/\1/p')
gens=$(echo "$result" | sed -n 's/.*generations=\([0-9]*\).*/\1/p')
note=""
[ "$failed" -eq 0 ] || note=" ($failed failed)"
echo "demo: $done_upgrades upgrades$note, ${ok:-?} requests, ${errors:-?} errors" \
    "(${gens:-?} generations answered)"
if [ "$load_status" -ne 0 ]; then
    exit "$load_status"
fi
[ "$failed" -eq 0 ] || exit 1
# Zero errors prove nothing unless every upgrade happened under the load
# and the new generations answered.
if [ "$done_upgrades" -ne "$UPGRADES" ] || [ "${gens:-0}" -le "$done_upgrades" ]; then
    log "only $done_upgrades of $UPGRADES upgrades under load, ${gens:-no} generations answered"
    exit 1
fi
exit 0
