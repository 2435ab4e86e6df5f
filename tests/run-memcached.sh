#!/usr/bin/env bash
# run-memcached.sh BUILD_DIR - memcached -u memcache (binds as root, then
# drops to the memcache user before its event loop), unmodified, under
# `baton run` as root: 10 restarts under a bounded load of set/get clients
# (20 requests per connection) with 0 errors, every old copy gone; and at
# each takeover the old copy stops accepting: once it has retired its
# listener, every new connection is answered by the new copy ("stats"
# gives the pid). Whatever the shim needs privileges for must be done
# before the program drops them.
BUILD=${1:?usage: run-memcached.sh BUILD_DIR}
NAME=run-memcached
. "$(dirname "$0")/run-lib.sh"

run_need /usr/bin/memcached /usr/bin/python3
[[ $(id -u) == 0 ]] || skip "memcached -u needs root"
id memcache >/dev/null 2>&1 || skip "no memcache user"
run_tmp
run_port
CMD=(/usr/bin/memcached -u memcache -l 127.0.0.1 -p "$PORT" -U 0 -c 1024 -t 2)

cat >"$T/load.py" <<'PY'
# load.py PORT SECONDS [CONNS]: CONNS clients, each a connection at a time
# with 20 set/get pairs on it, until SECONDS have passed (and at most 5,000
# connections each). Every failure is counted; exit 1 on any.
import socket, sys, threading, time
port, secs = int(sys.argv[1]), float(sys.argv[2])
conns = int(sys.argv[3]) if len(sys.argv) > 3 else 8
end = time.monotonic() + secs
lock = threading.Lock()
ok, errors = 0, []

def expect(c, want):
    got = b""
    while not got.endswith(want[-2:]) or len(got) < len(want):
        d = c.recv(4096)
        if not d:
            raise ConnectionError("closed after %r" % got)
        got += d
    if got != want:
        raise ValueError("got %r, not %r" % (got, want))

def client(n):
    global ok
    for i in range(5000):
        if time.monotonic() > end:
            return
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                for k in range(20):
                    key = b"k%d-%d" % (n, k)
                    c.sendall(b"set %s 0 0 5\r\nhello\r\n" % key)
                    expect(c, b"STORED\r\n")
                    c.sendall(b"get %s\r\n" % key)
                    expect(c, b"VALUE %s 0 5\r\nhello\r\nEND\r\n" % key)
                    with lock:
                        ok += 1
        except (OSError, ValueError) as e:
            with lock:
                errors.append(repr(e))

ts = [threading.Thread(target=client, args=(n,)) for n in range(conns)]
for t in ts:
    t.start()
for t in ts:
    t.join()
for e in errors[:10]:
    print("error:", e)
print("%d set/get pairs ok, %d errors" % (ok, len(errors)))
sys.exit(1 if errors else 0)
PY

run_load() { /usr/bin/python3 "$T/load.py" "$PORT" "$1"; }

# pids N: the pid that answers "stats" on each of N fresh connections.
pids() {
    /usr/bin/python3 - "$PORT" "$1" <<'PY'
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
for _ in range(n):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(b"stats\r\n")
        got = b""
        while not got.endswith(b"END\r\n"):
            d = c.recv(65536)
            if not d:
                break
            got += d
        pid = [l.split()[2] for l in got.split(b"\r\n") if l.startswith(b"STAT pid ")]
        print(pid[0].decode() if pid else "none")
PY
}
retired() { grep -q "^baton-preload\[$1\]: listeners retired" "$T/shim.log" 2>/dev/null; }

run_restarts

# One more takeover, watched: once the old copy has retired its listener,
# it answers no new connection.
old=${SERVERS[-1]}
start_copy $((RESTARTS + 2))
new=${SERVERS[-1]}
for ((i = 0; i < 200; i++)); do
    retired "$old" && break
    sleep 0.05
done
retired "$old" || fail "the old copy $old never retired its listener"
got=$(pids 50 | sort | uniq -c | tr -s ' \n' ' ')
[[ $got == " 50 $new " ]] || fail "after the takeover, 50 connections were answered by: $got(old $old, new $new)"
say "PASS: after the takeover the old copy accepts nothing: 50 of 50 to the new copy"
