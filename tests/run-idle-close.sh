#!/usr/bin/env bash
# run-idle-close.sh BUILD_DIR - a superseded copy ends its idle keep-alive
# connections gracefully instead of holding them until the drain timeout
# and then cutting them: redis-server (whose clients idle for ever) under
# `baton run` with a drain timeout of 20 s holds two client connections
# when the next copy takes over: A is idle (PING answered), B waits in
# BLPOP for 3 s (a request being worked on). A must see its connection end
# (EOF, not a reset) within 4 s and then reach the new copy; B must get its
# answer, and only then see its connection end; the old copy must exit
# well before the drain timeout.
BUILD=${1:?usage: run-idle-close.sh BUILD_DIR}
NAME=run-idle-close
. "$(dirname "$0")/run-lib.sh"

run_need /usr/bin/redis-server /usr/bin/python3
run_tmp
run_port
CMD=(/usr/bin/redis-server --save '' --appendonly no --port "$PORT" --bind 127.0.0.1
    --daemonize no --dir "$T")
DRAIN=20
start_copy 1
old=${SERVERS[0]}

# Two FIFOs carry the two events: the clients are connected (ready), the
# next copy serves (go).
mkfifo "$T/ready" "$T/go"
exec 3<>"$T/ready" 4<>"$T/go"
/usr/bin/python3 - "$PORT" "$T/ready" "$T/go" >"$T/clients.log" 2>&1 <<'PY' &
import os, select, socket, sys, threading, time
port, ready, go = int(sys.argv[1]), sys.argv[2], sys.argv[3]
fails = []

def conn():
    return socket.create_connection(("127.0.0.1", port), timeout=10)

def until_eof(c, what, limit):
    t0 = time.monotonic()
    try:
        d = c.recv(100)
    except ConnectionResetError:
        fails.append("%s: reset, not EOF" % what)
        return
    except socket.timeout:
        fails.append("%s: still open after %d s" % (what, c.gettimeout()))
        return
    took = time.monotonic() - t0
    if d:
        fails.append("%s: got %r, not EOF" % (what, d))
    elif took > limit:
        fails.append("%s: EOF after %.1f s, not within %d s" % (what, took, limit))
    else:
        print("%s: EOF after %.1f s" % (what, took))

a, b = conn(), conn()
a.sendall(b"PING\r\n")
assert a.recv(100) == b"+PONG\r\n"
b.sendall(b"BLPOP baton-nolist 3\r\n")
with open(ready, "w") as f:
    f.write("ready\n")
g = os.open(go, os.O_RDONLY | os.O_NONBLOCK)
if not select.select([g], [], [], 30)[0]:  # the next copy serves: at most 30 s
    sys.exit("the next copy never served")

def idle():
    until_eof(a, "A (idle)", 4)
    c = conn()
    c.sendall(b"PING\r\n")
    if c.recv(100) != b"+PONG\r\n":
        fails.append("A: no PONG from the new copy")

def busy():
    got = b""
    try:
        while not got.endswith(b"\r\n"):
            d = b.recv(100)
            if not d:
                break
            got += d
    except OSError as e:
        fails.append("B (in BLPOP): %r" % e)
        return
    if got != b"*-1\r\n":
        fails.append("B (in BLPOP): got %r, not its answer" % got)
        return
    print("B: answered")
    until_eof(b, "B (answered)", 4)

ts = [threading.Thread(target=idle), threading.Thread(target=busy)]
[t.start() for t in ts]
[t.join() for t in ts]
for f in fails:
    print("FAIL", f)
sys.exit(1 if fails else 0)
PY
LOAD_PID=$!
read -r -t 10 -u 3 line || fail "the clients did not connect"
start_copy 2
echo go >&4
t0=$SECONDS
wait "$LOAD_PID"
st=$?
LOAD_PID=""
cat "$T/clients.log"
[[ $st == 0 ]] || fail "the clients saw the above"
wait_gone "$old" $((15 - (SECONDS - t0))) || fail "the old copy still runs $((SECONDS - t0)) s after the takeover"
say "PASS: idle connection ended gracefully, the busy one answered first, old copy gone after $((SECONDS - t0)) s (drain timeout $DRAIN s)"
