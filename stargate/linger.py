"""Lingering close: read and discard what a peer still sends, then hang up.

When a server closes a TCP connection whose peer is still sending, the
kernel answers the next segments with a reset, and a reset can make the
peer's stack drop what the server wrote last before its application reads
it: the 4xx answer to a malformed request, the close frame of a failed
WebSocket.  Shutting down the writing side first (the peer sees the end of
the stream after the answer) and reading for a bounded while avoids it, as
web servers do after an error response.
"""

from __future__ import annotations

import socket
from typing import Any

from stargate import runtime

__all__ = ["LINGER_BYTES", "LINGER_SECONDS", "linger"]

#: How long a peer's input is drained at most.
LINGER_SECONDS = 1.0

#: How many bytes of it are read at most.
LINGER_BYTES = 4 * 1024 * 1024

_CHUNK = 65536


def linger(
    sock: Any, seconds: float = LINGER_SECONDS, limit: int = LINGER_BYTES
) -> bool:
    """Shut down ``sock``'s writing side, then read and discard its input.

    Stops at the end of the peer's stream, after ``seconds``, after
    ``limit`` bytes, or when the socket fails; never raises ``OSError``.
    The caller closes the socket afterwards.  Must run in a green thread
    of its own or one that may wait: reading waits for the peer.

    :returns: whether the peer ended its stream in time.
    """
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        return False  # already gone: nothing to protect
    received = 0
    ended = False
    with runtime.get().timeout(seconds):
        try:
            while received < limit:
                data = sock.recv(_CHUNK)
                if not data:
                    ended = True
                    break
                received += len(data)
        except OSError:
            pass  # a reset or a socket closed meanwhile: done either way
    return ended
