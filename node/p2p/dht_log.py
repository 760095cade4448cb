"""py-libp2p's kad-dht WARNINGs made readable: a request's normal end is not one, and the rest
come once a minute per kind, with their count and the error that caused them.

Part of the libp2p bridge (ARCHITECTURE §5, tests/test_layering.py `BRIDGE_MODULES`); serves
SPEC §13.5. `install()` adds one `DhtLogFilter` to each of py-libp2p's two kad-dht loggers; the
filter's state is its own counts, touched under a lock (hosts of one process share it).

What they were (a 10-node `simulate --scale` run's logs: 924 "Failed to read DHT message from
stream", 90 "Failed to store value at peer", both with an empty message; 50 nodes: 3,170 and
544): py-libp2p 0.8.1's server reads a request stream until the asker closes it, and takes
only an `IncompleteReadError` of 0 bytes for the clean end, but its own stream raises
`StreamEOF` there, which it logs as a failed read. Every request served logged one (five hosts
in one process: 20 requests, 20 such WARNINGs, each `StreamEOF` from yamux's "closed for
receiving"). Nothing retries them: the server just ends the stream. So that one, with
`StreamEOF`, is DEBUG. The failed stores were puts of the record the peer already held (the
server answers only a record that wins its `select`; `dht._AppValidator` now lets the same
bytes win), each a `StreamEOF` at the putter, none retried. Any other failed read (a reset, a
stream that broke mid-request) and a failed store (a peer holding a newer record, a reset, a
timeout: a put stores at up to 20 peers, and one that fails misses that one) stay WARNINGs, but
the first of each kind in a minute passes alone, naming the error (and what caused it:
libp2p's stream errors carry no message) and how many the minute before dropped.
"""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass
from typing import Final

from libp2p.network.stream.exceptions import StreamEOF

from hearthmesh.node.p2p.errors import describe_error

__all__ = ["DHT_LOGGERS", "INTERVAL_S", "DhtLogFilter", "install"]

DHT_LOGGERS: Final = ("libp2p.kad_dht.kad_dht", "libp2p.kad_dht.value_store")
"""The loggers whose WARNINGs the filter reads."""
INTERVAL_S: Final = 60.0
"""One record of each kind passes per interval; the others are counted."""
_FAILED_READ: Final = "Failed to read DHT message from stream"
_KINDS: Final = (_FAILED_READ, "Failed to store value at peer")


@dataclass(slots=True)
class _Kind:
    passed_at: float = float("-inf")
    """`created` of the last record of this kind that passed."""
    dropped: int = 0
    """Records dropped since then."""


class DhtLogFilter(logging.Filter):
    """Demotes a failed read that is a clean end, and lets one record of each kind a minute
    through with the count of the others (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._kinds = {kind: _Kind() for kind in _KINDS}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        message = str(record.msg)
        kind = next((k for k in _KINDS if message.startswith(k)), None)
        if kind is None:
            return True
        error = sys.exc_info()[1]  # the handler logs inside its `except`
        if kind == _FAILED_READ and isinstance(error, StreamEOF):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        with self._lock:
            state = self._kinds[kind]
            if record.created - state.passed_at < INTERVAL_S:
                state.dropped += 1
                return False
            dropped, state.dropped, state.passed_at = state.dropped, 0, record.created
        why = describe_error(error)
        record.msg = f"{record.getMessage()} [{why}; {dropped} more like it dropped]"
        record.args = None
        return True

    def dropped(self) -> dict[str, int]:
        """Records dropped per kind since the last one of that kind passed."""
        with self._lock:
            return {kind: state.dropped for kind, state in self._kinds.items()}


def install() -> DhtLogFilter:
    """Add the one `DhtLogFilter` to both kad-dht loggers (idempotent) and return it."""
    for name in DHT_LOGGERS:
        for existing in logging.getLogger(name).filters:
            if isinstance(existing, DhtLogFilter):
                return existing
    dht_filter = DhtLogFilter()
    for name in DHT_LOGGERS:
        logging.getLogger(name).addFilter(dht_filter)
    return dht_filter
