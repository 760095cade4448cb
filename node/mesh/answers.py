"""Reading a peer's answer to a request of ours (SPEC §11.6.1): an ERROR frame is the refusal
its code names, an answer the peer was entitled to give and never charged; a frame that is
neither the answer nor an ERROR frame cannot be right and is charged to the peer as a whole
frame. One reader for every request the node makes that way (gap fetch, join, key forward, key
request, history handoff). State owned here: none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from hearthmesh.protocol.delivery import ProtocolErrorFrame
from hearthmesh.protocol.errors import RemoteProtocolError, refusal

__all__ = ["read_answer"]

A = TypeVar("A")


def read_answer(
    frame: bytes,
    decode: Callable[[bytes], A | ProtocolErrorFrame],
    *,
    peer: str,
    charge: Callable[[str, RemoteProtocolError], None],
    refused_as: str,
) -> A:
    """The answer `decode` finds in `peer`'s `frame`.

    Raises:
        RemoteProtocolError: the refusal an ERROR frame's code names (`refused_as`: its
            message's prefix), not charged; or the frame is neither: charged to `peer`.
    """
    try:
        answer = decode(frame)
    except RemoteProtocolError as exc:
        charge(peer, exc)
        raise
    if isinstance(answer, ProtocolErrorFrame):
        raise refusal(answer.code, f"{refused_as}: {answer.message}")
    return answer
