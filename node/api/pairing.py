"""One-time pairing codes (SPEC §15.7): what `hearthmesh client pair` shows a new browser.

State owned: the open codes, each with its expiry. A code is good once, for
`ApiConfig.pairing_code_ttl_s`; at most `MAX_OPEN_CODES` are open (issuing another drops the
oldest). Redeeming is rate-limited for the whole node, not per address, so a guesser gains
nothing from many addresses; with 50 bits per code and 1 attempt/s, guessing is hopeless.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Final

import segno

from hearthmesh.node.api.errors import ApiError
from hearthmesh.node.clock import Clock
from hearthmesh.node.rate_limit import TokenBucket
from hearthmesh.protocol.errors import ErrorCode

__all__ = [
    "CODE_ALPHABET",
    "CODE_CHARS",
    "MAX_OPEN_CODES",
    "PairingCodes",
    "normalize_code",
    "qr_data_uri",
]

CODE_ALPHABET: Final = "ABCDEFGHJKMNPQRSTVWXYZ0123456789"
"""32 symbols, no I, L, O, U (Crockford's base32): 5 bits each, nothing to misread."""
CODE_CHARS: Final = 10
MAX_OPEN_CODES: Final = 8


def qr_data_uri(text: str) -> str:
    """`text` as a QR code, an SVG data URI a page shows as an image (pairing, device links)."""
    return segno.make(text, error="m").svg_data_uri(scale=4)


def normalize_code(text: str) -> str:
    """What a person typed, as issued: upper case, without spaces or dashes."""
    return "".join(c for c in text.upper() if c not in " -")


class PairingCodes:
    """Open pairing codes; `issue` one, `redeem` it once before it expires."""

    def __init__(self, clock: Clock, *, ttl_s: float, rate_per_s: float, burst: int) -> None:
        self._clock = clock
        self._ttl_ms = int(ttl_s * 1000)
        self._attempts = TokenBucket(rate_per_s, burst, clock)
        self._open: dict[bytes, int] = {}
        """sha-256 of an open code -> its expiry (ms); insertion order is issue order."""

    def issue(self) -> tuple[str, int]:
        """A new code and when it expires (ms since the epoch)."""
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_CHARS))
        expires_ms = self._clock.now_ms() + self._ttl_ms
        if len(self._open) >= MAX_OPEN_CODES:
            del self._open[next(iter(self._open))]
        self._open[_digest(code)] = expires_ms
        return code, expires_ms

    def redeem(self, code: str) -> None:
        """Use up `code`.

        Raises:
            ApiError: 429 RATE_LIMITED, too many attempts on this node just now.
            ApiError: 401 NOT_AUTHORIZED, no such open code (wrong, used or expired).
        """
        if not self._attempts.take():
            raise ApiError(429, ErrorCode.RATE_LIMITED, "too many pairing attempts; wait")
        now = self._clock.now_ms()
        self._open = {key: expiry for key, expiry in self._open.items() if expiry > now}
        given = _digest(normalize_code(code))
        # Compare with every open code in constant time, so timing names none of them.
        match = [key for key in self._open if hmac.compare_digest(key, given)]
        if not match:
            raise ApiError(401, ErrorCode.NOT_AUTHORIZED, "wrong, used or expired pairing code")
        del self._open[match[0]]


def _digest(code: str) -> bytes:
    return hashlib.sha256(code.encode()).digest()
