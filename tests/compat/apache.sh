#!/usr/bin/env bash
# compat/apache.sh BUILD_DIR - Apache httpd with the event MPM, in the
# foreground (-DFOREGROUND) with a config of its own: it binds as root and
# serves from children that run as www-data (User/Group), each a listener
# thread on epoll; keep-alive ends after 100 requests
# (MaxKeepAliveRequests). Under wrk.
BUILD=${1:?usage: apache.sh BUILD_DIR}
NAME=compat-apache
. "$(dirname "$0")/../run-lib.sh"
. "$(dirname "$0")/lib.sh"
compat_need apache
[[ $(id -u) == 0 ]] || skip "User www-data needs root"
APACHE=/usr/sbin/apache2
MODS=/usr/lib/apache2/modules
SERVER="apache $("$APACHE" -v | sed -n 's|^Server version: Apache/\([^ ]*\).*|\1|p')"
MODE="event MPM, -DFOREGROUND, User www-data, keep-alive; wrk -c$CONNS"
NEEDS="-DFOREGROUND; MaxKeepAliveRequests 100 (the default; with 0 busy keep-alive connections hold an old copy to the drain timeout: 3 resets in a run); baton run --pidfile naming its PidFile: httpd exits at start while the pid in it lives, and removes it at exit"
run_tmp
run_port
chmod 755 "$T"
mkdir -p "$T/www" "$T/run"
echo "hello from apache" >"$T/www/index.html"
chmod -R a+rX "$T/www"
cat >"$T/httpd.conf" <<CONF
ServerRoot "$T"
ServerName localhost
Listen 127.0.0.1:$PORT
PidFile $T/run/apache2.pid
DefaultRuntimeDir $T/run
ErrorLog $T/apache.err
LogLevel warn
User www-data
Group www-data
LoadModule mpm_event_module $MODS/mod_mpm_event.so
LoadModule authz_core_module $MODS/mod_authz_core.so
LoadModule dir_module $MODS/mod_dir.so
LoadModule mime_module $MODS/mod_mime.so
TypesConfig /etc/mime.types
DocumentRoot "$T/www"
<Directory "$T/www">
    Require all granted
</Directory>
DirectoryIndex index.html
KeepAlive On
MaxKeepAliveRequests 100
KeepAliveTimeout 5
StartServers 2
MinSpareThreads 25
MaxSpareThreads 75
ThreadsPerChild 25
MaxRequestWorkers 150
CONF
"$APACHE" -t -f "$T/httpd.conf" >"$T/configtest.err" 2>&1 || fail "apache2 does not accept the test config: $(tail -n 1 "$T/configtest.err")"
CMD=("$APACHE" -DFOREGROUND -f "$T/httpd.conf")
# httpd refuses to start while the pid in its PidFile lives, and removes
# the file at exit: baton run keeps it naming the serving copy.
RUN_OPTS=(--pidfile "$T/run/apache2.pid")
URLPATH=/index.html
run_restarts
