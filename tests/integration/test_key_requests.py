"""Room-key requests to a session's sender over `/hearthmesh/key-request/0` between real nodes
on loopback (SPEC §27.13): a key that never reached a device is recovered by asking its
sender, and requests from anyone but a current member's listed home are refused and charged."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from hearthmesh.node.api import ApiConfig, ApiServer
from hearthmesh.node.clock import SystemClock
from hearthmesh.node.e2ee import held_watch, key_requests
from hearthmesh.node.e2ee.key_requests import REQUESTS_BURST
from hearthmesh.node.events import MessageReceived
from hearthmesh.node.media.sealed import plain_size, put_sealed, read_opened
from hearthmesh.node.node import Node
from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.node.p2p.host import P2PHost
from hearthmesh.protocol import e2ee
from hearthmesh.protocol.content import MEDIA_CONTENT_TYPE, MediaRef, encode_media
from hearthmesh.protocol.delivery import ProtocolErrorFrame
from hearthmesh.protocol.envelope import Kind, RoomId
from hearthmesh.protocol.errors import ErrorCode, NotListed
from hearthmesh.protocol.identity import UserId
from hearthmesh.tools.client import ApiClient

from .api_helpers import TOKEN, Home, run_cli
from .conftest import NodeFactory, collect, wait_until
from .test_devices import bodies, link_device, wait_until_readable
from .test_key_claims import a_session_and_a_stranger

pytestmark = pytest.mark.integration

NEVER_MS = 3_600_000
"""An interval that does not come within a test: the laptop's siblings never forward."""


async def test_a_room_key_a_device_never_got_is_recovered_from_its_sender(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    """Alice shares her session with bob's only device; bob then links a laptop, which syncs
    alice's messages from its sibling but holds no key of them (its home was not in bob's
    record when the key was sent). With forwarding between bob's homes off, the laptop asks
    alice's home, which gives the key to a device bob's record lists: it reads them all."""
    async with (
        asyncio.timeout(120),
        make_node("alice") as alice,
        make_node("bob") as bob,
    ):
        await bob.connect(alice.listen_addrs[0])
        room = await alice.open_direct(bob.user_id)
        assert await bob.open_direct(alice.user_id) == room
        for i in range(3):
            await alice.send(room, f"before the laptop {i}".encode())
        await wait_until_readable(bob, room)
        await until_messages(bob, room, 3)

        config, _ = await link_device(bob, tmp_path / "bob-laptop")
        config = dataclasses.replace(config, key_forward_interval_ms=NEVER_MS)
        async with Node(config) as laptop:
            await laptop.connect(bob.listen_addrs[0])  # syncs the history from its sibling
            await laptop.connect(alice.listen_addrs[0])  # hello: each learns the other's record
            await until_messages(laptop, room, 3)
            await wait_until_readable(laptop, room)
            assert await bodies(laptop, room) == await bodies(bob, room)
            assert laptop.key_requests_taken >= 1 and alice.key_requests_answered >= 1
            assert laptop.key_forwarding_taken == 0
            assert laptop.undecryptable == 0


async def test_a_message_sent_before_its_recipients_record_was_known_is_read_and_announced(
    make_node: NodeFactory,
) -> None:
    """SPEC §27.10.1, §27.13.1, §27.13.5: alice messages carol before she can find carol's
    record (they share no peer), so her messages are encrypted with no share for carol's
    device. Once they meet, carol's home holds them, asks alice's home for their key, which is
    owed to carol from the first of them, opens them and tells carol's app (MessageReceived),
    once each, in alice's order (the held index is keyed by message id)."""
    quiet = {"share_presence": False}
    texts = [b"before I knew your record %d" % i for i in range(3)]
    async with (
        asyncio.timeout(60),
        make_node("alice", **quiet) as alice,
        make_node("carol", **quiet) as carol,
    ):
        room = await alice.open_direct(carol.user_id)
        sent = [await alice.send(room, text) for text in texts]
        announced = asyncio.create_task(
            collect(carol.events(), MessageReceived, 3, lambda e: e.envelope.kind is Kind.MESSAGE)
        )
        await asyncio.sleep(0)  # subscribed before anything can reach carol
        await carol.connect(alice.listen_addrs[0])  # hello: alice learns carol's home
        await until_messages(carol, room, 3)
        await wait_until_readable(carol, room)
        assert set(texts) <= set(await bodies(carol, room))
        assert carol.key_requests_taken >= 1 and alice.key_requests_answered >= 1
        received = await asyncio.wait_for(announced, 10)
        assert [e.envelope.message_id for e in received] == [e.message_id for e in sent]
        assert [e.envelope.body for e in received] == texts


async def test_asleep_with_nothing_held_the_asker_is_woken_by_the_batch_that_holds(
    make_node: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key askers sleep while nothing is held (`HeldWatch`); the arrival batch that holds
    alice's envelope on carol's home wakes them once it committed, and carol asks alice. The
    quiet watches' backstop is out of reach here: only that wake brings the ask."""
    monkeypatch.setattr(held_watch, "QUIET_BACKSTOP_S", 3600.0)
    quiet = {"share_presence": False}
    async with (
        asyncio.timeout(60),
        make_node("alice", **quiet) as alice,
        make_node("carol", **quiet) as carol,
    ):
        askers = (carol._services.key_requests, carol._services.key_forwarding)
        await wait_until(lambda: all(asker.held.quiet for asker in askers))  # asleep
        room = await alice.open_direct(carol.user_id)
        await alice.send(room, b"before I knew your record")
        await carol.connect(alice.listen_addrs[0])  # hello: alice learns carol's home
        await until_messages(carol, room, 1)
        await wait_until_readable(carol, room)
        assert carol.key_requests_taken == 1 and alice.key_requests_answered == 1


async def test_a_media_message_opened_late_is_fetched(make_node: NodeFactory) -> None:
    """SPEC §25.4, §27.11: an image alice sent carol before she knew carol's record opens on
    carol's home only when its key comes (a key request); its blob is then referenced there
    as on arrival, and fetched from alice's home. It was never indexed: no fetch found a
    source, and a download on carol's home answered NOT_FOUND for good."""
    quiet = {"share_presence": False}
    image = os.urandom(2048)
    async with (
        asyncio.timeout(60),
        make_node("alice", **quiet) as alice,
        make_node("carol", **quiet) as carol,
    ):
        room = await alice.open_direct(carol.user_id)
        info = await alice.store.run_long(
            put_sealed, alice.store.store, image, content_type="image/png", now_ms=0
        )
        media = MediaRef(
            type="image",
            digest=info.digest,
            content_type="image/png",
            size=plain_size(info),
            seal=info.seal,
        )
        await alice.send(room, encode_media(media), content_type=MEDIA_CONTENT_TYPE)
        await carol.connect(alice.listen_addrs[0])  # hello: alice learns carol's home
        await until_messages(carol, room, 1)
        await wait_until_readable(carol, room)  # opened late, by a key request
        assert await carol.media.wait_fetched(info.digest, wait_s=10.0)
        held = await carol.store.run(read_opened, carol.store.store, info.digest)
        assert held is not None and held[1] == image


async def until_messages(node: Node, room: RoomId, count: int) -> None:
    """Poll until `node` holds `count` MESSAGE envelopes of `room` (opened or not)."""
    while True:
        page = await node.history(room, limit=1000)
        if sum(e.envelope.kind == Kind.MESSAGE for e in page.events) >= count:
            return
        await asyncio.sleep(0.05)


async def test_a_request_from_anyone_but_a_members_listed_home_is_refused_and_charged(
    make_node: NodeFactory,
) -> None:
    """SPEC §27.13.1: a stranger naming itself (not a member), or naming a member whose record
    does not list the asking home, gets NOT_LISTED (53) either way (it learns no one's rooms);
    bob's own home, listed, naming bob for a room he is not in gets KEY_REQUEST_DENIED (75); a
    malformed request gets MALFORMED, and asking faster than 4 at once and one a second
    RATE_LIMITED; each is charged, and no key is given."""
    async with (
        asyncio.timeout(30),
        a_session_and_a_stranger(make_node) as (alice, bob, mallory, room, session),
    ):
        stranger = UserId(os.urandom(32))

        async def refused_with(request: bytes, asker: P2PHost = mallory) -> int:
            async with await asker.open_stream(alice.peer_id, e2ee.KEY_REQUEST_PROTOCOL) as s:
                await s.write_frame(request)
                answer = e2ee.decode_forward_answer(await s.read_frame())
            assert isinstance(answer, ProtocolErrorFrame)
            return answer.code

        denied = _request(stranger, room, session)
        assert await refused_with(denied) == ErrorCode.NOT_LISTED
        assert await refused_with(_request(bob.user_id, room, session)) == ErrorCode.NOT_LISTED
        elsewhere = _request(bob.user_id, RoomId(os.urandom(32)), session)
        assert await refused_with(elsewhere, bob._host) == ErrorCode.KEY_REQUEST_DENIED
        forward = e2ee.encode_forward_request([(room, session)])
        assert await refused_with(forward) == ErrorCode.MALFORMED
        # more than the burst at once: RATE_LIMITED (a loaded machine refills now and then)
        codes = {await refused_with(denied) for _ in range(5 * REQUESTS_BURST)}
        assert ErrorCode.RATE_LIMITED in codes
        assert alice.peer_points(mallory.peer_id) > 0
        assert alice.key_requests_answered == 0


async def read_by(bob: Node, sender: Node) -> RoomId:
    """`sender` opens a direct room with bob and sends one message, which bob's home reads."""
    await sender.connect(bob.listen_addrs[0])
    room = await sender.open_direct(bob.user_id)
    await sender.send(room, b"before the laptop")
    await until_messages(bob, room, 1)
    await wait_until_readable(bob, room)
    return room


def _lists(node: Node, user: UserId, home: str) -> bool:
    """`node` holds a record of `user` that lists the device on `home`."""
    record = node._services.directory.record(user)
    return record is not None and record.bundle_at_home(home) is not None


def _request(user: UserId, room: RoomId, session: bytes) -> bytes:
    return e2ee.encode_key_request(e2ee.KeyRequest(user=user, sessions=((room, session),)))


async def test_messages_whose_sender_never_answers_count_as_undecryptable(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    """SPEC §27.13.3: alice's home is gone when bob's new laptop asks for her key; after
    KEY_REQUEST_ATTEMPTS requests her three messages count as undecryptable, in
    `/v1/node/status` and `hearthmesh status`."""
    async with asyncio.timeout(120), make_node("bob") as bob:
        async with make_node("alice") as alice:
            await bob.connect(alice.listen_addrs[0])
            room = await alice.open_direct(bob.user_id)
            for i in range(3):
                await alice.send(room, f"then alice left {i}".encode())
            await until_messages(bob, room, 3)
            await wait_until_readable(bob, room)
        config, _ = await link_device(bob, tmp_path / "bob-laptop")
        config = dataclasses.replace(
            config, key_forward_interval_ms=NEVER_MS, key_request_interval_ms=100
        )
        async with (
            Node(config) as laptop,
            ApiServer(laptop, ApiConfig(token=TOKEN, port=0)) as api,
            ApiClient(api.url, TOKEN) as client,
        ):
            await laptop.connect(bob.listen_addrs[0])
            await until_messages(laptop, room, 3)
            while (await client.call("GET", "/v1/node/status"))["undecryptable"] != 3:  # noqa: ASYNC110 - a count with no event
                await asyncio.sleep(0.05)
            token_file = tmp_path / "token"
            token_file.write_text(TOKEN)
            code, output = await run_cli(Home(laptop, api, client), token_file, "status")
            assert code == 0 and "3 undecryptable" in output


async def test_a_message_opened_late_reaches_the_clients_live_feed_once(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    """SPEC §27.13.5: the laptop's client is on its WebSocket while alice's messages arrive
    held (no key: nothing to show); once her key comes on request they are shown live, like
    any new message, and a client resuming from before them is shown each exactly once."""
    async with asyncio.timeout(120), make_node("alice") as alice, make_node("bob") as bob:
        await bob.connect(alice.listen_addrs[0])
        room = await alice.open_direct(bob.user_id)
        assert await bob.open_direct(alice.user_id) == room
        texts = [f"opened late {i}" for i in range(2)]

        def in_room(frame: dict[str, Any]) -> bool:
            return bool(frame["room_id"] == room.hex())

        for text in texts:
            await alice.send(room, text.encode())
        await until_messages(bob, room, 2)
        config, _ = await link_device(bob, tmp_path / "bob-laptop")
        config = dataclasses.replace(config, key_forward_interval_ms=NEVER_MS)
        async with (
            Node(config) as laptop,
            ApiServer(laptop, ApiConfig(token=TOKEN, port=0)) as api,
            ApiClient(api.url, TOKEN) as client,
        ):
            laptop_home = Home(laptop, api, client)
            async with laptop_home.socket() as socket:
                before = socket.ready["cursor"]
                await laptop.connect(bob.listen_addrs[0])  # alice's messages come, held
                await until_messages(laptop, room, 2)
                await laptop.connect(alice.listen_addrs[0])  # her key comes on request
                live = [await socket.next("message", in_room) for _ in texts]
                assert sorted(f["message"] for f in live) == texts
                assert laptop.key_requests_taken >= 1
            async with laptop_home.socket(before) as resumed:
                await alice.send(room, b"sentinel")  # shown after the replay, live
                replayed = []
                while (frame := await resumed.next("message", in_room))["message"] != "sentinel":
                    replayed.append(frame["message"])
            assert sorted(replayed) == texts


async def test_each_sender_is_asked_on_its_own_not_after_another(
    make_node: NodeFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SPEC §27.13.3: bob's new laptop holds carol's and dave's messages, keyless; both their
    homes are slow to answer (each holds the request until the test lets it go). The laptop
    asks each on its own: one by one (or a round waiting for its slowest), a sender that did
    not answer held the other back for the whole ask bound (at 50 nodes a home was owed keys
    by a dozen senders, SPEC §20.6)."""
    monkeypatch.setattr(key_requests, "ASK_TIMEOUT_S", 600.0)  # no ask ends on its own here
    async with (
        asyncio.timeout(60),
        make_node("bob") as bob,
        make_node("carol") as carol,
        make_node("dave") as dave,
    ):
        rooms = [await read_by(bob, sender) for sender in (carol, dave)]

        asked: dict[str, str] = {}  # the sender asked: who asked it
        answer = asyncio.Event()

        def slow(sender: Node) -> Callable[[FrameStream], Awaitable[None]]:
            async def serve(stream: FrameStream) -> None:
                asked[sender.peer_id] = stream.remote_peer
                await answer.wait()
                await sender._services.key_request_server.serve(stream)

            return serve

        for sender in (carol, dave):
            sender._host.set_stream_handler(e2ee.KEY_REQUEST_PROTOCOL, slow(sender))
        config, _ = await link_device(bob, tmp_path / "bob-laptop")
        config = dataclasses.replace(
            config, key_forward_interval_ms=NEVER_MS, key_request_interval_ms=100
        )
        async with Node(config) as laptop:
            for sender in (carol, dave):  # known before anything is held: each first ask goes
                await laptop.learn_home_record(sender.home_record())
                await laptop.connect(sender.listen_addrs[0])  # hello: they learn the laptop
            await laptop.connect(bob.listen_addrs[0])  # syncs both rooms from its sibling
            for room in rooms:
                await until_messages(laptop, room, 1)
            while len(asked) < 2:  # noqa: ASYNC110 - the handlers have no event of their own
                await asyncio.sleep(0.05)
            assert set(asked.values()) == {laptop.peer_id} and not answer.is_set()
            # A sender refuses a home that bob's record, as the sender holds it, does not list
            # (NOT_LISTED, SPEC §27.13.1): bob's record naming the laptop reaches them a while
            # after the laptop's hello, later under load. Such refusals are no longer counted
            # (4 of them, §27.13.3; counted, they made the session undecryptable in 2 of 6
            # runs of the suite in session 28), but each defers the next ask by its backoff:
            # released once they list the laptop, the held requests are answered.
            await wait_until(
                lambda: all(_lists(sender, bob.user_id, laptop.peer_id) for sender in (carol, dave))
            )
            answer.set()
            for room in rooms:
                await wait_until_readable(laptop, room)
            assert laptop.key_requests_taken >= 2 and laptop.undecryptable == 0


async def test_a_sender_is_asked_again_its_backoff_after_each_request_ended(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    """SPEC §27.13.3, #18: carol's home holds each key request for a while, then ends it
    unanswered. Bob's new laptop asks her again no sooner than half its backoff after each
    request ended. Counted from the request's start, the backoffs shorter than the request
    (0.1, 0.2, 0.4 s here; 2 to 8 s against the 10 s ask bound by default) had passed when
    it ended, and it asked again at its first round: every home that had asked a loaded
    sender together asked it again together."""
    hold_s, interval_ms = 0.6, 100
    clock = SystemClock()  # the asker's own clock
    async with (
        asyncio.timeout(60),
        make_node("bob") as bob,
        make_node("carol") as carol,
    ):
        room = await read_by(bob, carol)
        asked: list[int] = []
        ended: list[int] = []

        async def unanswered(stream: FrameStream) -> None:
            asked.append(clock.now_ms())
            await asyncio.sleep(hold_s)
            ended.append(clock.now_ms())  # the stream closes on return: the laptop's ask fails

        carol._host.set_stream_handler(e2ee.KEY_REQUEST_PROTOCOL, unanswered)
        config, _ = await link_device(bob, tmp_path / "bob-laptop")
        config = dataclasses.replace(
            config, key_forward_interval_ms=NEVER_MS, key_request_interval_ms=interval_ms
        )
        async with Node(config) as laptop:
            await laptop.learn_home_record(carol.home_record())
            await laptop.connect(carol.listen_addrs[0])
            await laptop.connect(bob.listen_addrs[0])  # syncs carol's message, keyless
            await until_messages(laptop, room, 1)
            while len(asked) < 4:  # noqa: ASYNC110 - the handler has no event of its own
                await asyncio.sleep(0.05)
        waits = [again - end for end, again in zip(ended, asked[1:], strict=False)]
        halves = [interval_ms * 2**n // 2 for n in range(3)]
        assert all(wait >= half for wait, half in zip(waits, halves, strict=False)), (waits, halves)


@asynccontextmanager
async def carols_message_held_on_a_new_laptop(
    make_node: NodeFactory,
    tmp_path: Path,
    serve: Callable[[Node], Callable[[FrameStream], Awaitable[None]]],
    *,
    interval_ms: int = 100,
) -> AsyncIterator[Node]:
    """Bob's home reads carol's message; bob then links a laptop (asking its siblings never,
    carol every `interval_ms`), which syncs the message keyless from its sibling. Carol's home
    serves key requests with `serve(laptop)`. Yields the laptop holding the message."""
    async with make_node("bob") as bob, make_node("carol") as carol:
        room = await read_by(bob, carol)
        config, _ = await link_device(bob, tmp_path / "bob-laptop")
        config = dataclasses.replace(
            config, key_forward_interval_ms=NEVER_MS, key_request_interval_ms=interval_ms
        )
        async with Node(config) as laptop:
            carol._host.set_stream_handler(e2ee.KEY_REQUEST_PROTOCOL, serve(laptop))
            await laptop.learn_home_record(carol.home_record())
            await laptop.connect(carol.listen_addrs[0])
            await laptop.connect(bob.listen_addrs[0])  # syncs carol's message, keyless
            await until_messages(laptop, room, 1)
            yield laptop


async def test_an_idle_asker_sleeps_from_one_due_ask_to_the_next(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    """SPEC §27.13.3: carol's home ends every key request unanswered, so bob's new laptop
    holds her session while its backoff grows. Between two asks the laptop's asker runs two
    rounds (the one the last request's end woke, the one at the next due time), however long
    the wait: it does not wake every interval (100 ms here) to read what is held to find
    nothing due. Between the fifth and sixth asks (0.8 s at least) that was 8 rounds or more."""
    rounds_at_ask: list[int] = []

    def unanswered(laptop: Node) -> Callable[[FrameStream], Awaitable[None]]:
        async def serve(stream: FrameStream) -> None:
            rounds_at_ask.append(laptop._services.key_requests.rounds)  # closes: in vain

        return serve

    async with (
        asyncio.timeout(60),
        carols_message_held_on_a_new_laptop(make_node, tmp_path, unanswered),
    ):
        await wait_until(lambda: len(rounds_at_ask) >= 6)
    between = [b - a for a, b in itertools.pairwise(rounds_at_ask)]
    assert all(rounds <= 3 for rounds in between[2:5]), between


async def test_a_sender_saying_not_listed_forever_is_asked_a_bounded_number_of_times(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    """SPEC §27.13.3: carol's home answers each of bob's new laptop's key requests NOT_LISTED,
    as a sender that has not heard of the laptop yet does, and as a hostile one can forever.
    The first KEY_REQUEST_NOT_LISTED_DEFERRALS (4) of them are not counted; then they count, so
    the laptop counts carol's message undecryptable once its ninth request (4 + 5) ended: at
    its tenth, not before (at its fifth, when each counted; at the ninth's start, when a request
    counted as it went)."""
    undecryptable_at_ask: list[int] = []

    def not_listed(laptop: Node) -> Callable[[FrameStream], Awaitable[None]]:
        async def serve(stream: FrameStream) -> None:
            await stream.read_frame()
            undecryptable_at_ask.append(laptop.undecryptable)
            await stream.write_frame(e2ee.encode_claim_error(NotListed("who are you?")))

        return serve

    async with (
        asyncio.timeout(60),
        carols_message_held_on_a_new_laptop(make_node, tmp_path, not_listed),
    ):
        await wait_until(lambda: len(undecryptable_at_ask) >= 10)
    assert undecryptable_at_ask[:10] == [0] * 9 + [1]  # 4 not counted, then 5 counted


async def test_a_burst_of_holds_wakes_the_asker_at_most_once_an_interval(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    """SPEC §27.13.3: bob's new laptop holds carol's messages as they come, each in a write
    batch of its own (the first synced from its sibling; the next ones while carol's copy of
    bob's record does not list the laptop yet: 1 to 3 of the 4 in 5 runs). A hold wakes the
    asker, but it looks no sooner than an interval (an hour here) after its last look: one
    round, at its start, for all of them. Woken at each hold, it read every held session once a
    batch, more often than it used to every interval (a sibling's sync of held history commits
    batch after batch)."""
    quiet = {"share_presence": False}
    async with (
        asyncio.timeout(60),
        make_node("bob", **quiet) as bob,
        make_node("carol", **quiet) as carol,
    ):
        room = await read_by(bob, carol)
        config, _ = await link_device(bob, tmp_path / "bob-laptop")
        config = dataclasses.replace(
            config, key_forward_interval_ms=NEVER_MS, key_request_interval_ms=NEVER_MS
        )
        async with Node(config) as laptop:
            await laptop.connect(bob.listen_addrs[0])  # syncs carol's message, keyless
            await until_messages(laptop, room, 1)
            for count in range(2, 6):
                await carol.send(room, b"held on the laptop %d" % count)
                await until_messages(laptop, room, count)
            assert laptop.store.store.holds >= 1  # the synced one at least, after the first look
            assert laptop._services.key_requests.rounds == 1


async def test_a_sibling_that_forwards_nothing_is_asked_with_backoff(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    """SPEC §27.12.1: bob's new laptop holds carol's message (carol never asked), and bob's
    home answers every key-forward request with no key, as a sibling that never got the
    session does. The laptop asks it again with the key requests' backoff, the interval (100
    ms here) doubling per ask that took nothing: the fifth wait is at least 0.8 s (8 intervals
    less the spread's half), where asking every interval made it ~0.1 s."""
    asked_at: list[float] = []
    async with make_node("bob") as bob, make_node("carol") as carol:
        room = await read_by(bob, carol)

        async def forwards_nothing(stream: FrameStream) -> None:
            await stream.read_frame()
            asked_at.append(asyncio.get_running_loop().time())
            answer = e2ee.ForwardAnswer(sender_bundle=bob._services.homes.own_bundle, messages=())
            await stream.write_frame(e2ee.encode_forward_answer(answer))

        bob._host.set_stream_handler(e2ee.KEY_FORWARD_PROTOCOL, forwards_nothing)
        config, _ = await link_device(bob, tmp_path / "bob-laptop")
        config = dataclasses.replace(
            config, key_forward_interval_ms=100, key_request_interval_ms=NEVER_MS
        )
        async with asyncio.timeout(60), Node(config) as laptop:
            await laptop.connect(bob.listen_addrs[0])  # syncs carol's message, keyless
            await until_messages(laptop, room, 1)
            await wait_until(lambda: len(asked_at) >= 6)
            assert laptop._services.key_forwarding.keys_taken == 0
    waits = [b - a for a, b in itertools.pairwise(asked_at)]
    assert waits[4] >= 0.8, waits
