#!/bin/bash
# Move every player session between two game servers, back and forth, under
# load, and show what the players saw.
#
#   scripts/demo-move.sh BUILD_DIR [BOTS] [ROUNDS] [PYBOTS]
#
# Starts baton-game-server A and B on loopback (random ports), BOTS bot
# players (baton-game-client) and PYBOTS more in Python (default 20,
# python/examples/game_bot.py on the baton_session package; none without
# python3) on A, then moves every session A->B and B->A ROUNDS times each.
# Prints each move's time, then each client's summary: lost/duplicate/
# reorder/badstate counts (all must be 0) and the pause the players saw
# while their session moved (p50/p99/max).
set -u
BUILD=${1:?usage: demo-move.sh BUILD_DIR [BOTS] [ROUNDS]}
BOTS=${2:-100}
ROUNDS=${3:-5}
PYBOTS=${4:-20}
BIN=$BUILD/bin
ROOT=$(cd "$(dirname "$0")/.." && pwd)
command -v python3 >/dev/null 2>&1 || PYBOTS=0
for b in baton-game-server baton-game-client; do
    [ -x "$BIN/$b" ] || { echo "demo-move: $BIN/$b not built (libssl-dev missing?)" >&2; exit 1; }
done

TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT

(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$TMP/key")
# TLS on every link: a private authority for the demo, a certificate for
# 127.0.0.1 that both servers present (to the players and to each other).
bash "$ROOT/scripts/session-certs.sh" "$TMP/tls" 127.0.0.1 || exit 1
TLS=(--tls-cert "$TMP/tls/server.pem" --tls-key "$TMP/tls/server.key" --tls-ca "$TMP/tls/ca.pem")
BASE=$((20000 + RANDOM % 20000))
A=tcp://127.0.0.1:$BASE
AP=tcp://127.0.0.1:$((BASE + 1))
B=tcp://127.0.0.1:$((BASE + 2))
BP=tcp://127.0.0.1:$((BASE + 3))

"$BIN/baton-game-server" --listen "$A" --peer-listen "$AP" --key-file "$TMP/key" "${TLS[@]}" \
    --next "$BP,$B" >"$TMP/a.out" 2>"$TMP/a.err" &
PIDS+=($!)
APID=$!
"$BIN/baton-game-server" --listen "$B" --peer-listen "$BP" --key-file "$TMP/key" "${TLS[@]}" \
    --next "$AP,$A" >"$TMP/b.out" 2>"$TMP/b.err" &
PIDS+=($!)
BPID=$!

wait_line() { # file pattern count timeout_s
    local i
    for ((i = 0; i < $4 * 20; i++)); do
        [ "$(grep -c "$2" "$1" 2>/dev/null)" -ge "$3" ] && return 0
        sleep 0.05
    done
    echo "demo-move: timed out waiting for '$2' in $1" >&2
    cat "$TMP"/*.err >&2
    return 1
}
wait_line "$TMP/a.out" ready 1 5 || exit 1
wait_line "$TMP/b.out" ready 1 5 || exit 1

DURATION=$((ROUNDS * 2 + 3))
"$BIN/baton-game-client" --connect "$A" --tls-ca "$TMP/tls/ca.pem" --bots "$BOTS" \
    --duration "$DURATION" --interval 20 >"$TMP/client.out" 2>"$TMP/client.err" &
CPID=$!
PYPID=
if [ "$PYBOTS" -gt 0 ]; then
    PYTHONPATH=$ROOT/python python3 "$ROOT/python/examples/game_bot.py" --connect "$A" \
        --tls-ca "$TMP/tls/ca.pem" --bots "$PYBOTS" --duration "$DURATION" --interval 20 \
        >"$TMP/pybot.out" 2>"$TMP/pybot.err" &
    PYPID=$!
    PIDS+=($PYPID)
fi
sleep 1
echo "demo-move: $BOTS players on A (and $PYBOTS in Python); moving every session A->B->A $ROUNDS times"
for ((r = 1; r <= ROUNDS; r++)); do
    kill -USR1 $APID
    wait_line "$TMP/a.out" '^moved' "$r" 10 || exit 1
    echo "  round $r A->B: $(grep '^moved' "$TMP/a.out" | tail -1)"
    sleep 0.4
    kill -USR1 $BPID
    wait_line "$TMP/b.out" '^moved' "$r" 10 || exit 1
    echo "  round $r B->A: $(grep '^moved' "$TMP/b.out" | tail -1)"
    sleep 0.4
done
wait $CPID
STATUS=$?
cat "$TMP/client.out"
[ -s "$TMP/client.err" ] && head -20 "$TMP/client.err"
if [ -n "$PYPID" ]; then
    wait "$PYPID"
    PYSTATUS=$?
    echo "demo-move: the Python bots (python/examples/game_bot.py):"
    cat "$TMP/pybot.out"
    grep -v -e 'sessions open' -e '^game_bot: all ' "$TMP/pybot.err" | head -20
    [ $PYSTATUS -eq 0 ] || STATUS=$PYSTATUS
fi
if [ $STATUS -eq 0 ]; then
    echo "demo-move: OK: nothing lost, duplicated or reordered"
else
    echo "demo-move: FAILED"
fi
exit $STATUS
