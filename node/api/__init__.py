"""The home node's client API (SPEC §15): HTTP + WebSocket on aiohttp, receipts, push."""

from __future__ import annotations

from hearthmesh.node.api.config import ApiConfig
from hearthmesh.node.api.server import ApiServer

__all__ = ["ApiConfig", "ApiServer"]
