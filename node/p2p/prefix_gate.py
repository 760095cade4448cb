"""A banned address prefix pays for one handshake a second at most (SPEC §11.6.5).

Runs on the trio thread. A prefix ban (decided by `PeerStanding` on the event loop) refuses the
prefix's connections once their Noise handshake named the peer; a flood of fresh identities from
that prefix would still cost a handshake each (an X25519 exchange and two signature checks on
the one trio thread that also carries every honest stream). This gate refuses such connections
when they are accepted, before any handshake, except one per interval per prefix
(`PrefixPolicy.banned_handshake_interval_ms`, 1 s): that one goes on to be judged by its peer
id, so our user's own homes behind that prefix are never shut out (§11.6.5), only slowed.

State (trio thread only): the banned prefixes with the trio time their ban ends and their
interval, and, per banned prefix, when it last got a handshake through.
"""

from __future__ import annotations

import trio
from libp2p.network.connection_gate import ConnectionGate
from multiaddr import Multiaddr  # type: ignore[import-untyped]

from hearthmesh.protocol.prefixes import address_prefix

__all__ = ["PrefixGate"]


class PrefixGate(ConnectionGate):
    """libp2p's IP allow/deny gate, plus the node's banned prefixes."""

    def __init__(self, *, allow_list: list[str] | None, deny_list: list[str] | None) -> None:
        super().__init__(allow_list=allow_list, deny_list=deny_list)
        self._banned: dict[str, tuple[float, float]] = {}
        """Prefix -> (trio time its ban ends, seconds between handshakes let through)."""
        self._last_through: dict[str, float] = {}
        self.refused = 0
        """Connections refused before their handshake (for tests and the benchmark)."""

    def ban(self, prefix: str, seconds: float, *, interval_s: float) -> None:
        """Gate `prefix` for `seconds` from now, one handshake per `interval_s` let through."""
        now = trio.current_time()
        # Ended bans go here, so the table holds only live ones (standing bounds how many).
        self._banned = {p: ban for p, ban in self._banned.items() if ban[0] > now}
        self._banned[prefix] = (now + seconds, interval_s)
        self._last_through = {p: t for p, t in self._last_through.items() if p in self._banned}

    async def is_allowed(self, remote_addr: Multiaddr) -> bool:
        if not await super().is_allowed(remote_addr):
            return False
        if not self._banned:
            return True
        prefix = _prefix_of(remote_addr)
        if prefix is None:
            return True
        ban = self._banned.get(prefix)
        now = trio.current_time()
        if ban is None or ban[0] <= now:
            return True
        last = self._last_through.get(prefix)
        if last is None or now - last >= ban[1]:
            self._last_through[prefix] = now
            return True
        self.refused += 1
        return False


def _prefix_of(address: Multiaddr) -> str | None:
    """The address prefix of a remote multiaddr's IP (loopback included: whether loopback is
    exempt was decided when the prefix was banned)."""
    for protocol in ("ip4", "ip6"):
        try:
            ip = address.value_for_protocol(protocol)
        except LookupError:  # multiaddr's ProtocolLookupError: no such part
            continue
        if ip:
            return address_prefix(str(ip), exempt_loopback=False)
    return None
