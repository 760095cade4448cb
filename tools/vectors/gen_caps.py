"""Generate protocol/vectors/caps.json: capability requests and answers (SPEC §20.5)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hearthmesh.protocol.canonical import CborValue, encode_canonical
from hearthmesh.protocol.capabilities import Level, encode_caps_answer, encode_caps_request
from hearthmesh.protocol.errors import MalformedMessage, TooLarge

from .common import VECTORS_DIR, pin, refuse, write_vectors

__all__ = ["generate"]


def _answer(names: Sequence[CborValue]) -> str:
    return encode_canonical([1, list(names)]).hex()


def generate(directory: Path = VECTORS_DIR) -> Path:
    """`[0]` and `[1, [name, ...]]`: names sorted, each once, at most 32 of 1-32 characters, in
    at most 1 KiB; a name the decoder does not know is skipped, not refused."""
    every: list[CborValue] = [str(level) for level in sorted(Level)]
    valid = [
        pin("caps_request", "the one request", hex=encode_caps_request().hex()),
        pin(
            "caps_answer",
            "every level this revision names, sorted",
            hex=encode_caps_answer(frozenset(Level)).hex(),
        ),
        pin("caps_answer", "no level: an empty list", hex=_answer([])),
        pin(
            "caps_answer",
            "a level of a later revision is skipped, not refused",
            hex=_answer(sorted(["core", "im", "zz-later-level"])),
        ),
    ]
    invalid = [
        refuse(
            "caps_request", MalformedMessage, "a request is [0]", hex=encode_canonical([1]).hex()
        ),
        refuse(
            "caps_request",
            MalformedMessage,
            "nothing after the 0",
            hex=encode_canonical([0, 0]).hex(),
        ),
        refuse("caps_answer", MalformedMessage, "names out of order", hex=_answer(["im", "core"])),
        refuse("caps_answer", MalformedMessage, "a name twice", hex=_answer(["core", "core"])),
        refuse(
            "caps_answer",
            MalformedMessage,
            "33 names",
            hex=_answer(sorted(f"level-{n:02}" for n in range(33))),
        ),
        refuse("caps_answer", MalformedMessage, "an empty name", hex=_answer(["", "core"])),
        refuse("caps_answer", MalformedMessage, "a name of 33 characters", hex=_answer(["x" * 33])),
        refuse("caps_answer", MalformedMessage, "a name that is no text", hex=_answer([7])),
        refuse(
            "caps_answer",
            MalformedMessage,
            "the request's tag",
            hex=encode_canonical([0, every]).hex(),
        ),
        refuse(
            "caps_answer",
            TooLarge,
            "32 names of 32 characters: past 1 KiB",
            hex=_answer(sorted(f"{n:02}" + "x" * 30 for n in range(32))),
        ),
    ]
    return write_vectors(
        "caps",
        spec="SPEC.md §20.5",
        function="tools/vectors/codecs.py ops caps_request, caps_answer",
        valid=valid,
        invalid=invalid,
        directory=directory,
    )
