"""Our implementation's side of `hearthmesh conformance vectors` (SPEC §20.1): JSON lines.

Reads one vector case per line on stdin (its `op` and inputs) and writes one line back: the
decoded `{"fields": ...}` or the refusal `{"error": class name, "code": §9 code}`. Another
implementation answers the same lines with its own decoders. State: none.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from hearthmesh.protocol.errors import HearthError
from hearthmesh.tools.vectors.codecs import run_op

__all__ = ["answer", "main"]


def answer(case: dict[str, Any]) -> dict[str, Any]:
    """What our decoders say of one case."""
    try:
        return {"fields": run_op(case)}
    except HearthError as exc:
        return {"error": type(exc).__name__, "code": int(exc.code)}


def main(stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> None:
    for line in stdin:
        stdout.write(json.dumps(answer(json.loads(line))) + "\n")
        stdout.flush()


if __name__ == "__main__":
    main()
