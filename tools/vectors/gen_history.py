"""Generate protocol/vectors/history.json: the answers on `/hearthmesh/history/0` (SPEC §30.6).

The request is pinned in groups.json (op `history_request`). The answer is the key-forward
ANSWER or ERROR frame of §27.12.1; the joiner takes an ANSWER only from the device whose
bundle the admitting admin's record names at the peer it asked (§30.6.4), and an ERROR frame
is the refusal its code names.
"""

from __future__ import annotations

from pathlib import Path

from hearthmesh.protocol.canonical import encode_canonical
from hearthmesh.protocol.e2ee import (
    ForwardAnswer,
    KeyBundle,
    OlmKind,
    encode_claim_error,
    encode_forward_answer,
    encode_key_bundle,
    issue_key_bundle,
)
from hearthmesh.protocol.e2ee.forward import MAX_FORWARD_FRAME_BYTES, MAX_FORWARDED_KEYS
from hearthmesh.protocol.errors import (
    HistoryNotShared,
    KeyRequestDenied,
    MalformedMessage,
    RateLimited,
    RemoteProtocolError,
    TooLarge,
)
from hearthmesh.protocol.identity import KeyPair

from .cast import NOW_MS, Cast
from .common import VECTORS_DIR, fixed_seed, pin, refuse, write_vectors
from .gen_e2ee import curve_public

__all__ = ["generate"]


def _bundle(device: KeyPair, label: str) -> KeyBundle:
    return issue_key_bundle(
        device,
        identity_key=curve_public(f"history-{label}-identity"),
        fallback_key=curve_public(f"history-{label}-fallback"),
        issued_ms=NOW_MS,
    )


def generate(directory: Path = VECTORS_DIR) -> Path:
    """alice, the group's admin, answers bob's home; `listed_hex` is the bundle alice's record
    names at the home bob asked."""
    c = Cast()
    listed = _bundle(c.phone, "phone")
    other = _bundle(c.laptop, "laptop")
    olm = fixed_seed("history-olm-message") * 4
    listed_hex = encode_key_bundle(listed).hex()
    bundle_bytes = encode_key_bundle(listed)

    def answer(bundle: KeyBundle, *messages: tuple[int, bytes]) -> str:
        return encode_forward_answer(ForwardAnswer(sender_bundle=bundle, messages=messages)).hex()

    valid = [
        pin(
            "history_answer",
            "the admin's listed device: one Olm message per Megolm session shared (§30.6.3)",
            hex=answer(listed, (OlmKind.PRE_KEY, olm), (OlmKind.NORMAL, olm)),
            listed_hex=listed_hex,
        ),
        pin(
            "history_answer",
            "nothing to give: no session among the shared envelopes",
            hex=answer(listed),
            listed_hex=listed_hex,
        ),
    ]
    refusals: list[tuple[type[RemoteProtocolError], str]] = [
        (HistoryNotShared, "the group does not share history, or the asker is no member"),
        (KeyRequestDenied, "the asker's record does not list the asking home with a bundle"),
        (RateLimited, "more than one request a second"),
    ]
    invalid = [
        *(
            refuse(
                "history_answer",
                error,
                f"an ERROR frame: {note}",
                hex=encode_claim_error(error(note)).hex(),
                listed_hex=listed_hex,
            )
            for error, note in refusals
        ),
        refuse(
            "history_answer",
            HistoryNotShared,
            "an ANSWER from a device the admin's record does not name at that peer",
            hex=answer(other, (OlmKind.PRE_KEY, olm)),
            listed_hex=listed_hex,
        ),
        refuse(
            "history_answer",
            MalformedMessage,
            "an Olm message of kind 2",
            hex=encode_canonical([2, bundle_bytes, [[2, olm]]]).hex(),
            listed_hex=listed_hex,
        ),
        refuse(
            "history_answer",
            MalformedMessage,
            f"{MAX_FORWARDED_KEYS + 1} Olm messages",
            hex=encode_canonical([2, bundle_bytes, [[1, b"k"]] * (MAX_FORWARDED_KEYS + 1)]).hex(),
            listed_hex=listed_hex,
        ),
        refuse(
            "history_answer",
            MalformedMessage,
            "the request's tag",
            hex=encode_canonical([1, bundle_bytes, []]).hex(),
            listed_hex=listed_hex,
        ),
        refuse(
            "history_answer",
            TooLarge,
            "a frame past 96 KiB",
            hex=encode_canonical([2, bundle_bytes, [[1, bytes(MAX_FORWARD_FRAME_BYTES)]]]).hex(),
            listed_hex=listed_hex,
        ),
    ]
    return write_vectors(
        "history",
        spec="SPEC.md §30.6.2, §30.6.4, §27.12.1",
        function="tools/vectors/codecs.py op history_answer: take_history_answer",
        valid=valid,
        invalid=invalid,
        directory=directory,
    )
