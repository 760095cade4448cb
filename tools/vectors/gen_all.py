"""Regenerate every vector file: `python -m hearthmesh.tools.vectors.gen_all`.

Prints each file with its sha256, the values SPEC.md pins.
"""

from __future__ import annotations

import hashlib

from . import gen_e2ee, gen_envelope, gen_hlc, gen_identity, gen_reconcile

__all__ = ["main"]


def main() -> None:
    """Write all vector files and print their hashes."""
    for generator in (gen_identity, gen_hlc, gen_envelope, gen_reconcile, gen_e2ee):
        path = generator.generate()
        print(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  protocol/vectors/{path.name}")


if __name__ == "__main__":
    main()
