#!/usr/bin/env bash
# run-semantics.sh BUILD_DIR - what the shim promises, against a small
# unmodified epoll server (python3, selectors.EpollSelector) that listens on
# [::]:PORT dual-stack (IPV6_V6ONLY=0, SO_REUSEADDR, non-blocking) and on a
# unix socket whose stale path it unlinks before bind and again on exit:
#  - the fds the successor's socket() returned (the program reports them)
#    are, after bind(), the very same open sockets (same inode) as the old
#    copy's listeners;
#  - IPv4 and IPv6 clients reach the successor, on TCP and on the unix path;
#  - the old copy, holding one idle connection, does not spin (its epoll
#    registrations for the listeners are gone) and serves that connection;
#  - it exits once that connection closes, and the unix path survives it;
#  - at its stop signal, getsockname() on its retired listeners still
#    answers their addresses ([::]:PORT and the unix path);
#  - `baton upgrade DIR` starts a third copy through the shim.
BUILD=${1:?usage: run-semantics.sh BUILD_DIR}
NAME=run-semantics
. "$(dirname "$0")/run-lib.sh"
# The old copy keeps an idle connection on purpose here: it must not be
# ended as idle keep-alive connections are (run-idle-close.sh).
export BATON_RUN_IDLE_CLOSE_MS=0

run_need /usr/bin/python3
run_tmp
run_port
cat >"$T/server.py" <<'PY'
import os, selectors, signal, socket, sys
port, upath, report = int(sys.argv[1]), sys.argv[2], sys.argv[3]
l6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
l6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
l6.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l6.setblocking(False)
l6.bind(("::", port))
l6.listen(64)
try:
    os.unlink(upath)
except FileNotFoundError:
    pass
lu = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
lu.bind(upath)
lu.listen(64)
lu.setblocking(False)
def stop(*_):
    with open(report + ".stopped", "a") as f:
        f.write("%d %s %d %s\n" % ((os.getpid(),) + l6.getsockname()[:2] + (lu.getsockname(),)))
    os.unlink(upath)
    os._exit(0)
signal.signal(signal.SIGTERM, stop)
with open(report, "a") as f:
    f.write("%d %d %d\n" % (os.getpid(), l6.fileno(), lu.fileno()))
sel = selectors.EpollSelector()
sel.register(l6, selectors.EVENT_READ)
sel.register(lu, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        s = key.fileobj
        if s in (l6, lu):
            try:
                c, _ = s.accept()
            except BlockingIOError:
                continue
            sel.register(c, selectors.EVENT_READ)
        else:
            data = s.recv(4096)
            if not data:
                sel.unregister(s)
                s.close()
            else:
                s.sendall(b"pid %d\n" % os.getpid())
PY
CMD=(/usr/bin/python3 "$T/server.py" "$PORT" "$T/http.sock" "$T/report")
export DRAIN=20

# ask FAMILY-OR-PATH: one request on a fresh connection; prints "pid N".
ask() {
    /usr/bin/python3 - "$1" "$PORT" <<'PY'
import socket, sys
where, port = sys.argv[1], int(sys.argv[2])
if where.startswith("/"):
    s = socket.socket(socket.AF_UNIX); s.connect(where)
else:
    s = socket.create_connection((where, port))
s.sendall(b"hi\n"); print(s.recv(100).decode().strip())
PY
}
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
inode() { stat -L -c %i "/proc/$1/fd/$2"; }

start_copy 1
read -r pid1 fd1 ufd1 < <(tail -n 1 "$T/report")
[[ $(ask 127.0.0.1) == "pid $pid1" ]] || fail "generation 1 does not answer"
ino1=$(inode "$pid1" "$fd1")
uino1=$(inode "$pid1" "$ufd1")

# One idle connection keeps the old copy draining.
exec {held}<>/dev/tcp/127.0.0.1/"$PORT"
echo hello >&"$held"
read -r -t 5 line <&"$held"
[[ $line == "pid $pid1" ]] || fail "held connection: '$line'"

start_copy 2 {held}>&- # the server must not inherit our end
read -r pid2 fd2 ufd2 < <(tail -n 1 "$T/report")
[[ $(inode "$pid2" "$fd2") == "$ino1" ]] || fail "TCP listener is not the same socket"
[[ $(inode "$pid2" "$ufd2") == "$uino1" ]] || fail "unix listener is not the same socket"
for where in 127.0.0.1 ::1 "$T/http.sock"; do
    [[ $(ask "$where") == "pid $pid2" ]] || fail "$where does not reach generation 2"
done
alive "$pid1" || fail "the old copy exited with a connection open"
c0=$(cpu "$pid1")
for ((i = 0; i < 20; i++)); do ask 127.0.0.1 >/dev/null; done
sleep 1
c1=$(cpu "$pid1")
((c1 - c0 <= 10)) || fail "the old copy used $((c1 - c0)) ticks in 1 s: busy loop"
echo again >&"$held"
read -r -t 5 line <&"$held"
[[ $line == "pid $pid1" ]] || fail "the old copy does not serve its connection: '$line'"
exec {held}>&-
for ((i = 0; i < 50; i++)); do
    alive "$pid1" || break
    sleep 0.1
done
alive "$pid1" && fail "the old copy did not exit when its last connection closed"
[[ -S $T/http.sock ]] || fail "the old copy's exit removed the unix socket path"
got=$(cat "$T/report.stopped" 2>/dev/null)
[[ $got == "$pid1 :: $PORT $T/http.sock" ]] ||
    fail "getsockname() on the retired listeners at the stop signal: '$got', not ':: $PORT $T/http.sock'"
[[ $(ask "$T/http.sock") == "pid $pid2" ]] || fail "unix path lost after the old copy exited"

"$BIN/baton" upgrade "$DIR" --timeout 20 >/dev/null || fail "baton upgrade failed"
read -r pid3 _ < <(tail -n 1 "$T/report")
SERVERS+=("$pid3")
[[ $(ask 127.0.0.1) == "pid $pid3" ]] || fail "baton upgrade: generation 3 does not answer"
for ((i = 0; i < 50; i++)); do
    alive "$pid2" || break
    sleep 0.1
done
alive "$pid2" && fail "generation 2 did not exit after baton upgrade"
say "PASS: same fds and sockets, dual-stack, unix path kept, no busy loop, drain exit, addresses kept, baton upgrade"
