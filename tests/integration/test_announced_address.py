"""A node given an announced address without a peer id (`hearthmesh run --announce
/ip4/.../tcp/N`, as a public node or `simulate --latency`'s delay proxy is given): its home
record names that address with the node's peer id, and a peer learns it there (SPEC §10.14,
§13). The record keeps only addresses that name our id: one announced bare was left out, the
record named none, and a peer could reach a restarted node only once that node dialled it."""

from __future__ import annotations

import asyncio

import pytest

from hearthmesh.protocol.home_record import decode_home_record
from hearthmesh.tools.node_process import free_port

from .conftest import NodeFactory, wait_until

pytestmark = pytest.mark.integration


async def test_an_address_announced_without_a_peer_id_is_in_the_record_peers_learn(
    make_node: NodeFactory,
) -> None:
    bare = f"/ip4/127.0.0.1/tcp/{free_port()}"
    async with (
        asyncio.timeout(60),
        make_node(listen_addrs=(bare,), announce_addrs=(bare,)) as alice,
        make_node() as bob,
    ):
        full = f"{bare}/p2p/{alice.peer_id}"
        await wait_until(lambda: decode_home_record(alice.home_record()).addrs == (full,))
        await bob.connect(full)
        await wait_until(lambda: bob._services.directory.addresses(alice.user_id) == (full,))
