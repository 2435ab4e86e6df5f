#!/bin/bash
# quic-upgrade.sh BIN_DIR [steer|no-steer]
#
# QUIC connections through upgrades, with a client nobody here wrote:
# Debian's ngtcp2 example client (gtlsclient) against examples/baton-quic.
#
#   steer     1. Clients complete their handshake with generation 1, then
#                wait (--delay-stream) while generation 2 takes over; each
#                request must still be answered by generation 1, with no
#                connection error (its datagrams are steered to it).
#             2. Ten upgrades under load: clients with random delays start
#                before each upgrade; every one must get its answers, and
#                every old generation must exit once its connections end.
#   no-steer  The same as 1 with steering switched off: the requests go to
#             generation 2, which does not know the connections, and the
#             clients fail. It shows what steering prevents (and that the
#             test can fail).
#
# Exit 0 pass, 1 fail, 77 skip (gtlsclient or baton-quic missing).
set -u
bin=$1
mode=${2:-steer}
client=$(command -v gtlsclient || true)
if [ -z "$client" ] || [ ! -x "$bin/baton-quic" ]; then
    echo "SKIP: needs gtlsclient (ngtcp2-client) and baton-quic (scripts/deps.sh)"
    exit 77
fi
tmp=$(mktemp -d)
server=
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null
    # Every generation (a successor is not our child).
    for p in $(sed -n 's/^ready pid=\([0-9]*\).*/\1/p' "$tmp/out" 2>/dev/null); do
        kill -9 "$p" 2>/dev/null
    done
    wait 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*"
    echo "--- server log (last 30 lines)"
    tail -30 "$tmp/err"
    exit 1
}

. "$(dirname "$0")/wait-lib.sh"
ready_count() { count '^ready ' "$tmp/out"; }
has_ready() { [ "$(ready_count)" -ge "$1" ]; }
opened() { count ': open from ' "$tmp/err"; }
has_opened() { [ "$(opened)" -ge "$1" ]; }
current_pid() { sed -n 's/^ready pid=\([0-9]*\).*/\1/p' "$tmp/out" | tail -1; }
live_servers() {
    local n=0
    for p in $(sed -n 's/^ready pid=\([0-9]*\).*/\1/p' "$tmp/out"); do
        kill -0 "$p" 2>/dev/null && n=$((n + 1))
    done
    echo $n
}
one_server_left() { [ "$(live_servers)" -eq 1 ]; }

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -keyout "$tmp/key.pem" -out "$tmp/cert.pem" -subj /CN=localhost >/dev/null 2>&1 ||
    fail "openssl could not make a certificate"
steer_flag=
[ "$mode" = no-steer ] && steer_flag=--no-steer
"$bin/baton-quic" --dir "$tmp/dir" --listen udp://127.0.0.1:0 --cert "$tmp/cert.pem" \
    --key "$tmp/key.pem" --trace --drain-timeout 20000 $steer_flag >"$tmp/out" 2>"$tmp/err" &
server=$!
wait_for 10 has_ready 1 || fail "baton-quic did not start"
port=$(sed -n 's/^ready .* port=\([0-9]*\).*/\1/p' "$tmp/out" | head -1)
url=https://127.0.0.1:$port/

# One client: its answers in $tmp/c/NAME/ (gtlsclient exits 0 even when
# the connection failed, so the answer is what counts).
start_client() { # start_client NAME DELAY_MS REQUESTS
    mkdir -p "$tmp/c/$1"
    timeout -k 2 25 "$client" --quiet --exit-on-all-streams-close --timeout=8s \
        --delay-stream="$2ms" -n "$3" --download "$tmp/c/$1" 127.0.0.1 "$port" "$url" \
        >"$tmp/c/$1.log" 2>&1 &
    pids+=($!)
}
body() { cat "$tmp/c/$1/index.html" 2>/dev/null; }

# --- 1. delayed clients across one upgrade ---
pids=()
k=8
for i in $(seq 1 $k); do start_client d$i 1500 1; done
wait_for 10 has_opened $k || fail "the clients did not connect"
kill -HUP "$(current_pid)"
wait_for 10 has_ready 2 || fail "generation 2 did not take over"
wait "${pids[@]}"
answered=0
for i in $(seq 1 $k); do
    [ "$(body d$i)" = "generation 1" ] && answered=$((answered + 1))
done
echo "delayed clients answered by generation 1 after generation 2 took over: $answered of $k ($mode)"
if [ "$mode" = no-steer ]; then
    # Without steering their requests reach generation 2, which knows
    # nothing of them: that is the failure steering prevents.
    [ $answered -lt $k ] || fail "without steering every delayed client was answered: the test cannot tell"
    exit 0
fi
[ $answered -eq $k ] || fail "$((k - answered)) delayed client(s) lost their connection"
# And they were answered through steering, not by generation 1 reading the
# socket still: once it exits it says how many datagrams it was handed.
gen1=$(sed -n 's/^ready pid=\([0-9]*\) generation=1 .*/\1/p' "$tmp/out")
gen1_took() { grep -q "baton-quic\[$gen1\] gen 1: exiting:" "$tmp/err"; }
wait_for 30 gen1_took || fail "generation 1 did not exit after its connections ended"
took=$(sed -n "s/^baton-quic\[$gen1\] gen 1: exiting: .*, \([0-9]*\) taken from newer/\1/p" "$tmp/err")
echo "generation 1 was handed $took datagram(s) by generation 2"
[ "${took:-0}" -gt 0 ] || fail "generation 1 was handed no datagram: steering was not exercised"

# --- 2. ten upgrades under load ---
pids=()
n=0
for round in $(seq 1 10); do
    before=$(opened)
    for _ in 1 2 3 4; do
        n=$((n + 1))
        start_client l$n $((RANDOM % 1200)) 2
    done
    wait_for 15 has_opened $((before + 4)) || fail "round $round: clients did not connect"
    kill -HUP "$(current_pid)"
    wait_for 15 has_ready $((round + 2)) || fail "round $round: no new generation took over"
done
wait "${pids[@]}"
bad=0
for i in $(seq 1 $n); do
    b=$(body l$i)
    case $b in
    "generation "*) ;;
    *)
        bad=$((bad + 1))
        echo "client l$i: no answer: $(tail -2 "$tmp/c/l$i.log")"
        ;;
    esac
done
echo "ten upgrades under load: $n clients, $((n - bad)) answered, $bad failed; answers by generation:"
cat "$tmp"/c/l*/index.html 2>/dev/null | sort | uniq -c
[ $bad -eq 0 ] || fail "$bad client(s) failed across the upgrades"
# Their connections over, the old generations exit (drain), leaving one.
wait_for 30 one_server_left || fail "old generations did not exit: $(live_servers) alive"
echo "PASS"
