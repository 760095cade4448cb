"""`serving`: run a py-libp2p service together with a nursery for our own tasks (trio thread).

Part of the libp2p bridge (ARCHITECTURE §5; tests/test_layering.py `BRIDGE_MODULES`). Owns no
state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from libp2p.tools.anyio_service import Service, background_trio_service

__all__ = ["serving"]


@asynccontextmanager
async def serving(service: Service) -> AsyncIterator[trio.Nursery]:
    """Run `service` for the block, with a nursery for the caller's tasks; the nursery's tasks
    are cancelled when the block ends."""
    async with background_trio_service(service), trio.open_nursery() as nursery:
        try:
            yield nursery
        finally:
            nursery.cancel_scope.cancel()
