#!/bin/bash
# check-fresh.sh [BUILD] - the first hour of a new user, on a fresh Debian 12.
#
# Builds a Debian 12 minbase root file system of its own (debootstrap, then
# `apt-get install gcc make cmake git` in it; cached in BUILD/check-fresh/base,
# and every run starts from a pristine copy of that), clones the committed
# HEAD of this repository in it and, in a chroot, does what the README tells
# a new user to do:
#   demo         make demo: at most 60 lines (the build's output goes to a
#                log), ending in 0 errors
#   install      make install
#   quickstart   build the README's quick start (scripts/readme-quickstart.sh)
#                against the installed library with pkg-config
#   takeover     run it, start a second copy: the first exits, `baton status`
#                names the second, which answers
#   deb          make deb
#   dpkg         remove what make install put in /usr/local, dpkg -i every
#                package built (no systemd, no systemctl in the root: the
#                postinst enables baton-httpd@1 for the next boot all the same)
#   httpd        the packaged /usr/bin/baton-httpd serves; its man page is there
#   dev          the -dev packages: pkg-config and a link against each library
#   run          the packaged `baton run` restarts a server that does not link
#                libbaton (perl, which minbase has), answering before and after
#   purge        dpkg --purge baton-httpd, still without systemctl
#   services     make check's servers installed (scripts/deps-run.sh): not one
#                of their services is left enabled at boot
# Nothing but gcc, make, cmake and git is installed beforehand: whatever else
# a step needs, our own make targets must install.
#
# What it caught on the tree of 6f96a1b: quickstart (no ldconfig after make
# install), deb (build-debs.sh did not install file), dpkg (the postinst ran
# systemctl, which a root without systemd lacks), dev (no
# libbaton-session packages), run (no package held libbaton-preload.so).
#
# One line per step; the whole output goes to BUILD/check-fresh/check-fresh.log,
# whose last 40 lines are printed on a failure. Exit 0 pass, 1 fail, 77 skip
# (not root, or debootstrap cannot run here).
set -uo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
build=$(mkdir -p "${1:-$src/build}" && cd "${1:-$src/build}" && pwd)
work=$build/check-fresh
base=$work/base
log=$work/check-fresh.log

say() { printf 'check-fresh: %s\n' "$*"; }
skip() {
    say "skip: $*"
    exit 77
}

[ "$(id -u)" = 0 ] || skip "needs root (debootstrap, chroot, mount)"

# Every mount below is made in a mount namespace of our own, so that none
# outlives this script even if it is killed; the explicit unmounts at exit
# are for the runs where unshare is not allowed.
if [ -z "${BATON_CHECK_FRESH_NS:-}" ] && unshare -m --propagation private true 2>/dev/null; then
    BATON_CHECK_FRESH_NS=1 exec unshare -m --propagation private bash "$0" "$@"
fi

mkdir -p "$work"
: >"$log"
started=$(date +%s)

# --- the cached base: debootstrap minbase + gcc, make, cmake, git -----------
# The mirror as scripts/systemd-test.sh finds it: this machine's apt sources.
suite=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
suite=${suite:-bookworm}
mirror=$(awk -v s="$suite" '/^URIs:/ {u = $2} /^Suites:/ {for (i = 2; i <= NF; i++) if ($i == s) {print u; exit}}' \
    /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
[ -n "$mirror" ] || mirror=$(awk -v s="$suite" '$1 == "deb" {for (i = 2; i < NF; i++) if ($(i + 1) == s && $i !~ /^\[/) {print $i; exit}}' \
    /etc/apt/sources.list 2>/dev/null | head -n 1)
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian

# Mounts made in a root, innermost last; unmount_all undoes them in reverse.
mounts=()
mnt() { # mnt TARGET MOUNT-ARGS...
    local target=$1
    shift
    mount "$@" "$target" && mounts+=("$target")
}
# Kills what still runs inside root $1 (started by this script's steps).
kill_inside() {
    local p r
    [ -n "$1" ] || return 0
    for p in /proc/[0-9]*; do
        r=$(readlink "$p/root" 2>/dev/null) || continue
        case $r in "$1" | "$1"/*) kill -KILL "${p#/proc/}" 2>/dev/null ;; esac
    done
}
unmount_all() {
    local i
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
        umount "${mounts[i]}" 2>/dev/null || umount -l "${mounts[i]}" 2>/dev/null
    done
    mounts=()
}
# The API file systems of root $1 and, if $2, the source tree read-only.
mount_api() {
    local r=$1
    mnt "$r/proc" -t proc proc &&
        mnt "$r/sys" -t sysfs sysfs &&
        mnt "$r/dev" --bind /dev &&
        mnt "$r/dev/pts" --bind /dev/pts &&
        mnt "$r/tmp" -t tmpfs -o mode=1777 tmpfs &&
        cp -L /etc/resolv.conf "$r/etc/resolv.conf" || return 1
    if [ -n "${2:-}" ]; then
        mkdir -p "$r/mnt/src" &&
            mnt "$r/mnt/src" --bind "$2" &&
            mount -o remount,bind,ro "$r/mnt/src" || return 1
    fi
}
root=
cleanup() {
    local rc=$?
    kill_inside "$root"
    kill_inside "$base.tmp"
    unmount_all
    exit $rc
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

if [ ! -e "$base/.check-fresh-base" ]; then
    command -v debootstrap >/dev/null ||
        (apt-get update -q && apt-get install -y -q --no-install-recommends debootstrap) >>"$log" 2>&1 ||
        skip "debootstrap is not installed and apt-get could not install it (see $log)"
    say "debootstrap $suite (minbase) from $mirror into $base (once; a few minutes)"
    rm -rf "$base.tmp"
    timeout 900 debootstrap --variant=minbase "$suite" "$base.tmp" "$mirror" >>"$log" 2>&1 ||
        skip "debootstrap cannot run here (see $log: $(tail -n 2 "$log" | tr '\n' ' '))"
    # What the README assumes a new user has: gcc, make, cmake (and git, to
    # clone), installed the ordinary way, with their recommends.
    mount_api "$base.tmp" || skip "cannot mount /proc, /sys, /dev in a chroot here"
    chroot "$base.tmp" sh -c 'apt-get update -q && apt-get install -y -q gcc make cmake git &&
        apt-get clean' </dev/null >>"$log" 2>&1 ||
        skip "installing gcc make cmake git in the new root failed: no mirror? (see $log)"
    unmount_all
    echo "minbase $suite + gcc make cmake git" >"$base.tmp/.check-fresh-base"
    mv "$base.tmp" "$base"
fi

# --- this run's root: a pristine copy --------------------------------------
# An overlay on the cached base where the kernel allows it (instant), a copy
# otherwise.
rm -rf "$work/run"
mkdir -p "$work/run/upper" "$work/run/ovl" "$work/run/root"
root=$work/run/root
if ! mount -t overlay overlay -o "lowerdir=$base,upperdir=$work/run/upper,workdir=$work/run/ovl" "$root" 2>/dev/null; then
    cp -a "$base/." "$root/" || { say "FAIL: cannot copy $base"; exit 1; }
else
    mounts+=("$root")
fi
rm -f "$root/.check-fresh-base"
mount_api "$root" "$src" || skip "cannot mount /proc, /sys, /dev, /tmp in a chroot here"

# --- steps -------------------------------------------------------------------
# step NAME TIMEOUT SCRIPT: SCRIPT runs with bash in the chroot, in the clone,
# as root with a login's plain environment. Each step needs the ones before
# it, so the first failure ends the run (`|| stop`).
step() {
    local name=$1 limit=$2 script=$3 t0 rc
    t0=$(date +%s)
    printf '\n===== %s =====\n' "$name" >>"$log"
    timeout --kill-after=10 "$limit" chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        bash -xeuo pipefail -c "cd /root/baton 2>/dev/null || cd /root; $script" </dev/null >>"$log" 2>&1
    rc=$?
    kill_inside "$root"
    if [ $rc = 0 ]; then
        say "PASS $name ($(($(date +%s) - t0)) s)"
        return 0
    fi
    [ $rc = 124 ] && echo "(timed out after $limit s)" >>"$log"
    say "FAIL $name (exit $rc, $(($(date +%s) - t0)) s)"
    return 1
}
stop() {
    say "FAIL: the full log is $log; its last 40 lines:"
    tail -n 40 "$log" | sed 's/^/    /'
    exit 1
}

head=$(git -C "$src" rev-parse HEAD)
say "testing the committed HEAD $(git -C "$src" log -1 --format='%h %s' HEAD | cut -c1-70)"
[ -z "$(git -C "$src" status --porcelain --untracked-files=no 2>/dev/null)" ] ||
    say "note: the worktree has uncommitted changes; they are not tested"

step clone 300 "git -c safe.directory='*' clone -q --no-local /mnt/src /root/baton &&
    cd /root/baton && git -c advice.detachedHead=false checkout -q $head &&
    echo \"cloned \$(git rev-parse HEAD)\"" || stop

# The demo's summary is what the user sees: the build says one line (its
# output goes to build/build.log), and not one request fails.
step demo 600 "make demo >/root/demo.out 2>&1; st=\$?; cat /root/demo.out; [ \$st = 0 ] &&
    [ \$(wc -l </root/demo.out) -le 60 ] && ! grep -q 'Entering directory' /root/demo.out &&
    grep -Eq '^demo: 10 upgrades, [1-9][0-9]* requests, 0 errors \\(11 generations answered\\)' /root/demo.out" || stop

step install 300 "make install" || stop

# The quick start against the installed library, compiled as the README says.
step quickstart 120 "mkdir -p /root/qs && sh scripts/readme-quickstart.sh >/root/qs/quickstart.c &&
    cd /root/qs && cc -o quickstart quickstart.c \$(pkg-config --cflags --libs baton) &&
    ldd ./quickstart | grep libbaton && ! ldd ./quickstart | grep 'not found'" || stop

# Two copies on one port: the second takes over, the first exits.
step takeover 60 '
    cd /root/qs
    # ask PORT: the line the server answers a connection with.
    ask() { exec 3<>/dev/tcp/127.0.0.1/$1 || return 1; head -n 1 <&3; }
    wait_line() { # wait_line FILE TEXT: up to 10 s for TEXT in FILE
        for _ in $(seq 100); do grep -q "$2" "$1" && return 0; sleep 0.1; done
        echo "no \"$2\" in $1:"; cat "$1"; return 1; }
    ./quickstart /tmp/qs 8090 >one.log 2>&1 & p1=$!
    wait_line one.log "pid $p1 serves"
    a=$(ask 8090); echo "first copy: $a"; [ "$a" = "hello from pid $p1" ]
    ./quickstart /tmp/qs 8090 >two.log 2>&1 & p2=$!
    wait_line two.log "pid $p2 serves"
    for _ in $(seq 100); do kill -0 $p1 2>/dev/null || break; sleep 0.1; done
    ! kill -0 $p1 2>/dev/null || { echo "the first copy $p1 still runs"; exit 1; }
    wait $p1 || { echo "the first copy exited with $?"; exit 1; }
    s=$(baton status /tmp/qs); echo "$s"
    grep -qw "$p2" <<<"$s" || { echo "baton status does not name $p2"; exit 1; }
    a=$(ask 8090); echo "second copy: $a"; [ "$a" = "hello from pid $p2" ]
    cat one.log two.log
    kill $p2' || stop

step deb 900 "make deb && ls build/pkg/deb/*.deb" || stop

# The packages alone: what make install put under /usr/local goes first.
step dpkg 300 "cat build/install_manifest*.txt | xargs rm -f && ldconfig &&
    ! command -v systemctl && dpkg -i build/pkg/deb/*.deb &&
    test -L /etc/systemd/system/multi-user.target.wants/baton-httpd@1.service &&
    st=\$(dpkg-query -W -f '\${Package} \${Version} \${Status}\n' libbaton0 libbaton-dev \
        libbaton-session0 libbaton-session-dev baton baton-httpd) && echo \"\$st\" &&
    ! grep -v 'install ok installed' <<<\"\$st\"" || stop

step httpd 60 '
    test -x /usr/bin/baton-httpd && test -f /usr/share/man/man1/baton-httpd.1.gz
    ! command -v man >/dev/null || man -w baton-httpd
    ldd /usr/bin/baton-httpd | grep -E "libbaton\.so\.0 => (/usr)?/lib/"
    /usr/bin/baton-httpd --dir /tmp/httpd --listen tcp://127.0.0.1:8091 >/tmp/httpd.log 2>&1 & p=$!
    for _ in $(seq 100); do grep -q "ready pid=$p" /tmp/httpd.log && break; sleep 0.1; done
    exec 3<>/dev/tcp/127.0.0.1/8091
    printf "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" >&3
    a=$(tail -n 1 <&3 | tr -d "\r"); echo "baton-httpd: $a"
    # "pid P generation G", zero-padded or not.
    [[ $a =~ ^pid\ 0*$p\ generation\ 0*1$ ]]
    kill $p' || stop

step dev 60 '
    cd /tmp && sh /root/baton/scripts/readme-quickstart.sh /root/baton/README.md >q.c
    cc -o q q.c $(pkg-config --cflags --libs baton) && ldd ./q | grep -E "libbaton\.so\.0 => (/usr)?/lib/"
    cc -static -o q-static q.c $(pkg-config --static --cflags --libs baton)
    printf "#include <baton-session.h>\nint main(void) { return !baton_session_strerror(-22); }\n" >s.c
    cc -o s s.c $(pkg-config --cflags --libs baton-session) && ./s
    ldd ./s | grep -E "libbaton-session\.so\.0 => (/usr)?/lib/"
    ls /usr/share/man/man3/baton.3.gz /usr/share/man/man3/baton-session.3.gz /usr/share/man/man1/baton-run.1.gz' ||
    stop

# An unmodified server (perl: in minbase, does not link libbaton) under the
# packaged `baton run`, restarted once by running the same command again.
step run 60 '
    test "$(command -v baton)" = /usr/bin/baton
    srv="use IO::Socket::INET; \$|=1; my \$s = IO::Socket::INET->new(LocalAddr => q(127.0.0.1),
        LocalPort => 8092, Listen => 16, ReuseAddr => 1) or die qq(listen: \$!);
        print qq(listening\n); while (my \$c = \$s->accept) { print \$c qq(perl pid \$\$\n); close \$c }"
    ask() { exec 3<>/dev/tcp/127.0.0.1/8092 || return 1; head -n 1 <&3; }
    baton run --dir /tmp/run -- perl -e "$srv" >/tmp/run1.log 2>&1 & p1=$!
    for _ in $(seq 100); do a=$(ask 2>/dev/null) && [ -n "$a" ] && break; sleep 0.1; done
    echo "first: $a"; [ "$a" = "perl pid $p1" ] || { cat /tmp/run1.log; exit 1; }
    baton run --dir /tmp/run -- perl -e "$srv" >/tmp/run2.log 2>&1 & p2=$!
    for _ in $(seq 150); do kill -0 $p1 2>/dev/null || break; sleep 0.1; done
    ! kill -0 $p1 2>/dev/null || { echo "the first copy $p1 still runs"; cat /tmp/run1.log; exit 1; }
    a=$(ask); echo "second: $a"; [ "$a" = "perl pid $p2" ] || { cat /tmp/run2.log; exit 1; }
    baton status /tmp/run
    cat /tmp/run1.log /tmp/run2.log
    kill $p2' || stop

# Removal without systemd: the link the postinst made goes with it.
step purge 60 "dpkg --purge baton-httpd &&
    ! test -e /etc/systemd/system/multi-user.target.wants/baton-httpd@1.service" || stop

# The servers that make check's tests drive (nginx, lighttpd, Apache,
# redis, memcached) come from Debian with their services enabled at boot;
# our install leaves every one it added disabled (scripts/apt-install.sh).
step services 600 '
    sh scripts/deps-run.sh
    for u in nginx lighttpd apache2 apache-htcacheclean redis-server memcached; do
        for l in /etc/systemd/system/*.wants/$u.service /etc/rc[2-5].d/S[0-9][0-9]$u; do
            if [ -e "$l" ] || [ -L "$l" ]; then echo "enabled at boot: $l"; exit 1; fi
        done
    done
    ls /etc/systemd/system/*.wants/ /etc/rc2.d/' || stop

say "PASS: a fresh Debian 12 builds, installs, links and packages baton ($(($(date +%s) - started)) s)"
