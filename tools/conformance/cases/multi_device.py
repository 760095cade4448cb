"""The cases of level `multi-device` (SPEC §20.5): linked devices and sync between the homes of
one user (SPEC §22, §23). State: none.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.protocol.capabilities import Level
from hearthmesh.protocol.delivery import AckStatus
from hearthmesh.protocol.errors import HearthError
from hearthmesh.protocol.identity import decode_certificate, generate_keypair, keypair_from_seed
from hearthmesh.protocol.linking import (
    LINK_PROTOCOL,
    LinkRequest,
    decode_link_answer,
    decode_link_code,
    encode_link_request,
    link_proof,
)
from hearthmesh.protocol.reconcile import Reconciler, SortedItems
from hearthmesh.protocol.sync import (
    SYNC_PROTOCOL,
    RoomList,
    RoomReconcile,
    SyncDone,
    decode_sync_frame,
    encode_done,
    encode_reconcile,
    encode_room_list,
)
from hearthmesh.tools.hostile.peer import DeliveryTrap, HostilePeer

from ..session import Session
from .case import Case

__all__ = ["SYNC_FROM_A_STRANGER", "SYNC_STARTED_BY_THE_NODE", "SYNC_TO_A_LINKED_HOME"]


async def _sync_stranger(s: Session) -> str:
    return (await s.kit.request(s.peer_id, SYNC_PROTOCOL, encode_room_list([]))).summary


async def _sync_to_a_linked_home(s: Session) -> str:
    """§22.2, §23.3-23.4: the node's user shows a pairing code (over the API) and a new home
    of that user, empty, links with it; the new home then syncs, holding nothing, so the node
    must queue and deliver it the history it lacks, in history order. What of our stranger's
    direct room came, by sequence number in the order it came: HISTORY:1,2,3 when all did."""
    assert s.api is not None
    code = decode_link_code((await s.api.call("POST", "/v1/devices/link"))["code"])
    async with s.kit.rotated(new_user=True, seed=s.kit.rng(32)) as home:
        await home.connect(s.address)
        trap = home.catch_deliveries(AckStatus.STORED)
        if (linked := await _link(home, s.peer_id, code.secret)) != "linked":
            return linked
        async with await home.host.open_stream(s.peer_id, SYNC_PROTOCOL) as stream:
            if (synced := await _sync_holding_nothing(stream)) != "synced":
                return synced
        return await _history_came(s, trap)


async def _history_came(s: Session, trap: DeliveryTrap) -> str:
    """What of our stranger's direct room reached the linked home, by sequence number in the
    order it came, within the delivery wait: HISTORY:1,2,3 when all did."""
    ours = {e.wire: e.seq for e in s.delivered}
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(s.wait_s):
            while not set(ours) <= set(trap.wires):
                trap.got_one.clear()
                await trap.got_one.wait()
    came = [ours[w] for w in dict.fromkeys(trap.wires) if w in ours]
    return "HISTORY:" + ",".join(map(str, came))


async def _sync_started_by_the_node(s: Session) -> str:
    """§23.1, §23.3-23.4: a node opens `/hearthmesh/sync/0` to a sibling home when it connects
    to it. A new home, empty, links as in `sync_to_a_linked_home`, serves the responder's side
    of a sync, and the node's user tells the node to connect to it (`POST /v1/peers`): the
    node must open the sync, end it with DONE, and deliver the history the home lacks, in
    history order."""
    assert s.api is not None
    code = decode_link_code((await s.api.call("POST", "/v1/devices/link"))["code"])
    async with s.kit.rotated(new_user=True, seed=s.kit.rng(32)) as home:
        await home.connect(s.address)
        home.answer_hellos()
        trap = home.catch_deliveries(AckStatus.STORED)
        if (linked := await _link(home, s.peer_id, code.secret)) != "linked":
            return linked
        synced: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def respond(stream: FrameStream) -> None:
            try:
                outcome = await _respond_holding_nothing(stream)
            except HearthError as exc:
                outcome = f"sync-broken:{type(exc).__name__}"
            if not synced.done():
                synced.set_result(outcome)

        home.host.set_stream_handler(SYNC_PROTOCOL, respond)
        await s.api.call("POST", "/v1/peers", {"address": home.host.listen_addrs[0]})
        try:
            async with asyncio.timeout(s.wait_s):
                if (outcome := await synced) != "synced":
                    return outcome
        except TimeoutError:
            return "no-sync-opened"
        return "SYNCED," + await _history_came(s, trap)


async def _link(home: HostilePeer, peer: str, secret: bytes) -> str:
    """Link `home` as a new device of the node's user with a pairing code's `secret` (SPEC
    §22.2): "linked" when the answer certifies our device, else what happened."""
    device = generate_keypair(home.rng)
    node_key = keypair_from_seed(home.seed).public
    proof = link_proof(secret, device=device.public, node_key=node_key)
    request = LinkRequest(
        device=device.public, node_key=node_key, addrs=tuple(home.host.listen_addrs), proof=proof
    )
    reply = await home.request(peer, LINK_PROTOCOL, encode_link_request(request))
    if reply.frame is None:
        return f"link-{reply.outcome}"
    try:
        certificate = decode_certificate(decode_link_answer(reply.frame).certificate)
    except HearthError as exc:
        return f"link-refused:{type(exc).__name__}"
    return "linked" if certificate.device == device.public else "certified-another-device"


async def _sync_holding_nothing(stream: FrameStream) -> str:
    """The initiator's side of a sync (SPEC §23.3) for a home that holds nothing: an empty
    ROOMS, then each of the node's rooms reconciled against no items, then DONE."""
    await stream.write_frame(encode_room_list([]))
    theirs = decode_sync_frame(await stream.read_frame())
    if not isinstance(theirs, RoomList):
        return "no-room-list"
    for room in sorted({entry.room for entry in theirs.rooms}):
        reconciler = Reconciler(SortedItems([]))
        await stream.write_frame(encode_reconcile(room, reconciler.initiate()))
        while True:
            frame = decode_sync_frame(await stream.read_frame())
            if not isinstance(frame, RoomReconcile) or frame.room != room:
                return "answered-another-room"
            if not frame.message:
                break
            step = reconciler.reconcile(frame.message)
            await stream.write_frame(encode_reconcile(room, step.reply or b""))
            if step.reply is None:
                break
    await stream.write_frame(encode_done())
    return "synced"


async def _respond_holding_nothing(stream: FrameStream) -> str:
    """The responder's side of a sync (SPEC §23.3) for a home that holds nothing: the
    initiator's ROOMS, an empty ROOMS back, each RECONCILE answered over no items, until DONE."""
    if not isinstance(decode_sync_frame(await stream.read_frame()), RoomList):
        return "no-room-list"
    await stream.write_frame(encode_room_list([]))
    reconcilers: dict[bytes, Reconciler] = {}
    while True:
        frame = decode_sync_frame(await stream.read_frame())
        if isinstance(frame, SyncDone):
            return "synced"
        if not isinstance(frame, RoomReconcile):
            return "not-a-reconcile"
        if not frame.message:
            continue  # the initiator is finished with this room
        reconciler = reconcilers.setdefault(frame.room, Reconciler(SortedItems([])))
        step = reconciler.reconcile(frame.message)
        await stream.write_frame(encode_reconcile(frame.room, step.reply or b""))


SYNC_FROM_A_STRANGER: Final = Case(
    name="sync_from_a_stranger",
    section="§23.1",
    expected="ERROR:NOT_AUTHORIZED",
    run=_sync_stranger,
    hostile=True,
    level=Level.MULTI_DEVICE,
)

SYNC_TO_A_LINKED_HOME: Final = Case(
    name="sync_to_a_linked_home",
    section="§22.2, §23.3, §23.4",
    expected="HISTORY:1,2,3",
    run=_sync_to_a_linked_home,
    needs_api=True,
    level=Level.MULTI_DEVICE,
)

SYNC_STARTED_BY_THE_NODE: Final = Case(
    name="sync_started_by_the_node",
    section="§23.1, §23.3, §23.4",
    expected="SYNCED,HISTORY:1,2,3",
    run=_sync_started_by_the_node,
    needs_api=True,
    level=Level.MULTI_DEVICE,
)
