#!/usr/bin/env bash
# run-redis.sh BUILD_DIR - redis-server (epoll; sets O_NONBLOCK on its
# listeners with fcntl() after listen()), unmodified, under `baton run`:
# generation 1 answers PING at once (an accept that took the listener for a
# blocking one would wait in the shim for the next connection while the
# connections it accepted wait for it), then 10 restarts under
# redis-benchmark runs back to back with 0 errors, every old copy gone.
BUILD=${1:?usage: run-redis.sh BUILD_DIR}
NAME=run-redis
. "$(dirname "$0")/run-lib.sh"

run_need /usr/bin/redis-server /usr/bin/redis-cli /usr/bin/redis-benchmark
run_tmp
run_port
CMD=(/usr/bin/redis-server --save '' --appendonly no --port "$PORT" --bind 127.0.0.1
    --daemonize no --dir "$T")

# Keep-alive clients that finish each run within a fraction of a second, so
# that an old copy drains; redis-benchmark exits 1 on any connection error.
run_load() {
    local end=$((SECONDS + $1)) k=0
    while ((SECONDS < end && k < 1000)); do
        /usr/bin/redis-benchmark -h 127.0.0.1 -p "$PORT" -c 10 -n 2000 -q -t ping,set,get >/dev/null ||
            { echo "redis-benchmark run $k failed"; return 1; }
        k=$((k + 1))
    done
    echo "$k redis-benchmark runs, 0 errors"
}

start_copy 1
got=$(timeout 5 /usr/bin/redis-cli -h 127.0.0.1 -p "$PORT" PING 2>&1)
[[ $got == PONG ]] || fail "generation 1 does not answer PING within 5 s: '$got'"
say "PASS: generation 1 answers PING"
# run_restarts starts generation 1 itself: stop this one first.
kill -TERM "${SERVERS[0]}"
for ((i = 0; i < 100; i++)); do alive "${SERVERS[0]}" || break; sleep 0.05; done
alive "${SERVERS[0]}" && fail "generation 1 did not stop on SIGTERM"
SERVERS=()
rm -rf "$DIR"
run_restarts
