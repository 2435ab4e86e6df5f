#!/bin/sh
# build-debs.sh BUILDDIR [VERSION] - configure BUILDDIR for packaging
# (prefix /usr, Debian's hardening flags from dpkg-buildflags), build it and
# write the .debs to BUILDDIR/deb. VERSION overrides the package version
# (default: the one in include/baton.h), e.g. to make a second, newer set of
# packages from the same tree for an upgrade test.
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
build=${1:?usage: build-debs.sh BUILDDIR [VERSION]}
version=${2:-}
# What packaging needs beyond the build: dpkg-buildflags and dpkg-shlibdeps
# (dpkg-dev), fakeroot, and file, which CPack's DEB generator runs on every
# file to find the ones dpkg-shlibdeps must look at.
need=
command -v dpkg-buildflags >/dev/null 2>&1 && command -v dpkg-shlibdeps >/dev/null 2>&1 ||
    need="$need dpkg-dev"
command -v fakeroot >/dev/null 2>&1 || need="$need fakeroot"
command -v file >/dev/null 2>&1 || need="$need file"
if [ -n "$need" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "build-debs: missing:$need (run as root, or install them)" >&2
        exit 1
    fi
    echo "build-debs: installing$need"
    export DEBIAN_FRONTEND=noninteractive
    # A fresh system has no package lists yet.
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends $need >/dev/null
fi
export DEB_BUILD_MAINT_OPTIONS=hardening=+all
cflags="$(dpkg-buildflags --get CFLAGS) $(dpkg-buildflags --get CPPFLAGS)"
ldflags=$(dpkg-buildflags --get LDFLAGS)
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=None -DBUILD_TESTING=OFF \
    -DCMAKE_INSTALL_PREFIX=/usr -DCMAKE_C_FLAGS="$cflags" \
    -DCMAKE_EXE_LINKER_FLAGS="$ldflags" -DCMAKE_SHARED_LINKER_FLAGS="$ldflags" \
    ${version:+-DBATON_PACKAGE_VERSION=$version} >/dev/null
cmake --build "$build" -j "${JOBS:-2}"
rm -rf "$build/deb"
(cd "$build" && fakeroot cpack --config CPackConfig.cmake >/dev/null)
ls "$build"/deb/*.deb
