"""What a peer's kad request to our DHT server costs it (SPEC §13.4.1, §11.6.1).

Part of the libp2p bridge (ARCHITECTURE §5, tests/test_layering.py `BRIDGE_MODULES`); runs on
the trio thread, and hands each charge to the host's refusal handler, which carries it to the
node's `PeerStanding` on the event loop (the standing's owner). State: none of its own; each
`JudgedRequests` is one served stream's, and `_PUSHER` is the serving task's context.

py-libp2p 0.8.1 serves kad itself (`KadDHT._do_handle_stream`): a request it cannot take is
logged and its stream reset, with no word of who sent it or why. Two hooks see it instead:

- `JudgedRequests` wraps the served stream and reads each request whole before py-libp2p
  does: a length over `MAX_REQUEST_BYTES` (`TOO_LARGE`, py-libp2p reads up to 4 MiB), a
  length or bytes that are no kad message, or a PUT_VALUE without a record, with an empty
  key or value, a key that is not UTF-8 or a record whose key is not the message's
  (`MALFORMED`) is charged as a whole frame and the stream reset before py-libp2p sees it.
- `JudgedValidator` is py-libp2p's validator, which its server runs on a PUT_VALUE's record
  (and on nothing else it is asked): a refusal while serving a peer's stream (`_PUSHER` set
  by `serving`) is charged to that peer when `charged_when_pushed` says no honest pusher
  sends it. A record older than the one held is not refused by the validator (it loses the
  select and is not stored), so it costs nothing; neither does a certificate expired by our
  clock. The same validator run for our own puts and for the answers to our gets has no
  pusher and charges no one (an answer's record is judged by SPEC §13.5's rule instead).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Final

from libp2p.abc import INetStream
from libp2p.kad_dht.pb.kademlia_pb2 import Message, Record
from libp2p.records.utils import InvalidRecordType
from libp2p.records.validator import NamespacedValidator, Validator
from libp2p.utils.varint import encode_varint_prefixed

from hearthmesh.node.p2p.varint_messages import parse_message, read_message_bytes
from hearthmesh.protocol.errors import (
    InvalidIdentifier,
    MalformedMessage,
    RemoteProtocolError,
)
from hearthmesh.protocol.home_dht import charged_when_pushed

__all__ = [
    "MAX_REQUEST_BYTES",
    "JudgedRequests",
    "JudgedValidator",
    "KadRefused",
    "encode_put_value",
    "request_fault",
    "serving",
]

MAX_REQUEST_BYTES: Final = 64 * 1024
"""A kad request we read at most: a PUT_VALUE of a home record (12 KiB) with its sender's
signed peer record fits five times over (py-libp2p reads up to 4 MiB from anyone)."""

KadRefused = Callable[[str, RemoteProtocolError], None]
"""`refused(peer id, error)`: a peer's kad request cannot be right (trio thread; a whole
frame, SPEC §11.6.1)."""

_PUSHER: ContextVar[str | None] = ContextVar("kad_pusher", default=None)
"""The peer whose kad stream the current trio task serves (None outside a served stream)."""


@contextmanager
def serving(peer: str) -> Iterator[None]:
    """Within it, a validator refusal is a refusal of what `peer` pushed (one serving task;
    trio gives each task its own copy of the context)."""
    token = _PUSHER.set(peer)
    try:
        yield
    finally:
        _PUSHER.reset(token)


class JudgedValidator(NamespacedValidator):
    """py-libp2p's namespaced validator (strict) whose refusals of a record a peer pushed
    charge that peer (see the module docstring)."""

    def __init__(self, validators: dict[str, Validator], refused: KadRefused) -> None:
        super().__init__(validators, strict_validation=True)
        self._refused = refused

    def validate(self, key: str, value: bytes) -> None:
        try:
            super().validate(key, value)
        except RemoteProtocolError as exc:
            self._charge(exc)
            raise
        except InvalidRecordType as exc:  # strict mode: a key in no namespace we hold
            # (only this: an unexpected error of our validator is our fault, not the pusher's)
            self._charge(InvalidIdentifier(f"a DHT key outside our namespace: {exc}"))
            raise

    def _charge(self, error: RemoteProtocolError) -> None:
        pusher = _PUSHER.get()
        if pusher is not None and charged_when_pushed(error):
            self._refused(pusher, error)


class JudgedRequests:
    """A served kad stream whose requests are read whole, and judged, before py-libp2p reads
    them (see the module docstring); everything else passes through."""

    def __init__(self, stream: INetStream, peer: str, refused: KadRefused) -> None:
        self._stream = stream
        self._peer = peer
        self._refused = refused
        self._held = b""
        """The rest of the request read and judged, as py-libp2p will read it."""

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)

    async def read(self, n: int | None = None) -> bytes:
        if not self._held:
            self._held = await self._next_request()
        if n is None or n >= len(self._held):
            data, self._held = self._held, b""
        else:
            data, self._held = self._held[:n], self._held[n:]
        return data

    async def _next_request(self) -> bytes:
        """The next request, framed as it came. A stream that ends or fails raises as
        py-libp2p's own read would (not charged: an honest peer's stream ends too).

        Raises:
            RemoteProtocolError: the request cannot be right; charged to the peer.
        """
        try:
            data = await read_message_bytes(self._stream, MAX_REQUEST_BYTES, "a kad request")
        except RemoteProtocolError as exc:
            raise self._charged(exc) from None
        error = request_fault(data)
        if error is not None:
            raise self._charged(error)
        return encode_varint_prefixed(data)

    def _charged(self, error: RemoteProtocolError) -> RemoteProtocolError:
        self._refused(self._peer, error)
        return error


def encode_put_value(key: str, value: bytes, *, record_key: str | None = None) -> bytes:
    """A framed PUT_VALUE of `value` under `key` (its record's key `record_key`, if given): what
    a peer pushes, for the hostile kit outside the bridge."""
    record = Record(key=(record_key or key).encode(), value=value)
    message = Message(type=Message.MessageType.PUT_VALUE, key=key.encode(), record=record)
    return encode_varint_prefixed(message.SerializeToString())


def request_fault(data: bytes) -> RemoteProtocolError | None:
    """Why a kad request's bytes cannot come from an honest peer, or None (SPEC §13.4.1)."""
    try:
        message = parse_message(data, Message(), "a kad request")
    except MalformedMessage as exc:
        return exc
    if message.type != Message.MessageType.PUT_VALUE:
        return None
    record = message.record
    if not message.HasField("record") or not record.key or not record.value:
        return MalformedMessage("a PUT_VALUE without a record's key and value")
    if record.key != message.key:
        return MalformedMessage("a PUT_VALUE whose record's key is not the message's")
    try:
        record.key.decode("utf-8")
    except UnicodeDecodeError:
        return MalformedMessage("a PUT_VALUE whose key is not UTF-8")
    return None
