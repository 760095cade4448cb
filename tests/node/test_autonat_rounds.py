"""AutoNAT's rounds while a node's reachability is unknown (SPEC §10.6): a server that has
answered is asked again only when enough verdicts could be held to decide."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from libp2p.peer.id import ID

from hearthmesh.node.p2p import autonat
from hearthmesh.node.p2p.autonat import Reachability, worth_asking
from hearthmesh.node.p2p.host import peer_id_from_seed
from tests.integration.conftest import wait_until
from tests.node.test_libp2p_host import config, hosts, seed

A, B, C = (ID.from_base58(peer_id_from_seed(seed(n))) for n in (1, 2, 3))


def test_too_few_servers_to_decide_are_not_asked_again() -> None:
    assert worth_asking([A], answered={A: True}, confirmations=3) == []
    assert worth_asking([A, B], answered={A: True}, confirmations=3) == [B]
    assert worth_asking([B], answered={A: True, C: False}, confirmations=3) == [B]


def test_every_server_is_asked_once_verdicts_enough_to_decide_could_be_held() -> None:
    assert worth_asking([A, B], answered={A: True}, confirmations=2) == [A, B]
    assert worth_asking([A, B], answered={A: True, C: False}, confirmations=3) == [A, B]
    assert worth_asking([], answered={}, confirmations=3) == []


async def test_a_node_with_one_server_is_dialled_back_once_not_every_round(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With rounds 0.1 s apart while unknown: a, connected to b alone, is dialled back by b
    once (before, once a round); when c connects two verdicts can decide (confirmations 2),
    so that round asks b again and c, and a is public."""
    monkeypatch.setattr(autonat, "UNKNOWN_RETRY_S", 0.05)
    monkeypatch.setattr(autonat, "IDENTIFY_GRACE_S", 0.05)
    dial_backs: Counter[tuple[str, str]] = Counter()
    dial = autonat._FreshDialBack._try_dial

    async def counted(
        self: autonat._FreshDialBack, peer_id: ID, addrs: list[bytes]
    ) -> bytes | None:
        dial_backs[str(self.host.get_id()), str(peer_id)] += 1
        return await dial(self, peer_id, addrs)

    monkeypatch.setattr(autonat._FreshDialBack, "_try_dial", counted)
    quiet = {"autonat_checks": False}  # b and c ask a nothing: only a's rounds are counted
    async with (
        asyncio.timeout(20),
        hosts(config(1, autonat_confirmations=2), config(2, **quiet), config(3, **quiet)) as (
            a,
            b,
            c,
        ),
    ):
        await a.connect(b.listen_addrs[0])
        await wait_until(lambda: dial_backs[b.peer_id, a.peer_id] == 1)
        await asyncio.sleep(1.0)  # some ten rounds
        assert dial_backs[b.peer_id, a.peer_id] == 1
        assert a.reachability is Reachability.UNKNOWN
        await a.connect(c.listen_addrs[0])
        await wait_until(lambda: a.reachability is Reachability.PUBLIC)
        assert dial_backs[c.peer_id, a.peer_id] == 1
        assert dial_backs[b.peer_id, a.peer_id] == 2
