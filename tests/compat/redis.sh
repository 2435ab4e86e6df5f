#!/usr/bin/env bash
# compat/redis.sh BUILD_DIR - redis-server in the foreground, no persistence
# (ae: epoll; it makes its listener non-blocking with fcntl after listen()),
# under back-to-back redis-benchmark runs of SETs and GETs on 20 keep-alive
# connections each: clients that reconnect now and then, since redis never
# ends a busy connection itself.
BUILD=${1:?usage: redis.sh BUILD_DIR}
NAME=compat-redis
. "$(dirname "$0")/../run-lib.sh"
. "$(dirname "$0")/lib.sh"
compat_need redis
SERVER="redis $(/usr/bin/redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')"
LOAD=redis
MODE="--save '' --appendonly no --daemonize no; redis-benchmark -c$CONNS -k 1, back-to-back runs of ${RB_N:-5000} SET + GET"
NEEDS="clients that reconnect (a pool that keeps its connections holds an old copy to the drain timeout: redis has no per-connection request limit)"
run_tmp
run_port
CMD=(/usr/bin/redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no
    --daemonize no --dir "$T" --logfile "$T/redis.log")
run_restarts
