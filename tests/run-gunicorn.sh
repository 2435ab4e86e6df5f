#!/usr/bin/env bash
# run-gunicorn.sh BUILD_DIR - gunicorn (a master that binds, 2 sync
# workers forked from it that select() and accept()), unmodified, under
# `baton run`: 10 restarts under baton-load with 0 errors. At its stop
# signal a superseded master calls getsockname() on its listener and
# unlink()s the path if it is a unix address: the retired listener must
# still report its TCP address, so that every old master exits 0 having
# stopped its workers, and no worker is left behind as an orphan.
BUILD=${1:?usage: run-gunicorn.sh BUILD_DIR}
NAME=run-gunicorn
. "$(dirname "$0")/run-lib.sh"

run_need /usr/bin/python3
/usr/bin/python3 -c 'import gunicorn' 2>/dev/null || skip "python3-gunicorn is not installed"
run_tmp
run_port
cat >"$T/app.py" <<'PY'
import os
def app(environ, start_response):
    body = b"hello from gunicorn worker %d\n" % os.getpid()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
PY
CMD=(/usr/bin/python3 -m gunicorn --workers 2 --bind "127.0.0.1:$PORT" --chdir "$T"
    --graceful-timeout 5 app:app)
run_restarts

last=${SERVERS[-1]}
for pid in "${SERVERS[@]:0:${#SERVERS[@]}-1}"; do
    st=$(exit_status "$pid")
    [[ $st == 0 ]] || fail "old master $pid exited with status '$st', not 0"
done
say "PASS: every old master exited 0"
# Only the last master and its workers: a master that stopped cleanly
# stopped its workers before it exited.
deadline=$((SECONDS + 5))
while :; do
    stray=()
    for pid in $(pgrep -f "gunicorn .*127.0.0.1:$PORT"); do
        [[ $pid == "$last" || $(ps -o ppid= -p "$pid" | tr -d ' ') == "$last" ]] ||
            stray+=("$pid")
    done
    [[ ${#stray[@]} == 0 ]] && break
    ((SECONDS < deadline)) || fail "workers of old masters left behind: ${stray[*]}"
    sleep 0.2
done
say "PASS: no worker of an old master left behind"
