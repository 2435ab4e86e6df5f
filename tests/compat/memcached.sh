#!/usr/bin/env bash
# compat/memcached.sh BUILD_DIR - memcached started as root with `-u memcache`
# (libevent: epoll; it drops to the memcache user at start, before it
# binds, as a packaged memcached does), under a pooled set/get client
# (memcached-load.py) whose pool recycles each connection after 200
# requests: what memcached needs (it ends no busy connection itself, so a
# pool that keeps them for ever is cut at the drain timeout; with
# COMPAT_MC_RECYCLE=0 the case shows that).
BUILD=${1:?usage: memcached.sh BUILD_DIR}
NAME=compat-memcached
. "$(dirname "$0")/../run-lib.sh"
. "$(dirname "$0")/lib.sh"
compat_need memcached
[[ $(id -u) == 0 ]] || skip "memcached -u needs root"
id memcache >/dev/null 2>&1 || skip "no memcache user (the memcached package makes it)"
SERVER="memcached $(/usr/bin/memcached -V | cut -d' ' -f2)"
LOAD=memcached
CONNS=${COMPAT_CONNS:-10}
MC_RECYCLE=${COMPAT_MC_RECYCLE:-200}
MODE="-u memcache (it drops to that user at start, before it binds); a pool of $CONNS connections, each recycled after $MC_RECYCLE requests, set/get"
NEEDS="clients that close pooled connections well within the drain timeout: memcached ends no busy connection itself (with -u root, a kept pool got 10-20 resets at the drain timeout; recycled every 200 requests, 0)"
run_tmp
run_port
CMD=(/usr/bin/memcached -u memcache -l 127.0.0.1 -p "$PORT" -U 0 -m 64 -c 1024)
run_restarts
