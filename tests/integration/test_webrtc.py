"""WebRTC between two private nodes (SPEC §10.11): homes behind NATs that defeat TCP hole
punching (a random port per TCP connection) but keep UDP ports go over WebRTC once DCUtR has
failed, and chat over WebRTC alone once the relay is gone. Real nodes in network namespaces."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from tests.integration.netlab import NetLab, require_netlab, start_node
from tests.integration.test_hole_punch import chat

from .conftest import wait_until

pytestmark = pytest.mark.integration


async def test_homes_whose_nats_defeat_tcp_punching_chat_over_webrtc_alone(
    tmp_path: Path,
) -> None:
    require_netlab()
    with NetLab() as lab:
        async with asyncio.timeout(90), AsyncExitStack() as stack:  # ~25 s on a quiet machine
            relay_stack = await stack.enter_async_context(AsyncExitStack())
            relay_ns, _ = lab.public_host(1)
            alice_ns, _ = lab.home_behind_nat(1, random_tcp_ports=True)
            bob_ns, _ = lab.home_behind_nat(2, random_tcp_ports=True)
            relay = await start_node(relay_stack, relay_ns, tmp_path / "relay")
            alice = await start_node(stack, alice_ns, tmp_path / "alice", relay.listen_addrs[0])
            bob = await start_node(stack, bob_ns, tmp_path / "bob", relay.listen_addrs[0])
            await wait_until(
                lambda: any("/p2p-circuit/" in a for a in alice.home_addresses(bob.user_id)),
                poll_s=0.1,
            )
            await chat(alice, bob)  # through the relay
            await wait_until(lambda: "webrtc" in alice.peer_paths().get(bob.peer_id, []))
            await wait_until(lambda: "webrtc" in bob.peer_paths().get(alice.peer_id, []))
            punches = [home.hole_punches() for home in (alice, bob)]
            # Counted once the offerer's upgrade returns, just after the connection appears.
            await wait_until(lambda: sum(p.direct.get("webrtc", 0) for p in punches) == 1)
            assert not any(p.direct.get("tcp") for p in punches)  # TCP punching failed

            await relay_stack.aclose()
            await wait_until(lambda: alice.peer_paths().get(bob.peer_id) == ["webrtc"])
            await wait_until(lambda: bob.peer_paths().get(alice.peer_id) == ["webrtc"])
            await chat(alice, bob)  # over WebRTC alone
