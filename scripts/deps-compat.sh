#!/bin/sh
# deps-compat.sh [CASE...] - installs from Debian the servers and load
# clients that the compatibility suite (tests/compat/, `make check-compat`)
# drives; with no CASE, those of every case. A package counts as there when
# its program is (nodejs from elsewhere will do) or dpkg has it; those are
# left alone, so a second run does nothing (no apt-get update either).
#
# The packages' own services are not wanted: policy-rc.d keeps them from
# starting during the install, and each service this run installed is then
# disabled (deb-systemd-helper, update-rc.d) and, where systemd runs,
# stopped. Exit status: 0 when every package is there, 1 otherwise (a case
# then skips with 77).
set -u

pkgs_of() {
    case $1 in
    node) echo "nodejs:/usr/bin/node wrk:/usr/bin/wrk" ;;
    redis) echo "redis-server:/usr/bin/redis-server redis-tools:/usr/bin/redis-benchmark" ;;
    memcached) echo "memcached:/usr/bin/memcached python3:/usr/bin/python3" ;;
    apache) echo "apache2:/usr/sbin/apache2 wrk:/usr/bin/wrk" ;;
    gunicorn) echo "python3-gunicorn:/usr/lib/python3/dist-packages/gunicorn/__init__.py wrk:/usr/bin/wrk" ;;
    uvicorn) echo "python3-uvicorn:/usr/lib/python3/dist-packages/uvicorn/__init__.py wrk:/usr/bin/wrk" ;;
    webrick) echo "ruby-webrick:- ruby:/usr/bin/ruby wrk:/usr/bin/wrk" ;;
    python-http) echo "python3:/usr/bin/python3 wrk:/usr/bin/wrk" ;;
    lighttpd) echo "lighttpd:/usr/sbin/lighttpd wrk:/usr/bin/wrk" ;;
    nginx) echo "nginx-light:/usr/sbin/nginx wrk:/usr/bin/wrk" ;;
    *)
        echo "deps-compat: unknown case $1" >&2
        return 1
        ;;
    esac
}

# The services that come with a package and must not stay enabled.
services_of() {
    case $1 in
    redis-server) echo redis-server ;;
    memcached) echo memcached ;;
    apache2) echo "apache2 apache-htcacheclean" ;;
    lighttpd) echo lighttpd ;;
    nginx-light | nginx-common) echo nginx ;;
    esac
}

installed() {
    dpkg-query -W -f '${Status}' "$1" 2>/dev/null | grep -q 'ok installed'
}

[ $# -gt 0 ] || set -- node redis memcached apache gunicorn uvicorn webrick python-http lighttpd nginx
need=""
for c in "$@"; do
    list=$(pkgs_of "$c") || exit 1
    for pf in $list; do
        p=${pf%%:*}
        [ -e "${pf#*:}" ] || installed "$p" && continue
        case " $need " in *" $p "*) ;; *) need="$need $p" ;; esac
    done
done
[ -n "$need" ] || exit 0
if [ "$(id -u)" != 0 ]; then
    echo "deps-compat: missing:$need (run as root, or install them)" >&2
    exit 1
fi
echo "deps-compat: installing$need"
export DEBIAN_FRONTEND=noninteractive
apt="apt-get -q -o DPkg::Lock::Timeout=300"
$apt update >/dev/null || true

added=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    added=1
fi
# All at once; if that fails (one package missing from the mirror), one by
# one, so that the other cases still run.
# shellcheck disable=SC2086
if ! $apt install -y --no-install-recommends $need >/dev/null; then
    for p in $need; do
        $apt install -y --no-install-recommends "$p" >/dev/null || echo "deps-compat: $p could not be installed" >&2
    done
fi
[ -z "$added" ] || rm -f /usr/sbin/policy-rc.d

st=0
for p in $need; do
    if ! installed "$p"; then
        st=1
        continue
    fi
    for s in $(services_of "$p"); do
        if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
            systemctl disable --now "$s" >/dev/null 2>&1 || true
        elif [ -x "/etc/init.d/$s" ]; then
            "/etc/init.d/$s" stop >/dev/null 2>&1 || true
        fi
        if command -v deb-systemd-helper >/dev/null 2>&1; then
            deb-systemd-helper disable "$s.service" >/dev/null 2>&1 || true
        fi
        rm -f "/etc/systemd/system/multi-user.target.wants/$s.service"
        [ ! -e "/etc/init.d/$s" ] || update-rc.d "$s" disable >/dev/null 2>&1 || true
    done
done
exit $st
