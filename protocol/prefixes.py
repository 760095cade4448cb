"""Standing of network prefixes (SPEC §11.6.5): peer ids are free, addresses are not.

A peer id costs nothing to replace, so bans by peer id alone stop no one. Each connection is
also counted against its address prefix (IPv4 /24, IPv6 /48): a prefix may bring at most
`new_identities_per_prefix` new peer ids per window, and once `prefix_ban_identities` peer ids
from one prefix were banned within a window the prefix itself is banned, for as long as a
peer's ban and doubling the same way. Loopback peers have no prefix unless the policy says so:
on loopback every peer comes through a local proxy or tunnel (Tor, SSH), so the address says
nothing about who is behind it. Pure bookkeeping with the time passed in.

State: the instance's: new and banned identities per address prefix, bounded; its owner calls
it from one thread.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

__all__ = ["PrefixPolicy", "PrefixTable", "address_prefix"]

_V4_BITS: Final = 24
_V6_BITS: Final = 48


@dataclass(frozen=True, slots=True, kw_only=True)
class PrefixPolicy:
    """The numbers of SPEC §11.6.5."""

    new_identities_per_prefix: int = 32
    """New peer ids one prefix may bring per window (default 32); more are disconnected."""
    prefix_ban_identities: int = 3
    """Banned peer ids from one prefix within a window that ban the prefix (default 3)."""
    window_ms: int = 10 * 60_000
    """The window of both counts (default 10 min)."""
    ban_ms: int = 10 * 60_000
    """The first ban of a prefix (default 10 min); each later one doubles it."""
    max_ban_ms: int = 24 * 3600 * 1000
    """No prefix ban lasts longer (default 24 h)."""
    exempt_loopback: bool = True
    """Loopback peers have no prefix (default True; see the module docstring)."""
    max_prefixes: int = 4096
    """Prefixes remembered; beyond it the least recently seen one not banned is forgotten."""
    banned_handshake_interval_ms: int = 1000
    """A banned prefix's connections are refused before their handshake, but one per this
    interval, judged by its peer id (default 1 s)."""
    vouched_exchanges: int = 8
    """Good exchanges (a batch taken, an ack given) after which a connected peer with no points
    is vouched for: its prefix's ban does not cut it off (default 8)."""


def address_prefix(ip: str, *, exempt_loopback: bool = True) -> str | None:
    """The prefix an address counts against: `a.b.c.0/24` or an IPv6 /48; None when exempt
    (loopback, by default) or not an IP address. An IPv4-mapped IPv6 address counts as IPv4."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback and exempt_loopback:
        return None
    bits = _V4_BITS if address.version == 4 else _V6_BITS
    return str(ipaddress.ip_network(f"{address}/{bits}", strict=False))


@dataclass(slots=True)
class _Prefix:
    identities: dict[str, int] = field(default_factory=dict)
    """Peer ids seen first within the window, with when."""
    banned_identities: dict[str, int] = field(default_factory=dict)
    """Peer ids banned within the window, with when."""
    banned_until_ms: int = 0
    bans: int = 0


class PrefixTable:
    """New identities and banned identities per prefix, bounded by `policy.max_prefixes`."""

    def __init__(self, policy: PrefixPolicy | None = None) -> None:
        self.policy = policy or PrefixPolicy()
        self._prefixes: OrderedDict[str, _Prefix] = OrderedDict()

    def __len__(self) -> int:
        return len(self._prefixes)

    def banned(self, prefix: str, now_ms: int) -> bool:
        """True while `prefix` is banned."""
        record = self._prefixes.get(prefix)
        return record is not None and now_ms < record.banned_until_ms

    def admit(self, prefix: str, peer: str, now_ms: int) -> bool:
        """A connection of `peer` from `prefix`: False if the prefix is banned or `peer` would
        be one new identity too many for it in this window."""
        record = self._record(prefix, now_ms)
        if now_ms < record.banned_until_ms:
            return False
        if peer in record.identities:
            return True
        if len(record.identities) >= self.policy.new_identities_per_prefix:
            return False
        record.identities[peer] = now_ms
        return True

    def peer_banned(self, prefix: str, peer: str, now_ms: int) -> int | None:
        """`peer` from `prefix` was banned; the prefix ban's end if this starts one."""
        record = self._record(prefix, now_ms)
        if now_ms < record.banned_until_ms:
            return None
        record.banned_identities[peer] = now_ms
        if len(record.banned_identities) < self.policy.prefix_ban_identities:
            return None
        record.bans += 1
        length = min(self.policy.max_ban_ms, self.policy.ban_ms << min(record.bans - 1, 30))
        record.banned_until_ms = now_ms + length
        record.banned_identities.clear()
        return record.banned_until_ms

    def _record(self, prefix: str, now_ms: int) -> _Prefix:
        record = self._prefixes.get(prefix)
        if record is None:
            record = self._prefixes[prefix] = _Prefix()
            self._bound(now_ms)
        self._prefixes.move_to_end(prefix)
        since = now_ms - self.policy.window_ms
        for seen in (record.identities, record.banned_identities):
            for peer in [p for p, at in seen.items() if at <= since]:
                del seen[peer]
        return record

    def _bound(self, now_ms: int) -> None:
        """Forget the least recently seen prefix that is not banned (the newest stays)."""
        while len(self._prefixes) > self.policy.max_prefixes:
            older = list(self._prefixes.items())[:-1]
            victim = next((p for p, r in older if r.banned_until_ms <= now_ms), older[0][0])
            del self._prefixes[victim]
