#!/bin/sh
# Installs what the build and tests need on a fresh Debian 12, once.
# Only gcc, make and cmake are assumed; everything else comes from apt.
set -e
need=""
command -v clang-format >/dev/null 2>&1 || need="$need clang-format"
command -v pkg-config >/dev/null 2>&1 || need="$need pkg-config"
# groff checks the man pages for warnings (tests/man-pages.sh).
command -v groff >/dev/null 2>&1 || need="$need groff-base"
# libbaton-session's TLS and HMAC-SHA-256 come from OpenSSL's libssl and
# libcrypto (libbaton itself needs libc alone); its tests make their
# certificates with the openssl command (scripts/session-certs.sh).
[ -f /usr/include/openssl/ssl.h ] || need="$need libssl-dev"
command -v openssl >/dev/null 2>&1 || need="$need openssl"
# ip(8): the tests that build network namespaces (session-netns) and the
# session benchmark.
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || need="$need iproute2"
# The Python client (python/): pip builds and installs it offline with
# Debian's setuptools and wheel (tests/session-python.sh, python/README.md).
{ /usr/bin/python3 -c 'import setuptools, wheel' && /usr/bin/python3 -m pip --version; } \
    >/dev/null 2>&1 || need="$need python3-pip python3-setuptools python3-wheel"
# examples/baton-quic (built only when these are found): ngtcp2 with its
# GnuTLS crypto, nghttp3 and GnuTLS; ngtcp2's example client (gtlsclient)
# to try it, and its example server (gtlsserver) to try `baton run` on a
# QUIC server nobody here wrote (tests/run-quic.sh). Neither is a service.
[ -f /usr/include/ngtcp2/ngtcp2_crypto_gnutls.h ] || need="$need libngtcp2-dev libngtcp2-crypto-gnutls-dev"
[ -f /usr/include/nghttp3/nghttp3.h ] || need="$need libnghttp3-dev"
[ -f /usr/include/gnutls/gnutls.h ] || need="$need libgnutls28-dev"
command -v gtlsclient >/dev/null 2>&1 || need="$need ngtcp2-client"
[ -x /usr/sbin/gtlsserver ] || command -v gtlsserver >/dev/null 2>&1 || need="$need ngtcp2-server"
[ -n "$need" ] || exit 0
# shellcheck disable=SC2086
exec sh "$(dirname "$0")/apt-install.sh" $need
