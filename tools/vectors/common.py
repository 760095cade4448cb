"""Shared pieces of the vector generators: fixed seeds, deterministic rng, the JSON writer."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Final

__all__ = ["VECTORS_DIR", "fixed_seed", "write_vectors"]

VECTORS_DIR: Final = Path(__file__).resolve().parents[2] / "protocol" / "vectors"


def fixed_seed(label: str) -> bytes:
    """A 32-byte seed derived from a label, so every run produces the same keys."""
    return hashlib.sha256(b"hearthmesh-vectors/" + label.encode()).digest()


def write_vectors(
    topic: str,
    *,
    spec: str,
    function: str,
    valid: list[dict[str, Any]],
    invalid: list[dict[str, Any]],
) -> Path:
    """Write `protocol/vectors/<topic>.json` in the CONVENTIONS §6 form; numbers the cases."""
    numbered = iter(range(1, len(valid) + len(invalid) + 1))
    lines = [
        "{",
        f'"spec": {json.dumps(spec)},',
        f'"function": {json.dumps(function)},',
    ]
    for name, cases in (("valid", valid), ("invalid", invalid)):
        rows = [json.dumps({"id": next(numbered), **case}) for case in cases]
        lines.append(f'"{name}": [\n' + ",\n".join(rows) + "\n]" + ("," if name == "valid" else ""))
    lines.append("}")
    path = VECTORS_DIR / f"{topic}.json"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")  # one case per line: reviewable
    return path
