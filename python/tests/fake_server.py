# SPDX-License-Identifier: MIT
"""A small session server in Python for the client's tests: the client
link of docs/session-protocol.md (HELLO, WELCOME, DATA, ACK, PING/PONG,
MOVE, RESUME, RESUMED, STAY, CLOSE), plain or TLS, one thread per
connection. Servers that share a Sessions object move sessions between
them the way the C servers do, without a peer link: the next server finds
the session, its token and its queue there.

Each connection's socket belongs to its thread alone: only that thread
reads, writes, shuts down and closes it (non-blocking, with a selector).
Other threads (the tests, another server taking the session over) queue
bytes with Conn.send() and ask for the end with Conn.end(). Two threads on
one socket went wrong under load: OpenSSL does not allow one SSL object to
be used from two threads at once; SSLSocket.shutdown() drops the TLS layer,
so the reader went on with the raw records as if they were frames
("another protocol version"); and a socket closed by one thread while
another was inside a read or write on it had its fd number reused by the
next test's sockets, whose bytes the old read then took (or whose stream
the old write corrupted).

It checks what the client sends as a C server would (numbering, acks) and
records any violation in Sessions.errors, which the tests require empty.
"""

import os
import selectors
import socket
import ssl
import threading
import time

from baton_session import frame as F

# How long a closing connection may take to write what is queued to it.
FLUSH_S = 2.0
# How long Server.close() waits for each of its threads.
JOIN_S = 5.0


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
    """One client connection, served by one thread (Server._serve), the
    only one that touches sock. send() and end() may be called from any
    thread; both wake the connection's thread through a socket pair."""

    def __init__(self, server, sock):
        self.server = server
        self.sock = sock
        self.dec = F.Decoder(F.RX_SERVER_NEW)
        self.state = None
        self.pings = 0
        self.closed_with = None
        self.received = []  # every frame from the client, in order
        self.ended = False  # its stream ended (closed by the client, or by us)
        self.thread = None
        sock.setblocking(False)
        self._fd = sock.fileno()
        # _lock guards _out, _ending, _closed and the wake-up pair (closed
        # under it, so that no send lands on a reused fd). Never held while
        # waiting: every call under it is non-blocking.
        self._lock = threading.Lock()
        self._out = bytearray()  # queued by send(), not yet taken
        self._ending = False
        self._closed = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        # The thread's own: what it is writing, and its selector.
        self._wbuf = bytearray()
        self._broken = False
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._wake_r, selectors.EVENT_READ)
        self._events = 0  # what sock is registered for (0: not registered)

    # -- any thread ------------------------------------------------------

    def send(self, raw):
        """Queue raw for the client; dropped once the connection is closed
        or broken (as a write to a dead socket was)."""
        with self._lock:
            if self._closed:
                return
            self._out += raw
            self._wake()

    def end(self):
        """Ask the connection's thread to stop reading (its stream ends
        there), write what is queued and close."""
        with self._lock:
            if self._closed:
                return
            self._ending = True
            self._wake()

    def _wake(self):
        # With _lock held. A full pair already has a wake-up pending.
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass

    # -- the connection's thread -------------------------------------------

    def frames(self):
        """Frames from the client until its stream ends, an error, or
        end(); writes what is queued meanwhile. Raises F.FrameError."""
        while True:
            f = self.dec.next()
            if f is not None:
                yield f
                continue
            data = self._recv()
            if not data:
                return
            self.dec.feed(data)

    def _recv(self):
        """Bytes from the client: b"" at the end of its stream, on an error
        or once end() was asked."""
        while True:
            self._flush()
            with self._lock:
                if self._ending:
                    return b""
            try:
                # A TLS socket may hold decrypted bytes that no selector
                # sees: read before waiting.
                return self.sock.recv(65536)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                self._wait(read=True)
            except ssl.SSLWantWriteError:
                self._wait(read=False, write=True)
            except (OSError, ValueError):
                return b""

    def handshake(self, ctx):
        """The TLS handshake (server side): False if it failed or end()
        came first."""
        try:
            self.sock = ctx.wrap_socket(self.sock, server_side=True,
                                        do_handshake_on_connect=False)
            while True:
                with self._lock:
                    if self._ending:
                        return False
                try:
                    self.sock.do_handshake()
                    return True
                except ssl.SSLWantReadError:
                    self._wait(read=True)
                except ssl.SSLWantWriteError:
                    self._wait(read=False, write=True)
        except (ssl.SSLError, OSError) as e:
            self.server.handshake_errors.append(e)
            return False

    def _flush(self):
        """Write what is queued, as far as the socket takes it now."""
        with self._lock:
            self._wbuf += self._out
            self._out.clear()
        if self._broken:
            self._wbuf.clear()
        while self._wbuf:
            try:
                # A TLS write that would block must be retried with the same
                # bytes at its start: a chunk from the same offset is.
                n = self.sock.send(self._wbuf[:16384])
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError,
                    ssl.SSLWantReadError):
                return
            except (OSError, ValueError):
                self._broken = True
                self._wbuf.clear()
                return
            del self._wbuf[:n]

    def _wait(self, read, write=False, timeout=None):
        """Until sock is readable (if read), writable (if write or anything
        is left to write), another thread woke us, or timeout."""
        ev = (selectors.EVENT_READ if read else 0) | (
            selectors.EVENT_WRITE if write or self._wbuf else 0)
        if ev != self._events:
            if not self._events:
                self._sel.register(self._fd, ev)
            elif not ev:
                self._sel.unregister(self._fd)
            else:
                self._sel.modify(self._fd, ev)
            self._events = ev
        self._sel.select(timeout)
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def close(self):
        """Write what is queued (for FLUSH_S at most), then close: the
        connection's thread, last."""
        end = time.monotonic() + FLUSH_S
        while True:
            self._flush()
            left = end - time.monotonic()
            if not self._wbuf or left <= 0:
                break
            self._wait(read=False, timeout=left)
        with self._lock:
            self._closed = True
            self._out.clear()
            self._sel.close()
            self._wake_r.close()
            self._wake_w.close()
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()


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
        self.conns = []  # connections through their handshake, in order
        self._all = []  # every connection accepted, for close()
        self._lock = threading.Lock()  # guards running, _all and the wake-up pair
        self.lsock = socket.create_server((ip, 0))
        self.lsock.setblocking(False)
        self.address = "tcp://%s:%d" % (ip, self.lsock.getsockname()[1])
        self.running = True
        self._wake_r, self._wake_w = socket.socketpair()
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def close(self):
        """Stop accepting, end every connection (the client sees its stream
        end) and wait for their threads: nothing of this server outlives
        the call, no thread of it touches a socket afterwards."""
        with self._lock:
            if self.running:
                self.running = False
                self._wake_w.send(b"\0")
            conns = list(self._all)
        for c in conns:
            c.end()
        self._accepter.join(JOIN_S)
        for c in conns:
            c.thread.join(JOIN_S)

    def _accept(self):
        sel = selectors.DefaultSelector()
        sel.register(self.lsock, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        try:
            while True:
                sel.select()
                with self._lock:
                    if not self.running:
                        return
                    try:
                        sock, _ = self.lsock.accept()
                    except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                        continue
                    except OSError:
                        return
                    conn = Conn(self, sock)
                    self._all.append(conn)
                    conn.thread = threading.Thread(target=self._serve, args=(conn,),
                                                   daemon=True)
                    conn.thread.start()
        finally:
            sel.close()
            with self._lock:
                self.running = False
                self.lsock.close()
                self._wake_r.close()
                self._wake_w.close()

    def _serve(self, conn):
        try:
            if self.ctx is not None and not conn.handshake(self.ctx):
                return
            with self._lock:
                self.conns.append(conn)
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
            conn.close()

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
            old.end()
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
