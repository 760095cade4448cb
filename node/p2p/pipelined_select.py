"""Multistream-select in one round trip and two writes a stream, not two and four (SPEC §10.1).

Part of the libp2p bridge (ARCHITECTURE §5, tests/test_layering.py `BRIDGE_MODULES`).
`pipeline_negotiation` gives a host both sides; they run on its trio thread.

py-libp2p 0.8.1 agrees on each new stream's protocol in two round trips and four writes: the
opener writes the multistream header and waits for the listener's, then writes the protocol id
and waits for its echo; the listener writes its header at once and the echo later. At 50 nodes
those writes were a quarter of a node's writes a message (SPEC §20.6: 6.5 of 27), each costing
a frame and an encryption on one side and a read on the other.

- The opener (`PipelinedSelectClient`) writes the header and its first protocol id in one write,
  as go-multistream's lazy client and rust-libp2p's V1Lazy do, then reads the header and the
  answer. A listener reads them in order either way, so any peer answers the same; a refused
  first id falls back to py-libp2p's one-at-a-time for the rest.
- The listener (`PipelinedSelect`) reads the opener's header before it writes its own. If the
  protocol id came with it (already in the stream's buffer), the header and the echo (or `na`)
  go out in one write. If not, the opener is one that waits for our header before it names a
  protocol (py-libp2p's own), so the header goes out alone and py-libp2p's loop follows. It
  never waits for bytes an opener would send only after hearing from us: every opener sends its
  header first, unasked.
- A lazy opening (SPEC §10.1) goes further, as V1Lazy does: the opener selects nothing before
  it writes (the host opens a bare stream); `LazyOpening` puts the header and id in front of the
  stream's first
  write (the opener's first frame: one write for all three) and reads the header and the answer
  before its first read. A refusal then comes at that read (`ProtocolNotSupportedError`), so
  only an opener that writes first and handles a refusal there opens lazily.
- Met by a lazy opener (its first frame already in hand after the id), the listener holds its
  header and echo for the stream's first write (its answer) instead of writing them alone, for
  the protocols our host serves itself (`defer_answer`): its stream flushes them on that write
  or at its close (`take_deferred`). A lazy opener does not wait for the echo to send, so
  nothing waits on it; py-libp2p's own handlers (identify, kad, gossip) never take it, so their
  protocols are answered at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from weakref import WeakKeyDictionary

import trio
from libp2p.abc import IMultiselectCommunicator, INetStream
from libp2p.custom_types import StreamHandlerFn, TProtocol
from libp2p.host.basic_host import BasicHost
from libp2p.io.exceptions import IOException
from libp2p.network.stream.net_stream import NetStream
from libp2p.protocol_muxer.exceptions import (
    MultiselectClientError,
    MultiselectCommunicatorError,
    MultiselectError,
    ProtocolNotSupportedError,
)
from libp2p.protocol_muxer.multiselect import (
    DEFAULT_NEGOTIATE_TIMEOUT,
    MULTISELECT_PROTOCOL_ID,
    PROTOCOL_NOT_FOUND_MSG,
    Multiselect,
)
from libp2p.protocol_muxer.multiselect_client import MultiselectClient
from libp2p.protocol_muxer.multiselect_communicator import MultiselectCommunicator
from libp2p.stream_muxer.yamux.yamux import YamuxStream
from libp2p.utils import encode_delim

__all__ = [
    "LazyOpening",
    "PipelinedSelect",
    "PipelinedSelectClient",
    "pipeline_negotiation",
]

_HEADER = encode_delim(MULTISELECT_PROTOCOL_ID.encode())

# What py-libp2p's communicator turns into its own error on a write (QUIC's closed streams too).
_WRITE_ERRORS = (IOException, AssertionError, ValueError)


class LazyOpening:
    """The negotiation a lazy select left to the stream's first write and first read."""

    def __init__(self, stream: INetStream, protocol: TProtocol) -> None:
        self._stream = stream
        self._protocol = protocol
        self._opening: bytes | None = _HEADER + encode_delim(protocol.encode())
        """Header and id, until the first write takes them."""
        self._answered = False

    def first_write(self, data: bytes) -> bytes:
        """`data` with the header and id in front, the first time; as it is after."""
        opening, self._opening = self._opening, None
        return data if opening is None else opening + data

    async def before_read(self) -> None:
        """Read the listener's header and answer, once (the opening goes out first if no write
        took it). Raises ProtocolNotSupportedError on `na`, MultiselectClientError otherwise."""
        if self._answered:
            return
        self._answered = True
        if self._opening is not None:
            await _write(self._stream, self.first_write(b""), MultiselectClientError)
        communicator = MultiselectCommunicator(self._stream)
        header = await _read(communicator, MultiselectClientError)
        if header != MULTISELECT_PROTOCOL_ID:
            raise MultiselectClientError(f"multiselect protocol ID mismatch: got {header!r}")
        answer = await _read(communicator, MultiselectClientError)
        if answer == PROTOCOL_NOT_FOUND_MSG:
            raise ProtocolNotSupportedError(f"protocols not supported: {self._protocol}")
        if answer != self._protocol:
            raise MultiselectClientError(f"unrecognized response: {answer!r} to {self._protocol}")


def pipeline_negotiation(host: BasicHost) -> None:
    """Give `host` both pipelined sides. Call before anything sets a stream handler: the
    handlers live in the muxer, and the new one takes over the old one's table."""
    host.multiselect = PipelinedSelect(host.multiselect.handlers)
    host.multiselect_client = PipelinedSelectClient()


def _stream_of(communicator: IMultiselectCommunicator) -> NetStream | None:
    if isinstance(communicator, MultiselectCommunicator) and isinstance(
        communicator.read_writer, NetStream
    ):
        return communicator.read_writer
    return None


def _buffered(stream: NetStream) -> bool:
    """Whether bytes the peer sent are already in hand (yamux's buffer for the stream); any
    other muxer says no, which costs a write, never a wait."""
    muxed = stream.muxed_stream
    if not isinstance(muxed, YamuxStream):
        return False
    return bool(muxed.conn.stream_buffers.get(muxed.stream_id))


async def _read(communicator: IMultiselectCommunicator, error: type[Exception]) -> str:
    try:
        return await communicator.read()
    except MultiselectCommunicatorError as exc:
        raise error(f"multistream read failed: {exc}") from exc
    except UnicodeDecodeError as exc:  # py-libp2p lets it out of negotiate: the host ended
        raise error(f"multistream line is not UTF-8: {exc}") from exc


async def _write(stream: INetStream, data: bytes, error: type[Exception]) -> None:
    try:
        await stream.write(data)
    except _WRITE_ERRORS as exc:
        raise error(f"multistream write failed: {exc}") from exc


class PipelinedSelect(Multiselect):
    """The listener: our header waits for the opener's, and goes out with the first answer
    (or, to a lazy opener, with the handler's first write)."""

    def __init__(self, handlers: dict[TProtocol | None, StreamHandlerFn | None]) -> None:
        super().__init__(handlers)
        self._deferrable: set[TProtocol] = set()
        self._deferred: WeakKeyDictionary[INetStream, bytes] = WeakKeyDictionary()

    def defer_answer(self, protocol: TProtocol) -> None:
        """`protocol`'s handler takes its stream's held answer (`take_deferred`) and writes it
        with its first write or at its close."""
        self._deferrable.add(protocol)

    def take_deferred(self, stream: INetStream) -> bytes:
        """The header and echo held for `stream` (b"": none, they went out)."""
        return self._deferred.pop(stream, b"")

    async def negotiate(
        self,
        communicator: IMultiselectCommunicator,
        negotiate_timeout: int = DEFAULT_NEGOTIATE_TIMEOUT,
    ) -> tuple[TProtocol | None, StreamHandlerFn | None]:
        stream = _stream_of(communicator)
        if stream is None:
            return await super().negotiate(communicator, negotiate_timeout)
        try:
            with trio.fail_after(negotiate_timeout):
                header = await _read(communicator, MultiselectError)
                if header != MULTISELECT_PROTOCOL_ID:
                    raise MultiselectError(f"multiselect protocol ID mismatch: {header!r}")
                if _buffered(stream):
                    return await self._answer(communicator, stream, _HEADER)
                await _write(stream, _HEADER, MultiselectError)
                return await self._answer(communicator, stream, b"")
        except trio.TooSlowError as exc:
            raise MultiselectError("handshake read timeout") from exc

    async def _answer(
        self, communicator: IMultiselectCommunicator, stream: NetStream, before: bytes
    ) -> tuple[TProtocol | None, StreamHandlerFn | None]:
        """py-libp2p's command loop, with `before` (our header, or nothing) put in front of
        the first answer."""
        while True:
            command = await _read(communicator, MultiselectError)
            protocol = TProtocol(command) if command else None
            if command == "ls":
                listed = "\n".join(p for p in self.handlers if p is not None) + "\n"
                answer = listed
            elif protocol in self.handlers:
                answer = command
            else:
                answer = PROTOCOL_NOT_FOUND_MSG
            if protocol in self._deferrable and _buffered(stream):  # a lazy opener's frame
                self._deferred[stream] = before + encode_delim(answer.encode())
                return protocol, self.handlers[protocol]
            await _write(stream, before + encode_delim(answer.encode()), MultiselectError)
            before = b""
            if command != "ls" and protocol in self.handlers:
                return protocol, self.handlers[protocol]


class PipelinedSelectClient(MultiselectClient):
    """The opener: header and first protocol id in one write, one round trip to agree."""

    async def select_one_of(
        self,
        protocols: Sequence[TProtocol],
        communicator: IMultiselectCommunicator,
        negotiate_timeout: int = DEFAULT_NEGOTIATE_TIMEOUT,
    ) -> TProtocol:
        stream = _stream_of(communicator)
        if stream is None or not protocols:
            return await super().select_one_of(protocols, communicator, negotiate_timeout)
        first, rest = protocols[0], protocols[1:]
        with trio.move_on_after(negotiate_timeout):
            await _write(stream, _HEADER + encode_delim(first.encode()), MultiselectClientError)
            header = await _read(communicator, MultiselectClientError)
            if header != MULTISELECT_PROTOCOL_ID:
                raise MultiselectClientError(f"multiselect protocol ID mismatch: got {header!r}")
            answer = await _read(communicator, MultiselectClientError)
            if answer == first:
                return first
            if answer != PROTOCOL_NOT_FOUND_MSG:
                raise MultiselectClientError(f"unrecognized response: {answer!r} to {first}")
            for protocol in rest:  # the rare second choice: one round trip each, as before
                try:
                    return await self.try_select(communicator, protocol)
                except ProtocolNotSupportedError:
                    continue
            raise MultiselectClientError(f"protocols not supported: tried {list(protocols)}")
        raise MultiselectClientError(
            f"response timed out after {negotiate_timeout}s, protocols tried: {list(protocols)}"
        )
