"""The node's own keys: node (libp2p identity), user, device and its certificate.

Created on first start and kept in the store's settings, so the peer id, user id and device
id survive restarts. Randomness and time come from the caller.

A user's first node holds the user key (the primary): it certifies devices and signs the
user's home record. A linked node holds only the user's public key, its own device key and the
certificate the primary gave it (SPEC §22).

State: our keys and our device's certificate, immutable once loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from hearthmesh.protocol.errors import StorageError
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

__all__ = [
    "HOME_RECORD_SETTING",
    "Keyring",
    "has_identity",
    "load_or_create_keyring",
    "prepare_link_keys",
    "store_link",
]

USER_KEY_SETTING: Final = "user.key"
USER_PUBLIC_SETTING: Final = "user.public"
HOME_RECORD_SETTING: Final = "home.record"
"""A linked node's copy of the user's home record, as the primary last issued it."""
DEVICE_KEY_SETTING: Final = "device.key"
DEVICE_CERTIFICATE_SETTING: Final = "device.certificate"


@dataclass(frozen=True, slots=True, kw_only=True)
class Keyring:
    """Everything this node signs with."""

    node: KeyPair
    user: KeyPair | None
    """None on a linked device: only the primary holds the user key."""
    user_id: UserId
    device: KeyPair
    certificate: DeviceCertificate
    certificate_bytes: bytes

    @property
    def is_primary(self) -> bool:
        return self.user is not None

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
    device = _key(settings, DEVICE_KEY_SETTING, rng)
    linked_user = settings.get_setting(USER_PUBLIC_SETTING)
    user = None if linked_user is not None else _key(settings, USER_KEY_SETTING, rng)
    stored = settings.get_setting(DEVICE_CERTIFICATE_SETTING)
    if stored is None:
        if user is None:
            raise StorageError("a linked device without its certificate: link it again")
        certificate = issue_certificate(user, DeviceId(device.public), created_ms=now_ms())
        stored = encode_certificate(certificate)
        settings.set_setting(DEVICE_CERTIFICATE_SETTING, stored)
    return Keyring(
        node=node,
        user=user,
        user_id=UserId(user.public if user is not None else bytes(linked_user or b"")),
        device=device,
        certificate=decode_certificate(stored),
        certificate_bytes=stored,
    )


def has_identity(settings: Settings) -> bool:
    """True once a user (own key, or linked) belongs to this store."""
    return any(
        settings.get_setting(name) is not None for name in (USER_KEY_SETTING, USER_PUBLIC_SETTING)
    )


def prepare_link_keys(settings: Settings, rng: Rng) -> tuple[KeyPair, KeyPair]:
    """Create (or read) the node and device keys of a device about to be linked.

    Raises:
        StorageError: the store already belongs to a user.
    """
    if has_identity(settings):
        raise StorageError("this data directory already holds a user; use a new one to link")
    return _key(settings, NODE_KEY_SETTING, rng), _key(settings, DEVICE_KEY_SETTING, rng)


def store_link(settings: Settings, *, user: UserId, certificate: bytes, home_record: bytes) -> None:
    """Keep what the primary gave a newly linked device."""
    settings.set_setting(DEVICE_CERTIFICATE_SETTING, certificate)
    settings.set_setting(HOME_RECORD_SETTING, home_record)
    settings.set_setting(USER_PUBLIC_SETTING, user)
