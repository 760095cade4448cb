"""Sans-I/O protocol core: identities, HLC, envelopes, codec, ordering (SPEC.md).

Nothing here performs I/O, reads a clock or draws randomness: time and randomness are
parameters, so every rule is testable exactly.
"""

from __future__ import annotations

__all__: list[str] = []
