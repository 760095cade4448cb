"""A home's address that answered a dial is not cut at the dial's bound while its handshakes go
on (SPEC §10.8), with real homes on 127.0.0.1, bob's behind a TCP delay proxy: at a 50-home
group's formation the creator's first dials to ~20 homes were all cut at the 4 s bound, their
handshakes slow under load, and their deliveries parked for 40 s (SPEC §20.6).
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from hearthmesh.node.delivery import peer_link
from hearthmesh.tools.simulate.delay_proxy import DelayProxy

from .conftest import NodeFactory, free_port

pytestmark = pytest.mark.integration

BOUND_S = 0.5
"""The dial's bound here: the proxy answers at once, the handshakes take several round trips
of `2 * DELAY_S` each."""
DELAY_S = 0.4
AFTER_S = 1.0
"""`AFTER_ANSWER_S` here: how long an answered dial's handshakes may take."""


async def test_an_address_that_answered_is_dialled_past_the_bound_to_its_handshakes_end(
    make_node: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peer_link, "REACH_DIAL_TIMEOUT_S", BOUND_S)
    port = free_port()
    proxy = DelayProxy(("127.0.0.1", 0), ("127.0.0.1", port), lambda: DELAY_S)
    await proxy.start()
    try:
        async with (
            asyncio.timeout(30),
            make_node("alice") as alice,
            make_node("bob", listen_addrs=(f"/ip4/127.0.0.1/tcp/{port}",)) as bob,
        ):
            proxied = f"/ip4/127.0.0.1/tcp/{proxy.port}/p2p/{bob.peer_id}"
            assert await alice._services.links.reach(bob.peer_id, (proxied,), retry_now=True)
            assert bob.peer_id in alice._host.connected_peers()
            assert proxy.accepted == 1  # one dial, through the proxy, not cut and made again
    finally:
        proxy.close()


async def test_an_address_that_does_not_answer_is_cut_at_the_bound(
    make_node: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peer_link, "REACH_DIAL_TIMEOUT_S", BOUND_S)
    with socket.socket() as silent, socket.socket() as first:
        silent.bind(("127.0.0.1", 0))
        silent.listen(0)
        first.connect(silent.getsockname())  # its queue full, it drops every later SYN
        async with asyncio.timeout(30), make_node("alice") as alice, make_node("bob") as bob:
            address = f"/ip4/127.0.0.1/tcp/{silent.getsockname()[1]}/p2p/{bob.peer_id}"
            async with asyncio.timeout(BOUND_S * 6):  # libp2p alone retries it for 13-38 s
                assert not await alice._services.links.reach(bob.peer_id, (address,))


async def test_an_address_that_answered_but_never_ends_its_handshakes_is_cut_after_the_answer(
    make_node: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listener that accepts the TCP connection and never says a word (no multistream, no
    Noise): the dial answered, so the bound moved to `AFTER_ANSWER_S` past it (here 1 s), and
    the dial is cut there rather than left to libp2p."""
    monkeypatch.setattr(peer_link, "REACH_DIAL_TIMEOUT_S", BOUND_S)
    accepted: list[asyncio.StreamWriter] = []

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # held open, never written to

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncio.timeout(30), make_node("alice") as alice, make_node("bob") as bob:
            alice._host._dial_answers._after_answer_s = AFTER_S
            address = f"/ip4/127.0.0.1/tcp/{port}/p2p/{bob.peer_id}"
            async with asyncio.timeout(AFTER_S * 8):
                assert not await alice._services.links.reach(bob.peer_id, (address,))
            assert len(accepted) == 1  # it answered: the first bound did not cut it
    finally:
        for writer in accepted:
            writer.close()
        server.close()
