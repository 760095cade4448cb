"""The node's own keys: node (libp2p identity), user, device and its certificate.

Created on first start and kept in the store's settings, so the peer id, user id and device
id survive restarts. Randomness and time come from the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from hearthmesh.protocol.identity import (
    DeviceCertificate,
    DeviceId,
    KeyPair,
    Rng,
    UserId,
    decode_certificate,
    encode_certificate,
    generate_keypair,
    issue_certificate,
    keypair_from_seed,
)
from hearthmesh.protocol.peer_id import peer_id_of_node_key
from hearthmesh.storage.api import NODE_KEY_SETTING, Settings

__all__ = ["Keyring", "load_or_create_keyring"]

USER_KEY_SETTING: Final = "user.key"
DEVICE_KEY_SETTING: Final = "device.key"
DEVICE_CERTIFICATE_SETTING: Final = "device.certificate"


@dataclass(frozen=True, slots=True, kw_only=True)
class Keyring:
    """Everything this node signs with."""

    node: KeyPair
    user: KeyPair
    device: KeyPair
    certificate: DeviceCertificate
    certificate_bytes: bytes

    @property
    def user_id(self) -> UserId:
        return UserId(self.user.public)

    @property
    def device_id(self) -> DeviceId:
        return DeviceId(self.device.public)

    @property
    def peer_id(self) -> str:
        return peer_id_of_node_key(self.node.public)


def _key(settings: Settings, name: str, rng: Rng) -> KeyPair:
    seed = settings.get_setting(name)
    if seed is None:
        key = generate_keypair(rng)
        settings.set_setting(name, key.seed)
        return key
    return keypair_from_seed(seed)


def load_or_create_keyring(settings: Settings, *, now_ms: Callable[[], int], rng: Rng) -> Keyring:
    """Read the keys from `settings`, creating (and storing) any that are missing.

    Runs on the store's thread: it makes several synchronous storage calls.
    """
    node = _key(settings, NODE_KEY_SETTING, rng)
    user = _key(settings, USER_KEY_SETTING, rng)
    device = _key(settings, DEVICE_KEY_SETTING, rng)
    stored = settings.get_setting(DEVICE_CERTIFICATE_SETTING)
    if stored is None:
        certificate = issue_certificate(user, DeviceId(device.public), created_ms=now_ms())
        stored = encode_certificate(certificate)
        settings.set_setting(DEVICE_CERTIFICATE_SETTING, stored)
    return Keyring(
        node=node,
        user=user,
        device=device,
        certificate=decode_certificate(stored),
        certificate_bytes=stored,
    )
