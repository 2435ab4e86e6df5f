#!/bin/bash
# systemd-test.sh [BUILD] - the .debs and the units under a real systemd.
#
# Boots a minimal Debian root file system of its own (debootstrap, cached in
# BUILD/systemd-test/rootfs) with systemd-nspawn, never the machine's own
# root, and checks in it:
#   1. the units pass `systemd-analyze verify` where the packages are
#      installed;
#   2. installing version 1 starts baton-httpd@1, which serves;
#   3. installing version 2 while baton-load runs: no request fails,
#      baton-httpd@2 serves (generation 2), @1 and its process are gone;
#   4. SIGKILL of the serving process: systemd restarts it (Restart=), the
#      listener comes back from the fd store, and a client connecting in a
#      loop meanwhile sees no refused connect;
#   5. (for contrast, not a pass condition) the same crash without the fd
#      store, to show what the store saves;
#   6. an upgrade whose new instance fails to start (a drop-in breaks its
#      ExecStart=): dpkg fails loudly, the old instance serves on with no
#      failed request, and the broken instance is left disabled;
#   7. the single-unit flavour, socket-activated: the first connection
#      starts baton-httpd.service with systemd's socket (http0), and
#      `systemctl reload` under load takes over with no failed request while
#      systemd follows the new main pid;
#   8. the same with --probation: the new process SIGKILLed within it, the
#      old one serves again and is systemd's main process again (the unit
#      neither failed nor restarted: ExitType=cgroup), `systemctl reload`
#      fails, STATUS= says "rolled back", no connect is refused; then a
#      reload whose new process passes returns 0 and systemd follows it.
# Exit 0 pass, 1 fail, 77 skip (not root, or no way to boot the container).
set -uo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
build=$(mkdir -p "${1:-$src/build}" && cd "${1:-$src/build}" && pwd)
work=$build/systemd-test
rootfs=$work/rootfs
name=baton-test-$$
nspawn_pid=
log=$work/nspawn.log

say() { printf 'systemd-test: %s\n' "$*"; }
fail() {
    say "FAIL: $*"
    exit 1
}
skip() {
    say "skip: $*"
    exit 77
}

[ "$(id -u)" = 0 ] || skip "needs root (debootstrap, systemd-nspawn)"
[ -e /sys/fs/cgroup ] || skip "no cgroup file system"

need=
command -v debootstrap >/dev/null || need="$need debootstrap"
command -v systemd-nspawn >/dev/null || need="$need systemd-container"
command -v dpkg-buildflags >/dev/null || need="$need dpkg-dev"
command -v fakeroot >/dev/null || need="$need fakeroot"
command -v python3 >/dev/null || need="$need python3"
if [ -n "$need" ]; then
    say "installing$need"
    # Without recommends: systemd-container would add libnss-mymachines to
    # the machine's nsswitch.conf.
    (apt-get update -q && apt-get install -y -q --no-install-recommends $need) >"$work.apt.log" 2>&1 ||
        skip "apt-get install$need failed (see $work.apt.log)"
fi
mkdir -p "$work"

# --- root file system, built once and reused -------------------------------
suite=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
suite=${suite:-bookworm}
mirror=$(awk -v s="$suite" '/^URIs:/ {u = $2} /^Suites:/ {for (i = 2; i <= NF; i++) if ($i == s) {print u; exit}}' \
    /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
[ -n "$mirror" ] || mirror=$(awk -v s="$suite" '$1 == "deb" {for (i = 2; i < NF; i++) if ($(i + 1) == s && $i !~ /^\[/) {print $i; exit}}' \
    /etc/apt/sources.list 2>/dev/null | head -n 1)
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian
if [ ! -x "$rootfs/lib/systemd/systemd" ]; then
    say "debootstrap $suite from $mirror into $rootfs (once; about a minute)"
    rm -rf "$rootfs.tmp"
    timeout 900 debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus \
        "$suite" "$rootfs.tmp" "$mirror" >"$work/debootstrap.log" 2>&1 ||
        skip "debootstrap failed (see $work/debootstrap.log)"
    mv "$rootfs.tmp" "$rootfs"
fi

# --- two versions of the packages from this tree ---------------------------
version=$(sed -n 's/^#define BATON_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\).*/\2/p' \
    "$src/include/baton.h" | paste -sd.)
v2=$version+systemdtest2
say "building packages $version and $v2"
for v in v1 v2; do
    ver=$version
    [ $v = v2 ] && ver=$v2
    JOBS=${JOBS:-2} nice sh "$src/packaging/build-debs.sh" "$work/build-$v" "$ver" \
        >"$work/build-$v.log" 2>&1 || fail "building the $v packages (see $work/build-$v.log)"
done
rm -rf "$work/mnt"
mkdir -p "$work/mnt/v1" "$work/mnt/v2"
# The packages the service needs; the -dev ones would want libssl-dev and
# the session library is not used here.
for v in v1 v2; do
    cp "$work"/build-$v/deb/{libbaton0,baton,baton-httpd}_*.deb "$work/mnt/$v/"
done
cp "$work/build-v1/bin/baton-load" "$work/mnt/"

# --- boot -----------------------------------------------------------------
# nspawn leaves empty payload/supervisor cgroups behind: remember which
# existed, and remove the new ones at exit.
cgroups_now() {
    find /sys/fs/cgroup/systemd /sys/fs/cgroup/unified -maxdepth 1 -type d \
        \( -name payload -o -name supervisor \) 2>/dev/null | sort
}
cgroups_before=$(cgroups_now)

cleanup() {
    local rc=$?
    if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
        kill -TERM "$nspawn_pid" 2>/dev/null
        for _ in $(seq 100); do
            kill -0 "$nspawn_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$nspawn_pid" 2>/dev/null
        wait "$nspawn_pid" 2>/dev/null
    fi
    for d in $(comm -13 <(printf '%s\n' "$cgroups_before") <(cgroups_now)); do
        find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    exit $rc
}
trap cleanup EXIT
trap 'exit 1' INT TERM

say "booting $rootfs (volatile overlay, private network)"
systemd-nspawn -D "$rootfs" --volatile=overlay -M "$name" --register=no --keep-unit \
    --private-network --console=read-only --bind-ro="$work/mnt:/mnt/baton" -b >"$log" 2>&1 &
nspawn_pid=$!
leader=
for _ in $(seq 100); do
    leader=$(pgrep -P "$nspawn_pid" -x systemd | head -n 1)
    [ -n "$leader" ] && break
    kill -0 "$nspawn_pid" 2>/dev/null || break
    sleep 0.1
done
[ -n "$leader" ] || skip "systemd-nspawn did not boot (see $log: $(tail -n 3 "$log" | tr '\n' ' '))"

# Run a command inside the container.
ct() { nsenter -t "$leader" -a "$@"; }

# The first nsenter may come before PID 1 has set up its namespaces.
state=
for _ in $(seq 50); do
    state=$(ct timeout 60 systemctl is-system-running --wait 2>&1)
    case $state in running | degraded | *maintenance* | *stopping*) break ;; esac
    sleep 0.2
done
case $state in
running | degraded) say "container up ($state)" ;;
*) fail "container did not come up: '$state'" ;;
esac

# Wait up to $1 seconds for the command after it to succeed.
wait_for() {
    local t=$(($1 * 10))
    shift
    for _ in $(seq "$t"); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}
# The answer of the server inside: "pid P generation G", both zero-padded
# to a fixed length (man baton-httpd); answer PID GEN prints the expected one.
answer() { printf 'pid %07d generation %010d' "$1" "$2"; }
http_get() {
    ct timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/8080 &&
        printf "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" >&3 && cat <&3' |
        tail -n 1 | tr -d '\r'
}
main_pid() { ct systemctl show -p MainPID --value "$1"; }
# json FILE EXPR: a value from baton-load's --json output.
json() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }
load() { # load OUT ARGS...: baton-load inside, its JSON in OUT
    local out=$1
    shift
    ct timeout 60 /mnt/baton/baton-load --url http://127.0.0.1:8080/ --json "$@" >"$out" 2>"$out.err"
}

# --- 1, 2: install version 1 -----------------------------------------------
say "installing $version"
ct sh -c 'dpkg -i /mnt/baton/v1/*.deb' >"$work/install-v1.log" 2>&1 || {
    cat "$work/install-v1.log"
    fail "dpkg -i of $version failed"
}
for u in baton-httpd@.service baton-httpd.service baton-httpd.socket; do
    out=$(ct systemd-analyze verify --man=no "/lib/systemd/system/$u" 2>&1) || fail "verify $u: $out"
    [ -z "$out" ] || fail "systemd-analyze verify $u: $out"
done
say "ok: systemd-analyze verify is silent on the installed units"
ct systemctl is-active --quiet baton-httpd@1.service || fail "baton-httpd@1 is not active after install"
ct systemctl is-enabled --quiet baton-httpd@1.service || fail "baton-httpd@1 is not enabled"
pid1=$(main_pid baton-httpd@1.service)
body=$(http_get)
[ "$body" = "$(answer "$pid1" 1)" ] || fail "version 1 answers '$body', expected '$(answer "$pid1" 1)'"
say "ok: $version serves: $body"

# --- 3: upgrade to version 2 under load ------------------------------------
say "installing $v2 under load"
load "$work/load-upgrade.json" -c 20 -r 200 -d 8 &
load_pid=$!
sleep 2
ct sh -c 'dpkg -i /mnt/baton/v2/*.deb' >"$work/install-v2.log" 2>&1 || {
    cat "$work/install-v2.log"
    fail "dpkg -i of $v2 failed"
}
wait "$load_pid"
load_rc=$?
errors=$(json "$work/load-upgrade.json" 'd["errors"]["total"]') ||
    fail "no load result: $(cat "$work/load-upgrade.json.err")"
ok=$(json "$work/load-upgrade.json" 'd["requests_ok"]')
gens=$(json "$work/load-upgrade.json" '" ".join("gen%d:%d" % (g["generation"], g["requests"]) for g in d["generations"])')
[ "$errors" = 0 ] && [ "$load_rc" = 0 ] ||
    fail "load during the upgrade: $errors errors ($(json "$work/load-upgrade.json" 'd["errors"]'))"
say "ok: upgrade under load: $ok requests, 0 errors ($gens)"
[ "$(ct dpkg-query -W -f '${Version}' baton-httpd)" = "$v2" ] || fail "baton-httpd is not at $v2"
ct systemctl is-active --quiet baton-httpd@2.service || fail "baton-httpd@2 is not active"
ct systemctl is-enabled --quiet baton-httpd@2.service || fail "baton-httpd@2 is not enabled"
pid2=$(main_pid baton-httpd@2.service)
body=$(http_get)
[ "$body" = "$(answer "$pid2" 2)" ] || fail "after the upgrade: '$body', expected '$(answer "$pid2" 2)'"
wait_for 30 bash -c "! nsenter -t $leader -a systemctl is-active --quiet baton-httpd@1.service" ||
    fail "baton-httpd@1 still active 30 s after the upgrade"
! ct sh -c "kill -0 $pid1" 2>/dev/null || fail "the version 1 process $pid1 still runs"
! ct systemctl is-enabled --quiet baton-httpd@1.service || fail "baton-httpd@1 is still enabled"
status=$(ct baton status /run/baton-httpd)
grep -q "$pid2" <<<"$status" || fail "baton status does not name pid $pid2: $status"
say "ok: $v2 serves ($body), baton-httpd@1 and pid $pid1 are gone"

# --- 4: crash; the fd store keeps the listener -----------------------------
crash() { # crash OUT: SIGKILL the serving process while a client connects in a loop
    local out=$1 unit=baton-httpd@2.service pid new
    pid=$(main_pid $unit)
    # Fresh connections only (-c 0): a connection the killed process had
    # accepted is lost with it, whatever the store does; what the store
    # saves is every connect() from then on.
    load "$out" -c 0 -r 300 -d 5 &
    local lp=$!
    sleep 1.5
    ct sh -c "kill -KILL $pid"
    wait_for 20 bash -c "p=\$(nsenter -t $leader -a systemctl show -p MainPID --value $unit);
        [ \"\$p\" != 0 ] && [ \"\$p\" != $pid ] && nsenter -t $leader -a systemctl is-active --quiet $unit" ||
        fail "systemd did not restart $unit after SIGKILL"
    wait "$lp"
    new=$(main_pid $unit)
    say "$unit restarted: pid $pid -> $new"
}
ct journalctl -q -u baton-httpd@2.service | grep -q "fd store: 1 fds parked" ||
    fail "baton-httpd@2 did not report parking its listener in the fd store"
crash "$work/load-crash.json"
refused=$(json "$work/load-crash.json" 'd["errors"]["connect-refused"]') ||
    fail "no load result: $(cat "$work/load-crash.json.err")"
ok=$(json "$work/load-crash.json" 'd["requests_ok"]')
other=$(json "$work/load-crash.json" 'd["errors"]["total"] - d["errors"]["connect-refused"]')
ct journalctl -q -u baton-httpd@2.service | grep -q "took 1 fds from systemd" ||
    fail "the restarted process did not get its listener from the fd store"
[ "$refused" = 0 ] || fail "crash with the fd store: $refused connects refused"
say "ok: crash and restart: $ok requests served, 0 connects refused" \
    "($other lost with the killed process: $(json "$work/load-crash.json" 'd["errors"]'))"
body=$(http_get)
case $body in "$(printf 'pid %07d generation ' "$(main_pid baton-httpd@2.service)")"*) ;; *) fail "after the restart: '$body'" ;; esac

# --- 5: the same without the fd store, for contrast ------------------------
ct mkdir -p /run/systemd/system/baton-httpd@2.service.d
ct sh -c 'printf "[Service]\nEnvironment=BATON_FDSTORE=0\nFileDescriptorStoreMax=0\n" \
    >/run/systemd/system/baton-httpd@2.service.d/no-fdstore.conf'
ct systemctl daemon-reload
# A stop empties the store; a restart would keep it.
ct systemctl stop baton-httpd@2.service
ct systemctl start baton-httpd@2.service || fail "restart without the fd store"
crash "$work/load-nostore.json"
say "for contrast, the same crash without the fd store:" \
    "$(json "$work/load-nostore.json" 'd["errors"]["connect-refused"]') connects refused"

# --- 6: a new version that fails to start ----------------------------------
ct mkdir -p /run/systemd/system/baton-httpd@3.service.d
ct sh -c 'printf "[Service]\nExecStart=\nExecStart=/usr/bin/baton-httpd --dir /run/baton-httpd --listen bogus\n" \
    >/run/systemd/system/baton-httpd@3.service.d/broken.conf'
ct systemctl daemon-reload
pid=$(main_pid baton-httpd@2.service)
load "$work/load-failed.json" -c 20 -r 200 -d 4 &
load_pid=$!
sleep 1
if ct sh -c 'dpkg -i /mnt/baton/v2/*.deb' >"$work/install-broken.log" 2>&1; then
    fail "dpkg -i succeeded although baton-httpd@3 cannot start"
fi
wait "$load_pid"
grep -q "baton-httpd@3.service (the new version) failed to take over; baton-httpd@2.service serves on" \
    "$work/install-broken.log" || fail "no clear message from the failed install: $(tail -n 5 "$work/install-broken.log")"
[ "$(json "$work/load-failed.json" 'd["errors"]["total"]')" = 0 ] ||
    fail "requests failed during the failed upgrade: $(json "$work/load-failed.json" 'd["errors"]')"
[ "$(main_pid baton-httpd@2.service)" = "$pid" ] || fail "baton-httpd@2 changed its process"
[ "$(http_get)" = "$(answer "$pid" 1)" ] || fail "the old instance does not serve: '$(http_get)'"
! ct systemctl is-enabled --quiet baton-httpd@3.service || fail "the broken baton-httpd@3 is enabled"
ct systemctl is-enabled --quiet baton-httpd@2.service || fail "baton-httpd@2 is no longer enabled"
say "ok: failed upgrade: dpkg failed loudly, baton-httpd@2 (pid $pid) served on with 0 errors"
say "  dpkg said: $(grep '^baton-httpd:' "$work/install-broken.log")"

# --- 7: baton-httpd.socket + baton-httpd.service, upgraded by reload --------
ct systemctl stop 'baton-httpd@*.service'
ct systemctl start baton-httpd.socket || fail "start baton-httpd.socket"
body=$(http_get)
pid=$(main_pid baton-httpd.service)
[ "$body" = "$(answer "$pid" 1)" ] || fail "socket activation: '$body', expected '$(answer "$pid" 1)'"
ct journalctl -q -u baton-httpd.service | grep -q "took 1 fds from systemd" ||
    fail "baton-httpd.service did not take its listener from the socket unit"
load "$work/load-reload.json" -c 20 -r 200 -d 4 &
load_pid=$!
sleep 1
ct systemctl reload baton-httpd.service || fail "systemctl reload baton-httpd.service"
wait "$load_pid"
[ "$(json "$work/load-reload.json" 'd["errors"]["total"]')" = 0 ] ||
    fail "requests failed during the reload: $(json "$work/load-reload.json" 'd["errors"]')"
new=$(main_pid baton-httpd.service)
[ "$new" != "$pid" ] && [ "$(http_get)" = "$(answer "$new" 2)" ] ||
    fail "after reload: MainPID $new, answer '$(http_get)'"
wait_for 30 bash -c "! nsenter -t $leader -a sh -c 'kill -0 $pid'" || fail "old process $pid still runs"
say "ok: socket activation, then reload under load: 0 errors, systemd follows pid $pid -> $new"

# --- 8: a probation: the successor killed within it, then one that passes --
# Where a user sets it (EnvironmentFile= overrides the unit's Environment=).
ct sed -i 's/^BATON_HTTPD_OPTS=.*/BATON_HTTPD_OPTS="--probation 4000"/' /etc/default/baton-httpd
ct grep -q '^BATON_HTTPD_OPTS="--probation 4000"$' /etc/default/baton-httpd ||
    fail "cannot set BATON_HTTPD_OPTS in /etc/default/baton-httpd"
ct systemctl restart baton-httpd.service || fail "restart baton-httpd.service with a probation"
pid=$(main_pid baton-httpd.service)
gen=$(ct baton status /run/baton-httpd --json | sed -n 's/.*"generation":\([0-9]*\).*/\1/p')
load "$work/load-rollback.json" -c 10 -r 100 -d 6 &
load_pid=$!
sleep 1
ct systemctl reload baton-httpd.service >"$work/reload-rollback.log" 2>&1 &
reload_pid=$!
owner() { ct baton status /run/baton-httpd --json 2>/dev/null | sed -n 's/.*"pid":\([0-9]*\).*/\1/p'; }
wait_for 10 bash -c "p=\$(nsenter -t $leader -a baton status /run/baton-httpd --json 2>/dev/null |
    sed -n 's/.*\"pid\":\([0-9]*\).*/\1/p'); [ -n \"\$p\" ] && [ \"\$p\" != $pid ]" ||
    fail "no successor took over from pid $pid"
succ=$(owner)
# The successor is the main process now (its MAINPID=); with ExitType=cgroup
# its death does not end the unit while the old process lives.
wait_for 5 bash -c "[ \"\$(nsenter -t $leader -a systemctl show -p MainPID --value baton-httpd.service)\" = $succ ]" ||
    fail "systemd's main pid is $(main_pid baton-httpd.service), not the successor $succ"
ct sh -c "kill -KILL $succ"
if wait "$reload_pid"; then
    fail "systemctl reload succeeded although the new process died on probation"
fi
wait "$load_pid"
wait_for 10 bash -c "[ \"\$(nsenter -t $leader -a baton status /run/baton-httpd --json 2>/dev/null |
    sed -n 's/.*\"pid\":\([0-9]*\).*/\1/p')\" = $pid ]" || fail "pid $pid did not take the service back"
ct systemctl is-active --quiet baton-httpd.service || fail "baton-httpd.service is not active after the rollback"
wait_for 5 bash -c "[ \"\$(nsenter -t $leader -a systemctl show -p MainPID --value baton-httpd.service)\" = $pid ]" ||
    fail "systemd's main pid is $(main_pid baton-httpd.service), not $pid, after the rollback"
ct systemctl show -p StatusText --value baton-httpd.service | grep -q "rolled back" ||
    fail "STATUS= does not say the rollback: $(ct systemctl show -p StatusText --value baton-httpd.service)"
[ "$(http_get)" = "$(answer "$pid" "$gen")" ] || fail "after the rollback: '$(http_get)'"
[ "$(json "$work/load-rollback.json" 'd["errors"]["connect-refused"]')" = 0 ] ||
    fail "connects refused during the rollback: $(json "$work/load-rollback.json" 'd["errors"]')"
grep -q "rolled back" "$work/reload-rollback.log" || ct journalctl -q -u baton-httpd.service |
    grep -q "rolled back" || fail "neither reload nor the journal says the rollback"
say "ok: probation: the new process (pid $succ) SIGKILLed within it; pid $pid serves again" \
    "and is systemd's main pid again (no restart), reload failed, 0 connects refused" \
    "($(json "$work/load-rollback.json" 'd["errors"]["total"]') lost with the killed process)"
ct systemctl reload baton-httpd.service || fail "reload with a probation that passes"
new=$(main_pid baton-httpd.service)
[ "$new" != "$pid" ] && [ "$(http_get)" = "$(answer "$new" $((gen + 1)))" ] ||
    fail "after a passed probation: MainPID $new, answer '$(http_get)'"
say "ok: probation passed: reload returned 0 and systemd follows pid $pid -> $new"

say "PASS"
