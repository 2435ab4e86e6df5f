#!/usr/bin/env bash
# compat/nginx.sh BUILD_DIR - nginx with `master_process off; daemon off;`
# (tests/run-nginx.sh: epoll, accept4, its config) under wrk.
BUILD=${1:?usage: nginx.sh BUILD_DIR}
export COMPAT_CASE=nginx LOAD=wrk URLPATH=/index.html
export MODE="master_process off, daemon off, keep-alive; wrk -c20"
export NEEDS="master_process off; daemon off; keepalive_requests 100 (so that an old copy drains)"
NAME=compat-$COMPAT_CASE
. "$(dirname "$0")/../run-lib.sh"
. "$(dirname "$0")/lib.sh"
compat_need nginx
SERVER="$(/usr/sbin/nginx -v 2>&1 | sed "s/.*nginx\//nginx /")"
export SERVER
export RUN_LIB_HOOK=$COMPAT_DIR/lib.sh
exec bash "$COMPAT_DIR/../run-nginx.sh" "$BUILD"
