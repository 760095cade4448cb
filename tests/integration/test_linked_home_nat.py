"""A linked home behind a NAT (SPEC §10.10): it gives the primary its circuit addresses, the
primary lists them in the user's home record, and another user reaches the linked home
through them once the primary is gone. Real nodes in network namespaces."""

from __future__ import annotations

import asyncio
import secrets
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from hearthmesh.node.clock import SystemClock
from hearthmesh.node.events import MessageReceived
from hearthmesh.node.identity.linking import link_new_device
from hearthmesh.protocol.linking import encode_link_code
from tests.integration.netlab import NetLab, in_netns, require_netlab, start_node

from .conftest import collect, wait_until

pytestmark = pytest.mark.integration

LISTEN = "/ip4/0.0.0.0/tcp/4470"


def circuits_to(peer: str, addrs: tuple[str, ...]) -> list[str]:
    return [a for a in addrs if a.endswith(f"/p2p-circuit/p2p/{peer}")]


async def test_a_linked_home_behind_a_nat_is_reached_through_its_circuit_address(
    tmp_path: Path,
) -> None:
    require_netlab()
    with NetLab() as lab:
        alice_ns, _ = lab.public_host(1)
        relay_ns, _ = lab.public_host(2)
        # NATs that pick a random port per connection: DCUtR cannot go direct either (SPEC
        # §10.16), where a port-keeping one let a punch beside the circuit under test succeed
        # by the time it was checked (paths [relay, "direct"], once in 6 runs at load 52).
        laptop_ns, _ = lab.home_behind_nat(1, random_ports=True)
        bob_ns, _ = lab.home_behind_nat(2, random_ports=True)
        async with asyncio.timeout(25), AsyncExitStack() as stack:
            alice_stack = await stack.enter_async_context(AsyncExitStack())
            alice = await start_node(alice_stack, alice_ns, tmp_path / "alice")
            relay = await start_node(stack, relay_ns, tmp_path / "relay")
            code = encode_link_code(alice.create_link_code())
            with in_netns(laptop_ns):
                linked = await link_new_device(
                    tmp_path / "laptop",
                    code,
                    now_ms=SystemClock().now_ms,
                    rng=secrets.token_bytes,
                    listen_addrs=(LISTEN,),
                )
            bootstrap = (alice.listen_addrs[0], relay.listen_addrs[0])
            # No WebRTC: it would upgrade the relayed connection under test (SPEC §10.11).
            laptop = await start_node(
                stack, laptop_ns, tmp_path / "laptop", *bootstrap, webrtc=False
            )
            bob = await start_node(stack, bob_ns, tmp_path / "bob", *bootstrap, webrtc=False)
            # The laptop reserves on both relays and gives the primary its circuit addresses;
            # the re-issued record reaches bob.
            await wait_until(lambda: len(laptop.relays()) == 2, poll_s=0.1)
            await wait_until(
                lambda: len(circuits_to(linked.peer_id, bob.home_addresses(alice.user_id))) == 2,
                poll_s=0.1,
            )
            assert laptop.user_id == alice.user_id
            room = await bob.open_direct(alice.user_id)
            # The primary is gone: bob reaches the laptop through the relay's circuit.
            await alice_stack.aclose()
            on_laptop = asyncio.create_task(collect(laptop.events(), MessageReceived, 1))
            sent = await bob.send(room, b"for any of alice's homes")
            assert (await on_laptop)[0].envelope.message_id == sent.message_id
            assert bob.peer_paths()[laptop.peer_id] == [relay.peer_id]
