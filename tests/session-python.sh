#!/bin/bash
# The Python client (python/, baton_session) against the C game servers:
# installs the package with pip into a temporary directory (offline),
# starts two baton-game-server on loopback, runs Python bots on A and
# moves every session A->B->A ROUNDS times; requires every move to take
# every session, and nothing lost, duplicated or reordered.
#
#   tests/session-python.sh BUILD_DIR SOURCE_DIR [BOTS] [ROUNDS]
#
# Synchronises on events: the servers' "ready" and "moved" lines and the
# bots' own lines ("all N at ADDR" when every session moved; "acked K"
# every STEP acknowledgements, so that each move starts only after STEP
# more messages went both ways); every wait is bounded. Exit 77 only when
# python3 is missing. Every link is TLS (python/tests/certs): a
# baton-game-server without --tls-cert fails the test, never falls back
# to plain TCP.
set -u
BUILD=${1:?usage: session-python.sh BUILD_DIR SOURCE_DIR [BOTS] [ROUNDS]}
SRC=${2:?usage: session-python.sh BUILD_DIR SOURCE_DIR [BOTS] [ROUNDS]}
BOTS=${3:-20}
ROUNDS=${4:-3}
STEP=$((BOTS * 5))
BIN=$BUILD/bin

# The first python3 that can build the package offline: pip, setuptools
# and wheel (Debian's python3-pip brings all three; scripts/deps.sh
# installs it). A python3 on PATH without them (a bare pyenv) is passed
# over for Debian's.
PY=""
for p in ${PYTHON:-python3 /usr/bin/python3}; do
    command -v "$p" >/dev/null 2>&1 || continue
    [ -n "$PY" ] || PY=$p
    if "$p" -c 'import setuptools, wheel' 2>/dev/null && "$p" -m pip --version >/dev/null 2>&1; then
        PY=$p
        break
    fi
done
[ -n "$PY" ] || { echo "SKIP: no python3"; exit 77; }
for b in baton-game-server; do
    [ -x "$BIN/$b" ] || { echo "FAIL: $BIN/$b not built"; exit 1; }
done

TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*"
    for f in "$TMP"/*.out "$TMP"/*.err; do
        [ -s "$f" ] && { echo "--- $f"; tail -20 "$f"; }
    done
    exit 1
}

# pip builds in the source tree (build/, *.egg-info); a copy keeps the
# checkout clean and lets two builds run this test at once.
cp -r "$SRC/python" "$TMP/src"
rm -rf "$TMP/src/build" "$TMP/src"/*.egg-info
"$PY" -m pip install --quiet --no-index --no-build-isolation --target "$TMP/site" \
    "$TMP/src" >"$TMP/pip.out" 2>&1 || fail "pip install of python/ failed"
[ -f "$TMP/site/baton_session/client.py" ] || fail "pip installed no baton_session"
export PYTHONPATH=$TMP/site
export PYTHONDONTWRITEBYTECODE=1

# TLS on every link: the servers present server.pem (and verify each
# other's), the bots verify it against ca.pem. The Python client must be
# tested across moves with TLS on, so there is no plain fallback.
"$BIN/baton-game-server" 2>&1 | grep -q -- --tls-cert ||
    fail "$BIN/baton-game-server has no --tls-cert: this test needs TLS"
CERTS=$SRC/python/tests/certs
for f in ca.pem server.pem server.key; do
    [ -r "$CERTS/$f" ] || fail "TLS: $CERTS/$f missing"
done
TLS_SERVER=(--tls-cert "$CERTS/server.pem" --tls-key "$CERTS/server.key"
            --tls-ca "$CERTS/ca.pem")
TLS_BOT=(--tls-ca "$CERTS/ca.pem")

wait_line() { # file pattern count timeout_s
    local i
    for ((i = 0; i < $4 * 20; i++)); do
        [ "$(grep -c -- "$2" "$1" 2>/dev/null)" -ge "$3" ] && return 0
        sleep 0.05
    done
    return 1
}

(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$TMP/key")
# Random loopback ports, as scripts/demo-move.sh; another try if taken.
for try in 1 2 3 4 5; do
    BASE=$((20000 + RANDOM % 20000))
    A=tcp://127.0.0.1:$BASE AP=tcp://127.0.0.1:$((BASE + 1))
    B=tcp://127.0.0.1:$((BASE + 2)) BP=tcp://127.0.0.1:$((BASE + 3))
    "$BIN/baton-game-server" --listen "$A" --peer-listen "$AP" --key-file "$TMP/key" \
        --next "$BP,$B" "${TLS_SERVER[@]}" >"$TMP/a.out" 2>"$TMP/a.err" &
    APID=$!
    "$BIN/baton-game-server" --listen "$B" --peer-listen "$BP" --key-file "$TMP/key" \
        --next "$AP,$A" "${TLS_SERVER[@]}" >"$TMP/b.out" 2>"$TMP/b.err" &
    BPID=$!
    PIDS+=("$APID" "$BPID")
    if wait_line "$TMP/a.out" ready 1 5 && wait_line "$TMP/b.out" ready 1 5; then
        break
    fi
    kill "$APID" "$BPID" 2>/dev/null
    wait "$APID" "$BPID" 2>/dev/null
    [ "$try" = 5 ] && fail "game servers did not start"
done

# The bots run until told to stop (SIGTERM), bounded by --duration.
"$PY" "$SRC/python/examples/game_bot.py" --connect "$A" "${TLS_BOT[@]}" --bots "$BOTS" \
    --duration 40 --interval 20 --window 8 --progress "$STEP" >"$TMP/bot.out" 2>"$TMP/bot.err" &
BOT=$!
PIDS+=("$BOT")

wait_line "$TMP/bot.err" "sessions open" 1 10 || fail "the bots did not open their sessions"

# At least STEP more acknowledgements (the next multiple but one of STEP).
traffic() {
    local n
    n=$(grep -c '^game_bot: acked' "$TMP/bot.err")
    wait_line "$TMP/bot.err" '^game_bot: acked' $((n + 2)) 15 || fail "no traffic before $1"
}
for ((r = 1; r <= ROUNDS; r++)); do
    traffic "round $r A->B"
    kill -USR1 "$APID"
    wait_line "$TMP/a.out" '^moved' "$r" 15 || fail "round $r A->B: no move"
    wait_line "$TMP/bot.err" "all $BOTS at $B (" "$r" 15 || fail "round $r: bots not all at B"
    traffic "round $r B->A"
    kill -USR1 "$BPID"
    wait_line "$TMP/b.out" '^moved' "$r" 15 || fail "round $r B->A: no move"
    wait_line "$TMP/bot.err" "all $BOTS at $A (" "$r" 15 || fail "round $r: bots not all at A"
done
traffic "the end"
grep '^moved' "$TMP/a.out" "$TMP/b.out" | grep -v "^[^:]*:moved $BOTS failed 0 " &&
    fail "a move round did not take every session"
kill -TERM "$BOT"
for ((i = 0; i < 300; i++)); do
    kill -0 "$BOT" 2>/dev/null || break
    sleep 0.05
done
kill -0 "$BOT" 2>/dev/null && fail "the bots did not stop"
wait "$BOT"
STATUS=$?
cat "$TMP/bot.out"
echo "(tls; moves per server: $(grep -c '^moved' "$TMP/a.out") A->B," \
    "$(grep -c '^moved' "$TMP/b.out") B->A)"
[ $STATUS -eq 0 ] || fail "the bots saw a problem (exit $STATUS)"
grep -q " lost 0 dup 0 reorder 0 badstate 0 sessions_lost 0 moves $((BOTS * ROUNDS * 2)) " \
    "$TMP/bot.out" || fail "summary does not show $((BOTS * ROUNDS * 2)) clean moves"
echo "PASS"
