"""py-libp2p's `read_exactly`, ending at a connection's end at once, not after 100 more reads.

Part of the libp2p bridge (ARCHITECTURE §5; tests/test_layering.py `BRIDGE_MODULES`).
py-libp2p 0.8.1's `read_exactly` (io/utils.py) reads again while it has fewer than n bytes, up
to 100 times, and stops early only on an exception; a TCP connection's read returns b"" at its
end (io/trio.py). So each read waiting there when a peer closed (a Noise frame's length, a
multistream line, a varint) read the ended socket 100 times more, each a trio checkpoint
through four layers: ~3 ms of CPU on the asker of each AutoNAT dial-back (which ends after the
security handshake, by design) and on the reading end of each connection a peer closes.

`install()` puts in its place, in the modules that imported it, one that raises the same
`IncompleteReadError` at the first empty read. An empty read is the end of the stream for
every reader py-libp2p hands it (TCP, Noise, yamux streams); QUIC's and WebSocket's raise at
their end already. Partial reads are retried as before.
"""

from __future__ import annotations

from typing import Final

import libp2p.host.ping
import libp2p.io.msgio
import libp2p.io.utils
import libp2p.stream_muxer.yamux.yamux
import libp2p.utils.varint
from libp2p.io.abc import Reader
from libp2p.io.exceptions import IncompleteReadError

__all__ = ["install", "read_exactly"]

_IMPORTERS: Final = (
    libp2p.io.utils,
    libp2p.io.msgio,
    libp2p.utils.varint,
    libp2p.stream_muxer.yamux.yamux,
    libp2p.host.ping,
)
"""The modules that bind `read_exactly` (py-libp2p 0.8.1)."""


async def read_exactly(
    reader: Reader, n: int, retry_count: int = libp2p.io.utils.DEFAULT_RETRY_READ_COUNT
) -> bytes:
    """Exactly `n` bytes of `reader`, as py-libp2p's; the stream's end (an empty read) raises
    `IncompleteReadError` at once."""
    data = await reader.read(n)
    buffer = bytearray(data)
    retries = retry_count
    while len(buffer) < n and data and retries > 0:
        data = await reader.read(n - len(buffer))
        buffer.extend(data)
        retries -= 1
    if len(buffer) >= n:
        return bytes(buffer)
    raise IncompleteReadError(
        f"Connection closed during read operation: expected {n} bytes but received "
        f"{len(buffer)} bytes",
        expected_bytes=n,
        received_bytes=len(buffer),
    )


def install() -> None:
    """Use ours wherever py-libp2p reads exactly (idempotent)."""
    for module in _IMPORTERS:
        module.read_exactly = read_exactly  # type: ignore[attr-defined]
