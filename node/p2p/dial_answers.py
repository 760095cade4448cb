"""A dial bound that cuts an address that does not answer, not a handshake under way (SPEC
§10.8, §20.6).

Part of the libp2p bridge (ARCHITECTURE §5, tests/test_layering.py `BRIDGE_MODULES`). A home
record's address that drops the SYN (a LAN address seen from elsewhere) makes libp2p retry it
for 13-38 s, so a dial of one is bounded (`PeerLinks.reach`, 4 s). Bounding the whole dial
also cut dials whose TCP connection had opened but whose Noise and muxer handshakes, a few
round trips through a loaded peer, took longer: at a 50-home group's formation the creator's
first dials to ~20 homes, started together under load, were all cut at the bound and their
deliveries parked for 40 s. Here the TCP transport's dial tells when an address answered, and
the bound of a dial waiting on it is then moved to `after_answer_s`.

State (trio thread): the bounds of the dials under way, by the (host, port) they dial.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import trio
from libp2p.abc import IRawConnection
from libp2p.network.swarm import Swarm
from libp2p.transport.tcp.tcp import TCP
from multiaddr import Multiaddr  # type: ignore[import-untyped]

__all__ = ["AFTER_ANSWER_S", "DialAnswers"]

AFTER_ANSWER_S: Final = 30.0
"""How long a dial whose address answered may take to finish its handshakes (up to 15 s seen
at a 50-home group's formation on 2 cores); past it the dial is cut as one that did not
answer."""

_Endpoint = tuple[str, int]


class DialAnswers:
    """The TCP transports' dials, watched for an answer (`install`, before the swarm runs)."""

    def __init__(self, *, after_answer_s: float = AFTER_ANSWER_S) -> None:
        self._after_answer_s = after_answer_s
        self._bounds: dict[_Endpoint, list[trio.CancelScope]] = {}

    def install(self, swarm: Swarm) -> None:
        for transport in swarm.transport_manager.get_transports():
            if isinstance(transport, TCP):
                self._watch(transport)

    def _watch(self, transport: TCP) -> None:
        dial = transport.dial

        async def dial_answered(maddr: Multiaddr) -> IRawConnection:
            connection = await dial(maddr)
            self._answered(maddr)
            return connection

        transport.dial = dial_answered  # type: ignore[method-assign]

    @contextmanager
    def bounded(self, address: Multiaddr, answer_s: float) -> Iterator[trio.CancelScope]:
        """A scope that cuts what it holds after `answer_s`, unless a TCP dial of `address`
        answered meanwhile: then after `after_answer_s` more. The caller reads
        `cancelled_caught` after the block."""
        with trio.move_on_after(answer_s) as scope:
            endpoint = _endpoint(address)
            if endpoint is None:  # not TCP (a circuit, QUIC): bounded as a whole
                yield scope
                return
            waiting = self._bounds.setdefault(endpoint, [])
            waiting.append(scope)
            try:
                yield scope
            finally:
                waiting.remove(scope)
                if not waiting:
                    del self._bounds[endpoint]

    def _answered(self, maddr: Multiaddr) -> None:
        endpoint = _endpoint(maddr)
        for scope in self._bounds.get(endpoint, ()) if endpoint is not None else ():
            scope.deadline = trio.current_time() + self._after_answer_s


def _endpoint(address: Multiaddr) -> _Endpoint | None:
    """(host, port) of a direct TCP address; None for any other."""
    names = [protocol.name for protocol in address.protocols()]
    if "p2p-circuit" in names or "tcp" not in names or ("ws" in names or "wss" in names):
        return None
    for name in ("ip4", "ip6", "dns4", "dns6", "dns"):
        if name in names:
            return str(address.value_for_protocol(name)), int(address.value_for_protocol("tcp"))
    return None
