#!/bin/sh
# soak.sh BUILD_DIR [UPGRADES] - many consecutive upgrades under load, and
# whether anything grows.
#
# Starts baton-httpd (copied, with the tool and baton-load, into a private
# directory so that a rebuild meanwhile cannot change what runs), puts it
# under baton-load (20 keep-alive connections and 50 fresh connections a
# second), and runs UPGRADES (default 10000) `baton upgrade DIR` one after
# the other. Every SAMPLE_EVERY (100) upgrades it samples the serving
# process: its open fds (/proc/PID/fd), its RSS (VmRSS), how many
# baton-httpd processes are alive, and how many files the coordination
# directory holds. Prints the series, baton-load's summary, and fails when:
#   - an upgrade failed, or baton-load counted an error;
#   - the serving process's fd count, less its TCP connections (the load's,
#     which come and go), is not the same in every sample (each sample is a
#     new generation: an fd leaked along the chain of successors shows up as
#     a step);
#   - RSS grows: after the first WARMUP (3) samples, no sample may exceed
#     the warm-up maximum by more than RSS_BAND_KB (2048 KiB);
#   - baton-httpd processes pile up (more than 3 alive at a sample: the
#     owner, a draining predecessor, one being started) or the coordination
#     directory gains files (stale sockets or records).
#
# POSIX sh. Every wait is bounded; every process started here (and every
# server copy that took over) is stopped on exit, even on failure.
#
# shellcheck disable=SC2317 # cleanup runs from a trap

BUILD=${1:-build}
UPGRADES=${2:-10000}
SAMPLE_EVERY=${SOAK_SAMPLE_EVERY:-100}
WARMUP=${SOAK_WARMUP:-3}
RSS_BAND_KB=${SOAK_RSS_BAND_KB:-2048}
MAX_ALIVE=3

for prog in baton-httpd baton baton-load; do
    if [ ! -x "$BUILD/bin/$prog" ]; then
        echo "soak: $BUILD/bin/$prog is missing (build first)" >&2
        exit 2
    fi
done

T=$(mktemp -d "${TMPDIR:-/tmp}/baton-soak.XXXXXX") || exit 1
BIN=$T/bin
DIR=$T/coord
mkdir "$BIN" || exit 1
for prog in baton-httpd baton baton-load; do
    cp "$BUILD/bin/$prog" "$BIN/" || exit 1
done
LOAD_PID=""
FIRST_PID=""

log() {
    echo "soak: $*"
}

# Every live baton-httpd started from our private copy.
httpd_pids() {
    for d in /proc/[0-9]*; do
        exe=$(readlink "$d/exe" 2>/dev/null) || continue
        [ "$exe" = "$BIN/baton-httpd" ] && echo "${d#/proc/}"
    done
}

cleanup() {
    status=$?
    trap - EXIT INT TERM
    [ -n "$LOAD_PID" ] && kill "$LOAD_PID" 2>/dev/null
    pids=$(httpd_pids)
    # shellcheck disable=SC2086 # a list of pids
    [ -n "$pids" ] && kill -TERM $pids 2>/dev/null
    i=0
    while [ -n "$(httpd_pids)" ] && [ "$i" -lt 50 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    pids=$(httpd_pids)
    # shellcheck disable=SC2086
    [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
    [ -n "$LOAD_PID" ] && wait "$LOAD_PID" 2>/dev/null
    rm -rf "$T"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

status_field() {
    "$BIN/baton" status "$DIR" --json 2>/dev/null |
        sed -n "s/.*\"$1\":\\([0-9][0-9]*\\).*/\\1/p"
}

owner_local() {
    # shellcheck disable=SC2020 # both characters become newlines
    "$BIN/baton" status "$DIR" --json 2>/dev/null | tr '{,' '\n\n' |
        sed -n 's/^"local":"\([^"]*\)".*/\1/p' | head -n 1
}

"$BIN/baton-httpd" --dir "$DIR" --listen tcp://127.0.0.1:0 >"$T/httpd.out" 2>"$T/httpd.err" &
FIRST_PID=$!
i=0
until grep -q '^ready pid=' "$T/httpd.out" 2>/dev/null; do
    if [ "$i" -ge 100 ] || ! kill -0 "$FIRST_PID" 2>/dev/null; then
        log "baton-httpd did not get ready"
        cat "$T/httpd.err" >&2
        exit 1
    fi
    sleep 0.1
    i=$((i + 1))
done
ADDR=$(owner_local)
log "baton-httpd pid $FIRST_PID serves $ADDR; $UPGRADES upgrades, a sample every $SAMPLE_EVERY"

# The load runs until we stop it (SIGTERM makes it print its summary).
"$BIN/baton-load" --connect "$ADDR" -c 20 --rate 50 -d 86400 -t 5000 >"$T/load.out" 2>&1 &
LOAD_PID=$!

SERIES=$T/series
echo "upgrades generation pid fds rss_kb alive dir_files seconds tcp_conns" >"$SERIES"
start=$(date +%s)
sample() {
    pid=$(status_field pid)
    gen=$(status_field generation)
    # A fresh connection may come or go between listing the fds and reading
    # the TCP table: of three tries, keep the one with the fewest fds
    # besides connections (a leak shows in all three).
    best=""
    for try in 1 2 3; do
        f=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
        c=$(tcp_conns "$pid")
        if [ -z "$best" ] || [ $((f - c)) -lt "$best" ]; then
            best=$((f - c))
            fds=$f
            conns=$c
        fi
    done
    rss=$(sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$pid/status" 2>/dev/null)
    alive=$(httpd_pids | wc -l)
    files=$(find "$DIR" -mindepth 1 | wc -l)
    echo "$1 ${gen:-?} ${pid:-?} $fds ${rss:-?} $alive $files $(($(date +%s) - start)) $conns" >>"$SERIES"
    tail -n 1 "$SERIES"
}

# How many of process $1's fds are TCP connections (not listeners): the
# load's connections come and go, so the fd check leaves them out.
tcp_conns() {
    for f in /proc/"$1"/fd/*; do
        readlink "$f" 2>/dev/null
    done | sed -n 's/^socket:\[\([0-9]*\)\]$/\1/p' >"$T/inodes"
    cat "/proc/$1/net/tcp" "/proc/$1/net/tcp6" 2>/dev/null |
        awk -v f="$T/inodes" 'BEGIN { while ((getline l < f) > 0) mine[l] = 1 }
            $4 != "0A" && ($10 in mine) { n++ } END { print n + 0 }'
}

failed=0
sample 0
n=1
while [ "$n" -le "$UPGRADES" ]; do
    if ! kill -0 "$LOAD_PID" 2>/dev/null; then
        log "baton-load ended early"
        failed=$((failed + 1))
        break
    fi
    if ! "$BIN/baton" upgrade "$DIR" --timeout 10 >/dev/null 2>"$T/upgrade.err"; then
        log "upgrade $n failed: $(cat "$T/upgrade.err")"
        failed=$((failed + 1))
        [ "$failed" -ge 5 ] && break
    fi
    [ $((n % SAMPLE_EVERY)) -eq 0 ] && sample "$n"
    n=$((n + 1))
done

kill -TERM "$LOAD_PID" 2>/dev/null
i=0
while kill -0 "$LOAD_PID" 2>/dev/null && [ "$i" -lt 300 ]; do
    sleep 0.1
    i=$((i + 1))
done
kill -KILL "$LOAD_PID" 2>/dev/null
wait "$LOAD_PID"
LOAD_PID=""

echo "--- series"
cat "$SERIES"
echo "--- baton-load"
cat "$T/load.out"

verdict=0
errors=$(sed -n 's/^result .*errors=\([0-9]*\).*/\1/p' "$T/load.out")
if [ "${errors:-x}" != 0 ]; then
    log "FAIL: baton-load errors: ${errors:-no summary}"
    verdict=1
fi
if [ "$failed" -ne 0 ]; then
    log "FAIL: $failed upgrades failed"
    verdict=1
fi
# The flatness checks over the samples (header skipped).
awk -v warm="$WARMUP" -v band="$RSS_BAND_KB" -v maxalive="$MAX_ALIVE" '
    NR == 1 { next }
    {
        k++
        if ($4 !~ /^[0-9]+$/ || $5 !~ /^[0-9]+$/) { print "soak: FAIL: no sample at " $1; bad = 1; next }
        own = $4 - $9
        # The first sample is the fresh start, which has no link to a
        # predecessor (a successor keeps one open while its predecessor
        # drains): the baseline is the first sample after a takeover.
        if (k == 1) { files = $7; first = own; next }
        if (k == 2) fds = own
        if (own != fds) { print "soak: FAIL: " own " fds besides connections at " $1 " upgrades, " fds " at first"; bad = 1 }
        if ($7 > files) { print "soak: FAIL: " $7 " files in the directory at " $1 ", " files " at first"; bad = 1 }
        if ($6 > maxalive) { print "soak: FAIL: " $6 " baton-httpd alive at " $1; bad = 1 }
        if (k <= warm) { if ($5 > rssmax) rssmax = $5; next }
        if ($5 > rssmax + band) { print "soak: FAIL: RSS " $5 " KiB at " $1 ", warm-up max " rssmax " KiB"; bad = 1 }
        if ($5 > last) last = $5
    }
    END {
        if (k < 2) { print "soak: FAIL: fewer than two samples"; exit 1 }
        printf "soak: %s fds besides TCP connections in every sample after the first (%s, a fresh start); RSS warm-up max %d KiB, later max %d KiB (band %d)\n", fds, first, rssmax, last, band
        exit bad
    }' "$SERIES" || verdict=1
[ "$verdict" -eq 0 ] && log "PASS: $((n - 1)) upgrades, flat"
exit "$verdict"
