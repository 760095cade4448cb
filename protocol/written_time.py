"""The seed's three timestamps (SPEC §31.6), sans-I/O: where a message a client wrote earlier
(offline, say) sorts in history.

A client may give, by its own clock, when a message was written and when it sent it. Its home
corrects both by the offset between the two clocks, `offset = received - sent` (the rule of
SPEC §4.4 and §24, per message), so the client's clock error cancels out: the message is
stamped at `written + offset`, at most `received`, and at most MAX_BACKDATE_MS before it. A
written time after the sent time is taken as the sent time.
Owns no state.
"""

from __future__ import annotations

from typing import Final

from .hlc import Timestamp

__all__ = ["MAX_BACKDATE_MS", "written_stamp"]

MAX_BACKDATE_MS: Final = 7 * 24 * 3600 * 1000
"""How far before its arrival at the home a message may sort: a week offline."""


def written_stamp(*, written_ms: int, sent_ms: int, received_ms: int, now: Timestamp) -> Timestamp:
    """The HLC stamp of a message written at `written_ms` and sent at `sent_ms` (client clock),
    received at `received_ms` (home clock); `now` is the stamp it would get otherwise."""
    corrected = min(written_ms, sent_ms) + (received_ms - sent_ms)
    corrected = max(corrected, received_ms - MAX_BACKDATE_MS, 0)
    if corrected >= now.wall_ms:
        return now  # written just now: the ordinary stamp
    # Earlier than our clock: a stamp of its own in the past. The counter 0 and the sender's
    # device and sequence number in the history key keep it distinct (SPEC §4.5).
    return Timestamp(wall_ms=corrected, counter=0)
