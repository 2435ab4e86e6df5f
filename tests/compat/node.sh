#!/usr/bin/env bash
# compat/node.sh BUILD_DIR - a node `http.createServer` keep-alive server
# (libuv: epoll, non-blocking accept4) under wrk. Keep-alive connections are
# ended after 100 requests (maxRequestsPerSocket: node then answers
# "Connection: close"), so that an old copy drains.
BUILD=${1:?usage: node.sh BUILD_DIR}
NAME=compat-node
. "$(dirname "$0")/../run-lib.sh"
. "$(dirname "$0")/lib.sh"
compat_need node
NODE=$(command -v node || echo /usr/bin/node)
SERVER="node $("$NODE" --version)"
MODE="http.createServer, keep-alive; wrk -c$CONNS"
NEEDS="server.maxRequestsPerSocket = 100 (unbounded by default: busy keep-alive connections hold an old copy to the drain timeout, 22 resets in a run)"
run_tmp
run_port
cat >"$T/server.js" <<'JS'
const http = require("http");
const server = http.createServer((req, res) => res.end("hello from node\n"));
server.keepAliveTimeout = 5000;
server.maxRequestsPerSocket = 100;
server.listen(Number(process.argv[2]), "127.0.0.1");
JS
CMD=("$NODE" "$T/server.js" "$PORT")
run_restarts
