"""Which form of a revised event reaches whom (SPEC §20.7): the revised one only when every
home it would reach advertised it; what peers advertised is kept, bounded."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import cast

import pytest

from hearthmesh.node import wiring
from hearthmesh.node.mesh import hello
from hearthmesh.node.mesh.capabilities import (
    MAX_PEERS_KNOWN,
    OUR_LEVELS,
    RETRY_MS,
    PeerLevels,
    Revisions,
)
from hearthmesh.node.node import Node
from hearthmesh.node.p2p.errors import ProtocolNotSpoken, StreamClosed, StreamOpenFailed
from hearthmesh.node.p2p.host import P2PHost
from hearthmesh.protocol.canonical import encode_canonical
from hearthmesh.protocol.capabilities import CAPS_PROTOCOL, Level, encode_caps_answer
from hearthmesh.protocol.hello import HELLO_LEVELS_PROTOCOL
from hearthmesh.protocol.identity import UserId
from tests.integration.conftest import node_config

US, ALICE, BOB = (UserId(bytes([n]) * 32) for n in (1, 2, 3))
HOMES = {US: ("us-1", "us-2"), ALICE: ("alice-1", "alice-2"), BOB: ("bob-1",)}
OLDER = frozenset({Level.CORE, Level.IM, Level.MULTI_DEVICE, Level.RELAY, Level.E2EE})
"""What a node of the release before the revisions (dd84a23) advertises."""


def _revisions(levels: PeerLevels) -> Revisions:
    return Revisions(
        levels=levels,
        user=US,
        homes_of=lambda user: HOMES.get(user, ()),
        addresses_of=lambda user: (),
        siblings=lambda: frozenset({"us-2"}),
    )


class _Clock:
    def __init__(self) -> None:
        self.ms = 0

    def now_ms(self) -> int:
        return self.ms


class _Unreachable:
    """A host that reaches no peer: every stream open fails as a failed dial does."""

    def __init__(self) -> None:
        self.opened: list[str] = []

    async def open_stream(self, peer_id: str, protocol_id: str, lazy: bool = False) -> object:
        self.opened.append(peer_id)
        raise StreamOpenFailed(f"open {protocol_id} to {peer_id}: no route")

    def connected_peers(self) -> list[str]:
        return []


async def _never_reached(peer_id: str, addresses: tuple[str, ...]) -> bool:
    return False


def _levels(
    host: object = None, clock: _Clock | None = None, *, background_asks: int = 4
) -> PeerLevels:
    """By default nothing is asked: every home the test names answered already (a host that
    is not there would fail any ask)."""
    return PeerLevels(
        host=cast(P2PHost, host),
        clock=clock or _Clock(),
        on_refused=lambda peer, exc: None,
        reach=_never_reached,
        background_asks=background_asks,
    )


async def test_the_revised_form_only_when_every_home_and_sibling_advertised_it() -> None:
    levels = _levels()
    for peer in ("us-2", "alice-1", "alice-2", "bob-1"):
        levels.remember(peer, OUR_LEVELS)
    revisions = _revisions(levels)
    assert await revisions.speak({ALICE}, Level.ADDRESSED_RECEIPTS)
    assert await revisions.speak({US, ALICE, BOB}, Level.ADD_SEVERAL)  # our own home not asked
    levels.remember("alice-2", OLDER)  # one of alice's two homes is older
    assert not await revisions.speak({ALICE}, Level.ADDRESSED_RECEIPTS)
    assert await revisions.speak({BOB}, Level.ADDRESSED_RECEIPTS)
    levels.remember("us-2", OLDER)  # our own other home gets everything we send
    assert not await revisions.speak({BOB}, Level.ADDRESSED_RECEIPTS)


async def test_a_user_whose_homes_we_do_not_know_is_not_counted() -> None:
    """An absent member's homes get nothing before its record is learnt (SPEC §20.7): a group
    with hundreds of them still forms by ADDs of 64 (§12.1.1)."""
    levels = _levels()
    levels.remember("us-2", OUR_LEVELS)
    levels.remember("bob-1", OUR_LEVELS)
    stranger = UserId(b"\x09" * 32)
    assert await _revisions(levels).speak({stranger, BOB}, Level.ADD_SEVERAL)
    levels.remember("bob-1", OLDER)
    assert not await _revisions(levels).speak({stranger, BOB}, Level.ADD_SEVERAL)


async def test_an_unreachable_home_is_not_counted_and_not_asked_again_for_a_while() -> None:
    """A home never met that cannot be reached is asked before a send, then not before
    RETRY_MS (a send must not wait on it each time); one that answered before keeps its
    answer while it is away (SPEC §20.7)."""
    host, clock = _Unreachable(), _Clock()
    levels = _levels(host, clock)
    levels.remember("us-2", OUR_LEVELS)
    revisions = _revisions(levels)
    assert await revisions.speak({ALICE}, Level.ADDRESSED_RECEIPTS)
    assert host.opened == ["alice-1", "alice-2"]
    clock.ms = RETRY_MS - 1
    assert await revisions.speak({ALICE}, Level.ADDRESSED_RECEIPTS)
    assert host.opened == ["alice-1", "alice-2"]
    clock.ms = RETRY_MS
    levels.remember("alice-1", OLDER)
    assert not await revisions.speak({ALICE}, Level.ADDRESSED_RECEIPTS)
    assert host.opened == ["alice-1", "alice-2", "alice-2"]  # alice-1 answered: kept
    await levels.learn("alice-1")  # an ask that fails: the answer stays
    assert levels.of("alice-1") == OLDER
    levels.connected("alice-1")  # it connected anew: the answer stands until its hello
    assert levels.of("alice-1") == OLDER and not levels.due("alice-1")
    levels.greeted_older("alice-1")  # on hello/0: went back a release, asked before a send
    assert levels.of("alice-1") is None and levels.due("alice-1")


async def test_ask_due_asks_only_the_homes_that_never_answered_and_not_our_siblings() -> None:
    """SPEC §27.11.3: before a rotation for an owed member whose home's levels are not known,
    that member's homes that never answered (and were not tried lately) are asked, nothing
    else; True when any was."""
    host, clock = _Unreachable(), _Clock()
    levels = _levels(host, clock)
    levels.remember("alice-1", OUR_LEVELS)
    revisions = _revisions(levels)
    assert await revisions.ask_due({ALICE, US})
    assert host.opened == ["alice-2"]  # not alice-1 (answered), nor our sibling us-2
    assert not await revisions.ask_due({ALICE})  # alice-2 tried just now: not due
    assert host.opened == ["alice-2"]
    assert revisions.advertised({ALICE}, Level.OWED_HELD) == frozenset()
    levels.remember("alice-2", OUR_LEVELS)
    assert revisions.advertised({ALICE}, Level.OWED_HELD) == {ALICE}


def test_what_peers_advertised_is_bounded_and_the_oldest_answer_goes_first() -> None:
    levels = _levels()
    for n in range(MAX_PEERS_KNOWN + 1):
        levels.remember(f"peer-{n}", OUR_LEVELS)
    assert levels.of("peer-0") is None
    assert levels.of(f"peer-{MAX_PEERS_KNOWN}") == OUR_LEVELS
    assert levels.of("peer-1") == OUR_LEVELS


async def test_room_key_shares_are_addressed_per_user_whose_homes_all_speak_the_level() -> None:
    """Each user's shares go addressed when that user's homes and ours advertised
    `addressed-room-keys`; the rest go in the form before (SPEC §27.5.3, §20.7)."""
    levels = _levels()
    for peer in ("us-2", "alice-1", "alice-2", "bob-1"):
        levels.remember(peer, OUR_LEVELS)
    revisions = _revisions(levels)
    level = Level.ADDRESSED_ROOM_KEYS
    assert await revisions.speakers({US, ALICE, BOB}, level) == {US, ALICE, BOB}
    levels.remember("alice-2", OLDER)
    assert await revisions.speakers({US, ALICE, BOB}, level) == {US, BOB}
    levels.remember("us-2", OLDER)  # our other home gets every addressed key: none then
    assert await revisions.speakers({US, ALICE, BOB}, level) == frozenset()


class _Slow:
    """A host whose peers answer a capability request only when the test lets them."""

    def __init__(self) -> None:
        self.opened: list[str] = []
        self.answer = asyncio.Event()

    async def open_stream(self, peer_id: str, protocol_id: str, lazy: bool = False) -> object:
        self.opened.append(peer_id)
        await self.answer.wait()
        raise StreamOpenFailed(f"open {protocol_id} to {peer_id}: no route")

    def connected_peers(self) -> list[str]:
        return []


class _Failing:
    """A host connected to every peer whose stream opens fail with `error`."""

    def __init__(self, error: StreamOpenFailed) -> None:
        self.error = error

    async def open_stream(self, peer_id: str, protocol_id: str, lazy: bool = False) -> object:
        raise self.error

    def connected_peers(self) -> list[str]:
        return ["bob-1"]


async def test_only_a_home_that_says_it_does_not_speak_the_protocol_is_at_core() -> None:
    """SPEC §20.5, §20.7: a stream to a connected home that failed otherwise (its negotiation
    timed out on a loaded machine) tells nothing of its levels. Taken as `core`, one such
    failure at a 25-node group's creator made it add 1,023 members one event each, past the
    API's 30 s; a home that answers `na` is at `core`."""
    host, clock = _Failing(StreamOpenFailed("open caps to bob-1: timed out after 5s")), _Clock()
    levels = _levels(host, clock)
    levels.remember("us-2", OUR_LEVELS)
    await levels.learn("bob-1")
    assert levels.of("bob-1") is None  # not answered: not counted
    assert await _revisions(levels).speak({BOB}, Level.ADD_SEVERAL)
    host.error = ProtocolNotSpoken("bob-1 does not speak caps")
    clock.ms = RETRY_MS  # the failed try no longer holds an ask back
    await levels.learn("bob-1")
    assert levels.of("bob-1") == frozenset()  # core
    assert not await _revisions(levels).speak({BOB}, Level.ADD_SEVERAL)


async def test_a_burst_of_sends_asks_each_home_once() -> None:
    """Sends that need a home's answer while it is being asked wait for that answer: a burst
    of encrypted sends opened a capability stream each, past the peer's stream slots, and
    the peer banned the sender (tests/integration/test_e2ee_kill9.py)."""
    host = _Slow()
    levels = _levels(host)
    levels.remember("us-2", OUR_LEVELS)
    revisions = _revisions(levels)
    asks = [revisions.speakers({BOB}, Level.ADDRESSED_ROOM_KEYS) for _ in range(20)]
    waiting = asyncio.gather(*asks)
    for _ in range(3):  # every send asks, and the first ask waits on the wire
        await asyncio.sleep(0)
    host.answer.set()
    assert await waiting == [{BOB}] * 20
    assert host.opened == ["bob-1"]


class _Stream:
    """A caps stream to a peer that advertises `OUR_LEVELS`."""

    async def __aenter__(self) -> _Stream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def write_frame(self, frame: bytes) -> None:
        return None

    async def read_frame(self) -> bytes:
        return encode_caps_answer(OUR_LEVELS)

    async def write_then_read(self, frame: bytes) -> bytes:
        await self.write_frame(frame)
        return await self.read_frame()


class _Held:
    """A host connected to every peer whose caps answers wait until the test releases each
    peer's (`release`); it counts the asks on the wire at once."""

    def __init__(self) -> None:
        self.opened: list[str] = []
        self.released: dict[str, asyncio.Event] = {}
        self.at_once = 0
        self.most_at_once = 0
        self._opened = asyncio.Condition()

    async def wait_opened(self, peers: list[str]) -> None:
        """Until the asks opened so far are `peers` (the caller's timeout bounds it)."""
        async with self._opened:
            await self._opened.wait_for(lambda: self.opened == peers)

    def release(self, peer_id: str) -> None:
        self.released.setdefault(peer_id, asyncio.Event()).set()

    async def open_stream(self, peer_id: str, protocol_id: str, lazy: bool = False) -> _Stream:
        self.opened.append(peer_id)
        async with self._opened:
            self._opened.notify_all()
        self.at_once += 1
        self.most_at_once = max(self.most_at_once, self.at_once)
        try:
            await self.released.setdefault(peer_id, asyncio.Event()).wait()
        finally:
            self.at_once -= 1
        return _Stream()

    def connected_peers(self) -> list[str]:
        return []


async def test_background_asks_go_a_few_at_a_time() -> None:
    """SPEC §27.10.3: a round shared ahead asks the member homes it has not heard from
    `background_asks` at a time, where it asked all at once (2,400 asks at a 50-home group's
    formation, most timed out); each is asked once and all are answered."""
    host = _Held()
    levels = _levels(host, background_asks=2)
    peers = [f"peer-{n}" for n in range(6)]
    async with asyncio.timeout(5):
        asking = asyncio.gather(*(levels.learn(p, background=True) for p in peers))
        for n, peer in enumerate(peers):
            await host.wait_opened(peers[: min(n + 2, len(peers))])  # two on the wire at once
            assert host.at_once <= 2
            host.release(peer)
        await asking
    assert host.most_at_once == 2
    assert sorted(host.opened) == peers
    assert all(levels.of(p) == OUR_LEVELS for p in peers)


async def test_a_users_ask_never_waits_behind_background_asks() -> None:
    """A send asks a home at once, even while background asks fill every slot, and a
    background ask of that home queued meanwhile takes its answer instead of asking again."""
    host = _Held()
    levels = _levels(host, background_asks=1)
    async with asyncio.timeout(5):
        slow = asyncio.ensure_future(levels.learn("slow", background=True))
        queued = asyncio.ensure_future(levels.learn("bob-1", background=True))
        await host.wait_opened(["slow"])
        host.release("bob-1")
        await levels.learn("bob-1")  # the send's: not behind "slow", which still holds its slot
        assert levels.of("bob-1") == OUR_LEVELS and not slow.done()
        host.release("slow")
        await asyncio.gather(slow, queued)
    assert host.opened == ["slow", "bob-1"]


class _BehindNat:
    """A host that opens streams only on connections made through `reach` (libp2p's own dial
    does not try a record's circuit addresses, which is how a home behind a NAT is reached)."""

    def __init__(self) -> None:
        self.connected: set[str] = set()
        self.reached: list[tuple[str, tuple[str, ...]]] = []

    async def reach(self, peer_id: str, addresses: tuple[str, ...]) -> bool:
        self.reached.append((peer_id, addresses))
        self.connected.add(peer_id)
        return True

    async def open_stream(self, peer_id: str, protocol_id: str, lazy: bool = False) -> _Stream:
        if peer_id not in self.connected:
            raise StreamOpenFailed(f"open {protocol_id} to {peer_id}: no route")
        return _Stream()

    def connected_peers(self) -> list[str]:
        return sorted(self.connected)


async def test_a_home_not_connected_is_dialled_from_its_record_before_it_is_asked() -> None:
    """A send's ask reaches a home it is not connected to through the addresses of the home's
    record (a NATed home's circuit address among them), so its answer counts for that send;
    without the dial the ask failed and the first send to it waited out ASK_S."""
    host = _BehindNat()
    levels = PeerLevels(
        host=cast(P2PHost, host),
        clock=_Clock(),
        on_refused=lambda peer, exc: None,
        reach=host.reach,
    )
    levels.remember("us-2", OUR_LEVELS)
    revisions = Revisions(
        levels=levels,
        user=US,
        homes_of=lambda user: HOMES.get(user, ()),
        addresses_of=lambda user: (f"/circuit/{user.hex()[:4]}",),
        siblings=lambda: frozenset({"us-2"}),
    )
    assert await revisions.speakers({ALICE, BOB}, Level.ADDRESSED_ROOM_KEYS) == {ALICE, BOB}
    assert sorted(host.reached) == [
        ("alice-1", ("/circuit/0202",)),
        ("alice-2", ("/circuit/0202",)),
        ("bob-1", ("/circuit/0303",)),
    ]
    assert levels.of("bob-1") == OUR_LEVELS
    host.reached.clear()
    levels.greeted_older("bob-1")  # went back a release: asked again, on its connection
    assert await revisions.speak({BOB}, Level.ADDRESSED_ROOM_KEYS)
    assert host.reached == []


async def test_an_answer_over_the_connection_its_ask_opened_counts_after_the_hello(
    tmp_path: Path,
) -> None:
    """The first send to a home not connected dials it and asks; the hello on that new
    connection must not forget the answer, or the next send asks again (it waited `ASK_S`
    when the home was gone by then)."""
    async with (
        asyncio.timeout(10),
        Node(node_config(tmp_path / "a")) as alice,
        Node(node_config(tmp_path / "b")) as bob,
    ):
        await alice.learn_home_record(bob.home_record())
        assert bob.peer_id not in alice._host.connected_peers()
        assert await alice._services.revisions.speak({bob.user_id}, Level.ADDRESSED_RECEIPTS)
        await alice._services.greetings.wait(bob.peer_id)  # the hello of the ask's connection
        assert alice._services.peer_levels.of(bob.peer_id) == OUR_LEVELS
        assert not alice._services.peer_levels.due(bob.peer_id)


async def _levels_heard(node: Node, peer_id: str, levels: frozenset[Level]) -> None:
    """Wait until `node` holds `levels` for `peer_id` (the caller's timeout bounds it)."""
    while node._services.peer_levels.of(peer_id) != levels:  # noqa: ASYNC110 (no event)
        await asyncio.sleep(0.02)


def _caps_opened(node: Node) -> int:
    opens: int = node._host.wire()["opens"].get(CAPS_PROTOCOL, 0)
    return opens


async def test_levels_told_in_the_hello_open_no_caps_stream(tmp_path: Path) -> None:
    """SPEC §13.3, §20.7: the answer to our hello on `/hearthmesh/hello/1` names the peer's
    levels, so a send that depends on them asks nothing (at 50 nodes the caps streams were
    0.20 opens a message per node, §20.6)."""
    async with (
        asyncio.timeout(20),
        Node(node_config(tmp_path / "a")) as alice,
        Node(node_config(tmp_path / "b")) as bob,
    ):
        await alice.connect(bob.listen_addrs[0])
        await alice.learn_home_record(bob.home_record())
        await _levels_heard(alice, bob.peer_id, OUR_LEVELS)
        assert await alice._services.revisions.speak({bob.user_id}, Level.ADDRESSED_RECEIPTS)
        assert _caps_opened(alice) == 0


async def test_a_peer_back_with_a_level_withheld_is_no_longer_listed_with_it(
    tmp_path: Path,
) -> None:
    """A peer that went back a release connects anew; its hello on that connection replaces
    what it said before (nothing is only added, as identify's protocol list is), and no caps
    stream is opened either time."""
    older = OUR_LEVELS - {Level.ADDRESSED_RECEIPTS}
    async with asyncio.timeout(30), Node(node_config(tmp_path / "a")) as alice:
        async with Node(node_config(tmp_path / "b")) as bob:
            bob_id, bob_user = bob.peer_id, bob.user_id
            await bob.connect(alice.listen_addrs[0])
            await alice.learn_home_record(bob.home_record())
            await _levels_heard(alice, bob_id, OUR_LEVELS)
        async with Node(node_config(tmp_path / "b", withheld_levels=OUR_LEVELS - older)) as bob:
            await bob.connect(alice.listen_addrs[0])
            await _levels_heard(alice, bob_id, older)
            assert not await alice._services.revisions.speak({bob_user}, Level.ADDRESSED_RECEIPTS)
        assert _caps_opened(alice) == 0


async def test_a_peer_without_hello_1_is_greeted_on_hello_0_and_asked_its_levels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interop with the release before: a peer that answers `na` to hello/1 is greeted on
    hello/0, tells no levels, and is asked on `/hearthmesh/caps/0` as before."""
    not_served = "/hearthmesh/not-served/0"
    monkeypatch.setattr(hello, "HELLO_LEVELS_PROTOCOL", not_served)  # either asks it: `na`
    bob = Node(node_config(tmp_path / "b"))
    with monkeypatch.context() as older:  # bob serves no hello/1; alice does
        older.setattr(wiring, "HELLO_LEVELS_PROTOCOL", "/hearthmesh/asked-by-none/0")
        await bob.start()
    try:
        async with asyncio.timeout(20), Node(node_config(tmp_path / "a")) as alice:
            await alice.connect(bob.listen_addrs[0])  # the hello: raises if it failed
            await alice.learn_home_record(bob.home_record())
            assert alice._services.peer_levels.of(bob.peer_id) is None
            assert await alice._services.revisions.speak({bob.user_id}, Level.ADDRESSED_RECEIPTS)
            assert alice._services.peer_levels.of(bob.peer_id) == OUR_LEVELS
            assert _caps_opened(alice) == 1
    finally:
        await bob.stop()


async def test_a_malformed_hello_1_is_charged_and_changes_no_levels(tmp_path: Path) -> None:
    """SPEC §11.6, §13.3: levels out of order in a hello/1 are refused: the stream ends with
    no answer, the sender is charged, and what it told before stands."""
    async with (
        asyncio.timeout(20),
        Node(node_config(tmp_path / "a")) as alice,
        Node(node_config(tmp_path / "b")) as bob,
    ):
        await alice.connect(bob.listen_addrs[0])
        await _levels_heard(bob, alice.peer_id, OUR_LEVELS)
        bad = encode_canonical([1, [], 9, ["e2ee", "core"]])
        async with await alice._host.open_stream(bob.peer_id, HELLO_LEVELS_PROTOCOL) as stream:
            await stream.write_frame(bad)
            with pytest.raises(StreamClosed):
                await stream.read_frame()
        assert bob._services.standing.points(alice.peer_id) > 0
        assert bob._services.peer_levels.of(alice.peer_id) == OUR_LEVELS
