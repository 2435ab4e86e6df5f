#!/bin/sh
# readme-quickstart.sh [--build-line] [README] - print the C block of the
# README's "## Quick start for a server author" (the first ```c block after
# that heading) to standard output, or with --build-line the indented `cc`
# command that follows it in the same section. Exits 1, saying what is
# missing, when the heading, the block or its end is not there, so that a
# build or test that uses it fails loudly instead of compiling nothing.
#
# POSIX sh and awk. CMake builds the block as baton-quickstart, so the
# example that is compiled is the README's.

set -eu
what=code
if [ "${1:-}" = --build-line ]; then
    what=build
    shift
fi
readme=${1:-$(dirname "$0")/../README.md}
[ -r "$readme" ] || { echo "readme-quickstart: cannot read $readme" >&2; exit 1; }

awk -v what="$what" -v file="$readme" '
    function fail(msg) { print "readme-quickstart: " file ": " msg >"/dev/stderr"; bad = 1; exit 1 }
    /^## / && section { section = 0; if (state == 2) exit }
    /^## Quick start for a server author$/ { section = 1; seen = 1; next }
    !section { next }
    state == 0 && /^```c$/ { state = 1; next }
    state == 1 && /^```$/ { state = 2; next }
    state == 1 { out = out $0 "\n"; lines++; next }
    state == 2 && what == "build" && /^    cc / { sub(/^    /, ""); cmd = $0; exit }
    END {
        if (bad) exit 1
        if (!seen) fail("no \"## Quick start for a server author\" heading")
        if (state == 0) fail("no ```c block in the quick start")
        if (state == 1) fail("the quick start'"'"'s ```c block does not end")
        if (lines == 0) fail("the quick start'"'"'s ```c block is empty")
        if (what == "build" && cmd == "") fail("no indented `cc ...` build line after the block")
        printf "%s", what == "code" ? out : cmd "\n"
    }
' "$readme"
