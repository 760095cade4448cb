"""Routes that pair and manage browser clients (SPEC §15.7).

`POST /v1/pair` is public (the code is the credential) and sets the session cookie; the rest
need the bearer token or a session: `GET /v1/session` tells a page who it is and its CSRF
token; `POST /v1/clients/pair` issues a one-time code; `GET /v1/clients` lists the paired
clients and `DELETE /v1/clients/{client_id}` revokes one.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from hearthmesh.node.api.bodies import read_json
from hearthmesh.node.api.paired_clients import (
    CLIENTS_KEY,
    COOKIE_NAME,
    MAX_CLIENT_NAME_CHARS,
    csrf_token,
)
from hearthmesh.node.api.pairing import PairingCodes, qr_data_uri
from hearthmesh.node.api.service import SERVICE_KEY
from hearthmesh.node.api.web_client import WEB_ROUTES, is_web_path
from hearthmesh.protocol.client_api import decode_text
from hearthmesh.protocol.errors import InvalidIdentifier, NotFound
from hearthmesh.protocol.identity import user_id_text
from hearthmesh.storage.api import ClientRecord
from hearthmesh.storage.clients import CLIENT_ID_BYTES

__all__ = [
    "CLIENT_ROUTES",
    "CODES_KEY",
    "FINGERPRINT_KEY",
    "PUBLIC_ROUTES",
    "SESSION_KEY",
    "is_public",
]

CODES_KEY: Final = web.AppKey("pairing_codes", PairingCodes)
FINGERPRINT_KEY: Final = web.AppKey("tls_fingerprint", str)
"""sha-256 of the API's TLS certificate (64 hex digits), or "" over plain HTTP."""
SESSION_KEY: Final = web.RequestKey("session", tuple[ClientRecord, str])
"""request[SESSION_KEY]: (ClientRecord, secret) of a request made with a session cookie."""
_COOKIE_MAX_AGE_S: Final = 400 * 86_400
"""The longest a browser keeps a cookie (RFC 6265bis): the pairing outlives browser restarts."""
_MAX_CODE_CHARS: Final = 64
PAIRED_MARKER: Final = "hearthmesh_paired"
"""A cookie the page can read, beside the HttpOnly one: it shows the app, not the pairing form,
without a request that would fail (and log a console error) in an unpaired browser."""


def _client_view(record: ClientRecord) -> dict[str, object]:
    return {
        "client_id": record.client_id.hex(),
        "name": record.name,
        "created_ms": record.created_ms,
    }


def _session_view(request: web.Request, record: ClientRecord, secret: str) -> dict[str, object]:
    service = request.app[SERVICE_KEY]
    return {
        **_client_view(record),
        "user_id": user_id_text(service.own),
        "csrf_token": csrf_token(secret),
    }


def is_public(request: web.Request) -> bool:
    """Does this request go to a route of `PUBLIC_ROUTES`?"""
    return is_web_path(request.path) or request.path == "/v1/pair"


async def redeem_pairing_code(request: web.Request) -> web.Response:
    body = await read_json(request)
    code = decode_text(body.get("code"), "code", max_bytes=_MAX_CODE_CHARS)
    name = decode_text(body.get("name", "browser"), "name", max_bytes=MAX_CLIENT_NAME_CHARS)
    request.app[CODES_KEY].redeem(code)
    record, cookie = await request.app[CLIENTS_KEY].pair(name)
    secret = cookie.partition(".")[2]
    response = web.json_response(_session_view(request, record, secret), status=201)
    for name, value, httponly in ((COOKIE_NAME, cookie, True), (PAIRED_MARKER, "1", False)):
        response.set_cookie(
            name,
            value,
            max_age=_COOKIE_MAX_AGE_S,
            path="/",
            httponly=httponly,
            samesite="Strict",
            secure=request.secure,
        )
    return response


async def session(request: web.Request) -> web.Response:
    held = request.get(SESSION_KEY)
    if held is None:  # the bearer token: the CLI, not a paired client
        service = request.app[SERVICE_KEY]
        return web.json_response(
            {"client_id": None, "user_id": user_id_text(service.own), "csrf_token": None}
        )
    record, secret = held
    return web.json_response(_session_view(request, record, secret))


def _reachable_origin(request: web.Request) -> str:
    """Where the paired device will reach the API: the first configured host name (a LAN name
    or address, as a phone sees it), else the host this request came to."""
    service = request.app[SERVICE_KEY]
    scheme = "https" if request.app[FINGERPRINT_KEY] else "http"
    hosts = service.config.allowed_hosts
    if not hosts:
        return f"{scheme}://{request.host}"
    port = service.api_url.rsplit(":", 1)[1]
    return f"{scheme}://{hosts[0]}:{port}"


async def issue_pairing_code(request: web.Request) -> web.Response:
    code, expires_ms = request.app[CODES_KEY].issue()
    url = f"{_reachable_origin(request)}/#pair={code}"
    fingerprint = request.app[FINGERPRINT_KEY]
    if fingerprint:  # the scanning client can pin the certificate (SPEC §15.7)
        url += f"&fp={fingerprint}"
    return web.json_response(
        {"code": code, "expires_ms": expires_ms, "url": url, "qr": qr_data_uri(url)}, status=201
    )


async def list_clients(request: web.Request) -> web.Response:
    records = request.app[CLIENTS_KEY].records()
    return web.json_response({"clients": [_client_view(r) for r in records]})


async def revoke_client(request: web.Request) -> web.Response:
    text = request.match_info["client_id"]
    if len(text) != 2 * CLIENT_ID_BYTES:
        raise InvalidIdentifier(f"a client id is {2 * CLIENT_ID_BYTES} hex digits")
    try:
        client_id = bytes.fromhex(text)
    except ValueError:
        raise InvalidIdentifier(f"a client id is {2 * CLIENT_ID_BYTES} hex digits") from None
    if not await request.app[CLIENTS_KEY].revoke(client_id):
        raise NotFound("no such paired client")
    return web.json_response({"client_id": text, "revoked": True})


PUBLIC_ROUTES: Final = (("POST", "/v1/pair", redeem_pairing_code), *WEB_ROUTES)
"""Routes that need no credential: pairing (the code is one) and the web client's files."""
CLIENT_ROUTES: Final = (
    ("GET", "/v1/session", session),
    ("GET", "/v1/clients", list_clients),
    ("POST", "/v1/clients/pair", issue_pairing_code),
    ("DELETE", "/v1/clients/{client_id:[0-9a-f]+}", revoke_client),  # not /v1/clients/pair
)
"""Routes that need the bearer token or a session (part of `http_routes.ROUTES`)."""
