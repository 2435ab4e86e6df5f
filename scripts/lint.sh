#!/bin/sh
# Fails when a tracked C file is not formatted as .clang-format says.
set -e
files=$(git ls-files '*.c' '*.h' 2>/dev/null || find . -name '*.[ch]' -not -path './build*')
[ -n "$files" ] || exit 0
bad=""
for f in $files; do
    clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || bad="$bad $f"
done
if [ -n "$bad" ]; then
    echo "lint: not clang-formatted (run 'make format'):$bad" >&2
    exit 1
fi
echo "lint: $(echo $files | wc -w) files formatted"
