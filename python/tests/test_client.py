# SPDX-License-Identifier: MIT
"""The client against the Python test server (fake_server.py), plain and
TLS: opening, numbering and acks, keepalive, moves with resends, STAY,
CLOSE codes, bad frames, and TLS verification by IP address."""

import errno
import os
import select
import socket
import threading
import time
import unittest

import baton_session
from baton_session import frame as F

import fake_server as fs

CA = os.path.join(fs.CERTS, "ca.pem")


class Recorder:
    """A client with its callbacks recorded."""

    def __init__(self, address, **kw):
        self.got, self.moves, self.lost, self.opened = [], [], [], 0
        kw.setdefault("insecure", True)
        self.c = baton_session.Client(
            address, on_message=lambda c, d: self.got.append(d),
            on_open=lambda c: self._open(), on_lost=lambda c, e: self.lost.append(e),
            on_moved=lambda c, a, e, p: self.moves.append((a, e, p)), **kw)

    def _open(self):
        self.opened += 1

    def run(self, cond, timeout=5.0):
        end = time.monotonic() + timeout
        while not cond():
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError("timed out waiting")
            self.c.wait(min(left, 0.05))


class Base(unittest.TestCase):
    ctx = None  # the servers' TLS context (None: plain)

    def setUp(self):
        self.ss = fs.Sessions()
        self.servers = []

    def tearDown(self):
        for s in self.servers:
            s.close()
        self.assertEqual(self.ss.errors, [])

    def server(self, **kw):
        kw.setdefault("ctx", self.ctx)
        s = fs.Server(self.ss, **kw)
        self.servers.append(s)
        return s

    def client(self, address, **kw):
        if self.ctx is not None:
            kw.setdefault("cafile", CA)
            kw["insecure"] = False
        r = Recorder(address, **kw)
        self.addCleanup(r.c.close)
        return r

    def only_session(self):
        self.assertTrue(fs.wait(self.ss, lambda: len(self.ss.by_id) == 1))
        return next(iter(self.ss.by_id.values()))


class Plain(Base):
    def test_open_send_echo(self):
        a = self.server()
        r = self.client(a.address)
        r.run(lambda: r.opened)
        self.assertEqual(len(r.c.id), 32)
        for i in range(100):
            r.c.send(b"m%d" % i)
        r.run(lambda: len(r.got) == 100)
        self.assertEqual(r.got, [b"m%d" % i for i in range(100)])
        st = self.only_session()
        # Everything the client handled is acknowledged.
        self.assertTrue(fs.wait(self.ss, lambda: st.out_acked == 100))
        r.c.close()
        self.assertTrue(fs.wait(self.ss, lambda: st.conn.closed_with is not None))
        self.assertEqual(st.conn.closed_with[0], F.OK)
        self.assertFalse(r.c.alive)
        with self.assertRaises(baton_session.SessionError) as cm:
            r.c.send(b"late")
        self.assertEqual(cm.exception.errno, errno.ENOTCONN)

    def test_acks_keep_a_flood_going(self):
        # The server may have at most QUEUE_MAX messages unacknowledged;
        # a client that did not acknowledge within that many would stall.
        a = self.server()
        r = self.client(a.address)
        r.run(lambda: r.opened)
        st = self.only_session()
        total = 5000

        def pusher():
            for i in range(total):
                if not fs.wait(self.ss, lambda: len(st.out) - st.out_acked < F.QUEUE_MAX):
                    self.ss.error("the client stopped acknowledging at %d" % i)
                    return
                fs.push(self.ss, st, b"p%d" % i)

        t = threading.Thread(target=pusher, daemon=True)
        t.start()
        r.run(lambda: len(r.got) == total, timeout=20)
        t.join(5)
        self.assertEqual(r.got, [b"p%d" % i for i in range(total)])

    def test_send_limits(self):
        a = self.server(echo=False)
        r = self.client(a.address)
        with self.assertRaises(baton_session.SessionError) as cm:
            r.c.send(b"x" * (F.MSG_MAX + 1))
        self.assertEqual(cm.exception.errno, errno.EMSGSIZE)
        # Queued before WELCOME, and kept until acknowledged: the 1025th
        # unacknowledged message is refused.
        for i in range(F.QUEUE_MAX):
            r.c.send(b"q")
        with self.assertRaises(baton_session.SessionError) as cm:
            r.c.send(b"q")
        self.assertEqual(cm.exception.errno, errno.ENOBUFS)

    def test_ping_at_a_third_of_the_idle_limit(self):
        a = self.server(idle_ms=300)
        r = self.client(a.address)
        r.run(lambda: r.opened)
        st = self.only_session()
        t0 = time.monotonic()
        r.run(lambda: time.monotonic() - t0 > 1.0)
        # One PING at once, then one per 100 ms of silence.
        self.assertGreaterEqual(st.conn.pings, 8)
        self.assertLessEqual(st.conn.pings, 13)

    def test_move_resends_what_was_not_handled(self):
        a, b = self.server(), self.server(echo=True)
        r = self.client(a.address)
        r.run(lambda: r.opened)
        st = self.only_session()
        for i in range(10):
            r.c.send(b"a%d" % i)
        r.run(lambda: len(r.got) == 10)
        fs.move(self.ss, st, b)
        # Sent while the move is under way: held, then resent to B.
        for i in range(10):
            r.c.send(b"b%d" % i)
        r.run(lambda: r.moves)
        addr, err, pause = r.moves[0]
        self.assertEqual((addr, err), (b.address, None))
        self.assertGreaterEqual(pause, 0)
        self.assertEqual(r.c.address, b.address)
        for i in range(10):
            r.c.send(b"c%d" % i)
        r.run(lambda: len(r.got) == 30)
        want = [b"%s%d" % (p, i) for p in (b"a", b"b", b"c") for i in range(10)]
        self.assertEqual(r.got, want)
        self.assertEqual(st.got, want)
        # And back.
        fs.move(self.ss, st, a)
        r.run(lambda: len(r.moves) == 2)
        r.c.send(b"d")
        r.run(lambda: len(r.got) == 31)
        self.assertEqual(r.c.address, a.address)

    def quiet_session(self, r):
        """A session that echoed one message, acknowledged it and sent its
        first PING: nothing from the client is still on its way."""
        r.c.send(b"x")
        r.run(lambda: r.got == [b"x"])
        st = self.only_session()
        self.assertTrue(fs.wait(self.ss, lambda: st.out_acked == 1 and st.conn.pings == 1))
        return st

    def silent_next(self, server):
        """Make server take RESUMEs without answering (the move stays under
        way): the list of (connection, RESUME) it got."""
        resumes = []

        def resume(conn, f):
            with self.ss.lock:
                resumes.append((conn, f))
                self.ss.lock.notify_all()
            return True

        server._resume = resume
        return resumes

    def test_second_move_replaces_the_first(self):
        # docs/session-protocol.md, "The move, step by step", 3: a MOVE
        # during a move replaces it; the client drops its connection to the
        # first next server and resumes at the second with the second
        # token; its pause counts from the first MOVE.
        a, b1, b2 = self.server(), self.server(), self.server()
        resumes = self.silent_next(b1)
        r = self.client(a.address)
        st = self.quiet_session(r)
        old, seen = st.conn, len(st.conn.received)
        fs.move(self.ss, st, b1)
        token1 = st.token
        r.run(lambda: resumes)
        t1 = time.monotonic()  # the client handled the first MOVE before
        conn1, f1 = resumes[0]
        self.assertEqual((f1.id, f1.token, f1.handled), (st.id, token1, 1))
        r.c.send(b"held")
        r.run(lambda: time.monotonic() - t1 > 0.2)
        t2 = time.monotonic()
        fs.move(self.ss, st, b2)
        r.run(lambda: r.moves)
        self.assertEqual(len(r.moves), 1)  # the replaced move is not reported
        addr, err, pause = r.moves[0]
        self.assertEqual((addr, err), (b2.address, None))
        self.assertGreaterEqual(pause, t2 - t1)
        self.assertEqual(r.c.address, b2.address)
        # B2 checked the token (the second: the first is not its session's).
        f2 = b2.conns[0].received[0]
        self.assertEqual((f2.type, f2.id, f2.handled), (F.RESUME, st.id, 1))
        self.assertNotEqual(f2.token, token1)
        # The first next server: its RESUME, then the end of the stream.
        self.assertTrue(fs.wait(self.ss, lambda: conn1.ended))
        self.assertEqual([f.type for f in conn1.received], [F.RESUME])
        r.run(lambda: r.got == [b"x", b"held"])
        self.assertEqual(st.got, [b"x", b"held"])
        # Nothing on the old connection since the first MOVE.
        self.assertEqual(old.received[seen:], [])

    def test_close_during_a_move(self):
        # docs/session-protocol.md, "CLOSE": a client that closes during a
        # move sends CLOSE(OK) on the old connection and closes the one to
        # the next server; it sends nothing after CLOSE on either and does
        # not wait for an answer.
        a, b = self.server(), self.server()
        resumes = self.silent_next(b)
        r = self.client(a.address)
        st = self.quiet_session(r)
        old, seen = st.conn, len(st.conn.received)
        fs.move(self.ss, st, b)
        r.run(lambda: resumes)
        nxt = resumes[0][0]
        r.c.send(b"held")  # held while moving: never sent
        r.c.close()
        self.assertFalse(r.c.alive)
        self.assertTrue(fs.wait(self.ss, lambda: old.ended and nxt.ended))
        self.assertEqual([(f.type, f.code) for f in old.received[seen:]], [(F.CLOSE, F.OK)])
        self.assertEqual([f.type for f in nxt.received], [F.RESUME])
        self.assertEqual(r.lost, [])
        self.assertEqual(r.moves, [])

    def test_move_with_unacked_server_messages(self):
        # Messages the server sent but the client had not acknowledged when
        # the session moved come again from B: handled once.
        a, b = self.server(echo=False), self.server(echo=False)
        r = self.client(a.address)
        r.run(lambda: r.opened)
        st = self.only_session()
        for i in range(5):
            fs.push(self.ss, st, b"s%d" % i)
        r.run(lambda: len(r.got) == 5)
        with self.ss.lock:
            st.out_acked = 0  # as if the ACKs were still in flight
        fs.move(self.ss, st, b)
        r.run(lambda: r.moves)
        fs.push(self.ss, st, b"s5")
        r.run(lambda: len(r.got) == 6)
        self.assertEqual(r.got, [b"s%d" % i for i in range(6)])

    def test_stay(self):
        # B takes RESUME and never answers; A calls the move off with STAY.
        a, b = self.server(), self.server()
        hold = threading.Event()
        b._resume = lambda conn, f: hold.wait(5) and False
        self.addCleanup(hold.set)
        r = self.client(a.address)
        r.run(lambda: r.opened)
        st = self.only_session()
        fs.move(self.ss, st, b)
        with self.ss.lock:
            st.frozen = False
            st.token = None
        st.conn.send(F.stay())
        r.run(lambda: r.moves)
        addr, err, _ = r.moves[0]
        self.assertEqual((addr, err.errno), (b.address, errno.ECANCELED))
        self.assertEqual(r.c.address, a.address)
        r.c.send(b"after")
        r.run(lambda: r.got == [b"after"])

    def test_refused_resume_stays(self):
        a, b = self.server(), self.server()
        b.refuse_resume = F.FULL
        r = self.client(a.address)
        r.run(lambda: r.opened)
        st = self.only_session()
        fs.move(self.ss, st, b)
        r.run(lambda: r.moves)
        self.assertEqual(r.moves[0][1].errno, errno.EUSERS)
        with self.ss.lock:
            st.frozen = False
        r.c.send(b"still here")
        r.run(lambda: r.got == [b"still here"])

    def test_close_codes(self):
        for code, err in ((F.OK, None), (F.SHUTDOWN, errno.ESHUTDOWN), (F.FULL, errno.EUSERS),
                          (F.TIMEOUT, errno.ETIMEDOUT), (77, errno.EPROTO)):
            a = self.server()
            a.on_hello = lambda conn, code=code: conn.send(F.close(code, "test")) or True
            r = self.client(a.address)
            r.run(lambda: r.lost)
            if err is None:
                self.assertIsNone(r.lost[0])
            else:
                self.assertEqual(r.lost[0].errno, err, code)
            self.assertFalse(r.c.alive)

    def test_bad_frames_close_with_a_code(self):
        cases = (
            (F.data(1, 0, b"x"), errno.EPROTO, F.PROTO),  # DATA before WELCOME
            (b"\x07" + bytes(7), errno.EPROTONOSUPPORT, F.VERSION_CODE),
            (F.header(F.DATA, 10**6), errno.EMSGSIZE, F.TOO_BIG),
            (F.header(12, 0), errno.EPROTO, F.PROTO),
            (F.header(F.HELLO, 0), errno.EPROTO, F.PROTO),
        )
        for raw, err, code in cases:
            got = []
            a = self.server()

            def hello(conn, raw=raw, got=got):
                conn.send(raw)
                for f in conn.frames():
                    got.append(f)
                with self.ss.lock:
                    got.append(None)  # the client closed the connection
                    self.ss.lock.notify_all()
                return True

            a.on_hello = hello
            r = self.client(a.address)
            r.run(lambda: r.lost)
            self.assertEqual(r.lost[0].errno, err, raw)
            self.assertTrue(fs.wait(self.ss, lambda: got and got[-1] is None))
            got.pop()
            self.assertEqual([(f.type, f.code) for f in got], [(F.CLOSE, code)])

    def test_bad_ack_and_gap(self):
        for raw, err in ((F.data(1, 5, b"x"), errno.EBADMSG), (F.data(2, 0, b"x"), errno.EPROTO),
                         (F.ack(1), errno.EBADMSG)):
            a = self.server()
            r = self.client(a.address)
            r.run(lambda: r.opened)
            st = self.only_session()
            st.conn.send(raw)
            r.run(lambda: r.lost)
            self.assertEqual(r.lost[0].errno, err)
            self.ss.by_id.clear()

    def test_server_gone(self):
        a = self.server()
        r = self.client(a.address)
        r.run(lambda: r.opened)
        a.close()
        r.run(lambda: r.lost)
        self.assertEqual(r.lost[0].errno, errno.ECONNABORTED)

    def test_open_timeout_and_refused(self):
        quiet = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(quiet.close)
        r = self.client("tcp://127.0.0.1:%d" % quiet.getsockname()[1], timeout=0.3)
        r.run(lambda: r.lost)
        self.assertEqual(r.lost[0].errno, errno.ETIMEDOUT)
        port = quiet.getsockname()[1]
        quiet.close()
        r = self.client("tcp://127.0.0.1:%d" % port)
        r.run(lambda: r.lost)
        self.assertEqual(r.lost[0].errno, errno.ECONNREFUSED)

    def test_options(self):
        with self.assertRaises(ValueError):
            baton_session.Client("tcp://127.0.0.1:1", on_message=print)  # TLS or insecure
        with self.assertRaises(ValueError):
            baton_session.Client("tcp://127.0.0.1:1", on_message=print, insecure=True,
                                 cafile=CA)
        with self.assertRaises(ValueError):
            baton_session.Client("tcp://localhost:1", on_message=print, insecure=True)

    def test_blocking_helper(self):
        a = self.server()
        kw = {"cafile": CA} if self.ctx is not None else {"insecure": True}
        with baton_session.connect(a.address, **kw) as s:
            s.send(b"hello")
            self.assertEqual(s.recv(timeout=5), b"hello")
            with self.assertRaises(TimeoutError):
                s.recv(timeout=0.1)
            self.assertEqual(len(s.id), 32)

    def test_fileno_in_a_selector(self):
        # The fd alone says when to dispatch (with timeout() for deadlines).
        a = self.server()
        r = self.client(a.address)
        r.c.send(b"x")
        end = time.monotonic() + 5
        while not r.got and time.monotonic() < end:
            t = r.c.timeout()
            select.select([r.c], [], [], 0.5 if t is None else min(t, 0.5))
            r.c.dispatch()
        self.assertEqual(r.got, [b"x"])


class TLS(Plain):
    """The same, every link in TLS 1.3, the server verified by its IP."""

    ctx = fs.server_context()

    def test_wrong_certificate_is_refused(self):
        # A certificate for 127.0.0.9 on 127.0.0.1: not this server's.
        a = self.server(ctx=fs.server_context("other"))
        r = self.client(a.address)
        r.run(lambda: r.lost)
        self.assertEqual(r.lost[0].errno, errno.EACCES)
        self.assertIn("IP address mismatch", r.lost[0].detail)

    def test_move_to_a_server_with_a_wrong_certificate_stays(self):
        a = self.server()
        b = self.server(ctx=fs.server_context("other"))
        r = self.client(a.address)
        r.run(lambda: r.opened)
        st = self.only_session()
        fs.move(self.ss, st, b)
        r.run(lambda: r.moves)
        self.assertEqual(r.moves[0][1].errno, errno.EACCES)
        with self.ss.lock:
            st.frozen = False
        r.c.send(b"still here")
        r.run(lambda: r.got == [b"still here"])

    def test_server_name(self):
        # One name for every server: localhost is in server.pem, not in
        # other.pem.
        a = self.server()
        r = self.client(a.address, server_name="localhost")
        r.c.send(b"named")
        r.run(lambda: r.got == [b"named"])
        b = self.server(ctx=fs.server_context("other"))
        r = self.client(b.address, server_name="localhost")
        r.run(lambda: r.lost)
        self.assertEqual(r.lost[0].errno, errno.EACCES)

    def test_tampered_record_ends_the_session(self):
        # A proxy flips one byte of the server's records once the session
        # is live: the client's TLS layer refuses it; nothing reaches the
        # frames, and the session is lost with "TLS" in its message.
        a = self.server()
        flip = threading.Event()
        proxy = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(proxy.close)

        def relay(src, dst, tamper):
            while True:
                try:
                    data = src.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                if tamper and flip.is_set():
                    data = data[:-1] + bytes([data[-1] ^ 1])
                try:
                    dst.sendall(data)
                except OSError:
                    break
            for s_ in (src, dst):
                try:
                    s_.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        def serve():
            c, _ = proxy.accept()
            up = socket.create_connection(("127.0.0.1", int(a.address.rsplit(":", 1)[1])))
            self.addCleanup(c.close)
            self.addCleanup(up.close)
            threading.Thread(target=relay, args=(c, up, False), daemon=True).start()
            relay(up, c, True)

        threading.Thread(target=serve, daemon=True).start()
        r = self.client("tcp://127.0.0.1:%d" % proxy.getsockname()[1])
        r.c.send(b"before")
        r.run(lambda: r.got == [b"before"])
        flip.set()
        r.c.send(b"after")
        r.run(lambda: r.lost)
        self.assertEqual(r.got, [b"before"])
        self.assertEqual(r.lost[0].errno, errno.ECONNABORTED)
        self.assertIn("TLS", r.lost[0].detail)

    def test_plain_server_fails_tls(self):
        a = self.server(ctx=None)
        r = self.client(a.address)
        r.run(lambda: r.lost)
        self.assertIn(r.lost[0].errno, (errno.EPROTO, errno.ECONNRESET))
        # The server saw a TLS ClientHello where a frame should start.
        self.assertTrue(fs.wait(self.ss, lambda: self.ss.errors))
        self.assertIn("another protocol version", self.ss.errors.pop())

    def test_ssl_context(self):
        a = self.server()
        r = self.client(a.address, cafile=None, ssl_context=baton_session.tls_context(CA))
        r.c.send(b"ctx")
        r.run(lambda: r.got == [b"ctx"])

    def test_big_messages(self):
        # Several TLS records per message, and more than one read buffer.
        a = self.server()
        r = self.client(a.address)
        msgs = [os.urandom(F.MSG_MAX) for _ in range(15)]  # under QUEUE_BYTES
        for m in msgs:
            r.c.send(m)
        r.run(lambda: len(r.got) == 15, timeout=20)
        self.assertEqual(r.got, msgs)


if __name__ == "__main__":
    unittest.main()
