#!/usr/bin/env bash
# run-nginx.sh BUILD_DIR - nginx with `master_process off; daemon off;`
# (epoll, accept4), unmodified, under `baton run`: 10 restarts under
# baton-load with 0 errors, every old copy gone. keepalive_requests bounds
# keep-alive connections so that an old copy drains.
BUILD=${1:?usage: run-nginx.sh BUILD_DIR}
NAME=run-nginx
. "$(dirname "$0")/run-lib.sh"

NGINX=$(command -v nginx || echo /usr/sbin/nginx)
run_need "$NGINX"
run_tmp
run_port
mkdir -p "$T/www" "$T/tmp"
echo "hello from nginx" >"$T/www/index.html"
cat >"$T/nginx.conf" <<CONF
master_process off;
daemon off;
worker_processes 1;
pid $T/nginx.pid;
error_log $T/nginx.err warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $T/tmp;
    proxy_temp_path $T/tmp;
    fastcgi_temp_path $T/tmp;
    uwsgi_temp_path $T/tmp;
    scgi_temp_path $T/tmp;
    keepalive_requests 100;
    server {
        listen 127.0.0.1:$PORT;
        root $T/www;
    }
}
CONF
"$NGINX" -t -p "$T" -c "$T/nginx.conf" >/dev/null 2>&1 || skip "nginx does not accept the test config"
CMD=("$NGINX" -p "$T" -c "$T/nginx.conf")
URLPATH=/index.html
run_restarts
