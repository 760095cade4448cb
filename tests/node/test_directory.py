"""The home directory is bounded (SPEC §13.6): strangers' records and loose certificates."""

from __future__ import annotations

import hashlib

from hearthmesh.node.identity.home_directory import HomeDirectory, Presence
from hearthmesh.protocol.home_record import HomeRecord, encode_home_record, issue_home_record
from hearthmesh.protocol.identity import (
    DeviceId,
    UserId,
    encode_certificate,
    issue_certificate,
    keypair_from_seed,
)
from hearthmesh.storage.memory import MemoryStore

NOW_MS = 1_700_000_000_000
OURS = UserId(b"\x01" * 32)
ROOM = b"\xaa" * 32


def _record(index: int, *, issued_ms: int = NOW_MS) -> HomeRecord:
    user = keypair_from_seed(hashlib.sha256(b"user %d" % index).digest())
    device = keypair_from_seed(hashlib.sha256(b"device %d" % index).digest())
    cert = issue_certificate(user, DeviceId(device.public), created_ms=0)
    return issue_home_record(
        user, issued_ms=issued_ms, homes=(f"peer{index}",), addrs=(), devices=(cert,)
    )


def test_a_flood_of_valid_records_keeps_the_bound_and_contacts_records() -> None:
    store = MemoryStore()
    directory = HomeDirectory(local_users={OURS}, max_strangers=50)
    contact, member = _record(1_000), _record(1_001)
    store.add_contact(OURS, contact.user, now_ms=0)
    store.add_member(ROOM, member.user, role=0, local=False, now_ms=0)
    assert directory.learn(store, encode_home_record(contact), now_ms=NOW_MS) == contact
    assert directory.learn(store, encode_home_record(member), now_ms=NOW_MS) == member
    for index in range(500):  # self-made identities, each record valid
        directory.learn(store, encode_home_record(_record(index)), now_ms=NOW_MS)
        if index == 0:
            directory.presence[_record(0).user] = Presence(
                online=True, last_seen_ms=NOW_MS, expires_ms=NOW_MS + 1
            )
    assert directory.strangers == 50
    assert len(directory.known_users()) == 52
    assert directory.homes(contact.user) == ("peer1000",)
    assert directory.homes(member.user) == ("peer1001",)
    # the newest strangers stay, the oldest went, here and in the store
    assert directory.record(_record(499).user) is not None
    assert directory.record(_record(0).user) is None
    assert store.get_setting("home-record." + _record(0).user.hex()) is None
    assert _record(0).user not in directory.presence
    assert store.get_setting("home-record." + contact.user.hex()) is not None


def test_the_purge_drops_old_strangers_and_keeps_who_became_a_contact() -> None:
    store = MemoryStore()
    day_ms = 24 * 3600 * 1000
    directory = HomeDirectory(local_users={OURS}, record_max_age_ms=30 * day_ms)
    old, befriended, fresh = (_record(i, issued_ms=NOW_MS) for i in range(3))
    for record in (old, befriended, fresh):
        directory.learn_verified(store, record)
    store.add_contact(OURS, befriended.user, now_ms=0)
    assert directory.purge(store, now_ms=NOW_MS + 30 * day_ms - 1) == 0
    assert directory.strangers == 2  # the befriended one is no stranger any more
    newer = _record(2, issued_ms=NOW_MS + 20 * day_ms)
    directory.learn_verified(store, newer)
    assert directory.purge(store, now_ms=NOW_MS + 30 * day_ms) == 1
    assert directory.record(old.user) is None
    assert directory.record(befriended.user) == befriended
    assert directory.record(fresh.user) == newer


def test_loose_certificates_are_a_bounded_lru_and_expire() -> None:
    store = MemoryStore()
    directory = HomeDirectory(local_users={OURS}, max_loose_certificates=3)
    user = keypair_from_seed(b"\x07" * 32)
    certs = []
    for index in range(5):
        device = DeviceId(hashlib.sha256(b"d %d" % index).digest())
        expires = NOW_MS + 10 if index == 4 else None
        cert = issue_certificate(user, device, created_ms=0, expires_ms=expires)
        certs.append((device, encode_certificate(cert)))
        directory.remember_certificate(device, certs[-1][1])
    assert [directory.certificate(d) for d, _ in certs[:2]] == [None, None]
    assert [directory.certificate(d) for d, _ in certs[2:]] == [c for _, c in certs[2:]]
    assert directory.purge(store, now_ms=NOW_MS + 10) == 1
    assert directory.certificate(certs[4][0]) is None
