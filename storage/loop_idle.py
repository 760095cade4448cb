"""`LoopIdle`: whether an event loop has nothing to run right now, for `AsyncStore`'s in-place
commit (ARCHITECTURE §10).

A commit made on the loop's thread holds the loop for its two device flushes, so it is made
only when the loop would otherwise wait: no callback ready and no descriptor it watches ready
(a client's frame already on its socket, the trio thread's or the writer's wake-up). Neither
asyncio nor uvloop says either in public API, so the probe reads what each keeps: the ready
queue, a `deque` in both (asyncio's `_ready`; uvloop's is a Cython attribute, reached through
`gc.get_referents`, where it is the loop's only deque), and the descriptor the loop polls
(asyncio's selector, libuv's backend: `_get_backend_id`), which is readable while any
descriptor it watches is ready. A loop that offers no ready queue counts as never idle, so
its commits go to the writer thread.

State: a `LoopIdle` holds references to its loop's ready queue and polled descriptor, built on
and called from that loop's thread (`AsyncStore`).
"""

from __future__ import annotations

import asyncio
import collections
import gc
import select
from typing import Any, Final

__all__ = ["LoopIdle"]

_NOT_FOUND: Final = None


class LoopIdle:
    """A probe of one loop, built on that loop's thread; call it to ask whether it is idle."""

    __slots__ = ("_poll", "_ready")

    def __init__(self, loop: asyncio.AbstractEventLoop, *, watch_io: bool = True) -> None:
        self._ready = _ready_queue(loop)
        self._poll: select.poll | None = None
        fd = _polled_fd(loop) if watch_io else None
        if fd is not None:
            self._poll = select.poll()
            self._poll.register(fd, select.POLLIN)

    @property
    def known(self) -> bool:
        """Whether the probe can tell an idle loop at all (it found the ready queue)."""
        return self._ready is not None

    def __call__(self) -> bool:
        """No callback is ready and, as far as the loop's poll can tell, no I/O either."""
        if self._ready is None or self._ready:
            return False
        return self._poll is None or not self._poll.poll(0)


def _ready_queue(loop: asyncio.AbstractEventLoop) -> collections.deque[Any] | None:
    ready = getattr(loop, "_ready", _NOT_FOUND)  # asyncio's BaseEventLoop
    if isinstance(ready, collections.deque):
        return ready
    if type(loop).__module__.startswith("uvloop"):
        # A cdef attribute: not an attribute from Python, but the loop's traversal yields it.
        found = [r for r in gc.get_referents(loop) if type(r) is collections.deque]
        if len(found) == 1:
            return found[0]
    return None


def _polled_fd(loop: asyncio.AbstractEventLoop) -> int | None:
    selector = getattr(loop, "_selector", _NOT_FOUND)
    if selector is not None and hasattr(selector, "fileno"):  # epoll, kqueue, devpoll
        return int(selector.fileno())
    backend = getattr(loop, "_get_backend_id", _NOT_FOUND)  # uvloop: libuv's epoll descriptor
    if backend is not None:
        return int(backend())
    return None
