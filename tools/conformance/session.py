"""One run's session of the black-box suite (SPEC §20.2): the stranger and what it learnt.

State owned here: the kit (a `HostilePeer` connected to the node), the node's ids, what the
cases delivered so far, the group they made, and the client API if one was given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, TypeVar

from hearthmesh.protocol.delivery import (
    DELIVER_PROTOCOL,
    Ack,
    BatchItem,
    ProtocolErrorFrame,
    decode_frame,
    encode_deliver,
    verify_ack,
)
from hearthmesh.protocol.envelope import Envelope, RoomId
from hearthmesh.protocol.errors import HearthError
from hearthmesh.protocol.identity import DeviceId, UserId
from hearthmesh.protocol.peer_id import peer_id_of_node_key
from hearthmesh.protocol.rooms import direct_room_id
from hearthmesh.tools.client import ApiClient
from hearthmesh.tools.hostile.forge import EnvelopeForge
from hearthmesh.tools.hostile.peer import HostilePeer, code_name, result_outcome

__all__ = ["DELIVERY_WAIT_S", "Session", "outcome"]

T = TypeVar("T")

DELIVERY_WAIT_S: Final = 10.0
"""A case's wait by default (`Session.wait_s`): our node takes 0.1-0.3 s for any of them."""


@dataclass(slots=True)
class Session:
    """What the cases share: the stranger's kit, the target, and what was delivered."""

    kit: HostilePeer
    address: str
    peer_id: str
    user: UserId = field(default_factory=lambda: UserId(bytes(32)))
    """Learnt from the node's hello answer (the record naming it as a home)."""
    device: DeviceId | None = None
    """The device that record places on the node (SPEC §22), from the same answer."""
    delivered: list[Envelope] = field(default_factory=list)
    group: RoomId | None = None
    """A group our second stranger created and added the node's user and ours to."""
    group_admin: EnvelopeForge | None = None
    """That second stranger: the group's creator and admin."""
    api: ApiClient | None = None
    """The node's client API, when the run was given one: cases that look at what the node's
    user is shown need it."""
    wait_s: float = DELIVERY_WAIT_S
    """How long a case waits for what it checks the node sends or shows: a node that never
    does (broken on purpose, in tests/integration/test_conformance.py) waits it out."""

    @property
    def room(self) -> RoomId:
        """The direct room of our stranger and the node's user (SPEC §3.4.1)."""
        return direct_room_id(self.kit.user_id, self.user)

    def message(self, text: str) -> Envelope:
        return self.kit.forge.message(self.room, text, now_ms=self.kit.now_ms())

    async def deliver(
        self,
        wires: list[bytes],
        certificate: bytes | None = None,
        *,
        recipient: UserId | None = None,
        recipients: list[UserId] | None = None,
    ) -> str:
        """One DELIVER batch on a fresh stream; the outcomes, comma-separated (SPEC §11.3).
        Each item is for the node's user, or `recipient`, or the same item of `recipients`.
        The ack must be signed by the node key of the peer we asked."""
        certificates = [certificate or self.kit.stranger.certificate_bytes]
        to = recipients or [recipient or self.user] * len(wires)
        items = [BatchItem(0, user, w) for user, w in zip(to, wires, strict=True)]
        frame = encode_deliver(1, certificates, items)
        answer = await self.ask(DELIVER_PROTOCOL, frame, decode_frame)
        if isinstance(answer, str | ProtocolErrorFrame):
            return outcome(answer)
        if not isinstance(answer, Ack):
            return "answered-with-a-deliver"
        try:
            verify_ack(answer)
        except HearthError:
            return "ack-signature-fails"
        if peer_id_of_node_key(answer.node_key) != self.peer_id:
            return "ack-signed-by-another-node"
        return ",".join(result_outcome(r) for r in answer.results)

    async def ask(self, protocol: str, payload: bytes, decode: Callable[[bytes], T]) -> T | str:
        """One request on a fresh stream and its answer decoded, or what happened instead."""
        reply = await self.kit.request(self.peer_id, protocol, payload)
        if reply.frame is None:
            return reply.outcome
        try:
            return decode(reply.frame)
        except HearthError as exc:
            return f"garbled:{type(exc).__name__}"


def outcome(answer: str | ProtocolErrorFrame) -> str:
    """An answer that was no success, as an outcome string: what happened, or `ERROR:<code>`."""
    return answer if isinstance(answer, str) else f"ERROR:{code_name(answer.code)}"
