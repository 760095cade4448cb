"""One greeting per connection (SPEC §13.3): every new connection to a peer, however it came
(dialled, accepted, found by mDNS or bootstrap), leads to exactly one hello from us.

The host reports a peer's first connection and its last disconnection; `Greetings` starts the
meeting once on the first and forgets it on the second, so a reconnect greets again and a
flurry of calls for one connection never does. Whoever dialled can wait for the same meeting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from hearthmesh.protocol.errors import HearthError

__all__ = ["Greetings"]

log = logging.getLogger(__name__)


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
    ) -> None:
        self._meet = meet
        self._spawn = spawn
        self._current: dict[str, _Greeting] = {}
        self.started = 0
        """Meetings started (one per connection per peer)."""

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
        try:
            await self._meet(peer)
        except HearthError as exc:
            greeting.error = exc
            if self._current.get(peer) is greeting:
                del self._current[peer]  # failed: a later connect may try again
            log.info("hello with %s failed: %s", peer[-8:], exc)
        except asyncio.CancelledError:
            greeting.error = HearthError("the node stopped before the hello ended")
            raise
        finally:
            greeting.done.set()
