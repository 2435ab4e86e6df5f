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
for t in dpkg-buildflags dpkg-shlibdeps fakeroot; do
    command -v $t >/dev/null || {
        echo "build-debs: installing dpkg-dev and fakeroot"
        apt-get install -y -q --no-install-recommends dpkg-dev fakeroot >/dev/null
        break
    }
done
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
