"""Media types (RFC 6838 §4.2, RFC 9110 §8.3.1): one syntax check for every declared type.

A content type reaches us from a client (`POST /v1/media`'s Content-Type, a `send` frame's
`media.content_type`) or from a peer (a media message's body, SPEC §25); either way it is later
written into an HTTP header when the blob is downloaded. So it is checked where it enters, by
this one function: `type/subtype` of RFC 6838 restricted names, then optional `; name=value`
parameters, printable ASCII only (no CR/LF, no control character), at most
`MAX_MEDIA_TYPE_CHARS` (SPEC §15.5.3).
"""

from __future__ import annotations

import re
from typing import Final

from .errors import MalformedMessage

__all__ = ["MAX_MEDIA_TYPE_CHARS", "check_media_type"]

MAX_MEDIA_TYPE_CHARS: Final = 127
"""Longest declared media type, parameters included."""

_NAME: Final = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"  # RFC 6838 §4.2 restricted-name
_TOKEN: Final = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"  # RFC 9110 §5.6.2
_QUOTED: Final = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e]|\\[\t \x21-\x7e])*"'  # RFC 9110 §5.6.4
_MEDIA_TYPE: Final = re.compile(
    rf"{_NAME}/{_NAME}(?:[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|{_QUOTED}))*", re.ASCII
)


def check_media_type(value: object, what: str = "content type") -> str:
    """`value` if it is a well-formed media type (SPEC §15.5.3).

    Raises:
        MalformedMessage: not a string, longer than MAX_MEDIA_TYPE_CHARS, or not
            `type/subtype[; name=value]...` (a CR or LF, say).
    """
    if not isinstance(value, str) or not 0 < len(value) <= MAX_MEDIA_TYPE_CHARS:
        raise MalformedMessage(f"{what} is a string of 1..{MAX_MEDIA_TYPE_CHARS} characters")
    if _MEDIA_TYPE.fullmatch(value) is None:
        raise MalformedMessage(f"{what} is not a media type (RFC 6838 type/subtype)")
    return value
