"""hearthmesh.storage: everything a node persists (ARCHITECTURE §10).

node/ imports the Protocols and values of `hearthmesh.storage.api`; `LmdbStore`
(`lmdb_store`) is the real implementation, `MemoryStore` (`memory`) its in-memory twin, and
`AsyncStore` (`async_store`) the asyncio face with group commit.
"""

from __future__ import annotations

__all__: list[str] = []
