#!/usr/bin/env bash
# tests/compat/lib.sh - sourced after tests/run-lib.sh by the compatibility
# cases (tests/compat/*.sh): a real Debian server under `baton run`,
# restarted RESTARTS times by running the same command again while a load
# client drives it. A case passes when the load saw no failed request
# (refused, reset, timed out, short or non-2xx), exactly one copy serves at
# the end (the last one: it owns the directory and holds the listener, and
# every earlier copy is gone), and once that copy is stopped nothing the
# case started is left: no process of the case's tree is alive.
#
# Besides run-lib.sh's CMD, a case sets LOAD (wrk, redis, memcached), URLPATH
# for wrk, and MODE and NEEDS (what the server needs for zero errors, for
# results.md). A case that reuses a tests/run-*.sh sets COMPAT_CASE, MODE,
# NEEDS and LOAD in the environment and RUN_LIB_HOOK to this file, which
# run-lib.sh then sources last.
#
# The case runs as a child subreaper (re-executed through prctl), so a
# process orphaned by an old copy (a worker whose master died) comes back
# to the case's own process tree, where the final check finds it.
#
# With COMPAT_RESULTS set, the verdict and the counts go to
# $COMPAT_RESULTS/$COMPAT_CASE.res (key=value lines) for tests/compat/run.sh.

if [[ -z ${COMPAT_REAPED:-} ]]; then
    export COMPAT_REAPED=1
    exec /usr/bin/python3 -c '
import ctypes, os, sys
if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
    sys.exit("prctl(PR_SET_CHILD_SUBREAPER) failed")
os.execv("/bin/bash", ["bash"] + sys.argv[1:])' "$0" "$@"
fi

COMPAT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
COMPAT_ROOT=$(cd "$COMPAT_DIR/../.." && pwd)
COMPAT_CASE=${COMPAT_CASE:-${NAME#compat-}}
NAME=compat-$COMPAT_CASE
RESTARTS=${COMPAT_RESTARTS:-5}
INTERVAL=${COMPAT_INTERVAL:-2}
# Shorter than the load, so that a copy that cannot drain is stopped while
# clients still use it: what a client sees then is counted.
DRAIN=${COMPAT_DRAIN:-5}
CONNS=${COMPAT_CONNS:-20}
LOAD=${LOAD:-wrk}
MODE=${MODE:-}
NEEDS=${NEEDS:-}
REQS=""
ERRS=""
DETAIL=""
COMPAT_START=$SECONDS

compat_record() {
    local status=$1 reason=$2 f
    [[ -n ${COMPAT_RESULTS:-} ]] || return 0
    f=$COMPAT_RESULTS/$COMPAT_CASE.res
    {
        echo "case=$COMPAT_CASE"
        echo "status=$status"
        echo "server=${SERVER:-}"
        echo "mode=$MODE"
        echo "needs=$NEEDS"
        echo "restarts=$RESTARTS"
        echo "requests=$REQS"
        echo "errors=$ERRS"
        echo "detail=$DETAIL"
        echo "reason=$reason"
        echo "seconds=$((SECONDS - COMPAT_START))"
    } >"$f"
}

skip() {
    say "SKIP: $*"
    compat_record SKIP "$*"
    exit 77
}

fail() {
    say "FAIL: $*"
    compat_record FAIL "$*"
    [[ -z ${T:-} ]] || show_logs
    exit 1
}

# Installs the case's server (scripts/deps-compat.sh); skips only if that
# cannot be done.
compat_need() {
    sh "$COMPAT_ROOT/scripts/deps-compat.sh" "$@" >&2 ||
        skip "cannot install the packages of: $* (scripts/deps-compat.sh)"
}

# --- Processes. ---------------------------------------------------------------

# Pids of the live (not zombie) descendants of pid $1, read from /proc with
# builtins only, so that the scan forks nothing of its own; the subshell of
# a $(descendants ...) is left out.
descendants() {
    local root=$1 f line rest pid ppid state
    local -A kids=()
    for f in /proc/[0-9]*/stat; do
        { read -r line <"$f"; } 2>/dev/null || continue
        pid=${line%% *}
        rest=${line##*) }
        state=${rest%% *}
        rest=${rest#* }
        ppid=${rest%% *}
        [[ $state == Z || $state == X || $pid == "$BASHPID" ]] && continue
        kids[$ppid]+=" $pid"
    done
    local queue=("$root") p out=()
    while ((${#queue[@]})); do
        p=${queue[0]}
        queue=("${queue[@]:1}")
        for pid in ${kids[$p]:-}; do
            out+=("$pid")
            queue+=("$pid")
        done
    done
    echo "${out[@]}"
}

# "pid pid ... (command line of the first)", for messages.
describe() {
    local c
    c=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | cut -c1-60)
    echo "$* (${c% })"
}

# Pids that hold a listening TCP socket on $PORT.
listener_pids() {
    ss -Hltnp "sport = :$PORT" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -un
}

run_cleanup() {
    local st=$? pid left
    trap - EXIT INT TERM
    [[ -n $LOAD_PID ]] && kill -KILL "$LOAD_PID" 2>/dev/null
    # Everything still alive in our tree was started by this case.
    for _ in 1 2; do
        left=$(descendants $$)
        [[ -n $left ]] || break
        # shellcheck disable=SC2086
        kill -KILL $left 2>/dev/null
        wait 2>/dev/null
    done
    [[ -n ${RUN_KEEP:-} ]] || rm -rf "$T"
    exit "$st"
}

# --- Load. --------------------------------------------------------------------

# Starts the load in the background for $1 seconds; LOAD_PID is the client
# (under `timeout`, so that it ends even if the server stops answering).
load_start() {
    local d=$1 bound=$(($1 + 15))
    case $LOAD in
    wrk)
        timeout -k 2 "$bound" wrk -t 2 -c "$CONNS" -d "${d}s" --timeout 2s \
            "http://127.0.0.1:$PORT${URLPATH:-/}" >"$T/load.log" 2>&1 &
        ;;
    redis)
        load_redis "$d" >"$T/load.log" 2>&1 &
        ;;
    memcached)
        timeout -k 2 "$bound" /usr/bin/python3 "$COMPAT_DIR/memcached-load.py" --port "$PORT" \
            -c "$CONNS" -d "$d" ${MC_RECYCLE:+--recycle "$MC_RECYCLE"} >"$T/load.log" 2>&1 &
        ;;
    *) fail "unknown LOAD $LOAD" ;;
    esac
    LOAD_PID=$!
}

# redis-benchmark has no duration: back-to-back runs of RB_N SETs and GETs
# each until the duration is over (at most 200 runs), each run bounded in
# time. Every run opens its CONNS connections and closes them at its end,
# as clients that reconnect do.
load_redis() {
    local end=$((SECONDS + $1)) i st max
    for ((i = 0; i < 200 && SECONDS < end; i++)); do
        timeout -k 1 10 redis-benchmark -h 127.0.0.1 -p "$PORT" -c "$CONNS" -n "${RB_N:-5000}" \
            -t set,get -k 1 --csv >"$T/rb.out" 2>&1
        st=$?
        # The slowest request of the run, as wrk's 2 s timeout would see it.
        max=$(awk -F'"' 'NR > 1 && $16 + 0 > m { m = $16 + 0 } END { print m + 0 }' "$T/rb.out")
        if [[ $st == 0 ]] && ! grep -qi error "$T/rb.out" && awk -v m="$max" 'BEGIN { exit !(m <= 2000) }'; then
            echo "run ok $((2 * ${RB_N:-5000}))"
        elif [[ $st == 0 ]] && ! grep -qi error "$T/rb.out"; then
            echo "run failed: a request waited $max ms (over 2 s)"
        else
            echo "run failed (exit $st) $(grep -i -m1 -e error -e reset "$T/rb.out" | tr -d '\r')"
            [[ $st == 124 || $st == 137 ]] && echo "run hung: no reply within 10 s"
        fi
    done
}

# One request, answered within 5 s by whichever copy serves.
probe() {
    local req want
    case $LOAD in
    wrk) req="GET ${URLPATH:-/} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" want=" 200 " ;;
    redis) req="PING\r\n" want="+PONG" ;;
    memcached) req="version\r\n" want="VERSION" ;;
    esac
    /usr/bin/python3 - "$PORT" "$req" "$want" <<'PY'
import socket, sys, time
port, req, want = int(sys.argv[1]), sys.argv[2].encode().decode("unicode_escape"), sys.argv[3]
end = time.monotonic() + 5
s = socket.create_connection(("127.0.0.1", port), timeout=5)
s.sendall(req.encode())
got = b""
while want.encode() not in got:
    s.settimeout(max(0.01, end - time.monotonic()))
    d = s.recv(4096)
    if not d:
        sys.exit("end of stream before %r: %r" % (want, got[:80]))
    got += d
PY
}

# Sets REQS, ERRS and DETAIL from the load's log; 0 when no request failed.
load_parse() {
    local log=$T/load.log c r w t n
    case $LOAD in
    wrk)
        REQS=$(awk '/requests in/ { print $1 }' "$log")
        read -r c r w t < <(sed -n 's/.*Socket errors: connect \([0-9]*\), read \([0-9]*\), write \([0-9]*\), timeout \([0-9]*\).*/\1 \2 \3 \4/p' "$log")
        n=$(sed -n 's/.*Non-2xx or 3xx responses: \([0-9]*\).*/\1/p' "$log")
        c=${c:-0} r=${r:-0} w=${w:-0} t=${t:-0} n=${n:-0}
        ERRS=$((c + r + w + t + n))
        DETAIL="connect $c, read $r, write $w, timeout $t, non-2xx $n"
        [[ -n $REQS ]] || { REQS=0 DETAIL="wrk printed no result: $(tail -n 2 "$log" | tr '\n' ' ')" ERRS=${ERRS:-1}; }
        ((ERRS == 0)) && [[ $REQS != 0 ]]
        ;;
    redis)
        REQS=$(awk '/^run ok/ { s += $3 } END { print s + 0 }' "$log")
        ERRS=$(grep -c '^run failed' "$log")
        DETAIL="$(grep -c '^run ok' "$log") runs of $((2 * ${RB_N:-5000})) requests ok, $ERRS failed"
        if ((ERRS)); then
            DETAIL+=" ($(grep -c '^run hung' "$log") hung with no reply; first: $(grep -m1 '^run failed' "$log" | cut -c1-80))"
        fi
        ((ERRS == 0)) && [[ $REQS != 0 ]]
        ;;
    memcached)
        REQS=$(sed -n 's/^requests \([0-9]*\).*/\1/p' "$log")
        ERRS=$(sed -n 's/^requests [0-9]* errors \([0-9]*\).*/\1/p' "$log")
        DETAIL=$(sed -n 's/^requests [0-9]* errors [0-9]* (\(.*\))/\1/p' "$log")
        [[ -n $REQS ]] || { REQS=0 ERRS=1 DETAIL="the client printed no result: $(tail -n 2 "$log" | tr '\n' ' ')"; }
        ((ERRS == 0)) && [[ $REQS != 0 ]]
        ;;
    esac
}

# --- The run. -------------------------------------------------------------------

# A problem found: the case fails, but goes on where that still tells
# something (a server that fails in generation 1 is still restarted).
PROBLEMS=()
problem() {
    say "problem: $*"
    PROBLEMS+=("$*")
}

# Start one copy in the background: baton run execs, so $! is the server. Its
# own (not run-lib.sh's): the copy stays our child, not disowned, so that
# `wait` gives its exit status once it is gone.
start_copy() {
    local n=$1 k why
    BATON_RUN_LOG=$T/shim.log "$BIN/baton" run --dir "$DIR" --drain-timeout "$DRAIN" \
        ${STOP_SIGNAL:+--stop-signal "$STOP_SIGNAL"} ${RUN_OPTS[@]+"${RUN_OPTS[@]}"} \
        -- "${CMD[@]}" >>"$T/server.err" 2>&1 &
    SERVERS+=("$!")
    # Up to 20 s, but no longer than the copy lives.
    for ((k = 0; k < 20; k++)); do
        "$BIN/baton" wait "$DIR" --generation "$n" --timeout 1 >/dev/null 2>&1 && return 0
        alive "${SERVERS[-1]}" || break
    done
    why=$(grep -h 'baton_ready:' "$T/shim.log" 2>/dev/null | tail -n 1)
    [[ -n $why ]] || why=$(grep -h 'failed' "$T/shim.log" 2>/dev/null | tail -n 1)
    if alive "${SERVERS[-1]}"; then
        fail "generation $n never served${why:+ (shim: $why)}"
    fi
    wait "${SERVERS[-1]}"
    fail "generation $n never served: it exited with status $?, saying '$(tail -n 1 "$T/server.err" 2>/dev/null)'${why:+ (shim: $why)}"
}

# Waits (bounded) until pid $1's tree holds the listener on $PORT.
wait_listening() {
    local deadline=$((SECONDS + 20)) p
    while :; do
        for p in $(listener_pids); do
            [[ $p == "$1" || " $(descendants "$1") " == *" $p "* ]] && return 0
        done
        ((SECONDS < deadline)) || fail "copy $1 never listened on port $PORT"
        sleep 0.1
    done
}

# How the copies that are gone exited: 0 or the stop signal is a clean stop,
# anything else (a crash, SIGKILL after the stop signal was ignored) is not.
exits_check() {
    local pid st sig clean=0 other=()
    sig=$(kill -l "${STOP_SIGNAL:-TERM}")
    for pid in "$@"; do
        wait "$pid" 2>/dev/null
        st=$?
        if [[ $st == 0 || $st == $((128 + sig)) ]]; then
            clean=$((clean + 1))
        else
            other+=("$pid:$st")
        fi
    done
    DETAIL+="; old copies exited cleanly: $clean of $#"
    ((${#other[@]} == 0)) || problem "old copies exited with another status (pid:status, 128+N is signal N): ${other[*]}"
}

run_restarts() {
    local i duration left pid deadline owner p last tree drained timed others
    duration=$(awk -v n="$RESTARTS" -v i="$INTERVAL" 'BEGIN { printf "%d", n * i + 3 }')
    start_copy 1
    wait_listening "${SERVERS[0]}"
    probe 2>"$T/probe.err" || problem "generation 1 did not answer a request within 5 s ($(tail -n 1 "$T/probe.err"))"
    load_start "$duration"
    # Restarts are spread over the load (pacing, not synchronisation: each
    # one waits for its generation to serve).
    sleep 1
    for ((i = 2; i <= RESTARTS + 1; i++)); do
        start_copy "$i"
        sleep "$INTERVAL"
    done
    wait "$LOAD_PID"
    LOAD_PID=""
    load_parse || problem "the load saw $ERRS failed requests of $REQS ($DETAIL)"
    cat "$T/load.log"

    # Every copy but the last is gone, its whole tree with it.
    last=${SERVERS[-1]}
    deadline=$((SECONDS + DRAIN + 15))
    while :; do
        left=()
        for pid in "${SERVERS[@]:0:${#SERVERS[@]}-1}"; do
            alive "$pid" && left+=("$pid")
        done
        [[ ${#left[@]} == 0 ]] && break
        ((SECONDS < deadline)) || fail "old copies still running: $(describe "${left[@]}")"
        sleep 0.2
    done
    drained=$(grep -c 'no connections left; stopping' "$T/shim.log" 2>/dev/null)
    timed=$(grep -c 'drain timeout; stopping' "$T/shim.log" 2>/dev/null)
    DETAIL+="; old copies stopped after draining: ${drained:-0}, at the drain timeout: ${timed:-0}"
    exits_check "${SERVERS[@]:0:${#SERVERS[@]}-1}"
    alive "$last" || fail "the last copy is not running"
    owner=$("$BIN/baton" status "$DIR" --json | sed -n 's/.*"pid":\([0-9]*\).*/\1/p')
    [[ $owner == "$last" ]] || problem "owner is '$owner', not the last copy $last"
    tree=" $last $(descendants "$last") "
    others=()
    for p in $(listener_pids); do
        [[ $tree == *" $p "* ]] || others+=("$p")
    done
    ((${#others[@]} == 0)) || problem "${#others[@]} processes outside the last copy hold the listener: $(describe "${others[@]}")"
    probe 2>"$T/probe.err" || problem "the last copy did not answer a request within 5 s ($(tail -n 1 "$T/probe.err"))"
    # Nothing but the last copy's tree is left in ours.
    others=()
    for p in $(descendants $$); do
        [[ $tree == *" $p "* ]] || others+=("$p")
    done
    ((${#others[@]} == 0)) || problem "${#others[@]} processes of old copies still running after their copy exited: $(describe "${others[@]}")"

    # Stopped, the last copy leaves nothing behind either.
    kill -"${STOP_SIGNAL:-TERM}" "$last"
    deadline=$((SECONDS + 15))
    while read -ra others < <(descendants $$) && ((${#others[@]})); do
        if ((SECONDS >= deadline)); then
            problem "left behind 15 s after the last copy was stopped: $(describe "${others[@]}")"
            break
        fi
        sleep 0.2
    done
    if ((${#PROBLEMS[@]})); then
        local all
        printf -v all '%s; ' "${PROBLEMS[@]}"
        fail "${all%; }"
    fi
    say "PASS: $RESTARTS restarts under load, $REQS requests, 0 errors, one copy serving, nothing left behind"
    compat_record PASS ""
}
