"""The cases of the black-box suite (SPEC §20.2): what to send and what SPEC says comes back.

Each case is a coroutine that sends as our stranger and returns the node's answer as a short
outcome string (`"STORED"`, `"REJECTED:BAD_SIGNATURE"`, `"ERROR:NOT_FOUND"`, ...), compared
with the case's `expected`. State: none (a run's state is its `Session`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import vodozemac

from hearthmesh.protocol import e2ee
from hearthmesh.protocol.addressing import UNSEQUENCED
from hearthmesh.protocol.canonical import CborValue, encode_canonical
from hearthmesh.protocol.capabilities import Level
from hearthmesh.protocol.content import (
    CONTACT_CONTENT_TYPE,
    ContactAction,
    ContactEvent,
    encode_contact,
)
from hearthmesh.protocol.delivery import DELIVER_PROTOCOL, AckStatus, ProtocolErrorFrame
from hearthmesh.protocol.envelope import Envelope, Kind, RoomId, decode_envelope
from hearthmesh.protocol.errors import HearthError, LocalProtocolError
from hearthmesh.protocol.fetch import FETCH_PROTOCOL, FetchAnswer, FetchRequest
from hearthmesh.protocol.fetch import decode_answer as decode_fetch_answer
from hearthmesh.protocol.fetch import encode_request as encode_fetch_request
from hearthmesh.protocol.gossip import (
    PRESENCE_CONTENT_TYPE,
    SIGNALS_PROTOCOL,
    PresenceStatus,
    encode_presence,
    room_topic,
)
from hearthmesh.protocol.hello import decode_hello
from hearthmesh.protocol.home_record import decode_home_record, verify_home_record
from hearthmesh.protocol.identity import DeviceId, UserId, user_id_text
from hearthmesh.protocol.media import MEDIA_PROTOCOL
from hearthmesh.protocol.media import encode_request as encode_media_request
from hearthmesh.protocol.membership import (
    MAX_ADD_TARGETS,
    MEMBERSHIP_CONTENT_TYPE,
    Action,
    MembershipChange,
    decode_membership,
    encode_membership,
)
from hearthmesh.protocol.ordering import REORDER_WINDOW
from hearthmesh.protocol.receipts import (
    RECEIPT_CONTENT_TYPE,
    Receipt,
    ReceiptStatus,
    encode_receipt,
)
from hearthmesh.protocol.rooms import direct_room_id, group_room_id
from hearthmesh.protocol.sync import SYNC_PROTOCOL, encode_room_list
from hearthmesh.tools.hostile.forge import (
    EnvelopeForge,
    certificate_of_other,
    new_stranger,
    random_room,
)
from hearthmesh.tools.hostile.peer import DeliveryTrap, HostilePeer

from .session import Session, outcome

__all__ = ["CASES", "Case"]

DELIVERY_WAIT_S: Final = 10.0
"""How long a case waits for the node to deliver what its user sent us."""

RELAY_STRANGER_BOUND: Final = 100
"""Strangers' envelopes one sending peer may have a relay hold, by default (SPEC §11.5.3)."""

GOSSIP_WAIT_S: Final = 10.0
"""How long the gossip case waits to join the topic's mesh, and then for the message."""

FLOOD_FRAMES: Final = 8
"""Malformed frames a flood sends at most: twice what a ban takes (SPEC §11.6)."""

MEDIA_FLOOD: Final = 40
"""Media requests sent back to back: twice the burst a node must allow (SPEC §25.3.3)."""

PRESENCE_TTL_MS: Final = 60_000
"""How long a presence we push says we stay online (SPEC §14.2): past the case's run."""

PRESENCE_ROOM: Final = RoomId(bytes(32))
"""The all-zero room of envelopes that belong to no room, presence among them (SPEC §14.2)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    """One scripted case: `run` returns the node's answer, which must equal `expected`; a
    `hostile` case runs under a fresh peer id and is followed by a liveness probe."""

    name: str
    section: str
    expected: str
    run: Callable[[Session], Awaitable[str]]
    hostile: bool = False
    needs_api: bool = False
    level: Level = Level.CORE
    """The capability level whose sections the case tests (SPEC §20.5)."""


# --- the scenarios ------------------------------------------------------------------------------


async def _hello(s: Session) -> str:
    """Our hello carries our record; the answer carries the node's users' records and our
    clock offset (SPEC §13.3, §24)."""
    reply = await s.kit.announce_home(s.peer_id)
    if reply.frame is None:
        return reply.outcome
    try:
        hello = decode_hello(reply.frame)
        records = [decode_home_record(r) for r in hello.records]
        for record in records:
            verify_home_record(record, now_ms=s.kit.now_ms())
    except HearthError as exc:
        return f"invalid:{type(exc).__name__}"
    if hello.offset_ms is None:
        return "answer-without-offset"
    homed = [r for r in records if s.peer_id in r.homes]
    if not homed:
        return "no-record-names-the-node"
    s.user = homed[0].user
    position = homed[0].homes.index(s.peer_id)
    if position < len(homed[0].devices):
        s.device = homed[0].devices[position].device
    return "ok"


async def _deliver(s: Session) -> str:
    envelope = s.message("hello from the conformance suite")
    s.delivered.append(envelope)
    return await s.deliver([envelope.wire])


async def _duplicate(s: Session) -> str:
    return await s.deliver([s.delivered[0].wire])


async def _out_of_order(s: Session) -> str:
    second, third = s.message("second"), s.message("third")
    s.delivered += [second, third]
    return ",".join([await s.deliver([third.wire]), await s.deliver([second.wire])])


async def _receipt_not_addressed(s: Session) -> str:
    """A receipt naming only our own message, delivered to the node's user: it is addressed
    to the homes of the users whose messages it names, never to anyone else's (SPEC §16.2.3)."""
    envelope = s.kit.forge.seal(
        Kind.RECEIPT,
        s.room,
        _read_of_ours(s),
        now_ms=s.kit.now_ms(),
        content_type=RECEIPT_CONTENT_TYPE,
    )
    return await s.deliver([envelope.wire])


async def _receipt_broadcast_form(s: Session) -> str:
    """A RECEIPT that takes a place in its sender's sequence, the broadcast form of revision 0
    (SPEC §20.7), naming only our own message: stored, not judged by its address, and not
    charged, so a home that speaks both revisions takes what an older node sends."""
    wire = s.kit.forge.raw(
        room=s.room,
        now_ms=s.kit.now_ms(),
        kind=int(Kind.RECEIPT),
        body=_read_of_ours(s),
        content_type=RECEIPT_CONTENT_TYPE,
    )
    return await s.deliver([wire])


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


async def _message_unsequenced(s: Session) -> str:
    """A MESSAGE with the number of no place in a sequence: only a RECEIPT may carry it
    (SPEC §8.5)."""
    wire = s.kit.forge.raw(room=s.room, now_ms=s.kit.now_ms(), seq=UNSEQUENCED)
    return await s.deliver([wire])


async def _far_ahead_stored(s: Session) -> str:
    """A number far past the reorder window: never held in memory, yet stored and acked, to be
    released in its turn by a read-back (SPEC §8.3, §8.4); a refusal would have its sender
    retry an envelope no later batch makes acceptable."""
    far = len(s.delivered) + 2 * REORDER_WINDOW
    return await s.deliver([s.kit.forge.raw(room=s.room, now_ms=s.kit.now_ms(), seq=far)])


def _read_of_ours(s: Session) -> bytes:
    """A READ receipt body naming the first message we delivered."""
    return encode_receipt(
        Receipt(status=ReceiptStatus.READ, message_ids=(s.delivered[0].message_id,))
    )


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


async def _add_of_too_many(s: Session) -> str:
    """Our ADD naming 65 users, one past the bound (SPEC §12.1.1): MALFORMED, whoever sends it."""
    assert s.group is not None
    users: list[CborValue] = [s.kit.rng(32) for _ in range(MAX_ADD_TARGETS + 1)]
    body = encode_canonical([int(Action.ADD), users[0], 0, b"", 0, "", users[1:]])
    envelope = s.kit.forge.seal(
        Kind.MEMBERSHIP, s.group, body, now_ms=s.kit.now_ms(), content_type=MEMBERSHIP_CONTENT_TYPE
    )
    return await s.deliver([envelope.wire])


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


async def _fetch(s: Session, room: RoomId, first: int, last: int) -> str:
    request = FetchRequest(
        room=room,
        sender_device=DeviceId(s.kit.stranger.device.public),
        first_seq=first,
        last_seq=last,
    )
    answer = await s.ask(FETCH_PROTOCOL, encode_fetch_request(request), decode_fetch_answer)
    if not isinstance(answer, FetchAnswer):
        return outcome(answer)
    seqs = []
    for _, wire in answer.items:
        seqs.append(next((e.seq for e in s.delivered if e.wire == wire), -1))
    return "ANSWER:" + ",".join(map(str, seqs))


async def _gap_fetch(s: Session) -> str:
    return await _fetch(s, s.room, 1, 3)


async def _gap_fetch_outside(s: Session) -> str:
    return await _fetch(s, random_room(s.kit.rng), 1, 1)


async def _membership_in_direct(s: Session) -> str:
    forge = s.kit.forge
    event = forge.membership(s.room, Action.ADD, s.kit.user_id, now_ms=s.kit.now_ms())
    return await s.deliver([event.wire])


async def _sync_stranger(s: Session) -> str:
    return (await s.kit.request(s.peer_id, SYNC_PROTOCOL, encode_room_list([]))).summary


async def _media_unknown(s: Session) -> str:
    digest = s.kit.rng(32)
    return (await s.kit.request(s.peer_id, MEDIA_PROTOCOL, encode_media_request(digest))).summary


async def _media_flood(s: Session) -> str:
    """More media requests than the burst of 20 (SPEC §25.3.3): the excess is refused with
    RATE_LIMITED, not served and not the end of the node."""
    answers = set()
    for _ in range(MEDIA_FLOOD):
        request = encode_media_request(s.kit.rng(32))
        answers.add((await s.kit.request(s.peer_id, MEDIA_PROTOCOL, request)).summary)
    return ",".join(sorted(answers))


async def _key_claim(s: Session) -> str:
    """§27.2.2: the node hands out its device's bundle and a one-time key, both signed by it
    (checked as the device's by `check_claim_answer`)."""
    if s.device is None:
        return "no-device-in-the-record"
    request = e2ee.encode_claim_request(s.device)
    answer = await s.ask(e2ee.KEYS_PROTOCOL, request, e2ee.decode_claim_answer)
    if isinstance(answer, str | ProtocolErrorFrame):
        return outcome(answer)
    try:
        e2ee.check_claim_answer(answer, s.device)
    except HearthError as exc:
        return f"invalid:{type(exc).__name__}"
    return "ok"


async def _encrypted_unknown_session(s: Session) -> str:
    """A Megolm message of a session whose key the node was never given (SPEC §27.7.1): it is
    history, so the home stores it and holds its plaintext until a key comes."""
    session = vodozemac.GroupSession()
    body, _ = e2ee.encrypt_content(session, "text/plain", b"sealed for no one yet")
    envelope = s.kit.forge.seal(
        Kind.MESSAGE, s.room, body, now_ms=s.kit.now_ms(), content_type=e2ee.ENCRYPTED_CONTENT_TYPE
    )
    return await s.deliver([envelope.wire])


async def _owed_then_requested(s: Session) -> str:
    """§27.10.1 and §27.13.1: the node's user writes to ours while our record lists no key
    bundle. The message still comes (encrypted, its session owed to our user), and once our
    record lists a device with a bundle, a key request gets that session's key from an index
    that opens the message, from the device that sent it."""
    assert s.api is not None
    trap = s.kit.catch_deliveries(AckStatus.STORED)
    text = "owed until your key came"
    await s.api.call("POST", f"/v1/conversation/{s.room.hex()}/messages", {"message": text})
    try:
        envelope = await _encrypted_from_node(s, trap)
    except TimeoutError:
        return "no-message-came"
    session_id = e2ee.decode_encrypted_body(envelope.body).session_id
    account = vodozemac.Account()
    account.generate_fallback_key()  # type: ignore[attr-defined]  # missing in the stub
    fallback = next(iter(account.fallback_key.values()))  # type: ignore[attr-defined]
    bundle = e2ee.issue_key_bundle(
        s.kit.stranger.device,
        identity_key=bytes(account.curve25519_key.to_bytes()),
        fallback_key=bytes(fallback.to_bytes()),
        issued_ms=s.kit.now_ms(),
    )
    await s.kit.announce_home(s.peer_id, bundles=(bundle,))
    request = e2ee.KeyRequest(user=s.kit.user_id, sessions=((s.room, session_id),))
    answer = await s.ask(
        e2ee.KEY_REQUEST_PROTOCOL, e2ee.encode_key_request(request), e2ee.decode_forward_answer
    )
    if isinstance(answer, str | ProtocolErrorFrame):
        return outcome(answer)
    ours = DeviceId(s.kit.stranger.device.public)
    return _open_with_answer(answer, account, ours, envelope, text)


@contextlib.asynccontextmanager
async def _newcomer(
    s: Session, *, drop: int = 0
) -> AsyncIterator[tuple[HostilePeer, DeliveryTrap]]:
    """Another stranger with a home of its own, known to the node by its hello and with no
    history there: what the node delivers to it lands in the trap (the first `drop` batches
    dropped unacked). Drawn from the run's rng, so a seed replays it."""
    async with s.kit.rotated(new_user=True, seed=s.kit.rng(32)) as newcomer:
        await newcomer.connect(s.address)
        trap = newcomer.catch_deliveries(AckStatus.STORED, drop=drop)
        reply = await newcomer.announce_home(s.peer_id)
        if reply.frame is None:
            raise LocalProtocolError(f"the newcomer's hello: {reply.outcome}")
        yield newcomer, trap


async def _membership_history_for_the_added(s: Session) -> str:
    """§12.7: the node's user creates a group with a member whose home is away, then adds a
    newcomer (another stranger, its own home, with no history at the node); whoever adds a
    member delivers the room's earlier MEMBERSHIP events to them, so the newcomer's home gets
    the CREATE and the first ADD besides the ADD naming it, and can fold the same state.
    What came, in sequence order: CREATE, ADD, ADD:us when all did."""
    assert s.api is not None
    async with _newcomer(s) as (newcomer, trap):
        away = user_id_text(UserId(s.kit.rng(32)))
        summary = await s.api.call("POST", "/v1/groups", {"name": "welcome", "members": [away]})
        room = RoomId(bytes.fromhex(summary["id"]))
        ours = user_id_text(newcomer.user_id)
        await s.api.call("POST", f"/v1/groups/{room.hex()}/members", {"user_id": ours})
        expected = ["CREATE", "ADD", "ADD:us"]
        got: list[str] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DELIVERY_WAIT_S):
                while (got := _membership_of(newcomer.user_id, trap, room)) != expected:
                    trap.got_one.clear()
                    await trap.got_one.wait()
    return ",".join(got) or "nothing-came"


async def _presence_from_contacts_only(s: Session) -> str:
    """§32.4.1, §17.2: a home takes presence pushed on `/hearthmesh/signals/0` from its user's
    contacts only. A newcomer asks the node's user for friendship and is accepted over the API;
    then our stranger, no contact, pushes ONLINE, and the newcomer after it. The node's user is
    shown the contact online, and, once it is (the push before it was read by then), the
    stranger still offline."""
    assert s.api is not None
    async with _newcomer(s) as (friend, _):
        request = encode_contact(ContactEvent(action=ContactAction.REQUEST, note="conformance"))
        asked = Session(kit=friend, address=s.address, peer_id=s.peer_id, user=s.user)
        room = direct_room_id(friend.user_id, s.user)
        envelope = friend.forge.seal(
            Kind.MESSAGE, room, request, now_ms=s.kit.now_ms(), content_type=CONTACT_CONTENT_TYPE
        )
        if (stored := await asked.deliver([envelope.wire])) != "STORED":
            return f"friend-request-{stored}"
        contact = user_id_text(friend.user_id)
        await s.api.call("POST", f"/v1/friends/requests/{contact}/accept")
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
    for _ in range(int(DELIVERY_WAIT_S / 0.05)):  # a push is answered by nothing: poll the API
        if online := (await s.api.call("GET", f"/v1/users/{user}"))["online"]:
            break
        await asyncio.sleep(0.05)
    return str(online).lower()


async def _dropped_batch_sent_again(s: Session) -> str:
    """§11.4-11.5: a home that takes a batch and drops it (reads it, never acks, resets the
    stream) has acked nothing, so the node must send those envelopes again, and they come.
    A newcomer with a home of its own, as in the case above; the node's user writes to it."""
    assert s.api is not None
    async with _newcomer(s, drop=1) as (newcomer, trap):
        to = {"recipient_id": user_id_text(newcomer.user_id)}
        room = (await s.api.call("POST", "/v1/conversation", to))["room_id"]
        text = {"message": "dropped once, then sent again"}
        await s.api.call("POST", f"/v1/conversation/{room}/messages", text)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DELIVERY_WAIT_S):
                while not (trap.dropped and set(trap.dropped) <= set(trap.wires)):
                    trap.got_one.clear()
                    await trap.got_one.wait()
        if not trap.dropped:
            return "nothing-came"
        return "SENT-AGAIN" if set(trap.dropped) <= set(trap.wires) else "dropped-for-good"


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


async def _encrypted_from_node(s: Session, trap: DeliveryTrap) -> Envelope:
    """The first encrypted MESSAGE of the node's user in our direct room that reaches our
    trap. Raises TimeoutError."""
    async with asyncio.timeout(DELIVERY_WAIT_S):
        while True:
            for wire in trap.wires:
                envelope = decode_envelope(wire)
                if (
                    envelope.kind == Kind.MESSAGE
                    and envelope.room == s.room
                    and envelope.sender_user == s.user
                    and envelope.content_type == e2ee.ENCRYPTED_CONTENT_TYPE
                ):
                    return envelope
            trap.got_one.clear()
            await trap.got_one.wait()


def _open_with_answer(
    answer: e2ee.ForwardAnswer,
    account: vodozemac.Account,
    ours: DeviceId,
    envelope: Envelope,
    text: str,
) -> str:
    """OPENED when the answer's one key, of the session of the device that sealed `envelope`
    and sent to our device `ours`, decrypts it to `text`; else what failed."""
    if answer.sender_bundle.device != envelope.sender_device or len(answer.messages) != 1:
        return f"answer-of-{len(answer.messages)}-keys-or-from-another-device"
    try:
        e2ee.verify_key_bundle(answer.sender_bundle)
        kind, ciphertext = answer.messages[0]
        pre_key = vodozemac.AnyOlmMessage.from_parts(kind, ciphertext).to_pre_key()
        if pre_key is None:
            return "not-an-olm-pre-key-message"
        sender_curve = vodozemac.Curve25519PublicKey.from_bytes(answer.sender_bundle.identity_key)
        _, plaintext = account.create_inbound_session(sender_curve, pre_key)
        key = e2ee.decode_forwarded_key(bytes(plaintext))
        e2ee.check_forwarded_key(key, recipient=ours, owner=envelope.sender_device)
        encrypted = e2ee.decode_encrypted_body(envelope.body)
        if key.room != envelope.room or key.session_id != encrypted.session_id:
            return "a-key-of-another-session"
        exported = vodozemac.ExportedSessionKey(e2ee.key_text(key.exported_key))
        opened = e2ee.open_encrypted(
            vodozemac.InboundGroupSession.import_session(exported), encrypted
        )
    except (HearthError, ValueError) as exc:
        return f"invalid:{type(exc).__name__}"
    return "OPENED" if text.encode() in opened.body else "opened-to-another-text"


async def _relay_for_another_user(s: Session) -> str:
    """A message of ours to a user who does not live on the node (SPEC §11.2.3): held in its
    relay inbox for that user's home (RELAYED, §11.3), within the bounds of §11.5.3."""
    other = UserId(s.kit.rng(32))
    envelope = s.kit.forge.message(
        direct_room_id(s.kit.user_id, other), "keep this for them", now_ms=s.kit.now_ms()
    )
    return await s.deliver([envelope.wire], recipient=other)


async def _relay_strangers_bound(s: Session) -> str:
    """One past the 100 envelopes a stranger's peer may have held for strangers (SPEC §11.5.3),
    each from a user the node knows nothing of (our own user shares a room with the node's) to
    another random user: the excess is DEFERRED `QUOTA_EXCEEDED`, nothing evicted."""
    sender = EnvelopeForge(new_stranger(s.kit.rng, now_ms=s.kit.now_ms()))
    wires, recipients = [], []
    for _ in range(RELAY_STRANGER_BOUND + 1):
        other = UserId(s.kit.rng(32))
        room = direct_room_id(sender.stranger.user_id, other)
        wires.append(sender.message(room, "for a stranger", now_ms=s.kit.now_ms()).wire)
        recipients.append(other)
    certificate = sender.stranger.certificate_bytes
    answers = await s.deliver(wires, certificate, recipients=recipients)
    return ",".join(sorted(set(answers.split(","))))


async def _key_request_stranger(s: Session) -> str:
    """§27.13.1: a stranger asking for the key of a session in a room it is not in."""
    sessions = ((RoomId(s.kit.rng(32)), s.kit.rng(32)),)
    request = e2ee.encode_key_request(e2ee.KeyRequest(user=s.kit.user_id, sessions=sessions))
    return (await s.kit.request(s.peer_id, e2ee.KEY_REQUEST_PROTOCOL, request)).summary


async def _malformed_frame(s: Session) -> str:
    return (await s.kit.request(s.peer_id, DELIVER_PROTOCOL, b"\xa1\x01\x02")).summary


async def _malformed_flood(s: Session) -> str:
    """Malformed deliver frames back to back, 25 points each (SPEC §11.6.1): each answered
    MALFORMED until the fourth brings the peer to 100 points and a ban cuts it off, closed
    while it answers that frame or refused at the next (§11.6.2); a clean peer is still
    answered (the liveness probe after every hostile case)."""
    answers: list[str] = []
    for _ in range(FLOOD_FRAMES):
        answers.append((await s.kit.request(s.peer_id, DELIVER_PROTOCOL, b"\xa1\x01\x02")).summary)
        if answers[-1] != "ERROR:MALFORMED":
            break
    *answered, last = answers
    if last not in ("closed", "refused"):
        return f"never-cut-off:{last}"
    return (
        "cut-off-at-100-points" if len(answered) in (3, 4) else f"cut-off-at-frame:{len(answers)}"
    )


async def _forged(s: Session) -> str:
    return await s.deliver([s.kit.forge.bad_signature(s.room, now_ms=s.kit.now_ms())])


async def _unknown_version(s: Session) -> str:
    return await s.deliver([s.kit.forge.unknown_version(s.room, now_ms=s.kit.now_ms())])


async def _unknown_kind(s: Session) -> str:
    return await s.deliver([s.kit.forge.unknown_kind(s.room, now_ms=s.kit.now_ms())])


async def _oversized_body(s: Session) -> str:
    return await s.deliver([s.kit.forge.oversized_body(s.room, now_ms=s.kit.now_ms())])


async def _unauthorized_certificate(s: Session) -> str:
    other = certificate_of_other(s.kit.rng, now_ms=s.kit.now_ms())
    return await s.deliver([s.message("whose device?").wire], certificate=other)


async def _replayed(s: Session) -> str:
    """Run under a fresh peer id, like every hostile case: bytes another peer delivered."""
    return await s.deliver([s.delivered[0].wire])


async def _oversized_frame(s: Session) -> str:
    """A frame one byte past the 1 MiB limit: refused before it is read (SPEC §10.2)."""
    reply = await s.kit.request(s.peer_id, DELIVER_PROTOCOL, bytes(1024 * 1024 + 1))
    return "refused" if reply.outcome in ("closed", "refused") else reply.summary


CASES: Final[tuple[Case, ...]] = (
    Case(name="hello", section="§13.3", expected="ok", run=_hello),
    Case(name="deliver_and_ack", section="§11.2, §11.3", expected="STORED", run=_deliver),
    Case(name="duplicate", section="§11.3", expected="DUPLICATE", run=_duplicate),
    Case(
        name="out_of_order_stored",
        section="§8.2",
        expected="STORED,STORED",
        run=_out_of_order,
    ),
    Case(
        name="shown_once_in_order",
        section="§8.2, §15.5",
        expected="SHOWN:1,2,3",
        run=_shown_once_in_order,
        needs_api=True,
        level=Level.IM,
    ),
    Case(name="gap_fetch", section="§26.4", expected="ANSWER:1,2,3", run=_gap_fetch),
    Case(name="far_ahead_stored", section="§8.3", expected="STORED", run=_far_ahead_stored),
    Case(
        name="receipt_not_addressed",
        section="§16.2.3",
        expected="REJECTED:NOT_ADDRESSED",
        run=_receipt_not_addressed,
        level=Level.ADDRESSED_RECEIPTS,
    ),
    Case(
        name="room_key_not_addressed",
        section="§27.5.3",
        expected="REJECTED:NOT_ADDRESSED",
        run=_room_key_not_addressed,
        level=Level.ADDRESSED_ROOM_KEYS,
    ),
    Case(
        name="receipt_broadcast_form",
        section="§20.7",
        expected="STORED",
        run=_receipt_broadcast_form,
        level=Level.IM,
    ),
    Case(
        name="message_unsequenced",
        section="§8.5",
        expected="REJECTED:MALFORMED",
        run=_message_unsequenced,
    ),
    Case(
        name="group_created",
        section="§12.2",
        expected="STORED,STORED,STORED",
        run=_group_created,
        level=Level.IM,
    ),
    Case(
        name="group_member_writes",
        section="§12.2",
        expected="STORED",
        run=_group_member_writes,
        level=Level.IM,
    ),
    Case(
        name="gossiped_into_the_group",
        section="§14.1, §5.4",
        expected="SHOWN:the-message",
        run=_gossiped_into_the_group,
        needs_api=True,
        level=Level.IM,
    ),
    Case(
        name="group_member_kicks",
        section="§12.2",
        expected="DEFERRED:NOT_AUTHORIZED",
        run=_group_member_kicks,
        level=Level.IM,
    ),
    Case(
        name="group_added_several",
        section="§12.1.1, §20.7",
        expected="STORED,STORED",
        run=_group_added_several,
        level=Level.ADD_SEVERAL,
    ),
    Case(
        name="add_of_too_many",
        section="§12.1.1",
        expected="REJECTED:MALFORMED",
        run=_add_of_too_many,
        hostile=True,
        level=Level.IM,
    ),
    Case(
        name="group_forged_create",
        section="§12.2",
        expected="REJECTED:NOT_AUTHORIZED",
        run=_forged_create,
        hostile=True,
        level=Level.IM,
    ),
    Case(
        name="membership_in_a_direct_room",
        section="§12.2",
        expected="REJECTED:NOT_AUTHORIZED",
        run=_membership_in_direct,
        hostile=True,
        level=Level.IM,
    ),
    Case(
        name="gap_fetch_outside_the_room",
        section="§26.3",
        expected="ERROR:NOT_AUTHORIZED",
        run=_gap_fetch_outside,
        hostile=True,
    ),
    Case(
        name="sync_from_a_stranger",
        section="§23.1",
        expected="ERROR:NOT_AUTHORIZED",
        run=_sync_stranger,
        hostile=True,
        level=Level.MULTI_DEVICE,
    ),
    Case(
        name="media_unknown_digest",
        section="§25.3.1",
        expected="ERROR:NOT_FOUND",
        run=_media_unknown,
        hostile=True,
        level=Level.IM,
    ),
    Case(
        name="media_flood",
        section="§25.3.3",
        expected="ERROR:NOT_FOUND,ERROR:RATE_LIMITED",
        run=_media_flood,
        hostile=True,
        level=Level.IM,
    ),
    Case(
        name="malformed_frame",
        section="§11.1",
        expected="ERROR:MALFORMED",
        run=_malformed_frame,
        hostile=True,
    ),
    Case(
        name="malformed_flood",
        section="§11.6",
        expected="cut-off-at-100-points",
        run=_malformed_flood,
        hostile=True,
    ),
    Case(
        name="oversized_frame",
        section="§10.2",
        expected="refused",
        run=_oversized_frame,
        hostile=True,
    ),
    Case(
        name="forged_signature",
        section="§5.4",
        expected="REJECTED:BAD_SIGNATURE",
        run=_forged,
        hostile=True,
    ),
    Case(
        name="unknown_version",
        section="§5.1",
        expected="REJECTED:UNSUPPORTED_VERSION",
        run=_unknown_version,
        hostile=True,
    ),
    Case(
        name="unknown_kind",
        section="§5.2",
        expected="REJECTED:UNKNOWN_KIND",
        run=_unknown_kind,
        hostile=True,
    ),
    Case(
        name="oversized_body",
        section="§7",
        expected="REJECTED:TOO_LARGE",
        run=_oversized_body,
        hostile=True,
    ),
    Case(
        name="certificate_of_another_device",
        section="§11.2",
        expected="REJECTED:NOT_AUTHORIZED",
        run=_unauthorized_certificate,
        hostile=True,
    ),
    Case(
        name="replayed_by_another_peer",
        section="§11.3",
        expected="DUPLICATE",
        run=_replayed,
        hostile=True,
    ),
    Case(
        name="relay_for_another_user",
        section="§11.2.3",
        expected="RELAYED",
        run=_relay_for_another_user,
        level=Level.RELAY,
    ),
    Case(
        name="relay_strangers_bound",
        section="§11.5.3",
        expected="DEFERRED:QUOTA_EXCEEDED,RELAYED",
        run=_relay_strangers_bound,
        hostile=True,
        level=Level.RELAY,
    ),
    Case(name="key_claim", section="§27.2.2", expected="ok", run=_key_claim, level=Level.E2EE),
    Case(
        name="encrypted_with_an_unknown_session",
        section="§27.7.1",
        expected="STORED",
        run=_encrypted_unknown_session,
        level=Level.E2EE,
    ),
    Case(
        name="owed_then_requested",
        section="§27.10.1, §27.13.1",
        expected="OPENED",
        run=_owed_then_requested,
        needs_api=True,
        level=Level.E2EE,
    ),
    Case(
        name="key_request_from_a_stranger",
        section="§27.13.1",
        expected="ERROR:KEY_REQUEST_DENIED",
        run=_key_request_stranger,
        hostile=True,
        level=Level.E2EE,
    ),
    Case(
        name="membership_history_for_the_added",
        section="§12.7",
        expected="CREATE,ADD,ADD:us",
        run=_membership_history_for_the_added,
        needs_api=True,
        level=Level.IM,
    ),
    Case(
        name="dropped_batch_sent_again",
        section="§11.4, §11.5",
        expected="SENT-AGAIN",
        run=_dropped_batch_sent_again,
        needs_api=True,
    ),
    Case(
        name="presence_from_contacts_only",
        section="§32.4.1, §17.2",
        expected="CONTACT:true,STRANGER:false",
        run=_presence_from_contacts_only,
        needs_api=True,
        level=Level.IM,
    ),
)
"""Every case, in the order they run (later ones use what earlier ones delivered)."""
