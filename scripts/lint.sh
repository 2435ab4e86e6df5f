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

# One word per idea (docs/glossary.md): listeners, fds and state are taken
# over, live connections handed off; "handover" and "hand over" are not used.
words=$(git grep -n -i -E 'handover|hand(s|ed|ing)? over' -- . ':!docs/glossary.md' ':!scripts/lint.sh' 2>/dev/null || true)
if [ -n "$words" ]; then
    echo "lint: words the glossary retires (docs/glossary.md):" >&2
    echo "$words" >&2
    exit 1
fi
