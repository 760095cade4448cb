"""Room-key shares addressed to their users' homes (SPEC §27.5.3, the revision
`addressed-room-keys`, §20.7): how a sender groups a session's shares, and when a home must
refuse an addressed ROOM_KEY.

The shares of one session go, per recipient user, in ROOM_KEY envelopes of their own that are
unsequenced (§8.5) and reach that user's homes (and the sender's own other homes) only, so a
home takes in the shares of its own user's devices and not one per device of the group. Users
whose homes do not all speak the revision get theirs in the form before: one sequenced ROOM_KEY
for all of them, to every member. Pure rules; no state.
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from dataclasses import dataclass

from ..addressing import is_addressed
from ..envelope import MAX_BODY_BYTES, Envelope
from ..errors import NotAddressed
from ..identity import DeviceId, UserId
from .keys import KeyBundle
from .room_key import RoomKeyShares, Share, chunk_shares

__all__ = ["AddressedShare", "KeyGroup", "address_room_key_refusal", "group_shares"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AddressedShare:
    """One recipient device's share, with the user whose newest record lists the device."""

    user: UserId
    share: Share


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyGroup:
    """One ROOM_KEY body to seal, and whom it goes to."""

    to: UserId | None
    """The user whose homes the addressed form goes to; None: the sequenced form before the
    revision, to every member (SPEC §20.7)."""
    shares: RoomKeyShares


def group_shares(
    sender_bundle: KeyBundle,
    shares: Iterable[AddressedShare],
    addressed: Set[UserId],
    *,
    max_bytes: int = MAX_BODY_BYTES,
) -> list[KeyGroup]:
    """The ROOM_KEY bodies of one session's shares (SPEC §27.5.2, §27.5.3): the shares of each
    user in `addressed` in bodies of their own, addressed to that user (in user order, each
    user's shares in the order given); the rest together in the sequenced form, first. Each
    body within `max_bytes`."""
    per_user: dict[UserId, list[Share]] = {}
    rest: list[Share] = []
    for item in shares:
        if item.user in addressed:
            per_user.setdefault(item.user, []).append(item.share)
        else:
            rest.append(item.share)
    groups = [
        KeyGroup(to=None, shares=body)
        for body in chunk_shares(sender_bundle, rest, max_bytes=max_bytes)
    ]
    for user in sorted(per_user):
        groups += [
            KeyGroup(to=user, shares=body)
            for body in chunk_shares(sender_bundle, per_user[user], max_bytes=max_bytes)
        ]
    return groups


def address_room_key_refusal(
    envelope: Envelope,
    shares: RoomKeyShares,
    recipient: UserId,
    recipient_devices: Set[DeviceId],
) -> NotAddressed | None:
    """Why a home of `recipient` must refuse this ROOM_KEY, if it must (SPEC §27.5.3).

    An addressed ROOM_KEY goes to the homes of the one user whose devices its shares are for,
    and to its sender's own other homes. A home refuses one from another user that holds no
    share for a device of its user (`recipient_devices`: those the newest record of its user
    held here lists). A share for a device that record does not list is not judged: a device
    linked or revoked since the home's copy of the record was made. A sequenced ROOM_KEY, the
    form before the revision, goes to every member and is never refused for whom its shares
    are for (SPEC §20.7).
    """
    if recipient == envelope.sender_user or not is_addressed(envelope):
        return None
    if any(share.recipient in recipient_devices for share in shares.shares):
        return None
    return NotAddressed("an addressed ROOM_KEY with no share for this user's devices")
