#!/usr/bin/env bash
# compat/uvicorn.sh BUILD_DIR - uvicorn (python3-uvicorn, asyncio, h11), a
# tiny ASGI app, one process. uvicorn has no per-connection request limit,
# so the app answers "Connection: close" on every 100th request of a
# connection, so that an old copy drains. Under wrk.
BUILD=${1:?usage: uvicorn.sh BUILD_DIR}
NAME=compat-uvicorn
. "$(dirname "$0")/../run-lib.sh"
. "$(dirname "$0")/lib.sh"
compat_need uvicorn
SERVER="uvicorn $(/usr/bin/python3 -c 'import uvicorn; print(uvicorn.__version__)')"
MODE="one process, asyncio + h11, keep-alive; wrk -c$CONNS"
NEEDS="keep-alive ended by the app (connection: close every 100 requests): uvicorn has no per-connection limit (without it, 20 resets at the drain timeout in a run)"
run_tmp
run_port
cat >"$T/app.py" <<'PY'
served = {}

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    peer = tuple(scope.get("client") or ())
    n = served.get(peer, 0) + 1
    headers = [(b"content-type", b"text/plain")]
    if n >= 100:
        headers.append((b"connection", b"close"))
        served.pop(peer, None)
    else:
        served[peer] = n
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"hello from uvicorn\n"})
PY
CMD=(/usr/bin/python3 -m uvicorn --host 127.0.0.1 --port "$PORT" --app-dir "$T"
    --no-access-log app:app)
run_restarts
