"""DCUtR (SPEC §10.9): two homes behind NATs that chat through a public relay go direct by hole
punching where the NATs keep a connection's source port, and stay relayed (and still deliver)
where the NATs pick a random port per connection. Real nodes in network namespaces."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from hearthmesh.node.events import MessageReceived
from hearthmesh.node.node import Node
from tests.integration.netlab import NetLab, require_netlab, start_node

from .conftest import acks_of, collect, wait_until

pytestmark = pytest.mark.integration

MESSAGES = 10
DEADLINE_S = 90
"""Each test takes ~5 s on a quiet machine and 24-36 s at load 25 (a relay and two homes in
namespaces, punching, two chats): 30 s timed out under load."""


async def chat(alice: Node, bob: Node) -> None:
    """Alice sends MESSAGES to bob; each arrives once and is acked by bob's home."""
    room = await alice.open_direct(bob.user_id)
    received = asyncio.create_task(collect(bob.events(), MessageReceived, MESSAGES))
    acked = alice.events()
    sent = [await alice.send(room, f"hello {i}".encode()) for i in range(MESSAGES)]
    assert [e.envelope.message_id for e in await received] == [e.message_id for e in sent]
    assert {e.recipient for e in await acks_of(acked, sent)} == {bob.user_id}


PATHS_BOUND_S = 30
"""Bound on a home's paths to a peer settling (a closed relay leaves them within seconds)."""


async def paths_become(home: Node, peer: Node, paths: list[str]) -> None:
    """Wait until `home` reaches `peer` by `paths` alone; past PATHS_BOUND_S fail naming the
    paths it has, so a flake says which connection was missing or left over."""
    try:
        async with asyncio.timeout(PATHS_BOUND_S):
            await wait_until(lambda: home.peer_paths().get(peer.peer_id) == paths)
    except TimeoutError:
        pytest.fail(
            f"{home.peer_id[-8:]} reaches {peer.peer_id[-8:]} by"
            f" {home.peer_paths().get(peer.peer_id)}, not {paths} (punches: {home.hole_punches()})"
        )


async def natted_pair(
    stack: AsyncExitStack,
    lab: NetLab,
    tmp_path: Path,
    *,
    random_ports: bool,
    relay_stack: AsyncExitStack | None = None,
    **home_settings: Any,
) -> tuple[Node, Node, Node]:
    """A public relay (stopped with `relay_stack` if given) and two homes behind NATs (with
    `home_settings`) that have each other's circuit addresses."""
    relay_ns, _ = lab.public_host(1)
    alice_ns, _ = lab.home_behind_nat(1, random_ports=random_ports)
    bob_ns, _ = lab.home_behind_nat(2, random_ports=random_ports)
    relay = await start_node(relay_stack or stack, relay_ns, tmp_path / "relay")
    alice, bob = [
        await start_node(stack, ns, tmp_path / name, relay.listen_addrs[0], **home_settings)
        for ns, name in ((alice_ns, "alice"), (bob_ns, "bob"))
    ]
    await wait_until(
        lambda: any("/p2p-circuit/" in a for a in alice.home_addresses(bob.user_id)),
        poll_s=0.1,
    )
    return relay, alice, bob


@pytest.mark.slow
async def test_homes_behind_port_keeping_nats_go_direct_by_hole_punching(tmp_path: Path) -> None:
    require_netlab()
    with NetLab() as lab:
        async with asyncio.timeout(DEADLINE_S), AsyncExitStack() as stack:
            relay_stack = await stack.enter_async_context(AsyncExitStack())
            _, alice, bob = await natted_pair(
                stack, lab, tmp_path, random_ports=False, relay_stack=relay_stack
            )
            await chat(alice, bob)
            await wait_until(lambda: "direct" in alice.peer_paths().get(bob.peer_id, []))
            await wait_until(lambda: "direct" in bob.peer_paths().get(alice.peer_id, []))
            # Counted once the punching session ends (just after the connection appears).
            await wait_until(
                lambda: any(home.hole_punches().direct.get("tcp") for home in (alice, bob))
            )
            # The relay goes away: the chat goes on over the punched connection alone.
            await relay_stack.aclose()
            await paths_become(alice, bob, ["direct"])
            await chat(alice, bob)


@pytest.mark.slow
async def test_homes_behind_random_port_nats_stay_relayed_and_still_deliver(
    tmp_path: Path,
) -> None:
    require_netlab()
    with NetLab() as lab:
        async with asyncio.timeout(DEADLINE_S), AsyncExitStack() as stack:
            relay, alice, bob = await natted_pair(stack, lab, tmp_path, random_ports=True)
            await chat(alice, bob)
            # Wait for a punch to end (it fails within PUNCH_WINDOW_S), then check the path.
            await wait_until(lambda: alice.hole_punches().tried.get("tcp", 0) >= 1, poll_s=0.1)
            assert alice.hole_punches().direct == {}
            assert alice.peer_paths()[bob.peer_id] == [relay.peer_id]
            await chat(alice, bob)
