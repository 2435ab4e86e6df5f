#!/bin/sh
# apt-install.sh PKG... - installs Debian packages for the build, the tests
# or the benchmarks, and leaves none of their services running or enabled
# at boot: a user who runs `make check` or `make bench` did not ask for an
# nginx on port 80 after the next reboot.
#
# Packages already installed are left alone (and so are their services,
# which the user may have enabled). For every package this run installs,
# dependencies included, each systemd unit and init script it ships is
# disabled (deb-systemd-helper, so that a later upgrade of the package does
# not enable it again; update-rc.d) and, where one was started, stopped.
# policy-rc.d keeps them from starting during the install.
#
# Exit status: 0 when every PKG is installed, 1 otherwise (each missing one
# named on stderr), 2 on a usage error. Needs root when anything is missing.
set -u

[ $# -gt 0 ] || {
    echo "usage: apt-install.sh PKG..." >&2
    exit 2
}

installed() {
    dpkg-query -W -f '${Status}' "$1" 2>/dev/null | grep -q 'ok installed'
}

need=""
for p in "$@"; do
    installed "$p" || need="$need $p"
done
[ -n "$need" ] || exit 0
if [ "$(id -u)" != 0 ]; then
    echo "apt-install: missing:$need (run as root, or install them)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt="apt-get -q -o DPkg::Lock::Timeout=300"
before=$(mktemp "${TMPDIR:-/tmp}/apt-install.XXXXXX") || exit 1
added=""
# policy-rc.d, if we put it there, goes whatever ends this script: left
# behind, it would keep every service of every later install from starting.
trap 'rm -f "$before" "$before.units"; [ -z "$added" ] || rm -f /usr/sbin/policy-rc.d' EXIT
trap 'exit 1' INT TERM HUP
dpkg-query -W -f '${Package} ${Status}\n' | awk '$NF == "installed" {print $1}' | sort >"$before"
# Units enabled before (by the user, or by packages we leave alone): never
# ours to disable, whichever package ships a unit of that name.
for l in /etc/systemd/system/*.wants/*; do
    [ -e "$l" ] || [ -L "$l" ] && echo "${l##*/}"
done | sort -u >"$before.units"

echo "apt-install: installing$need"
$apt update >/dev/null || echo "apt-install: apt-get update failed; trying the cached lists" >&2
if [ ! -e /usr/sbin/policy-rc.d ]; then
    added=1
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
fi
# All at once; if that fails (one package missing from the mirror), one by
# one, so that what can be installed is.
# shellcheck disable=SC2086
if ! $apt install -y --no-install-recommends $need >/dev/null; then
    for p in $need; do
        $apt install -y --no-install-recommends "$p" >/dev/null ||
            echo "apt-install: $p could not be installed" >&2
    done
fi
[ -z "$added" ] || rm -f /usr/sbin/policy-rc.d
added=""

systemd_runs=""
[ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1 && systemd_runs=1
new=$(dpkg-query -W -f '${Package} ${Status}\n' | awk '$NF == "installed" {print $1}' | sort | comm -13 "$before" -)
for p in $new; do
    dpkg -L "$p" 2>/dev/null | grep -E '^(/usr)?/lib/systemd/system/[^/@]+\.(service|socket|timer)$' |
        while read -r f; do
            u=${f##*/}
            # The user's own unit of that name, or one enabled before.
            [ ! -f "/etc/systemd/system/$u" ] || continue
            ! grep -qx "$u" "$before.units" || continue
            if [ -n "$systemd_runs" ]; then
                systemctl disable --now "$u" >/dev/null 2>&1 || true
            fi
            # It runs only as if from the package's maintainer scripts.
            if command -v deb-systemd-helper >/dev/null 2>&1; then
                DPKG_MAINTSCRIPT_PACKAGE=$p deb-systemd-helper disable "$u" >/dev/null 2>&1 || true
            fi
            rm -f /etc/systemd/system/*.wants/"$u"
        done
    dpkg -L "$p" 2>/dev/null | grep -E '^/etc/init\.d/[^/]+$' |
        while read -r f; do
            s=${f##*/}
            [ -n "$systemd_runs" ] || "$f" stop >/dev/null 2>&1 || true
            update-rc.d "$s" disable >/dev/null 2>&1 || true
        done
done

st=0
for p in "$@"; do
    installed "$p" || {
        echo "apt-install: $p is not installed" >&2
        st=1
    }
done
exit $st
