#!/bin/sh
# install-pkgconfig.sh BUILD_DIR SOURCE_DIR - `make install` into a scratch
# DESTDIR gives a header, libraries and a baton.pc with which a program
# builds and links, as a library user would build it (pkg-config), and the
# program runs against the installed shared library.
set -eu
build=$1
src=$2
command -v pkg-config >/dev/null || { echo "skip: no pkg-config"; exit 77; }
cc=${CC:-cc}
command -v "$cc" >/dev/null || { echo "skip: no C compiler"; exit 77; }
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
DESTDIR=$t/root cmake --install "$build" --prefix /usr/local --component Unspecified >/dev/null
pc=$t/root/usr/local/lib/pkgconfig
test -f "$pc/baton.pc"
test -f "$t/root/usr/local/include/baton.h"
test -f "$t/root/usr/local/share/man/man3/baton.3"
flags=$(PKG_CONFIG_PATH=$pc PKG_CONFIG_SYSROOT_DIR=$t/root pkg-config --cflags --libs baton)
cat > "$t/user.c" <<'C'
#include <baton.h>
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv)
{
    struct baton_options o = {.dir = argv[1], .allowed_uid = (uid_t)-1};
    baton *b;
    int r = baton_open(&o, &b);
    if (r < 0 || baton_listen(b, "http", "tcp://127.0.0.1:0", 0) < 0 || baton_ready(b) < 0)
        return 1;
    printf("%s generation %d\n", baton_version(), baton_generation(b));
    baton_free(b);
    return 0;
}
C
# shellcheck disable=SC2086 # CFLAGS' and pkg-config's words are meant to split
"$cc" ${CFLAGS:-} -o "$t/user" "$t/user.c" $flags
out=$(LD_LIBRARY_PATH=$t/root/usr/local/lib "$t/user" "$t/coord")
echo "install-pkgconfig: $out"
case $out in *"generation 1") ;; *) exit 1 ;; esac
