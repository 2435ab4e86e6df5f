# SPDX-License-Identifier: MIT
"""A small session server in Python for the client's tests: the client
link of docs/session-protocol.md (HELLO, WELCOME, DATA, ACK, PING/PONG,
MOVE, RESUME, RESUMED, STAY, CLOSE), plain or TLS, one thread per
connection with blocking sockets. Servers that share a Sessions object
move sessions between them the way the C servers do, without a peer
link: the next server finds the session, its token and its queue there.

It checks what the client sends as a C server would (numbering, acks) and
records any violation in Sessions.errors, which the tests require empty.
"""

import os
import socket
import ssl
import threading
import time

from baton_session import frame as F


class State:
    """One session's counters and unacknowledged messages, server side."""

    def __init__(self):
        self.id = os.urandom(16)
        self.in_handled = 0  # client messages handled
        self.out = []  # every message sent to the client (index seq-1)
        self.out_acked = 0
        self.token = None
        self.got = []  # client messages, in order, once each
        self.conn = None  # the connection that holds the session
        self.frozen = False


class Sessions:
    def __init__(self):
        self.lock = threading.Condition()
        self.by_id = {}
        self.errors = []

    def error(self, text):
        with self.lock:
            self.errors.append(text)
            self.lock.notify_all()


class Conn:
    def __init__(self, server, sock):
        self.server = server
        self.sock = sock
        self.dec = F.Decoder(F.RX_SERVER_NEW)
        self.state = None
        self.pings = 0
        self.wlock = threading.Lock()
        self.closed_with = None
        self.received = []  # every frame from the client, in order
        self.ended = False  # its stream ended (closed by the client, or by us)

    def send(self, raw):
        with self.wlock:
            try:
                self.sock.sendall(raw)
            except OSError:
                pass

    def frames(self):
        while True:
            f = self.dec.next()
            if f is not None:
                yield f
                continue
            try:
                data = self.sock.recv(65536)
            except (OSError, ValueError):
                return
            if not data:
                return
            self.dec.feed(data)


class Server:
    """Accepts on ip, port 0. behaviour hooks: on_hello(conn) may answer
    instead of WELCOME (return True when it did); echo: answer every DATA
    with DATA carrying the same bytes."""

    def __init__(self, sessions, ip="127.0.0.1", ctx=None, idle_ms=60000, echo=True):
        self.sessions = sessions
        self.ctx = ctx
        self.idle_ms = idle_ms
        self.echo = echo
        self.on_hello = None
        self.refuse_resume = None  # a CLOSE code to answer RESUME with
        self.handshake_errors = []
        self.conns = []
        self.lsock = socket.create_server((ip, 0))
        self.address = "tcp://%s:%d" % (ip, self.lsock.getsockname()[1])
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self.running = False
        self.lsock.close()
        for c in list(self.conns):
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.sock.close()

    def _accept(self):
        while self.running:
            try:
                sock, _ = self.lsock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock):
        if self.ctx is not None:
            try:
                sock = self.ctx.wrap_socket(sock, server_side=True)
            except (ssl.SSLError, OSError) as e:
                self.handshake_errors.append(e)
                sock.close()
                return
        conn = Conn(self, sock)
        self.conns.append(conn)
        try:
            for f in conn.frames():
                with self.sessions.lock:
                    conn.received.append(f)
                if conn.closed_with is not None:
                    # The protocol: nothing after CLOSE, on any connection.
                    self.sessions.error("%s after CLOSE" % F.type_name(f.type))
                if not self._frame(conn, f):
                    break
            else:
                with self.sessions.lock:
                    conn.ended = True
                    self.sessions.lock.notify_all()
        except F.FrameError as e:
            self.sessions.error("bad frame from the client: %s" % e)
        finally:
            st = conn.state
            if st is None or st.conn is not conn:
                sock.close()

    def _frame(self, conn, f):
        ss = self.sessions
        if f.type == F.HELLO:
            if self.on_hello is not None and self.on_hello(conn):
                return True
            st = State()
            with ss.lock:
                ss.by_id[st.id] = st
                st.conn = conn
            conn.state = st
            conn.dec = F.Decoder(F.RX_SERVER_SESSION)
            conn.send(F.welcome(st.id))
            return True
        if f.type == F.RESUME:
            return self._resume(conn, f)
        st = conn.state
        if f.type == F.CLOSE:
            with ss.lock:
                conn.closed_with = (f.code, f.text)
                ss.lock.notify_all()
            return True  # read on: the client must send nothing more, and close
        if f.type == F.PING:
            conn.pings += 1
            conn.send(F.pong(self.idle_ms))
            return True
        with ss.lock:
            if st.frozen or st.conn is not conn:
                return True  # left unread, as a frozen C session
            ack = f.ack if f.type == F.DATA else f.count
            if ack > len(st.out):
                ss.errors.append("ack %d of %d sent" % (ack, len(st.out)))
            st.out_acked = max(st.out_acked, ack)
            if f.type == F.ACK:
                ss.lock.notify_all()
                return True
            if f.seq <= st.in_handled:
                return True  # a duplicate: dropped, as the protocol says
            if f.seq != st.in_handled + 1:
                ss.errors.append("gap: DATA %d after %d" % (f.seq, st.in_handled))
                return False
            st.in_handled += 1
            st.got.append(f.data)
            reply = None
            if self.echo:
                st.out.append(f.data)
                reply = F.data(len(st.out), st.in_handled, f.data)
            ss.lock.notify_all()
        if reply is not None:
            conn.send(reply)
        return True

    def _resume(self, conn, f):
        ss = self.sessions
        if self.refuse_resume is not None:
            conn.send(F.close(self.refuse_resume, "refused by the test"))
            return False
        with ss.lock:
            st = ss.by_id.get(f.id)
            if st is None:
                conn.send(F.close(F.UNKNOWN, "no such session"))
                return False
            if st.token is None or st.token != f.token:
                conn.send(F.close(F.TOKEN, "bad token"))
                return False
            st.token = None
            if not st.out_acked <= f.handled <= len(st.out):
                ss.errors.append("RESUME handled %d outside %d..%d"
                                 % (f.handled, st.out_acked, len(st.out)))
            st.out_acked = f.handled
            old = st.conn
            st.conn = conn
            st.frozen = False
            conn.state = st
            conn.dec = F.Decoder(F.RX_SERVER_SESSION)
            raw = F.resumed(st.in_handled) + b"".join(
                F.data(i + 1, st.in_handled, st.out[i]) for i in range(f.handled, len(st.out)))
            ss.lock.notify_all()
        conn.send(raw)
        if old is not None:
            try:
                old.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return True


def move(sessions, st, next_server):
    """Tell the client of st to move to next_server: the session freezes
    at its current connection until the next server resumes it."""
    with sessions.lock:
        st.token = os.urandom(32)
        st.frozen = True
        conn = st.conn
        raw = F.move(st.token, next_server.address)
    conn.send(raw)


def push(sessions, st, message):
    """Send the client a message from the server's side."""
    with sessions.lock:
        st.out.append(message)
        raw = F.data(len(st.out), st.in_handled, message)
        conn = st.conn
    conn.send(raw)


def wait(sessions, cond, timeout=5.0):
    end = time.monotonic() + timeout
    with sessions.lock:
        while not cond():
            left = end - time.monotonic()
            if left <= 0:
                return False
            sessions.lock.wait(left)
    return True


CERTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "certs")


def server_context(name="server"):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(os.path.join(CERTS, name + ".pem"), os.path.join(CERTS, name + ".key"))
    return ctx
