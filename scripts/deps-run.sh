#!/bin/sh
# Installs the real servers that the `baton run` tests drive (tests/run-*):
# redis, memcached, Apache, gunicorn, python3, lighttpd, nginx-light and
# wrk, through scripts/deps-compat.sh (which leaves none of their services
# running or enabled at boot). Tests skip (77) when a server is missing, so
# this is optional; .ci/run calls it on a fresh Debian 12.
sh "$(dirname "$0")/deps-compat.sh" redis memcached apache gunicorn python-http lighttpd nginx || {
    echo "deps-run: some servers could not be installed; their tests skip" >&2
    exit 1
}
