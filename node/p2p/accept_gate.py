"""Refusal at accept (SPEC §11.6.5): an inbound TCP connection from a refused address is closed
before the Noise handshake.

Every new identity costs a node an X25519 agreement and Ed25519 work on the trio thread, which
also carries the honest traffic; a banned address prefix costs it an accept and a close instead.
The gate wraps the handler of each TCP listener (libp2p's `ConnectionGate` is also asked on
outbound dials, and our own dials to a banned prefix, such as one of our user's homes behind
the same NAT, must go on). QUIC connections are not gated here: their handshake is inside the
transport; the post-handshake refusal (`node.mesh.standing`) still applies to them.

State owned: the counts of inbound TCP connections refused and let through (written on the
trio thread, read anywhere).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from libp2p.abc import INetwork
from libp2p.transport.tcp.tcp import TCPListener

__all__ = ["AcceptGate", "AddressFilter"]

AddressFilter = Callable[[str], bool]
"""IP address -> True to refuse its connections; called on the trio thread, so thread-safe."""

_Handler = Callable[[Any], Awaitable[None]]


def _admit_all(_ip: str) -> bool:
    return False


class AcceptGate:
    """Closes inbound TCP connections whose address `refuses` names, before any handshake."""

    def __init__(self) -> None:
        self.refuses: AddressFilter = _admit_all
        self.refused = 0
        """Inbound TCP connections closed at accept."""
        self.handshaken = 0
        """Inbound TCP connections let through to the Noise handshake."""

    def install(self, network: INetwork) -> None:
        """Gate the TCP listeners `network` has now (trio thread, once it listens)."""
        for listener in getattr(network, "listeners", {}).values():
            if isinstance(listener, TCPListener):
                listener.handler = self._gated(listener.handler)

    def _gated(self, handler: _Handler) -> _Handler:
        async def gated(stream: Any) -> None:
            address = stream.get_remote_address()
            if address is not None and self.refuses(str(address[0])):
                self.refused += 1
                with contextlib.suppress(Exception):  # the peer may be gone already
                    await stream.close()
                return
            self.handshaken += 1
            await handler(stream)

        return gated
