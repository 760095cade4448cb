"""The cases of level `im` (SPEC §20.5): what clients are shown, groups and membership,
receipts in the broadcast form, media and presence (SPEC §20.2). State: none.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

from hearthmesh.protocol.canonical import CborValue, encode_canonical
from hearthmesh.protocol.capabilities import Level
from hearthmesh.protocol.envelope import Kind, RoomId, decode_envelope
from hearthmesh.protocol.errors import HearthError
from hearthmesh.protocol.gossip import (
    PRESENCE_CONTENT_TYPE,
    SIGNALS_PROTOCOL,
    PresenceStatus,
    encode_presence,
    room_topic,
)
from hearthmesh.protocol.identity import UserId, user_id_text
from hearthmesh.protocol.media import MEDIA_PROTOCOL, MediaDownload, MediaRefused
from hearthmesh.protocol.media import encode_request as encode_media_request
from hearthmesh.protocol.media_seal import sealed_size
from hearthmesh.protocol.membership import (
    MAX_ADD_TARGETS,
    MEMBERSHIP_CONTENT_TYPE,
    Action,
    MembershipChange,
    decode_membership,
    encode_membership,
)
from hearthmesh.protocol.receipts import (
    RECEIPT_CONTENT_TYPE,
)
from hearthmesh.protocol.rooms import group_room_id
from hearthmesh.tools.hostile.forge import (
    EnvelopeForge,
    new_stranger,
    random_room,
)
from hearthmesh.tools.hostile.peer import DeliveryTrap, HostilePeer, code_name

from ..session import Session
from .case import Case
from .shared import newcomer_home, read_of_ours
from .social import befriend

__all__ = [
    "ADD_OF_TOO_MANY",
    "GOSSIPED_INTO_THE_GROUP",
    "GROUP_CREATED",
    "GROUP_FORGED_CREATE",
    "GROUP_MEMBER_KICKS",
    "GROUP_MEMBER_WRITES",
    "MEDIA_FLOOD",
    "MEDIA_NAMED_BY_A_STRANGER",
    "MEDIA_SERVED_TO_A_MEMBER",
    "MEDIA_UNKNOWN_DIGEST",
    "MEMBERSHIP_HISTORY_FOR_THE_ADDED",
    "MEMBERSHIP_IN_A_DIRECT_ROOM",
    "PRESENCE_FROM_CONTACTS_ONLY",
    "RECEIPT_BROADCAST_FORM",
    "SHOWN_ONCE_IN_ORDER",
]

GOSSIP_WAIT_S: Final = 10.0
"""How long the gossip case waits to join the topic's mesh, and then for the message."""


MEDIA_FLOOD_REQUESTS: Final = 40
MEDIA_FLOOD_AT_ONCE: Final = 8
"""Media requests sent back to back: twice the burst a node must allow (SPEC §25.3.3)."""


MEDIA_BLOB_BYTES: Final = 300_000
"""The blob the node's user sends us: past one chunk of 256 KiB, so it comes in two (SPEC
§25.1)."""

PRESENCE_TTL_MS: Final = 60_000
"""How long a presence we push says we stay online (SPEC §14.2): past the case's run."""


PRESENCE_ROOM: Final = RoomId(bytes(32))
"""The all-zero room of envelopes that belong to no room, presence among them (SPEC §14.2)."""


async def _shown_once_in_order(s: Session) -> str:
    """What the node's user is shown of our direct room (SPEC §15.5): each message we
    delivered, once, in our sequence order, the out-of-order pair included (§8.2)."""
    assert s.api is not None
    page = await s.api.call(
        "GET", f"/v1/conversation/{s.room.hex()}/details", params={"limit": "100"}
    )
    delivered = {e.message_id.hex() for e in s.delivered}
    ours = [m for m in page["messages"] if m["message_id"] in delivered]
    return "SHOWN:" + ",".join(str(m["seq"]) for m in ours)


async def _receipt_broadcast_form(s: Session) -> str:
    """A RECEIPT that takes a place in its sender's sequence, the broadcast form of revision 0
    (SPEC §20.7), naming only our own message: stored, not judged by its address, and not
    charged, so a home that speaks both revisions takes what an older node sends."""
    wire = s.kit.forge.raw(
        room=s.room,
        now_ms=s.kit.now_ms(),
        kind=int(Kind.RECEIPT),
        body=read_of_ours(s),
        content_type=RECEIPT_CONTENT_TYPE,
    )
    return await s.deliver([wire])


async def _group_created(s: Session) -> str:
    """A second stranger creates a closed group and, as its admin, adds the node's user and
    ours (SPEC §12.2): all allowed."""
    creator = EnvelopeForge(new_stranger(s.kit.rng, now_ms=s.kit.now_ms()))
    nonce = s.kit.rng(16)
    group = group_room_id(creator.stranger.user_id, nonce)
    create = MembershipChange(
        action=Action.CREATE, target=creator.stranger.user_id, nonce=nonce, name="conformance"
    )
    now = s.kit.now_ms()
    events = [
        creator.seal(
            Kind.MEMBERSHIP,
            group,
            encode_membership(create),
            now_ms=now,
            content_type=MEMBERSHIP_CONTENT_TYPE,
        ),
        creator.membership(group, Action.ADD, s.user, now_ms=now),
        creator.membership(group, Action.ADD, s.kit.user_id, now_ms=now),
    ]
    s.group, s.group_admin = group, creator
    return await s.deliver([e.wire for e in events], certificate=creator.stranger.certificate_bytes)


async def _group_member_writes(s: Session) -> str:
    assert s.group is not None
    return await s.deliver([s.kit.forge.message(s.group, "hi group", now_ms=s.kit.now_ms()).wire])


async def _gossiped_into_the_group(s: Session) -> str:
    """The group's admin's next two messages come over the group's topic (SPEC §14.1), the later
    one first, with one bit of its signature flipped: a node that validates gossip shows the
    earlier and nothing of the forged one (§5.4), which would follow it in sequence order."""
    assert s.group is not None and s.group_admin is not None and s.api is not None
    topic = room_topic(s.group)
    if not await s.kit.join(topic, s.peer_id, mesh_s=GOSSIP_WAIT_S):
        return "not-in-the-topic-mesh"
    admin = s.group_admin
    good = admin.message(s.group, "over gossip", now_ms=s.kit.now_ms())
    forged = admin.bad_signature(s.group, now_ms=s.kit.now_ms())
    certificate = admin.stranger.certificate_bytes
    for wire in (forged, good.wire):
        await s.kit.publish(topic, s.kit.gossip(wire, certificate))
    admins = user_id_text(admin.stranger.user_id)
    shown: list[str] = []
    for _ in range(int(GOSSIP_WAIT_S / 0.1)):  # gossip is answered by nothing: poll the API
        page = await s.api.call("GET", f"/v1/conversation/{s.group.hex()}/details")
        shown = [m["message_id"] for m in page["messages"] if m["sender_id"] == admins]
        if good.message_id.hex() in shown:
            break
        await asyncio.sleep(0.1)
    return "SHOWN:" + ",".join("the-message" if m == good.message_id.hex() else m for m in shown)


async def _group_member_kicks(s: Session) -> str:
    """A member who is no admin KICKs: not allowed now, but a ROLE that sorts earlier could
    still arrive, so it is deferred, never refused (SPEC §12.2)."""
    assert s.group is not None
    kick = s.kit.forge.membership(s.group, Action.KICK, s.user, now_ms=s.kit.now_ms())
    return await s.deliver([kick.wire])


async def _add_of_too_many(s: Session) -> str:
    """Our ADD naming 65 users, one past the bound (SPEC §12.1.1): MALFORMED, whoever sends it."""
    assert s.group is not None
    users: list[CborValue] = [s.kit.rng(32) for _ in range(MAX_ADD_TARGETS + 1)]
    body = encode_canonical([int(Action.ADD), users[0], 0, b"", 0, "", users[1:]])
    envelope = s.kit.forge.seal(
        Kind.MEMBERSHIP, s.group, body, now_ms=s.kit.now_ms(), content_type=MEMBERSHIP_CONTENT_TYPE
    )
    return await s.deliver([envelope.wire])


async def _forged_create(s: Session) -> str:
    """A CREATE whose room is not the group id of its sender and nonce (SPEC §12.2)."""
    create = MembershipChange(action=Action.CREATE, target=s.kit.user_id, nonce=s.kit.rng(16))
    envelope = s.kit.forge.seal(
        Kind.MEMBERSHIP,
        random_room(s.kit.rng),
        encode_membership(create),
        now_ms=s.kit.now_ms(),
        content_type=MEMBERSHIP_CONTENT_TYPE,
    )
    return await s.deliver([envelope.wire])


async def _membership_in_direct(s: Session) -> str:
    forge = s.kit.forge
    event = forge.membership(s.room, Action.ADD, s.kit.user_id, now_ms=s.kit.now_ms())
    return await s.deliver([event.wire])


async def _media_unknown(s: Session) -> str:
    digest = s.kit.rng(32)
    return (await s.kit.request(s.peer_id, MEDIA_PROTOCOL, encode_media_request(digest))).summary


async def _media_served_to_a_member(s: Session) -> str:
    """§25.3.1, §25.2.2, §28.1.1: the node's user sends a blob in our direct room (uploaded
    and sent over the API); the node serves it, sealed, to our home, a member's, in chunks
    then END, bytes that hash to the digest, and refuses a newcomer's home, in no room of the
    node's user, with ERROR `NOT_AUTHORIZED`."""
    blob = s.kit.rng(MEDIA_BLOB_BYTES)
    digest = await _send_blob(s, s.kit.user_id, blob)
    served = await _download(s.kit, s.peer_id, digest, blob)
    async with newcomer_home(s) as (newcomer, _):
        refused = await _download(newcomer, s.peer_id, digest, blob)
    return f"{served},{refused}"


async def _media_named_by_a_stranger(s: Session) -> str:
    """§25.3.1: media opens to a room only through a message of the node's own user. The node's
    user sends a blob to a newcomer; our stranger names its digest in a message of its own in
    our direct room (STORED: any user may name any digest) and asks for it: ERROR
    `NOT_AUTHORIZED`, as our home is no member of the newcomer's room."""
    assert s.api is not None
    blob = s.kit.rng(MEDIA_BLOB_BYTES)
    async with newcomer_home(s) as (newcomer, _):
        digest = await _send_blob(s, newcomer.user_id, blob)
    named = s.kit.forge.media_message(s.room, digest, now_ms=s.kit.now_ms())
    stored = await s.deliver([named.wire])
    return f"{stored},{await _download(s.kit, s.peer_id, digest, blob)}"


async def _send_blob(s: Session, to: UserId, blob: bytes) -> bytes:
    """The node's user uploads `blob` and sends it to `to` over the API (opening their direct
    room if no case did before); returns its digest."""
    assert s.api is not None
    media = await s.api.upload(blob, "image/png")
    recipient = {"recipient_id": user_id_text(to)}
    room = (await s.api.call("POST", "/v1/conversation", recipient))["room_id"]
    sent = {"message": "a blob for you", "type": "image", "media": media}
    await s.api.call("POST", f"/v1/conversation/{room}/messages", sent)
    return bytes.fromhex(media["digest"])


async def _download(kit: HostilePeer, peer: str, digest: bytes, blob: bytes) -> str:
    """Ask `peer` for `digest` (SPEC §25.2.2): SERVED when the answer is `blob` sealed (SPEC
    §28.1.1: its length plus the tag, bytes that hash to the digest), in order; else the
    refusal (`ERROR:<code>`) or what went wrong. The seal is in the message, not checked."""
    stream = await kit.host.open_stream(peer, MEDIA_PROTOCOL)
    download = MediaDownload(digest, sealed_size(len(blob)))
    try:
        await stream.write_frame(encode_media_request(digest))
        while (got := download.receive(await stream.read_frame())) is None:
            pass
    except MediaRefused as exc:
        return f"ERROR:{code_name(exc.refusal_code)}"
    except HearthError as exc:
        return f"invalid:{type(exc).__name__}"
    finally:
        await stream.reset()
    return "SERVED" if len(got) == sealed_size(len(blob)) else "served-other-bytes"


async def _media_flood(s: Session) -> str:
    """More media requests than the burst of 20 (SPEC §25.3.3): the excess is refused with
    RATE_LIMITED, not served and not the end of the node. Sent 8 at a time (under the 16
    streams a peer may hold, §10.4): one after another, on a loaded machine, they came slower
    than the 2 a second the bucket refills, and none was over the limit."""
    answers: set[str] = set()
    requests = [encode_media_request(s.kit.rng(32)) for _ in range(MEDIA_FLOOD_REQUESTS)]
    for at in range(0, len(requests), MEDIA_FLOOD_AT_ONCE):
        replies = await asyncio.gather(
            *(
                s.kit.request(s.peer_id, MEDIA_PROTOCOL, request)
                for request in requests[at : at + MEDIA_FLOOD_AT_ONCE]
            )
        )
        answers.update(reply.summary for reply in replies)
    return ",".join(sorted(answers))


async def _membership_history_for_the_added(s: Session) -> str:
    """§12.7: the node's user creates a group with a member whose home is away, then adds a
    newcomer (another stranger, its own home, with no history at the node); whoever adds a
    member delivers the room's earlier MEMBERSHIP events to them, so the newcomer's home gets
    the CREATE and the first ADD besides the ADD naming it, and can fold the same state.
    What came, in sequence order: CREATE, ADD, ADD:us when all did."""
    assert s.api is not None
    async with newcomer_home(s) as (newcomer, trap):
        away = user_id_text(UserId(s.kit.rng(32)))
        summary = await s.api.call("POST", "/v1/groups", {"name": "welcome", "members": [away]})
        room = RoomId(bytes.fromhex(summary["id"]))
        ours = user_id_text(newcomer.user_id)
        await s.api.call("POST", f"/v1/groups/{room.hex()}/members", {"user_id": ours})
        expected = ["CREATE", "ADD", "ADD:us"]
        got: list[str] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(s.wait_s):
                while (got := _membership_of(newcomer.user_id, trap, room)) != expected:
                    trap.got_one.clear()
                    await trap.got_one.wait()
    return ",".join(got) or "nothing-came"


def _membership_of(us: UserId, trap: DeliveryTrap, room: RoomId) -> list[str]:
    """The MEMBERSHIP events of `room` delivered to us, once each, in sequence order."""
    events = {}
    for wire in trap.wires:
        envelope = decode_envelope(wire)
        if envelope.kind == Kind.MEMBERSHIP and envelope.room == room:
            events[envelope.seq] = decode_membership(envelope.body)
    return [
        f"{change.action.name}:us" if change.target == us else change.action.name
        for _, change in sorted(events.items())
    ]


async def _presence_from_contacts_only(s: Session) -> str:
    """§32.4.1, §17.2: a home takes presence pushed on `/hearthmesh/signals/0` from its user's
    contacts only. A newcomer asks the node's user for friendship and is accepted over the API;
    then our stranger, no contact, pushes ONLINE, and the newcomer after it. The node's user is
    shown the contact online, and, once it is (the push before it was read by then), the
    stranger still offline."""
    assert s.api is not None
    async with newcomer_home(s) as (friend, _):
        if (refused := await befriend(s, friend)) is not None:
            return refused
        contact = user_id_text(friend.user_id)
        for kit in (s.kit, friend):
            await _push_presence(kit, s.peer_id)
        return (
            "CONTACT:"
            + await _shown_online(s, contact)
            + ",STRANGER:"
            + str(
                (await s.api.call("GET", f"/v1/users/{user_id_text(s.kit.user_id)}"))["online"]
            ).lower()
        )


async def _push_presence(kit: HostilePeer, peer: str) -> None:
    """One ONLINE push of `kit`'s user, carrying its home record, on a stream of its own;
    nothing is answered (SPEC §32.4.1)."""
    record = kit.stranger.home_record(
        peer_ids=(kit.peer_id,), addrs=tuple(kit.host.listen_addrs), now_ms=kit.now_ms()
    )
    wire = kit.forge.raw(
        room=PRESENCE_ROOM,
        now_ms=kit.now_ms(),
        kind=int(Kind.PRESENCE),
        body=encode_presence(PresenceStatus.ONLINE, PRESENCE_TTL_MS, record),
        content_type=PRESENCE_CONTENT_TYPE,
        seq=1,
    )
    stream = await kit.host.open_stream(peer, SIGNALS_PROTOCOL)
    try:
        await stream.write_frame(kit.gossip(wire))
        await stream.close()
    finally:
        await stream.reset()


async def _shown_online(s: Session, user: str) -> str:
    """`true` once the node's user is shown `user` online, within the delivery wait; else
    what it was shown last."""
    assert s.api is not None
    online = False
    for _ in range(int(s.wait_s / 0.05)):  # a push is answered by nothing: poll the API
        if online := (await s.api.call("GET", f"/v1/users/{user}"))["online"]:
            break
        await asyncio.sleep(0.05)
    return str(online).lower()


SHOWN_ONCE_IN_ORDER: Final = Case(
    name="shown_once_in_order",
    section="§8.2, §15.5",
    expected="SHOWN:1,2,3",
    run=_shown_once_in_order,
    needs_api=True,
    level=Level.IM,
)


RECEIPT_BROADCAST_FORM: Final = Case(
    name="receipt_broadcast_form",
    section="§20.7",
    expected="STORED",
    run=_receipt_broadcast_form,
    level=Level.IM,
)


GROUP_CREATED: Final = Case(
    name="group_created",
    section="§12.2",
    expected="STORED,STORED,STORED",
    run=_group_created,
    level=Level.IM,
)


GROUP_MEMBER_WRITES: Final = Case(
    name="group_member_writes",
    section="§12.2",
    expected="STORED",
    run=_group_member_writes,
    level=Level.IM,
)


GOSSIPED_INTO_THE_GROUP: Final = Case(
    name="gossiped_into_the_group",
    section="§14.1, §5.4",
    expected="SHOWN:the-message",
    run=_gossiped_into_the_group,
    needs_api=True,
    level=Level.IM,
)


GROUP_MEMBER_KICKS: Final = Case(
    name="group_member_kicks",
    section="§12.2",
    expected="DEFERRED:NOT_AUTHORIZED",
    run=_group_member_kicks,
    level=Level.IM,
)


ADD_OF_TOO_MANY: Final = Case(
    name="add_of_too_many",
    section="§12.1.1",
    expected="REJECTED:MALFORMED",
    run=_add_of_too_many,
    hostile=True,
    level=Level.IM,
)


GROUP_FORGED_CREATE: Final = Case(
    name="group_forged_create",
    section="§12.2",
    expected="REJECTED:NOT_AUTHORIZED",
    run=_forged_create,
    hostile=True,
    level=Level.IM,
)


MEMBERSHIP_IN_A_DIRECT_ROOM: Final = Case(
    name="membership_in_a_direct_room",
    section="§12.2",
    expected="REJECTED:NOT_AUTHORIZED",
    run=_membership_in_direct,
    hostile=True,
    level=Level.IM,
)


MEDIA_UNKNOWN_DIGEST: Final = Case(
    name="media_unknown_digest",
    section="§25.3.1",
    expected="ERROR:NOT_FOUND",
    run=_media_unknown,
    hostile=True,
    level=Level.IM,
)


MEDIA_FLOOD: Final = Case(
    name="media_flood",
    section="§25.3.3",
    expected="ERROR:NOT_FOUND,ERROR:RATE_LIMITED",
    run=_media_flood,
    hostile=True,
    level=Level.IM,
)


MEMBERSHIP_HISTORY_FOR_THE_ADDED: Final = Case(
    name="membership_history_for_the_added",
    section="§12.7",
    expected="CREATE,ADD,ADD:us",
    run=_membership_history_for_the_added,
    needs_api=True,
    level=Level.IM,
)


PRESENCE_FROM_CONTACTS_ONLY: Final = Case(
    name="presence_from_contacts_only",
    section="§32.4.1, §17.2",
    expected="CONTACT:true,STRANGER:false",
    run=_presence_from_contacts_only,
    needs_api=True,
    level=Level.IM,
)

MEDIA_SERVED_TO_A_MEMBER: Final = Case(
    name="media_served_to_a_member",
    section="§25.3.1, §25.2.2, §28.1.1",
    expected="SERVED,ERROR:NOT_AUTHORIZED",
    run=_media_served_to_a_member,
    needs_api=True,
    level=Level.IM,
)

MEDIA_NAMED_BY_A_STRANGER: Final = Case(
    name="media_named_by_a_stranger",
    section="§25.3.1",
    expected="STORED,ERROR:NOT_AUTHORIZED",
    run=_media_named_by_a_stranger,
    needs_api=True,
    level=Level.IM,
)
