"""SPEC.md agrees with the code: pinned vector hashes, kind and error tables, named tests."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from hearthmesh.protocol.envelope import Kind
from hearthmesh.protocol.errors import ErrorCode

ROOT = Path(__file__).resolve().parents[2]
SPEC = (ROOT / "SPEC.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    match = re.search(rf"^## \d+\. {re.escape(title)}\n(.*?)(?=^## )", SPEC, re.S | re.M)
    assert match, f"SPEC.md has no section {title!r}"
    return match.group(1)


def test_vector_hashes_are_pinned_and_match() -> None:
    pinned = dict(re.findall(r"(protocol/vectors/\S+\.json) sha256 ([0-9a-f]{64})", SPEC))
    on_disk = {f"protocol/vectors/{p.name}" for p in (ROOT / "protocol" / "vectors").glob("*.json")}
    assert set(pinned) == on_disk
    for path, digest in pinned.items():
        assert hashlib.sha256((ROOT / path).read_bytes()).hexdigest() == digest, path


def test_error_table_equals_error_codes() -> None:
    rows = re.findall(r"^\| (\d+) \| ([A-Z_]+) \|", _section("Error codes"), re.M)
    assert {(int(code), name) for code, name in rows} == {(c.value, c.name) for c in ErrorCode}


def test_kind_table_equals_kinds() -> None:
    rows = re.findall(r"^\| (\d+) \| ([A-Z_]+) \| (yes|no) \|", SPEC, re.M)
    assert {(int(v), n, s == "no") for v, n, s in rows} == {
        (k.value, k.name, k.ephemeral) for k in Kind
    }


def test_every_named_test_exists() -> None:
    named = set(re.findall(r"(tests/[\w/]+\.py)::(\w+)", SPEC))
    assert named
    for path, name in named:
        source = (ROOT / path).read_text(encoding="utf-8")
        found = re.search(rf"^(async )?def {name}\(", source, re.M)
        assert found, f"{path}::{name} is named in SPEC.md"


def test_every_named_vector_file_exists() -> None:
    for name in set(re.findall(r"vectors: (\w+\.json)", SPEC)):
        assert (ROOT / "protocol" / "vectors" / name).is_file(), name
