"""The cases of level `core` (SPEC §20.5): hello, delivery and ack, order, gap fetch, and
the hostile frames and envelopes every node must refuse (SPEC §20.2). State: none.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import Final

from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.protocol.addressing import UNSEQUENCED
from hearthmesh.protocol.delivery import DELIVER_PROTOCOL
from hearthmesh.protocol.envelope import RoomId, load_envelope
from hearthmesh.protocol.errors import HearthError
from hearthmesh.protocol.fetch import FETCH_PROTOCOL, FetchAnswer, FetchRequest
from hearthmesh.protocol.fetch import decode_answer as decode_fetch_answer
from hearthmesh.protocol.fetch import decode_request as decode_fetch_request
from hearthmesh.protocol.fetch import encode_answer as encode_fetch_answer
from hearthmesh.protocol.fetch import encode_request as encode_fetch_request
from hearthmesh.protocol.hello import decode_hello
from hearthmesh.protocol.home_record import decode_home_record, verify_home_record
from hearthmesh.protocol.identity import DeviceId, user_id_text
from hearthmesh.protocol.ordering import REORDER_WINDOW
from hearthmesh.protocol.rooms import direct_room_id
from hearthmesh.tools.hostile.forge import (
    certificate_of_other,
    random_room,
)

from ..session import DELIVERY_WAIT_S, Session, outcome
from .case import Case
from .shared import greet_node, newcomer_home

__all__ = [
    "CERTIFICATE_OF_ANOTHER_DEVICE",
    "DELIVER_AND_ACK",
    "DROPPED_BATCH_SENT_AGAIN",
    "DUPLICATE",
    "FAR_AHEAD_STORED",
    "FORGED_SIGNATURE",
    "GAP_ANSWER_FILTERED",
    "GAP_FETCH",
    "GAP_FETCH_OUTSIDE_THE_ROOM",
    "HELLO",
    "MALFORMED_FLOOD",
    "MALFORMED_FRAME",
    "MESSAGE_UNSEQUENCED",
    "OUT_OF_ORDER_STORED",
    "OVERSIZED_BODY",
    "OVERSIZED_FRAME",
    "RECORDS_TAKEN_WITH_THE_HELLO",
    "REPLAYED_BY_ANOTHER_PEER",
    "UNKNOWN_KIND",
    "UNKNOWN_VERSION",
]

FLOOD_FRAMES: Final = 8
BAN_POINTS: Final = 100
FRAME_POINTS: Final = 25
"""SPEC §11.6.1: a refused frame costs 25 points; 100 bans."""
"""Malformed frames a flood sends at most: twice what a ban takes (SPEC §11.6)."""


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


async def _records_taken_with_the_hello(s: Session) -> str:
    """§13.3: a node takes a hello's records before it answers it, so the asker may act on the
    node holding its record at once. A newcomer, not greeted yet, delivers its 1 in its direct
    room with the node's user (STORED), says hello, and once answered asks for its 1 (§26.2):
    a room's envelopes go to the homes of its members alone (§26.3), which the node knows
    from the newcomer's record, taken with the hello (ERROR `NOT_AUTHORIZED` before)."""
    async with newcomer_home(s, greet=False) as (newcomer, _):
        as_newcomer = Session(kit=newcomer, address=s.address, peer_id=s.peer_id, user=s.user)
        room = direct_room_id(newcomer.user_id, s.user)
        first = newcomer.forge.message(room, "before our hello", now_ms=s.kit.now_ms())
        if (stored := await as_newcomer.deliver([first.wire])) != "STORED":
            return f"not-stored:{stored}"
        as_newcomer.delivered.append(first)
        await greet_node(newcomer, s.peer_id)
        return await _fetch(as_newcomer, room, 1, 1)


async def _gap_answer_filtered(s: Session) -> str:
    """§26.1, §26.5: a node with a gap in a sender's numbers asks that sender's home for it;
    it takes only what it asked for and each item alone. A newcomer delivers its 1 and 3 in
    its direct room with the node's user and answers the node's first fetch with its 4 (not
    asked for) and a 2 whose signature is broken: nothing of that answer may enter, so the gap
    stays open and is asked for again; the second answer, the good 2, fills it. What the node's
    user is shown of the newcomer's numbers once 2 shows (what is stored shows, §8.2):
    SHOWN:1,2,3 (a 4 taken: 1,2,3,4)."""
    assert s.api is not None
    async with newcomer_home(s) as (sender, _):
        room = direct_room_id(sender.user_id, s.user)
        now = s.kit.now_ms()
        wires = [sender.forge.raw(room=room, now_ms=now + n, seq=n) for n in range(1, 5)]
        one, two, three, four = wires
        broken = two[:-1] + bytes([two[-1] ^ 1])  # the signature's last byte
        answers = ([four, broken], [two])
        asked: list[FetchRequest] = []
        certificate = sender.stranger.certificate_bytes

        async def answer(stream: FrameStream) -> None:
            asked.append(decode_fetch_request(await stream.read_frame()))
            items = answers[min(len(asked), len(answers)) - 1]
            await stream.write_frame(encode_fetch_answer([(certificate, w) for w in items]))

        sender.host.set_stream_handler(FETCH_PROTOCOL, answer)
        as_sender = Session(kit=sender, address=s.address, peer_id=s.peer_id, user=s.user)
        for wire in (one, three):
            if (stored := await as_sender.deliver([wire])) != "STORED":
                return f"not-stored:{stored}"
        seqs = {load_envelope(w).message_id.hex(): n for n, w in enumerate(wires, 1)}
        shown: list[int] = []
        for _ in range(int(2 * DELIVERY_WAIT_S / 0.1)):  # the grace, a bad answer, the next ask
            if 2 in (shown := await _shown_of(s, room, seqs)):  # shown by the API: poll it
                break
            await asyncio.sleep(0.1)
        if not asked:
            return "never-asked"
        if not asked[0].wants(room, load_envelope(two).sender_device, 2):
            return "asked-for-another-range"
        again = "ASKED-AGAIN" if len(asked) > 1 else "ASKED-ONCE"
        return f"{again},SHOWN:" + ",".join(map(str, shown))


async def _shown_of(s: Session, room: RoomId, seqs: dict[str, int]) -> list[int]:
    """The numbers of `seqs`' messages the node's user is shown in `room`, in the order shown."""
    assert s.api is not None
    page = await s.api.call(
        "GET", f"/v1/conversation/{room.hex()}/details", params={"limit": "100"}
    )
    return [seqs[m["message_id"]] for m in page["messages"] if m["message_id"] in seqs]


async def _dropped_batch_sent_again(s: Session) -> str:
    """§11.4-11.5: a home that takes a batch and drops it (reads it, never acks, resets the
    stream) has acked nothing, so the node must send those envelopes again, and they come.
    A newcomer with a home of its own, as in the case above; the node's user writes to it."""
    assert s.api is not None
    async with newcomer_home(s, drop=1) as (newcomer, trap):
        to = {"recipient_id": user_id_text(newcomer.user_id)}
        room = (await s.api.call("POST", "/v1/conversation", to))["room_id"]
        text = {"message": "dropped once, then sent again"}
        await s.api.call("POST", f"/v1/conversation/{room}/messages", text)
        with contextlib.suppress(TimeoutError):
            # The first batch, to drop, is no part of the verdict: it waits its own deadline.
            async with asyncio.timeout(DELIVERY_WAIT_S):
                while not trap.dropped:
                    trap.got_one.clear()
                    await trap.got_one.wait()
            async with asyncio.timeout(s.wait_s):
                while not set(trap.dropped) <= set(trap.wires):
                    trap.got_one.clear()
                    await trap.got_one.wait()
        if not trap.dropped:
            return "nothing-came"
        return "SENT-AGAIN" if set(trap.dropped) <= set(trap.wires) else "dropped-for-good"


async def _malformed_frame(s: Session) -> str:
    return (await s.kit.request(s.peer_id, DELIVER_PROTOCOL, b"\xa1\x01\x02")).summary


async def _malformed_flood(s: Session) -> str:
    """Malformed deliver frames back to back, 25 points each (SPEC §11.6.1): each answered
    MALFORMED until the fourth brings the peer to 100 points and a ban cuts it off, closed
    while it answers that frame or refused at the next (§11.6.2); a clean peer is still
    answered (the liveness probe after every hostile case). A point is forgiven each second
    (§11.6.1), so on a slow machine a later frame may be the one that reaches 100: one more
    frame is allowed per 25 points forgiven while they went."""
    answers: list[str] = []
    started_ms = s.kit.now_ms()
    for _ in range(FLOOD_FRAMES):
        answers.append((await s.kit.request(s.peer_id, DELIVER_PROTOCOL, b"\xa1\x01\x02")).summary)
        if answers[-1] != "ERROR:MALFORMED":
            break
    *answered, last = answers
    if last not in ("closed", "refused"):
        return f"never-cut-off:{last}"
    forgiven = (s.kit.now_ms() - started_ms) / 1000  # at most a point a second
    banning = math.ceil((BAN_POINTS + forgiven) / FRAME_POINTS)  # the latest frame to reach 100
    return (
        "cut-off-at-100-points"
        if 3 <= len(answered) <= banning
        else f"cut-off-at-frame:{len(answers)}"
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


HELLO: Final = Case(name="hello", section="§13.3", expected="ok", run=_hello)


DELIVER_AND_ACK: Final = Case(
    name="deliver_and_ack", section="§11.2, §11.3", expected="STORED", run=_deliver
)


DUPLICATE: Final = Case(name="duplicate", section="§11.3", expected="DUPLICATE", run=_duplicate)


OUT_OF_ORDER_STORED: Final = Case(
    name="out_of_order_stored",
    section="§8.2",
    expected="STORED,STORED",
    run=_out_of_order,
)


GAP_FETCH: Final = Case(name="gap_fetch", section="§26.4", expected="ANSWER:1,2,3", run=_gap_fetch)


RECORDS_TAKEN_WITH_THE_HELLO: Final = Case(
    name="records_taken_with_the_hello",
    section="§13.3, §26.3",
    expected="ANSWER:1",
    run=_records_taken_with_the_hello,
)


GAP_ANSWER_FILTERED: Final = Case(
    name="gap_answer_filtered",
    section="§26.1, §26.5",
    expected="ASKED-AGAIN,SHOWN:1,2,3",
    run=_gap_answer_filtered,
    needs_api=True,
)


FAR_AHEAD_STORED: Final = Case(
    name="far_ahead_stored", section="§8.3", expected="STORED", run=_far_ahead_stored
)


MESSAGE_UNSEQUENCED: Final = Case(
    name="message_unsequenced",
    section="§8.5",
    expected="REJECTED:MALFORMED",
    run=_message_unsequenced,
)


GAP_FETCH_OUTSIDE_THE_ROOM: Final = Case(
    name="gap_fetch_outside_the_room",
    section="§26.3",
    expected="ERROR:NOT_AUTHORIZED",
    run=_gap_fetch_outside,
    hostile=True,
)


MALFORMED_FRAME: Final = Case(
    name="malformed_frame",
    section="§11.1",
    expected="ERROR:MALFORMED",
    run=_malformed_frame,
    hostile=True,
)


MALFORMED_FLOOD: Final = Case(
    name="malformed_flood",
    section="§11.6",
    expected="cut-off-at-100-points",
    run=_malformed_flood,
    hostile=True,
)


OVERSIZED_FRAME: Final = Case(
    name="oversized_frame",
    section="§10.2",
    expected="refused",
    run=_oversized_frame,
    hostile=True,
)


FORGED_SIGNATURE: Final = Case(
    name="forged_signature",
    section="§5.4",
    expected="REJECTED:BAD_SIGNATURE",
    run=_forged,
    hostile=True,
)


UNKNOWN_VERSION: Final = Case(
    name="unknown_version",
    section="§5.1",
    expected="REJECTED:UNSUPPORTED_VERSION",
    run=_unknown_version,
    hostile=True,
)


UNKNOWN_KIND: Final = Case(
    name="unknown_kind",
    section="§5.2",
    expected="REJECTED:UNKNOWN_KIND",
    run=_unknown_kind,
    hostile=True,
)


OVERSIZED_BODY: Final = Case(
    name="oversized_body",
    section="§7",
    expected="REJECTED:TOO_LARGE",
    run=_oversized_body,
    hostile=True,
)


CERTIFICATE_OF_ANOTHER_DEVICE: Final = Case(
    name="certificate_of_another_device",
    section="§11.2",
    expected="REJECTED:NOT_AUTHORIZED",
    run=_unauthorized_certificate,
    hostile=True,
)


REPLAYED_BY_ANOTHER_PEER: Final = Case(
    name="replayed_by_another_peer",
    section="§11.3",
    expected="DUPLICATE",
    run=_replayed,
    hostile=True,
)


DROPPED_BATCH_SENT_AGAIN: Final = Case(
    name="dropped_batch_sent_again",
    section="§11.4, §11.5",
    expected="SENT-AGAIN",
    run=_dropped_batch_sent_again,
    needs_api=True,
)
