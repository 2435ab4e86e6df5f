#!/usr/bin/env bash
# tests/compat/run.sh BUILD_DIR [CASE...] - the compatibility suite
# (`make check-compat`): each case (tests/compat/CASE.sh; all of them by
# default) runs a real Debian server under `baton run` and restarts it under
# load. Prints one line per case (PASS, FAIL or SKIP, with its counts) and a
# closing "N passed, N failed, N skipped"; exits 1 if any case failed.
#
# Each case's output goes to BUILD_DIR/compat/CASE.log, and the results to
# tests/compat/results.md (COMPAT_RESULTS_MD=path elsewhere, or "" for
# none), a table written from this run only; COMPAT_REV says what the build
# was made from if not from this tree.
set -u
BUILD=$(cd "${1:?usage: run.sh BUILD_DIR [CASE...]}" && pwd) || exit 2
shift
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ALL=(node redis memcached apache gunicorn uvicorn webrick python-http lighttpd nginx)
CASES=("$@")
((${#CASES[@]})) || CASES=("${ALL[@]}")
MD=${COMPAT_RESULTS_MD-$HERE/results.md}
OUT=$BUILD/compat
CASE_TIMEOUT=${COMPAT_CASE_TIMEOUT:-120}

[[ -x $BUILD/bin/baton && -e $BUILD/lib/libbaton-preload.so ]] || {
    echo "compat: build $BUILD first (bin/baton, lib/libbaton-preload.so)" >&2
    exit 2
}
for c in "${CASES[@]}"; do
    [[ -f $HERE/$c.sh ]] || {
        echo "compat: no case $c (tests/compat/$c.sh)" >&2
        exit 2
    }
done
rm -rf "$OUT"
mkdir -p "$OUT/res" || exit 1
# Every package at once (one apt-get update); a case that still misses
# its server skips.
sh "$ROOT/scripts/deps-compat.sh" "${CASES[@]}" || echo "compat: some servers could not be installed; their cases skip"

get() { sed -n "s/^$1=//p" "$OUT/res/$2.res" 2>/dev/null; }

pass=0 failed=0 skipped=0
start=$SECONDS
for c in "${CASES[@]}"; do
    t0=$SECONDS
    COMPAT_RESULTS=$OUT/res timeout -k 10 "$CASE_TIMEOUT" bash "$HERE/$c.sh" "$BUILD" >"$OUT/$c.log" 2>&1
    st=$?
    secs=$((SECONDS - t0))
    if [[ ! -s $OUT/res/$c.res ]]; then
        # The case died before it could say (timeout, a crash of the harness).
        { echo "case=$c"; echo "status=FAIL"; echo "seconds=$secs"
          echo "reason=the case ended with status $st and no verdict (log: $OUT/$c.log)"; } >"$OUT/res/$c.res"
    elif [[ $st != 0 && $st != 77 && $(get status "$c") == PASS ]]; then
        sed -i "s/^status=.*/status=FAIL/; s|^reason=.*|reason=the case ended with status $st|" "$OUT/res/$c.res"
    fi
    status=$(get status "$c")
    case $status in
    PASS)
        pass=$((pass + 1))
        printf 'PASS %-12s %s requests across %s restarts, 0 errors (%ss)\n' "$c" "$(get requests "$c")" "$(get restarts "$c")" "$secs"
        ;;
    SKIP)
        skipped=$((skipped + 1))
        printf 'SKIP %-12s %s\n' "$c" "$(get reason "$c")"
        ;;
    *)
        failed=$((failed + 1))
        n=$(get requests "$c")
        printf 'FAIL %-12s %s: %s (%ss; log %s)\n' "$c" \
            "$([[ -n $n ]] && echo "$n requests, $(get errors "$c") errors" || echo "no counts (stopped early)")" \
            "$(get reason "$c" | cut -c1-400)" "$secs" "$OUT/$c.log"
        ;;
    esac
done

if [[ -n $MD ]]; then
    # COMPAT_REV names what BUILD_DIR was built from, when not this tree.
    rev=${COMPAT_REV:-}
    if [[ -z $rev ]]; then
        rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
        [[ -z $(git -C "$ROOT" status --porcelain -- preload src tools include 2>/dev/null) ]] ||
            rev+=" + uncommitted changes in preload/src/tools/include"
    fi
    # Table cells: no pipes, no newlines.
    cell() {
        local v
        v=$(get "$1" "$2" | tr '|' '/')
        echo "${v:-${3:-}}"
    }
    {
        echo "# Compatibility suite: results of the latest run"
        echo
        echo "Written by \`tests/compat/run.sh\` (\`make check-compat\`); do not edit by hand."
        echo "Run $(date -u '+%Y-%m-%d %H:%M UTC'), baton $rev, Debian $(cat /etc/debian_version 2>/dev/null),"
        echo "kernel $(uname -r), $(nproc) CPUs. Each case: ${COMPAT_RESTARTS:-5} restarts by running"
        echo "the same \`baton run\` command again, under load, drain timeout 5 s. Errors count failed,"
        echo "refused, reset and timed-out (over 2 s) requests and wrong answers."
        echo
        echo "$pass passed, $failed failed, $skipped skipped ($((SECONDS - start)) s)."
        echo
        echo "| server | result | mode and load | what it needs for zero errors | requests | errors | notes |"
        echo "|---|---|---|---|---|---|---|"
        for c in "${CASES[@]}"; do
            notes=$(cell reason "$c")
            [[ -z $notes || -z $(get detail "$c") ]] || notes+="; "
            notes+=$(cell detail "$c")
            echo "| $c ($(cell server "$c")) | **$(cell status "$c")** | $(cell mode "$c") | $(cell needs "$c") |" \
                "$(cell requests "$c" "none (stopped early)") | $(cell errors "$c" "-") | $notes |"
        done
    } >"$MD"
fi

echo "$pass passed, $failed failed, $skipped skipped"
((failed == 0))
