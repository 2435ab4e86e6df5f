#!/usr/bin/env bash
# run-listen-fds.sh BUILD_DIR CASE - `baton run --listen-fds`: a supervisor
# holds the listeners and passes them the systemd way (LISTEN_FDS); each
# new copy takes them over and waits for its program's READY=1.
#
#   static       the static C server (run-listen-fds-server.c, -static, no
#                libsystemd) restarted RESTARTS times under baton-load: by
#                running the same command again, by SIGHUP to the
#                supervisor and by `baton upgrade DIR`
#   go           the same with a Go server (go-systemd's activation and
#                daemon packages, from Debian)
#   go-build     builds that Go server, installing Debian's packages if
#                they are missing (a fixture of the go case)
#   dies         a new copy whose program exits before READY=1
#   never-ready  a new copy whose program never says READY=1 (and a
#                stranger's READY=1 on its NOTIFY_SOCKET is ignored)
#
# Under load in every case: no failed, refused or reset request; every
# response names its program's pid and generation; a failed copy exits 1
# saying why and the old copy serves on; a superseded supervisor exits 0;
# at the end exactly one supervisor and one program run, and after a TERM
# to it none. Exit status: 0 pass, 1 fail, 77 skip.
set -u

BUILD=${1:?usage: run-listen-fds.sh BUILD_DIR static|go|dies|never-ready}
CASE=${2:?usage: run-listen-fds.sh BUILD_DIR static|go|dies|never-ready}
NAME=run-listen-fds-$CASE
SRC=$(cd "$(dirname "$0")" && pwd)
BIN=$BUILD/bin
RESTARTS=${RESTARTS:-6}
SUPS=()  # every supervisor seen, in generation order
PROGS=() # the program of each generation, from its answers
LOAD_PID=""
PORT=""

say() { echo "$NAME: [$SECONDS] $*"; }
skip() {
    say "SKIP: $*"
    exit 77
}
fail() {
    local f
    say "FAIL: $*"
    for f in "$T"/*.log "$T"/*.err; do
        [[ -s $f ]] || continue
        echo "--- $(basename "$f")"
        tail -n 40 "$f"
    done
    exit 1
}

alive() { [[ -n $1 ]] && kill -0 "$1" 2>/dev/null && [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]]; }

cleanup() {
    local st=$? pid
    trap - EXIT INT TERM
    [[ -n $LOAD_PID ]] && kill "$LOAD_PID" 2>/dev/null
    for pid in "${PROGS[@]}" "${SUPS[@]}"; do
        alive "$pid" && kill -KILL "$pid" 2>/dev/null
    done
    wait 2>/dev/null
    [[ -n ${RUN_KEEP:-} ]] || rm -rf "$T"
    exit "$st"
}

# wait_for SECONDS COMMAND...: until COMMAND succeeds, at most SECONDS.
wait_for() {
    local end=$((SECONDS + $1))
    shift
    until "$@"; do
        ((SECONDS < end)) || return 1
        sleep 0.05
    done
}
gone() { ! alive "$1"; }

# One request on a fresh connection (bash's /dev/tcp: no curl needed);
# prints the body, "pid P generation G".
ask() {
    timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/$1 || exit 1
        printf "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" >&3
        sed -n "s/^\(pid [0-9]* generation [0-9]*\).*/\1/p" <&3' _ "$PORT"
}
# answers_from GEN: a fresh connection is answered by generation GEN.
answers_from() { [[ $(ask) == *" generation $1" ]]; }

owner_pid() { "$BIN/baton" status "$DIR" --json | sed -n 's/.*"pid":\([0-9]*\).*/\1/p'; }

# The supervisor's command line: the same for every copy (an array, not a
# function, so that $! of a copy started with & is the supervisor itself).
run_cmd() {
    RUN=("$BIN/baton" run --listen-fds --dir "$DIR" --listen web=tcp://127.0.0.1:0
        --ready-timeout "$1" --drain-timeout 20 --log "$T/baton.log")
}

# start_copy GEN ROUTE: the next copy, by running the same command again
# (copy), SIGHUP to the serving supervisor (hup) or `baton upgrade` (tool).
start_copy() {
    local gen=$1 route=$2 pid
    case $route in
    copy)
        "${RUN[@]}" -- "$EXE" >>"$T/run.err" 2>&1 &
        ;;
    hup) kill -HUP "${SUPS[-1]}" ;;
    tool) "$BIN/baton" upgrade "$DIR" --timeout 30 >>"$T/run.err" 2>&1 || fail "baton upgrade failed" ;;
    esac
    "$BIN/baton" wait "$DIR" --generation "$gen" --timeout 30 >/dev/null ||
        fail "generation $gen never served ($route)"
    pid=$(owner_pid)
    # The kernel picked the port (tcp://127.0.0.1:0); every copy keeps it.
    [[ -n $PORT ]] || PORT=$("$BIN/baton" status "$DIR" --json |
        sed -n 's/.*"local":"127\.0\.0\.1:\([0-9]*\)".*/\1/p')
    [[ -n $PORT ]] || fail "no port in baton status"
    [[ $route != copy || $pid == "$!" ]] || fail "generation $gen is pid $pid, not the copy we started ($!)"
    SUPS+=("$pid")
    wait_for 20 answers_from "$gen" || fail "generation $gen serves, but fresh connections do not reach its program"
    PROGS+=("$(ask | awk '{print $2}')")
    [[ -z $LOAD_PID ]] || load_sees "$gen"
    say "generation $gen: supervisor $pid, program ${PROGS[-1]} ($route)"
}

# load_sees GEN: the load's answers come from generation GEN now (its
# --interval-report lines name the generation of the latest answer).
load_sees() {
    wait_for 20 grep -qs "^interval .* ok=[1-9][0-9]* .* generation=$1\$" "$T/load.log" ||
        fail "the load never got answers from generation $1"
}

# The copy before the last: gone, its program too, and exit 0 if we started it.
check_superseded() {
    local sup=${SUPS[-2]} prog=${PROGS[-2]} st
    wait_for 30 gone "$prog" || fail "the old program $prog still runs"
    wait_for 10 gone "$sup" || fail "the old supervisor $sup still runs"
    if wait "$sup" 2>/dev/null; then st=0; else st=$?; fi
    # 127: not our child (started by SIGHUP or baton upgrade): no status to see.
    [[ $st == 0 || $st == 127 ]] || fail "the superseded supervisor $sup exited $st, not 0"
}

# How many processes run FILE.
count_exe() { find /proc -mindepth 2 -maxdepth 2 -name exe -lname "$1" 2>/dev/null | wc -l; }

start_load() {
    "$BIN/baton-load" --url "http://127.0.0.1:$PORT/" -c 8 -r 40 -d 100 -t 5000 -v \
        --interval-report 100 >"$T/load.log" 2>"$T/load.err" &
    LOAD_PID=$!
    load_sees 1
}

# Stop the load: no request may have failed, each answer named a pid and
# generation, and each program in PROGS answered some. With "exact", no
# other program answered.
stop_load() {
    local st n p
    kill -TERM "$LOAD_PID"
    if wait "$LOAD_PID"; then st=0; else st=$?; fi
    LOAD_PID=""
    grep -v '^interval ' "$T/load.log"
    [[ $st == 0 ]] || fail "baton-load saw errors (exit $st)"
    grep -q '^errors        0$' "$T/load.log" || fail "baton-load counted errors"
    ! grep -q 'requests without' "$T/load.log" || fail "answers without pid and generation"
    for ((n = 0; n < ${#PROGS[@]}; n++)); do
        p=${PROGS[n]}
        grep -q "generation $((n + 1)) pid $p: [1-9][0-9]* requests" "$T/load.log" ||
            fail "generation $((n + 1)) (pid $p) answered no request of the load"
    done
    n=$(grep -c 'generation [0-9]* pid [0-9]*: [1-9][0-9]* requests' "$T/load.log")
    [[ ${1:-} != exact || $n == "${#PROGS[@]}" ]] || fail "$n programs answered, not ${#PROGS[@]}"
}

# Exactly one copy serves; a TERM stops it (exit 0) and leaves no process.
finish() {
    local sup=${SUPS[-1]} prog=${PROGS[-1]} p n st
    for p in "${SUPS[@]:0:${#SUPS[@]}-1}" "${PROGS[@]:0:${#PROGS[@]}-1}"; do
        alive "$p" && fail "pid $p of an old copy still runs"
    done
    alive "$sup" && alive "$prog" || fail "the last copy ($sup, $prog) does not run"
    [[ $(owner_pid) == "$sup" ]] || fail "baton status names $(owner_pid), not $sup"
    n=$(count_exe "$EXE")
    [[ $n == 1 ]] || fail "$n programs run, not 1"
    kill -TERM "$sup"
    wait_for 30 gone "$sup" || fail "supervisor $sup did not stop on SIGTERM"
    if wait "$sup" 2>/dev/null; then st=0; else st=$?; fi
    [[ $st == 0 || $st == 127 ]] || fail "supervisor $sup exited $st after SIGTERM, not 0"
    gone "$prog" || fail "program $prog outlived its supervisor"
    n=$(count_exe "$EXE")
    [[ $n == 0 ]] || fail "$n programs left behind"
    "$BIN/baton" status "$DIR" >/dev/null 2>&1
    [[ $? == 3 ]] || fail "baton status still finds an owner"
    ls "$DIR"/notify.* >/dev/null 2>&1 && fail "a notify socket was left in $DIR"
    return 0
}

# The Go server, built from Debian's golang-go and go-systemd, offline,
# into the build dir. The go-build case (a ctest fixture that the go case
# requires, with a timeout of its own: installing Go may take a while)
# does it first; a go case run alone builds it too. When the packages
# cannot be installed, the reason is left in GO_SKIP and the go case skips.
GO_EXE=$BUILD/tests/run-listen-fds-server-go
GO_SKIP=$BUILD/tests/run-listen-fds-server-go.skip
build_go() {
    local gopath=/usr/share/gocode
    [[ $CASE == go-build ]] && rm -f "$GO_SKIP"
    [[ -e $GO_SKIP ]] && skip "$(cat "$GO_SKIP")"
    [[ $GO_EXE -nt $SRC/run-listen-fds-server.go ]] && return 0
    if ! command -v go >/dev/null 2>&1 || [[ ! -d $gopath/src/github.com/coreos/go-systemd/activation ]]; then
        if ! sh "$SRC/run-listen-fds-deps.sh" >"$T/deps.log" 2>&1; then
            echo "golang-go or golang-github-coreos-go-systemd-dev cannot be installed:" \
                "$(tail -n 1 "$T/deps.log")" >"$GO_SKIP"
            skip "$(cat "$GO_SKIP")"
        fi
    fi
    env CGO_ENABLED=0 GO111MODULE=off GOPATH=$gopath GOPROXY=off GOFLAGS= GOENV=off \
        GOCACHE="$BUILD/tests/go-cache" go build -o "$GO_EXE.tmp" "$SRC/run-listen-fds-server.go" \
        >"$T/go-build.log" 2>&1 || fail "go build failed"
    mv "$GO_EXE.tmp" "$GO_EXE"
}

T=$(mktemp -d "${TMPDIR:-/tmp}/baton-$NAME.XXXXXX") || exit 1
DIR=$T/coord
trap cleanup EXIT INT TERM
EXE=$BUILD/tests/run-listen-fds-server
case $CASE in
static | dies | never-ready) ;;
go-build)
    build_go
    say "PASS: built $GO_EXE"
    exit 0
    ;;
go)
    build_go
    EXE=$GO_EXE
    ;;
*)
    echo "usage: run-listen-fds.sh BUILD_DIR static|go|dies|never-ready|go-build" >&2
    exit 2
    ;;
esac
[[ -x $EXE && -x $BIN/baton && -x $BIN/baton-load ]] || fail "$EXE, baton or baton-load not built"
run_cmd 30

start_copy 1 copy
start_load

case $CASE in
static | go)
    for ((i = 2; i <= RESTARTS + 1; i++)); do
        route=copy
        ((i == 4)) && route=hup
        ((i == 6)) && route=tool
        start_copy "$i" "$route"
        check_superseded
    done
    stop_load exact
    ;;
dies)
    # A program that exits before READY=1: the new copy says so and exits 1.
    if "${RUN[@]}" -- "$EXE" --die 3 2>"$T/dies.err"; then st=0; else st=$?; fi
    cat "$T/dies.err"
    [[ $st == 1 ]] || fail "the failed copy exited $st, not 1"
    grep -q "exited with status 3 before it was ready; the old copy serves on" "$T/dies.err" ||
        fail "the failed copy did not say why"
    # A program that cannot be executed at all.
    if "${RUN[@]}" -- "$T/no-such-program" 2>"$T/noexec.err"; then st=0; else st=$?; fi
    [[ $st == 127 ]] || fail "a missing program gave $st, not 127"
    ;;
never-ready)
    # A program that never says READY=1, and a stranger that says it on
    # its NOTIFY_SOCKET: the new copy waits out --ready-timeout, exits 1.
    start=$SECONDS
    run_cmd 3
    "${RUN[@]}" -- "$EXE" --never-ready 2>"$T/never.err" &
    nr=$!
    run_cmd 30
    wait_for 10 test -S "$DIR/notify.$nr.sock" || fail "no notify socket for $nr"
    NOTIFY_SOCKET=$DIR/notify.$nr.sock "$EXE" --notify || fail "could not send READY=1 as a stranger"
    if wait "$nr"; then st=0; else st=$?; fi
    cat "$T/never.err"
    [[ $st == 1 ]] || fail "the never-ready copy exited $st, not 1"
    ((SECONDS - start >= 3)) || fail "the never-ready copy gave up before its timeout"
    grep -q "did not say READY=1 within 3 s; stopping it; the old copy serves on" "$T/never.err" ||
        fail "the never-ready copy did not say why"
    grep -q "ignored a message from pid" "$T/baton.log" || fail "the stranger's READY=1 was not ignored"
    ;;
esac

if [[ $CASE == dies || $CASE == never-ready ]]; then
    # The old copy served on, untouched, and the next copy takes over.
    alive "${SUPS[0]}" && alive "${PROGS[0]}" || fail "the old copy did not serve on"
    [[ $(owner_pid) == "${SUPS[0]}" ]] || fail "the old copy no longer owns $DIR"
    answers_from 1 || fail "generation 1 does not answer"
    [[ $(count_exe "$EXE") == 1 ]] || fail "the failed program still runs"
    start_copy 2 copy
    check_superseded
    # The never-ready program served too, as generation 2, until stopped.
    stop_load $([[ $CASE == dies ]] && echo exact)
fi
finish
say "PASS"
