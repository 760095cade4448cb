"""kad-dht home records and bootstrap (node/p2p/dht.py via P2PHost) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
from libp2p.abc import IHost
from libp2p.kad_dht import utils as kad_utils
from libp2p.kad_dht.pb.kademlia_pb2 import Message
from libp2p.peer.id import ID
from libp2p.peer.peerstore import env_to_send_in_RPC
from libp2p.pubsub import utils as pubsub_utils

from hearthmesh.node.p2p.dht import NEAREST_ASKED, _rpc, home_record_rules
from hearthmesh.node.p2p.host import HostConfig, P2PHost, peer_id_from_seed
from hearthmesh.protocol.errors import LocalProtocolError
from hearthmesh.protocol.home_dht import home_record_key
from hearthmesh.protocol.home_record import encode_home_record, issue_home_record
from hearthmesh.protocol.identity import (
    DeviceId,
    KeyPair,
    UserId,
    issue_certificate,
    keypair_from_seed,
)
from tests.integration.conftest import wait_until_async

pytestmark = pytest.mark.integration

NOW_MS = 1_700_000_000_000
ALICE, BOB, DEVICE = (keypair_from_seed(bytes([100 + i]) * 32) for i in range(3))
ALICE_KEY = home_record_key(UserId(ALICE.public))
BOB_KEY = home_record_key(UserId(BOB.public))


def home_record(user: KeyPair, issued_ms: int, home: str = "12D3KooWHome") -> bytes:
    cert = issue_certificate(user, DeviceId(DEVICE.public), created_ms=NOW_MS - 1_000)
    return encode_home_record(
        issue_home_record(
            user,
            issued_ms=issued_ms,
            homes=(home,),
            addrs=(f"/ip4/127.0.0.1/tcp/4470/p2p/{home}",),
            devices=(cert,),
        )
    )


def dht_config(n: int, **kwargs: object) -> HostConfig:
    validate, select = home_record_rules(lambda: NOW_MS)
    return HostConfig(
        identity_seed=bytes([n]) * 32,
        dht_validate=validate,
        dht_select=select,
        **kwargs,  # type: ignore[arg-type]
    )


def rogue_config(n: int) -> HostConfig:
    """A host that stores and serves anything: what an attacker would run."""
    return HostConfig(
        identity_seed=bytes([n]) * 32,
        dht_validate=lambda key, value: None,
        dht_select=lambda key, values: 0,  # whatever it is handed last wins locally
    )


@asynccontextmanager
async def hosts(*configs: HostConfig) -> AsyncIterator[list[P2PHost]]:
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(P2PHost(c)) for c in configs]


async def link(a: P2PHost, b: P2PHost) -> None:
    await a.connect(b.listen_addrs[0])
    await b.wait_connected(a.peer_id)


async def test_put_on_one_host_get_from_a_host_that_never_met_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """... and each request served ends without a WARNING: py-libp2p 0.8.1 logged its clean
    end (`StreamEOF`) as a failed read, one per request (node/p2p/dht_log.py), and a put of
    the record a peer holds already as a failed store (its server answered none)."""
    caplog.set_level(logging.WARNING, logger="libp2p.kad_dht")
    v1, v2 = home_record(ALICE, NOW_MS), home_record(ALICE, NOW_MS + 1, "12D3KooWMoved")
    async with asyncio.timeout(9), hosts(dht_config(1), dht_config(2), dht_config(3)) as (a, b, c):
        await link(a, b)
        await link(c, b)  # chain A - B - C
        assert a.peer_id not in c.connected_peers()

        await a.dht_put(ALICE_KEY, v1)
        assert await c.dht_get(ALICE_KEY) == v1
        assert await c.dht_get(BOB_KEY) is None

        # A newer record replaces the older one everywhere it was stored, the getter included.
        await a.dht_put(ALICE_KEY, v2)
        for host in (a, b, c):
            assert await host.dht_get(ALICE_KEY) == v2
        await a.dht_put(ALICE_KEY, v2)  # again (a dial publishes): the peers holding it ack
        with pytest.raises(LocalProtocolError):  # an older record never replaces a newer one
            await a.dht_put(ALICE_KEY, v1)
        with pytest.raises(LocalProtocolError):
            await c.dht_put(ALICE_KEY, v1)
        assert await b.dht_get(ALICE_KEY) == v2
    assert [r.getMessage() for r in caplog.records if r.name.startswith("libp2p.kad_dht")] == []


async def in_routing_table(host: P2PHost, peers: set[str]) -> int:
    """How many of `peers` are in `host`'s kad routing table (read on its trio thread)."""
    layer = host._dht
    assert layer is not None

    async def read() -> int:
        assert layer._dht is not None
        return len(peers & {p.to_base58() for p in layer._dht.routing_table.get_peer_ids()})

    return await host._bridge.run(read)


async def test_a_peer_that_dialled_us_enters_our_routing_table_and_takes_puts() -> None:
    """A peer that dialled us is in our routing table once identify told its addresses
    (py-libp2p skipped it for good when offered before): a walk through us names it, so a put
    made behind us is stored there too. Without it, `bench p2p` at load 40-50 stored each put
    along a chain of 6 hosts at 2 of them, and a get from the far end missed."""
    async with asyncio.timeout(20), hosts(dht_config(1), dht_config(2), dht_config(3)) as hs:
        a, b, c = hs
        await link(a, b)
        await link(c, b)  # both dialled b
        await wait_until_async(lambda: in_routing_table(b, {a.peer_id, c.peer_id}), 2)
        record = home_record(ALICE, NOW_MS)
        await a.dht_put(ALICE_KEY, record)
        asked = c.dht_asked
        assert await c.dht_get(ALICE_KEY) == record
        assert c.dht_asked == asked  # its own copy: the put stored it at c


async def test_a_get_asks_the_few_peers_nearest_the_key_not_the_whole_mesh() -> None:
    """SPEC §13.5: a get, a miss included, asks the NEAREST_ASKED peers it knows nearest the
    key (and any nearer they name); py-libp2p's own get asked every peer it heard of, twice
    on a miss, so a lookup of a user known nowhere cost more as the mesh grew."""
    record = home_record(ALICE, NOW_MS)
    async with asyncio.timeout(30), hosts(*(dht_config(n) for n in range(1, 10))) as all_hosts:
        getter, putter, *others = all_hosts
        for host in (putter, *others):  # the getter knows every peer, they know only it
            await link(host, getter)
        await putter.dht_put(ALICE_KEY, record)  # stored at the peers nearest ALICE_KEY
        for host in others:  # each knows little but the getter: asks it, and whom it names
            assert await host.dht_get(ALICE_KEY) == record
        assert await getter.dht_get(BOB_KEY) is None  # nobody holds it
        assert getter.dht_asked == NEAREST_ASKED  # not the 8 peers, nor twice


async def test_invalid_values_are_refused_by_put_and_never_returned_by_get() -> None:
    good = home_record(ALICE, NOW_MS)
    forged = bytearray(home_record(BOB, NOW_MS + 5))
    forged[-1] ^= 1  # signature bit flipped
    invalid = {
        "forged": bytes(forged),
        "wrong key": good,  # Alice's valid record under Bob's key
        "malformed": b"\xa1not a home record",
        "from the future": home_record(BOB, NOW_MS + 24 * 3600 * 1000),
    }
    outside = ("/pk/" + BOB.public.hex(), "/ipns/" + BOB.public.hex(), "plain-key")
    configs = (dht_config(1), dht_config(2), dht_config(3), rogue_config(4))
    async with asyncio.timeout(30), hosts(*configs) as (a, b, c, rogue):
        await link(a, b)
        await link(c, b)
        await link(rogue, b)
        await link(rogue, c)
        for name, value in invalid.items():
            with pytest.raises(LocalProtocolError):
                await a.dht_put(BOB_KEY, value)
            # The rogue skips its own checks; honest peers refuse to store what it sends.
            await rogue.dht_put(BOB_KEY, value)
            assert await rogue.dht_get(BOB_KEY) == value, name
        for host in (a, b, c):
            assert await host.dht_get(BOB_KEY) is None
        for key in outside:  # strict: one namespace, even the rogue's own DHT refuses others
            for host in (a, rogue):
                with pytest.raises(LocalProtocolError):
                    await host.dht_put(key, good)
                with pytest.raises(LocalProtocolError):
                    await host.dht_get(key)
        # A valid record is stored despite the rogue; its junk never displaces it.
        await c.dht_put(ALICE_KEY, good)
        await rogue.dht_put(ALICE_KEY, b"junk")
        assert await a.dht_get(ALICE_KEY) == good
        assert await b.dht_get(ALICE_KEY) == good


async def test_dht_is_off_without_record_rules() -> None:
    async with asyncio.timeout(5), P2PHost(HostConfig(identity_seed=b"\x05" * 32)) as host:
        with pytest.raises(LocalProtocolError):
            await host.dht_put(ALICE_KEY, home_record(ALICE, NOW_MS))
        with pytest.raises(LocalProtocolError):
            await host.dht_get(ALICE_KEY)
    validate, _ = home_record_rules(lambda: NOW_MS)
    with pytest.raises(LocalProtocolError):
        P2PHost(HostConfig(identity_seed=b"\x05" * 32, dht_validate=validate))


async def test_bootstrap_peer_is_connected_at_start() -> None:
    async with asyncio.timeout(8), P2PHost(dht_config(1)) as first:
        config = dht_config(2, bootstrap=[first.listen_addrs[0]])
        async with P2PHost(config) as second:
            await second.wait_connected(first.peer_id)
            await first.wait_connected(second.peer_id)
            record = home_record(ALICE, NOW_MS)
            await second.dht_put(ALICE_KEY, record)
            assert await first.dht_get(ALICE_KEY) == record


async def test_bad_bootstrap_addresses_do_not_stop_the_host() -> None:
    async with asyncio.timeout(8), P2PHost(dht_config(1)) as first:
        dead = peer_id_from_seed(bytes([9]) * 32)  # a peer that is not running
        bootstrap = [
            "/not/a/multiaddr",
            f"/ip4/127.0.0.1/tcp/1/p2p/{dead}",  # refused
            first.listen_addrs[0],
        ]
        async with P2PHost(dht_config(2, bootstrap=bootstrap)) as second:
            await second.wait_connected(first.peer_id)


def _open_fds() -> dict[str, str]:
    """Each open descriptor and what it is (a socket's inode, a file's path): a number closed
    and reused for something else counts as another descriptor."""
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the listing's own, closed by now
            found[fd] = os.readlink(f"/proc/self/fd/{fd}")
    return found


async def _cycle(first: int) -> None:
    async with hosts(dht_config(first), dht_config(first + 1)) as (a, b):
        await link(a, b)
        record = home_record(ALICE, NOW_MS + first)
        await a.dht_put(ALICE_KEY, record)
        assert await b.dht_get(ALICE_KEY) == record


async def test_stopping_dht_hosts_leaks_no_threads_fds_or_tasks() -> None:
    """What the cycles opened is closed, whatever else in this worker's process closed
    meanwhile (an earlier test's leftovers ending made the count fall: 21 before, 18 after)."""
    async with asyncio.timeout(9):
        await _cycle(10)  # warm-up: lazy imports, loggers, the loop's own sockets
        threads, fds = set(threading.enumerate()), _open_fds()
        for first in (20, 30, 40):
            await _cycle(first)
        assert set(threading.enumerate()) - threads == set()
        assert {fd: what for fd, what in _open_fds().items() if fds.get(fd) != what} == {}
        assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_our_answers_name_closer_peers_by_address_without_their_signed_records() -> None:
    """py-libp2p put each closer peer's signed record (some 210 bytes) in an answer, up to 20
    an answer, and the asker checked each: a node's kad bytes per message grew with the mesh
    until 21 nodes (SPEC §20.6). B has A's record; its answer naming A carries A's id and
    addresses, not the record."""
    async with asyncio.timeout(9), hosts(dht_config(1), dht_config(2)) as (a, b):
        await link(a, b)
        layer = b._dht
        assert layer is not None and layer._dht is not None
        dht, peer = layer._dht, ID.from_base58(a.peer_id)

        async def answer() -> Message:
            response = Message(type=Message.MessageType.FIND_NODE)
            dht._add_closer_peers_to_response(response, [peer])
            return response

        async def has_record() -> bool:  # from A's hello or gossip: py-libp2p would add it
            return dht.host.get_peerstore().get_peer_record(peer) is not None

        while not await b._bridge.run(has_record):  # noqa: ASYNC110 (no event to wait on)
            await asyncio.sleep(0.02)
        (named,) = (await b._bridge.run(answer)).closerPeers
        assert ID(named.id) == peer and named.addrs
        assert not named.HasField("signedRecord")


SENDER_RECORD_BYTES = 213
"""Our signed peer record as py-libp2p put it in each kad request and answer (one address)."""
KAD = "/ipfs/kad/1.0.0"


async def test_our_gets_carry_no_signed_peer_record_and_are_answered() -> None:
    """SPEC §13.5: py-libp2p put our signed peer record in each GET_VALUE (213 bytes of a
    271-byte request, in two writes), which the server verified and stored where identify had
    stored it when the connection opened. Ours carry none, and a py-libp2p server answers
    them: a held record is found, keys held nowhere are misses."""
    misses = 20
    async with asyncio.timeout(9), hosts(dht_config(1), dht_config(2)) as (a, b):
        record = home_record(ALICE, NOW_MS)
        await a.dht_put(ALICE_KEY, record)  # no peer yet: held at a alone
        await link(b, a)
        assert await b.dht_get(ALICE_KEY) == record  # a's answer
        before = b.wire()
        for n in range(misses):
            assert await b.dht_get(home_record_key(UserId(bytes([n]) * 32))) is None
        after = b.wire()
    sent = after["bytes"][KAD] - before["bytes"].get(KAD, 0)
    writes = after["writes"][KAD] - before["writes"].get(KAD, 0)
    assert b.dht_asked == 1 + misses
    # each request smaller than the record alone (the mean: b's own kad upkeep may add some)
    assert sent < misses * SENDER_RECORD_BYTES
    assert writes < 2 * misses  # its length and message together


async def test_our_answers_carry_no_signed_peer_record_and_are_taken() -> None:
    """py-libp2p's server put its signed peer record in each answer too (213 bytes of a
    271-byte answer to a miss); ours carry none, and the asker takes them."""
    async with asyncio.timeout(9), hosts(dht_config(1), dht_config(2)) as (a, b):
        record = home_record(ALICE, NOW_MS)
        await a.dht_put(ALICE_KEY, record)
        await link(b, a)
        layer = b._dht
        assert layer is not None and layer._dht is not None
        host, server = layer._dht.host, ID.from_base58(a.peer_id)

        async def ask(key: str) -> Message:
            request = Message(type=Message.MessageType.GET_VALUE, key=key.encode())
            return await _rpc(host, server, request)

        held = await b._bridge.run(ask, ALICE_KEY)
        missed = await b._bridge.run(ask, BOB_KEY)
    assert held.record.value == record and not held.HasField("senderRecord")
    assert not missed.HasField("record") and not missed.HasField("senderRecord")


async def test_our_puts_carry_no_signed_peer_record() -> None:
    """py-libp2p put our signed peer record in each PUT_VALUE and FIND_NODE request too
    (a put sends one of each here), in two writes each; ours carry none, in one write each,
    and the record is stored."""
    puts = 10
    async with asyncio.timeout(9), hosts(dht_config(1), dht_config(2)) as (a, b):
        await link(b, a)
        before = b.wire()
        for n in range(puts):
            user = keypair_from_seed(bytes([n + 1]) * 32)
            await b.dht_put(home_record_key(UserId(user.public)), home_record(user, NOW_MS))
        after = b.wire()
        assert await a.dht_get(home_record_key(UserId(keypair_from_seed(b"\1" * 32).public)))
    sent = after["bytes"][KAD] - before["bytes"].get(KAD, 0)
    writes = after["writes"][KAD] - before["writes"].get(KAD, 0)
    # the two requests of a put, with a record each, were 2 x 213 bytes more (the mean: b's
    # own kad upkeep may add some)
    assert sent < puts * (len(home_record(ALICE, NOW_MS)) + 2 * SENDER_RECORD_BYTES)
    assert writes < 3 * puts


async def test_our_server_checks_a_peers_signed_record_once_while_it_is_unchanged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """py-libp2p's kad server verified the sender's record in every request (an Ed25519
    check and a rewrite of its addresses); ours checks a peer's record once while it stays
    the same and the peerstore holds it (node/p2p/peer_records.py), and answers each."""
    verified: list[bytes] = []
    for module in (kad_utils, pubsub_utils):
        real: Callable[..., Any] = module.consume_envelope

        def counting(data: bytes, domain: str, real: Callable[..., Any] = real) -> Any:
            verified.append(bytes(data))
            return real(data, domain)

        monkeypatch.setattr(module, "consume_envelope", counting)
    async with asyncio.timeout(9), hosts(dht_config(1), dht_config(2)) as (a, b):
        await link(b, a)
        layer = b._dht
        assert layer is not None and layer._dht is not None
        host, server = layer._dht.host, ID.from_base58(a.peer_id)

        record = await b._bridge.run(_record_of, host)

        async def ask(type_: Message.MessageType) -> Message:
            request = Message(type=type_, key=server.to_bytes(), senderRecord=record)
            return await _rpc(host, server, request)

        answers = []
        for type_ in [Message.MessageType.FIND_NODE, Message.MessageType.GET_VALUE] * 3:
            answers.append(await b._bridge.run(ask, type_))
    assert [answer.type for answer in answers] == [
        Message.MessageType.FIND_NODE,
        Message.MessageType.GET_VALUE,
    ] * 3
    assert verified.count(record) <= 1  # the record from b's hello may have been checked


async def _record_of(host: IHost) -> bytes:
    return env_to_send_in_RPC(host)[0]


async def test_a_full_buckets_oldest_peer_is_pinged_only_over_a_connection_held() -> None:
    """SPEC §10.17: a new peer offered to a full bucket pings its oldest (py-libp2p), which
    dialled it when not connected: with connections trimmed, a chain of dials across the mesh.
    Not connected, the oldest is kept and not dialled; connected, it is pinged as before."""
    from libp2p.kad_dht.routing_table import KBucket
    from libp2p.peer.peerinfo import PeerInfo

    async with asyncio.timeout(30), hosts(dht_config(1), dht_config(2), dht_config(3)) as h:
        a, old, new = h
        await a.add_peer_address(old.listen_addrs[0])

        async def offer() -> tuple[bool, list[str]]:
            host = a._require_host()
            bucket = KBucket(host, bucket_size=1)
            bucket.peers[ID.from_base58(old.peer_id)] = (
                PeerInfo(
                    ID.from_base58(old.peer_id),
                    host.get_peerstore().addrs(ID.from_base58(old.peer_id)),
                ),
                0.0,
            )
            added = await bucket.add_peer(PeerInfo(ID.from_base58(new.peer_id), []))
            return added, [p.to_base58() for p in bucket.peer_ids()]

        assert await a._bridge.run(offer) == (False, [old.peer_id])
        assert old.peer_id not in a.connected_peers()  # not dialled
        assert await a.connect(old.listen_addrs[0]) == old.peer_id
        assert await a._bridge.run(offer) == (False, [old.peer_id])  # pinged, answered
