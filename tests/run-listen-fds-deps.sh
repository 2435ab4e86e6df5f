#!/bin/sh
# Installs what tests/run-listen-fds.sh needs for its Go case: Debian's Go
# compiler and go-systemd's source (GOPATH /usr/share/gocode), so that the
# test server builds offline. Exit 0 when they are there; non-zero (with
# the reason on its last line) when they cannot be installed.
set -e
need=""
command -v go >/dev/null 2>&1 || need="$need golang-go"
[ -d /usr/share/gocode/src/github.com/coreos/go-systemd/activation ] ||
    need="$need golang-github-coreos-go-systemd-dev"
[ -n "$need" ] || exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "run-listen-fds-deps: missing:$need (needs root and apt-get)" >&2
    exit 1
fi
echo "run-listen-fds-deps: installing$need"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null || true
if ! apt-get install -y -q --no-install-recommends $need >/dev/null; then
    echo "run-listen-fds-deps: apt-get install$need failed" >&2
    exit 1
fi
