"""The hello's answer comes after the asker's records were taken (SPEC §13.3)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hearthmesh.node.identity.home_records import HomeRecords
from hearthmesh.tools.hostile.peer import HostilePeer

from .conftest import NodeFactory

pytestmark = pytest.mark.integration


async def test_an_asker_holding_the_answer_is_known_to_the_node(
    make_node: NodeFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The conformance suite's newcomer starts a verification with its user as soon as its
    hello is answered; a node that answered before it took the record refused it (404) when
    the taking was slow (under load). Here the taking is made slow on purpose."""
    take = HomeRecords.learn

    async def slow_take(self: HomeRecords, record: bytes) -> None:
        await asyncio.sleep(0.3)
        await take(self, record)

    monkeypatch.setattr(HomeRecords, "learn", slow_take)
    async with asyncio.timeout(20), make_node() as node, HostilePeer() as newcomer:
        await newcomer.connect(node.listen_addrs[0])
        assert await newcomer.announce_home(node.peer_id)
        assert node._services.directory.record(newcomer.user_id) is not None
