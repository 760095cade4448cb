"""The hello exchange `/hearthmesh/hello/0` (SPEC §13.3, §24): home records and clock offsets.

The node that connects sends its users' home records and its clock; the other answers with its
own and with the offset it estimates for the sender's clock, `receive - send` (the seed's
three-timestamp rule, SPEC §4.4). A device takes the offset from its own user's home nodes
only, and corrects its physical clock by it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .canonical import CborValue, decode_canonical, encode_canonical
from .errors import MalformedMessage

__all__ = ["HELLO_PROTOCOL", "MAX_HELLO_BYTES", "Hello", "decode_hello", "encode_hello"]

HELLO_PROTOCOL: Final = "/hearthmesh/hello/0"
MAX_HELLO_BYTES: Final = 64 * 1024
_MAX_RECORDS: Final = 8
_MAX_OFFSET_MS: Final = 10 * 365 * 24 * 3600 * 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    records: tuple[bytes, ...]
    """Home records (unverified bytes) of the sender's users."""
    sent_ms: int
    """The sender's clock when it sent this."""
    offset_ms: int | None = None
    """Only in an answer: the answering node's estimate of the asker's clock offset."""


def encode_hello(hello: Hello) -> bytes:
    """CBOR [0, [record...], sent_ms] or, answering, [0, [record...], sent_ms, offset_ms]."""
    value: list[CborValue] = [0, list(hello.records), hello.sent_ms]
    if hello.offset_ms is not None:
        value.append(hello.offset_ms)
    return encode_canonical(value)


def decode_hello(data: bytes) -> Hello:
    """Parse a hello. Raises MalformedMessage or TooLarge."""
    match decode_canonical(data, max_bytes=MAX_HELLO_BYTES):
        case [0, list() as records, int() as sent_ms, *rest] if (
            len(records) <= _MAX_RECORDS
            and all(isinstance(r, bytes) for r in records)
            and sent_ms >= 0
            and len(rest) <= 1
        ):
            # An absent offset is no 4th item, never null: one encoding per hello (SPEC §6.1.2).
            match rest:
                case []:
                    offset = None
                case [int() as offset] if abs(offset) <= _MAX_OFFSET_MS:
                    pass
                case _:
                    raise MalformedMessage("hello offset is an integer in range")
            return Hello(
                records=tuple(r for r in records if isinstance(r, bytes)),
                sent_ms=sent_ms,
                offset_ms=offset,
            )
    raise MalformedMessage("not a hello")
