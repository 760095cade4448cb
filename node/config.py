"""What a node needs to start: where its data lives and how it meets the mesh."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from hearthmesh.protocol.authority import DEFAULT_DEFERRAL_POLICY, DeferralPolicy
from hearthmesh.protocol.membership_log import DEFAULT_MEMBERSHIP_LIMITS, MembershipLimits
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
    # --- room authority and membership state (issue #12, slice "authority") ---
    membership_limits: MembershipLimits = DEFAULT_MEMBERSHIP_LIMITS
    """Bounds of SPEC §12.4: 4,096 MEMBERSHIP events per room, 256 per sender in a room, a
    checkpoint of the folded state every 64 events, 1,024 groups' folds held in memory."""
    deferrals: DeferralPolicy = DEFAULT_DEFERRAL_POLICY
    """SPEC §12.5: a sender may be answered DEFERRED for authority 1,024 times at once, 16 more
    per second, 4,096 senders remembered; past that its envelopes are refused NOT_AUTHORIZED."""
    extra: dict[str, str] = field(default_factory=dict)
    """Free-form settings for embedding apps; ignored by the node."""
