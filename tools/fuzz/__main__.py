"""`python -m hearthmesh.tools.fuzz TARGET [libFuzzer flags]`: fuzz one decoder with atheris.

atheris is not a dependency (CI never runs this): `pip install atheris` into the venv first.
`--list` prints the targets; `--seed DIR` writes the protocol vectors' byte strings into DIR as
a starting corpus. A crash leaves its input as `crash-*` in the working directory.
"""

from __future__ import annotations

import importlib
import sys
from hashlib import sha256
from pathlib import Path
from typing import Any

from .seeds import vector_bytes


def seed(directory: Path) -> int:
    """Write every byte string of the protocol vectors into `directory`; returns how many."""
    directory.mkdir(parents=True, exist_ok=True)
    found = vector_bytes()
    for data in found:
        (directory / sha256(data).hexdigest()[:16]).write_bytes(data)
    return len(found)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] == "--list":
        from .targets import TARGETS  # here only: `_fuzz` imports it instrumented

        print("\n".join(TARGETS))
        return 0
    if argv[1] == "--seed":
        print(seed(Path(argv[2])))
        return 0
    return _fuzz(argv[1], argv)


def _fuzz(name: str, argv: list[str]) -> int:
    atheris: Any = importlib.import_module("atheris")
    # Coverage of our decoders only: instrumenting every loaded module took over 30 s.
    with atheris.instrument_imports(include=["hearthmesh.protocol"]):
        from .targets import TARGETS, check
    if name not in TARGETS:
        print(f"unknown target {name!r}; --list shows them", file=sys.stderr)
        return 2
    atheris.Setup([argv[0], *argv[2:]], lambda data: check(name, data))
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
