"""Generate protocol/vectors/reconcile.json: fingerprints, digests, transcripts (SPEC §21)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from hearthmesh.protocol.canonical import encode_canonical
from hearthmesh.protocol.digest import history_digest
from hearthmesh.protocol.envelope import MessageId
from hearthmesh.protocol.errors import MalformedMessage, UnsupportedVersion
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.reconcile import fingerprint

from .common import VECTORS_DIR, write_vectors
from .data_cases import run_exchange

__all__ = ["generate"]

_BASE_MS = 1_700_000_000_000


def _id(n: int) -> MessageId:
    return MessageId(hashlib.sha256(n.to_bytes(8, "big")).digest())


def _item(n: int) -> tuple[Timestamp, MessageId]:
    """The same items tests/protocol/test_reconcile.py uses: event n, one second apart."""
    return Timestamp(wall_ms=_BASE_MS + n * 1000, counter=n % 3), _id(n)


def _fingerprint_case(ids: list[MessageId], note: str) -> dict[str, Any]:
    id_sum = sum(int.from_bytes(i, "big") for i in ids)
    return {
        "op": "fingerprint",
        "ids": [i.hex() for i in ids],
        "expect_hex": fingerprint(id_sum, len(ids)).hex(),
        "note": note,
    }


def _exchange(a: list[int], b: list[int], options: dict[str, int], note: str) -> dict[str, Any]:
    """Drive two machines against each other and record every message and the outcome."""

    def items(numbers: list[int]) -> list[list[Any]]:
        return [[t.wall_ms, t.counter, i.hex()] for t, i in map(_item, sorted(numbers))]

    outcome = run_exchange([_item(n) for n in a], [_item(n) for n in b], options)
    return {
        "op": "exchange",
        "options": options,
        "a_items": items(a),
        "b_items": items(b),
        **outcome,
        "note": note,
    }


def _invalid(value: Any, error: type[Exception], note: str) -> dict[str, Any]:
    return {"hex": encode_canonical(value).hex(), "error": error.__name__, "note": note}


def generate(directory: Path = VECTORS_DIR) -> Path:
    """Compute every expectation with the implementation, for review and for other impls."""
    top = MessageId(b"\xff" * 32)
    valid: list[dict[str, Any]] = [
        _fingerprint_case([], "empty range: sum 0, count 0"),
        _fingerprint_case([_id(1)], "one id"),
        _fingerprint_case([_id(1), _id(2), _id(3)], "three ids: the order does not matter"),
        _fingerprint_case([top, MessageId(top[:31] + b"\x02")], "sum wraps modulo 2^256"),
        {
            "op": "history_digest",
            "ids": [],
            "expect_hex": history_digest([]).hex(),
            "note": "empty history",
        },
        {
            "op": "history_digest",
            "ids": [_id(n).hex() for n in (1, 2, 3)],
            "expect_hex": history_digest([_id(n) for n in (1, 2, 3)]).hex(),
            "note": "three ids in history order",
        },
        _exchange([], [], {}, "two empty replicas: an empty id list, an empty DIFF"),
        _exchange([1, 2, 3], [2, 3, 4], {}, "small sets: id list, DIFF with bits 0x80 and id 4"),
        _exchange(
            list(range(40)),
            list(range(40)),
            {},
            "equal sets above the threshold: one fingerprint, an empty reply",
        ),
        _exchange(
            list(range(40)),
            [n for n in range(41) if n not in (7, 30)],
            {"branching": 4, "id_list_threshold": 4},
            "two ids only a holds, one only b holds: splits into 4, id lists of at most 4",
        ),
    ]
    fp = b"\x11" * 16
    invalid: list[dict[str, Any]] = [
        _invalid([1, [None, 1, fp]], UnsupportedVersion, "version 1 is not spoken"),
        _invalid([], MalformedMessage, "no version"),
        _invalid([0, [b"\x00\x05", 0]], MalformedMessage, "a SKIP is never last"),
        _invalid(
            [0, [b"\x00\x05", 0], [b"\x00\x04", 1, fp]], MalformedMessage, "bounds must increase"
        ),
        _invalid(
            [0, [b"\x00\x05", 0], [b"\x00\x05\x01", 1, fp]],
            MalformedMessage,
            "shared prefix length not maximal (should be 01 01)",
        ),
        _invalid([0, [None, 1, fp], [b"\x00\x05", 1, fp]], MalformedMessage, "infinity not last"),
        _invalid([0, [None, 1, fp[:15]]], MalformedMessage, "fingerprint of 15 bytes"),
        _invalid([0, [None, 2, b"\x00" * 33]], MalformedMessage, "ids not a multiple of 32"),
        _invalid([0, [None, 2, b"\x07" * 64]], MalformedMessage, "the same id twice"),
        _invalid([0, [None, 7]], MalformedMessage, "unknown range mode"),
        {
            "hex": "821800f6",
            "error": MalformedMessage.__name__,
            "note": "non-canonical CBOR (0 encoded in two bytes)",
        },
    ]
    return write_vectors(
        "reconcile",
        spec="SPEC.md §21",
        function=(
            "hearthmesh.protocol.reconcile.fingerprint / Reconciler / decode_message; "
            "hearthmesh.protocol.digest.history_digest"
        ),
        valid=valid,
        invalid=invalid,
        directory=directory,
    )
