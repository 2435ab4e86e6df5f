#!/bin/bash
# run-udp-steer.sh BIN_DIR
#
# `baton run --udp-steer` with UDP servers shaped unlike ngtcp2's (Python's
# socket module, unmodified programs of ours in this file):
#
#   1. A server that only ever blocks in recvfrom() (no poll, no epoll)
#      becomes ready, and through an upgrade each peer stays with the copy
#      that has it: the old peer answered by the old pid, a new peer by the
#      new pid.
#   2. A server that also sends on its own (a heartbeat to a peer that
#      never answers): once superseded, its own sends keep no flow alive,
#      so it stops when its peers have been quiet for --udp-idle, not at
#      the drain timeout.
#   3. A server with two UDP sockets: the second is not steered, and
#      standard error says so.
#   4. SO_RCVTIMEO on the steered socket still times a blocking read out.
#   5. Without --udp-steer, the server of 1 becomes ready at its first
#      read too, not at the 10 s fallback.
#
# Exit 0 pass, 1 fail, 77 skip (no python3).
set -u
bin=$1
command -v python3 >/dev/null 2>&1 || {
    echo "SKIP: needs python3"
    exit 77
}
tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
    for d in "$tmp"/d*; do
        [ -d "$d" ] || continue
        for p in $(sed -n 's/^baton-preload\[\([0-9]*\)\]: generation [0-9]* in .*/\1/p' \
            "$d.log" 2>/dev/null); do
            kill -9 "$p" 2>/dev/null
        done
    done
    wait 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*"
    for l in "$tmp"/*.log; do
        echo "--- $l (last 15 lines)"
        tail -15 "$l"
    done
    exit 1
}
. "$(dirname "$0")/wait-lib.sh"

cat >"$tmp/server.py" <<'EOF'
import os, socket, struct, sys, threading, time
mode, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", port))
if mode == "two":
    t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    t.bind(("127.0.0.1", port + 1))
if mode == "timeout":
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 200000))
    t0 = time.time()
    try:
        s.recvfrom(100)
        print("got a datagram", flush=True)
    except BlockingIOError:
        print("timed out after %.1f s" % (time.time() - t0), flush=True)
    sys.exit(0)
if mode == "heartbeat":
    # To a peer that never answers, every 100 ms, for ever.
    def beat():
        while True:
            s.sendto(b"beat", ("127.0.0.1", port + 2))
            time.sleep(0.1)
    threading.Thread(target=beat, daemon=True).start()
while True:
    d, a = s.recvfrom(2048)  # blocking, and nothing else: no poll, no epoll
    s.sendto(b"%d %s" % (os.getpid(), d), a)
EOF

# A client with a fixed source port: its answer's pid, or "none".
cat >"$tmp/client.py" <<'EOF'
import socket, sys
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
c.bind(("127.0.0.1", int(sys.argv[1])))
c.settimeout(3)
c.sendto(b"x", ("127.0.0.1", int(sys.argv[2])))
try:
    print(c.recvfrom(2048)[0].split()[0].decode())
except OSError:
    print("none")
EOF

start() { # start NAME MODE PORT [OPTIONS...]: baton run in $tmp/NAME
    local name=$1 mode=$2 port=$3
    shift 3
    "$bin/baton" run --dir "$tmp/$name" --log "$tmp/$name.log" --udp-steer "$@" -- \
        python3 "$tmp/server.py" "$mode" "$port" >"$tmp/$name.out" 2>"$tmp/$name.err" &
    pids+=($!)
}
gen_pid() { sed -n "s/^baton-preload\[\([0-9]*\)\]: generation $2 in .*/\1/p" "$tmp/$1.log" | tail -1; }
gone() { ! kill -0 "$1" 2>/dev/null; }
base=$((20000 + RANDOM % 20000))

# --- 1. blocking reads only: ready, and steered ---
start d1 echo $base --udp-idle 5
"$bin/baton" wait "$tmp/d1" --generation 1 --timeout 10 >/dev/null ||
    fail "a server that only blocks in recvfrom() never became ready"
p1=$(gen_pid d1 1)
[ "$(python3 "$tmp/client.py" $((base + 100)) $base)" = "$p1" ] || fail "the first copy does not answer"
"$bin/baton" upgrade "$tmp/d1" >/dev/null || fail "baton upgrade failed"
p2=$(gen_pid d1 2)
old=$(python3 "$tmp/client.py" $((base + 100)) $base)
new=$(python3 "$tmp/client.py" $((base + 101)) $base)
echo "after the upgrade: the old peer answered by $old (first copy $p1), a new peer by $new (second $p2)"
[ "$old" = "$p1" ] || fail "the old peer's datagram went to $old, not to the first copy $p1"
[ "$new" = "$p2" ] || fail "a new peer's datagram went to $new, not to the second copy $p2"

# --- 2. a superseded copy's own sends keep nothing ---
start d2 heartbeat $((base + 10)) --udp-idle 1 --drain-timeout 60
"$bin/baton" wait "$tmp/d2" --generation 1 --timeout 10 >/dev/null || fail "heartbeat server not ready"
h1=$(gen_pid d2 1)
[ "$(python3 "$tmp/client.py" $((base + 110)) $((base + 10)))" = "$h1" ] || fail "heartbeat server does not answer"
"$bin/baton" upgrade "$tmp/d2" >/dev/null || fail "baton upgrade of the heartbeat server failed"
wait_for 15 gone "$h1" ||
    fail "the superseded heartbeat server is still there 15 s on: its own sends kept its flows"
echo "the superseded copy that sends heartbeats stopped once its peers were quiet"

# --- 3. two UDP sockets: the second is not steered, and we are told ---
start d3 two $((base + 20))
"$bin/baton" wait "$tmp/d3" --generation 1 --timeout 10 >/dev/null || fail "two-socket server not ready"
grep -q "udp://127.0.0.1:$((base + 21)) is not steered" "$tmp/d3.err" ||
    fail "nothing said that the second UDP socket is not steered: $(cat "$tmp/d3.err")"
echo "two sockets: $(grep -o 'udp://[^ ]* is not steered.*' "$tmp/d3.err")"

# --- 4. SO_RCVTIMEO ---
"$bin/baton" run --dir "$tmp/d4" --udp-steer -- python3 "$tmp/server.py" timeout $((base + 30)) \
    >"$tmp/d4.out" 2>&1 &
pids+=($!)
wait_for 10 grep -q . "$tmp/d4.out" || fail "a read with SO_RCVTIMEO never returned"
grep -q "timed out" "$tmp/d4.out" || fail "SO_RCVTIMEO: $(cat "$tmp/d4.out")"
echo "SO_RCVTIMEO: $(cat "$tmp/d4.out")"

# --- 5. unsteered: ready at its first read ---
"$bin/baton" run --dir "$tmp/d5" --log "$tmp/d5.log" -- python3 "$tmp/server.py" echo \
    $((base + 40)) >"$tmp/d5.out" 2>&1 &
pids+=($!)
"$bin/baton" wait "$tmp/d5" --generation 1 --timeout 5 >/dev/null ||
    fail "without --udp-steer, a server that only blocks in recvfrom() was not ready in 5 s"
echo "without --udp-steer: ready at its first read"
echo "PASS"
