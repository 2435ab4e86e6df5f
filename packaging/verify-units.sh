#!/bin/sh
# verify-units.sh BINDIR - check every unit in packaging/units with
# `systemd-analyze verify`. systemd-analyze warns about unknown keys and bad
# values on stderr but still exits 0, so any output on stderr fails the
# check. ExecStart= binaries and the man pages named in Documentation= are
# looked up in a scratch root holding BINDIR's programs, this tree's man
# pages and a copy of the machine's own units (verify needs sysinit.target
# and friends in the same root). Exit 0 pass, 1 fail, 77 skip.
set -u
here=$(cd "$(dirname "$0")" && pwd)
bindir=${1:?usage: verify-units.sh BINDIR}
sysunits=
for d in /lib/systemd/system /usr/lib/systemd/system; do
    [ -f "$d/sysinit.target" ] && sysunits=$d && break
done
if ! command -v systemd-analyze >/dev/null 2>&1 || [ -z "$sysunits" ]; then
    echo "skip: systemd-analyze or the system's unit files are missing"
    exit 77
fi
for p in baton baton-httpd; do
    [ -x "$bindir/$p" ] || { echo "FAIL: $bindir/$p not built"; exit 1; }
done
root=$(mktemp -d "${TMPDIR:-/tmp}/baton-verify.XXXXXX") || exit 1
trap 'rm -rf "$root"' EXIT INT TERM
mkdir -p "$root/usr/bin" "$root/lib/systemd/system" "$root/usr/share/man/man1"
cp -a "$sysunits/." "$root/lib/systemd/system/"
cp "$bindir/baton" "$bindir/baton-httpd" "$root/usr/bin/"
cp "$here/../man/baton.1" "$here/../man/baton-httpd.1" "$root/usr/share/man/man1/"
fail=0
for f in "$here"/units/*; do
    u=$(basename "$f")
    cp "$f" "$root/lib/systemd/system/$u"
    MANPATH="$root/usr/share/man" systemd-analyze verify --root="$root" \
        "$root/lib/systemd/system/$u" >"$root/out" 2>"$root/err"
    rc=$?
    if [ $rc -ne 0 ] || [ -s "$root/err" ]; then
        echo "FAIL: $u (exit $rc)"
        sed 's/^/  /' "$root/err" "$root/out"
        fail=1
    else
        echo "ok: $u"
    fi
done
exit $fail
