"""Client routes of SAS verification (SPEC §29.5): start, show, confirm, cancel, and trust.

Flows and trust are shown as `verify_views` renders them. Owns no state.
"""

from __future__ import annotations

import asyncio
from typing import Final

from aiohttp import web

from hearthmesh.node.api.bodies import read_json
from hearthmesh.node.api.errors import ApiError
from hearthmesh.node.api.service import SERVICE_KEY
from hearthmesh.node.api.verify_views import flow_view, trust_view
from hearthmesh.node.node import Node
from hearthmesh.node.p2p.errors import P2PError
from hearthmesh.protocol.client_api import decode_user
from hearthmesh.protocol.errors import ErrorCode, InvalidIdentifier
from hearthmesh.protocol.verification import FLOW_ID_BYTES

__all__ = ["VERIFY_ROUTES", "flow_view", "trust_view"]

_MAX_BODY_BYTES: Final = 1024
_MAX_PEER_CHARS: Final = 128
_REACH_TIMEOUT_S: Final = 10.0


def _node(request: web.Request) -> Node:
    return request.app[SERVICE_KEY].node


def _flow_id(request: web.Request) -> bytes:
    text = request.match_info["flow_id"]
    try:
        flow = bytes.fromhex(text)
    except ValueError:
        flow = b""
    if len(flow) != FLOW_ID_BYTES or flow.hex() != text:
        raise InvalidIdentifier("a verification id is 32 lowercase hex digits")
    return flow


async def start_verification(request: web.Request) -> web.Response:
    body = await read_json(request, max_bytes=_MAX_BODY_BYTES)
    user = decode_user(body.get("user_id"))
    peer = body.get("peer_id")
    if peer is not None and not (isinstance(peer, str) and 0 < len(peer) <= _MAX_PEER_CHARS):
        raise InvalidIdentifier("peer_id is a peer id string")
    try:
        async with asyncio.timeout(_REACH_TIMEOUT_S):
            flow = await _node(request).verification.start(user, peer)
    except (P2PError, OSError, TimeoutError) as exc:
        raise ApiError(
            504, ErrorCode.NOT_FOUND, f"that device's home is unreachable: {exc}"
        ) from None
    return web.json_response(flow_view(flow), status=201)


async def list_verifications(request: web.Request) -> web.Response:
    flows = _node(request).verification.flows()
    return web.json_response({"verifications": [flow_view(f) for f in flows]})


async def get_verification(request: web.Request) -> web.Response:
    return web.json_response(flow_view(_node(request).verification.flow(_flow_id(request))))


async def confirm_verification(request: web.Request) -> web.Response:
    flow = await _node(request).verification.confirm(_flow_id(request))
    return web.json_response(flow_view(flow))


async def cancel_verification(request: web.Request) -> web.Response:
    flow = await _node(request).verification.cancel(_flow_id(request))
    return web.json_response(flow_view(flow))


async def user_trust(request: web.Request) -> web.Response:
    user = decode_user(request.match_info["user_id"])
    trusted, listed = await _node(request).verification.trust_of(user)
    return web.json_response(trust_view(user, trusted, listed))


async def all_trust(request: web.Request) -> web.Response:
    """`user_trust` of every user with a verified key: one request for a client's whole list
    (a user not named has none, so shows no badge)."""
    users = await _node(request).verification.trusted_users()
    return web.json_response({"users": [trust_view(*user) for user in users]})


VERIFY_ROUTES: Final = (
    ("GET", "/v1/verifications", list_verifications),
    ("POST", "/v1/verifications", start_verification),
    ("GET", "/v1/verifications/{flow_id}", get_verification),
    ("POST", "/v1/verifications/{flow_id}/confirm", confirm_verification),
    ("POST", "/v1/verifications/{flow_id}/cancel", cancel_verification),
    ("GET", "/v1/users/{user_id}/trust", user_trust),
    ("GET", "/v1/trust", all_trust),
)
"""Routes of SPEC §29.5 (part of `http_routes.ROUTES`)."""
