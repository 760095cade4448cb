"""`hearthmesh bench e2ee`, media part: sealing and opening blobs (SPEC §28) in MB/s.

Seals (fresh key, AES-256-GCM, plaintext SHA-256) and opens (GCM tag, plaintext SHA-256) a
1 MiB and a 10 MiB blob, best of a few rounds (a loaded machine stretches the others). The
message parts of the e2ee bench live beside this; `run_media` is what they merge in.
"""

from __future__ import annotations

import os
import time
from typing import Any, Final

from hearthmesh.protocol.media_seal import open_media, seal_media

__all__ = ["run_media"]

_MIB: Final = 1024 * 1024
_SIZES_MIB: Final = (1, 10)


def _best_s(rounds: int, work: Any) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def run_media(quick: bool) -> dict[str, Any]:
    """Seal and open MB/s (1 MB = 10^6 bytes) per blob size, and the ms of one 10 MiB blob."""
    rounds = 2 if quick else 5
    figures: dict[str, Any] = {}
    for mib in _SIZES_MIB:
        plaintext = os.urandom(mib * _MIB)
        ciphertext, seal = seal_media(plaintext, os.urandom)
        seal_s = _best_s(rounds, lambda p=plaintext: seal_media(p, os.urandom))
        open_s = _best_s(rounds, lambda c=ciphertext, s=seal: open_media(c, s))
        figures[f"{mib}mib"] = {
            "seal_mb_s": round(len(plaintext) / seal_s / 1e6, 1),
            "open_mb_s": round(len(plaintext) / open_s / 1e6, 1),
            "seal_ms": round(seal_s * 1000, 2),
            "open_ms": round(open_s * 1000, 2),
        }
    return figures
