"""The client feed (SPEC §15.4): numbered server events, so a client can resume exactly once.

Every durable event a client is told of (message, receipt, membership, friend request) gets
the next number of this process's feed and is kept, serialised once, in a bounded ring. A
client that reconnects with the cursor of the last event it saw gets every later event, then
the live stream, with no gap and no repeat. A cursor of another epoch (the node restarted) or
older than the ring answers `None`: the client re-reads state over HTTP (`resync`).
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

__all__ = ["Feed"]


class Feed:
    """A ring of the last `size` events; cursors are `<epoch>.<number>`."""

    def __init__(self, *, size: int, epoch: str) -> None:
        self._frames: deque[tuple[int, str]] = deque(maxlen=size)
        self._epoch = epoch
        self._last = 0

    @property
    def cursor(self) -> str:
        """The cursor of the newest event (`<epoch>.0` before the first)."""
        return f"{self._epoch}.{self._last}"

    def append(self, frame: dict[str, Any]) -> str:
        """Number `frame`, add its `cursor` field, keep and return its JSON text."""
        self._last += 1
        frame["cursor"] = f"{self._epoch}.{self._last}"
        text = json.dumps(frame, separators=(",", ":"), ensure_ascii=False)
        self._frames.append((self._last, text))
        return text

    def since(self, cursor: str) -> list[str] | None:
        """Every event after `cursor`, oldest first; None if it cannot be answered exactly."""
        epoch, _, number = cursor.partition(".")
        if epoch != self._epoch or not number.isdigit():
            return None
        seen = int(number)
        if seen > self._last:
            return None
        oldest = self._frames[0][0] if self._frames else self._last + 1
        if seen + 1 < oldest:
            return None  # fell out of the ring
        return [text for number_, text in self._frames if number_ > seen]
