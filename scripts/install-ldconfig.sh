#!/bin/sh
# install-ldconfig.sh BUILD - after `make install` into the real root:
# refresh the dynamic linker's cache, so that programs linked to
# libbaton.so.0 start, and say so when the library landed in a directory the
# linker does not search (a PREFIX outside /usr and /usr/local).
set -u
build=${1:?usage: install-ldconfig.sh BUILD}
if [ "$(id -u)" != 0 ]; then
    echo "install: run ldconfig as root, or programs linked to libbaton.so.0 will not find it"
    exit 0
fi
ldconfig || {
    echo "install: ldconfig failed; programs linked to libbaton.so.0 may not find it" >&2
    exit 1
}
# cmake --install --component Unspecified writes this manifest (not an
# older install_manifest.txt, which may name another prefix).
lib=$(grep '/libbaton\.so\.0$' "$build/install_manifest_Unspecified.txt" 2>/dev/null | head -n 1)
if [ -n "$lib" ] && ! ldconfig -p | grep -qF "=> $lib"; then
    echo "install: ${lib%/*} is not in the dynamic linker's search path: add it to a file in"
    echo "install: /etc/ld.so.conf.d/ and run ldconfig (or set LD_LIBRARY_PATH=${lib%/*})"
fi
exit 0
