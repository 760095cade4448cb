"""Linking a new device to a user (SPEC §22): pairing codes, the request and the answer.

The user's primary device shows a one-time pairing code (text and QR): a secret and where to
reach the primary. The new device proves it holds the secret with an HMAC over its own device
and node keys, so a code seen over someone's shoulder is useless once used, and the primary
answers with a device certificate and the user's new home record (which now lists the new
device and its node). Nothing here touches the network or a clock: time comes in as `now_ms`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import Final

from .canonical import decode_canonical, encode_canonical
from .e2ee.keys import KeyBundle, decode_key_bundle, encode_key_bundle
from .errors import InvalidIdentifier, MalformedMessage, NotAuthorized
from .identity import KEY_BYTES, Rng

__all__ = [
    "LINK_PROTOCOL",
    "LINK_SECRET_BYTES",
    "MAX_HOME_ADDRS",
    "LinkAnswer",
    "LinkCode",
    "LinkRequest",
    "Readdress",
    "check_link_proof",
    "decode_link_answer",
    "decode_link_code",
    "decode_link_message",
    "decode_link_request",
    "encode_link_answer",
    "encode_link_code",
    "encode_link_request",
    "encode_readdress",
    "link_proof",
    "new_link_code",
    "short_code",
]

LINK_PROTOCOL: Final = "/hearthmesh/link/0"
LINK_SECRET_BYTES: Final = 16
_PROOF_DOMAIN: Final = b"hearthmesh/link/v0\x00"
_CODE_PREFIX: Final = "hmlink0-"
_MAX_CODE_CHARS: Final = 1024
_MAX_MESSAGE_BYTES: Final = 16 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkCode:
    """What the primary shows: the one-time secret and an address of its node."""

    secret: bytes
    address: str
    """A multiaddr of the primary's node, ending in /p2p/<peer id>."""
    expires_ms: int


def new_link_code(rng: Rng, *, address: str, now_ms: int, ttl_ms: int) -> LinkCode:
    """A fresh code valid for `ttl_ms`."""
    return LinkCode(secret=rng(LINK_SECRET_BYTES), address=address, expires_ms=now_ms + ttl_ms)


def encode_link_code(code: LinkCode) -> str:
    """`hmlink0-` + lowercase base32 (no padding) of CBOR [secret, address, expires_ms]."""
    raw = encode_canonical([code.secret, code.address, code.expires_ms])
    return _CODE_PREFIX + base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def decode_link_code(text: str) -> LinkCode:
    """Parse a pairing code. Raises InvalidIdentifier."""
    text = text.strip()
    if not text.startswith(_CODE_PREFIX) or len(text) > _MAX_CODE_CHARS:
        raise InvalidIdentifier("not a hearthmesh pairing code")
    body = text[len(_CODE_PREFIX) :].upper()
    try:
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
        value = decode_canonical(raw, max_bytes=_MAX_CODE_CHARS)
    except (binascii.Error, ValueError, MalformedMessage):
        raise InvalidIdentifier("the pairing code is damaged") from None
    match value:
        case [bytes() as secret, str() as address, int() as expires_ms] if (
            len(secret) == LINK_SECRET_BYTES and "/p2p/" in address and expires_ms >= 0
        ):
            return LinkCode(secret=secret, address=address, expires_ms=expires_ms)
    raise InvalidIdentifier("the pairing code is damaged")


def short_code(code: LinkCode) -> str:
    """Eight characters derived from the secret, for a person to compare on both screens."""
    digest = hashlib.sha256(b"hearthmesh/link-short/v0\x00" + code.secret).digest()
    return base64.b32encode(digest[:5]).decode("ascii")


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkRequest:
    """The new device's request: its keys, where its node listens, and the HMAC proof."""

    device: bytes
    node_key: bytes
    addrs: tuple[str, ...]
    proof: bytes


def link_proof(secret: bytes, *, device: bytes, node_key: bytes) -> bytes:
    """HMAC-SHA256(secret, domain | device key | node key)."""
    return hmac.new(secret, _PROOF_DOMAIN + device + node_key, hashlib.sha256).digest()


def check_link_proof(secret: bytes, request: LinkRequest) -> None:
    """Raises NotAuthorized unless the request was made with `secret` (constant time)."""
    expected = link_proof(secret, device=request.device, node_key=request.node_key)
    if not hmac.compare_digest(expected, request.proof):
        raise NotAuthorized("the pairing code does not match")


def encode_link_request(request: LinkRequest) -> bytes:
    """CBOR [0, device, node_key, [addr...], proof]."""
    return encode_canonical(
        [0, request.device, request.node_key, list(request.addrs), request.proof]
    )


def decode_link_request(data: bytes) -> LinkRequest:
    """Parse a link request. Raises MalformedMessage or TooLarge."""
    request = _link_request(decode_canonical(data, max_bytes=_MAX_MESSAGE_BYTES))
    if request is None:
        raise MalformedMessage("not a link request")
    return request


def _link_request(value: object) -> LinkRequest | None:
    match value:
        case [0, bytes() as device, bytes() as node_key, list() as addrs, bytes() as proof] if (
            len(device) == KEY_BYTES
            and len(node_key) == KEY_BYTES
            and len(proof) == 32
            and _addr_list(addrs)
        ):
            return LinkRequest(
                device=device,
                node_key=node_key,
                addrs=tuple(str(a) for a in addrs),
                proof=proof,
            )
    return None


MAX_HOME_ADDRS: Final = 8
"""Addresses one home may give (a link request, a readdress)."""
_MAX_ADDR_CHARS: Final = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class Readdress:
    """A linked home's addresses as they are now (SPEC §10.10), and its device's key bundle
    (SPEC §27.1), for the primary's record."""

    addrs: tuple[str, ...]
    bundle: KeyBundle | None = None


def encode_readdress(readdress: Readdress) -> bytes:
    """CBOR [1, [addr...]] or [1, [addr...], key bundle]."""
    if readdress.bundle is None:
        return encode_canonical([1, list(readdress.addrs)])
    return encode_canonical([1, list(readdress.addrs), encode_key_bundle(readdress.bundle)])


def decode_link_message(data: bytes, *, sender: str) -> LinkRequest | Readdress:
    """Parse what a node sends on `/hearthmesh/link/0`: a link request (§22.2) or, from the
    linked home `sender` (a peer id), a readdress (§10.10) whose every address ends in
    `/p2p/<sender>`. Raises MalformedMessage, TooLarge, or NotAuthorized for an address of
    another node."""
    value = decode_canonical(data, max_bytes=_MAX_MESSAGE_BYTES)
    request = _link_request(value)
    if request is not None:
        return request
    match value:
        case [1, list() as addrs, *rest] if _addr_list(addrs) and len(rest) <= 1:
            found = tuple(str(a) for a in addrs)
            if not all(a.endswith(f"/p2p/{sender}") for a in found):
                raise NotAuthorized("a home may give only its own addresses")
            match rest:
                case []:
                    return Readdress(addrs=found)
                case [bytes() as bundle]:
                    return Readdress(addrs=found, bundle=decode_key_bundle(bundle))
    raise MalformedMessage("not a link request nor a readdress")


def _addr_list(addrs: list[object]) -> bool:
    return len(addrs) <= MAX_HOME_ADDRS and all(
        isinstance(a, str) and 0 < len(a) <= _MAX_ADDR_CHARS for a in addrs
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkAnswer:
    """The primary's answer: the new device's certificate and the user's new home record."""

    certificate: bytes
    home_record: bytes


def encode_link_answer(answer: LinkAnswer) -> bytes:
    """CBOR [0, certificate, home record]."""
    return encode_canonical([0, answer.certificate, answer.home_record])


def decode_link_answer(data: bytes) -> LinkAnswer:
    """Parse a link answer (structure only; the caller verifies both parts)."""
    match decode_canonical(data, max_bytes=_MAX_MESSAGE_BYTES):
        case [0, bytes() as certificate, bytes() as home_record]:
            return LinkAnswer(certificate=certificate, home_record=home_record)
    raise MalformedMessage("not a link answer")
