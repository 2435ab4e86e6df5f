#!/bin/sh
# Installs the real servers that the `baton run` tests drive (tests/run-*):
# lighttpd, nginx-light and python3 here; redis, memcached, Apache,
# gunicorn and wrk through scripts/deps-compat.sh (which keeps their
# services off). Tests skip (77) when a server is missing, so this is
# optional; .ci/run calls it on a fresh Debian 12.
set -e
sh "$(dirname "$0")/deps-compat.sh" redis memcached apache gunicorn python-http ||
    echo "deps-run: some servers could not be installed; their tests skip" >&2
need=""
command -v lighttpd >/dev/null 2>&1 || [ -x /usr/sbin/lighttpd ] || need="$need lighttpd"
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need="$need nginx-light"
[ -x /usr/bin/python3 ] || need="$need python3"
[ -n "$need" ] || exit 0
if [ "$(id -u)" != 0 ]; then
    echo "deps-run: missing:$need (run as root, or install them)" >&2
    exit 1
fi
echo "deps-run: installing$need"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
# The packages' own services are not wanted: keep them from starting.
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d.baton
chmod +x /usr/sbin/policy-rc.d.baton
[ -e /usr/sbin/policy-rc.d ] || { cp /usr/sbin/policy-rc.d.baton /usr/sbin/policy-rc.d; added=1; }
apt-get install -y -q --no-install-recommends $need >/dev/null || st=$?
[ -z "$added" ] || rm -f /usr/sbin/policy-rc.d
rm -f /usr/sbin/policy-rc.d.baton
exit ${st:-0}
