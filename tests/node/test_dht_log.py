"""py-libp2p's kad-dht WARNINGs sorted (node/p2p/dht_log.py), with its own stream errors."""

from __future__ import annotations

import logging

from libp2p.network.stream.exceptions import StreamEOF, StreamReset
from libp2p.stream_muxer.exceptions import MuxedStreamEOF, MuxedStreamReset

from hearthmesh.node.p2p.dht_log import INTERVAL_S, DhtLogFilter

READS = "libp2p.kad_dht.kad_dht"
STORES = "libp2p.kad_dht.value_store"


def _logged(
    dht_filter: DhtLogFilter, name: str, msg: str, error: BaseException, at: float
) -> logging.LogRecord | None:
    """The record py-libp2p logs inside its `except` for `error`, at time `at`, if it passes."""
    args = (error,) if "%s" in msg else ()  # value_store formats its own (an f-string)
    record = logging.LogRecord(name, logging.WARNING, "kad_dht.py", 1, msg, args, None)
    record.created = at
    try:
        raise error
    except type(error):
        return record if dht_filter.filter(record) else None


def _reset() -> StreamReset:
    try:
        raise StreamReset() from MuxedStreamReset("Stream was reset")
    except StreamReset as error:
        return error


def test_a_clean_end_of_a_request_stream_is_no_warning() -> None:
    dht_filter = DhtLogFilter()
    eof = StreamEOF()
    eof.__cause__ = MuxedStreamEOF("Stream is closed for receiving")
    for at in range(100):
        record = _logged(dht_filter, READS, "Failed to read DHT message from stream: %s", eof, at)
        assert record is None or record.levelno == logging.DEBUG  # passes only at DEBUG
    assert dht_filter.dropped() == {
        "Failed to read DHT message from stream": 0,
        "Failed to store value at peer": 0,
    }


def test_other_failures_pass_once_an_interval_with_their_cause_and_count() -> None:
    dht_filter = DhtLogFilter()
    read = "Failed to read DHT message from stream: %s"
    first = _logged(dht_filter, READS, read, _reset(), 1000.0)
    assert first is not None and first.levelno == logging.WARNING
    assert first.getMessage() == (
        "Failed to read DHT message from stream:  [StreamReset <- MuxedStreamReset: Stream was "
        "reset; 0 more like it dropped]"
    )
    for at in (1001.0, 1030.0, 1000.0 + INTERVAL_S - 0.1):
        assert _logged(dht_filter, READS, read, _reset(), at) is None
    # A store's failure is another kind: it passes although a read's was just logged.
    store = "Failed to store value at peer 12D3KooWPeer: "
    stored = _logged(dht_filter, STORES, store, TimeoutError(), 1001.0)
    assert stored is not None and "TimeoutError; 0 more like it dropped" in stored.getMessage()
    assert dht_filter.dropped()["Failed to read DHT message from stream"] == 3
    later = _logged(dht_filter, READS, read, _reset(), 1000.0 + INTERVAL_S)
    assert later is not None and "3 more like it dropped" in later.getMessage()


def test_other_warnings_are_left_alone() -> None:
    dht_filter = DhtLogFilter()
    for at in (1.0, 2.0):
        other = _logged(dht_filter, READS, "Incomplete DHT message from stream: %s", _reset(), at)
        assert other is not None and other.levelno == logging.WARNING
        assert other.getMessage() == "Incomplete DHT message from stream: "
