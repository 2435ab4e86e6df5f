#!/usr/bin/env bash
# run-python-http.sh BUILD_DIR - `python3 -m http.server` (socketserver,
# selectors' poll, a thread per connection), unmodified, under `baton run`:
# 10 restarts under baton-load with 0 errors, every old copy gone. Then
# the case that showed timeouts: wrk with 20 connections for 8 s across 5
# restarts must see none. socketserver listens with a backlog of 5, which
# 20 clients overflow even without baton (the kernel drops SYNs and final
# ACKs, retransmitted 1 s and 3 s later, past wrk's 2 s timeout), and a
# restart, a new Python starting on the same cores while the old copy
# stops accepting, makes such an overflow last: the shim gives every
# listener it passes on a queue of at least 128 (ss shows it as Send-Q).
BUILD=${1:?usage: run-python-http.sh BUILD_DIR}
NAME=run-python-http
. "$(dirname "$0")/run-lib.sh"

run_need /usr/bin/python3
run_tmp
run_port
mkdir -p "$T/www"
echo "hello from python" >"$T/www/index.html"
CMD=(/usr/bin/python3 -m http.server --bind 127.0.0.1 --directory "$T/www" "$PORT")
URLPATH=/index.html
run_restarts
# In the compatibility suite (tests/compat/) the run above is the whole
# case: its hook has checked and stopped every copy by now.
[[ -z ${COMPAT_CASE:-} ]] || exit 0

backlog=$(ss -Hltn "sport = :$PORT" | awk '{print $3}')
[[ -n $backlog ]] || fail "no listener on port $PORT"
((backlog >= 128)) || fail "the listener's backlog is $backlog, not at least 128"
say "PASS: the listener's backlog is $backlog (socketserver asked for 5)"

if ! command -v wrk >/dev/null; then
    say "wrk is not installed: no wrk phase"
    exit 0
fi
gen=$((RESTARTS + 1))
wrk -c20 -t2 -d8s "http://127.0.0.1:$PORT/index.html" >"$T/wrk.log" 2>&1 &
LOAD_PID=$!
sleep 1
for ((i = 1; i <= 5; i++)); do
    start_copy $((gen + i))
    sleep 1.2
done
wait "$LOAD_PID"
LOAD_PID=""
cat "$T/wrk.log"
grep -q "requests in" "$T/wrk.log" || fail "wrk did not run"
! grep -qE "Socket errors|Non-2xx" "$T/wrk.log" || fail "wrk saw errors across 5 restarts"
say "PASS: wrk -c20, 8 s, 5 restarts: no timeout, no error"
