#!/usr/bin/env bash
# run-lighttpd.sh BUILD_DIR - lighttpd (epoll, non-blocking accept),
# unmodified, under `baton run`: 10 restarts under baton-load with 0 errors,
# every old copy gone. Keep-alive connections are bounded to 100 requests
# (lighttpd then answers "Connection: close"), so that an old copy drains.
BUILD=${1:?usage: run-lighttpd.sh BUILD_DIR}
NAME=run-lighttpd
. "$(dirname "$0")/run-lib.sh"

LIGHTTPD=$(command -v lighttpd || echo /usr/sbin/lighttpd)
run_need "$LIGHTTPD"
run_tmp
run_port
mkdir -p "$T/www"
echo "hello from lighttpd" >"$T/www/index.html"
cat >"$T/lighttpd.conf" <<CONF
server.document-root = "$T/www"
server.bind = "127.0.0.1"
server.port = $PORT
server.errorlog = "$T/lighttpd.err"
server.max-keep-alive-requests = 100
server.max-keep-alive-idle = 30
server.pid-file = ""
index-file.names = ( "index.html" )
mimetype.assign = ( ".html" => "text/html" )
CONF
"$LIGHTTPD" -tt -f "$T/lighttpd.conf" >/dev/null 2>&1 || skip "lighttpd does not accept the test config"
CMD=("$LIGHTTPD" -D -f "$T/lighttpd.conf")
URLPATH=/index.html
run_restarts
