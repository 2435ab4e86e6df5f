#!/bin/sh
# readme-quickstart-build.sh BUILD_DIR SOURCE_DIR - the README's words
# around its quick start are true: after `make install` (here into a
# scratch DESTDIR), the build line it gives, run as written in the
# directory where the block was saved as quickstart.c, builds a program
# that runs against the installed library and serves.
set -eu
build=$1
src=$2
command -v pkg-config >/dev/null || { echo "skip: no pkg-config"; exit 77; }
command -v "${CC:-cc}" >/dev/null || { echo "skip: no C compiler"; exit 77; }
t=$(mktemp -d)
pid=""
trap '[ -z "$pid" ] || kill "$pid" 2>/dev/null; rm -rf "$t"' EXIT
fail() {
    echo "readme-quickstart-build: FAIL: $*"
    exit 1
}

DESTDIR=$t/root cmake --install "$build" --prefix /usr/local --component Unspecified >/dev/null
sh "$src/scripts/readme-quickstart.sh" "$src/README.md" >"$t/quickstart.c"
line=$(sh "$src/scripts/readme-quickstart.sh" --build-line "$src/README.md")
echo "readme-quickstart-build: $line"
# The line as written; `cc` is the test's compiler with -Wall -Wextra and
# the flags a sanitized library needs in its user too (CFLAGS, from ctest).
cc() {
    # shellcheck disable=SC2086 # CFLAGS' words are meant to split
    command "${CC:-cc}" -Wall -Wextra ${CFLAGS:-} "$@"
}
export PKG_CONFIG_PATH="$t/root/usr/local/lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$t/root"
(cd "$t" && eval "$line") >"$t/cc.out" 2>&1 || fail "the README's build line failed: $(cat "$t/cc.out")"
# With the warnings a careful reader turns on, not one.
[ ! -s "$t/cc.out" ] || fail "the README's build line warned: $(cat "$t/cc.out")"
[ -x "$t/quickstart" ] || fail "the README's build line made no ./quickstart"

LD_LIBRARY_PATH=$t/root/usr/local/lib "$t/quickstart" "$t/coord" 0 >"$t/out" 2>&1 &
pid=$!
"$build/bin/baton" wait "$t/coord" --generation 1 --timeout 20 >/dev/null ||
    fail "the installed quickstart did not serve: $(cat "$t/out")"
grep -q "^quickstart: pid $pid serves tcp://0.0.0.0:0, generation 1$" "$t/out" ||
    fail "unexpected output: $(cat "$t/out")"
echo "readme-quickstart-build: $(cat "$t/out")"
