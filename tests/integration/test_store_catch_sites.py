"""The background paths that catch errors broadly let a store that failed through (SPEC
§11.8.5): each site, met under a running node whose store failed, fail-stops the node (failed,
one ERROR naming the cause) rather than logging and going on.

One table, one test: a peer node `a` is started once, and each row starts a node `b` of its
own (a fail-stop ends it), closes its store under it (`AsyncStore.aclose`: every read after it
raises a real `StorageError`, as a store that failed does), sets its path off the way the node
itself does, and checks that the fault the node stopped for passed through that site. The
other services' timers are put off (`QUIET`), so nothing else meets the store first. Each row's
site alone stands between the error and a node that logs and goes on: with its `store_failed`
re-raise removed, its row fails (checked once per site; see the commit that added this file).

Sites not in the table, and why:
- `HomeLookups`' bootstrap dial (`Node._bootstrap`) and a group invite's home (`groups._ask_any`)
  meet the store only through a greeting (`greetings.wait`), whose own task re-raises first
  (the `greeting` row): their re-raise is a second line that no test can tell from the first.
- The receipts' `run` needs the client API: tests/integration/test_store_catches.py.
- The feed's `_frames`: the feed reads its page of the arrival log before it renders, so a
  closed store stops it at that read; reaching the site takes a store that fails between two
  reads, which closing it cannot make.
- `_learn_rooms_quietly`, `_give_addresses_to_primary` and presence's `_listen` need a linked
  home or a formed gossip mesh: some seconds and more node starts each for a two-line pattern
  the rows below already cover.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hearthmesh.node.delivery.inbox import StoreOutcome
from hearthmesh.node.node import Node
from hearthmesh.protocol.envelope import RoomId
from hearthmesh.protocol.errors import HearthError
from hearthmesh.tools.hostile.peer import HostilePeer

from .conftest import node_config
from .test_store_catches import QUIET, _frames

pytestmark = pytest.mark.integration

Trigger = Callable[[Node, Node, HostilePeer], Awaitable[None]]
"""Sets a row's path off on `b` (its store closed), with `a` or the kit as the peer it may
need."""


async def _a_dials_b(a: Node, b: Node, kit: HostilePeer) -> None:
    """a dials b: b answers a's hello (`HelloService.serve`) and greets a back; the records
    each carries are taken into b's store."""
    with contextlib.suppress(HearthError):  # b may reset the stream as it fails
        await a.connect(b.listen_addrs[0] + f"/p2p/{b.peer_id}")


async def _b_dials_a_greeter(a: Node, b: Node, kit: HostilePeer) -> None:
    """b's host dials a peer that answers hellos but greets no one (the kit): the connection
    starts b's greeting of it (`Greetings._run`), whose hello takes the kit's record into b's
    store; no hello of the kit's reaches b's side of the protocol."""
    await b._host.connect(kit.host.listen_addrs[0] + f"/p2p/{kit.peer_id}")


async def _nothing(a: Node, b: Node, kit: HostilePeer) -> None:
    """The row's own timer sets its path off."""


async def _outcome(b: Node, outcome: StoreOutcome) -> None:
    """As a store write batch that did `outcome` tells the node's reactions (`AfterStore`)."""
    b._services.outcomes.publish(outcome)


async def _contact_made(a: Node, b: Node, kit: HostilePeer) -> None:
    await _outcome(b, StoreOutcome(contacts_made={RoomId(bytes(32))}))


async def _membership_changed(a: Node, b: Node, kit: HostilePeer) -> None:
    await _outcome(b, StoreOutcome(membership_changed={bytes(32)}))


async def _sibling_connected(a: Node, b: Node, kit: HostilePeer) -> None:
    """What `Node.connect` spawns for a home of our own user (a sibling): a sync with it, which
    reads our rooms to offer them (b is connected to a: see `connected`)."""
    b._supervisor.spawn(b._sync_quietly(a.peer_id), "sync")


async def _home_looked_up(a: Node, b: Node, kit: HostilePeer) -> None:
    """What `HomeLookups` spawns for a user whose home is not known: a DHT lookup of a's
    record (which a put in the DHT before b's store failed), then taking it in."""

    async def look_up() -> None:
        await b.find_home(a.user_id)

    b._supervisor.spawn(look_up(), "home-lookup")


async def _a_publishes(a: Node, b: Node) -> None:
    assert await a.publish_home_record()


@dataclass(frozen=True)
class Site:
    name: str
    trigger: Trigger
    frames: tuple[str, ...]
    """Functions the fault must have passed through: the site and what set it off."""
    overrides: dict[str, Any] = field(default_factory=dict)
    connected: bool = False
    """b dials a (and they greet) before its store fails."""
    before: Callable[[Node, Node], Awaitable[None]] | None = None
    """Done once b is connected, before its store fails."""


SITES = (
    Site("hello", _a_dials_b, ("_take_records",)),
    Site("greeting", _b_dials_a_greeter, ("_run", "hello", "_take_records")),
    Site("presence", _nothing, ("run", "announce"), {"presence_interval_ms": 100}),
    Site("share-profile", _contact_made, ("_share",)),
    Site("membership", _membership_changed, ("_membership_changed",)),
    Site("sync", _sibling_connected, ("_sync_quietly", "_room_list"), connected=True),
    Site("home-record", _home_looked_up, ("find", "learn"), connected=True, before=_a_publishes),
)


async def test_each_background_site_that_meets_a_failed_store_stops_the_node(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="hearthmesh")
    # a announces no presence: b's presence listener would take a's record into b's store as
    # the hello does, and one row's site must be the only one to meet the failed store
    peer = node_config(tmp_path / "a", **QUIET, share_presence=False)
    async with Node(peer) as a, HostilePeer() as kit:
        kit.answer_hellos()
        for site in SITES:
            caplog.clear()
            config = node_config(tmp_path / site.name, **{**QUIET, **site.overrides})
            async with asyncio.timeout(30), Node(config) as b:
                if site.connected:
                    await b.connect(a.listen_addrs[0] + f"/p2p/{a.peer_id}")
                if site.before is not None:
                    await site.before(a, b)
                await _settled(b)
                failed = asyncio.ensure_future(b.wait_failed())
                await b.store.aclose()  # the store fails under the running node
                if site.trigger is not _nothing:  # a timer's row may meet it at once
                    assert not failed.done(), f"{site.name}: {b.failure} before its trigger"
                await site.trigger(a, b, kit)
                failure = await asyncio.wait_for(failed, 10)  # a bound on a hang, not a timing
                met = _frames(failure.__cause__)
                assert all(f in met for f in site.frames), f"{site.name}: {met}"  # its own fault
                assert b.failure is failure
                errors = [  # the node's own (libp2p's dials of earlier rows' b aside)
                    r
                    for r in caplog.records
                    if r.levelno >= logging.ERROR and r.name.startswith("hearthmesh")
                ]
                assert len(errors) == 1, f"{site.name}: {[r.getMessage() for r in errors]}"
                assert "failed" in errors[0].getMessage()


async def _settled(node: Node) -> None:
    """Let the node's start finish its own first reads (the outbox's parked rows, its first
    take): reads queued behind them on the store's thread answer after them."""
    for _ in range(3):
        await node.store.read(_look)
        await asyncio.sleep(0.05)


def _look() -> None:
    """A read that reads nothing."""
