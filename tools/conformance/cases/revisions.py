"""The cases of the revision levels (SPEC §20.7): `addressed-receipts`,
`addressed-room-keys` and `add-several`. State: none.
"""

from __future__ import annotations

from typing import Final

from hearthmesh.protocol import e2ee
from hearthmesh.protocol.capabilities import Level
from hearthmesh.protocol.envelope import Kind
from hearthmesh.protocol.identity import DeviceId
from hearthmesh.protocol.membership import (
    MEMBERSHIP_CONTENT_TYPE,
    Action,
    MembershipChange,
    encode_membership,
)
from hearthmesh.protocol.receipts import (
    RECEIPT_CONTENT_TYPE,
)
from hearthmesh.protocol.rooms import group_room_id
from hearthmesh.tools.hostile.forge import (
    EnvelopeForge,
    new_stranger,
)

from ..session import Session
from .case import Case
from .shared import read_of_ours

__all__ = ["GROUP_ADDED_SEVERAL", "RECEIPT_NOT_ADDRESSED", "ROOM_KEY_NOT_ADDRESSED"]


async def _receipt_not_addressed(s: Session) -> str:
    """A receipt naming only our own message, delivered to the node's user: it is addressed
    to the homes of the users whose messages it names, never to anyone else's (SPEC §16.2.3)."""
    envelope = s.kit.forge.seal(
        Kind.RECEIPT,
        s.room,
        read_of_ours(s),
        now_ms=s.kit.now_ms(),
        content_type=RECEIPT_CONTENT_TYPE,
    )
    return await s.deliver([envelope.wire])


async def _room_key_not_addressed(s: Session) -> str:
    """An addressed ROOM_KEY whose one share is for our own device, delivered to the node's
    user: it goes to the homes of the user whose devices its shares are for (and its sender's
    own), never to anyone else's (SPEC §27.5.3)."""
    device = s.kit.forge.stranger.device
    bundle = e2ee.issue_key_bundle(
        device,
        identity_key=s.kit.rng(e2ee.CURVE_KEY_BYTES),
        fallback_key=s.kit.rng(e2ee.CURVE_KEY_BYTES),
        issued_ms=s.kit.now_ms(),
    )
    share = e2ee.Share(
        recipient=DeviceId(device.public), olm_kind=e2ee.OlmKind.PRE_KEY, ciphertext=s.kit.rng(64)
    )
    body = e2ee.encode_room_key_shares(e2ee.RoomKeyShares(sender_bundle=bundle, shares=(share,)))
    envelope = s.kit.forge.seal(
        Kind.ROOM_KEY, s.room, body, now_ms=s.kit.now_ms(), content_type=e2ee.ROOM_KEY_CONTENT_TYPE
    )
    return await s.deliver([envelope.wire])


async def _group_added_several(s: Session) -> str:
    """A second stranger creates a closed group and adds the node's user and ours by one ADD
    naming both (SPEC §12.1.1): a node that advertises `add-several` stores both events."""
    creator = EnvelopeForge(new_stranger(s.kit.rng, now_ms=s.kit.now_ms()))
    nonce = s.kit.rng(16)
    group = group_room_id(creator.stranger.user_id, nonce)
    now = s.kit.now_ms()
    changes = (
        MembershipChange(action=Action.CREATE, target=creator.stranger.user_id, nonce=nonce),
        MembershipChange(action=Action.ADD, target=s.user, more=(s.kit.user_id,)),
    )
    events = [
        creator.seal(
            Kind.MEMBERSHIP,
            group,
            encode_membership(change),
            now_ms=now,
            content_type=MEMBERSHIP_CONTENT_TYPE,
        )
        for change in changes
    ]
    return await s.deliver([e.wire for e in events], certificate=creator.stranger.certificate_bytes)


RECEIPT_NOT_ADDRESSED: Final = Case(
    name="receipt_not_addressed",
    section="§16.2.3",
    expected="REJECTED:NOT_ADDRESSED",
    run=_receipt_not_addressed,
    level=Level.ADDRESSED_RECEIPTS,
)


ROOM_KEY_NOT_ADDRESSED: Final = Case(
    name="room_key_not_addressed",
    section="§27.5.3",
    expected="REJECTED:NOT_ADDRESSED",
    run=_room_key_not_addressed,
    level=Level.ADDRESSED_ROOM_KEYS,
)


GROUP_ADDED_SEVERAL: Final = Case(
    name="group_added_several",
    section="§12.1.1, §20.7",
    expected="STORED,STORED",
    run=_group_added_several,
    level=Level.ADD_SEVERAL,
)
