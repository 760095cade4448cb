"""`RelayServiceLimits`: what a node's circuit relay v2 hop service gives others (SPEC §10.7).

Apart from `circuit_relay` so that `NodeConfig` names the limits without importing libp2p.
It owns no state.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RelayServiceLimits"]


@dataclass(frozen=True, kw_only=True)
class RelayServiceLimits:
    """What this node's hop service gives others (SPEC §10.7); defaults documented there."""

    max_reservations: int = 16
    """Peers that may hold a reservation on us at once."""
    max_circuits_per_reservation: int = 8
    """Circuits open at once to one reserved peer."""
    circuit_bytes: int = 16 * 1024 * 1024
    """Bytes one circuit carries (both directions together) before the relay closes it."""
    circuit_seconds: int = 600
    """How long one circuit lives before the relay closes it (the peers re-dial)."""
    reservation_ttl_seconds: int = 3600
    """How long a reservation lasts unless refreshed (the client refreshes it before)."""
