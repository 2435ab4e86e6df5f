#!/usr/bin/env bash
# compat/gunicorn.sh BUILD_DIR - gunicorn (python3-gunicorn), a tiny WSGI app
# on 2 sync workers: the master binds, the forked workers select() and
# accept; each response closes its connection. Under wrk.
BUILD=${1:?usage: gunicorn.sh BUILD_DIR}
NAME=compat-gunicorn
. "$(dirname "$0")/../run-lib.sh"
. "$(dirname "$0")/lib.sh"
compat_need gunicorn
SERVER="gunicorn $(/usr/bin/python3 -c 'import gunicorn; print(gunicorn.__version__)')"
MODE="master + 2 sync workers (a connection per request); wrk -c$CONNS"
NEEDS="nothing of its own (sync workers close every connection)"
run_tmp
run_port
cat >"$T/app.py" <<'PY'
def app(environ, start_response):
    body = b"hello from gunicorn\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
PY
CMD=(/usr/bin/python3 -m gunicorn --bind "127.0.0.1:$PORT" --workers 2 --chdir "$T"
    --error-logfile "$T/gunicorn.err" app:app)
run_restarts
