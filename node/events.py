"""What a node tells the app that embeds it (`Node.events()`): past-tense facts."""

from __future__ import annotations

from dataclasses import dataclass

from hearthmesh.protocol.envelope import Envelope, MessageId, RoomId
from hearthmesh.protocol.identity import DeviceId, UserId
from hearthmesh.storage.api import FeedEntry

__all__ = [
    "DeliveredToHome",
    "DeviceKeysChanged",
    "DeviceVerified",
    "Logged",
    "MembershipChanged",
    "MessageReceived",
    "NodeEvent",
    "PresenceChanged",
    "TypingChanged",
    "VerificationChanged",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageReceived:
    """A stored, non-ephemeral envelope of a room this node's user is in, in per-sender order."""

    envelope: Envelope


@dataclass(frozen=True, slots=True, kw_only=True)
class Logged:
    """A commit of what arrived here numbered events in the arrival log (storage/arrivals.py).
    `entries` are those it made, in number order, with the envelopes as
    stored, so a client feed tells them without reading the log back; None when it also moved
    or removed entries (only the log tells what it holds now)."""

    entries: tuple[FeedEntry, ...] | None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveredToHome:
    """A recipient's home node signed that it stored one of our messages."""

    message_id: MessageId
    recipient: UserId
    peer_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PresenceChanged:
    """A user went online or offline."""

    user: UserId
    online: bool
    last_seen_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class MembershipChanged:
    """The member set of a room changed."""

    room: RoomId
    members: frozenset[UserId]


@dataclass(frozen=True, slots=True, kw_only=True)
class TypingChanged:
    """A member of a room started or stopped typing (ephemeral: never stored, SPEC §17)."""

    room: RoomId
    user: UserId
    active: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceVerified:
    """Our user confirmed a SAS with `user`'s `device` and both MACs verified (SPEC §29.4)."""

    user: UserId
    device: DeviceId


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceKeysChanged:
    """A user with verified device keys now lists a key not verified, or dropped a verified
    one (SPEC §29.5): the warning to show before trusting their messages again."""

    user: UserId
    devices: tuple[DeviceId, ...]
    """The device keys their newest record lists."""


@dataclass(frozen=True, slots=True, kw_only=True)
class VerificationChanged:
    """A SAS verification flow held here began, moved on or ended (SPEC §29.5.2): clients
    show it as it is now (ephemeral, never stored)."""

    flow: bytes
    """The flow id."""


NodeEvent = (
    MessageReceived
    | Logged
    | DeliveredToHome
    | PresenceChanged
    | MembershipChanged
    | TypingChanged
    | DeviceVerified
    | DeviceKeysChanged
    | VerificationChanged
)
