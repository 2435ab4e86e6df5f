#!/usr/bin/env bash
# run-standby.sh BUILD_DIR - `baton run --standby` with a server nobody
# here wrote (`python3 -m http.server`): once a copy serves, a copy of the
# program waits parked before its main() (a child of the copy, named by
# `baton status`); each `baton upgrade` wakes it, so the new generation is
# that very process, and the new copy parks the next one. Five upgrades
# under baton-load: 0 errors, every old copy gone. And --standby is refused
# with --listen-fds (exit 2).
BUILD=${1:?usage: run-standby.sh BUILD_DIR}
NAME=run-standby
. "$(dirname "$0")/run-lib.sh"

run_need /usr/bin/python3
run_tmp
run_port
mkdir -p "$T/www"
echo "hello from python" >"$T/www/index.html"
CMD=(/usr/bin/python3 -m http.server --bind 127.0.0.1 --directory "$T/www" "$PORT")
RUN_OPTS=(--standby)

"$BIN/baton" run --listen-fds --listen "web=tcp://127.0.0.1:$PORT" --standby -- true \
    >"$T/usage.err" 2>&1
st=$?
[[ $st == 2 ]] || fail "--standby with --listen-fds: exit $st, not 2: $(cat "$T/usage.err")"

# The standby of the generation that serves, as `baton status --json` names
# it; waits for it (bounded), since it is started 200 ms after ready.
standby_of() {
    local n=0 s
    while ((n++ < 200)); do
        s=$("$BIN/baton" status "$DIR" --json | sed -n 's/.*"standby_pid":\([0-9]*\).*/\1/p' | head -1)
        [[ -n $s ]] && alive "$s" && {
            echo "$s"
            return 0
        }
        sleep 0.05
    done
    return 1
}
owner() { "$BIN/baton" status "$DIR" --json | sed -n 's/^{"serving":true,"pid":\([0-9]*\).*/\1/p'; }

start_copy 1
"$BIN/baton-load" --url "http://127.0.0.1:$PORT/index.html" -c 4 -r 200 -d 12 -t 5000 \
    >"$T/load.log" 2>&1 &
LOAD_PID=$!
for i in 2 3 4 5 6; do
    prev=$(owner)
    s=$(standby_of) || fail "generation $((i - 1)) (pid $prev) parks no standby"
    ppid=$(awk '/^PPid:/ {print $2}' "/proc/$s/status")
    [[ $ppid == "$prev" ]] || fail "standby $s is a child of $ppid, not of the owner $prev"
    "$BIN/baton" upgrade "$DIR" >"$T/upgrade.log" 2>&1 || fail "baton upgrade $i failed: $(cat "$T/upgrade.log")"
    now=$(owner)
    [[ $now == "$s" ]] || fail "generation $i is pid $now, not the standby $s"
    SERVERS+=("$s")
    wait_gone "$prev" 30 || fail "generation $((i - 1)) (pid $prev) did not stop"
    say "generation $i: the standby $s, woken"
done
wait "$LOAD_PID"
st=$?
LOAD_PID=""
cat "$T/load.log"
[[ $st == 0 ]] || fail "baton-load saw errors (exit $st)"
say "PASS: 5 upgrades, each woke the parked standby; 0 errors under load"
