#!/usr/bin/env bash
# run-probation.sh BUILD_DIR - `baton run --probation` with a server nobody
# wrote for baton (python3 -m http.server), under baton-load:
#   - the first copy serves on beside the second during its probation;
#   - the second copy SIGKILLed inside it: the first owns the directory
#     again (same pid, generation 1) and says so in the shim's log;
#   - a third copy passes its probation: the first then drains and exits;
#   - baton-load sees no refused connection, no timeout and no error status
#     (only connections the killed copy held may break);
#   - out-of-range --probation and --max-generations are usage errors (2).
BUILD=${1:?usage: run-probation.sh BUILD_DIR}
NAME=run-probation
. "$(dirname "$0")/run-lib.sh"

# Bad values first: nothing starts.
for bad in "--probation -1" "--probation 86401" "--probation 1.2.3" "--probation x" \
    "--probation ." "--max-generations 1" "--max-generations 1025" "--max-generations -2"; do
    # shellcheck disable=SC2086 # the option and its value, split on purpose
    "$BIN/baton" run --dir "${TMPDIR:-/tmp}/baton-run-probation-none" $bad -- /bin/true \
        >/dev/null 2>&1
    st=$?
    [[ $st == 2 ]] || fail "baton run $bad exited $st, not 2 (usage)"
done
say "PASS: out-of-range --probation and --max-generations are usage errors"

run_need /usr/bin/python3
run_tmp
run_port
mkdir -p "$T/www"
echo "hello from python" >"$T/www/index.html"
CMD=(/usr/bin/python3 -m http.server --bind 127.0.0.1 --directory "$T/www" "$PORT")
RUN_OPTS=(--probation 3)
DRAIN=2

owner() { "$BIN/baton" status "$DIR" --json 2>/dev/null | sed -n 's/.*"pid":\([0-9]*\),"generation":\([0-9]*\).*/\1 \2/p'; }

start_copy 1
first=${SERVERS[0]}
"$BIN/baton-load" --url "http://127.0.0.1:$PORT/index.html" -c 10 -r 100 -d 14 -t 5000 \
    >"$T/load.log" 2>&1 &
LOAD_PID=$!
sleep 1 # load before the upgrade

start_copy 2
second=${SERVERS[1]}
alive "$first" || fail "the first copy exited during its successor's probation"
sleep 0.5 # inside the 3 s probation
kill -KILL "$second"
wait "$second" 2>/dev/null # its end is the point, not news
deadline=$((SECONDS + 5))
until [[ $(owner) == "$first 1" ]]; do
    ((SECONDS < deadline)) || fail "the first copy did not take the directory back: $(owner)"
    sleep 0.05
done
grep -q "died on probation" "$T/shim.log" || fail "the shim's log does not say the rollback"
say "PASS: the second copy killed on probation; the first (pid $first) owns generation 1 again"

start_copy 2
third=${SERVERS[2]}
"$BIN/baton" wait "$DIR" --generation 2 --final --timeout 10 >/dev/null ||
    fail "baton wait --final did not see generation 2 pass its probation"
# 3 s of probation, then the first drains (at most DRAIN s) and exits.
deadline=$((SECONDS + 10))
while alive "$first"; do
    ((SECONDS < deadline)) || fail "the first copy still runs after its successor's probation"
    sleep 0.1
done
[[ $(owner) == "$third 2" ]] || fail "owner is $(owner), not $third at generation 2"
wait "$LOAD_PID"
LOAD_PID=""
cat "$T/load.log"
# A killed server takes the connections it had accepted with it (a reset,
# an end before the response or in the middle of it); at most one per load
# connection in flight. Nothing else may fail: no refused connect, no
# timeout, no error status.
count() { awk -v k="$1" '$1 == k { print $2; exit }' "$T/load.log"; }
grep -q "^result" "$T/load.log" || fail "baton-load did not finish"
for k in connect-refused connect-other timeout non-2xx; do
    [[ $(count "$k") == 0 ]] || fail "baton-load: $k $(count "$k")"
done
lost=$(($(count reset) + $(count eof-before-response) + $(count bad-response)))
((lost <= 20)) || fail "$lost connections broke, more than the killed copy can have held"
say "PASS: a rollback and a passed probation under load: 0 refused, 0 timeouts," \
    "$lost connection(s) lost with the killed copy"
