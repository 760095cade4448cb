"""Every case of protocol/vectors/*.json holds against the implementation (CONVENTIONS §6)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest

from hearthmesh.protocol import errors
from hearthmesh.protocol.envelope import decode_envelope
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
from hearthmesh.protocol.rooms import direct_room_id


def load(topic: str) -> dict[str, Any]:
    text = resources.files("hearthmesh.protocol").joinpath(f"vectors/{topic}.json").read_text()
    return json.loads(text)  # type: ignore[no-any-return]


def ts(pair: list[int]) -> Timestamp:
    return Timestamp(wall_ms=pair[0], counter=pair[1])


def case_id(case: dict[str, Any]) -> str:
    return f"tc{case['id']}"


HLC, IDENTITY, ENVELOPE = load("hlc"), load("identity"), load("envelope")


@pytest.mark.parametrize("case", HLC["valid"], ids=case_id)
def test_hlc_valid(case: dict[str, Any]) -> None:
    if case["op"] == "send":
        assert send(ts(case["last"]), case["now_ms"]) == ts(case["expect"])
    elif case["op"] == "receive":
        got = receive(ts(case["last"]), ts(case["remote"]), case["now_ms"])
        assert got == ts(case["expect"])
    else:
        assert encode_timestamp(ts(case["timestamp"])).hex() == case["expect_hex"]
        assert decode_timestamp(bytes.fromhex(case["expect_hex"])) == ts(case["timestamp"])


@pytest.mark.parametrize("case", HLC["invalid"], ids=case_id)
def test_hlc_invalid(case: dict[str, Any]) -> None:
    with pytest.raises(getattr(errors, case["error"])):
        if case["op"] == "receive":
            receive(ts(case["last"]), ts(case["remote"]), case["now_ms"])
        else:
            decode_timestamp(bytes.fromhex(case["hex"]))


@pytest.mark.parametrize("case", IDENTITY["valid"], ids=case_id)
def test_identity_valid(case: dict[str, Any]) -> None:
    if case["op"] == "keypair":
        key = keypair_from_seed(bytes.fromhex(case["seed_hex"]))
        assert key.public.hex() == case["public_hex"]
        assert user_id_text(UserId(key.public)) == case["user_id"]
        assert device_id_text(DeviceId(key.public)) == case["device_id"]
        assert decode_user_id(case["user_id"]) == key.public
    elif case["op"] == "direct_room":
        a, b = UserId(bytes.fromhex(case["a_hex"])), UserId(bytes.fromhex(case["b_hex"]))
        assert direct_room_id(a, b).hex() == case["expect_hex"]
    else:
        verify_certificate(decode_certificate(bytes.fromhex(case["hex"])), now_ms=case["now_ms"])


@pytest.mark.parametrize("case", IDENTITY["invalid"], ids=case_id)
def test_identity_invalid(case: dict[str, Any]) -> None:
    with pytest.raises(getattr(errors, case["error"])):
        if case["op"] == "user_id":
            decode_user_id(case["text"])
        else:
            cert = decode_certificate(bytes.fromhex(case["hex"]))
            verify_certificate(cert, now_ms=case["now_ms"])


@pytest.mark.parametrize("case", ENVELOPE["valid"], ids=case_id)
def test_envelope_valid(case: dict[str, Any]) -> None:
    envelope = decode_envelope(bytes.fromhex(case["wire_hex"]))
    fields = case["fields"]
    assert envelope.message_id.hex() == case["message_id_hex"]
    assert int(envelope.kind) == fields["kind"]
    assert envelope.room.hex() == fields["room_hex"]
    assert envelope.sender_user.hex() == fields["sender_user_hex"]
    assert envelope.sender_device.hex() == fields["sender_device_hex"]
    device = keypair_from_seed(bytes.fromhex(case["device_seed_hex"]))
    assert envelope.sender_device == device.public
    assert envelope.seq == fields["seq"]
    assert envelope.hlc == ts(fields["hlc"])
    assert envelope.content_type == fields["content_type"]
    assert envelope.body.hex() == fields["body_hex"]


@pytest.mark.parametrize("case", ENVELOPE["invalid"], ids=case_id)
def test_envelope_invalid(case: dict[str, Any]) -> None:
    with pytest.raises(getattr(errors, case["error"])):
        decode_envelope(bytes.fromhex(case["wire_hex"]))


def test_every_case_has_an_id_and_a_note() -> None:
    for document in (HLC, IDENTITY, ENVELOPE):
        cases = document["valid"] + document["invalid"]
        assert [c["id"] for c in cases] == list(range(1, len(cases) + 1))
        assert all(c["note"] for c in cases)
        assert all(hasattr(errors, c["error"]) for c in document["invalid"])
