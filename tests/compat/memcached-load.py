#!/usr/bin/env python3
"""memcached-load.py - a pooled memcached client that counts every failed
request, for tests/compat/memcached.sh.

-c connections (one thread each, as a pool hands them out) each send
"set k 0 0 N" and "get k" in turn, on a key of their own, and check the
answers (STORED, the value back). A connection is kept for the whole run, as a pool keeps it; with
--recycle N it is closed after N requests and a new one opened (a pool's
maximum connection lifetime). A refused or failed connect, a reset, an
end of stream, no answer within --timeout and a wrong answer are errors,
counted by kind; the connection is then opened again after 10 ms.

The run is bounded: no request starts after --duration seconds, at most
--max requests are sent, and none waits longer than --timeout, so it ends
within duration + timeout. Prints one line:
  requests N errors E (refused a, reset b, eof c, timeout d, bad e; connections k)
Exit status: 0 when no request failed, 1 otherwise.
"""
import argparse
import errno
import socket
import sys
import threading
import time

KINDS = ("refused", "reset", "eof", "timeout", "bad")


class Worker(threading.Thread):
    def __init__(self, args, idx, deadline, budget):
        super().__init__(daemon=True)
        self.args, self.idx, self.deadline, self.budget = args, idx, deadline, budget
        self.ok = 0
        self.conns = 0
        self.err = dict.fromkeys(KINDS, 0)
        self.first = {}

    def fail(self, kind, what):
        self.err[kind] += 1
        self.first.setdefault(kind, "%s at +%.2f s" % (what, time.monotonic() - START))

    def connect(self):
        s = socket.create_connection(("127.0.0.1", self.args.port), timeout=self.args.timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conns += 1
        return s

    def roundtrip(self, s, req, want_end):
        s.sendall(req)
        got = b""
        while not got.endswith(want_end):
            d = s.recv(65536)
            if not d:
                raise EOFError
            got += d
        return got

    def one(self, s, n):
        key = b"k%d" % self.idx
        val = b"v%d-%d" % (self.idx, n)
        if n % 2 == 0:
            r = self.roundtrip(s, b"set %s 0 0 %d\r\n%s\r\n" % (key, len(val), val), b"\r\n")
            return r == b"STORED\r\n"
        r = self.roundtrip(s, b"get %s\r\n" % key, b"END\r\n")
        return r.startswith(b"VALUE %s " % key) and b"\r\nv%d-" % self.idx in r

    def run(self):
        s, n, used = None, 0, 0
        while time.monotonic() < self.deadline and self.budget.take():
            try:
                if s is None:
                    # A new connection may reach another copy, whose cache
                    # is empty: it starts with a set.
                    s, used = self.connect(), 0
                    n += n % 2
                if not self.one(s, n):
                    self.fail("bad", "wrong answer")
                    raise OSError(errno.EPROTO, "bad answer")
                self.ok += 1
                n += 1
                used += 1
                if self.args.recycle and used >= self.args.recycle:
                    s.close()
                    s = None
                continue
            except ConnectionRefusedError as e:
                self.fail("refused", str(e))
            except (ConnectionResetError, BrokenPipeError) as e:
                self.fail("reset", str(e))
            except EOFError:
                self.fail("eof", "end of stream")
            except socket.timeout:
                self.fail("timeout", "no answer within %g s" % self.args.timeout)
            except OSError as e:
                if e.errno != errno.EPROTO:
                    self.fail("reset", str(e))
            if s is not None:
                s.close()
                s = None
            time.sleep(0.01)  # a failed connection is opened again after 10 ms
        if s is not None:
            s.close()


class Budget:
    def __init__(self, n):
        self.n, self.lock = n, threading.Lock()

    def take(self):
        with self.lock:
            self.n -= 1
            return self.n >= 0


START = time.monotonic()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("-c", "--connections", type=int, default=10)
    p.add_argument("-d", "--duration", type=float, default=10)
    p.add_argument("--timeout", type=float, default=2)
    p.add_argument("--recycle", type=int, default=0)
    p.add_argument("--max", type=int, default=5_000_000)
    args = p.parse_args()
    deadline = START + args.duration
    budget = Budget(args.max)
    ws = [Worker(args, i, deadline, budget) for i in range(args.connections)]
    for w in ws:
        w.start()
    for w in ws:
        w.join(args.duration + args.timeout + 5)
    ok = sum(w.ok for w in ws)
    err = {k: sum(w.err[k] for w in ws) for k in KINDS}
    nerr = sum(err.values())
    print("requests %d errors %d (%s; connections %d)" % (
        ok + nerr, nerr, ", ".join("%s %d" % (k, err[k]) for k in KINDS),
        sum(w.conns for w in ws)))
    for w in ws:
        for k, v in w.first.items():
            print("first %s on connection %d: %s" % (k, w.idx, v))
    return 1 if nerr or ok == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
