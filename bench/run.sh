#!/usr/bin/env bash
# bench/run.sh BUILD_DIR — baton and its peers under load while they upgrade.
# (`sh bench/run.sh` works too: the line below re-executes it with bash.)
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
#
# Every candidate serves GET / on 127.0.0.1 and is upgraded the same number of
# times, about once a second, under the same load (wrk keep-alive, then ab with
# a fresh connection per request), with a probe beside the load that
# timestamps its own requests. bench/analyze.py turns the raw data into
# bench/results/{results.md,results.csv,results.png}. See bench/README.md.
#
# Environment (defaults in brackets):
#   BENCH_RUNS [3]        runs of everything; the tables show medians
#   BENCH_SECONDS [20]    seconds of load per phase
#   BENCH_UPGRADES [10]   upgrades per phase
#   BENCH_CANDIDATES      space-separated subset of: $ALL_CANDIDATES
#   BENCH_LOADS ["wrk ab noload"]  noload = the probe alone, 8 s at most
#                         (trigger → new process without load)
#   BENCH_CONTROL [default]  control runs (no upgrades): "default" = a wrk
#                         control for every candidate and an ab control for
#                         baton-second; "all"; "baton" (baton-second only);
#                         "none"
#   BENCH_OUT [bench/results]  where the results go
#   BENCH_NO_INSTALL      set to skip installing missing Debian packages
set -uo pipefail
export LC_ALL=C

BUILD=${1:-build}
HERE=${BENCH_HERE:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
ROOT=$(cd "$HERE/.." && pwd)
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
BIN=$BUILD/bin
# Not BUILD/bench: CMake owns that directory (bench/CMakeLists.txt).
TOOLS=$BUILD/bench-peers
ALL_CANDIDATES="baton-second baton-upgrade haproxy haproxy-icr nginx tableflip reuseport-m0 reuseport-m1 stop-start lighttpd-baton-run"

BENCH_RUNS=${BENCH_RUNS:-3}
BENCH_SECONDS=${BENCH_SECONDS:-20}
BENCH_UPGRADES=${BENCH_UPGRADES:-10}
BENCH_CANDIDATES=${BENCH_CANDIDATES:-$ALL_CANDIDATES}
BENCH_LOADS=${BENCH_LOADS:-wrk ab noload}
BENCH_CONTROL=${BENCH_CONTROL:-default}
BENCH_OUT=${BENCH_OUT:-$HERE/results}
WRK_CONNS=200
AB_CONC=1000
AB_REQUESTS=200000

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- set-up ----
# Runs before the harness re-executes itself under the subreaper.
install_deps() {
    local need=() p
    command -v wrk >/dev/null || need+=(wrk)
    command -v ab >/dev/null || need+=(apache2-utils)
    command -v haproxy >/dev/null || need+=(haproxy)
    command -v nginx >/dev/null || need+=(nginx)
    command -v go >/dev/null || need+=(golang-go)
    [[ -d /usr/share/gocode/src/github.com/cloudflare/tableflip ]] || need+=(golang-github-cloudflare-tableflip-dev)
    command -v gnuplot >/dev/null || need+=(gnuplot-nox)
    command -v python3 >/dev/null || need+=(python3)
    ((${#need[@]})) || return 0
    if [[ -n ${BENCH_NO_INSTALL:-} || $(id -u) != 0 ]]; then
        log "missing packages: ${need[*]} (not installing; the candidates that need them are skipped)"
        return 0
    fi
    log "installing: ${need[*]}"
    # scripts/apt-install.sh leaves none of their services (nginx, haproxy)
    # running or enabled at boot; the benchmark starts its own copies.
    local avail=()
    for p in "${need[@]}"; do
        if apt-cache show "$p" >/dev/null 2>&1; then avail+=("$p"); else log "no Debian package $p"; fi
    done
    ((${#avail[@]})) || return 0
    sh "$HERE/../scripts/apt-install.sh" "${avail[@]}" || log "apt-install failed; the candidates that need what is missing are skipped"
    return 0
}

build_tools() {
    mkdir -p "$TOOLS" || die "cannot create $TOOLS"
    local cc=${CC:-cc} f
    for f in probe reaper; do
        if [[ ! -x $TOOLS/$f || $HERE/$f.c -nt $TOOLS/$f ]]; then
            "$cc" -O2 -std=gnu11 -Wall -Wextra -Wno-unused-parameter -o "$TOOLS/$f" "$HERE/$f.c" ||
                die "cannot build $f"
        fi
    done
    if command -v go >/dev/null && [[ -d /usr/share/gocode/src/github.com/cloudflare/tableflip ]]; then
        if [[ ! -x $TOOLS/goserver || $HERE/peers/goserver.go -nt $TOOLS/goserver ]]; then
            mkdir -p "$TOOLS/gocache"
            (cd "$HERE/peers" && GOPATH=/usr/share/gocode GO111MODULE=off GOFLAGS= GOCACHE="$TOOLS/gocache" \
                go build -o "$TOOLS/goserver" goserver.go) || log "cannot build the Go peer; its candidates are skipped"
        fi
    fi
}

if [[ -z ${BENCH_UNDER_REAPER:-} ]]; then
    install_deps
    build_tools
    # Run a copy: bash reads a script as it goes, so editing bench/run.sh
    # during a run would otherwise change the run.
    cp "${BASH_SOURCE[0]}" "$TOOLS/run.sh" || die "cannot copy run.sh"
    export BENCH_UNDER_REAPER=1 BENCH_HERE=$HERE
    exec "$TOOLS/reaper" bash "$TOOLS/run.sh" "$@"
fi

# ------------------------------------------------------------- utilities ----
now_us() { local t=$EPOCHREALTIME; echo $((10#${t/./})); }

# sleep_until US: sleeps until the realtime clock reads US microseconds.
sleep_until() {
    local d=$(($1 - $(now_us)))
    ((d > 0)) && sleep "$(printf '%d.%06d' $((d / 1000000)) $((d % 1000000)))"
    return 0
}

# wait_until SECONDS CMD...: runs CMD every 10 ms until it succeeds; fails
# after SECONDS.
wait_until() {
    local limit=$(($(now_us) + $1 * 1000000))
    shift
    until "$@"; do
        (($(now_us) > limit)) && return 1
        sleep 0.01
    done
}

# A process counts as alive until it has exited; a zombie has exited.
alive() {
    local st
    [[ -r /proc/$1/stat ]] || return 1
    st=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) || return 1
    [[ $st != Z && $st != X ]]
}
children() { cat /proc/"$1"/task/*/children 2>/dev/null; }
has_child() { [[ -n $(children "$1") ]]; }
file_has() { [[ -f $2 ]] && grep -q "$1" "$2"; }

# Every server ends up a child of this shell (it is a child subreaper), so
# stopping "everything we started" is: signal each child by its pid until
# none is left.
stop_children() {
    local pids tries=0 sig=TERM p
    while :; do
        pids=$(children $$ | tr ' ' '\n' | grep -v '^$' || true)
        # Leave out the command substitutions' own subshells.
        local live=()
        for p in $pids; do alive "$p" && live+=("$p"); done
        ((${#live[@]})) || return 0
        ((tries == 30)) && sig=KILL
        ((tries > 40)) && { log "could not stop: ${live[*]}"; return 1; }
        kill -"$sig" "${live[@]}" 2>/dev/null
        sleep 0.1
        tries=$((tries + 1))
    done
}

pick_port() {
    local p i
    for i in {1..200}; do
        p=$((20000 + RANDOM % 12000))
        [[ -z $(ss -Htan "sport = :$p" 2>/dev/null) ]] && { echo "$p"; return 0; }
    done
    return 1
}

SYSCTL_MIGRATE=/proc/sys/net/ipv4/tcp_migrate_req
MIGRATE_ORIG=
set_migrate() {
    [[ -w $SYSCTL_MIGRATE ]] || return 1
    [[ -n $MIGRATE_ORIG ]] || MIGRATE_ORIG=$(cat "$SYSCTL_MIGRATE")
    echo "$1" >"$SYSCTL_MIGRATE" 2>/dev/null && [[ $(cat "$SYSCTL_MIGRATE") == "$1" ]]
}
restore_migrate() {
    [[ -n $MIGRATE_ORIG ]] && echo "$MIGRATE_ORIG" >"$SYSCTL_MIGRATE" 2>/dev/null
    MIGRATE_ORIG=
    return 0
}

cleanup() {
    trap - EXIT INT TERM
    stop_children
    restore_migrate
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT TERM

# ------------------------------------------------------------ candidates ----
# Each candidate has NAME_available (prints why not and fails when it cannot
# run here), NAME_start (serves on $PORT, state in $PDIR) and NAME_upgrade
# (one upgrade; returns once the successor is in place or has failed).
# Stopping is generic (stop_children); NAME_stop, if defined, runs first.
# Function names use _ where the candidate's name has -.

# --- 1, 2: baton-httpd, successor started as a second copy / `baton upgrade`
baton_httpd_available() {
    [[ -x $BIN/baton-httpd ]] || { echo "baton-httpd not built"; return 1; }
}
baton_spawn() {
    BATON_N=$((BATON_N + 1))
    local logf=$PDIR/httpd.$BATON_N.log
    "$BIN/baton-httpd" --dir "$PDIR/coord" --listen "tcp://127.0.0.1:$PORT" >"$logf" 2>&1 &
    wait_until 10 file_has '^ready' "$logf"
}
baton_start() {
    BATON_N=0
    baton_spawn
}
baton_second_available() { baton_httpd_available; }
baton_second_start() { baton_start; }
baton_second_upgrade() { baton_spawn; }
baton_upgrade_available() {
    baton_httpd_available || return 1
    [[ -x $BIN/baton ]] || { echo "baton tool not built"; return 1; }
}
baton_upgrade_start() { baton_start; }
baton_upgrade_upgrade() {
    "$BIN/baton" upgrade "$PDIR/coord" --timeout 5 >>"$PDIR/upgrade.log" 2>&1
}

# --- 3: HAProxy master-worker, seamless reload (USR2; listeners passed)
haproxy_available() { command -v haproxy >/dev/null || { echo "haproxy not installed"; return 1; }; }
haproxy_conf() {
    # Set up as HAProxy's documentation recommends for hitless reloads:
    # master-worker mode, a stats socket that exposes the listeners (in
    # master-worker mode the master passes them itself with -x sockpair@),
    # hard-stop-after to bound old workers. One thread, like the other
    # single-process candidates; maxconn fits the 20,000 open-files limit.
    cat >"$PDIR/haproxy.cfg" <<EOF
global
    master-worker
    nbthread 1
    maxconn 8000
    stats socket $PDIR/admin.sock mode 600 level admin expose-fd listeners
    hard-stop-after 30s
    log stderr format short local0 err

defaults
    mode http
    log global
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
    timeout http-request 10s
$1

frontend fe
    bind 127.0.0.1:$PORT
    http-request return status 200 content-type text/plain string "ok\n" hdr X-Pid "%pid"
EOF
}
haproxy_start_common() {
    haproxy_conf "$1"
    haproxy -W -S "$PDIR/master.sock" -f "$PDIR/haproxy.cfg" -p "$PDIR/haproxy.pid" >"$PDIR/haproxy.log" 2>&1 &
    HAPROXY_MASTER=$!
    wait_until 10 haproxy_loaded_more 0
}
haproxy_loaded() {
    local n
    n=$(grep -c 'Loading success' "$PDIR/haproxy.log" 2>/dev/null)
    echo "${n:-0}"
}
haproxy_loaded_more() { (($(haproxy_loaded) > $1)); }
haproxy_reload() {
    local before
    before=$(haproxy_loaded)
    kill -USR2 "$HAPROXY_MASTER" || return 1
    # Done once the master says the new worker is loaded. A USR2 that
    # reaches the master just after that is lost (seen here, under load):
    # send it again if nothing happens within 5 s, counted in upgrade.log,
    # and give the master 0.2 s before the next one.
    if ! wait_until 5 haproxy_loaded_more "$before"; then
        echo "haproxy: USR2 lost, sent again"
        kill -USR2 "$HAPROXY_MASTER" || return 1
        wait_until 10 haproxy_loaded_more "$before" || return 1
    fi
    sleep 0.2
}
haproxy_start() { haproxy_start_common ""; }
haproxy_upgrade() { haproxy_reload; }
haproxy_icr_available() { haproxy_available; }
haproxy_icr_start() { haproxy_start_common "    option idle-close-on-response"; }
haproxy_icr_upgrade() { haproxy_reload; }

# --- 4: nginx binary upgrade: USR2, then WINCH and QUIT to the old master
nginx_available() { command -v nginx >/dev/null || { echo "nginx not installed"; return 1; }; }
nginx_start() {
    mkdir -p "$PDIR/nginx"
    # One worker, like the other single-process candidates; the listen
    # backlog raised to what the others get (somaxconn) so that ab's 1,000
    # concurrent connects are not dropped at the default of 511.
    cat >"$PDIR/nginx/nginx.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile 10000;
pid $PDIR/nginx/nginx.pid;
error_log $PDIR/nginx/error.log warn;
events { worker_connections 8000; }
http {
    access_log off;
    client_body_temp_path $PDIR/nginx/body;
    proxy_temp_path $PDIR/nginx/proxy;
    fastcgi_temp_path $PDIR/nginx/fastcgi;
    uwsgi_temp_path $PDIR/nginx/uwsgi;
    scgi_temp_path $PDIR/nginx/scgi;
    server {
        listen 127.0.0.1:$PORT backlog=4096;
        location / {
            default_type text/plain;
            add_header X-Pid \$pid always;
            return 200 "ok\n";
        }
    }
}
EOF
    # The binary upgrade re-executes argv[0] without a PATH search.
    "$(command -v nginx)" -p "$PDIR/nginx" -e "$PDIR/nginx/error.log" -c "$PDIR/nginx/nginx.conf" || return 1
    wait_until 10 nginx_has_worker
}
nginx_master() { cat "$PDIR/nginx/nginx.pid" 2>/dev/null; }
nginx_has_worker() { local m; m=$(nginx_master) && [[ -n $m ]] && has_child "$m"; }
nginx_new_master_up() {
    local m
    m=$(nginx_master) && [[ -n $m && $m != "$1" ]] && has_child "$m"
}
nginx_upgrade() {
    local old
    old=$(nginx_master) || return 1
    kill -USR2 "$old" || return 1
    # The new master renames the pid file to nginx.pid.oldbin and writes its
    # own; once it has a worker, the old workers and master may go.
    wait_until 10 nginx_new_master_up "$old" || return 1
    kill -WINCH "$old" && kill -QUIT "$old"
}

# --- 5, 6, 7: the Go server: tableflip, SO_REUSEPORT hand-off, stop + start
go_available() { [[ -x $TOOLS/goserver ]] || { echo "Go peer not built (golang-go, tableflip)"; return 1; }; }
go_spawn() { # MODE
    GO_N=$((GO_N + 1))
    local logf=$PDIR/go.$GO_N.log
    GOMAXPROCS=1 "$TOOLS/goserver" -mode "$1" -listen "127.0.0.1:$PORT" -pidfile "$PDIR/go.$GO_N.pid" >"$logf" 2>&1 &
    GO_PID=$!
    wait_until 10 file_has '^ready' "$logf"
}
tableflip_available() { go_available; }
tableflip_start() {
    GO_N=0
    GOMAXPROCS=1 "$TOOLS/goserver" -mode tableflip -listen "127.0.0.1:$PORT" -pidfile "$PDIR/tableflip.pid" \
        >"$PDIR/tableflip.log" 2>&1 &
    wait_until 10 file_has '^ready' "$PDIR/tableflip.log"
}
tableflip_failures() {
    local n
    n=$(grep -c 'upgrade failed' "$PDIR/tableflip.log" 2>/dev/null)
    echo "${n:-0}"
}
# Succeeds once the pid file names a new process or tableflip has refused.
tableflip_settled() {
    [[ $(cat "$PDIR/tableflip.pid" 2>/dev/null) != "$1" ]] || (($(tableflip_failures) > $2))
}
tableflip_upgrade() {
    local old fails
    old=$(cat "$PDIR/tableflip.pid") || return 1
    fails=$(tableflip_failures)
    kill -HUP "$old" || return 1
    # tableflip writes the pid file once the new process is ready. It
    # refuses an upgrade while the previous old process still drains
    # ("parent hasn't exited"): that counts as a failed upgrade.
    wait_until 10 tableflip_settled "$old" "$fails" || return 1
    (($(tableflip_failures) == fails))
}
reuseport_start() {
    GO_N=0
    go_spawn reuseport
}
reuseport_upgrade() {
    local old=$GO_PID
    go_spawn reuseport || return 1
    sleep 0.2
    kill -TERM "$old"
}
reuseport_m0_available() {
    go_available || return 1
    [[ -w $SYSCTL_MIGRATE ]] || { echo "net.ipv4.tcp_migrate_req cannot be set here"; return 1; }
}
reuseport_m0_start() { set_migrate 0 || return 1; reuseport_start; }
reuseport_m0_upgrade() { reuseport_upgrade; }
reuseport_m0_stop() { restore_migrate; }
reuseport_m1_available() { reuseport_m0_available; }
reuseport_m1_start() { set_migrate 1 || return 1; reuseport_start; }
reuseport_m1_upgrade() { reuseport_upgrade; }
reuseport_m1_stop() { restore_migrate; }
stop_start_available() { go_available; }
stop_start_start() {
    GO_N=0
    go_spawn plain
}
stop_start_upgrade() {
    local old=$GO_PID
    kill -TERM "$old" || return 1
    wait_until 15 eval '! alive '"$old" || return 1
    go_spawn plain
}

# --- 8: lighttpd under `baton run`, unmodified: an upgrade is running the
# same command again; the new copy is in place once `baton wait` sees its
# generation. Keep-alive connections stay with the old copy until they end
# (bounded by server.max-keep-alive-requests), as baton run documents.
lighttpd_baton_run_available() {
    command -v lighttpd >/dev/null || [[ -x /usr/sbin/lighttpd ]] ||
        { echo "lighttpd not installed"; return 1; }
    [[ -x $BIN/baton && -f $BIN/../lib/libbaton-preload.so ]] ||
        { echo "baton run not built"; return 1; }
}
lighttpd_conf() {
    mkdir -p "$PDIR/www"
    echo ok >"$PDIR/www/index.html"
    cat >"$PDIR/lighttpd.conf" <<EOF
server.document-root = "$PDIR/www"
server.bind = "127.0.0.1"
server.port = $PORT
server.event-handler = "linux-sysepoll"
server.max-keep-alive-requests = 100
server.max-fds = 8192
server.errorlog = "$PDIR/lighttpd.err"
index-file.names = ("index.html")
EOF
}
lighttpd_spawn() {
    LIGHTTPD_N=$((LIGHTTPD_N + 1))
    BATON_RUN_LOG=$PDIR/shim.log "$BIN/baton" run --dir "$PDIR/coord" --drain-timeout 10 -- \
        "$(command -v lighttpd || echo /usr/sbin/lighttpd)" -D -f "$PDIR/lighttpd.conf" \
        >>"$PDIR/run.log" 2>&1 &
    "$BIN/baton" wait "$PDIR/coord" --generation "$LIGHTTPD_N" --timeout 10 >/dev/null
}
lighttpd_baton_run_start() {
    LIGHTTPD_N=0
    lighttpd_conf
    lighttpd_spawn
}
lighttpd_baton_run_upgrade() { lighttpd_spawn; }

# ---------------------------------------------------------------- phases ----
# run_phase RUN CANDIDATE LOAD UPGRADES: one server, one load, UPGRADES
# upgrades spread over the middle of the load.
run_phase() {
    local run=$1 cand=$2 load=$3 nup=$4 fn=${2//-/_}
    PDIR=$RAW/run$run/$cand/$load
    mkdir -p "$PDIR"
    echo "$nup" >"$PDIR/upgrades.planned"
    PORT=$(pick_port) || { echo "no free port" >"$PDIR/failed"; return 1; }
    log "run $run: $cand, $load, $nup upgrades, port $PORT"
    if ! "${fn}_start"; then
        echo "start failed" >"$PDIR/failed"
        log "  $cand did not start"
        phase_stop "$fn"
        return 1
    fi
    if ! "$TOOLS/probe" --port "$PORT" --wait-ready 10; then
        echo "never answered" >"$PDIR/failed"
        phase_stop "$fn"
        return 1
    fi
    # The no-load phase only times the switch-over: 8 s is plenty.
    local secs=$BENCH_SECONDS
    [[ $load == noload ]] && ((secs > 8)) && secs=8
    "$TOOLS/probe" --port "$PORT" --out "$PDIR/probe.tsv" --seconds $((secs + 120)) \
        --fresh 1 --keepalive 4 --gap-ms 2 --ka-gap-ms 10 --timeout-ms 5000 &
    local probe_pid=$!
    sleep 1
    local t0 load_pid
    t0=$(now_us)
    echo "$t0" >"$PDIR/load.start"
    case $load in
    wrk | wrk-control)
        WRK_OUT=$PDIR/wrk.out timeout -k 5 $((secs + 30)) \
            wrk -t2 -c"$WRK_CONNS" -d"${secs}s" --latency -s "$HERE/wrk-series.lua" \
            "http://127.0.0.1:$PORT/" >"$PDIR/wrk.txt" 2>&1 &
        load_pid=$!
        ;;
    ab | ab-control)
        # -t bounds the time; -n after it restores the request count that
        # -t would otherwise set to 50,000. -r: do not exit on receive
        # errors (ab still exits after 10 failed connects).
        timeout -k 5 $((secs + 30)) ab -r -q -c "$AB_CONC" -t "$secs" -n "$AB_REQUESTS" -g "$PDIR/ab.tsv" \
            "http://127.0.0.1:$PORT/" >"$PDIR/ab.txt" 2>"$PDIR/ab.err" &
        load_pid=$!
        ;;
    noload)
        sleep "$secs" &
        load_pid=$!
        ;;
    esac
    # Upgrades: the first at a quarter of the run, then every second, or
    # closer together when the run is too short for that.
    local first=$((secs * 250000)) step=1000000 i t1 t2 rc
    ((nup > 0 && secs * 600000 / nup < step)) && step=$((secs * 600000 / nup))
    for ((i = 0; i < nup; i++)); do
        sleep_until $((t0 + first + i * step))
        t1=$(now_us)
        "${fn}_upgrade" >>"$PDIR/upgrade.log" 2>&1
        rc=$?
        t2=$(now_us)
        printf '%s\t%s\t%s\n' "$t1" "$t2" "$rc" >>"$PDIR/upgrades.tsv"
        ((rc == 0)) || log "  upgrade $((i + 1)) failed (rc $rc)"
    done
    wait "$load_pid"
    echo $? >"$PDIR/load.rc"
    echo "$(now_us)" >"$PDIR/load.end"
    sleep 1
    kill -TERM "$probe_pid" 2>/dev/null
    wait "$probe_pid"
    phase_stop "$fn"
    return 0
}

phase_stop() {
    declare -F "${1}_stop" >/dev/null && "${1}_stop"
    stop_children
}

# ------------------------------------------------------------------ main ----
for cand in $BENCH_CANDIDATES; do
    declare -F "${cand//-/_}_available" >/dev/null || die "unknown candidate $cand (known: $ALL_CANDIDATES)"
done
RAW=$TOOLS/raw
rm -rf "$RAW"
mkdir -p "$RAW" "$BENCH_OUT" || die "cannot create output directories"
# The load tools and the analysis are not optional: without them every
# phase would run without load and be reported as a failure of the server.
missing=
for load in $BENCH_LOADS; do
    case $load in
    wrk) command -v wrk >/dev/null || missing+=" wrk (Debian: wrk)" ;;
    ab) command -v ab >/dev/null || missing+=" ab (Debian: apache2-utils)" ;;
    noload) ;;
    *) die "unknown load $load (known: wrk ab noload)" ;;
    esac
done
command -v python3 >/dev/null || missing+=" python3"
[[ -z $missing ]] || die "missing:$missing; install them (as root, make bench installs them itself) or set BENCH_LOADS"
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

{
    echo "runs $BENCH_RUNS"
    echo "seconds $BENCH_SECONDS"
    echo "upgrades $BENCH_UPGRADES"
    echo "wrk_conns $WRK_CONNS"
    echo "ab_conc $AB_CONC"
    echo "ab_requests $AB_REQUESTS"
    echo "nproc $(nproc)"
    echo "kernel $(uname -r)"
    echo "date $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}' | sed 's,^debian/,,')"
    echo "ab $(ab -V 2>&1 | sed -n 's/.*Version \([^ ]*\).*/\1/p' | head -1)"
    echo "haproxy $(haproxy -v 2>/dev/null | head -1 | awk '{print $3}')"
    echo "nginx $(nginx -v 2>&1 | sed 's/.*nginx\///')"
    echo "go $(go version 2>/dev/null | awk '{print $3}')"
    echo "tableflip $(dpkg-query -W -f='${Version}' golang-github-cloudflare-tableflip-dev 2>/dev/null)"
    echo "migrate_req_orig $(cat $SYSCTL_MIGRATE 2>/dev/null)"
} >"$RAW/meta.txt"


for cand in $BENCH_CANDIDATES; do
    fn=${cand//-/_}
    if ! why=$("${fn}_available"); then
        log "skipping $cand: $why"
        echo "$cand	$why" >>"$RAW/skipped.tsv"
    fi
done

# phases RUN: prints "CANDIDATE LOAD UPGRADES" for each phase of a run.
phases() {
    local cand fn load control
    for cand in $BENCH_CANDIDATES; do
        fn=${cand//-/_}
        "${fn}_available" >/dev/null || continue
        for load in $BENCH_LOADS; do
            control=
            case $BENCH_CONTROL in
            all) control=1 ;;
            baton) [[ $cand == baton-second ]] && control=1 ;;
            default) [[ $load == wrk || $cand == baton-second ]] && control=1 ;;
            esac
            [[ -n $control && $load != noload ]] && echo "$cand $load-control 0"
            echo "$cand $load $BENCH_UPGRADES"
        done
    done
}

# Progress: phase K of N, and an estimate of what remains from the phases
# done so far (before the first, from the load time plus about 5 s of
# start, probe and stop per phase).
mapfile -t PHASES < <(phases)
total=$((${#PHASES[@]} * BENCH_RUNS))
est=0
for ph in "${PHASES[@]}"; do
    secs=$BENCH_SECONDS
    [[ $ph == *" noload "* ]] && ((secs > 8)) && secs=8
    est=$((est + secs + 5))
done
log "$total phases ($BENCH_RUNS runs of ${#PHASES[@]}); about $((est * BENCH_RUNS / 60)) min"
bench_t0=$(now_us)
k=0
for ((run = 1; run <= BENCH_RUNS; run++)); do
    for ph in "${PHASES[@]}"; do
        read -r cand load nup <<<"$ph"
        if ((k > 0)); then
            el=$((($(now_us) - bench_t0) / 1000000))
            log "phase $((k + 1))/$total; $((el / 60)) min so far, about $((el * (total - k) / k / 60 + 1)) min to go"
        fi
        k=$((k + 1))
        run_phase "$run" "$cand" "$load" "$nup"
    done
done

# HOOK: bench/takeover.c (built by bench/CMakeLists.txt as
# baton-bench-takeover) times a successor's start-to-READY on its own; its
# report goes beside the peers' results. BENCH_TAKEOVER=0 skips it.
if [[ ${BENCH_TAKEOVER:-1} != 0 && -x $BIN/baton-bench-takeover ]]; then
    log "running baton-bench-takeover"
    # Its first line names a temporary directory of this machine: leave it out.
    # The tracked copy is replaced only by a complete new report.
    if timeout -k 5 300 "$BIN/baton-bench-takeover" >"$RAW/takeover.all" 2>&1; then
        grep -v 'coordination dir in' "$RAW/takeover.all" >"$RAW/takeover.txt"
        cp "$RAW/takeover.txt" "$BENCH_OUT/takeover.txt"
    else
        log "baton-bench-takeover failed (see $RAW/takeover.all); $BENCH_OUT/takeover.txt is left as it was"
    fi
fi
# bench/steer.c: what UDP flow steering costs a datagram (baseline in the
# same run: the socket read by the process that answers).
if [[ ${BENCH_TAKEOVER:-1} != 0 && -x $BIN/baton-bench-steer ]]; then
    log "running baton-bench-steer"
    if timeout -k 5 300 "$BIN/baton-bench-steer" >"$RAW/steer.txt" 2>&1; then
        cp "$RAW/steer.txt" "$BENCH_OUT/steer.txt"
    else
        log "baton-bench-steer failed (see $RAW/steer.txt); $BENCH_OUT/steer.txt is left as it was"
    fi
fi
# bench/run-udp.c: the same for an unmodified server under `baton run`
# (baseline in the same run: the server alone).
if [[ ${BENCH_TAKEOVER:-1} != 0 && -x $BIN/baton-bench-run-udp ]]; then
    log "running baton-bench-run-udp"
    if timeout -k 5 300 "$BIN/baton-bench-run-udp" >"$RAW/run-udp.txt" 2>"$RAW/run-udp.err"; then
        cp "$RAW/run-udp.txt" "$BENCH_OUT/run-udp.txt"
    else
        log "baton-bench-run-udp failed (see $RAW/run-udp.err); $BENCH_OUT/run-udp.txt is left as it was"
    fi
fi
# bench/pause.c: the pause a client sees on an open connection through 20
# upgrades, and trigger to the new process answering, beside a bare exec.
if [[ ${BENCH_TAKEOVER:-1} != 0 && -x $BIN/baton-bench-pause ]]; then
    log "running baton-bench-pause"
    if timeout -k 5 300 "$BIN/baton-bench-pause" >"$RAW/pause.all" 2>&1; then
        grep -v 'coordination dir in' "$RAW/pause.all" >"$RAW/pause.txt"
        cp "$RAW/pause.txt" "$BENCH_OUT/pause.txt"
    else
        log "baton-bench-pause failed (see $RAW/pause.all); $BENCH_OUT/pause.txt is left as it was"
    fi
    log "running baton-bench-pause --standby"
    if timeout -k 5 300 "$BIN/baton-bench-pause" --standby >"$RAW/pause-standby.all" 2>&1; then
        grep -v 'coordination dir in' "$RAW/pause-standby.all" >"$RAW/pause-standby.txt"
        cp "$RAW/pause-standby.txt" "$BENCH_OUT/pause-standby.txt"
    else
        log "baton-bench-pause --standby failed (see $RAW/pause-standby.all)"
    fi
fi

log "analysing"
python3 "$HERE/analyze.py" "$RAW" "$BENCH_OUT" || die "analysis failed"
log "results in $BENCH_OUT"
