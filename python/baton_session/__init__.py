# SPDX-License-Identifier: MIT
"""baton_session: a client of libbaton-session's protocol, whose sessions
move between servers without losing, duplicating or reordering a message
(docs/session-protocol.md in the baton repository)."""

from .blocking import Session, connect
from .client import Client, SessionError, parse_address, strerror, tls_context
from .frame import FrameError

__all__ = ["Client", "Session", "SessionError", "FrameError", "connect", "parse_address",
           "strerror", "tls_context"]
__version__ = "0.1.0"
