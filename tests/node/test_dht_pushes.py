"""Kad requests and records pushed to our DHT server (node/p2p/kad_requests.py, SPEC §13.4.1,
§11.6.1): real hosts on 127.0.0.1, the kit (`HostilePeer.push_kad`) writing each request raw
on a real kad stream to a host serving the home namespace."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from pathlib import Path

import pytest
from libp2p.kad_dht.pb.kademlia_pb2 import Message
from libp2p.utils.varint import encode_uvarint, encode_varint_prefixed

from hearthmesh.node.node import Node
from hearthmesh.node.p2p import kad_requests
from hearthmesh.node.p2p.dht import KAD_PROTOCOL
from hearthmesh.node.p2p.host import P2PHost
from hearthmesh.node.p2p.kad_requests import encode_put_value
from hearthmesh.protocol.errors import ErrorCode
from hearthmesh.protocol.hlc import MAX_DRIFT_MS
from hearthmesh.protocol.home_record import (
    decode_home_record,
    encode_home_record,
    issue_home_record,
)
from hearthmesh.protocol.identity import DeviceId, issue_certificate
from hearthmesh.tools.hostile.peer import HostilePeer
from tests.integration.conftest import node_config
from tests.node.refusals import RefusalLog
from tests.node.test_libp2p_dht import (
    ALICE,
    ALICE_KEY,
    BOB,
    DEVICE,
    NOW_MS,
    dht_config,
    home_record,
)

pytestmark = pytest.mark.integration


def _alice_with(*, expires_ms: int | None = None, forged_cert: bool = False) -> bytes:
    cert = issue_certificate(
        ALICE, DeviceId(DEVICE.public), created_ms=NOW_MS - 10_000, expires_ms=expires_ms
    )
    if forged_cert:
        cert = dataclasses.replace(cert, signature=bytes(64))
    return encode_home_record(
        issue_home_record(
            ALICE, issued_ms=NOW_MS + 5, homes=("12D3KooWHome",), addrs=(), devices=(cert,)
        )
    )


NEWEST = home_record(ALICE, NOW_MS)
HELD = home_record(ALICE, NOW_MS - 1_000)
"""The record the victim holds before the pushes; NEWEST replaces it."""
FORGED = encode_home_record(
    dataclasses.replace(decode_home_record(home_record(ALICE, NOW_MS + 7)), signature=bytes(64))
)

PUSHES: list[tuple[str, bytes, ErrorCode | None]] = [
    ("a newer valid record", encode_put_value(ALICE_KEY, NEWEST), None),
    ("an older record than the one held", encode_put_value(ALICE_KEY, HELD), None),
    ("bytes that are no kad message", encode_varint_prefixed(b"\x0fgarbage"), ErrorCode.MALFORMED),
    (
        "a length over the bound",
        encode_uvarint(kad_requests.MAX_REQUEST_BYTES + 1) + b"\0" * 64,
        ErrorCode.TOO_LARGE,
    ),
    (
        "a PUT_VALUE without a record",
        encode_varint_prefixed(
            Message(type=Message.MessageType.PUT_VALUE, key=ALICE_KEY.encode()).SerializeToString()
        ),
        ErrorCode.MALFORMED,
    ),
    (
        "a record whose key is not the message's",
        encode_put_value(ALICE_KEY, NEWEST, record_key=ALICE_KEY[:-1] + "A"),
        ErrorCode.MALFORMED,
    ),
    (
        "a key outside the home namespace",
        encode_put_value("/pk/abc", NEWEST),
        ErrorCode.INVALID_IDENTIFIER,
    ),
    (
        "a home key that names no user",
        encode_put_value("/home/abc", NEWEST),
        ErrorCode.INVALID_IDENTIFIER,
    ),
    ("a value that is no home record", encode_put_value(ALICE_KEY, b"junk"), ErrorCode.MALFORMED),
    (
        "a value over a record's bound",
        encode_put_value(ALICE_KEY, b"\0" * 13_000),
        ErrorCode.TOO_LARGE,
    ),
    ("a record signed by no one", encode_put_value(ALICE_KEY, FORGED), ErrorCode.BAD_SIGNATURE),
    (
        "a forged certificate",
        encode_put_value(ALICE_KEY, _alice_with(forged_cert=True)),
        ErrorCode.BAD_CERTIFICATE,
    ),
    (
        "bob's record under alice's key",
        encode_put_value(ALICE_KEY, home_record(BOB, NOW_MS + 9)),
        ErrorCode.NOT_AUTHORIZED,
    ),
    (
        "a certificate expired by our clock",
        encode_put_value(ALICE_KEY, _alice_with(expires_ms=NOW_MS - 1)),
        None,
    ),
    (
        "a record issued ahead of our clock",
        encode_put_value(ALICE_KEY, home_record(ALICE, NOW_MS + MAX_DRIFT_MS + 1_000)),
        None,
    ),
    ("bytes that are no kad message, again", encode_varint_prefixed(b"\x0f"), ErrorCode.MALFORMED),
]
"""In order: each charged push's code, None for one an honest peer may send. The last is
charged, so once its charge is in, every charge of the pushes before it is in too."""


async def _reported(refusals: list[tuple[str, ErrorCode, bool]], count: int) -> None:
    """Until `count` refusals were reported, for at most 10 s (a missing charge then shows in
    the test's assertion)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10):
            while len(refusals) < count:  # noqa: ASYNC110 (the report is a call, not an event)
                await asyncio.sleep(0.02)


async def test_a_push_no_honest_peer_sends_is_charged_an_older_or_expired_one_is_not() -> None:
    """SPEC §13.4.1: every push that cannot come from an honest peer costs the kit a whole
    frame with its code, in the order pushed; an older record, a certificate expired by our
    clock and a record from a clock ahead cost nothing. Only the newer valid record is
    answered, and it is what the victim holds afterwards: nothing refused was stored."""
    log = RefusalLog()
    refusals = log.seen
    async with asyncio.timeout(30), P2PHost(dht_config(1)) as victim, HostilePeer() as kit:
        victim.set_refusal_handler(log)
        await victim.dht_put(ALICE_KEY, HELD)  # no peer yet: held by the victim alone
        await kit.connect(victim.listen_addrs[0])
        outcomes = [
            (name, (await kit.push_kad(victim.peer_id, raw)).outcome) for name, raw, _ in PUSHES
        ]
        expected = [(kit.peer_id, code, True) for _, _, code in PUSHES if code is not None]
        await _reported(refusals, len(expected))
        assert refusals == expected
        assert log.protocols == {KAD_PROTOCOL}
        assert outcomes == [
            (name, "answered" if name == "a newer valid record" else "closed")
            for name, _, _ in PUSHES
        ]
        assert await victim.dht_get(ALICE_KEY) == NEWEST


async def test_a_nodes_kad_push_charge_reaches_its_peer_standing(tmp_path: Path) -> None:
    """Node level: a record no honest peer pushes costs the kit a whole frame in the node's
    `PeerStanding` (the DHT layer's charge goes through the host's refusal handler)."""
    async with (
        asyncio.timeout(20),
        Node(node_config(tmp_path / "victim")) as victim,
        HostilePeer() as kit,
    ):
        await kit.connect(victim.listen_addrs[0])
        assert (
            await kit.push_kad(victim.peer_id, encode_put_value(ALICE_KEY, FORGED))
        ).outcome == "closed"
        while victim.peer_points(kit.peer_id) == 0:  # noqa: ASYNC110 - a call, no event
            await asyncio.sleep(0.02)
        assert victim.peer_points(kit.peer_id) <= 25
