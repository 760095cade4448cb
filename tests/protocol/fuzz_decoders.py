"""Coverage-guided fuzzing, by hand, of every decoder `test_decoders.py` lists: the bytes and
text a stranger reaches (envelope, gossip, every stream protocol's frames, home records,
membership, receipts, reconciliation, media, gap fetch, linking, e2ee wrappers, client frames).

    .venv/bin/pip install atheris            # not a dependency: CI never runs this
    .venv/bin/python -m tests.protocol.fuzz_decoders --list
    .venv/bin/python -m tests.protocol.fuzz_decoders NAME CORPUS_DIR -max_total_time=300

An input passes when it decodes (and, for a canonical decoder, re-encodes to the same bytes,
SPEC §6.1.2) or raises the remote-error family; anything else stops the run with the input
saved as `crash-*`. An empty CORPUS_DIR is seeded with the decoder's samples. The test file's
Hypothesis properties are the same check at a fixed count, so a crash found here goes there
as a sample or a unit test.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import sys
import types
from collections.abc import Callable
from hashlib import sha256
from pathlib import Path
from typing import Any

from hearthmesh.protocol.errors import RemoteProtocolError

from .test_decoders import DECODERS, TEXT_DECODERS


def _target(name: str) -> tuple[Callable[[bytes], None], list[bytes]]:
    """The check of one decoder on raw bytes, and its samples as bytes."""
    if name in TEXT_DECODERS:
        decode_text, texts = TEXT_DECODERS[name]

        def check_text(data: bytes) -> None:
            with contextlib.suppress(RemoteProtocolError):
                decode_text(data.decode("utf-8", "replace"))

        return check_text, [text.encode() for text in texts]
    decoder = DECODERS[name]

    def check(data: bytes) -> None:
        try:
            value = decoder.decode(data)
        except RemoteProtocolError:
            return
        if decoder.encode is not None and decoder.encode(value) != data:
            raise AssertionError("decoded, but re-encodes to other bytes")

    return check, list(decoder.samples)


def _instrument(atheris: Any) -> None:
    """Coverage of protocol/ only (imported already): instrumenting every loaded function, as
    `atheris.instrument_all` does, took over 30 s here."""
    for obj in gc.get_objects():
        module = getattr(obj, "__module__", None) or ""
        if isinstance(obj, types.FunctionType) and module.startswith("hearthmesh.protocol"):
            with contextlib.suppress(Exception):  # a function atheris cannot patch stays as is
                atheris.instrument_func(obj)


def main(argv: list[str]) -> int:
    names = sorted([*DECODERS, *TEXT_DECODERS])
    if len(argv) < 3:
        print("\n".join(names))
        return 0
    name, corpus = argv[1], Path(argv[2])
    check, samples = _target(name)
    corpus.mkdir(parents=True, exist_ok=True)
    if not any(corpus.iterdir()):
        for sample in samples:
            (corpus / sha256(sample).hexdigest()[:16]).write_bytes(sample)
    atheris: Any = importlib.import_module("atheris")
    _instrument(atheris)
    atheris.Setup([argv[0], *argv[2:]], check)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
