"""API errors: a SPEC §9 code plus an HTTP status, rendered as `{"error": {code, message}}`."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from hearthmesh.protocol.errors import (
    Blocked,
    ErrorCode,
    HearthError,
    MembershipConflict,
    NodeFailed,
    NotAuthorized,
    NotFound,
    RateLimited,
    StorageError,
    TooLarge,
)

__all__ = ["ApiError", "error_body", "error_response", "http_status_of"]


class ApiError(HearthError):
    """A refusal with an explicit HTTP status (401 for a missing token, say)."""

    def __init__(self, status: int, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = code


def http_status_of(error: HearthError) -> int:
    """The HTTP status of an error (SPEC §15.3)."""
    if isinstance(error, ApiError):
        return error.status
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, MembershipConflict | Blocked):  # the state, not the caller's rights
        return 409
    if isinstance(error, NotAuthorized):
        return 403
    if isinstance(error, TooLarge):
        return 413
    if isinstance(error, RateLimited):
        return 429
    if isinstance(error, StorageError):
        return 500
    if isinstance(error, NodeFailed):  # the node stopped itself; a restarted one takes it
        return 503
    return 400


def _code_of(error: HearthError) -> ErrorCode:
    return error.error_code if isinstance(error, ApiError) else error.code


def error_body(error: HearthError, **extra: Any) -> dict[str, Any]:
    """`{"error": {"code", "name", "message"}}`, plus `extra` fields beside `error`."""
    code = _code_of(error)
    return {"error": {"code": int(code), "name": code.name, "message": str(error)}, **extra}


def error_response(error: HearthError, headers: dict[str, str] | None = None) -> web.Response:
    """The JSON response for `error`; 401 also names the auth scheme (RFC 6750)."""
    headers = dict(headers or {})
    if isinstance(error, ApiError) and error.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="hearthmesh"'
    if isinstance(error, ApiError) and error.status == 426:
        headers["Upgrade"] = "websocket"
    return web.json_response(error_body(error), status=http_status_of(error), headers=headers)
