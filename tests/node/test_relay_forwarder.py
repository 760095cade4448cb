"""RelayForwarder (node/delivery/relay.py): a recipient no record names is not tried (SPEC
§11.2.3), with a real LMDB store and a real host for its peer links."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hearthmesh.node.delivery.peer_link import PeerLinks
from hearthmesh.node.delivery.relay import RelayForwarder
from hearthmesh.node.identity.home_directory import HomeDirectory
from hearthmesh.protocol.home_record import issue_home_record
from hearthmesh.protocol.identity import DeviceId, UserId, issue_certificate, keypair_from_seed
from hearthmesh.storage.async_store import AsyncStore
from hearthmesh.storage.lmdb_store import LmdbStore
from tests.integration.conftest import wait_until
from tests.node.test_libp2p_host import config, hosts
from tests.storage.helpers import PEER, make_envelope

from ..conftest import FakeClock

pytestmark = pytest.mark.integration

POLL_MS = 20


async def test_a_recipient_no_record_names_is_tried_only_once_its_record_comes(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Bob's envelope is held; no record of bob is known, so neither the polls nor the wakes
    for other users read it (each try was a store write batch: a home relaying for a group's
    ~1,000 absent members spent its loop on them every second). His record comes: tried at
    once, and at each poll while his home is out of reach; the envelope is still held."""
    bob_key = keypair_from_seed(b"bob".ljust(32, b"u"))
    bob = UserId(bob_key.public)
    device_key = keypair_from_seed(b"bob".ljust(32, b"d"))
    async with (
        asyncio.timeout(10),
        hosts(config(1)) as (host,),
        AsyncStore(LmdbStore(tmp_path / "db")) as store,
    ):
        directory = HomeDirectory()
        relay = RelayForwarder(
            store=store,
            links=PeerLinks(host, ack_timeout_s=1.0),
            directory=directory,
            clock=clock,
            poll_ms=POLL_MS,
        )
        envelope = make_envelope()
        assert await store.run(
            store.store.relay_put,
            bob,
            envelope,
            peer=PEER,
            known=True,
            now_ms=clock.now_ms(),
            ttl_ms=3_600_000,
        )
        task = asyncio.create_task(relay.run())
        try:
            relay.hold({bob})
            for n in range(10):  # other users' records coming, and polls
                relay.wake((UserId(bytes([n]) * 32),))
                await asyncio.sleep(POLL_MS / 1000)
            assert relay.tries == 0
            record = issue_home_record(
                bob_key,
                issued_ms=clock.now_ms(),
                homes=("12D3KooWBobHome",),
                addrs=(),
                devices=(issue_certificate(bob_key, DeviceId(device_key.public), created_ms=0),),
            )
            assert await store.run(directory.learn_verified, store.store, record)
            relay.wake((bob,))
            await wait_until(lambda: relay.tries >= 2)  # at once, then at the polls
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert bob in relay.waiting
        held = await store.read(store.store.relay_take, bob, now_ms=clock.now_ms(), limit=10)
        assert [e.message_id for e in held] == [envelope.message_id]
