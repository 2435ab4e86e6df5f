# SPDX-License-Identifier: MIT
"""The frame decoder and encoders: every header check in the protocol's
order, before any payload is waited for, and bad input of every kind."""

import errno
import struct
import unittest

from baton_session import frame as F
from baton_session.client import parse_address


def hdr(ftype, length, version=1, resv=0):
    return struct.pack(">BBHI", version, ftype, resv, length)


class DecodeGood(unittest.TestCase):
    def roundtrip(self, raw):
        d = F.Decoder()
        d.feed(raw)
        f = d.next()
        self.assertIsNotNone(f)
        self.assertIsNone(d.next())
        self.assertEqual(d.buffered(), 0)
        return f

    def test_each_type(self):
        f = self.roundtrip(F.welcome(bytes(range(16))))
        self.assertEqual((f.type, f.id), (F.WELCOME, bytes(range(16))))
        f = self.roundtrip(F.data(7, 3, b"hi"))
        self.assertEqual((f.type, f.seq, f.ack, f.data), (F.DATA, 7, 3, b"hi"))
        f = self.roundtrip(F.data(1, 0, b"x" * F.MSG_MAX))
        self.assertEqual(len(f.data), F.MSG_MAX)
        self.assertEqual(self.roundtrip(F.ack(2**64 - 1)).count, 2**64 - 1)
        f = self.roundtrip(F.move(b"t" * 32, "tcp://127.0.0.1:9"))
        self.assertEqual((f.token, f.addr), (b"t" * 32, "tcp://127.0.0.1:9"))
        self.assertEqual(self.roundtrip(F.resumed(5)).count, 5)
        f = self.roundtrip(F.close(F.TOKEN, "no"))
        self.assertEqual((f.code, f.text), (F.TOKEN, "no"))
        self.assertEqual(self.roundtrip(F.stay()).type, F.STAY)
        self.assertEqual(self.roundtrip(F.pong(60000)).idle_ms, 60000)

    def test_server_side(self):
        d = F.Decoder(F.RX_SERVER_NEW)
        d.feed(F.resume(b"i" * 16, b"t" * 32, 9) + F.hello())
        f = d.next()
        self.assertEqual((f.type, f.id, f.token, f.handled), (F.RESUME, b"i" * 16, b"t" * 32, 9))
        self.assertEqual(d.next().type, F.HELLO)

    def test_byte_by_byte(self):
        raw = F.data(1, 0, b"abc") + F.ack(1) + F.pong(3)
        d = F.Decoder()
        got = []
        for i in range(len(raw)):
            d.feed(raw[i:i + 1])
            while True:
                f = d.next()
                if f is None:
                    break
                got.append(f.type)
        self.assertEqual(got, [F.DATA, F.ACK, F.PONG])

    def test_truncated_waits(self):
        raw = F.data(1, 0, b"abcdef")
        for cut in range(len(raw)):
            d = F.Decoder()
            d.feed(raw[:cut])
            self.assertIsNone(d.next(), cut)
            self.assertEqual(d.buffered(), cut)

    def test_bound(self):
        self.assertEqual(F.Decoder().bound, 8 + 16 + 65536)
        self.assertEqual(F.Decoder(F.RX_SERVER_NEW).bound, 8 + 6 + 512)


class DecodeBad(unittest.TestCase):
    def bad(self, raw, err, allow=F.RX_CLIENT):
        d = F.Decoder(allow)
        d.feed(raw)
        with self.assertRaises(F.FrameError) as cm:
            d.next()
        self.assertEqual(cm.exception.errno, err, str(cm.exception))
        return cm.exception

    def test_version_first(self):
        # One byte is enough to refuse another version, and it is checked
        # before the type, the reserved bytes and the length.
        self.bad(b"\x02", errno.EPROTONOSUPPORT)
        self.bad(hdr(99, 2**32 - 1, version=0, resv=1), errno.EPROTONOSUPPORT)

    def test_unknown_type(self):
        for t in (0, 12, 15, 26, 255):
            e = self.bad(hdr(t, 0), errno.EPROTO)
            self.assertIn("unknown type", e.why)

    def test_reserved(self):
        self.assertIn("reserved", self.bad(hdr(F.ACK, 8, resv=1) + bytes(8), errno.EPROTO).why)

    def test_oversized_before_payload(self):
        # Refused at the header: no payload is waited for.
        self.bad(hdr(F.DATA, 16 + F.MSG_MAX + 1), errno.EMSGSIZE)
        self.bad(hdr(F.DATA, 2**32 - 1), errno.EMSGSIZE)
        self.bad(hdr(F.WELCOME, 17), errno.EMSGSIZE)
        self.bad(hdr(F.CLOSE, 6 + 513), errno.EMSGSIZE)
        self.bad(hdr(F.MOVE, 34 + 256), errno.EMSGSIZE)
        # Over its own type's limit is TOO_BIG even where the type is not
        # allowed (the C decoder's order).
        self.bad(hdr(23, 2**32 - 1), errno.EMSGSIZE)

    def test_short(self):
        self.bad(hdr(F.ACK, 7) + bytes(7), errno.EPROTO)
        self.bad(hdr(F.DATA, 15) + bytes(15), errno.EPROTO)
        self.bad(hdr(F.CLOSE, 5) + bytes(5), errno.EPROTO)

    def test_not_allowed_here(self):
        # What a client sends, and the peer link's frames, never come to a
        # client; refused at the header.
        for t in (F.HELLO, F.RESUME, F.PING, 16, 19, 23):
            lo = F.TYPES[t][1]
            self.assertIn("not allowed", self.bad(hdr(t, lo), errno.EPROTO).why)
        self.bad(F.welcome(bytes(16)), errno.EPROTO, allow=F.RX_SERVER_SESSION)

    def test_malformed_payloads(self):
        self.bad(hdr(F.DATA, 16) + struct.pack(">QQ", 0, 0), errno.EPROTO)
        addr = b"tcp://1.2.3.4:5"
        self.bad(hdr(F.MOVE, 34 + len(addr)) + bytes(32) + struct.pack(">H", len(addr) + 1)
                 + addr, errno.EPROTO)
        self.bad(hdr(F.MOVE, 34 + len(addr)) + bytes(32) + struct.pack(">H", 0) + addr,
                 errno.EPROTO)
        nul = b"tcp://1.2\0.4:5"
        self.bad(hdr(F.MOVE, 34 + len(nul)) + bytes(32) + struct.pack(">H", len(nul)) + nul,
                 errno.EPROTO)
        self.bad(hdr(F.CLOSE, 8) + struct.pack(">IH", 1, 3) + b"ab", errno.EPROTO)

    def test_error_then_nothing_buffered_beyond_header(self):
        # An oversized header is refused with only its 8 bytes received.
        d = F.Decoder()
        d.feed(hdr(F.DATA, 10**9))
        with self.assertRaises(F.FrameError):
            d.next()
        self.assertEqual(d.buffered(), 8)


class Codes(unittest.TestCase):
    def test_codes(self):
        self.assertEqual(F.code_errno(F.OK), 0)
        self.assertEqual(F.code_errno(F.FULL), errno.EUSERS)
        self.assertEqual(F.code_errno(F.REFUSED), errno.ECANCELED)
        self.assertEqual(F.code_errno(F.LOST), errno.ECONNABORTED)
        self.assertEqual(F.code_errno(999), errno.EPROTO)
        self.assertEqual(F.errno_code(errno.EBADMSG), F.BAD_ACK)
        self.assertEqual(F.errno_code(errno.EPROTO), F.PROTO)
        self.assertEqual(F.errno_code(errno.EINVAL), F.PROTO)


class Addresses(unittest.TestCase):
    def test_good(self):
        self.assertEqual(parse_address("tcp://127.0.0.1:80")[:2], ("127.0.0.1", 80))
        self.assertEqual(parse_address("tcp://[::1]:0")[:2], ("::1", 0))

    def test_bad(self):
        for a in ("127.0.0.1:80", "tcp://localhost:80", "tcp://1.2.3.4", "tcp://1.2.3.4:x",
                  "tcp://1.2.3.4:65536", "tcp://[::1:80", "tcp://[]:80", "tcp://01.2.3.4:8",
                  "tcp://1.2.3.4:\u0661", "tcp://" + "1" * 300, None):
            with self.assertRaises(ValueError, msg=a):
                parse_address(a)


if __name__ == "__main__":
    unittest.main()
