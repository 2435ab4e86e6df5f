#!/usr/bin/env bash
# run-fcntl-dup.sh BUILD_DIR - a server that serves from a copy of its
# listener made with fcntl(F_DUPFD_CLOEXEC) (CPython's socket.fromfd() and
# socket.dup()), unmodified, under `baton run`. The shim must retire that
# copy at the takeover as it retires a dup() copy. Two servers:
#  - fromfd: socket.fromfd(), the original closed, a blocking accept() and a
#    thread per connection;
#  - dup: sock.dup(), the original kept open but unused, a non-blocking copy
#    under selectors.EpollSelector.
# For each, a second `baton run` takes over while two clients connect in a
# bounded loop and the old copy holds one idle connection (so it drains and
# stays up). Once the old copy has retired its listeners, every new
# connection is answered by the new copy; no connection of the loop fails
# (reset, refused, or closed before the answer), and the old copy exits once
# its idle connection closes.
BUILD=${1:?usage: run-fcntl-dup.sh BUILD_DIR}
NAME=run-fcntl-dup
. "$(dirname "$0")/run-lib.sh"
# The old copy keeps an idle connection on purpose here: it must not be
# ended as idle keep-alive connections are (run-idle-close.sh).
export BATON_RUN_IDLE_CLOSE_MS=0

run_need /usr/bin/python3
run_tmp
cat >"$T/server.py" <<'PY'
import os, selectors, socket, sys, threading
mode, port, report = sys.argv[1], int(sys.argv[2]), sys.argv[3]
l = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", port))
l.listen(64)
if mode == "fromfd":
    s = socket.fromfd(l.fileno(), l.family, l.type)
    l.close()
else:
    s = l.dup()
with open(report, "a") as f:
    f.write("%d %d\n" % (os.getpid(), s.fileno()))
reply = b"pid %d\n" % os.getpid()

def serve_one(c):
    with c:
        while c.recv(4096):
            c.sendall(reply)

if mode == "fromfd":
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve_one, args=(c,), daemon=True).start()
s.setblocking(False)
sel = selectors.EpollSelector()
sel.register(s, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        if key.fileobj is s:
            try:
                c, _ = s.accept()
            except BlockingIOError:
                continue
            sel.register(c, selectors.EVENT_READ)
        elif key.fileobj.recv(4096):
            key.fileobj.sendall(reply)
        else:
            sel.unregister(key.fileobj)
            key.fileobj.close()
PY
# load.py PORT STOPFILE STARTED: two clients, each a connection at a time
# and a 2 ms pause, until STOPFILE exists. Prints how many answers came from
# each pid and every failure; exits 1 on any, or if it reached its bound
# (5,000 connections each, or 30 s) first.
cat >"$T/load.py" <<'PY'
import os, socket, sys, threading, time
port, stop, started = int(sys.argv[1]), sys.argv[2], sys.argv[3]
deadline = time.monotonic() + 30
lock = threading.Lock()
answers, errors = {}, []
bounded = False

def one():
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(b"hi\n")
        got = b""
        while not got.endswith(b"\n"):
            d = c.recv(100)
            if not d:
                raise ConnectionError("closed before the answer")
            got += d
    return got.decode().strip()

def client():
    global bounded
    for _ in range(5000):
        if os.path.exists(stop):
            return
        if time.monotonic() > deadline:
            break
        try:
            a = one()
        except OSError as e:
            with lock:
                errors.append(repr(e))
            continue
        with lock:
            answers[a] = answers.get(a, 0) + 1
        if not os.path.exists(started):
            open(started, "w").close()
        time.sleep(0.002)
    bounded = True

ts = [threading.Thread(target=client) for _ in range(2)]
for t in ts:
    t.start()
for t in ts:
    t.join()
for a, n in sorted(answers.items()):
    print("%s: %d" % (a, n))
for e in errors[:10]:
    print("error:", e)
print("%d errors" % len(errors))
if bounded:
    print("the loop reached its bound before it was stopped")
sys.exit(1 if errors or bounded else 0)
PY
# ask N: N connections one after another; prints "ANSWER COUNT" per answer.
ask() {
    /usr/bin/python3 - "$PORT" "$1" <<'PY'
import collections, socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
got = collections.Counter()
for _ in range(n):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(b"hi\n")
        got[c.recv(100).decode().strip()] += 1
for a, k in got.items():
    print(a.replace(" ", "_"), k)
PY
}
# Poll (at most 10 s) for a condition given as a command.
within() {
    local deadline=$((SECONDS + 10))
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.05
    done
}
retired() { grep -q "^baton-preload\[$1\]: listeners retired" "$T/shim.log" 2>/dev/null; }
gone() { ! alive "$1"; }

takeover() {
    local mode=$1 pid1 pid2 line held out answers st t0=$SECONDS
    DIR=$T/coord-$mode
    run_port
    : >"$T/report"
    rm -f "$T/stop" "$T/started"
    CMD=(/usr/bin/python3 "$T/server.py" "$mode" "$PORT" "$T/report")

    start_copy 1
    read -r pid1 _ <"$T/report"
    exec {held}<>/dev/tcp/127.0.0.1/"$PORT"
    echo hello >&"$held"
    read -r -t 5 line <&"$held"
    [[ $line == "pid $pid1" ]] || fail "$mode: held connection: '$line'"

    /usr/bin/python3 "$T/load.py" "$PORT" "$T/stop" "$T/started" >"$T/load-$mode.log" 2>&1 {held}>&- &
    LOAD_PID=$!
    within test -e "$T/started" || fail "$mode: the client loop got no answer"
    start_copy 2 {held}>&-
    read -r pid2 _ < <(tail -n 1 "$T/report")
    [[ $pid2 != "$pid1" ]] || fail "$mode: no second copy reported"
    # The old copy retires when it hears that the new one serves, a moment
    # after `baton wait` returns; from then on it must take nothing new.
    within retired "$pid1" || fail "$mode: the old copy $pid1 never retired its listeners"
    out=$(ask 50) || fail "$mode: a connection after the takeover failed"
    answers=$(echo "$out" | tr '\n' ' ')
    [[ $out == "pid_$pid2 50" ]] ||
        fail "$mode: after the takeover, 50 connections were answered by: $answers(old $pid1, new $pid2)"
    alive "$pid1" || fail "$mode: the old copy exited with a connection open"
    echo again >&"$held"
    read -r -t 5 line <&"$held"
    [[ $line == "pid $pid1" ]] || fail "$mode: the old copy does not serve its connection: '$line'"
    exec {held}>&-
    within gone "$pid1" || fail "$mode: the old copy did not exit when its last connection closed"
    touch "$T/stop"
    wait "$LOAD_PID"
    st=$?
    LOAD_PID=""
    cat "$T/load-$mode.log"
    [[ $st == 0 ]] || fail "$mode: the client loop failed (above)"
    grep -q "^pid $pid2: " "$T/load-$mode.log" || fail "$mode: the client loop never reached the new copy"
    say "PASS $mode ($((SECONDS - t0)) s): 50 of 50 to the new copy after the takeover, no failed connection"
}

for mode in ${MODES:-fromfd dup}; do
    takeover "$mode"
done
say "PASS: copies made with fcntl(F_DUPFD_CLOEXEC) are retired at the takeover"
