"""Regenerate every vector file: `python -m hearthmesh.tools.vectors.gen_all`.

Prints each file with its sha256, the values SPEC.md pins.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from . import (
    gen_actions,
    gen_bodies,
    gen_caps,
    gen_claim,
    gen_delivery,
    gen_e2ee,
    gen_envelope,
    gen_groups,
    gen_history,
    gen_hlc,
    gen_homes,
    gen_identity,
    gen_keys,
    gen_linking,
    gen_membership,
    gen_reconcile,
    gen_signals,
    gen_transfer,
    gen_verify,
)
from .common import VECTORS_DIR

__all__ = ["generate_all", "main"]


def generate_all(directory: Path = VECTORS_DIR) -> list[Path]:
    """Write every vector file into `directory`; the paths in a fixed order."""
    paths: list[Path] = []
    singles = (
        gen_identity,
        gen_hlc,
        gen_envelope,
        gen_reconcile,
        gen_delivery,
        gen_linking,
        gen_e2ee,
        gen_keys,
        gen_groups,
        gen_actions,
        gen_caps,
        gen_claim,
        gen_verify,
        gen_bodies,
        gen_signals,
        gen_history,
    )
    for single in singles:
        paths.append(single.generate(directory))
    for several in (gen_homes, gen_membership, gen_transfer):
        paths.extend(several.generate(directory))
    return paths


def main() -> None:
    """Write all vector files and print their hashes."""
    for path in generate_all():
        print(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  protocol/vectors/{path.name}")


if __name__ == "__main__":
    main()
