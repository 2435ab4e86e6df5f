#!/usr/bin/env bash
# run-not-serving.sh BUILD_DIR - a copy that does not serve must not look
# like one that did: it exits non-zero (75, or the program's own non-zero
# status) and says why on standard error, and the copy that serves serves
# on. A small python server serves as generation 1 (with a takeover timeout
# of 1 s); then each of these runs as the next copy, in the foreground:
#  - exit0:  binds, listens, and exits 0 before it waits for work;
#  - exit3:  the same with status 3;
#  - daemon: forks and exits 0; the child binds (a daemonizing server);
#  - child:  forks a child that binds, and waits for it (a server whose
#            listeners are made in a forked process);
#  - slow:   binds and listens, but waits for work only after 3 s: the
#            running copy has given up on it by then.
BUILD=${1:?usage: run-not-serving.sh BUILD_DIR}
NAME=run-not-serving
. "$(dirname "$0")/run-lib.sh"

run_need /usr/bin/python3
run_tmp
run_port
cat >"$T/server.py" <<'PY'
import os, socket, sys, threading, time
mode, port = sys.argv[1], int(sys.argv[2])

def listener():
    l = socket.socket()
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(("127.0.0.1", port))
    l.listen(64)
    return l

def serve(l):
    while True:
        c, _ = l.accept()
        c.sendall(b"pid %d\n" % os.getpid())
        c.close()

if mode == "serve":
    serve(listener())
elif mode in ("exit0", "exit3"):
    listener()
    sys.exit(int(mode[-1]))
elif mode == "daemon":
    if os.fork():
        sys.exit(0)
    os.setsid()
    serve(listener())
elif mode == "child":
    if os.fork() == 0:
        try:
            listener()
        except OSError as e:
            print("child:", e, file=sys.stderr)
        time.sleep(60)
        os._exit(0)
    os.wait()
elif mode == "slow":
    l = listener()
    time.sleep(3)
    serve(l)
PY
CMD=(/usr/bin/python3 "$T/server.py" serve "$PORT")
export BATON_RUN_TAKEOVER_TIMEOUT_MS=1000
start_copy 1
unset BATON_RUN_TAKEOVER_TIMEOUT_MS
gen1=${SERVERS[0]}

ask() {
    /usr/bin/python3 -c 'import socket, sys
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
print(c.recv(100).decode().strip())' "$PORT"
}

# attempt MODE STATUS PATTERN: the next copy, run in the foreground (at
# most 30 s), exits with STATUS and says PATTERN (an extended regex) on
# standard error; generation 1 still serves.
attempt() {
    local mode=$1 want=$2 pattern=$3 st
    timeout 30 "$BIN/baton" run --dir "$DIR" -- /usr/bin/python3 "$T/server.py" "$mode" "$PORT" \
        >"$T/$mode.out" 2>"$T/$mode.err"
    st=$?
    cat "$T/$mode.err"
    [[ $st == "$want" ]] || fail "$mode: exit status $st, not $want"
    # Not anchored: the program's own stderr may interleave on the line.
    grep -Eq "baton run: python3\[[0-9]+\]: .*$pattern" "$T/$mode.err" ||
        fail "$mode: standard error does not say '$pattern'"
    alive "$gen1" || fail "$mode: generation 1 is gone"
    [[ $(ask) == "pid $gen1" ]] || fail "$mode: generation 1 does not answer"
    [[ $("$BIN/baton" status "$DIR" --json | sed -n 's/.*"pid":\([0-9]*\).*/\1/p') == "$gen1" ]] ||
        fail "$mode: generation 1 is not the owner any more"
    [[ -z $(pgrep -f "server.py $mode $PORT") ]] || fail "$mode: processes left behind"
    say "PASS $mode: exit $st, says why, generation 1 serves on"
}

attempt exit0 75 "exited with status 0 before it served; the running copy serves on"
attempt exit3 3 "exited with status 3 before it served"
# Which it sees first depends on whether the child binds before the parent
# has exited: either says to run the program in the foreground.
attempt daemon 75 "(before it served, leaving processes behind|which it forked, binds).*foreground"
attempt child 75 "pid [0-9]+, which it forked, binds tcp://127.0.0.1:$PORT: only listeners"
attempt slow 75 "could not take over from generation 1, which serves on"
say "PASS: every copy that did not serve exited non-zero and said why"
