"""The hello exchange `/hearthmesh/hello/0` (SPEC §13.3, §24): home records and clock offsets.

The node that connects sends its users' home records and its clock; the other answers with its
own and with the offset it estimates for the sender's clock, `receive - send` (the seed's
three-timestamp rule, SPEC §4.4). A device takes the offset from its own user's home nodes
only, and corrects its physical clock by it.

`/hearthmesh/hello/1` is the same exchange with each side's capability levels (SPEC §20.5)
after its clock: what a peer says over a connection replaces what it said before, so no caps
stream is opened to a peer that greeted us this way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .canonical import CborValue, decode_canonical, encode_canonical
from .capabilities import Level, level_names, levels_named
from .errors import MalformedMessage

__all__ = [
    "HELLO_LEVELS_PROTOCOL",
    "HELLO_PROTOCOL",
    "MAX_HELLO_BYTES",
    "Hello",
    "decode_hello",
    "encode_hello",
]

HELLO_PROTOCOL: Final = "/hearthmesh/hello/0"
HELLO_LEVELS_PROTOCOL: Final = "/hearthmesh/hello/1"
"""The hello with the sender's capability levels (the form with tag 1)."""
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
    levels: frozenset[Level] | None = None
    """The sender's capability levels (`/hearthmesh/hello/1`); None on `/hearthmesh/hello/0`."""


def encode_hello(hello: Hello) -> bytes:
    """CBOR [0, [record...], sent_ms] or, answering, [0, [record...], sent_ms, offset_ms]; with
    levels, [1, [record...], sent_ms, [name...]] and the offset after the names."""
    value: list[CborValue] = [0, list(hello.records), hello.sent_ms]
    if hello.levels is not None:
        value[0] = 1
        value.append(level_names(hello.levels))
    if hello.offset_ms is not None:
        value.append(hello.offset_ms)
    return encode_canonical(value)


def decode_hello(data: bytes, *, with_levels: bool = False) -> Hello:
    """Parse a hello of the form `with_levels` names (tag 1, or tag 0). Raises
    MalformedMessage or TooLarge."""
    match decode_canonical(data, max_bytes=MAX_HELLO_BYTES):
        case [int() as tag, list() as records, int() as sent_ms, *rest] if (
            tag == int(with_levels)
            and len(records) <= _MAX_RECORDS
            and all(isinstance(r, bytes) for r in records)
            and sent_ms >= 0
        ):
            levels = None
            if with_levels:
                match rest:
                    case [list() as names, *rest]:
                        levels = levels_named(names)
                    case _:
                        raise MalformedMessage("a hello with levels names them after its clock")
            # An absent offset is no last item, never null: one encoding per hello (SPEC §6.1.2).
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
                levels=levels,
            )
    raise MalformedMessage("not a hello")
