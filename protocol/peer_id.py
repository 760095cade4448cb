"""libp2p peer ids of Ed25519 node keys (libp2p peer-ids spec), without importing libp2p.

A node signs delivery acks with the key behind its peer id, so a sender can check that the ack
came from the peer it meant to reach (SPEC §11.3).
"""

from __future__ import annotations

import functools
from typing import Final

from .errors import InvalidIdentifier
from .identity import KEY_BYTES

__all__ = ["node_key_of_peer_id", "peer_id_of_node_key"]

_ALPHABET: Final = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
# identity multihash (0x00, length 36) of the protobuf PublicKey {Type: Ed25519 (1), Data: 32 B}
_PREFIX: Final = bytes([0x00, 0x24, 0x08, 0x01, 0x12, 0x20])


def _b58encode(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    out = ""
    while number:
        number, digit = divmod(number, 58)
        out = _ALPHABET[digit] + out
    return "1" * (len(data) - len(data.lstrip(b"\x00"))) + out


def _b58decode(text: str) -> bytes:
    number = 0
    for char in text:
        digit = _ALPHABET.find(char)
        if digit < 0:
            raise InvalidIdentifier("peer id is not base58")
        number = number * 58 + digit
    body = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return b"\x00" * (len(text) - len(text.lstrip("1"))) + body


def peer_id_of_node_key(node_key: bytes) -> str:
    """The base58 peer id (`12D3KooW…`) of an Ed25519 public key."""
    if len(node_key) != KEY_BYTES:
        raise InvalidIdentifier("an Ed25519 node key is 32 bytes")
    return _peer_id(bytes(node_key))


@functools.lru_cache(maxsize=1024)
def _peer_id(node_key: bytes) -> str:
    # Memoised: base58 in Python costs ~10 µs, paid for each signed ACK a sender checks
    # (one per batch, SPEC §11.3) though its homes' keys are few; bounded for a stranger's keys.
    return _b58encode(_PREFIX + node_key)


def node_key_of_peer_id(peer_id: str) -> bytes:
    """The Ed25519 public key inside a peer id. Raises InvalidIdentifier for any other form."""
    if len(peer_id) > 64:
        raise InvalidIdentifier("peer id too long")
    raw = _b58decode(peer_id)
    if len(raw) != len(_PREFIX) + KEY_BYTES or not raw.startswith(_PREFIX):
        raise InvalidIdentifier("not an Ed25519 peer id")
    return raw[len(_PREFIX) :]
