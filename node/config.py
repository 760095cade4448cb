"""What a node needs to start: where its data lives and how it meets the mesh."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from hearthmesh.node.outages import PROBE_MAX_MS
from hearthmesh.protocol.standing import StandingPolicy
from hearthmesh.storage.api import DEFAULT_RELAY_QUOTA, RelayQuota

__all__ = ["DEFAULT_LISTEN", "NodeConfig"]

DEFAULT_LISTEN: Final = "/ip4/127.0.0.1/tcp/4470"


@dataclass(frozen=True, kw_only=True)
class NodeConfig:
    """Settings of one home node; every field has a default but `data_dir`."""

    data_dir: Path
    """Holds the LMDB environment, media blobs and the API token."""
    display_name: str = ""
    """The local user's display name; used when the identity is first created."""
    listen_addrs: tuple[str, ...] = (DEFAULT_LISTEN,)
    """libp2p multiaddrs; `tcp/0` picks a free port."""
    announce_addrs: tuple[str, ...] = ()
    """Addresses put in the home record instead of the listen addresses (NAT, proxies)."""
    bootstrap: tuple[str, ...] = ()
    """Multiaddrs with /p2p/<peer id> dialled at start."""
    enable_mdns: bool = False
    """Find peers on the LAN with mDNS."""
    share_presence: bool = True
    """Announce our user's presence (and home record) on gossip; off: invisible, and others
    find our inbox through hello and the DHT only."""
    presence_interval_ms: int = 10_000
    """How often this node announces its users online (and their home records)."""
    presence_ttl_ms: int = 30_000
    """A user not heard from for this long is offline."""
    relay_ttl_ms: int = 7 * 24 * 3600 * 1000
    """How long this node keeps envelopes it relays for others."""
    relay_quota: RelayQuota = DEFAULT_RELAY_QUOTA
    """How much this node holds for any one user whose home is away."""
    sync_interval_ms: int = 60_000
    """How often this node reconciles its rooms with its user's other homes (DESIGN §7)."""
    retry_poll_ms: int = 200
    """Longest sleep of the delivery worker between looks at the outbox."""
    gap_grace_ms: int = 1500
    """How long a gap in a sender's sequence may stay open before other homes are asked for
    the missing envelopes (SPEC §26); the sender's own retries usually fill it sooner."""
    standing: StandingPolicy = field(default_factory=StandingPolicy)
    """What misbehaving peers pay (SPEC §11.6)."""
    # --- issue #12 slice "supervision": availability under faults ---
    outage_probe_max_ms: int = PROBE_MAX_MS
    """Longest wait, default 5,000 ms, between two probes of a destination whose homes are
    down (SPEC §11.5.2): after a healed partition its backlog waits no longer than this."""
    extra: dict[str, str] = field(default_factory=dict)
    """Free-form settings for embedding apps; ignored by the node."""
