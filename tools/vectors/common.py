"""Shared pieces of the vector generators: fixed seeds, deterministic rng, the JSON writer."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Final

from hearthmesh.protocol.errors import HearthError

from .codecs import run_op

__all__ = ["VECTORS_DIR", "fixed_seed", "pin", "refuse", "write_vectors"]

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
    directory: Path = VECTORS_DIR,
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
    path = directory / f"{topic}.json"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")  # one case per line: reviewable
    return path


def pin(op: str, note: str, **inputs: Any) -> dict[str, Any]:
    """A valid case of a wire operation (tools/vectors/codecs.py): its inputs and the fields
    our decoder gives them, which every implementation must give too."""
    case = {"op": op, **inputs}
    return {**case, "fields": run_op(case), "note": note}


def refuse(op: str, error: type[HearthError], note: str, **inputs: Any) -> dict[str, Any]:
    """An invalid case: the inputs, the error class they must raise and its SPEC §9 code."""
    case = {"op": op, **inputs}
    try:
        run_op(case)
    except error as exc:
        if type(exc) is not error:
            raise AssertionError(f"{note}: raised {type(exc).__name__}") from exc
        return {**case, "error": error.__name__, "code": int(exc.code), "note": note}
    raise AssertionError(f"{note}: {op} accepted it")
