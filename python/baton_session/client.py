# SPDX-License-Identifier: MIT
"""The client side of a session (docs/session-protocol.md): one session,
one link to the server that holds it and, while a move is under way, a
second link to the next server. Sends are held while moving and resent
from the count the next server reports. A quiet live session is kept from
the server's idle limit with PING frames.

A port of session/client.c, with the same states, callbacks and errors;
no threads. Every link is registered in one epoll object whose fd the
application polls (fileno()); deadlines are reported by timeout(), since
Python 3.11 has no timerfd.
"""

import errno
import ipaddress
import os
import select
import socket
import ssl
import time

from . import frame as F

OPENING, LIVE, MOVING, DEAD = "opening", "live", "moving", "dead"
# Once RESUME is out, how many timeouts to wait for the servers to end the
# move before giving up on it ourselves (as the C client).
RESUMED_WAIT_FACTOR = 6
# Stop encoding queued messages into a write buffer beyond this size.
WBUF_SOFT = 256 * 1024
# Bytes read from one link per dispatch before the others get their turn.
READ_BUDGET = 1 << 20
# Acknowledge at least every this many handled messages, even within one
# dispatch: the server keeps at most QUEUE_MAX unacknowledged and ends a
# session whose client lets it fill.
ACK_EVERY = 128

MESSAGES = {
    0: "closed normally",
    errno.ECONNABORTED: "session lost (its server went away before handing it on)",
    errno.EACCES: "refused: resume token forged, replayed or stale, or a TLS "
                  "certificate that does not verify",
    errno.ENOENT: "unknown session",
    errno.EPROTO: "protocol error (malformed or unexpected frame)",
    errno.EPROTONOSUPPORT: "unsupported protocol version",
    errno.EMSGSIZE: "frame or message too large",
    errno.EBADMSG: "a counter acknowledges more than was sent",
    errno.ETIMEDOUT: "timed out (a deadline or the idle limit passed)",
    errno.ECONNRESET: "connection reset",
    errno.ECONNREFUSED: "connection refused",
    errno.ENOBUFS: "too many unacknowledged messages",
    errno.ENOTCONN: "session ended",
    errno.ESHUTDOWN: "server shutting down",
    errno.ECANCELED: "move called off by the server",
    errno.EUSERS: "server full: it holds as many sessions as it may",
    errno.EINVAL: "invalid argument",
}


def strerror(err):
    """A description of an errno value passed to a callback or raised."""
    return MESSAGES.get(err) or os.strerror(err)


class SessionError(OSError):
    """A session failure: errno as in the C client's callbacks (positive
    here), strerror its description, detail what happened."""

    def __init__(self, err, detail=""):
        super().__init__(err, strerror(err))
        self.detail = detail

    def __str__(self):
        base = "[Errno %d] %s" % (self.errno, self.strerror)
        return "%s: %s" % (self.detail, base) if self.detail else base


class _Proto(Exception):
    """A frame that is well formed but wrong here: close with its errno."""

    def __init__(self, err, why):
        super().__init__(err, why)
        self.errno = err
        self.why = why


def parse_address(address):
    """("ip", port, family) from "tcp://A.B.C.D:PORT" or "tcp://[v6]:PORT";
    numeric hosts only, as the C library (resolving would block)."""
    if not isinstance(address, str) or not address.startswith("tcp://") \
            or len(address) > F.ADDR_MAX:
        raise ValueError("address must be tcp://IP:PORT: %r" % (address,))
    rest = address[6:]
    host, sep, port = rest.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ValueError("address must be tcp://IP:PORT: %r" % (address,))
    if host.startswith("[") and host.endswith("]") and len(host) > 2:
        ip = ipaddress.IPv6Address(host[1:-1])
        return str(ip), int(port), socket.AF_INET6
    try:
        ip = ipaddress.IPv4Address(host)
    except ValueError:
        raise ValueError("address must be tcp://IP:PORT: %r" % (address,)) from None
    return str(ip), int(port), socket.AF_INET


def tls_context(cafile=None, cadata=None):
    """A client context for session links: TLS 1.3, the server verified
    against cafile (or cadata) by the IP address the client connects to."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile, cadata=cadata)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


class _Link:
    """A stream connection with its buffers."""

    __slots__ = ("sock", "ip", "dec", "wbuf", "connected", "ready", "eof", "err",
                 "events", "tls_want_write", "why")

    def __init__(self, sock, ip):
        self.sock = sock
        self.ip = ip
        self.dec = F.Decoder(F.RX_CLIENT)
        self.wbuf = bytearray()
        self.connected = False  # the TCP connect completed
        self.ready = False  # connected, and the TLS handshake (if any) done
        self.eof = False
        self.err = 0
        self.events = 0
        self.tls_want_write = False
        self.why = ""  # what ended the stream, when more than an EOF


class Client:
    """One session with a session server, driven by the application's loop.

    Put fileno() in your poll/epoll/selector set for reading and call
    dispatch() when it is readable, and when timeout() seconds have passed
    (timeout() is None when no deadline is set). dispatch() never blocks;
    the callbacks run from it:

      on_open(client)                      the first server welcomed us
      on_message(client, data: bytes)      in order, exactly once (required)
      on_moved(client, address, error, pause_s)
                                           error None: the session moved to
                                           address; a SessionError: the move
                                           was called off and the session
                                           stays; pause_s: how long sends
                                           were held back
      on_lost(client, error)               the session ended: error None if
                                           the server closed it normally,
                                           else a SessionError
      log(client, level, text)             syslog levels, as the C library

    Callbacks may call send() and close(), not dispatch().

    TLS: pass ssl_context (an ssl.SSLContext) or cafile; the server is
    verified by the IP address of the address connected to, the first one
    and every one a MOVE names, or by server_name if given (one name for
    every server of a deployment). Plain TCP only with insecure=True.
    """

    def __init__(self, address, *, on_message, on_open=None, on_moved=None, on_lost=None,
                 log=None, ssl_context=None, cafile=None, insecure=False, server_name=None,
                 timeout=5.0):
        if not callable(on_message):
            raise ValueError("on_message is required")
        if insecure and (ssl_context is not None or cafile is not None):
            raise ValueError("insecure=True with a TLS context or cafile")
        if ssl_context is not None and cafile is not None:
            raise ValueError("pass ssl_context or cafile, not both")
        if not insecure and ssl_context is None and cafile is None:
            raise ValueError("TLS needs ssl_context or cafile; plain TCP needs insecure=True")
        if insecure and server_name is not None:
            raise ValueError("insecure=True with a server_name")
        if timeout is None or timeout <= 0:
            raise ValueError("timeout must be > 0 seconds")
        parse_address(address)
        self._ssl = ssl_context if ssl_context is not None else (
            tls_context(cafile) if cafile is not None else None)
        self._server_name = server_name
        self._timeout = float(timeout)
        self.on_message, self.on_open, self.on_moved = on_message, on_open, on_moved
        self.on_lost, self._log = on_lost, log
        self._ep = select.epoll()
        self._links = {}  # fd -> _Link
        self._cur = self._nxt = None
        self.state = OPENING
        self.id = ""
        self._id = b""
        self.address = address
        self._naddr = ""
        self.in_handled = 0  # messages from the server given to on_message
        self._in_acked_sent = 0  # the count our last ACK or DATA carried
        self._out_sent = 0  # our messages written (numbered 1..out_sent)
        self._q = []  # messages base+1 .. base+len(q), unacknowledged
        self._q_base = 0
        self._q_bytes = 0
        self._move_start = 0.0
        self._tmo_at = None  # the open or move deadline (monotonic s)
        self._ping_at = None
        self._ping_s = 0.0  # a third of the server's idle limit (0: no PING)
        self._last_out = time.monotonic()
        self._resume_sent = False
        self._in_dispatch = False
        self.last_error = ""
        try:
            self._cur = self._link_open(address)
        except BaseException:
            self._ep.close()
            raise
        self._cur.wbuf += F.hello()
        self._arm(self._timeout)

    # -- the application's side ------------------------------------------

    def fileno(self):
        """The fd to poll for reading (an epoll fd owned by the client)."""
        return self._ep.fileno()

    def timeout(self):
        """Seconds until dispatch() must run for a deadline (a PING, the
        open or move timeout), 0 if at once, None if none is set."""
        at = self._tmo_at
        if self._ping_at is not None and (at is None or self._ping_at < at):
            at = self._ping_at
        if at is None:
            return None
        return max(0.0, at - time.monotonic())

    @property
    def alive(self):
        return self.state != DEAD

    def send(self, message):
        """Queue a message to the server (written at once if possible, kept
        until acknowledged, resent after a move). Raises SessionError:
        EMSGSIZE (over 65536 bytes), ENOBUFS (1024 messages or 1 MiB not yet
        acknowledged), ENOTCONN (the session ended)."""
        message = bytes(message)
        if len(message) > F.MSG_MAX:
            raise SessionError(errno.EMSGSIZE, "send of %d bytes" % len(message))
        if self.state == DEAD:
            raise SessionError(errno.ENOTCONN, "send")
        if len(self._q) >= F.QUEUE_MAX or self._q_bytes + len(message) > F.QUEUE_BYTES:
            raise SessionError(errno.ENOBUFS, "send")
        self._q.append(message)
        self._q_bytes += len(message)
        if not self._in_dispatch:
            self._flush()

    def close(self):
        """Tell the server the session is over (best effort, without
        blocking) and release every fd. Idempotent."""
        if self.state != DEAD and self._cur is not None and self._cur.ready:
            self._flush()
            self._cur.wbuf += F.close(F.OK, "closed by the client")
            self._link_flush(self._cur)
        self.state = DEAD
        self._link_close("_cur")
        self._link_close("_nxt")
        self._ping_at = self._tmo_at = None
        self._ep.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def dispatch(self):
        """Handle whatever is ready without blocking; runs the callbacks."""
        if self._in_dispatch:
            raise RuntimeError("dispatch() called from a callback")
        if self._ep.closed:
            return
        self._in_dispatch = True
        try:
            ready = [(self._links.get(fd), ev) for fd, ev in self._ep.poll(0)]
            for link, ev in ready:
                if self.state == DEAD:
                    break
                if link is not None and (link is self._cur or link is self._nxt):
                    self._handle(link, ev)
            self._on_timer()
            if self.state != DEAD:
                self._flush()
            if self.state == LIVE and self._cur is not None and self._cur.eof:
                self._lose(errno.ECONNABORTED, "the connection broke")
        finally:
            self._in_dispatch = False

    def wait(self, timeout=None):
        """Block until something is ready or a deadline (at most timeout
        seconds, None: no bound but the client's own), then dispatch():
        a loop for scripts that drive one client."""
        t = self.timeout()
        if timeout is not None:
            t = timeout if t is None else min(t, timeout)
        if self._ep.closed:
            return
        p = select.poll()
        p.register(self._ep.fileno(), select.POLLIN)
        p.poll(None if t is None else max(0, int(t * 1000 + 0.999)))
        self.dispatch()

    # -- internals ---------------------------------------------------------

    def _say(self, level, text):
        self.last_error = text
        if self._log is not None:
            self._log(self, level, text)

    def _arm(self, seconds):
        self._tmo_at = time.monotonic() + seconds if seconds else None

    def _link_open(self, address):
        ip, port, family = parse_address(address)
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            e = sock.connect_ex((ip, port))
            if e not in (0, errno.EINPROGRESS):
                raise SessionError(e, "connect(%s)" % address)
        except BaseException:
            sock.close()
            raise
        link = _Link(sock, ip)
        self._links[sock.fileno()] = link
        self._watch(link)
        return link

    def _link_close(self, name):
        link = getattr(self, name)
        if link is None:
            return
        setattr(self, name, None)
        fd = link.sock.fileno()
        if fd >= 0:
            self._links.pop(fd, None)
            if link.events:
                try:
                    self._ep.unregister(fd)
                except (OSError, ValueError):
                    pass
        link.sock.close()

    def _watch(self, link):
        ev = select.EPOLLIN | select.EPOLLRDHUP
        if link.wbuf or not link.ready or link.tls_want_write:
            ev |= select.EPOLLOUT
        if ev == link.events:
            return
        fd = link.sock.fileno()
        if link.events:
            self._ep.modify(fd, ev)
        else:
            self._ep.register(fd, ev)
        link.events = ev

    def _lose(self, err, why):
        if self.state == DEAD:
            return
        self._say(4 if err else 6, "session %s: %s: %s" % (self.id or "(new)", why,
                                                           strerror(err)))
        self.state = DEAD
        self._link_close("_cur")
        self._link_close("_nxt")
        self._ping_at = self._tmo_at = None
        if self.on_lost is not None:
            self.on_lost(self, SessionError(err, why) if err else None)

    def _move_failed(self, err, why):
        pause = time.monotonic() - self._move_start
        self._link_close("_nxt")
        if self._cur is None:
            # Neither server holds the session for us any more: it is lost,
            # whatever the next server said (the message keeps that).
            self._lose(errno.ECONNABORTED, why)
            return
        self._say(4, "session %s: move to %s called off: %s: %s" % (
            self.id, self._naddr, why, strerror(err)))
        self.state = LIVE
        self._arm(0)
        if self.on_moved is not None:
            self.on_moved(self, self._naddr, SessionError(err, why), pause)

    def _ping(self):
        now = time.monotonic()
        if self._cur is not None:
            self._cur.wbuf += F.ping()
            self._last_out = now
        if self._ping_s:
            self._ping_at = now + self._ping_s

    def _on_timer(self):
        now = time.monotonic()
        if self._ping_at is not None and now >= self._ping_at:
            # Only a live session pings: a moving one's servers keep it
            # without (the move has its own deadlines).
            if not self._ping_s:
                self._ping_at = None
            elif self.state == LIVE and self._cur is not None \
                    and now - self._last_out >= self._ping_s:
                self._ping()
            else:
                base = self._last_out if self.state == LIVE and self._cur else now
                self._ping_at = base + self._ping_s
        if self._tmo_at is not None and now >= self._tmo_at:
            self._tmo_at = None
            if self.state == OPENING:
                self._lose(errno.ETIMEDOUT, "no answer from the server")
            elif self.state == MOVING:
                self._move_failed(errno.ETIMEDOUT, "no answer from the next server")

    # Writing.

    def _link_flush(self, link):
        """Write what is buffered: False if the connection broke."""
        sock = link.sock
        tls = isinstance(sock, ssl.SSLSocket)
        link.tls_want_write = False
        while link.wbuf:
            try:
                # A TLS write that would block must be retried with the same
                # bytes at its start: a chunk from the same offset is.
                n = sock.send(link.wbuf[:16384] if tls else link.wbuf)
            except (BlockingIOError, InterruptedError):
                break
            except ssl.SSLWantWriteError:
                link.tls_want_write = True
                break
            except ssl.SSLWantReadError:
                break
            except OSError as e:
                link.err = e.errno or errno.ECONNRESET
                return False
            del link.wbuf[:n]
        return True

    def _encode_data(self, link):
        end = self._q_base + len(self._q)
        while self._out_sent < end and len(link.wbuf) < WBUF_SOFT:
            link.wbuf += F.data(self._out_sent + 1, self.in_handled,
                                self._q[self._out_sent - self._q_base])
            self._out_sent += 1
            self._in_acked_sent = self.in_handled

    def _flush(self):
        nxt = self._nxt
        if nxt is not None and nxt.ready:
            if not self._link_flush(nxt):
                nxt.eof = True
            else:
                self._watch(nxt)
                if not self._resume_sent and not nxt.wbuf:
                    # From now on the next server may have the session: only
                    # it (RESUMED, CLOSE, its link breaking) or the current
                    # server (STAY) may end the move. Our own timer becomes a
                    # last resort against two servers that both hang.
                    self._resume_sent = True
                    self._arm(self._timeout * RESUMED_WAIT_FACTOR)
        cur = self._cur
        if cur is None or not cur.ready:
            return
        if self.state == LIVE:
            self._encode_data(cur)
            if self.in_handled > self._in_acked_sent:
                cur.wbuf += F.ack(self.in_handled)
                self._in_acked_sent = self.in_handled
        if cur.wbuf:
            self._last_out = time.monotonic()
        if not self._link_flush(cur):
            cur.eof = True
        else:
            self._watch(cur)

    # Reading.

    def _connected(self, link, ev):
        """The TCP connect finished: start TLS if configured. False if it
        failed (reported)."""
        e = link.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if e:
            self._link_failed(link, e, "connect")
            return False
        link.connected = True
        if self._ssl is None:
            link.ready = True
            return True
        try:
            # The server is verified by the IP address we connect to, or by
            # the deployment's one name.
            link.sock = self._ssl.wrap_socket(link.sock,
                                              server_hostname=self._server_name or link.ip,
                                              do_handshake_on_connect=False)
        except (OSError, ValueError) as e:
            self._link_failed(link, errno.EPROTO, "TLS setup: %s" % e)
            return False
        return True

    def _handshake(self, link):
        """Advance the TLS handshake: True once it is done."""
        link.tls_want_write = False
        try:
            link.sock.do_handshake()
        except ssl.SSLWantReadError:
            return False
        except ssl.SSLWantWriteError:
            link.tls_want_write = True
            return False
        except ssl.SSLCertVerificationError as e:
            self._link_failed(link, errno.EACCES, "TLS: %s" % e.verify_message)
            return False
        except ssl.SSLError as e:
            self._link_failed(link, errno.EPROTO, "TLS handshake: %s" % e.reason)
            return False
        except OSError as e:
            self._link_failed(link, e.errno or errno.ECONNRESET, "TLS handshake")
            return False
        link.ready = True
        return True

    def _link_failed(self, link, err, what):
        if link is self._nxt:
            self._move_failed(err, "%s to the next server" % what)
        elif link is self._cur:
            if self.state == MOVING:
                self._link_close("_cur")
            else:
                self._lose(err, what)

    def _recv(self, link):
        """Bytes read, b"" at end of stream, None if it would block."""
        try:
            return link.sock.recv(65536)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
            return None
        except ssl.SSLWantWriteError:
            link.tls_want_write = True
            return None
        except ssl.SSLError as e:
            # A record that fails its check (a byte changed on the path)
            # ends the link before anything of it reaches the frames.
            link.err = errno.EPROTO
            link.why = "TLS: %s" % (e.reason or e)
            return b""
        except OSError as e:
            link.err = e.errno or errno.ECONNRESET
            return b""

    def _current(self, link):
        return self.state != DEAD and (link is self._cur or link is self._nxt)

    def _handle(self, link, ev):
        if not link.connected:
            if not ev & (select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP):
                return
            if not self._connected(link, ev):
                return
        if not link.ready:
            if not self._handshake(link):
                if self._current(link):
                    self._watch(link)
                return
        total = 0
        # Read until the socket would block: a TLS socket keeps decrypted
        # bytes inside that epoll cannot see, so stopping early would leave
        # them unread until more arrive.
        while self._current(link):
            got = self._recv(link)
            if got is None:
                break
            if not got:
                link.eof = True
                if not link.err:
                    link.err = errno.ECONNRESET
                break
            link.dec.feed(got)
            if not self._frames(link):
                return
            total += len(got)
            if total >= READ_BUDGET and not (isinstance(link.sock, ssl.SSLSocket)
                                             and link.sock.pending()):
                break
        if not self._current(link) or not link.eof:
            return
        tls = " (%s)" % link.why if link.why else ""
        if link is self._nxt:
            self._move_failed(errno.ECONNRESET, "the next server closed the connection" + tls)
        elif self.state == MOVING:
            self._link_close("_cur")  # the old server let go; wait for RESUMED
        elif self.state == OPENING:
            self._lose(link.err or errno.ECONNRESET, "the server closed the connection" + tls)
        else:
            self._lose(errno.ECONNABORTED, "the server went away without handing the "
                                           "session on" + tls)

    def _frames(self, link):
        """Handle every whole frame read on link: False if the link is gone."""
        while self._current(link):
            try:
                f = link.dec.next()
                if f is None:
                    return True
                if link is self._cur:
                    self._on_cur_frame(f)
                else:
                    self._on_nxt_frame(f)
            except (F.FrameError, _Proto) as e:
                err = e.errno
                link.wbuf += F.close(F.errno_code(err), strerror(err))
                self._link_flush(link)
                why = str(e)
                if link is self._nxt:
                    self._move_failed(err, "bad frame from the next server: %s" % why)
                elif self.state == MOVING:
                    self._link_close("_cur")
                else:
                    self._lose(err, "bad frame from the server: %s" % why)
                return False
            if self.in_handled - self._in_acked_sent >= ACK_EVERY and self.state == LIVE \
                    and self._cur is not None:
                self._cur.wbuf += F.ack(self.in_handled)
                self._in_acked_sent = self.in_handled
        return False

    def _on_data(self, ack, seq=None, message=None):
        end = self._q_base + len(self._q)
        if ack > end:
            raise _Proto(errno.EBADMSG, "ack %d of %d messages" % (ack, end))
        if ack > self._q_base:
            self._ack_queue(ack)
            if self._out_sent < ack:
                self._out_sent = ack
        if seq is None:
            return
        if seq <= self.in_handled:
            return  # already handled (resent after a move)
        if seq != self.in_handled + 1:
            raise _Proto(errno.EPROTO, "DATA %d after %d" % (seq, self.in_handled))
        self.on_message(self, message)
        self.in_handled += 1

    def _ack_queue(self, upto):
        n = min(upto - self._q_base, len(self._q))
        if n > 0:
            self._q_bytes -= sum(len(m) for m in self._q[:n])
            del self._q[:n]
        self._q_base = upto

    def _on_cur_frame(self, f):
        t = f.type
        if self.state == OPENING and t != F.WELCOME and t != F.CLOSE:
            raise _Proto(errno.EPROTO, "%s before WELCOME" % F.type_name(t))
        if t == F.WELCOME:
            if self.state != OPENING:
                raise _Proto(errno.EPROTO, "a second WELCOME")
            self._id = f.id
            self.id = f.id.hex()
            self.state = LIVE
            self._arm(0)
            self._ping()  # learn the server's idle limit from its PONG
            if self.on_open is not None:
                self.on_open(self)
        elif t == F.DATA:
            self._on_data(f.ack, f.seq, f.data)
        elif t == F.ACK:
            self._on_data(f.count)
        elif t == F.MOVE:
            self._start_move(f)
        elif t == F.PONG:
            # A third of the limit leaves two thirds of it for the PING to
            # arrive, and lets one late timer tick pass.
            self._ping_s = f.idle_ms / 3000.0
            self._ping_at = self._last_out + self._ping_s if f.idle_ms else None
        elif t == F.STAY:
            if self.state == MOVING:
                self._move_failed(errno.ECANCELED, "the server called the move off")
            # else a late one, after the move ended otherwise
        elif t == F.CLOSE:
            if self.state == MOVING:
                self._link_close("_cur")
            else:
                self._lose(F.code_errno(f.code), "closed by the server (%s)" % f.text)
        else:
            raise _Proto(errno.EPROTO, "%s from the current server" % F.type_name(t))

    def _start_move(self, f):
        self._link_close("_nxt")
        self._naddr = f.addr
        if self.state != MOVING:
            self._move_start = time.monotonic()
        self.state = MOVING
        self._resume_sent = False
        try:
            self._nxt = self._link_open(f.addr)
        except ValueError:
            self._move_failed(errno.EINVAL, "MOVE to a malformed address %r" % f.addr)
            return
        except OSError as e:
            self._move_failed(e.errno or errno.ECONNREFUSED, "connect to the next server")
            return
        self._nxt.wbuf += F.resume(self._id, f.token, self.in_handled)
        self._arm(self._timeout)

    def _on_nxt_frame(self, f):
        if f.type == F.CLOSE:
            self._move_failed(F.code_errno(f.code) or errno.ECONNABORTED,
                              "next server: %s" % f.text)
            return
        if f.type != F.RESUMED:
            raise _Proto(errno.EPROTO, "%s from the next server before RESUMED"
                         % F.type_name(f.type))
        h = f.count
        end = self._q_base + len(self._q)
        if h < self._q_base or h > end:
            self._nxt.wbuf += F.close(F.BAD_ACK, "RESUMED count out of range")
            self._link_flush(self._nxt)
            self._lose(errno.EBADMSG, "RESUMED acknowledges %d of %d messages" % (h, end))
            return
        self._ack_queue(h)
        self._out_sent = h
        self._in_acked_sent = 0  # tell the new server our count at once
        self._link_close("_cur")
        self._cur, self._nxt = self._nxt, None
        self.address = self._naddr
        self.state = LIVE
        self._arm(0)
        # The next server may keep another idle limit: learn it afresh.
        self._ping_s = 0.0
        self._ping_at = None
        self._ping()
        if self.on_moved is not None:
            self.on_moved(self, self.address, None, time.monotonic() - self._move_start)

