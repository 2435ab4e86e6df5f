#!/usr/bin/env bash
# compat/python-http.sh BUILD_DIR - `python3 -m http.server` (tests/run-python-http.sh:
# ThreadingHTTPServer, poll, a blocking accept, HTTP/1.0) under wrk with 4
# connections: the server listens with a backlog of 5, and more clients
# connecting at once overflow it (SYN-ACK retransmits, 1-3 s) without baton too.
BUILD=${1:?usage: python-http.sh BUILD_DIR}
export COMPAT_CASE=python-http LOAD=wrk
export MODE="ThreadingHTTPServer, HTTP/1.0 (a connection per request); wrk -c4" COMPAT_CONNS=4
export NEEDS="at most 5 clients connecting at once: socketserver listens with a backlog of 5 (request_queue_size, no flag); at wrk -c20 handshakes overflow it and 2-4 requests time out per 10 s, with or without baton"
NAME=compat-$COMPAT_CASE
. "$(dirname "$0")/../run-lib.sh"
. "$(dirname "$0")/lib.sh"
compat_need python-http
SERVER="python3 $(/usr/bin/python3 -c 'import platform; print(platform.python_version())')"
export SERVER
export RUN_LIB_HOOK=$COMPAT_DIR/lib.sh
exec bash "$COMPAT_DIR/../run-python-http.sh" "$BUILD"
