"""The API's gate (SPEC §15.2, §15.7): Host, Origin, token or session, rate and size limits.

Every HTTP request and WebSocket upgrade passes `guard` first. The checks run in the order
that leaks least: Host (DNS rebinding), Origin (cross-site pages), then the token, compared in
constant time; a browser without the token shows its session cookie instead (SPEC §15.7). The
web client's files and the pairing route need neither. Rates are counted per address in two
sets of buckets: requests that carry the token (or a session) spend one, refused ones and the
public routes the other (stricter) one, so a tokenless client can neither guess fast nor spend
the token holder's rate (SPEC §15.2.3).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from hearthmesh.node.api.client_routes import SESSION_KEY, is_public
from hearthmesh.node.api.config import LOOPBACK_HOSTS, ApiConfig
from hearthmesh.node.api.errors import ApiError, error_response
from hearthmesh.node.api.paired_clients import PairedClients
from hearthmesh.node.clock import Clock
from hearthmesh.node.rate_limit import RateLimiter
from hearthmesh.node.supervisor import Report
from hearthmesh.protocol.errors import ErrorCode, HearthError

__all__ = ["check_origin", "make_guard"]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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


def _is_token(given: str, expected: bytes) -> bool:
    """Constant-time comparison; a header that is not ASCII (`\\xff\\xfe`) is no token."""
    return given.isascii() and hmac.compare_digest(given.encode(), expected)


def make_guard(
    config: ApiConfig, clock: Clock, clients: PairedClients, report: Report
) -> Middleware:
    """The middleware that checks every request and turns every error into JSON; `report`
    (`Node.report_fault`) hears each one, so a store that failed stops the node (§11.8.5)."""
    authorized = RateLimiter(config.http_rate_per_s, config.http_burst, clock)
    refused = RateLimiter(config.unauthenticated_rate_per_s, config.unauthenticated_burst, clock)
    allowed_hosts = LOOPBACK_HOSTS | set(config.allowed_hosts)
    expected = config.token.encode()

    def spend_refused(address: str) -> None:
        if not refused.take(address):
            raise ApiError(429, ErrorCode.RATE_LIMITED, "too many refused requests")

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            host = request.headers.get("Host", "")
            if _host_name(host) not in allowed_hosts:
                raise ApiError(403, ErrorCode.NOT_AUTHORIZED, "Host is not a loopback name")
            if not check_origin(request.headers.get("Origin"), host, config):
                raise ApiError(403, ErrorCode.NOT_AUTHORIZED, "Origin not allowed")
            address = request.remote or "?"
            if is_public(request):  # the page and its files; pairing (the code is the secret)
                spend_refused(address)  # these carry no credential: the stricter bucket
                return await handler(request)
            given = _bearer(request)
            held = None
            if given is None or not _is_token(given, expected):
                try:  # a browser's session cookie (SPEC §15.7), when no bearer is given
                    held = clients.check(request) if given is None else None
                except ApiError:
                    spend_refused(address)
                    raise
                if held is None:
                    spend_refused(address)
                    reason = "missing bearer token" if given is None else "wrong bearer token"
                    raise ApiError(401, ErrorCode.NOT_AUTHORIZED, reason)
            if not authorized.take(address):
                raise ApiError(429, ErrorCode.RATE_LIMITED, "too many requests; slow down")
            if held is None:
                return await handler(request)
            request[SESSION_KEY] = held
            with clients.in_progress(held[0].client_id):  # revoking the client ends it
                return await handler(request)
        except HearthError as exc:
            report("api", exc)
            return error_response(exc)
        except web.HTTPRequestEntityTooLarge:
            return error_response(ApiError(413, ErrorCode.TOO_LARGE, "request body too large"))
        except web.HTTPException as exc:  # routing: 404 unknown path, 405 wrong method
            if exc.status < 400:
                raise
            code = ErrorCode.NOT_FOUND if exc.status == 404 else ErrorCode.MALFORMED
            allow = exc.headers.get("Allow")  # RFC 9110 §15.5.6: a 405 names what is allowed
            headers = None if allow is None else {"Allow": allow}
            return error_response(ApiError(exc.status, code, exc.reason), headers=headers)

    return guard
