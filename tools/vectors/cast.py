"""The fixed cast of the wire vectors: users, devices, nodes and a clock, all from fixed seeds.

The same names as identity.json and envelope.json (alice, bob, alice-phone), so one key is one
key in every file. State: none (every value is derived afresh).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Final

from hearthmesh.protocol.envelope import Envelope, Kind, RoomId, seal
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.identity import (
    DeviceCertificate,
    DeviceId,
    KeyPair,
    UserId,
    encode_certificate,
    issue_certificate,
    keypair_from_seed,
)
from hearthmesh.protocol.peer_id import peer_id_of_node_key
from hearthmesh.protocol.rooms import direct_room_id, group_room_id

from .common import fixed_seed

__all__ = ["NOW_MS", "Cast"]

NOW_MS: Final = 1_700_000_000_000
"""The clock of every vector: 2023-11-14T22:13:20Z."""


@dataclass(frozen=True)
class Cast:
    """Keys and their certificates; `seal` stamps envelopes on the fixed clock."""

    @cached_property
    def alice(self) -> KeyPair:
        return keypair_from_seed(fixed_seed("alice"))

    @cached_property
    def bob(self) -> KeyPair:
        return keypair_from_seed(fixed_seed("bob"))

    @cached_property
    def carol(self) -> KeyPair:
        return keypair_from_seed(fixed_seed("carol"))

    @cached_property
    def phone(self) -> KeyPair:
        """alice's device."""
        return keypair_from_seed(fixed_seed("alice-phone"))

    @cached_property
    def laptop(self) -> KeyPair:
        """bob's device."""
        return keypair_from_seed(fixed_seed("bob-laptop"))

    @cached_property
    def tablet(self) -> KeyPair:
        """carol's device."""
        return keypair_from_seed(fixed_seed("carol-tablet"))

    @cached_property
    def node(self) -> KeyPair:
        """alice's home node (its libp2p identity)."""
        return keypair_from_seed(fixed_seed("alice-node"))

    def user(self, key: KeyPair) -> UserId:
        return UserId(key.public)

    def certificate(self, user: KeyPair, device: KeyPair) -> DeviceCertificate:
        return issue_certificate(user, DeviceId(device.public), created_ms=NOW_MS - 1000)

    def certificate_bytes(self, user: KeyPair, device: KeyPair) -> bytes:
        return encode_certificate(self.certificate(user, device))

    @property
    def direct_room(self) -> RoomId:
        return direct_room_id(self.user(self.alice), self.user(self.bob))

    @property
    def group_nonce(self) -> bytes:
        return fixed_seed("group-nonce")[:16]

    @property
    def group_room(self) -> RoomId:
        """alice's group."""
        return group_room_id(self.user(self.alice), self.group_nonce)

    @property
    def node_peer_id(self) -> str:
        return peer_id_of_node_key(self.node.public)

    def group_message(self, seq: int, *, body: bytes, tick: int) -> Envelope:
        """Alice's phone's plain-text MESSAGE number `seq` in the group, stamped `tick`."""
        return self.seal(
            self.alice,
            self.phone,
            kind=Kind.MESSAGE,
            room=self.group_room,
            seq=seq,
            body=body,
            content_type="text/plain",
            tick=tick,
        )

    def seal(
        self,
        user: KeyPair,
        device: KeyPair,
        *,
        kind: Kind,
        room: RoomId,
        seq: int,
        body: bytes,
        content_type: str,
        tick: int = 0,
    ) -> Envelope:
        """An envelope stamped `tick` ms after NOW_MS."""
        return seal(
            device,
            kind=kind,
            room=room,
            sender_user=self.user(user),
            seq=seq,
            hlc=Timestamp(wall_ms=NOW_MS + tick, counter=0),
            content_type=content_type,
            body=body,
        )
