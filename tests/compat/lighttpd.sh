#!/usr/bin/env bash
# compat/lighttpd.sh BUILD_DIR - lighttpd -D (tests/run-lighttpd.sh: epoll,
# non-blocking accept, its config) under wrk.
BUILD=${1:?usage: lighttpd.sh BUILD_DIR}
export COMPAT_CASE=lighttpd LOAD=wrk URLPATH=/index.html
export MODE="lighttpd -D, keep-alive; wrk -c20"
export NEEDS="server.max-keep-alive-requests = 100 (so that an old copy drains)"
NAME=compat-$COMPAT_CASE
. "$(dirname "$0")/../run-lib.sh"
. "$(dirname "$0")/lib.sh"
compat_need lighttpd
SERVER="$(/usr/sbin/lighttpd -v 2>/dev/null | head -n 1 | cut -d" " -f1 | tr / " ")"
export SERVER
export RUN_LIB_HOOK=$COMPAT_DIR/lib.sh
exec bash "$COMPAT_DIR/../run-lighttpd.sh" "$BUILD"
