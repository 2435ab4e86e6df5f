#!/bin/bash
# run-quic.sh BIN_DIR [steer|no-steer]
#
# An unmodified QUIC server under `baton run`, steered by peer: Debian's
# ngtcp2 example server (gtlsserver) restarted under load, driven by
# Debian's ngtcp2 example client (gtlsclient). Neither knows of baton.
#
#   steer     1. Clients finish their handshake with the first copy, then
#                wait (--delay-stream) while a second copy takes over; each
#                request must still be answered, with no connection error:
#                the new copy reads the socket and hands the old copy's
#                datagrams to it, which its log must show.
#             2. Ten upgrades under load, clients with random delays started
#                before each: every one answered; every old copy exits once
#                its flows have been quiet for --udp-idle.
#   no-steer  1 without --udp-steer: the requests reach the new copy, which
#             knows nothing of the connections, and the clients fail. It
#             shows what steering prevents (and that the test can fail).
#
# Exit 0 pass, 1 fail, 77 skip (ngtcp2-server or ngtcp2-client missing).
set -u
bin=$1
mode=${2:-steer}
server=$(command -v gtlsserver || ls /usr/sbin/gtlsserver 2>/dev/null || true)
client=$(command -v gtlsclient || true)
if [ -z "$server" ] || [ -z "$client" ]; then
    echo "SKIP: needs gtlsserver (ngtcp2-server) and gtlsclient (ngtcp2-client): scripts/deps.sh"
    exit 77
fi
tmp=$(mktemp -d)
run_pid=
cleanup() {
    # Every copy (a successor is not our child), then the clients.
    for p in $(sed -n 's/^baton-preload\[\([0-9]*\)\]: generation [0-9]* in .*/\1/p' \
        "$tmp/log" 2>/dev/null); do
        kill -9 "$p" 2>/dev/null
    done
    [ -n "$run_pid" ] && kill -9 "$run_pid" 2>/dev/null
    wait 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*"
    echo "--- baton run log (last 30 lines)"
    tail -30 "$tmp/log"
    exit 1
}

. "$(dirname "$0")/wait-lib.sh"
handshakes() { count 'QUIC handshake has completed' "$tmp"/c/*.log; }
has_handshakes() { [ "$(handshakes)" -ge "$1" ]; }
gen_pid() { sed -n "s/^baton-preload\[\([0-9]*\)\]: generation $1 in .*/\1/p" "$tmp/log" | tail -1; }
stopped() { count 'stopping with signal' "$tmp/log"; }
has_stopped() { [ "$(stopped)" -ge "$1" ]; }

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -keyout "$tmp/key.pem" -out "$tmp/cert.pem" -subj /CN=localhost >/dev/null 2>&1 ||
    fail "openssl could not make a certificate"
mkdir -p "$tmp/htdocs" "$tmp/c"
echo "hello from gtlsserver" >"$tmp/htdocs/index.html"
opts=(--udp-steer --udp-idle 3)
[ "$mode" = no-steer ] && opts=()

# A port nobody uses: gtlsserver takes it from its command line.
for _ in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 20000))
    "$bin/baton" run --dir "$tmp/dir" --log "$tmp/log" --drain-timeout 30 \
        --max-generations 16 "${opts[@]}" -- \
        "$server" -q -d "$tmp/htdocs" 127.0.0.1 "$port" "$tmp/key.pem" "$tmp/cert.pem" \
        >"$tmp/server.out" 2>&1 &
    run_pid=$!
    if "$bin/baton" wait "$tmp/dir" --generation 1 --timeout 10 >/dev/null 2>&1; then
        break
    fi
    kill -9 $run_pid 2>/dev/null
    wait $run_pid 2>/dev/null
    run_pid=
    rm -rf "$tmp/dir"
done
[ -n "$run_pid" ] || fail "gtlsserver did not serve under baton run: $(tail -3 "$tmp/server.out")"
url=https://127.0.0.1:$port/index.html

# One client; its answer lands in $tmp/c/NAME/ (gtlsclient exits 0 even
# when its connection failed, so the answer is what counts).
start_client() { # start_client NAME DELAY_MS REQUESTS
    mkdir -p "$tmp/c/$1"
    timeout -k 2 30 "$client" --exit-on-all-streams-close --timeout=8s \
        --delay-stream="$2ms" -n "$3" --download "$tmp/c/$1" 127.0.0.1 "$port" "$url" \
        >"$tmp/c/$1.log" 2>&1 &
    pids+=($!)
}
answered() { [ "$(cat "$tmp/c/$1/index.html" 2>/dev/null)" = "hello from gtlsserver" ]; }

# --- 1. delayed clients across one upgrade ---
pids=()
k=8
for i in $(seq 1 $k); do start_client d$i 1500 1; done
wait_for 10 has_handshakes $k || fail "the clients did not finish their handshakes"
"$bin/baton" upgrade "$tmp/dir" >/dev/null || fail "baton upgrade failed"
wait "${pids[@]}"
ok=0
for i in $(seq 1 $k); do answered d$i && ok=$((ok + 1)); done
echo "clients that sent their request after the upgrade, answered: $ok of $k ($mode)"
if [ "$mode" = no-steer ]; then
    [ $ok -lt $k ] || fail "without steering every delayed client was answered: the test cannot tell"
    echo "PASS (without steering, $((k - ok)) of $k connections were lost)"
    exit 0
fi
[ $ok -eq $k ] || fail "$((k - ok)) client(s) lost their connection: $(tail -2 "$tmp/c/d1.log")"
# Answered through steering, not by the old copy reading the socket still:
# once its flows are quiet it stops and says how many datagrams it took.
gen1=$(gen_pid 1)
wait_for 30 has_stopped 1 || fail "the first copy did not stop once its flows were quiet"
took=$(sed -n "s/^baton-preload\[$gen1\]: udp: .*, \([0-9]*\) taken from them.*/\1/p" "$tmp/log")
echo "the first copy (pid $gen1) took $took datagram(s) its successor handed it"
[ "${took:-0}" -gt 0 ] || fail "the first copy was handed no datagram: steering was not exercised"

# --- 2. ten upgrades under load ---
pids=()
n=0
for round in $(seq 1 10); do
    before=$(handshakes)
    for _ in 1 2 3 4; do
        n=$((n + 1))
        start_client l$n $((RANDOM % 1200)) 2
    done
    wait_for 15 has_handshakes $((before + 4)) || fail "round $round: clients did not connect"
    "$bin/baton" upgrade "$tmp/dir" >/dev/null || fail "round $round: baton upgrade failed"
done
wait "${pids[@]}"
bad=0
for i in $(seq 1 $n); do
    if ! answered l$i; then
        bad=$((bad + 1))
        echo "client l$i: no answer: $(grep -v '^ *[0-9a-f]\{8\} ' "$tmp/c/l$i.log" | tail -1)"
    fi
done
echo "ten upgrades under load: $n clients, $((n - bad)) answered, $bad failed"
[ $bad -eq 0 ] || fail "$bad client(s) failed across the upgrades"
# Their flows quiet, the old copies stop (generations 1 to 11, 12 serves).
wait_for 40 has_stopped 11 || fail "old copies did not stop: $(stopped) of 11"
grep 'udp: ' "$tmp/log" | sed 's/^baton-preload\[[0-9]*\]: /  /' | sort | uniq -c | sort -rn | head -5
dropped=$(sed -n 's/.*udp: .* \([0-9]*\) dropped.*/\1/p' "$tmp/log" | awk '{s += $1} END {print s + 0}')
[ "$dropped" -eq 0 ] || fail "$dropped datagram(s) dropped on a full steering queue"
echo "PASS"
