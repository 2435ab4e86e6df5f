#!/usr/bin/env bash
# examples-httpd-body.sh BUILD_DIR - every baton-httpd answer has a body of
# the same, documented length (34 bytes: "pid %07d generation %010d\n"),
# whatever the pid and the generation; so ab, which counts an answer whose
# length differs from the first one's as a failed request, reports 0
# failed across upgrades, including the one from generation 9 to 10.
#
# Upgrades baton-httpd to generation 8 (checking each generation's body),
# then runs ab (a fresh connection per request) across 2 more upgrades, a
# second copy and `baton upgrade`. Needs ab (apache2-utils, installed with
# apt-get when missing); skips (77) only when it cannot be installed.
# Every wait is bounded; every server copy is stopped on exit.
#
# shellcheck disable=SC2317 # cleanup runs from a trap

set -u
BUILD=${1:?usage: examples-httpd-body.sh BUILD_DIR}
BIN=$BUILD/bin
BODY_LEN=34 # examples/baton-httpd.c, man/baton-httpd.1, README.md

T=$(mktemp -d "${TMPDIR:-/tmp}/baton-body.XXXXXX") || exit 1
DIR=$T/coord
PIDS=()
AB_PID=""

say() { echo "examples-httpd-body: $*"; }
owner() { # owner pid|generation|port
    local j
    j=$("$BIN/baton" status "$DIR" --json 2>/dev/null) || return 1
    case $1 in
    pid) sed -n 's/.*"pid":\([0-9][0-9]*\).*/\1/p' <<<"$j" ;;
    generation) sed -n 's/.*"generation":\([0-9][0-9]*\).*/\1/p' <<<"$j" ;;
    port) sed -n 's/.*"local":"[^"]*:\([0-9][0-9]*\)".*/\1/p' <<<"$j" ;;
    esac
}
cleanup() {
    local p
    [[ -z $AB_PID ]] || kill "$AB_PID" 2>/dev/null
    PIDS+=("$(owner pid)")
    for p in "${PIDS[@]}"; do
        tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -q "baton-httpd --dir $DIR " &&
            kill "$p" 2>/dev/null
    done
    rm -rf "$T"
}
trap cleanup EXIT
fail() {
    say "FAIL: $*"
    tail -n 20 "$T"/*.log 2>/dev/null
    exit 1
}

# The body of one answer on a fresh connection, exactly as sent.
get_body() {
    exec 3<>"/dev/tcp/127.0.0.1/$PORT" || return 1
    printf 'GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n' >&3
    # Everything after the blank line, byte for byte (no newline stripped).
    sed -e '1,/^\r$/d' <&3 >"$T/body"
    exec 3<&-
}

# The serving generation's answer: the documented length and format, and
# the pid and generation of the process that serves.
check_body() {
    local pid gen want
    pid=$(owner pid)
    gen=$(owner generation)
    get_body || fail "no answer from generation $gen"
    printf -v want 'pid %07d generation %010d\n' "$pid" "$gen"
    [[ $(wc -c <"$T/body") -eq $BODY_LEN ]] ||
        fail "generation $gen (pid $pid): a body of $(wc -c <"$T/body") bytes, not $BODY_LEN: '$(cat "$T/body")'"
    [[ $(cat "$T/body"; echo .) == "$want." ]] || fail "generation $gen: '$(cat "$T/body")', not '$want'"
}

# upgrade N HOW: generation N serves after a second copy (copy) or `baton
# upgrade` (tool), within 20 s.
upgrade() {
    if [[ $2 == copy ]]; then
        "$BIN/baton-httpd" --dir "$DIR" --listen tcp://127.0.0.1:0 >>"$T/httpd.out" 2>>"$T/httpd.log" &
        PIDS+=("$!")
    else
        "$BIN/baton" upgrade "$DIR" --timeout 20 >>"$T/upgrade.log" 2>&1 || fail "baton upgrade to $1 failed"
    fi
    "$BIN/baton" wait "$DIR" --generation "$1" --timeout 20 >/dev/null || fail "generation $1 did not serve"
    PIDS+=("$(owner pid)")
}

if ! command -v ab >/dev/null; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        apt-get install -y -q apache2-utils >"$T/apt.log" 2>&1 ||
            { apt-get update -q >>"$T/apt.log" 2>&1 && apt-get install -y -q apache2-utils >>"$T/apt.log" 2>&1; }
    fi
    command -v ab >/dev/null || { say "SKIP: ab (apache2-utils) cannot be installed"; exit 77; }
fi

"$BIN/baton-httpd" --dir "$DIR" --listen tcp://127.0.0.1:0 >"$T/httpd.out" 2>"$T/httpd.log" &
PIDS+=("$!")
"$BIN/baton" wait "$DIR" --generation 1 --timeout 20 >/dev/null || fail "generation 1 did not serve"
PORT=$(owner port)
[[ -n $PORT ]] || fail "no port in baton status"
check_body
for gen in 2 3 4 5 6 7 8; do
    upgrade "$gen" "$( ((gen % 2)) && echo tool || echo copy)"
    check_body
done
say "generations 1-8 each answered $BODY_LEN bytes: $(cat "$T/body")"

# ab across generation 8 -> 9 -> 10: the body's digits grew at 10 before.
ab -q -c 50 -n 2000000 -t 6 "http://127.0.0.1:$PORT/" >"$T/ab.txt" 2>"$T/ab.err" &
AB_PID=$!
# Upgrade once ab is well under way: it has connections open.
for ((i = 0; i < 200; i++)); do
    [[ $(ss -Htn state established "( dport = :$PORT )" 2>/dev/null | wc -l) -ge 10 ]] && break
    sleep 0.05
done
upgrade 9 copy
upgrade 10 tool
check_body
wait "$AB_PID"
rc=$?
AB_PID=""
[[ $rc -eq 0 ]] || fail "ab exited $rc: $(cat "$T/ab.err")"
grep -E "^(Complete|Failed) requests|Non-2xx|Length" "$T/ab.txt"
done_n=$(sed -n 's/^Complete requests: *\([0-9]*\).*/\1/p' "$T/ab.txt")
failed=$(sed -n 's/^Failed requests: *\([0-9]*\).*/\1/p' "$T/ab.txt")
[[ -n $done_n && $done_n -gt 0 ]] || fail "ab completed no request"
[[ $failed == 0 ]] || fail "ab: $failed failed requests: $(grep -A1 '^Failed' "$T/ab.txt")"
! grep -q '^Non-2xx' "$T/ab.txt" || fail "ab: $(grep '^Non-2xx' "$T/ab.txt")"
say "PASS: $done_n requests across generations 8-10 (ab), 0 failed; every body $BODY_LEN bytes"
