#!/usr/bin/env bash
# readme-quickstart.sh BUILD_DIR - the README's quick start, as CMake built
# it from README.md (baton-quickstart), does what the README says: it
# serves (each connection gets "hello from pid N"); a second copy started
# with the same directory takes over and the first exits 0; and `baton
# upgrade DIR` makes the serving copy start its own successor, which takes
# over in turn. Each step is waited for with `baton wait`, the old copy's
# exit with `wait`; a watchdog bounds every wait.
#
# shellcheck disable=SC2317 # cleanup runs from a trap

set -u
BUILD=${1:?usage: readme-quickstart.sh BUILD_DIR}
BIN=$BUILD/bin
QS=$BIN/baton-quickstart
[[ -x $QS && -x $BIN/baton ]] || { echo "readme-quickstart: build first ($QS)"; exit 1; }

T=$(mktemp -d "${TMPDIR:-/tmp}/baton-qs.XXXXXX") || exit 1
DIR=$T/coord
PIDS=() # every copy seen, started here or by `baton upgrade`

cleanup() {
    local p
    PIDS+=("$(owner pid)") # a copy that took over after a failure
    for p in "${PIDS[@]}"; do
        # Only a copy of ours: pids get reused.
        tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -q " $DIR " &&
            kill "$p" 2>/dev/null
    done
    rm -rf "$T"
}
trap cleanup EXIT

fail() {
    echo "readme-quickstart: FAIL: $*"
    tail -n +1 "$T"/*.log 2>/dev/null
    exit 1
}

owner() { # field: pid or port
    local j
    j=$("$BIN/baton" status "$DIR" --json 2>/dev/null) || return 1
    case $1 in
    pid) sed -n 's/.*"pid":\([0-9][0-9]*\).*/\1/p' <<<"$j" ;;
    port) sed -n 's/.*"local":"[^"]*:\([0-9][0-9]*\)".*/\1/p' <<<"$j" ;;
    esac
}

# The line a fresh connection gets.
hello() {
    local line=""
    exec 3<>"/dev/tcp/127.0.0.1/$PORT" || return 1
    read -r -t 10 line <&3
    exec 3<&-
    echo "$line"
}

# wait_gen N: generation N serves, within 20 s.
wait_gen() {
    "$BIN/baton" wait "$DIR" --generation "$1" --timeout 20 >/dev/null ||
        fail "generation $1 did not serve"
}

# exited PID: the superseded copy PID (our child) exits 0, within 20 s.
exited() {
    local i rc
    for ((i = 0; i < 400; i++)); do
        # Gone (bash reaped it) or a zombie: it has exited.
        [[ $(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null || echo Z) == Z ]] && break
        sleep 0.05
    done
    ((i < 400)) || fail "the superseded copy $1 did not exit"
    wait "$1"
    rc=$?
    [[ $rc -eq 0 ]] || fail "the superseded copy $1 exited with $rc, not 0"
}

"$QS" "$DIR" 0 >"$T/a.log" 2>&1 &
A=$!
PIDS+=("$A")
wait_gen 1
[[ $(owner pid) == "$A" ]] || fail "generation 1 is pid $(owner pid), not $A"
PORT=$(owner port)
[[ -n $PORT ]] || fail "no port in baton status"
got=$(hello)
[[ $got == "hello from pid $A" ]] || fail "first copy answered '$got'"

# The README: start it again with the same directory.
"$QS" "$DIR" 0 >"$T/b.log" 2>&1 &
B=$!
PIDS+=("$B")
wait_gen 2
exited "$A"
got=$(hello)
[[ $got == "hello from pid $B" ]] || fail "after the second copy: '$got', not pid $B"
grep -q "pid $B serves tcp://0.0.0.0:0, generation 2" "$T/b.log" ||
    fail "the second copy did not say it serves generation 2"

# The README: or `baton upgrade DIR`; B starts C itself.
"$BIN/baton" upgrade "$DIR" --timeout 20 >"$T/upgrade.log" 2>&1 || fail "baton upgrade failed"
wait_gen 3
C=$(owner pid)
PIDS+=("$C")
[[ -n $C && $C != "$B" ]] || fail "baton upgrade: pid $C serves, not a new copy"
exited "$B"
got=$(hello)
[[ $got == "hello from pid $C" ]] || fail "after baton upgrade: '$got', not pid $C"

echo "readme-quickstart: pids $A -> $B -> $C each took over on port $PORT; old copies exited 0"
