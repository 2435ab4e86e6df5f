# SPDX-License-Identifier: MIT
"""The client link's frames (docs/session-protocol.md, "Framing").

Encoding helpers and an incremental decoder that trusts nothing: it checks
a header in the order the protocol gives (version, type and reserved bytes,
the type's length limits, whether the link may carry the type) before it
waits for the payload, so a server can make it buffer at most one frame of
the largest type it accepts plus one read.
"""

import errno
import struct

VERSION = 1
HDR = 8
ID_LEN = 16
TOKEN_LEN = 32
MSG_MAX = 65536
ADDR_MAX = 255
TEXT_MAX = 512
# Unacknowledged messages a side keeps, in count and in bytes.
QUEUE_MAX = 1024
QUEUE_BYTES = 1 << 20

# Client link frame types.
HELLO = 1
WELCOME = 2
DATA = 3
ACK = 4
MOVE = 5
RESUME = 6
RESUMED = 7
CLOSE = 8
STAY = 9
PING = 10
PONG = 11

# Each known type's name and payload length limits. The peer link's types
# (16..25) are known so that one arriving on a client link is refused as
# "not allowed here", as the C decoder does, rather than as "unknown".
TYPES = {
    HELLO: ("HELLO", 0, 0),
    WELCOME: ("WELCOME", 16, 16),
    DATA: ("DATA", 16, 16 + MSG_MAX),
    ACK: ("ACK", 8, 8),
    MOVE: ("MOVE", 34, 34 + ADDR_MAX),
    RESUME: ("RESUME", 56, 56),
    RESUMED: ("RESUMED", 8, 8),
    CLOSE: ("CLOSE", 6, 6 + TEXT_MAX),
    STAY: ("STAY", 0, 0),
    PING: ("PING", 0, 0),
    PONG: ("PONG", 4, 4),
    16: ("PHELLO", 32, 32),
    17: ("PCHAL", 64, 64),
    18: ("PAUTH", 32, 32),
    19: ("OFFER", 8, 8 + 16 * 4096),
    20: ("OFFERED", 8, 8),
    21: ("TAKE", 48, 48),
    22: ("REFUSE", 20, 20),
    23: ("EXPORT", 48, 52 + 65536 + 4 * QUEUE_MAX + QUEUE_BYTES),
    24: ("TAKEN", 16, 16),
    25: ("DECLINE", 16, 16),
}

# What a client accepts from a server, on either of its links.
RX_CLIENT = frozenset({WELCOME, DATA, ACK, MOVE, RESUMED, CLOSE, STAY, PONG})
# What a server accepts from a client with a session (for test servers).
RX_SERVER_SESSION = frozenset({DATA, ACK, CLOSE, PING})
RX_SERVER_NEW = frozenset({HELLO, RESUME, CLOSE})

# Wire error codes (CLOSE) and the errno each stands for.
OK = 0
PROTO = 1
VERSION_CODE = 2
TOO_BIG = 3
BAD_ACK = 4
TOKEN = 5
UNKNOWN = 6
LOST = 7
AUTH = 8
SHUTDOWN = 9
REFUSED = 10
OVERLOAD = 11
FULL = 12
TIMEOUT = 13

CODE_ERRNO = {
    OK: 0,
    PROTO: errno.EPROTO,
    VERSION_CODE: errno.EPROTONOSUPPORT,
    TOO_BIG: errno.EMSGSIZE,
    BAD_ACK: errno.EBADMSG,
    TOKEN: errno.EACCES,
    UNKNOWN: errno.ENOENT,
    LOST: errno.ECONNABORTED,
    AUTH: errno.EACCES,
    SHUTDOWN: errno.ESHUTDOWN,
    REFUSED: errno.ECANCELED,  # the move is off: the session stays
    OVERLOAD: errno.ENOBUFS,
    FULL: errno.EUSERS,
    TIMEOUT: errno.ETIMEDOUT,
}

ERRNO_CODE = {
    0: OK,
    errno.EPROTONOSUPPORT: VERSION_CODE,
    errno.EMSGSIZE: TOO_BIG,
    errno.EBADMSG: BAD_ACK,
    errno.EACCES: TOKEN,
    errno.ENOENT: UNKNOWN,
    errno.ECONNABORTED: LOST,
    errno.ECANCELED: REFUSED,
    errno.ESHUTDOWN: SHUTDOWN,
    errno.ENOBUFS: OVERLOAD,
    errno.EUSERS: FULL,
    errno.ETIMEDOUT: TIMEOUT,
}


def code_errno(code):
    """The errno a CLOSE code stands for (unknown codes are PROTO)."""
    return CODE_ERRNO.get(code, errno.EPROTO)


def errno_code(err):
    """The CLOSE code for an errno value (anything else is PROTO)."""
    return ERRNO_CODE.get(err, PROTO)


def type_name(t):
    entry = TYPES.get(t)
    return entry[0] if entry else "unknown"


class FrameError(Exception):
    """Bad input: errno is EPROTONOSUPPORT, EPROTO or EMSGSIZE, why says
    what was wrong, type and length are the header's (None before one)."""

    def __init__(self, err, why, ftype=None, length=None):
        super().__init__(err, why)
        self.errno = err
        self.why = why
        self.type = ftype
        self.length = length

    def __str__(self):
        if self.type is None:
            return self.why
        return "%s frame (type %d, length %d): %s" % (
            type_name(self.type), self.type, self.length, self.why)


class Frame:
    """A decoded frame: type and the fields its type has (seq, ack, data
    for DATA; count for ACK and RESUMED; id for WELCOME; token and addr for
    MOVE; code and text for CLOSE; idle_ms for PONG; id, token, handled
    for RESUME)."""

    __slots__ = ("type", "seq", "ack", "data", "count", "id", "token", "addr",
                 "code", "text", "idle_ms", "handled")

    def __init__(self, ftype, **fields):
        self.type = ftype
        for k in self.__slots__[1:]:
            setattr(self, k, fields.get(k))

    def __repr__(self):
        shown = ", ".join("%s=%r" % (k, getattr(self, k)) for k in self.__slots__[1:]
                          if getattr(self, k) is not None)
        return "Frame(%s%s)" % (type_name(self.type), ", " + shown if shown else "")


_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_HDR = struct.Struct(">BBHI")


def _payload(ftype, p):
    """Decode the payload p (its length already within the type's limits)."""
    if ftype in (HELLO, STAY, PING):
        return Frame(ftype)
    if ftype == WELCOME:
        return Frame(ftype, id=p)
    if ftype == DATA:
        seq, ack = struct.unpack_from(">QQ", p)
        if seq == 0:
            raise FrameError(errno.EPROTO, "DATA with seq 0", ftype, len(p))
        return Frame(ftype, seq=seq, ack=ack, data=p[16:])
    if ftype in (ACK, RESUMED):
        return Frame(ftype, count=_U64.unpack_from(p)[0])
    if ftype == PONG:
        return Frame(ftype, idle_ms=_U32.unpack_from(p)[0])
    if ftype == MOVE:
        (alen,) = struct.unpack_from(">H", p, 32)
        addr = p[34:]
        if alen == 0 or alen != len(addr) or b"\0" in addr:
            raise FrameError(errno.EPROTO, "malformed payload", ftype, len(p))
        try:
            text = addr.decode("ascii")
        except UnicodeDecodeError:
            raise FrameError(errno.EPROTO, "address not ASCII", ftype, len(p)) from None
        return Frame(ftype, token=p[:32], addr=text)
    if ftype == RESUME:
        return Frame(ftype, id=p[:16], token=p[16:48],
                     handled=_U64.unpack_from(p, 48)[0])
    if ftype == CLOSE:
        code, tlen = struct.unpack_from(">IH", p)
        if tlen != len(p) - 6:
            raise FrameError(errno.EPROTO, "malformed payload", ftype, len(p))
        return Frame(ftype, code=code, text=p[6:].decode("utf-8", "replace"))
    raise FrameError(errno.EPROTO, "a type not allowed on this link in its state",
                     ftype, len(p))


class Decoder:
    """Frames from a byte stream, accepting only the types in allow.

    feed() the bytes read, then call next() until it returns None (more
    bytes needed). next() raises FrameError on bad input; the stream is
    then unusable (close the connection after a CLOSE frame)."""

    def __init__(self, allow=RX_CLIENT):
        self.allow = frozenset(allow)
        self.bound = HDR + max(TYPES[t][2] for t in self.allow)
        self._buf = bytearray()
        self._off = 0

    def feed(self, data):
        if self._off:
            del self._buf[:self._off]
            self._off = 0
        self._buf += data

    def buffered(self):
        """Bytes received but not yet taken as frames."""
        return len(self._buf) - self._off

    def next(self):
        buf, off = self._buf, self._off
        avail = len(buf) - off
        if avail < 1:
            return None
        if buf[off] != VERSION:
            raise FrameError(errno.EPROTONOSUPPORT, "another protocol version")
        if avail < HDR:
            return None
        _, ftype, resv, plen = _HDR.unpack_from(buf, off)
        limits = TYPES.get(ftype)
        if limits is None:
            raise FrameError(errno.EPROTO, "unknown type", ftype, plen)
        if resv:
            raise FrameError(errno.EPROTO, "reserved bits set", ftype, plen)
        if plen > limits[2]:
            raise FrameError(errno.EMSGSIZE, "longer than its type allows", ftype, plen)
        if plen < limits[1]:
            raise FrameError(errno.EPROTO, "shorter than its type needs", ftype, plen)
        if ftype not in self.allow:
            raise FrameError(errno.EPROTO, "a type not allowed on this link in its state",
                             ftype, plen)
        if avail - HDR < plen:
            return None
        start = off + HDR
        f = _payload(ftype, bytes(buf[start:start + plen]))
        self._off = start + plen
        return f


def header(ftype, length):
    return _HDR.pack(VERSION, ftype, 0, length)


def encode(ftype, payload=b""):
    return header(ftype, len(payload)) + payload


def hello():
    return encode(HELLO)


def data(seq, ack, message):
    return header(DATA, 16 + len(message)) + struct.pack(">QQ", seq, ack) + bytes(message)


def ack(count):
    return encode(ACK, _U64.pack(count))


def resume(session_id, token, handled):
    return encode(RESUME, bytes(session_id) + bytes(token) + _U64.pack(handled))


def close(code, text):
    raw = text.encode("utf-8")[:TEXT_MAX]
    return encode(CLOSE, struct.pack(">IH", code, len(raw)) + raw)


def ping():
    return encode(PING)


# The server's side, for test servers.
def welcome(session_id):
    return encode(WELCOME, bytes(session_id))


def move(token, addr):
    raw = addr.encode("ascii")
    return encode(MOVE, bytes(token) + struct.pack(">H", len(raw)) + raw)


def resumed(handled):
    return encode(RESUMED, _U64.pack(handled))


def stay():
    return encode(STAY)


def pong(idle_ms):
    return encode(PONG, _U32.pack(idle_ms))
