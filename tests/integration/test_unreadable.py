"""One unreadable stored item (SPEC §11.8.7): contained where it is met, never a fail-stop.

A media blob whose file no longer matches its sha-256 address is ours to fix, not a fault of
the peer that asks for it, and not a reason to stop: were it the node's fatal fault, a peer
asking for it five times would end `hearthmesh run` for good.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import lmdb
import pytest

from hearthmesh.node.events import MessageReceived
from hearthmesh.node.node import Node
from hearthmesh.node.p2p.gossip import GossipMessage
from hearthmesh.protocol import e2ee
from hearthmesh.protocol.e2ee.rotation import Rotation
from hearthmesh.protocol.envelope import Envelope, RoomId, load_envelope
from hearthmesh.protocol.errors import ErrorCode, NotFound
from hearthmesh.protocol.gossip import GossipItem, encode_gossip, load_gossip, room_topic
from hearthmesh.protocol.media import MediaRefused
from hearthmesh.storage.api import MediaReference
from hearthmesh.storage.directory import release_progress_key
from hearthmesh.storage.keys import Table, crypto_pair_key, sequence_key

from .api_helpers import Home, home, link
from .conftest import NodeFactory, collect, node_config, wait_until, wait_until_async
from .test_devices import link_device
from .test_media import _download, _send_image

pytestmark = pytest.mark.integration


async def test_a_damaged_blob_is_refused_as_unreadable_and_the_node_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="hearthmesh")
    image = os.urandom(4096)
    async with (
        asyncio.timeout(30),
        home(tmp_path / "a") as a,
        home(tmp_path / "b") as b,
    ):
        await link(a, b)
        media = await _send_image(a, b, image)
        assert (await _download(b, media["digest"]))[0] == 200  # served while intact
        digest = bytes.fromhex(media["digest"])
        info = await a.node.store.run(a.node.store.store.media_info, digest)
        assert info is not None
        # damage alice's blob on disk: same length, other bytes
        [blob] = [p for p in (tmp_path / "a").rglob(digest.hex()) if p.is_file()]
        blob.write_bytes(bytes(len(blob.read_bytes())))
        failed = asyncio.ensure_future(a.node.wait_failed())
        reference = MediaReference(
            room=RoomId(bytes(32)), sender=a.node.user_id, size=info.size, content_type="image/png"
        )
        for _ in range(2):  # a second ask is met the same way
            with pytest.raises(MediaRefused) as refused:
                await b.node.media.fetch_from(a.node.peer_id, digest, reference)
            assert refused.value.refusal_code == ErrorCode.UNREADABLE
            assert str(tmp_path) not in str(refused.value)  # no local path goes to a peer
        status, body, _ = await _download(a, media["digest"])  # alice's own client asks
        assert (status, json.loads(body)["error"]["code"]) == (500, ErrorCode.UNREADABLE)
        assert a.node.unreadable_items == 3  # two fetches and the API request (`report_fault`)
        assert a.node.failure is None and not failed.done()
        assert a.node.peer_points(b.node.peer_id) == 0  # the fault is ours, not bob's
        logged = [
            r
            for r in caplog.records
            if r.name == "hearthmesh.node.supervisor" and r.levelno >= logging.ERROR
        ]
        assert len(logged) == 1 and str(blob) in logged[0].getMessage()  # once, with its path
        # other traffic still flows: a message from alice reaches bob
        arriving = asyncio.create_task(collect(b.node.events(), MessageReceived, 1))
        await asyncio.sleep(0)
        room = await a.node.open_direct(b.node.user_id)
        sent = await a.node.send(room, b"still here")
        [received] = await arriving
        assert received.envelope.message_id == sent.message_id
        assert a.node.failure is None and not failed.done()
        failed.cancel()


async def test_a_damaged_blob_another_user_sent_is_dropped_and_fetched_again(
    tmp_path: Path,
) -> None:
    """Bob's copy of the image alice sent him no longer matches its address: his client gets
    500 UNREADABLE once, his node drops the copy and fetches it again from alice's home, and
    the next download is the image (SPEC §11.8.7). Alice's own upload, which may be its only
    copy, is kept instead (the test above)."""
    image = os.urandom(4096)
    async with asyncio.timeout(30), home(tmp_path / "a") as a, home(tmp_path / "b") as b:
        await link(a, b)
        media = await _send_image(a, b, image)
        assert (await _download(b, media["digest"]))[:2] == (200, image)  # fetched, intact
        await _damaged_then_fetched_again(b, tmp_path / "b", media["digest"], image)  # from alice
        assert b.node.unreadable_items == 1 and b.node.failure is None
        assert a.node.unreadable_items == 0


async def test_our_own_damaged_blob_is_replaced_by_a_siblings_copy(tmp_path: Path) -> None:
    """Alice's copy of the image she sent no longer matches its address, and she sent it
    alone, so it is kept (ours may be the only copy), but her laptop, another home of hers,
    fetched it when her message reached it: her client gets 500 UNREADABLE once, her node
    asks the laptop, and the next download is the image (SPEC §11.8.7)."""
    image = os.urandom(4096)
    async with asyncio.timeout(60), home(tmp_path / "a") as a, home(tmp_path / "b") as b:
        config, _ = await link_device(a.node, tmp_path / "laptop")
        async with Node(config) as laptop:
            await laptop.connect(a.node.listen_addrs[0])
            await link(a, b)
            media = await _send_image(a, b, image)
            digest = bytes.fromhex(media["digest"])

            async def on_laptop() -> int:
                """The laptop's copy, as a download there gets it (its message may wait for
                its room key a while, and no fetch starts before it opens)."""
                try:
                    return int(await laptop.media.wait_fetched(digest, wait_s=1.0))
                except NotFound:  # the message is not there, or not opened yet
                    await asyncio.sleep(0.1)
                    return 0

            await wait_until_async(on_laptop, 1)  # fetched from alice's home
            await _damaged_then_fetched_again(a, tmp_path / "a", media["digest"], image)  # laptop
            assert a.node.unreadable_items == 1 and a.node.failure is None
            assert laptop.unreadable_items == 0


async def _damaged_then_fetched_again(h: Home, data_dir: Path, digest: str, image: bytes) -> None:
    """Damage `h`'s copy of the blob on disk; its client meets it (500 UNREADABLE), its node
    fetches a good copy, and the next download is the image, from a file replaced."""
    fetched = h.node.media.fetched
    blob, damaged = _damage(data_dir, digest)
    status, body, _ = await _download(h, digest)
    assert (status, json.loads(body)["error"]["code"]) == (500, ErrorCode.UNREADABLE)
    await wait_until(lambda: h.node.media.fetched > fetched)
    assert (await _download(h, digest))[:2] == (200, image)
    assert blob.read_bytes() != damaged


def _damage(data_dir: Path, digest: str) -> tuple[Path, bytes]:
    """Overwrite the blob's file under `data_dir` with zeros: (its path, the damaged bytes)."""
    [blob] = [p for p in data_dir.rglob(digest) if p.is_file()]
    damaged = bytes(len(blob.read_bytes()))
    blob.write_bytes(damaged)
    return blob, damaged


async def test_a_gossip_batch_with_one_unreadable_item_takes_the_others(tmp_path: Path) -> None:
    """A room gossip batch whose store write meets one unreadable item (SPEC §11.8.7) is taken
    one message at a time: that message is dropped and counted, the others are stored, and
    nothing reaches the listener (it used to re-raise: the listener restarted and the whole
    batch was lost to gossip).

    The unreadable item is a damaged Megolm session row: alice's sessions hold 3 messages, so
    bob holds two of her sessions, S1 (D1-D3) and S2 (from D4); bob's S1 row is cut short while
    he is down, and alice sends D5 and D6 in S2 meanwhile. Restarted, bob takes the batch
    [D1, D5, D6] as his topic listener does: D1 meets the row, D5 and D6 do not."""
    b_path = tmp_path / "b"
    rotation = Rotation(max_messages=3)
    async with (
        asyncio.timeout(60),
        Node(node_config(tmp_path / "a", megolm_rotation=rotation)) as a,
    ):
        async with Node(node_config(b_path)) as b:
            await a.connect(f"{b.listen_addrs[0]}/p2p/{b.peer_id}")
            arriving = asyncio.create_task(collect(b.events(), MessageReceived, 4))
            await asyncio.sleep(0)
            room = await a.open_direct(b.user_id)
            sent = [await a.send(room, f"D{n}".encode()) for n in range(1, 5)]
            await arriving  # bob holds S1 and S2, and D1-D4
        later = [await a.send(room, f"D{n}".encode()) for n in (5, 6)]  # bob is down
        first, d5, d6 = (load_envelope(e.wire) for e in (sent[0], *later))
        s1, s2 = (e2ee.decode_encrypted_body(e.body).session_id for e in (first, d5))
        assert s1 != s2 and e2ee.decode_encrypted_body(d6.body).session_id == s2
        key = crypto_pair_key(room, s1)
        _rewrite(b_path / "store", Table.E2EE_INBOUND, key, lambda value: value[:8])  # torn
        async with Node(node_config(b_path)) as b:
            certificate = a.keyring.certificate_bytes
            batch = [_gossip(a.peer_id, certificate, e) for e in (first, d5, d6)]
            assert await b.get_event(d5.message_id) is None  # not delivered to bob
            await b._services.topics._accept(batch)  # raises nothing to the listener
            assert await b.get_event(d5.message_id) is not None
            assert await b.get_event(d6.message_id) is not None
            assert b.unreadable_items == 1  # D1, once
            assert b.failure is None


async def test_a_row_of_ours_that_does_not_decode_charges_no_publisher(tmp_path: Path) -> None:
    """Bob's release progress row for alice's device in their room is damaged (3 bytes, not a
    u64). The gossip messages of hers that meet it are bob's fault: unreadable (102), counted,
    charged to no one. A damaged u64 was a `struct.error`, which the listener took for bad
    input: alice's peer was charged 10 points a message (20 for two) for bob's damaged row.
    (The highest-sequence row, this test's first subject, is rebuilt now: tests/storage/
    test_sequences.py; the release progress is no row derived from another.)"""
    b_path = tmp_path / "b"
    async with asyncio.timeout(60), Node(node_config(tmp_path / "a")) as a:
        async with Node(node_config(b_path)) as b:
            await a.connect(f"{b.listen_addrs[0]}/p2p/{b.peer_id}")
            arriving = asyncio.create_task(collect(b.events(), MessageReceived, 1))
            await asyncio.sleep(0)
            room = await a.open_direct(b.user_id)
            first = await a.send(room, b"D1")
            await arriving
        later = [load_envelope((await a.send(room, f"D{n}".encode())).wire) for n in (2, 3)]
        key = release_progress_key(room, first.sender_device)
        _rewrite(b_path / "store", Table.SYNC, key, lambda value: value[:3])
        async with Node(node_config(b_path)) as b:
            certificate = a.keyring.certificate_bytes
            await b._services.topics._accept([_gossip(a.peer_id, certificate, e) for e in later])
            assert b.peer_points(a.peer_id) == 0  # the fault is bob's
            assert b.unreadable_items == 2  # each message met it, one by one
            assert b.failure is None


async def test_our_damaged_sequence_row_is_rebuilt_and_our_next_send_takes_the_next_number(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    """Alice's highest-sequence row for her own device in a room is damaged: her next send
    there still takes the number after her last (rebuilt from `history.by_sender`), is stored
    and reaches bob, and the row is whole again; it was UNREADABLE at every send, for good."""
    a_path = tmp_path / "a"
    async with asyncio.timeout(60), make_node("bob") as b:
        async with Node(node_config(a_path)) as a:
            await a.connect(f"{b.listen_addrs[0]}/p2p/{b.peer_id}")
            room = await a.open_direct(b.user_id)
            sent = [await a.send(room, f"D{n}".encode()) for n in (1, 2, 3)]
            key = sequence_key(room, sent[0].sender_device)
        _rewrite(a_path / "store", Table.SEQUENCES, key, lambda value: value[:3])
        async with Node(node_config(a_path)) as a:
            await a.connect(f"{b.listen_addrs[0]}/p2p/{b.peer_id}")
            fourth = await a.send(room, b"D4")
            assert fourth.seq == sent[-1].seq + 1

            async def at_bob() -> int:
                return int(await b.get_event(fourth.message_id) is not None)

            await wait_until_async(at_bob, 1)  # stored there: delivered
            assert await a.store.read(a.store.store.last_seq, room, fourth.sender_device) == (
                fourth.seq
            )
            assert a.unreadable_items == 0 and a.failure is None


def _gossip(
    origin: str, certificate: bytes, envelope: Envelope
) -> tuple[GossipMessage, GossipItem]:
    """`envelope` as a room topic's listener holds it once our validator passed it."""
    data = encode_gossip(certificate, envelope.wire)
    message = GossipMessage(
        topic=room_topic(envelope.room), origin=origin, data=data, msg_id=b"", seqno=0
    )
    return message, load_gossip(data)


def _rewrite(store: Path, table: Table, key: bytes, damage: Callable[[bytes], bytes]) -> None:
    """Damage one row of a stopped node's store."""
    env = lmdb.open(str(store), max_dbs=len(Table))
    with env.begin(write=True) as txn:
        db = env.open_db(table.value, txn=txn)
        value = txn.get(key, db=db)
        assert value is not None
        txn.put(key, damage(value), db=db)
    env.close()
