"""The API's gate (SPEC §15.2): Host, Origin, bearer token, rate and size limits.

Every HTTP request and WebSocket upgrade passes `guard` first. The checks run in the order
that leaks least: Host (DNS rebinding), Origin (cross-site pages), rate (before the token, so
guessing is slow too), then the token, compared in constant time.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Middleware

from hearthmesh.node.api.config import LOOPBACK_HOSTS, ApiConfig
from hearthmesh.node.api.errors import ApiError, error_response
from hearthmesh.node.clock import Clock
from hearthmesh.protocol.errors import ErrorCode, HearthError

__all__ = ["RateLimiter", "TokenBucket", "check_origin", "make_guard"]

log = logging.getLogger(__name__)

_MAX_TRACKED_CLIENTS: Final = 4096
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class TokenBucket:
    """`rate_per_s` tokens a second, at most `burst` saved up; time comes from a Clock."""

    def __init__(self, rate_per_s: float, burst: int, clock: Clock) -> None:
        self._rate_per_ms = rate_per_s / 1000
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._last_ms = clock.now_ms()

    def take(self) -> bool:
        """Spend one token; False when none is left (the caller refuses the request)."""
        now = self._clock.now_ms()
        elapsed = max(0, now - self._last_ms)
        self._last_ms = now
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate_per_ms)
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class RateLimiter:
    """One bucket per client address, bounded: the least recently added is forgotten."""

    def __init__(self, rate_per_s: float, burst: int, clock: Clock) -> None:
        self._rate = rate_per_s
        self._burst = burst
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, client: str) -> bool:
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= _MAX_TRACKED_CLIENTS:
                del self._buckets[next(iter(self._buckets))]
            bucket = self._buckets[client] = TokenBucket(self._rate, self._burst, self._clock)
        return bucket.take()


def _host_name(host_header: str) -> str:
    if host_header.startswith("["):  # [::1]:8470
        return host_header.split("]", 1)[0] + "]"
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def check_origin(origin: str | None, host_header: str, config: ApiConfig) -> bool:
    """A request without Origin comes from a non-browser client (allowed); a browser page
    may call only from our own origin or a configured one."""
    if origin is None:
        return True
    if origin in config.allowed_origins:
        return True
    return origin in (f"http://{host_header}", f"https://{host_header}")


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    if request.path == "/v1/ws":  # browsers cannot set headers on a WebSocket upgrade
        return request.query.get("access_token")
    return None


def make_guard(config: ApiConfig, clock: Clock) -> Middleware:
    """The middleware that checks every request and turns every error into JSON."""
    limiter = RateLimiter(config.http_rate_per_s, config.http_burst, clock)
    allowed_hosts = LOOPBACK_HOSTS | set(config.allowed_hosts)
    expected = config.token.encode()

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            host = request.headers.get("Host", "")
            if _host_name(host) not in allowed_hosts:
                raise ApiError(403, ErrorCode.NOT_AUTHORIZED, "Host is not a loopback name")
            if not check_origin(request.headers.get("Origin"), host, config):
                raise ApiError(403, ErrorCode.NOT_AUTHORIZED, "Origin not allowed")
            if not limiter.take(request.remote or "?"):
                raise ApiError(429, ErrorCode.RATE_LIMITED, "too many requests; slow down")
            given = _bearer(request)
            if given is None:
                raise ApiError(401, ErrorCode.NOT_AUTHORIZED, "missing bearer token")
            if not hmac.compare_digest(given.encode(), expected):
                raise ApiError(401, ErrorCode.NOT_AUTHORIZED, "wrong bearer token")
            return await handler(request)
        except HearthError as exc:
            return error_response(exc)
        except web.HTTPRequestEntityTooLarge:
            return error_response(ApiError(413, ErrorCode.TOO_LARGE, "request body too large"))
        except web.HTTPException as exc:  # routing: 404 unknown path, 405 wrong method
            if exc.status < 400:
                raise
            code = ErrorCode.NOT_FOUND if exc.status == 404 else ErrorCode.MALFORMED
            return error_response(ApiError(exc.status, code, exc.reason))

    return guard
