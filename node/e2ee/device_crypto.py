"""This device's Olm account and Megolm sessions (SPEC §27), over `CryptoStore`.

`DeviceCrypto` does what protocol/e2ee decides, with vodozemac objects it unpickles from the
store and pickles back under the key of `pickle_key`: it publishes the key bundle, hands out
one-time keys (each once), encrypts room keys to member devices over Olm, encrypts content
with the room's outbound Megolm session (rotating per `protocol.e2ee.needs_rotation`), takes
room keys in after checking them against their channel, and opens encrypted bodies once per
(session, index).

State: our key bundle as first issued (its keys never change); up to `INBOUND_SESSIONS_KEPT`
inbound Megolm sessions unpickled, keyed by their stored pickle (a cache: the account and
sessions are the store's `e2ee.*` rows). Every method is called inside a store write batch,
so one at a time (SPEC §27.8).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import vodozemac

from hearthmesh.protocol import e2ee
from hearthmesh.protocol.envelope import Envelope, RoomId
from hearthmesh.protocol.errors import KeyMismatch, LocalProtocolError, Undecryptable
from hearthmesh.protocol.identity import DeviceId, KeyPair, UserId
from hearthmesh.storage.api import CryptoStore, InboundSession, OutboundSession

__all__ = ["INBOUND_SESSIONS_KEPT", "ONE_TIME_KEY_POOL", "AcceptedKey", "DeviceCrypto", "Recipient"]

ONE_TIME_KEY_POOL: Final = 20
"""One-time keys generated at a time: small, so the account pickle stays cheap (vodozemac
facts: 3,000 keys cost 48 ms to unpickle)."""


INBOUND_SESSIONS_KEPT: Final = 256
"""Inbound Megolm sessions kept unpickled (least recently used first out): one per sender
device and room in use spares an unpickle per message opened."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Recipient:
    """A member device to share a room key with: its verified bundle and, when its home
    answered a claim, a verified one-time key (else the bundle's fallback key is used)."""

    bundle: e2ee.KeyBundle
    one_time_key: e2ee.OneTimeKey | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AcceptedKey:
    """A room key taken in: its session, and the verified bundle of the device that sent it."""

    session_id: bytes
    sender_bundle: e2ee.KeyBundle


class DeviceCrypto:
    """The Olm/Megolm state of one device (see the module docstring)."""

    def __init__(
        self, store: CryptoStore, *, pickle_key: bytes, device_key: KeyPair, user: UserId
    ) -> None:
        self._store = store
        self._pickle_key = pickle_key
        self._device_key = device_key
        self._device = DeviceId(device_key.public)
        self._user = user
        self._bundle: e2ee.KeyBundle | None = None
        self._inbound_sessions: dict[bytes, vodozemac.InboundGroupSession] = {}
        if store.crypto_account() is None:
            account = vodozemac.Account()
            account.generate_fallback_key()  # type: ignore[attr-defined]  # missing in the stub
            self._save_account(account)

    # --- the account: bundle and one-time keys (SPEC §27.1, §27.2) ------------------------

    def _account(self) -> vodozemac.Account:
        pickle = self._store.crypto_account()
        if pickle is None:
            raise LocalProtocolError("the Olm account was not created")
        return vodozemac.Account.from_pickle(pickle.decode(), self._pickle_key)

    def _save_account(self, account: vodozemac.Account) -> None:
        self._store.set_crypto_account(account.pickle(self._pickle_key).encode())

    @property
    def identity_key(self) -> bytes:
        """Our Curve25519 identity key."""
        return bytes(self._account().curve25519_key.to_bytes())

    def key_bundle(self, now_ms: int) -> e2ee.KeyBundle:
        """Our signed bundle, for the home record and our ROOM_KEY bodies (SPEC §27.1); issued
        once per run (its keys never change), so every copy of it is the same."""
        if self._bundle is None:
            account = self._account()
            fallback = next(iter(account.fallback_key.values()))  # type: ignore[attr-defined]
            self._bundle = e2ee.issue_key_bundle(
                self._device_key,
                identity_key=bytes(account.curve25519_key.to_bytes()),
                fallback_key=bytes(fallback.to_bytes()),
                issued_ms=now_ms,
            )
        return self._bundle

    def claim_one_time_key(self) -> e2ee.OneTimeKey:
        """A signed one-time key never handed out before; refills the pool when it runs dry."""
        account = self._account()
        for _ in range(2):
            for key in account.one_time_keys.values():
                raw = bytes(key.to_bytes())
                if self._store.hand_out_one_time_key(raw):
                    return e2ee.issue_one_time_key(self._device_key, raw)
            # Never marked published: the listing stays the pool (and keeps the fallback key
            # listed); `e2ee.handed_out` says which were given. The account keeps at most 50
            # and forgets the oldest, which only a very late claimer would still hold.
            account.generate_one_time_keys(ONE_TIME_KEY_POOL)
            self._save_account(account)
            # marks of keys the account dropped (it keeps 50) can go: bounded by the pool
            self._store.forget_handed_out(
                frozenset(bytes(key.to_bytes()) for key in account.one_time_keys.values())
            )
        raise LocalProtocolError("a fresh one-time key pool had no key to hand out")

    # --- Megolm out: sessions, rotation, encryption (SPEC §27.6, §27.9) -------------------

    def outbound(
        self, room: RoomId, *, now_ms: int, member_removed: bool, limits: e2ee.Rotation
    ) -> tuple[vodozemac.GroupSession, OutboundSession, bool]:
        """The room's outbound session, new when none is kept or `needs_rotation` says so.

        Returns the session, its record, and True when it is new (its key must be shared
        before the first message that uses it).
        """
        kept = self.kept_outbound(room)
        if kept is not None:
            session, record = kept
            if not e2ee.needs_rotation(
                created_ms=record.created_ms,
                messages=record.messages,
                now_ms=now_ms,
                member_removed_since=member_removed,
                limits=limits,
            ):
                return session, record, False
        session, record = self.new_outbound(room, now_ms=now_ms)
        return session, record, True

    def kept_outbound(self, room: RoomId) -> tuple[vodozemac.GroupSession, OutboundSession] | None:
        """The room's stored outbound session, unpickled, if there is one."""
        record = self._store.outbound_session(room)
        if record is None:
            return None
        session = vodozemac.GroupSession.from_pickle(record.pickle.decode(), self._pickle_key)
        return session, record

    def new_outbound(
        self, room: RoomId, *, now_ms: int
    ) -> tuple[vodozemac.GroupSession, OutboundSession]:
        """Start (and store) a new outbound session in `room`, keeping our own inbound copy
        so our other devices' requests and our own history can be opened."""
        session = vodozemac.GroupSession()
        return session, self.keep_new_outbound(room, session, now_ms=now_ms)

    def keep_new_outbound(
        self, room: RoomId, session: vodozemac.GroupSession, *, now_ms: int
    ) -> OutboundSession:
        """Store `session`, new and not yet used, as the room's outbound session, with our own
        inbound copy; its record."""
        record = OutboundSession(
            created_ms=now_ms, messages=0, pickle=session.pickle(self._pickle_key).encode()
        )
        self._store.put_outbound_session(room, record)
        self._keep_inbound(room, session.session_key, owner=self._device)
        return record

    def save_outbound(
        self, room: RoomId, session: vodozemac.GroupSession, *, created_ms: int, messages: int
    ) -> None:
        """Store the session as it is now: in (or before) the batch that commits the envelopes
        it encrypted (SPEC §27.8)."""
        self._store.put_outbound_session(
            room,
            OutboundSession(
                created_ms=created_ms,
                messages=messages,
                pickle=session.pickle(self._pickle_key).encode(),
            ),
        )

    def encrypt(
        self,
        room: RoomId,
        session: vodozemac.GroupSession,
        record: OutboundSession,
        content_type: str,
        body: bytes,
    ) -> bytes:
        """The encrypted body of (content type, body); stores the session's advance (call it
        in the write batch of the envelope, SPEC §27.8)."""
        encrypted, _ = e2ee.encrypt_content(session, content_type, body)
        self._store.put_outbound_session(
            room,
            OutboundSession(
                created_ms=record.created_ms,
                messages=record.messages + 1,
                pickle=session.pickle(self._pickle_key).encode(),
            ),
        )
        return encrypted

    def share(
        self,
        room: RoomId,
        session: vodozemac.GroupSession,
        recipients: Sequence[Recipient],
        *,
        now_ms: int = 0,
    ) -> list[e2ee.RoomKeyShares]:
        """ROOM_KEY bodies carrying the session's key at its current index to `recipients`."""
        shares = self.share_each(room, session, recipients)
        return e2ee.chunk_shares(self.key_bundle(now_ms), shares)

    def share_each(
        self, room: RoomId, session: vodozemac.GroupSession, recipients: Sequence[Recipient]
    ) -> list[e2ee.Share]:
        """The session's key at its current index, one Olm message per recipient, in order:
        the caller groups them into ROOM_KEY bodies (SPEC §27.5.2, §27.5.3)."""
        account = self._account()
        session_key = e2ee.key_bytes(session.session_key.to_base64())
        shares = []
        for recipient in recipients:
            bundle = recipient.bundle
            payload = e2ee.encode_room_key(
                e2ee.RoomKey(
                    room=room,
                    session_id=e2ee.session_id_bytes(session.session_id),
                    session_key=session_key,
                    first_index=session.message_index,
                    sender_user=self._user,
                    sender_device=self._device,
                    sender_curve=bytes(account.curve25519_key.to_bytes()),
                    recipient_device=bundle.device,
                    recipient_curve=bundle.identity_key,
                )
            )
            olm = self._olm_to(account, recipient)
            kind, ciphertext = olm.encrypt(payload).to_parts()
            self._store.put_olm_session(
                bundle.identity_key, olm.session_id.encode(), olm.pickle(self._pickle_key).encode()
            )
            shares.append(
                e2ee.Share(recipient=bundle.device, olm_kind=kind, ciphertext=bytes(ciphertext))
            )
        return shares

    def _olm_to(self, account: vodozemac.Account, recipient: Recipient) -> vodozemac.Session:
        kept = self._store.olm_sessions(recipient.bundle.identity_key)
        if kept:
            _, pickle = kept[-1]
            return vodozemac.Session.from_pickle(pickle.decode(), self._pickle_key)
        key = (
            recipient.one_time_key.key if recipient.one_time_key else recipient.bundle.fallback_key
        )
        return account.create_outbound_session(
            vodozemac.Curve25519PublicKey.from_bytes(recipient.bundle.identity_key),
            vodozemac.Curve25519PublicKey.from_bytes(key),
        )

    # --- Megolm in: room keys and opening (SPEC §27.4, §27.7) -----------------------------

    def accept_room_key(self, envelope: Envelope) -> AcceptedKey | None:
        """Take our share of a ROOM_KEY envelope in; None if it holds none for us or the
        session was known already.

        Raises:
            MalformedMessage: the body or the decrypted payload is malformed.
            BadSignature: the body's bundle is not signed by its device.
            Undecryptable: our Olm message does not open.
            KeyMismatch: the bundle is another device's than the envelope's, or the payload
                names another party than its channel (SPEC §27.4.2).
        """
        shares = e2ee.decode_room_key_shares(envelope.body)
        share = shares.for_device(self._device)
        if share is None:
            return None
        e2ee.check_sender_bundle(shares, envelope.sender_device)
        sender_bundle = shares.sender_bundle
        plaintext = self._olm_open(shares.sender_curve, share)
        account_curve = self.identity_key
        key = e2ee.decode_room_key(plaintext)
        e2ee.check_room_key(
            key,
            room=envelope.room,
            sender_user=envelope.sender_user,
            sender_device=envelope.sender_device,
            sender_curve=sender_bundle.identity_key,
            recipient_device=self._device,
            recipient_curve=account_curve,
        )
        try:
            session_key = vodozemac.SessionKey(e2ee.key_text(key.session_key))
        except ValueError:
            raise Undecryptable("room key: not a Megolm session key") from None
        if not self._keep_inbound(
            envelope.room, session_key, owner=envelope.sender_device, expect=key
        ):
            return None
        return AcceptedKey(session_id=key.session_id, sender_bundle=sender_bundle)

    def _olm_open(self, sender_curve: bytes, share: e2ee.Share) -> bytes:
        message = vodozemac.AnyOlmMessage.from_parts(share.olm_kind, share.ciphertext)
        for session_id, pickle in self._store.olm_sessions(sender_curve):
            session = vodozemac.Session.from_pickle(pickle.decode(), self._pickle_key)
            try:
                plaintext = bytes(session.decrypt(message))
            except ValueError:
                continue
            self._store.put_olm_session(
                sender_curve, session_id, session.pickle(self._pickle_key).encode()
            )
            return plaintext
        pre_key = message.to_pre_key()
        if pre_key is None:
            raise Undecryptable("no Olm session opens this message")
        account = self._account()
        try:
            session, plaintext = account.create_inbound_session(
                vodozemac.Curve25519PublicKey.from_bytes(sender_curve), pre_key
            )
        except ValueError:
            raise Undecryptable("Olm pre-key message does not open") from None
        self._save_account(account)  # the one-time key is used up
        self._store.put_olm_session(
            sender_curve, session.session_id.encode(), session.pickle(self._pickle_key).encode()
        )
        return bytes(plaintext)

    def _keep_inbound(
        self,
        room: RoomId,
        session_key: vodozemac.SessionKey,
        *,
        owner: DeviceId,
        expect: e2ee.RoomKey | None = None,
    ) -> bool:
        inbound = vodozemac.InboundGroupSession(session_key)
        session_id = e2ee.session_id_bytes(inbound.session_id)
        if expect is not None and (
            session_id != expect.session_id or inbound.first_known_index != expect.first_index
        ):
            raise KeyMismatch("room key: session id or first index differs from the key's")
        return self._keep_session(room, session_id, inbound, owner=owner)

    def _keep_session(
        self,
        room: RoomId,
        session_id: bytes,
        inbound: vodozemac.InboundGroupSession,
        *,
        owner: DeviceId,
    ) -> bool:
        """Keep `inbound` if its id is new here, or in place of the kept one when it is the
        same owner's session known from an earlier index: a device given a session late (its
        key bundle reached the sender after the session began) reads the messages before that
        once a forward or a key request brings the earlier index (SPEC §27.11.2). The owner
        never moves. True if kept."""
        record = InboundSession(owner=owner, pickle=inbound.pickle(self._pickle_key).encode())
        kept = self._store.inbound_session(room, session_id)
        if kept is None:
            return self._store.put_inbound_session(room, session_id, record)
        if (
            kept.owner != owner
            or inbound.first_known_index >= self._inbound(kept.pickle).first_known_index
        ):
            return False
        self._store.replace_inbound_session(room, session_id, record)
        return True

    # --- forwarding between our own devices (SPEC §27.12) ----------------------------------

    def forward(
        self,
        sessions: Sequence[tuple[RoomId, bytes]],
        recipient: e2ee.KeyBundle,
        *,
        from_index: Mapping[bytes, int] | None = None,
    ) -> list[tuple[int, bytes]]:
        """One Olm message to `recipient` per session of `sessions` we hold, each carrying the
        session exported at the first index we hold, or later at `from_index[session id]`
        (what a key request's user was given, SPEC §27.13.1); a key we lack is left out."""
        account = self._account()
        olm = self._olm_to(account, Recipient(bundle=recipient))
        messages: list[tuple[int, bytes]] = []
        for room, session_id in sessions:
            kept = self._store.inbound_session(room, session_id)
            if kept is None:
                continue
            inbound = vodozemac.InboundGroupSession.from_pickle(
                kept.pickle.decode(), self._pickle_key
            )
            first = max(inbound.first_known_index, (from_index or {}).get(session_id, 0))
            exported = inbound.export_at(first)
            if exported is None:
                continue
            payload = e2ee.encode_forwarded_key(
                e2ee.ForwardedKey(
                    room=room,
                    session_id=session_id,
                    exported_key=e2ee.key_bytes(exported.to_base64()),
                    first_index=first,
                    sender_device=kept.owner,
                    recipient_device=recipient.device,
                )
            )
            kind, ciphertext = olm.encrypt(payload).to_parts()
            messages.append((kind, bytes(ciphertext)))
        if messages:
            self._store.put_olm_session(
                recipient.identity_key,
                olm.session_id.encode(),
                olm.pickle(self._pickle_key).encode(),
            )
        return messages

    def accept_forwarded(
        self,
        sender: e2ee.KeyBundle,
        messages: Sequence[tuple[int, bytes]],
        *,
        owner: DeviceId | None = None,
    ) -> list[e2ee.ForwardedKey]:
        """Take in the keys one of our own devices forwarded, or (`owner`: the sender's device)
        a session's sender answered a key request with (its bundle verified and listed in its
        user's record by the caller); the ones newly kept.

        Raises:
            Undecryptable: an Olm message does not open.
            MalformedMessage / KeyMismatch: a payload is malformed or for another device, or
                its key is not the session it names, or (with `owner`) of another device.
        """
        kept: list[e2ee.ForwardedKey] = []
        for kind, ciphertext in messages:
            share = e2ee.Share(recipient=self._device, olm_kind=kind, ciphertext=ciphertext)
            key = e2ee.decode_forwarded_key(self._olm_open(sender.identity_key, share))
            e2ee.check_forwarded_key(key, recipient=self._device, owner=owner)
            try:
                exported = vodozemac.ExportedSessionKey(e2ee.key_text(key.exported_key))
                inbound = vodozemac.InboundGroupSession.import_session(exported)
            except ValueError:
                raise Undecryptable("forwarded key: not an exported Megolm key") from None
            if e2ee.session_id_bytes(inbound.session_id) != key.session_id:
                raise KeyMismatch("forwarded key: session id differs from the key's")
            if self._keep_session(key.room, key.session_id, inbound, owner=key.sender_device):
                kept.append(key)
        return kept

    def open(self, envelope: Envelope) -> e2ee.Opened | e2ee.Hold:
        """Decrypt an encrypted envelope at a member's home, once per (session, index), and
        keep its plaintext (SPEC §27.7).

        Raises:
            MalformedMessage / UnsupportedVersion: the body is not an encrypted body.
            KeyMismatch: the session was shared by another device than the sender.
            Undecryptable: the ciphertext does not open (one its sender signed whose index
                precedes our key's first is held instead, SPEC §27.11.2).
            Replayed: its (session, index) already opened another message.
        """
        encrypted = e2ee.decode_encrypted_body(envelope.body)
        kept = self._store.inbound_session(envelope.room, encrypted.session_id)
        decision = e2ee.plan_open(
            encrypted,
            sender_device=envelope.sender_device,
            session_owner=None if kept is None else kept.owner,
        )
        if isinstance(decision, e2ee.Hold) or kept is None:
            return e2ee.Hold(encrypted.session_id)
        inbound = self._inbound(kept.pickle)
        try:
            opened = e2ee.open_encrypted(inbound, encrypted)
        except Undecryptable:
            # its sender's own message from before the index our key starts at (the key
            # reached us first): held, so a key request brings the earlier index, never
            # refused, which its sender's outbox would take as final (SPEC §27.11.2)
            if e2ee.signed_before_known(inbound, encrypted):
                return e2ee.Hold(encrypted.session_id)
            raise
        seen = self._store.keep_opened(
            encrypted.session_id, opened.index, envelope.message_id, opened.plaintext
        )
        e2ee.check_replay(seen, envelope.message_id)
        return opened

    def _inbound(self, pickle: bytes) -> vodozemac.InboundGroupSession:
        """The inbound session of a stored pickle, unpickled once while it stays recent.

        Keyed by the pickle itself, so what is used is always what the store holds (a session
        whose batch was undone is never found by a later read)."""
        session = self._inbound_sessions.pop(pickle, None)
        if session is None:
            session = vodozemac.InboundGroupSession.from_pickle(pickle.decode(), self._pickle_key)
            if len(self._inbound_sessions) >= INBOUND_SESSIONS_KEPT:
                del self._inbound_sessions[next(iter(self._inbound_sessions))]
        self._inbound_sessions[pickle] = session  # most recent last
        return session
