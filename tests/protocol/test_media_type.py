"""Declared media types are RFC 6838 `type/subtype[; name=value]`, checked where they enter."""

from __future__ import annotations

import pytest

from hearthmesh.protocol.canonical import encode_canonical
from hearthmesh.protocol.content import MediaRef, decode_media
from hearthmesh.protocol.errors import MalformedMessage
from hearthmesh.protocol.media_type import check_media_type


@pytest.mark.parametrize(
    "value",
    [
        "image/png",
        "application/vnd.oasis.opendocument.text",
        "text/plain; charset=utf-8",
        'text/plain;format="flowed"',
        "audio/x-wav",
        "a" * 63 + "/" + "b" * 63,
    ],
)
def test_well_formed_media_types_pass(value: str) -> None:
    assert check_media_type(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "text/html\r\nSet-Cookie: a=b",
        "text/html\n",
        "image/png\x00",
        "png",
        "/png",
        "image/",
        "image/pn g",
        "imäge/png",
        "image/png; charset",
        "a" * 64 + "/" + "b" * 63,
        "",
        None,
    ],
)
def test_anything_else_is_malformed(value: object) -> None:
    with pytest.raises(MalformedMessage):
        check_media_type(value)


def test_a_peers_media_body_with_crlf_in_its_type_is_refused() -> None:
    """Finding 8: a sender-declared type with CR/LF was stored and broke the download."""
    body = encode_canonical(["image", b"\x01" * 32, "image/png\r\nX-Evil: 1", 5, ""])
    with pytest.raises(MalformedMessage):
        decode_media(body)
    good = encode_canonical(["image", b"\x01" * 32, "image/png", 5, ""])
    assert decode_media(good) == MediaRef(
        type="image", digest=b"\x01" * 32, content_type="image/png", size=5
    )
