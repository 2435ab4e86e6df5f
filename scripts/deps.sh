#!/bin/sh
# Installs what the build and tests need on a fresh Debian 12, once.
# Only gcc, make and cmake are assumed; everything else comes from apt.
set -e
need=""
command -v clang-format >/dev/null 2>&1 || need="$need clang-format"
command -v pkg-config >/dev/null 2>&1 || need="$need pkg-config"
# libbaton-session's HMAC-SHA-256 comes from OpenSSL's libcrypto (libbaton
# itself needs libc alone).
[ -f /usr/include/openssl/hmac.h ] || need="$need libssl-dev"
[ -n "$need" ] || exit 0
if [ "$(id -u)" != 0 ]; then
    echo "deps: missing:$need (run as root, or install them)" >&2
    exit 1
fi
echo "deps: installing$need"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends $need >/dev/null
