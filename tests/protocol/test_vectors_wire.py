"""The wire vectors (SPEC §20.1): regenerating them gives the same bytes, and our decoders agree
with every case: a valid one decodes to its fields, an invalid one raises its named error with
its §9 code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hearthmesh.protocol.errors import HearthError
from hearthmesh.tools.vectors.codecs import OPS, run_op
from hearthmesh.tools.vectors.common import VECTORS_DIR
from hearthmesh.tools.vectors.data_cases import DATA_TOPICS, wire_case
from hearthmesh.tools.vectors.gen_all import generate_all

WIRE_TOPICS = (
    "delivery",
    "hello",
    "home_record",
    "gossip",
    "membership",
    "receipts",
    "sync",
    "media",
    "fetch",
    "linking",
    "keys",
    "groups",
    "actions",
    "caps",
    "claim",
    "verify",
    "bodies",
    "signals",
    "history",
)


def load(topic: str) -> dict[str, Any]:
    return json.loads((VECTORS_DIR / f"{topic}.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def cases(kind: str, *topics: str) -> list[Any]:
    return [
        pytest.param(case, id=f"{topic}-tc{case['id']}")
        for topic in topics or WIRE_TOPICS
        for case in load(topic)[kind]
    ]


def test_regenerating_gives_the_same_bytes(tmp_path: Path) -> None:
    paths = generate_all(tmp_path)
    assert {p.name for p in paths} == {p.name for p in VECTORS_DIR.glob("*.json")}
    for path in paths:
        assert path.read_bytes() == (VECTORS_DIR / path.name).read_bytes(), path.name


@pytest.mark.parametrize("case", cases("valid"))
def test_valid_cases_decode_to_their_fields(case: dict[str, Any]) -> None:
    assert run_op(case) == case["fields"]


@pytest.mark.parametrize("case", cases("invalid"))
def test_invalid_cases_raise_their_error_and_code(case: dict[str, Any]) -> None:
    with pytest.raises(HearthError) as raised:
        run_op(case)
    assert type(raised.value).__name__ == case["error"]
    assert int(raised.value.code) == case["code"]


def data_cases(kind: str) -> list[Any]:
    """The data files' cases (§3-7, §21, §27) in the wire form `conformance vectors` sends."""
    return [
        pytest.param(wire_case(topic, case), id=f"{topic}-tc{case['id']}")
        for topic in DATA_TOPICS
        for case in load(topic)[kind]
    ]


@pytest.mark.parametrize("case", data_cases("valid"))
def test_data_cases_in_the_wire_form_decode_to_what_their_files_pin(case: dict[str, Any]) -> None:
    assert run_op(case) == case["fields"]


@pytest.mark.parametrize("case", data_cases("invalid"))
def test_data_cases_in_the_wire_form_raise_their_error_and_code(case: dict[str, Any]) -> None:
    with pytest.raises(HearthError) as raised:
        run_op(case)
    assert (type(raised.value).__name__, int(raised.value.code)) == (case["error"], case["code"])


def test_every_wire_case_has_an_id_a_note_and_a_known_op() -> None:
    for topic in WIRE_TOPICS:
        document = load(topic)
        every = document["valid"] + document["invalid"]
        assert [c["id"] for c in every] == list(range(1, len(every) + 1)), topic
        assert all(c["note"] and c["op"] in OPS for c in every), topic
        assert document["invalid"], f"{topic} has no invalid case"


def test_a_group_folds_to_one_state_in_any_arrival_order() -> None:
    """SPEC §12.3: every replica offered the same events, in any order, ends in one state."""
    folds = [c for c in load("membership")["valid"] if c["op"] == "membership_fold"]
    same_events = [c for c in folds if sorted(c["events_hex"]) == sorted(folds[0]["events_hex"])]
    assert len(same_events) >= 3
    assert len({c["events_hex"][0] for c in same_events}) == len(same_events)  # orders differ
    for case in same_events:
        assert run_op(case) == folds[0]["fields"]
    assert folds[0]["fields"]["ignored"] == 1  # bob's KICK before he was an admin


def test_home_record_layout_signature_and_bounds() -> None:
    """SPEC §13.1: the record's fields in order, signed by the user, with its bounds."""
    document = load("home_record")
    record = next(c for c in document["valid"] if c["op"] == "home_record")
    fields = run_op(record)
    assert list(fields) == [
        "type",
        "user",
        "issued_ms",
        "homes",
        "addrs",
        "devices",
        "bundles",
        "signature",
    ]
    assert all(d["user"] == fields["user"] for d in fields["devices"])
    assert [b["device"] for b in fields["bundles"]] == [d["device"] for d in fields["devices"]]
    refused = {c["note"]: c["error"] for c in document["invalid"] if c["op"] == "home_record"}
    assert refused["nine homes: at most eight"] == "MalformedMessage"
    assert refused["over 12 KiB"] == "TooLarge"
    assert refused["a key bundle of a device the record does not list"] == "BadCertificate"
    assert refused["a key bundle whose device signature fails (SPEC §27.1)"] == "BadSignature"
    assert refused["signature bit flipped"] == "BadSignature"


def test_the_dht_holds_a_users_newest_record_under_their_key_only() -> None:
    """SPEC §13.4: the record a node publishes is kept under its user's key, newest first."""
    document = load("home_record")
    select = next(c for c in document["valid"] if c["op"] == "home_dht_select")
    assert run_op(select) == {"index": 1}  # the newer of alice's two, not bob's
    key = next(c for c in document["valid"] if c["op"] == "home_dht_key")["fields"]["key"]
    assert key.startswith("/home/") and len(key.encode()) == 49
    foreign = next(c for c in document["invalid"] if c["op"] == "home_dht_validate")
    assert foreign["error"] == "NotAuthorized"


def test_presence_carries_the_senders_own_record() -> None:
    """SPEC §14.2: [status, ttl_ms, home record], the record the sender user's own; status 3 is
    the record alone (SPEC §32.4)."""
    document = load("gossip")
    for case in (c for c in document["valid"] if c["op"] == "presence"):
        fields = run_op(case)
        assert fields["status"] in (1, 2, 3) and 0 < fields["ttl_ms"] <= 3_600_000
    refused = {c["note"]: c["error"] for c in document["invalid"] if c["op"] == "presence"}
    assert refused["bob's record in alice's announcement"] == "NotAuthorized"
