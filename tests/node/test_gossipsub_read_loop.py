"""What py-libp2p lets out of pubsub's read loop ends that peer's stream, not the host
(node/p2p/gossipsub.py `GossipLayer._read_rpcs`, SPEC §14.3), with real hosts on 127.0.0.1."""

from __future__ import annotations

import asyncio
from typing import Any

import libp2p.pubsub.pubsub as pubsub_module
import pytest

from hearthmesh.node.p2p.host import HostConfig, P2PHost
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration

TOPIC = "hearthmesh/test/read-loop"


def _config(n: int) -> HostConfig:
    return HostConfig(identity_seed=bytes([n]) * 32)


async def test_an_error_out_of_pubsubs_read_loop_ends_that_stream_not_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """py-libp2p's peer record lookup raised on a peer whose addresses had expired; out of the
    read loop, that ended the host's whole libp2p run, and the node delivered nothing while its
    API went on acking sends. Here the first RPC b sends a raises (as that lookup did): a still
    gossips with c, which connects after."""
    raised: list[str] = []
    async with (
        asyncio.timeout(30),
        P2PHost(_config(1)) as a,
        P2PHost(_config(2)) as b,
        P2PHost(_config(3)) as c,
    ):
        consume = pubsub_module.maybe_consume_signed_record  # type: ignore[attr-defined]

        def raising_once(msg: Any, host: Any, peer_id: Any) -> bool:
            if not raised and host.get_id().to_base58() == a.peer_id:
                raised.append(peer_id.to_base58())
                raise RuntimeError("py-libp2p raised in the read loop")
            return bool(consume(msg, host, peer_id))

        monkeypatch.setattr(pubsub_module, "maybe_consume_signed_record", raising_once)
        await a.subscribe(TOPIC)
        await b.subscribe(TOPIC)
        await b.connect(a.listen_addrs[0])
        await wait_until(lambda: bool(raised))
        assert raised == [b.peer_id]
        heard = await c.subscribe(TOPIC)
        await c.connect(a.listen_addrs[0])
        await a.wait_for_mesh_peer(TOPIC, c.peer_id)
        await a.publish(TOPIC, b"after the error")
        assert (await heard.get()).data == b"after the error"
