#!/usr/bin/env bash
# run-prefork.sh BUILD_DIR - a pre-forking server (tests/run-prefork-server.py:
# the master binds, 3 forked workers block in accept()), unmodified, under
# `baton run`: 10 restarts under baton-load with 0 errors, every old copy
# (master and workers) gone.
BUILD=${1:?usage: run-prefork.sh BUILD_DIR}
NAME=run-prefork
. "$(dirname "$0")/run-lib.sh"

run_need /usr/bin/python3
run_tmp
run_port
CMD=(/usr/bin/python3 "$(cd "$(dirname "$0")" && pwd)/run-prefork-server.py" "$PORT" 3)
run_restarts
# No worker of an old copy is left either (they were the masters' children,
# so they would be orphans of ours now, or of init).
left=$(pgrep -f "run-prefork-server.py $PORT" | wc -l)
[[ $left == 4 ]] || fail "expected the last master and its 3 workers, found $left processes"
