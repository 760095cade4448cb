"""STUN in the lab (SPEC §10.16): what a STUN server tells a home behind each kind of NAT (one
UDP socket asks two servers on two public hosts where they see it), and WebRTC between homes
whose NATs shift UDP ports, which connects only when ICE asks a STUN server. Real kernel NAT
(nftables) in network namespaces, a real STUN server (`hearthmesh.tools.stun`), real nodes."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from hearthmesh.tools.netlab import PUBLIC_NET, UDP_SHIFT
from hearthmesh.tools.stun import STUN_PORT, StunServer, stun_mapped_address, udp_socket_in
from tests.integration.netlab import NetLab, require_netlab, start_node
from tests.integration.test_hole_punch import chat, paths_become

from .conftest import wait_until

pytestmark = pytest.mark.integration

FAILING_UPGRADE_MS = 5_000
"""`webrtc_upgrade_timeout_ms` where a test waits for WebRTC to fail: ICE between NATs that
defeat it gives up only at the upgrade's bound (15 s by default), which the test waited out."""


@contextmanager
def udp_socket(ns: str) -> Iterator[socket.socket]:
    """A UDP socket on a free port in namespace `ns`."""
    sock = udp_socket_in(ns)
    try:
        yield sock
    finally:
        sock.close()


async def stun_servers(stack: AsyncExitStack, lab: NetLab, count: int) -> list[tuple[str, int]]:
    """`count` STUN servers, each on a public host of its own; their addresses."""
    servers = []
    for number in range(1, count + 1):
        ns, address = lab.public_host(number)
        transport = await StunServer.serve_in(ns, address)
        stack.callback(transport.close)
        servers.append((address, STUN_PORT))
    return servers


@pytest.mark.parametrize(
    ("nat", "mapping"),
    [
        ({}, "keeps the port"),
        ({"random_ports": True}, "a new port per destination"),
        ({"shifted_udp_ports": True}, "one other port for every destination"),
    ],
)
async def test_stun_shows_how_each_nat_maps_one_socket_toward_two_servers(
    nat: dict[str, Any], mapping: str
) -> None:
    require_netlab()
    with NetLab() as lab:
        async with asyncio.timeout(30), AsyncExitStack() as stack:
            servers = await stun_servers(stack, lab, 2)
            home_ns, _ = lab.home_behind_nat(1, **nat)
            with udp_socket(home_ns) as sock:
                local_port = sock.getsockname()[1]
                seen = [await stun_mapped_address(sock, server) for server in servers]
            (first_ip, first_port), (second_ip, second_port) = seen
            assert first_ip == second_ip == f"{PUBLIC_NET}.101"  # the router's WAN address
            if mapping == "keeps the port":
                assert first_port == second_port == local_port
            elif mapping == "one other port for every destination":
                assert first_port == second_port == local_port + UDP_SHIFT
            else:  # symmetric: what one server learns is no use toward another peer
                assert first_port != second_port


@pytest.mark.parametrize("with_stun", [True, False], ids=["stun", "no_stun"])
@pytest.mark.slow
async def test_webrtc_through_nats_that_shift_ports_connects_only_with_a_stun_server(
    tmp_path: Path, with_stun: bool
) -> None:
    """Behind NATs that map each UDP port to another one (the same for every destination) and
    pick random TCP ports: the punch fails, and WebRTC's predicted candidate (observed IP, host
    port) is wrong; a STUN server's answer is right, and the homes chat over WebRTC alone."""
    require_netlab()
    with NetLab() as lab:
        async with asyncio.timeout(120), AsyncExitStack() as stack:
            (stun,) = await stun_servers(stack, lab, 1)
            relay_stack = await stack.enter_async_context(AsyncExitStack())
            relay_ns, _ = lab.public_host(2)
            alice_ns, _ = lab.home_behind_nat(1, shifted_udp_ports=True)
            bob_ns, _ = lab.home_behind_nat(2, shifted_udp_ports=True)
            urls = (f"stun:{stun[0]}:{stun[1]}",) if with_stun else ()
            # Without STUN the test waits for the upgrade to fail, which ICE does only at the
            # upgrade's bound (15 s by default): 5 s is plenty on a loopback lab.
            timeout = {} if with_stun else {"webrtc_upgrade_timeout_ms": FAILING_UPGRADE_MS}
            relay = await start_node(relay_stack, relay_ns, tmp_path / "relay")
            alice, bob = [
                await start_node(
                    stack, ns, tmp_path / name, relay.listen_addrs[0], stun_servers=urls, **timeout
                )
                for ns, name in ((alice_ns, "alice"), (bob_ns, "bob"))
            ]
            await wait_until(
                lambda: any("/p2p-circuit/" in a for a in alice.home_addresses(bob.user_id)),
                poll_s=0.1,
            )
            await chat(alice, bob)  # through the relay
            offerer, other = sorted((alice, bob), key=lambda home: home.peer_id)
            # The offerer counts its upgrade when it ends (connected, or failed at its bound).
            await wait_until(lambda: offerer.hole_punches().tried.get("webrtc", 0) >= 1)
            assert offerer.hole_punches().direct.get("tcp") is None  # TCP punching failed
            if not with_stun:
                assert offerer.hole_punches().direct.get("webrtc") is None
                # Relayed: a loaded machine may have closed the circuit's connection a moment
                # (its ping went unanswered) and the next send dials it again.
                await wait_until(lambda: offerer.peer_paths().get(other.peer_id) == [relay.peer_id])
                await chat(alice, bob)  # still delivered, relayed
                return
            # A try that a loaded machine let time out is made again (SPEC §10.11).
            await wait_until(lambda: offerer.hole_punches().direct.get("webrtc") == 1)
            await relay_stack.aclose()
            await paths_become(alice, bob, ["webrtc"])
            await paths_become(bob, alice, ["webrtc"])
            await chat(alice, bob)  # over WebRTC alone
