#!/usr/bin/env bash
# run-apache.sh BUILD_DIR - Apache httpd with the event MPM and its own
# configuration (-DFOREGROUND): a root parent that binds and forks children
# that drop to User www-data, and a PidFile it checks at start-up ("httpd
# (pid N) already running"). Unmodified, under `baton run --pidfile` as
# root, stopped with WINCH (graceful-stop): 10 restarts under baton-load
# with 0 errors, every old copy gone, and at each takeover the old copy
# stops accepting (its children, running as www-data, retire the
# listener): once it has, no request is served by its children (the access
# log says which process served each request). Afterwards the pid file
# names the serving copy.
BUILD=${1:?usage: run-apache.sh BUILD_DIR}
NAME=run-apache
. "$(dirname "$0")/run-lib.sh"

APACHE=/usr/sbin/apache2
MODS=/usr/lib/apache2/modules
run_need "$APACHE" /usr/bin/python3
[[ -e $MODS/mod_mpm_event.so ]] || skip "no event MPM in $MODS"
[[ $(id -u) == 0 ]] || skip "Apache's User needs root"
id www-data >/dev/null 2>&1 || skip "no www-data user"
run_tmp
run_port
chmod 711 "$T" # the children (www-data) read the document root
mkdir -p "$T/www" "$T/run" "$T/logs"
echo "hello from apache" >"$T/www/index.html"
chmod 755 "$T/www"
cat >"$T/apache.conf" <<CONF
ServerRoot "$T"
ServerName localhost
Listen 127.0.0.1:$PORT
LoadModule mpm_event_module $MODS/mod_mpm_event.so
LoadModule authz_core_module $MODS/mod_authz_core.so
User www-data
Group www-data
PidFile $T/run/apache.pid
DefaultRuntimeDir $T/run
ErrorLog $T/logs/error.log
LogLevel warn
LogFormat "%P %U%q" pids
CustomLog $T/logs/access.log pids
DocumentRoot "$T/www"
<Directory "$T/www">
    Require all granted
</Directory>
StartServers 2
ThreadsPerChild 25
MaxRequestWorkers 100
KeepAlive On
MaxKeepAliveRequests 100
KeepAliveTimeout 5
CONF
"$APACHE" -t -f "$T/apache.conf" >/dev/null 2>&1 || skip "apache2 does not accept the test config"
CMD=("$APACHE" -f "$T/apache.conf" -DFOREGROUND)
RUN_OPTS=(--pidfile "$T/run/apache.pid")
STOP_SIGNAL=WINCH
URLPATH=/index.html
run_restarts

# One more takeover, watched.
retired() { grep -q "^baton-preload\[$1\]: listeners retired" "$T/shim.log" 2>/dev/null; }
old=${SERVERS[-1]}
children=$(pgrep -P "$old" | tr '\n' ' ')
[[ -n $children ]] || fail "the serving copy $old has no children"
start_copy $((RESTARTS + 2))
for ((i = 0; i < 200; i++)); do
    retired "$old" && break
    sleep 0.05
done
retired "$old" || fail "the old copy $old never retired its listener"
/usr/bin/python3 - "$PORT" <<'PY' || fail "requests after the takeover failed"
import http.client, sys
for i in range(50):
    c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=5)
    c.request("GET", "/index.html?after=%d" % i)
    r = c.getresponse()
    assert r.status == 200 and r.read() == b"hello from apache\n", r.status
    c.close()
PY
for ((i = 0; i < 100; i++)); do
    [[ $(grep -c "?after=" "$T/logs/access.log") == 50 ]] && break
    sleep 0.05
done
served=$(grep "?after=" "$T/logs/access.log" | awk '{print $1}' | sort | uniq -c | tr -s ' \n' ' ')
for pid in $children; do
    grep -q "^$pid .*?after=" "$T/logs/access.log" &&
        fail "after the takeover the old copy's child $pid served requests (by pid: $served)"
done
say "PASS: after the takeover no child of the old copy served a request (by pid: $served)"
for ((i = 0; i < 100; i++)); do
    [[ $(cat "$T/run/apache.pid" 2>/dev/null) == "${SERVERS[-1]}" ]] && break
    sleep 0.05
done
[[ $(cat "$T/run/apache.pid" 2>/dev/null) == "${SERVERS[-1]}" ]] ||
    fail "the pid file says '$(cat "$T/run/apache.pid" 2>/dev/null)', not the serving copy ${SERVERS[-1]}"
say "PASS: the pid file names the serving copy"
