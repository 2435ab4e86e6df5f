#!/bin/sh
# deps-compat.sh [CASE...] - installs from Debian the servers and load
# clients that the compatibility suite (tests/compat/, `make check-compat`)
# drives; with no CASE, those of every case. A package counts as there when
# its program is (nodejs from elsewhere will do) or dpkg has it; those are
# left alone, so a second run does nothing (no apt-get update either).
#
# scripts/apt-install.sh installs them and leaves none of their services
# running or enabled at boot. Exit status: 0 when every package is there, 1
# otherwise (a case then skips with 77).
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
# shellcheck disable=SC2086
exec sh "$(dirname "$0")/apt-install.sh" $need
