"""The cases of level `multi-device` (SPEC §20.5): sync between the homes of one user
(SPEC §23). State: none.
"""

from __future__ import annotations

from typing import Final

from hearthmesh.protocol.capabilities import Level
from hearthmesh.protocol.sync import SYNC_PROTOCOL, encode_room_list

from ..session import Session
from .case import Case

__all__ = ["SYNC_FROM_A_STRANGER"]


async def _sync_stranger(s: Session) -> str:
    return (await s.kit.request(s.peer_id, SYNC_PROTOCOL, encode_room_list([]))).summary


SYNC_FROM_A_STRANGER: Final = Case(
    name="sync_from_a_stranger",
    section="§23.1",
    expected="ERROR:NOT_AUTHORIZED",
    run=_sync_stranger,
    hostile=True,
    level=Level.MULTI_DEVICE,
)
