"""Settings of the client API: where it listens, who may talk to it, and its limits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from hearthmesh.protocol.actions import MAX_RECALL_WINDOW_MS
from hearthmesh.protocol.client_api import MAX_FRAME_BYTES
from hearthmesh.protocol.media import MAX_MEDIA_BYTES

__all__ = ["DEFAULT_API_HOST", "DEFAULT_API_PORT", "LOOPBACK_HOSTS", "ApiConfig"]

DEFAULT_API_HOST: Final = "127.0.0.1"
DEFAULT_API_PORT: Final = 8470
LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
"""Host header names accepted without configuration (DNS-rebinding defence, SPEC §15.2)."""


@dataclass(frozen=True, kw_only=True)
class ApiConfig:
    """How the client API listens and what it accepts; only `token` has no default."""

    token: str
    """The bearer token every request must carry (the content of DATA_DIR/api-token)."""
    host: str = DEFAULT_API_HOST
    port: int = DEFAULT_API_PORT
    """0 picks a free port (tests); `ApiServer.url` tells which."""
    allowed_hosts: tuple[str, ...] = ()
    """Host header names accepted besides the loopback names (a reverse proxy's name)."""
    allowed_origins: tuple[str, ...] = ()
    """Origins (scheme://host[:port]) a browser may call from; none by default."""
    max_json_bytes: int = 256 * 1024
    """Largest JSON request body; larger is 413 TOO_LARGE."""
    max_media_bytes: int = MAX_MEDIA_BYTES
    """Largest media upload (also the most a node serves or fetches, SPEC §25)."""
    media_fetch_wait_s: float = 5.0
    """How long `GET /v1/media/{digest}` waits for a blob still on its way (then 504)."""
    max_ws_frame_bytes: int = MAX_FRAME_BYTES
    """Largest WebSocket frame a client may send; larger is an `error` frame (TOO_LARGE)."""
    http_rate_per_s: float = 200.0
    """Sustained HTTP requests per second per client address; beyond the burst, 429."""
    http_burst: int = 400
    unauthenticated_rate_per_s: float = 20.0
    """Sustained requests per second per address that carry no valid token (each answered 401);
    beyond the burst, 429. Counted apart from `http_rate_per_s`, so they never spend the token
    holder's rate (SPEC §15.2.3)."""
    unauthenticated_burst: int = 100
    ws_rate_per_s: float = 20_000.0
    """Sustained WebSocket frames per second per connection; beyond the burst, error 12."""
    ws_burst: int = 40_000
    feed_size: int = 65_536
    """Most missed events replayed to a client that reconnects with a cursor; further behind,
    it gets `resync` (SPEC §15.4.3)."""
    recall_window_ms: int = MAX_RECALL_WINDOW_MS
    """How long after sending our user may recall a message (SPEC §31.1); at most the
    protocol's MAX_RECALL_WINDOW_MS, which every receiver applies."""
    typing_ttl_ms: int = 6_000
    """A typing indicator not refreshed for this long is ended for clients (SPEC §17)."""
    max_clients: int = 64
    """Open WebSocket connections; more are refused with 429."""
    client_queue: int = 8_192
    """Frames queued for one slow client before it is disconnected (it resumes by cursor)."""

    # --- web client (#17) ---------------------------------------------------------------------
    max_paired_clients: int = 32
    """Browsers paired at once (SPEC §15.7); pairing another is 409 until one is revoked."""
    pairing_code_ttl_s: float = 300.0
    """How long a code from `hearthmesh client pair` can be redeemed (once)."""
    pairing_rate_per_s: float = 1.0
    """Sustained pairing attempts per second for the whole node; beyond the burst, 429."""
    pairing_burst: int = 10
    tls_cert_file: Path | None = None
    """With `tls_key_file`: serve HTTPS (SPEC §15.7). Without TLS the API binds only to a
    loopback address; plain HTTP on any other address is refused at start."""
    tls_key_file: Path | None = None
