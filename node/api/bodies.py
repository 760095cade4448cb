"""Reading a request's JSON body at the edge (SPEC §15.2.3, §15.6)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from hearthmesh.node.api.service import SERVICE_KEY
from hearthmesh.protocol.client_api import decode_json_object
from hearthmesh.protocol.errors import TooLarge

__all__ = ["read_json"]


async def read_json(request: web.Request, *, max_bytes: int | None = None) -> dict[str, Any]:
    """The request's JSON object body, within the size limit (and `max_bytes`, if lower).

    Raises TooLarge, MalformedMessage."""
    limit = request.app[SERVICE_KEY].config.max_json_bytes
    if max_bytes is not None:
        limit = min(limit, max_bytes)
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"JSON body over {limit} bytes")
    data = await request.content.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"JSON body over {limit} bytes")
    return decode_json_object(data, "body")  # an empty body is no object: it is required
