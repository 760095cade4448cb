"""The cases of level `e2ee` (SPEC §20.5) where the kit is a sender whose Megolm session the
node holds (SPEC §27.11-§27.13): a newcomer's message waits at the node for its key, and the
newcomer's home answers the node's key requests as each case scripts. State: none.

What a case reads of the node: the requests it makes (on our host), the `undecryptable` count
of `/v1/node/status` and what the node's user is shown (the client API). The count is the
node's, not the case's: a case reads it as a difference from its value at the case's start,
so these cases run before any other leaves a session held at the node.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Final, TypeVar

from hearthmesh.protocol import e2ee
from hearthmesh.protocol.capabilities import Level
from hearthmesh.protocol.envelope import RoomId
from hearthmesh.protocol.errors import HearthError, KeyRequestDenied, NotListed
from hearthmesh.protocol.rooms import direct_room_id
from hearthmesh.tools.hostile.megolm_sender import AskedLog, MegolmSender

from ..session import Session
from .case import Case
from .shared import newcomer_home, node_bundle

__all__ = [
    "KEY_ANSWERS_FORGED_THEN_RIGHT",
    "KEY_REFUSED_NOT_LISTED_FOREVER",
    "KEY_REFUSED_THEN_SHARED",
    "shown_as",
]

ASKS_WAIT_S: Final = e2ee.last_counted_request_ms(2_000, 10_000, not_listed=4) / 1000
"""How long a node at SPEC's defaults takes at most to ask a sender that refuses NOT_LISTED
forever the requests that count its session undecryptable (144 s; at our tests' 250 ms
interval some 8 s): a case waits that plus its `Session.wait_s` for the count."""
T = TypeVar("T")

POLL_S: Final = 0.05
"""How often a case reads the node's status while it waits for the count to move."""


@dataclass(frozen=True, slots=True)
class _Held:
    """A newcomer's message the node holds, its sender, and the node's device bundle."""

    sender: MegolmSender
    theirs: e2ee.KeyBundle
    message_id: str
    room: str
    text: str
    before: int
    """The node's undecryptable count before the message came."""


async def _read_until(
    read: Callable[[], Awaitable[T]], done: Callable[[T], bool], wait_s: float
) -> T:
    """`read()` every POLL_S until `done` of what it read (the client API has no event for
    what these cases wait on), for `wait_s` at most; the last read."""
    value = await read()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait_s):
            while not done(value):
                await asyncio.sleep(POLL_S)
                value = await read()
    return value


async def _undecryptable(s: Session) -> int:
    assert s.api is not None
    return int((await s.api.call("GET", "/v1/node/status"))["undecryptable"])


@contextlib.asynccontextmanager
async def _held_at_the_node(s: Session, text: str) -> AsyncIterator[_Held | str]:
    """A newcomer (a user and home of its own, known to the node by its hello with its key
    bundle) seals `text` in a Megolm session of their direct room and delivers it, its key
    never shared: the node stores it held (§27.7.1). Yields the held message, or what failed."""
    theirs = await node_bundle(s)
    if isinstance(theirs, str):
        yield theirs
        return
    async with newcomer_home(s, greet=False) as (newcomer, _):
        room = direct_room_id(newcomer.user_id, s.user)
        sender = MegolmSender(newcomer, room)
        await sender.announce(s.peer_id)  # its record lists our bundle: the node asks us
        before = await _undecryptable(s)
        message = sender.encrypted(text)
        got = ",".join(await newcomer.deliver_wires(s.peer_id, [message.wire], s.user))
        if got != "STORED":
            yield f"DELIVERED:{got}"
            return
        yield _Held(sender, theirs, message.message_id.hex(), room.hex(), text, before)


async def _counted_at_asks(
    s: Session, held: _Held, answer: Callable[[int], Awaitable[bytes]]
) -> tuple[list[int], AskedLog[e2ee.KeyRequest]]:
    """Answer the node's key requests with `answer(n)`, noting the count (less `held.before`)
    as each comes, until the count rises; the counts at the asks, and the log of them."""
    counts: list[int] = []

    async def script(n: int, _: e2ee.KeyRequest) -> bytes:
        counts.append(await _undecryptable(s) - held.before)
        return await answer(n)

    log = held.sender.serve_key_requests(script)
    await _read_until(
        lambda: _undecryptable(s), lambda now: now > held.before, ASKS_WAIT_S + s.wait_s
    )
    return counts, log


def _uncounted(counts: list[int], now: int) -> str:
    """`UNCOUNTED:<asks the count showed 0 at, before it first rose>,THEN:<the count now>`."""
    zeros = next((n for n, count in enumerate(counts) if count), len(counts))
    return f"UNCOUNTED:{zeros},THEN:{now}"


async def _refused_not_listed_forever(s: Session) -> str:
    """§27.13.3: the newcomer's home answers every key request NOT_LISTED. The first four are
    not counted (its record may not have reached the sender yet); then they count, and the
    message counts undecryptable once the fifth counted request ended: at the node's tenth
    request, not before (a node counting each request as it went showed it at the ninth)."""
    async with _held_at_the_node(s, "never listed") as held:
        if isinstance(held, str):
            return held
        refusal = held.sender.refusal(NotListed("who are you?"))

        async def not_listed(_: int) -> bytes:
            return refusal

        counts, _ = await _counted_at_asks(s, held, not_listed)
        return _uncounted(counts, await _undecryptable(s) - held.before)


async def _refused_then_shared(s: Session) -> str:
    """§27.13.3 and §27.11.1: the newcomer's home refuses the node's key requests
    KEY_REQUEST_DENIED; after five the message counts undecryptable. Then, while the node's
    next request is out (held open here), the room key comes by the normal share, a ROOM_KEY
    from index 0: the message opens, and the count drops then, not when that request ends or
    at the node's next look (at most 30 s later)."""
    async with _held_at_the_node(s, "shared at last") as held:
        if isinstance(held, str):
            return held
        refusal = held.sender.refusal(KeyRequestDenied("not a member"))
        hold = asyncio.Event()
        release = asyncio.Event()

        async def denied(n: int) -> bytes:
            if n >= e2ee.KEY_REQUEST_ATTEMPTS:
                hold.set()
                await release.wait()
            return refusal

        counts, log = await _counted_at_asks(s, held, denied)
        counted = _uncounted(counts, await _undecryptable(s) - held.before)
        try:
            async with asyncio.timeout(ASKS_WAIT_S + s.wait_s):
                await hold.wait()
        except TimeoutError:
            return f"{counted},NO-REQUEST-TO-HOLD"
        key = held.sender.room_key(held.theirs, from_first=True)
        got = ",".join(await held.sender.kit.deliver_wires(s.peer_id, [key.wire], s.user))
        dropped = await _dropped_while_asked(s, held, log)
        release.set()
        return f"{counted},SHARED:{got},{dropped}"


async def _dropped_while_asked(s: Session, held: _Held, log: AskedLog[e2ee.KeyRequest]) -> str:
    """`COUNT:0` once the count is back to where it was while the held request is still out;
    else the count when that request ended (`ASK-ENDED:<n>`) or the wait ran out."""
    out = len(log.requests) - 1  # requests ended while the last one is held
    now = await _read_until(
        lambda: _undecryptable(s), lambda now: now <= held.before or log.ended > out, s.wait_s
    )
    return f"COUNT:{now - held.before}" if log.ended <= out else f"ASK-ENDED:{now - held.before}"


async def _forged_then_right(s: Session) -> str:
    """§27.13.2 and §27.12.2: the newcomer's home answers the node's first key request with a
    key of another session under our session's id (`KEY_MISMATCH`), its second with a frame
    that is no answer (`MALFORMED`), its third with the right key. Neither bad answer changes
    what the node holds: the message is still held when the node asks again (it asks only
    once a request ended), and the right key opens it (a node that kept the forged key, the
    first of its session id, would never open it)."""
    async with _held_at_the_node(s, "the right key opens me") as held:
        if isinstance(held, str):
            return held
        answers = (
            held.sender.forged_answer(held.theirs),
            e2ee.encode_forward_request([(RoomId(bytes(32)), bytes(32))]),  # no answer
            held.sender.answer(held.theirs),
        )
        seen: list[str] = []

        async def script(n: int, _: e2ee.KeyRequest) -> bytes | None:
            if 0 < n <= len(answers):  # what the answer before left
                seen.append(await _shown_as(s, held))
            return answers[n] if n < len(answers) else None

        log = held.sender.serve_key_requests(script)
        with contextlib.suppress(TimeoutError):  # the node asks three times: ~7 intervals
            async with asyncio.timeout(ASKS_WAIT_S + s.wait_s):
                await log.wait_for(lambda log: log.ended >= len(answers))
        shown = await _read_until(
            lambda: _shown_as(s, held), lambda shown: shown == "OPENED", s.wait_s
        )
        forged, malformed = [*seen, "not-asked-again", "not-asked-again"][:2]
        return f"FORGED:{forged},MALFORMED:{malformed},RIGHT:{shown}"


async def _shown_as(s: Session, held: _Held) -> str:
    return await shown_as(s, held.room, held.message_id, held.text)


async def shown_as(s: Session, room: str, message_id: str, text: str) -> str:
    """What the node's user is shown of a held message (hex ids): `held` (nothing, or
    ciphertext: a held message is not shown, §27.13.5), `OPENED` (its `text`), or its type."""
    assert s.api is not None
    try:
        page = await s.api.call("GET", f"/v1/conversation/{room}/details", params={"limit": "100"})
    except HearthError as exc:
        return f"api:{type(exc).__name__}"
    view = next((m for m in page["messages"] if m["message_id"] == message_id), None)
    if view is None or view["type"] == "encrypted":
        return "held"
    return "OPENED" if view.get("message") == text else str(view["type"])


KEY_REFUSED_NOT_LISTED_FOREVER: Final = Case(
    name="key_refused_not_listed_forever",
    section="§27.13.3",
    expected="UNCOUNTED:9,THEN:1",
    run=_refused_not_listed_forever,
    needs_api=True,
    level=Level.E2EE,
)

KEY_REFUSED_THEN_SHARED: Final = Case(
    name="key_refused_then_shared",
    section="§27.13.3, §27.11.1",
    expected="UNCOUNTED:5,THEN:1,SHARED:STORED,COUNT:0",
    run=_refused_then_shared,
    needs_api=True,
    level=Level.E2EE,
)

KEY_ANSWERS_FORGED_THEN_RIGHT: Final = Case(
    name="key_answers_forged_then_right",
    section="§27.13.2, §27.12.2",
    expected="FORGED:held,MALFORMED:held,RIGHT:OPENED",
    run=_forged_then_right,
    needs_api=True,
    level=Level.E2EE,
)
