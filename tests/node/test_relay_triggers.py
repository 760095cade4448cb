"""A private node's relay reservations (SPEC §10.7, node/p2p/host.py and circuit_relay.py): no
trigger is lost, between real hosts on this machine. The node is made private by announcing an
address nobody listens on (AutoNAT's dial-back fails there) and asking for the verdict itself."""

from __future__ import annotations

import asyncio

from hearthmesh.node.p2p.autonat import Reachability
from hearthmesh.node.p2p.host import HostConfig, P2PHost
from tests.integration.conftest import wait_until
from tests.node.test_libp2p_host import config, hosts

NOBODY_LISTENS = "/ip4/127.0.0.1/tcp/1"  # a dial-back here is refused: we are "private"


def relay_config(n: int) -> HostConfig:
    return config(n, webrtc=False, autonat_checks=False)


def private_config(n: int, **kwargs: object) -> HostConfig:
    return config(
        n,
        webrtc=False,
        autonat_checks=False,  # the test asks for the verdict, once
        autonat_confirmations=1,
        announce_addrs=[NOBODY_LISTENS],
        **kwargs,
    )


async def reserved_when_private(home: P2PHost, relay: P2PHost) -> None:
    """`home`, connected to `relay` alone, asks until it is found private (identify may not
    yet have told that `relay` serves AutoNAT), then reserves on it."""
    while await home.check_reachability() is not Reachability.PRIVATE:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    await wait_until(lambda: home.relays() == [relay.peer_id])


async def test_a_relay_that_connects_while_a_reservation_is_in_flight_is_reserved_on() -> None:
    """The verdict starts a pass; the second relay connects while the pass is in flight (held
    in its ranking, after it listed its candidates). Before: that trigger was dropped
    (`_reserving`), the pass reserved on the first relay only, and nothing ever reserved on the
    second (the loaded NAT test's `len(laptop.relays()) == 2` that timed out)."""
    ranking, release = asyncio.Event(), asyncio.Event()

    async def held_once(candidates: list[str]) -> list[str]:
        if not ranking.is_set():
            ranking.set()
            await release.wait()
        return candidates

    async with (
        asyncio.timeout(40),  # a guard only: the waits below are conditions
        hosts(relay_config(1), relay_config(2), private_config(3, relay_rank=held_once)) as (
            first,
            second,
            home,
        ),
    ):
        assert await home.connect(first.listen_addrs[0]) == first.peer_id
        while await home.check_reachability() is not Reachability.PRIVATE:  # noqa: ASYNC110
            await asyncio.sleep(0.1)  # identify has not yet told that `first` serves AutoNAT
        await ranking.wait()  # the verdict's pass is in flight, its candidates listed
        assert await home.connect(second.listen_addrs[0]) == second.peer_id
        await wait_until(lambda: second.peer_id in home.connected_peers())  # its trigger ran
        release.set()
        await wait_until(lambda: home.relays() == sorted([first.peer_id, second.peer_id]))


async def test_a_relay_whose_identify_is_still_running_is_reserved_on() -> None:
    """A private node holding one reservation meets a second relay: the trigger comes with
    the connection, before identify tells the relay serves hop. Before: the pass skipped it
    (protocols unknown) and nothing reserved again when identify finished."""
    async with (
        asyncio.timeout(40),
        hosts(relay_config(4), relay_config(5), private_config(6)) as (first, second, home),
    ):
        assert await home.connect(first.listen_addrs[0]) == first.peer_id
        await reserved_when_private(home, first)
        assert await home.connect(second.listen_addrs[0]) == second.peer_id
        await wait_until(lambda: home.relays() == sorted([first.peer_id, second.peer_id]))


async def test_a_relay_that_dialled_us_is_named_by_the_address_it_listens_on() -> None:
    """The relay dialled the home, so the home's connection to it ends at the relay's
    ephemeral port. Before: the circuit address named that port, nothing listened there, and a
    peer dialling the home through it failed (12 of 50 homes' records in a 50-node run). Now it
    names the relay's listen address, and a third peer reaches the home through it."""
    async with (
        asyncio.timeout(40),
        hosts(relay_config(7), private_config(8), relay_config(9)) as (relay, home, peer),
    ):
        assert await relay.connect(home.listen_addrs[0]) == home.peer_id
        await reserved_when_private(home, relay)
        circuit = home.listen_addrs[0]
        assert circuit == f"{relay.listen_addrs[0]}/p2p-circuit/p2p/{home.peer_id}"
        await peer.connect(relay.listen_addrs[0])
        assert await peer.connect(circuit) == home.peer_id
        assert peer.paths_of(home.peer_id) == [relay.peer_id]


async def test_a_stop_cancels_a_reservation_pass_in_flight() -> None:
    """A pass can wait 10 s on a relay (its identify, then its answer: IDENTIFY_WAIT_S,
    RESERVE_TIMEOUT_S); a stop cancels it. Before, the stop waited the pass out: here, held in
    its ranking, forever; the test above, whose relay dialled the home, took 10.2 s in 10 of
    11 runs of this file (0.3 s since)."""
    ranking = asyncio.Event()

    async def held(candidates: list[str]) -> list[str]:
        ranking.set()
        await asyncio.Future()  # a pass that does not end by itself
        return candidates

    async with (
        asyncio.timeout(40),  # a guard only: the stop below either ends or never does
        hosts(relay_config(10), private_config(11, relay_rank=held)) as (relay, home),
    ):
        assert await home.connect(relay.listen_addrs[0]) == relay.peer_id
        while await home.check_reachability() is not Reachability.PRIVATE:  # noqa: ASYNC110
            await asyncio.sleep(0.1)  # identify has not yet told that `relay` serves AutoNAT
        await ranking.wait()  # the verdict's pass is in flight
        await home.aclose()
        assert home.relays() == []
