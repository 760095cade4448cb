"""DeviceCrypto (SPEC §27) with real vodozemac and real LMDB stores: a room key reaches member
devices over Olm, Megolm opens once per index, a removed member gets no new key, a restart
never reuses an index, and keys that do not belong together are refused."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from hearthmesh.node.e2ee.device_crypto import DeviceCrypto, Recipient
from hearthmesh.node.e2ee.pickle_key import PICKLE_KEY_FILE, load_or_create_pickle_key
from hearthmesh.protocol import e2ee
from hearthmesh.protocol.envelope import Envelope, Kind, RoomId, seal
from hearthmesh.protocol.errors import KeyMismatch, Replayed, StorageError, Undecryptable
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.identity import DeviceId, UserId, keypair_from_seed
from hearthmesh.storage.lmdb_store import LmdbStore

ROOM = RoomId(b"r" * 32)
NOW_MS = 1_700_000_000_000
LIMITS = e2ee.Rotation(max_messages=100)


class Device:
    """One member device: its keys, its own store and its DeviceCrypto."""

    def __init__(self, name: str, root: Path) -> None:
        self.data_dir = root / name
        self.data_dir.mkdir()
        self.user_key = keypair_from_seed(name.encode().ljust(32, b"u"))
        self.device_key = keypair_from_seed(name.encode().ljust(32, b"d"))
        self.seq = 0
        self.open()

    def open(self) -> None:
        self.store = LmdbStore(self.data_dir / "store")
        self.crypto = DeviceCrypto(
            self.store,
            pickle_key=load_or_create_pickle_key(self.data_dir),
            device_key=self.device_key,
            user=UserId(self.user_key.public),
        )

    def seal(self, kind: Kind, content_type: str, body: bytes) -> Envelope:
        self.seq += 1
        return seal(
            self.device_key,
            kind=kind,
            room=ROOM,
            sender_user=UserId(self.user_key.public),
            seq=self.seq,
            hlc=Timestamp(wall_ms=NOW_MS, counter=self.seq),
            content_type=content_type,
            body=body,
        )

    def bundle(self) -> e2ee.KeyBundle:
        bundle = e2ee.decode_key_bundle(e2ee.encode_key_bundle(self.crypto.key_bundle(NOW_MS)))
        e2ee.verify_key_bundle(bundle)
        return bundle

    def share_to(self, *others: Device, removed: bool = False) -> list[Envelope]:
        session, _, _ = self.crypto.outbound(
            ROOM, now_ms=NOW_MS, member_removed=removed, limits=LIMITS
        )
        recipients = [
            Recipient(bundle=other.bundle(), one_time_key=other.crypto.claim_one_time_key())
            for other in others
        ]
        bodies = self.crypto.share(ROOM, session, recipients)
        return [
            self.seal(
                Kind.ROOM_KEY, "application/x-hearthmesh-room-key", e2ee.encode_room_key_shares(b)
            )
            for b in bodies
        ]

    def send(self, text: bytes) -> Envelope:
        session, record, _ = self.crypto.outbound(
            ROOM, now_ms=NOW_MS, member_removed=False, limits=LIMITS
        )
        body = self.crypto.encrypt(ROOM, session, record, "text/plain", text)
        return self.seal(Kind.MESSAGE, e2ee.ENCRYPTED_CONTENT_TYPE, body)


@pytest.fixture
def devices(tmp_path: Path) -> Iterator[dict[str, Device]]:
    made = {name: Device(name, tmp_path) for name in ("alice", "bob", "carol", "mallory")}
    yield made
    for device in made.values():
        device.store.close()


def _receive(device: Device, sender: Device, envelopes: list[Envelope]) -> None:
    for envelope in envelopes:
        accepted = device.crypto.accept_room_key(envelope)
        assert accepted is not None and accepted.sender_bundle == sender.bundle()


def test_a_room_key_over_olm_opens_the_senders_messages_once(devices: dict[str, Device]) -> None:
    alice, bob, carol = devices["alice"], devices["bob"], devices["carol"]
    _receive(bob, alice, alice.share_to(bob))
    canary = alice.send(b"canary 4711")
    opened = bob.crypto.open(canary)
    assert isinstance(opened, e2ee.Opened)
    assert (opened.content_type, opened.body) == ("text/plain", b"canary 4711")
    assert b"canary" not in canary.wire
    assert isinstance(alice.crypto.open(canary), e2ee.Opened)  # the sender's own copy
    assert bob.crypto.open(canary) == opened  # the same message again: idempotent
    assert carol.crypto.open(canary) == e2ee.Hold(
        e2ee.decode_encrypted_body(canary.body).session_id
    )
    replay = alice.seal(Kind.MESSAGE, e2ee.ENCRYPTED_CONTENT_TYPE, canary.body)
    with pytest.raises(Replayed):
        bob.crypto.open(replay)


def test_a_removed_member_gets_no_key_of_later_messages(devices: dict[str, Device]) -> None:
    alice, bob, carol = devices["alice"], devices["bob"], devices["carol"]
    first_share = alice.share_to(bob, carol)
    _receive(bob, alice, first_share)
    _receive(carol, alice, first_share)
    first = alice.send(b"before")
    _receive(bob, alice, alice.share_to(bob, removed=True))  # carol removed: rotate
    later = alice.send(b"after carol left")
    assert e2ee.decode_encrypted_body(later.body).session_id != (
        e2ee.decode_encrypted_body(first.body).session_id
    )
    assert isinstance(carol.crypto.open(first), e2ee.Opened)
    assert isinstance(carol.crypto.open(later), e2ee.Hold)
    opened = bob.crypto.open(later)
    assert isinstance(opened, e2ee.Opened) and opened.body == b"after carol left"


def test_a_member_reusing_anothers_ciphertext_is_a_key_mismatch(
    devices: dict[str, Device],
) -> None:
    alice, bob, mallory = devices["alice"], devices["bob"], devices["mallory"]
    _receive(bob, alice, alice.share_to(bob))
    _receive(bob, mallory, mallory.share_to(bob))
    stolen = alice.send(b"alice's words")
    copied = mallory.seal(Kind.MESSAGE, e2ee.ENCRYPTED_CONTENT_TYPE, stolen.body)
    with pytest.raises(KeyMismatch):
        bob.crypto.open(copied)


def test_a_room_key_from_another_devices_olm_key_is_a_key_mismatch(
    devices: dict[str, Device],
) -> None:
    alice, bob, mallory = devices["alice"], devices["bob"], devices["mallory"]
    shares = alice.share_to(bob)
    # mallory signs alice's shares (alice's bundle inside) as her own ROOM_KEY
    copied = mallory.seal(Kind.ROOM_KEY, shares[0].content_type, shares[0].body)
    with pytest.raises(KeyMismatch):
        bob.crypto.accept_room_key(copied)


def test_a_replayed_room_key_does_not_open_again(devices: dict[str, Device]) -> None:
    """Olm refuses a message it opened before (the store's dedupe drops the same envelope
    first); the session it gave stays and still opens the sender's messages."""
    alice, bob = devices["alice"], devices["bob"]
    shares = alice.share_to(bob)
    _receive(bob, alice, shares)
    with pytest.raises(Undecryptable):
        bob.crypto.accept_room_key(shares[0])
    assert isinstance(bob.crypto.open(alice.send(b"still opens")), e2ee.Opened)


def test_one_time_keys_are_handed_out_once_and_refilled(devices: dict[str, Device]) -> None:
    bob = devices["bob"]
    keys = [bob.crypto.claim_one_time_key() for _ in range(45)]
    assert len({key.key for key in keys}) == 45
    # marks of keys the account dropped were forgotten: at most the account's 50 remain
    assert bob.store.forget_handed_out(frozenset()) <= 50
    for key in keys[:3]:
        e2ee.verify_one_time_key(key)


def test_a_restart_continues_the_megolm_index(devices: dict[str, Device]) -> None:
    alice, bob = devices["alice"], devices["bob"]
    _receive(bob, alice, alice.share_to(bob))
    before = bob.crypto.open(alice.send(b"one"))
    alice.store.close()
    alice.open()
    after = bob.crypto.open(alice.send(b"two"))
    assert isinstance(before, e2ee.Opened) and isinstance(after, e2ee.Opened)
    assert (before.index, after.index) == (0, 1)


def test_the_pickle_key_file_is_private_and_stable(tmp_path: Path) -> None:
    key = load_or_create_pickle_key(tmp_path)
    assert (tmp_path / PICKLE_KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert load_or_create_pickle_key(tmp_path) == key
    (tmp_path / PICKLE_KEY_FILE).chmod(0o644)
    with pytest.raises(StorageError):
        load_or_create_pickle_key(tmp_path)


def test_a_requested_key_opens_from_the_index_its_user_was_given_never_before(
    devices: dict[str, Device],
) -> None:
    """SPEC §27.13.1: carol was given alice's session at index 2 (she joined then); the key
    alice's home answers her request with opens index 2 on, and what came before stays held
    (alice signed it: never refused, §27.11.2). A forward claiming another owner is a
    KEY_MISMATCH."""
    alice, carol = devices["alice"], devices["carol"]
    early = [alice.send(b"before carol 0"), alice.send(b"before carol 1")]
    later = alice.send(b"after carol joined")
    session_id = e2ee.decode_encrypted_body(later.body).session_id
    messages = alice.crypto.forward(
        [(ROOM, session_id)], carol.bundle(), from_index={session_id: 2}
    )
    with pytest.raises(KeyMismatch):
        carol.crypto.accept_forwarded(alice.bundle(), messages, owner=DeviceId(b"o" * 32))
    keys = carol.crypto.accept_forwarded(
        alice.bundle(), messages, owner=DeviceId(alice.device_key.public)
    )
    assert [k.first_index for k in keys] == [2]
    opened = carol.crypto.open(later)
    assert isinstance(opened, e2ee.Opened) and opened.body == b"after carol joined"
    for envelope in early:
        assert carol.crypto.open(envelope) == e2ee.Hold(session_id)


def test_a_session_known_from_a_later_index_is_replaced_by_the_same_owners_earlier_one(
    devices: dict[str, Device],
) -> None:
    """SPEC §27.11.2: carol was given alice's session late (index 2); a key from index 0 by the
    same owner (a forward, or alice answering for another device of carol's user) takes its
    place, and what came before opens. A later index, or another owner, changes nothing."""
    alice, carol = devices["alice"], devices["carol"]
    early = [alice.send(b"before 0"), alice.send(b"before 1")]
    later = alice.send(b"after")
    session_id = e2ee.decode_encrypted_body(later.body).session_id
    owner = DeviceId(alice.device_key.public)

    def key_from(index: int) -> list[tuple[int, bytes]]:
        return alice.crypto.forward(
            [(ROOM, session_id)], carol.bundle(), from_index={session_id: index}
        )

    assert [
        k.first_index
        for k in carol.crypto.accept_forwarded(alice.bundle(), key_from(2), owner=owner)
    ] == [2]
    assert carol.crypto.open(early[0]) == e2ee.Hold(session_id)  # held: an earlier key may come
    broken = bytearray(early[0].body)
    broken[-1] ^= 1  # its Megolm signature: broken by its sender, refused (§27.15.2)
    with pytest.raises(Undecryptable):
        carol.crypto.open(dataclasses.replace(early[0], body=bytes(broken)))
    assert carol.crypto.accept_forwarded(alice.bundle(), key_from(2), owner=owner) == []
    assert [
        k.first_index
        for k in carol.crypto.accept_forwarded(alice.bundle(), key_from(0), owner=owner)
    ] == [0]
    for envelope, text in zip(early, [b"before 0", b"before 1"], strict=True):
        opened = carol.crypto.open(envelope)
        assert isinstance(opened, e2ee.Opened) and opened.body == text
    opened = carol.crypto.open(later)
    assert isinstance(opened, e2ee.Opened) and opened.body == b"after"
