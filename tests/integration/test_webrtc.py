"""WebRTC between two private nodes (SPEC §10.11): homes behind NATs that defeat TCP hole
punching (a random port per TCP connection) but keep UDP ports go over WebRTC once DCUtR has
failed, and chat over WebRTC alone once the relay is gone. Real nodes in network namespaces."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from tests.integration.netlab import NetLab, require_netlab, start_node
from tests.integration.test_hole_punch import chat, paths_become

from .conftest import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


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
            await paths_become(alice, bob, ["webrtc"])
            await paths_become(bob, alice, ["webrtc"])
            await chat(alice, bob)  # over WebRTC alone


RETRIED_UPGRADE_MS = 8_000
"""`webrtc_upgrade_timeout_ms` for the retry test: short enough that the try the block fails
ends 7 s sooner than at the default 15 s, long enough for a later try to connect on a loaded
machine (and two more tries follow)."""

DROP_UDP = """
table inet udpblock {
  chain forward {
    type filter hook forward priority -10; policy accept;
    meta l4proto udp drop
  }
}
"""


async def test_a_webrtc_upgrade_that_failed_is_tried_again_and_connects(tmp_path: Path) -> None:
    """The first upgrade fails (the routers drop every UDP packet for a while); once UDP flows
    again, a later try connects (SPEC §10.11). Retries 1, 2, 5, 10 and 30 s after a failure
    instead of 10 and 30 s (`webrtc_retry_after_ms`): the test lifts the UDP block as soon as
    the first failure is counted, so on a quiet machine the second try connects; on a loaded
    one it may start before the lift and fail (at load 85 a second try 2 s after the first
    did, and with only 5 s more before the third, the test failed at its bound), and the
    tries that follow connect. Each try is bounded by RETRIED_UPGRADE_MS instead of 15 s:
    the first, which UDP's block fails, ends sooner."""
    require_netlab()
    with NetLab() as lab:
        async with asyncio.timeout(120), AsyncExitStack() as stack:  # ~35 s on a quiet machine
            relay_ns, _ = lab.public_host(1)
            homes_ns = [lab.home_behind_nat(n, random_tcp_ports=True)[0] for n in (1, 2)]
            for number in (1, 2):
                lab.nft(lab.router(number), DROP_UDP)
            relay = await start_node(stack, relay_ns, tmp_path / "relay")
            alice, bob = [
                await start_node(
                    stack,
                    ns,
                    tmp_path / name,
                    relay.listen_addrs[0],
                    webrtc_retry_after_ms=(1_000, 2_000, 5_000, 10_000, 30_000),
                    webrtc_upgrade_timeout_ms=RETRIED_UPGRADE_MS,
                )
                for ns, name in zip(homes_ns, ("alice", "bob"), strict=True)
            ]
            await wait_until(
                lambda: any("/p2p-circuit/" in a for a in alice.home_addresses(bob.user_id)),
                poll_s=0.1,
            )
            await chat(alice, bob)  # through the relay
            offerer, other = sorted((alice, bob), key=lambda home: home.peer_id)
            await wait_until(lambda: offerer.hole_punches().tried.get("webrtc", 0) >= 1, poll_s=0.2)
            assert offerer.hole_punches().direct.get("webrtc") is None
            for number in (1, 2):
                lab.nft(lab.router(number), "delete table inet udpblock")
            await wait_until(lambda: "webrtc" in offerer.peer_paths().get(other.peer_id, []))
            # Counted once the offerer's upgrade returns, just after the connection appears.
            await wait_until(lambda: offerer.hole_punches().direct.get("webrtc") == 1)
            assert offerer.hole_punches().tried["webrtc"] >= 2
            await chat(alice, bob)
