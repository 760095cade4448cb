"""Paired clients (SPEC §15.7): the browsers that hold a session cookie instead of the token.

State owned: a copy of the store's `clients.credentials` (read at start, written through), and
the requests each client has in progress, so that revoking a client ends its open WebSockets
at once. The cookie is `<client id hex>.<secret>`; only the secret's sha-256 is stored. A
request that changes state must also carry `X-CSRF-Token`, a MAC of the secret that the page
learns from `/v1/pair` or `/v1/session`: a cross-site page can make the browser send the
cookie (SameSite=Strict already forbids that), but never read or forge this header.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from aiohttp import web

from hearthmesh.node.api.errors import ApiError
from hearthmesh.node.clock import Clock
from hearthmesh.protocol.errors import ErrorCode
from hearthmesh.storage.api import ClientRecord
from hearthmesh.storage.async_store import AsyncStore
from hearthmesh.storage.clients import CLIENT_ID_BYTES

__all__ = [
    "CLIENTS_KEY",
    "COOKIE_NAME",
    "CSRF_HEADER",
    "MAX_CLIENT_NAME_CHARS",
    "PairedClients",
    "csrf_token",
]

COOKIE_NAME: Final = "hearthmesh_session"
CSRF_HEADER: Final = "X-CSRF-Token"
MAX_CLIENT_NAME_CHARS: Final = 64
_SECRET_BYTES: Final = 32
_SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


def csrf_token(secret: str) -> str:
    """The CSRF token of a session: a MAC of its secret, so nothing more is stored."""
    return hmac.new(secret.encode(), b"hearthmesh csrf", hashlib.sha256).hexdigest()


def _secret_hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class PairedClients:
    """Who holds a session cookie; `check` a request's cookie, `pair` and `revoke` clients."""

    def __init__(self, store: AsyncStore, clock: Clock, *, max_clients: int) -> None:
        self._store = store
        self._clock = clock
        self._max = max_clients
        self._records: dict[bytes, ClientRecord] = {}
        self._in_progress: dict[bytes, set[asyncio.Task[object]]] = {}

    async def load(self) -> None:
        """Read the paired clients from the store (at API start)."""
        records = await self._store.read(self._store.store.clients)
        self._records = {record.client_id: record for record in records}

    def records(self) -> list[ClientRecord]:
        """Every paired client, by id."""
        return sorted(self._records.values(), key=lambda r: r.client_id)

    async def pair(self, name: str) -> tuple[ClientRecord, str]:
        """A new client and its cookie value.

        Raises:
            ApiError: 409 QUOTA_EXCEEDED, `max_clients` are paired already.
        """
        secret = secrets.token_urlsafe(_SECRET_BYTES)
        record = ClientRecord(
            client_id=secrets.token_bytes(CLIENT_ID_BYTES),
            secret_sha256=_secret_hash(secret),
            name=name[:MAX_CLIENT_NAME_CHARS],
            created_ms=self._clock.now_ms(),
        )
        if not await self._store.run(self._store.store.add_client, record, self._max):
            raise ApiError(
                409, ErrorCode.QUOTA_EXCEEDED, f"{self._max} clients are paired; revoke one"
            )
        self._records[record.client_id] = record
        return record, f"{record.client_id.hex()}.{secret}"

    async def revoke(self, client_id: bytes) -> bool:
        """Forget a client and end its requests in progress (its WebSockets); False if none."""
        if client_id not in self._records:
            return False
        await self._store.run(self._store.store.delete_client, client_id)
        del self._records[client_id]
        for task in self._in_progress.pop(client_id, set()):
            task.cancel()
        return True

    def check(self, request: web.Request) -> tuple[ClientRecord, str] | None:
        """The client and secret a request's session cookie names; None without a cookie.

        Raises:
            ApiError: 401 for a cookie of no paired client or a wrong secret, 403 for a request
                that changes state without the session's CSRF token.
        """
        cookie = request.cookies.get(COOKIE_NAME)
        if cookie is None:
            return None
        id_text, _, secret = cookie.partition(".")
        try:
            record = self._records.get(bytes.fromhex(id_text))
        except ValueError:
            record = None
        # A header that is not ASCII (aiohttp keeps its bytes as lone surrogates) is no secret.
        if (
            record is None
            or not secret.isascii()
            or not hmac.compare_digest(_secret_hash(secret), record.secret_sha256)
        ):
            raise ApiError(401, ErrorCode.NOT_AUTHORIZED, "session cookie of no paired client")
        given = request.headers.get(CSRF_HEADER, "")
        if request.method not in _SAFE_METHODS and not (
            given.isascii() and hmac.compare_digest(given.encode(), csrf_token(secret).encode())
        ):
            raise ApiError(403, ErrorCode.NOT_AUTHORIZED, f"missing or wrong {CSRF_HEADER}")
        return record, secret

    @contextmanager
    def in_progress(self, client_id: bytes) -> Iterator[None]:
        """Mark the current task as serving `client_id`, so `revoke` can end it."""
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - always inside aiohttp's handler task
            yield
            return
        tasks = self._in_progress.setdefault(client_id, set())
        tasks.add(task)
        try:
            yield
        finally:
            tasks.discard(task)
            if not tasks:
                self._in_progress.pop(client_id, None)


CLIENTS_KEY: Final = web.AppKey("paired_clients", PairedClients)
