"""One varint-framed protobuf message from a peer, read within a bound and refused with our
codes (SPEC §11.6.1): kad's requests and answers (§13.4.1, §13.5) and WebRTC signaling (§10.11).

Part of the libp2p bridge (ARCHITECTURE §5, tests/test_layering.py `BRIDGE_MODULES`); runs on
the trio thread. State: none.
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtobufMessage
from libp2p.abc import INetStream
from libp2p.exceptions import ParseError
from libp2p.io.exceptions import MessageTooLarge
from libp2p.utils.varint import read_varint_prefixed_bytes_limited

from hearthmesh.protocol.errors import MalformedMessage, TooLarge

__all__ = ["parse_message", "read_message_bytes"]

M = TypeVar("M", bound=ProtobufMessage)


async def read_message_bytes(stream: INetStream, max_bytes: int, what: str) -> bytes:
    """The bytes of the next message on `stream` (`what` names it in an error). A stream that
    ends or fails raises as py-libp2p's read does: an honest peer's stream ends too.

    Raises:
        TooLarge: its length is over `max_bytes`.
        MalformedMessage: its length does not parse.
    """
    try:
        return await read_varint_prefixed_bytes_limited(stream, max_bytes)
    except MessageTooLarge as exc:
        raise TooLarge(f"{what}: {exc}") from None
    except ParseError as exc:
        raise MalformedMessage(f"{what}'s length: {exc}") from None


def parse_message(data: bytes, message: M, what: str) -> M:
    """`message` parsed from `data`. Raises MalformedMessage: `data` is no such message."""
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise MalformedMessage(f"{what} that is no such message: {exc}") from None
    return message
