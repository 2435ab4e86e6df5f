# SPDX-License-Identifier: MIT
"""A blocking session for scripts: connect, send, recv, close.

It drives a Client from its own calls (no thread): recv() dispatches until
a message comes, so moves, acknowledgements and pings happen while a
script waits for a message. A script that stops calling recv() for longer
than the server's idle limit loses its session (ETIMEDOUT).
"""

import collections
import errno
import time

from .client import Client, SessionError


class Session:
    """A session opened by connect(); moves are followed silently (moves
    lists (address, error, pause_s) of each)."""

    def __init__(self, address, timeout=5.0, **options):
        self._inbox = collections.deque()
        self._error = None
        self._ended = False
        self.moves = []
        self.client = Client(address, on_message=self._on_message, on_lost=self._on_lost,
                             on_moved=self._on_moved, timeout=timeout, **options)
        self._run_until(lambda: self.client.state != "opening", timeout)
        if not self.client.alive:
            self.client.close()
            raise self._error or SessionError(errno.ECONNABORTED, "connect")

    def _on_message(self, client, data):
        self._inbox.append(data)

    def _on_lost(self, client, error):
        self._ended = True
        self._error = error

    def _on_moved(self, client, address, error, pause):
        self.moves.append((address, error, pause))

    def _run_until(self, done, timeout):
        end = None if timeout is None else time.monotonic() + timeout
        while not done() and self.client.alive:
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                return False
            self.client.wait(left)
        return done()

    @property
    def id(self):
        return self.client.id

    @property
    def address(self):
        return self.client.address

    def send(self, data):
        """Queue a message (see Client.send for the errors)."""
        self.client.send(data)

    def recv(self, timeout=None):
        """The next message. Raises TimeoutError after timeout seconds,
        SessionError when the session ended (errno ENOTCONN when the server
        closed it normally)."""
        if not self._run_until(lambda: self._inbox, timeout):
            if self._ended or not self.client.alive:
                raise self._error or SessionError(errno.ENOTCONN, "closed by the server")
            raise TimeoutError("no message in %s s" % timeout)
        return self._inbox.popleft()

    def close(self):
        self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def connect(address, *, timeout=5.0, **options):
    """Open a session and wait for the server to welcome it (at most
    timeout seconds). options are Client's: ssl_context, cafile,
    insecure, log."""
    return Session(address, timeout=timeout, **options)
