#!/usr/bin/env bash
# run-prefork.sh BUILD_DIR - a pre-forking server (tests/run-prefork-server.py:
# the master binds, 3 forked workers block in accept()), unmodified, under
# `baton run`: 10 restarts under baton-load with 0 errors, every old copy
# (master and workers) gone; an idle keep-alive connection is kept; a worker
# that died inside accept() does not hold up its copy's drain.
BUILD=${1:?usage: run-prefork.sh BUILD_DIR}
NAME=run-prefork
. "$(dirname "$0")/run-lib.sh"

run_need /usr/bin/python3
run_tmp
run_port
CMD=(/usr/bin/python3 "$(cd "$(dirname "$0")" && pwd)/run-prefork-server.py" "$PORT" 3)
run_restarts

# An idle keep-alive connection stays open: the shim's 100 ms receive
# timeout on the listener (its herd guard) must not reach the connections a
# worker accepts, or the worker's blocking recv() fails and drops them.
/usr/bin/python3 - "$PORT" <<'PY' || fail "an idle keep-alive connection was dropped"
import socket, sys, time
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
for i in range(2):
    if i:
        time.sleep(0.5)
    c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    got = b""
    while b"pre-forked worker\n" not in got:
        d = c.recv(4096)
        if not d:
            sys.exit("request %d: eof" % (i + 1))
        got += d
PY
say "PASS: an idle keep-alive connection outlives the herd guard"

# A worker killed while it waits in accept() (its master does not reap it
# before it stops) leaves its accept call counted in the shim; the copy must
# still drain as soon as its connections are gone, not at the drain timeout.
master=${SERVERS[-1]}
worker=$(pgrep -P "$master" | head -n 1)
[[ -n $worker ]] || fail "no worker of $master"
kill -KILL "$worker"
start_copy $((RESTARTS + 2))
deadline=$((SECONDS + 8))
while alive "$master"; do
    ((SECONDS < deadline)) || fail "copy $master still running 8 s after its successor served (drain timeout ${DRAIN:-20} s)"
    sleep 0.2
done
say "PASS: a worker that died in accept() does not hold up the drain"

# No worker of an old copy is left either (they were the masters' children,
# so they would be orphans of ours now, or of init).
left=$(pgrep -f "run-prefork-server.py $PORT" | wc -l)
[[ $left == 4 ]] || fail "expected the last master and its 3 workers, found $left processes"
