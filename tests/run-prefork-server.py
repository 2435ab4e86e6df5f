#!/usr/bin/env python3
# run-prefork-server.py PORT [WORKERS] - a small pre-forking HTTP/1.1 server
# for tests/run-prefork.sh, written the classic way and knowing nothing of
# baton: the master binds and listens, forks WORKERS workers that each loop
# on a blocking accept(), and waits. A keep-alive connection is answered
# with "Connection: close" after 20 requests. SIGTERM to the master stops
# the workers and then the master.
import os
import signal
import socket
import sys

PORT = int(sys.argv[1])
WORKERS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
BODY = b"hello from a pre-forked worker\n"


def serve(conn):
    buf = b""
    for n in range(1, 21):
        while b"\r\n\r\n" not in buf:
            data = conn.recv(4096)
            if not data:
                return
            buf += data
        head, buf = buf.split(b"\r\n\r\n", 1)
        close = n == 20 or b"connection: close" in head.lower()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s"
                     % (len(BODY), b"Connection: close\r\n" if close else b"", BODY))
        if close:
            return


def worker(lsock):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    while True:
        conn, _ = lsock.accept()
        try:
            serve(conn)
        except OSError:
            pass
        finally:
            conn.close()


def main():
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", PORT))
    lsock.listen(128)
    pids = []
    for _ in range(WORKERS):
        pid = os.fork()
        if pid == 0:
            try:
                worker(lsock)
            finally:
                os._exit(0)
        pids.append(pid)

    def stop(signum, frame):
        for p in pids:
            try:
                os.kill(p, signal.SIGTERM)
            except OSError:
                pass
        for p in pids:
            try:
                os.waitpid(p, 0)
            except OSError:
                pass
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    while True:
        signal.pause()


main()
