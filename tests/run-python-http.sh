#!/usr/bin/env bash
# run-python-http.sh BUILD_DIR - `python3 -m http.server` (socketserver,
# selectors' poll, a thread per connection), unmodified, under `baton run`:
# 10 restarts under baton-load with 0 errors, every old copy gone.
BUILD=${1:?usage: run-python-http.sh BUILD_DIR}
NAME=run-python-http
. "$(dirname "$0")/run-lib.sh"

run_need /usr/bin/python3
run_tmp
run_port
mkdir -p "$T/www"
echo "hello from python" >"$T/www/index.html"
CMD=(/usr/bin/python3 -m http.server --bind 127.0.0.1 --directory "$T/www" "$PORT")
# socketserver listens with a backlog of 5 (request_queue_size) and
# http.server speaks HTTP/1.0, so every request is a new connection: more
# than 5 clients connecting at once overflow the accept queue and some
# handshakes wait 1-3 s for a SYN-ACK retransmit, with or without baton
# (tests/compat/results.md). Stay below it.
CONNS=4
URLPATH=/index.html
run_restarts
