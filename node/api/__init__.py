"""The home node's client API (SPEC §15): HTTP + WebSocket on aiohttp, receipts, push.

`ApiConfig` and `ApiServer` are imported on first use: `hearthmesh init` needs only
`api.token`, and the server brings in the node and libp2p (about 2 s of imports).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hearthmesh.node.api.config import ApiConfig
    from hearthmesh.node.api.server import ApiServer

__all__ = ["ApiConfig", "ApiServer"]

_HOMES = {"ApiConfig": "hearthmesh.node.api.config", "ApiServer": "hearthmesh.node.api.server"}


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
