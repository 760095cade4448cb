"""The starting corpus of every fuzz target: the protocol vectors' byte strings."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib.resources import files
from typing import Any

__all__ = ["vector_bytes"]


def _hex_strings(value: Any) -> Iterator[bytes]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _hex_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _hex_strings(item)
    elif isinstance(value, str):
        try:
            yield bytes.fromhex(value)
        except ValueError:
            yield value.encode()


def vector_bytes() -> set[bytes]:
    """Every byte string of the protocol vectors (hex, else the text's UTF-8)."""
    found: set[bytes] = set()
    for vector in files("hearthmesh.protocol").joinpath("vectors").iterdir():
        if vector.name.endswith(".json"):
            found.update(_hex_strings(json.loads(vector.read_text())))
    return found
