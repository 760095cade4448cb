"""One greeting per connection (SPEC §13.3): every new connection to a peer, however it came
(dialled, accepted, found by mDNS or bootstrap), leads to exactly one hello from us.

The host reports a peer's first connection and its last disconnection; `Greetings` starts the
meeting once on the first and forgets it on the second, so a reconnect greets again and a
flurry of calls for one connection never does. Whoever dialled can wait for the same meeting.
A meeting that fails while the connection stays up is tried again a few times
(`HELLO_RETRY_DELAYS_S`): nothing else would greet that peer until the connection closes, and
its home record, learnt by the hello, is how we reach its user (a 25-node group's creator,
connected to every home, had no record of three members whose hellos failed as the mesh came
up, and parked their deliveries with the absent members', SPEC §13.3).

State: the current meeting with each connected peer (or its retry, waiting its delay).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final

from hearthmesh.protocol.errors import HearthError, store_failed

__all__ = ["HELLO_RETRY_DELAYS_S", "Greetings"]

log = logging.getLogger(__name__)

HELLO_RETRY_DELAYS_S: Final = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, *(60.0,) * 5)
"""Seconds before each new try of a failed hello on a connection still up (SPEC §13.3), about
7 minutes in all: a stream that failed to open while the mesh came up on a loaded machine
(10 nodes at load 34: over 200 failed hellos, each connection's streams failing for a minute
or more) opens later, and a peer that never answers costs a stream a minute for a while."""


class _Greeting:
    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.error: HearthError | None = None


class Greetings:
    """The current connection's meeting with each connected peer."""

    def __init__(
        self,
        *,
        meet: Callable[[str], Awaitable[None]],
        spawn: Callable[[Coroutine[Any, Any, None], str], None],
        retry_delays_s: tuple[float, ...] = HELLO_RETRY_DELAYS_S,
    ) -> None:
        self._meet = meet
        self._spawn = spawn
        self._retry_delays_s = retry_delays_s
        self._current: dict[str, _Greeting] = {}
        self.started = 0
        """Meetings started (one per connection per peer)."""
        self.retried = 0
        """Hellos tried again after a failure on a connection still up."""

    def start(self, peer: str) -> None:
        """Meet `peer` unless this connection's meeting already started (idempotent)."""
        if peer in self._current:
            return
        greeting = self._current[peer] = _Greeting()
        self.started += 1
        self._spawn(self._run(peer, greeting), f"hello-{peer[-8:]}")

    def forget(self, peer: str) -> None:
        """The peer's last connection closed: the next one is met anew."""
        self._current.pop(peer, None)

    async def wait(self, peer: str) -> None:
        """Meet `peer` if not yet met on this connection, and wait for it.

        Raises:
            HearthError: what the meeting raised (a failed hello, a refusing peer).
        """
        self.start(peer)
        greeting = self._current[peer]
        await greeting.done.wait()
        if greeting.error is not None:
            raise greeting.error

    async def _run(self, peer: str, greeting: _Greeting) -> None:
        delays = iter(self._retry_delays_s)
        while True:
            try:
                await self._meet(peer)
                return
            except HearthError as exc:
                greeting.error = exc
                if store_failed(exc):  # the store failed: the node fail-stops, no retry
                    raise
            except asyncio.CancelledError:
                greeting.error = HearthError("the node stopped before the hello ended")
                raise
            finally:
                greeting.done.set()  # waiters see this try's outcome; a retry is a new meeting
            delay = next(delays, None)
            if self._current.get(peer) is not greeting:
                return  # the connection closed meanwhile: the next one is met anew
            if delay is None:
                del self._current[peer]  # given up: a later connect or dial tries again
                log.info("hello with %s failed: %s", peer[-8:], greeting.error)
                return
            log.info("hello with %s failed (%s); again in %g s", peer[-8:], greeting.error, delay)
            greeting = self._current[peer] = _Greeting()  # `start` and `wait` join the retry
            await asyncio.sleep(delay)
            if self._current.get(peer) is not greeting:
                return
            self.retried += 1
