"""The data sections' vectors (SPEC §20: identity, hlc, envelope, reconcile, e2ee) in the wire
form of §20.1, so `hearthmesh conformance vectors` drives another implementation through them.

Those five files predate that form: their cases name what to compare (`expect`, `expect_hex`,
`message_id_hex`, ...) and an error class without its code. `wire_case` turns one such case
into `{id, op, <inputs>, fields}` or `{id, op, <inputs>, error, code}` from what the file pins
(nothing here computes an expectation), and `DATA_OPS` are our answers to those ops, as
`codecs.OPS` are to the wire files' ops. `run_exchange` is the one driver of two reconcilers
over a transcript, which gen_reconcile pins and the `reconcile_exchange` op replays.
State: none.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any, Final

import vodozemac

from hearthmesh.protocol import e2ee, errors
from hearthmesh.protocol.digest import history_digest
from hearthmesh.protocol.envelope import Envelope, MessageId, decode_envelope
from hearthmesh.protocol.hlc import Timestamp, decode_timestamp, encode_timestamp, receive, send
from hearthmesh.protocol.identity import (
    DeviceId,
    UserId,
    decode_certificate,
    decode_user_id,
    device_id_text,
    keypair_from_seed,
    user_id_text,
    verify_certificate,
)
from hearthmesh.protocol.reconcile import Reconciler, SortedItems, decode_message, fingerprint
from hearthmesh.protocol.rooms import direct_room_id

__all__ = ["DATA_OPS", "DATA_TOPICS", "envelope_fields", "run_exchange", "wire_case"]

Case = dict[str, Any]
Item = tuple[Timestamp, MessageId]

DATA_TOPICS: Final = ("identity", "hlc", "envelope", "reconcile", "e2ee")
"""The files of §20 whose cases `wire_case` translates; every other file is in wire form."""

_KEPT: Final = frozenset({"id", "note"})


def _ts(pair: list[int]) -> Timestamp:
    return Timestamp(wall_ms=pair[0], counter=pair[1])


def _ids(case: Case) -> list[MessageId]:
    return [MessageId(bytes.fromhex(i)) for i in case["ids"]]


def _items(rows: list[list[Any]]) -> list[Item]:
    return [(_ts([wall, counter]), MessageId(bytes.fromhex(i))) for wall, counter, i in rows]


def run_exchange(a: list[Item], b: list[Item], options: dict[str, int]) -> dict[str, Any]:
    """Two reconcilers (§21.5), `a` initiating, until one has nothing to say: every message on
    the wire in turn, and what each side found it has and needs (sorted)."""
    machines = {
        "a": Reconciler(SortedItems(a), **options),
        "b": Reconciler(SortedItems(b), **options),
    }
    have: dict[str, list[str]] = {"a": [], "b": []}
    need: dict[str, list[str]] = {"a": [], "b": []}
    transcript: list[str] = []
    message: bytes | None = machines["a"].initiate()
    turn = 0
    while message is not None:
        transcript.append(message.hex())
        name = "b" if turn % 2 == 0 else "a"
        step = machines[name].reconcile(message)
        have[name] += [i.hex() for i in step.have]
        need[name] += [i.hex() for i in step.need]
        message = step.reply
        turn += 1
    return {
        "transcript_hex": transcript,
        "a_have": sorted(have["a"]),
        "a_need": sorted(need["a"]),
        "b_have": sorted(have["b"]),
        "b_need": sorted(need["b"]),
    }


def _keypair(case: Case) -> Any:
    """§3.1-3.2: the Ed25519 public key of a seed and both of its text forms."""
    key = keypair_from_seed(bytes.fromhex(case["seed_hex"]))
    return {
        "public_hex": key.public.hex(),
        "user_id": user_id_text(UserId(key.public)),
        "device_id": device_id_text(DeviceId(key.public)),
    }


def _certificate(case: Case) -> Any:
    """§3.3: a device certificate, decoded and verified at the case's clock."""
    verify_certificate(decode_certificate(bytes.fromhex(case["hex"])), now_ms=case["now_ms"])
    return {"verified": True}


def _hlc_receive(case: Case) -> Any:
    """§4.3: the clock after a remote timestamp arrives (or ClockSkew)."""
    got = receive(_ts(case["last"]), _ts(case["remote"]), case["now_ms"])
    return {"timestamp": [got.wall_ms, got.counter]}


def _hlc_send(case: Case) -> Any:
    """§4.2: the clock's next timestamp."""
    got = send(_ts(case["last"]), case["now_ms"])
    return {"timestamp": [got.wall_ms, got.counter]}


def envelope_fields(envelope: Envelope) -> dict[str, Any]:
    """The fields of §5.1 as envelope.json pins them."""
    return {
        "version": envelope.version,
        "kind": int(envelope.kind),
        "room_hex": envelope.room.hex(),
        "sender_user_hex": envelope.sender_user.hex(),
        "sender_device_hex": envelope.sender_device.hex(),
        "seq": envelope.seq,
        "hlc": [envelope.hlc.wall_ms, envelope.hlc.counter],
        "content_type": envelope.content_type,
        "body_hex": envelope.body.hex(),
    }


def _envelope(case: Case) -> Any:
    """§5-7: an envelope decoded (signature verified) with its message id."""
    envelope = decode_envelope(bytes.fromhex(case["hex"]))
    return {**envelope_fields(envelope), "message_id_hex": envelope.message_id.hex()}


def _fingerprint(case: Case) -> Any:
    """§21.3: the fingerprint of a range holding these ids."""
    return {
        "hex": fingerprint(
            sum(int.from_bytes(i, "big") for i in _ids(case)), len(case["ids"])
        ).hex()
    }


def _key_bundle(case: Case) -> Any:
    """§27.1: a key bundle decoded and its signature verified."""
    bundle = e2ee.decode_key_bundle(bytes.fromhex(case["hex"]))
    e2ee.verify_key_bundle(bundle)
    return {
        "identity_key": bundle.identity_key.hex(),
        "fallback_key": bundle.fallback_key.hex(),
        "issued_ms": bundle.issued_ms,
    }


def _megolm_decrypt(case: Case) -> Any:
    """§27.6: an encrypted body opened with the session key it was encrypted under."""
    text = base64.b64encode(bytes.fromhex(case["session_key"])).decode().rstrip("=")
    session = vodozemac.InboundGroupSession(vodozemac.SessionKey(text))
    opened = e2ee.open_encrypted(
        session, e2ee.decode_encrypted_body(bytes.fromhex(case["body_hex"]))
    )
    return {
        "index": opened.index,
        "content_type": opened.content_type,
        "body_hex": opened.body.hex(),
    }


DATA_OPS: Final[dict[str, Callable[[Case], Any]]] = {
    "keypair": _keypair,
    "direct_room": lambda c: {
        "room_hex": direct_room_id(
            UserId(bytes.fromhex(c["a_hex"])), UserId(bytes.fromhex(c["b_hex"]))
        ).hex()
    },
    "certificate": _certificate,
    "user_id": lambda c: {"public_hex": bytes(decode_user_id(c["text"])).hex()},
    "hlc_send": _hlc_send,
    "hlc_receive": _hlc_receive,
    "hlc_encode": lambda c: {"hex": encode_timestamp(_ts(c["timestamp"])).hex()},
    "hlc_decode": lambda c: {"timestamp": list(_pair(decode_timestamp(bytes.fromhex(c["hex"]))))},
    "envelope": _envelope,
    "fingerprint": _fingerprint,
    "history_digest": lambda c: {"hex": history_digest(_ids(c)).hex()},
    "reconcile_exchange": lambda c: run_exchange(
        _items(c["a_items"]), _items(c["b_items"]), c["options"]
    ),
    "reconcile_message": lambda c: {"decoded": decode_message(bytes.fromhex(c["hex"])) is not None},
    "key_bundle": _key_bundle,
    "room_key": lambda c: {
        "session_key": e2ee.decode_room_key(bytes.fromhex(c["hex"])).session_key.hex()
    },
    "megolm_decrypt": _megolm_decrypt,
}
"""Our answers to the ops `wire_case` names."""


def _pair(timestamp: Timestamp) -> tuple[int, int]:
    return timestamp.wall_ms, timestamp.counter


def _refusal(case: Case) -> Case:
    error: type[errors.HearthError] = getattr(errors, case["error"])
    return {"error": error.__name__, "code": int(error.code)}


def _identity(case: Case) -> tuple[Case, Case]:
    op = case["op"]
    if op == "keypair":
        return {"seed_hex": case["seed_hex"]}, {
            "fields": {k: case[k] for k in ("public_hex", "user_id", "device_id")}
        }
    if op == "direct_room":
        return {"a_hex": case["a_hex"], "b_hex": case["b_hex"]}, {
            "fields": {"room_hex": case["expect_hex"]}
        }
    if op == "certificate":
        inputs = {"hex": case["hex"], "now_ms": case["now_ms"]}
        return inputs, _refusal(case) if "error" in case else {"fields": {"verified": True}}
    return {"text": case["text"]}, _refusal(case)  # user_id: the file pins invalid ones only


def _hlc(case: Case) -> tuple[Case, Case]:
    op = case["op"]
    if op == "encode":
        return {"op": "hlc_encode", "timestamp": case["timestamp"]}, {
            "fields": {"hex": case["expect_hex"]}
        }
    if op == "decode":
        return {"op": "hlc_decode", "hex": case["hex"]}, _refusal(case)
    inputs = {"op": f"hlc_{op}", "last": case["last"], "now_ms": case["now_ms"]}
    if op == "receive":
        inputs["remote"] = case["remote"]
    return inputs, _refusal(case) if "error" in case else {"fields": {"timestamp": case["expect"]}}


def _envelope_case(case: Case) -> tuple[Case, Case]:
    inputs = {"op": "envelope", "hex": case["wire_hex"]}
    if "error" in case:
        return inputs, _refusal(case)
    return inputs, {"fields": {**case["fields"], "message_id_hex": case["message_id_hex"]}}


def _reconcile(case: Case) -> tuple[Case, Case]:
    op = case.get("op")
    if op in ("fingerprint", "history_digest"):
        return {"ids": case["ids"]}, {"fields": {"hex": case["expect_hex"]}}
    if op == "exchange":
        inputs = {k: case[k] for k in ("options", "a_items", "b_items")}
        expected = {k: case[k] for k in ("transcript_hex", "a_have", "a_need", "b_have", "b_need")}
        return {"op": "reconcile_exchange", **inputs}, {"fields": expected}
    return {"op": "reconcile_message", "hex": case["hex"]}, _refusal(case)


def _e2ee(case: Case) -> tuple[Case, Case]:
    op = case["op"]
    if op == "key_bundle":  # a valid case pins a bundle's bytes and the keys they carry
        if "error" in case:
            return {"hex": case["bundle_hex"]}, _refusal(case)
        fields = {k: case[k] for k in ("identity_key", "fallback_key", "issued_ms")}
        return {"hex": case["expect_hex"]}, {"fields": fields}
    if op == "room_key":
        return {"hex": case["expect_hex"]}, {"fields": {"session_key": case["session_key"]}}
    inputs = {
        "op": "megolm_decrypt",
        "session_key": case["session_key"],
        "body_hex": case["body_hex"],
    }
    if "error" in case:
        return inputs, _refusal(case)
    expected = {
        "index": case["expect_index"],
        "content_type": case["expect_content_type"],
        "body_hex": case["expect_body_hex"],
    }
    return inputs, {"fields": expected}


_TRANSLATORS: Final[dict[str, Callable[[Case], tuple[Case, Case]]]] = {
    "identity": _identity,
    "hlc": _hlc,
    "envelope": _envelope_case,
    "reconcile": _reconcile,
    "e2ee": _e2ee,
}


def wire_case(topic: str, case: Case) -> Case:
    """One case of a data file (`DATA_TOPICS`) as `{id, note, op, <inputs>, fields}` or
    `{..., error, code}`; the op is the file's own where it names one."""
    inputs, expected = _TRANSLATORS[topic](case)
    op = inputs.pop("op", case.get("op"))
    return {**{k: case[k] for k in _KEPT}, "op": op, **inputs, **expected}
