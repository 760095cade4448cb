"""The kit as an E2EE sender (SPEC §27): a Megolm session a target holds, and key requests
answered as a script says.

`MegolmSender` gives our stranger's device an Olm account, the key bundle its home record lists
(`announce`), and one outbound Megolm session in a room. It seals messages of that session
(`encrypted`), so the target's home holds them while it has no key (§27.7.1); shares the room
key with the target's device as a ROOM_KEY over Olm (`room_key`, §27.5); and makes the
key-request answers (§27.13, the key-forward ANSWER of §27.12.2) a scripted sender sends:
the right key (`answer`), a forged one (`forged_answer`: another session's key under this
session's id), one naming another recipient device (`misaddressed_answer`) or a refusal
(`refusal`). `serve_key_requests` answers the target's requests on our host with whatever a
script returns for the n-th of them, and `serve_history` its history requests (§30.6) alike.

State owned here: the Olm account and Megolm session (vodozemac objects, in memory), and the
requests served so far (`AskedLog`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import vodozemac

from hearthmesh.node.p2p.errors import P2PError
from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.protocol import e2ee
from hearthmesh.protocol.envelope import Envelope, Kind, RoomId
from hearthmesh.protocol.errors import HearthError, RemoteProtocolError
from hearthmesh.protocol.history_share import (
    HISTORY_PROTOCOL,
    HistoryRequest,
    decode_history_request,
)
from hearthmesh.protocol.identity import DeviceId

from .peer import HostilePeer, Reply

__all__ = ["AskedLog", "MegolmSender", "Script"]

Asked = TypeVar("Asked")
"""A request the target makes of us: a key request, a history request."""

Script = Callable[[int, Asked], Awaitable[bytes | None]]
"""The frame to answer the n-th request (from 0) with; None ends the stream unanswered."""


@dataclass(slots=True)
class AskedLog(Generic[Asked]):
    """The requests the target made of us, as they came."""

    requests: list[Asked] = field(default_factory=list)
    ended: int = 0
    """Requests whose stream is done (answered, or closed by either side)."""
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set at each request that comes and each that ends."""

    async def wait_for(self, done: Callable[[AskedLog[Asked]], bool]) -> None:
        """Until `done(self)`; the caller bounds the wait."""
        while not done(self):
            self.changed.clear()
            await self.changed.wait()


class MegolmSender:
    """Our stranger's device sending in `room` (see the module docstring)."""

    def __init__(self, kit: HostilePeer, room: RoomId) -> None:
        self.kit = kit
        self.room = room
        self._account = vodozemac.Account()
        self._account.generate_fallback_key()  # type: ignore[attr-defined]  # missing in the stub
        fallback = next(iter(self._account.fallback_key.values()))  # type: ignore[attr-defined]
        self.bundle = e2ee.issue_key_bundle(
            kit.stranger.device,
            identity_key=bytes(self._account.curve25519_key.to_bytes()),
            fallback_key=bytes(fallback.to_bytes()),
            issued_ms=kit.now_ms(),
        )
        """Our device's bundle (SPEC §27.1): our record lists it once `announce`d."""
        self._session = vodozemac.GroupSession()
        self._key_at_0 = self._session.session_key
        """The session's key at index 0: a ROOM_KEY of it opens every message we seal."""
        self._first = vodozemac.InboundGroupSession(self._key_at_0)
        """Our own inbound copy from index 0: what a key request is answered from."""

    @property
    def device(self) -> DeviceId:
        return DeviceId(self.kit.stranger.device.public)

    @property
    def session_id(self) -> bytes:
        return e2ee.session_id_bytes(self._session.session_id)

    async def announce(self, peer: str) -> Reply:
        """Our hello, its record listing our bundle: the target asks this peer for our keys."""
        return await self.kit.announce_home(peer, bundles=(self.bundle,))

    def encrypted(self, text: str) -> Envelope:
        """A MESSAGE of our session at its next index (SPEC §27.6)."""
        body, _ = e2ee.encrypt_content(self._session, "text/plain", text.encode())
        return self._seal(Kind.MESSAGE, body, e2ee.ENCRYPTED_CONTENT_TYPE)

    def room_key(self, theirs: e2ee.KeyBundle, *, from_first: bool = False) -> Envelope:
        """A ROOM_KEY of our session for the device of `theirs` (§27.5), from its current index
        (it opens what we seal from now on, not what went before), or `from_first`: from
        index 0, as a share that went before the messages and came late."""
        key = self._key_at_0 if from_first else self._session.session_key
        payload = e2ee.encode_room_key(
            e2ee.RoomKey(
                room=self.room,
                session_id=self.session_id,
                session_key=e2ee.key_bytes(key.to_base64()),
                first_index=0 if from_first else self._session.message_index,
                sender_user=self.kit.user_id,
                sender_device=self.device,
                sender_curve=self.bundle.identity_key,
                recipient_device=theirs.device,
                recipient_curve=theirs.identity_key,
            )
        )
        kind, ciphertext = self._olm_to(theirs).encrypt(payload).to_parts()
        share = e2ee.Share(recipient=theirs.device, olm_kind=kind, ciphertext=bytes(ciphertext))
        body = e2ee.encode_room_key_shares(
            e2ee.RoomKeyShares(sender_bundle=self.bundle, shares=(share,))
        )
        return self._seal(Kind.ROOM_KEY, body, e2ee.ROOM_KEY_CONTENT_TYPE)

    def _seal(self, kind: Kind, body: bytes, content_type: str) -> Envelope:
        return self.kit.forge.seal(
            kind, self.room, body, now_ms=self.kit.now_ms(), content_type=content_type
        )

    def answer(self, theirs: e2ee.KeyBundle) -> bytes:
        """The ANSWER a sender gives a key request for our session (§27.13.1): its key exported
        at index 0, over Olm to the device of `theirs`."""
        return self._answer_with(theirs, self._first)

    def forged_answer(self, theirs: e2ee.KeyBundle) -> bytes:
        """An ANSWER that names our session but carries another session's key (§27.12.2: the
        exported key is not the named session, `KEY_MISMATCH`): taken, it would stand in for
        ours (the first key of an id is kept), and the right one would open nothing."""
        other = vodozemac.InboundGroupSession(vodozemac.GroupSession().session_key)
        return self._answer_with(theirs, other)

    def misaddressed_answer(self, theirs: e2ee.KeyBundle, other: DeviceId) -> bytes:
        """The right key, over Olm to the device of `theirs`, but naming device `other` as
        its recipient (§27.12.2: a key for another device, `KEY_MISMATCH`)."""
        return self._answer_with(theirs, self._first, recipient=other)

    @staticmethod
    def refusal(error: RemoteProtocolError) -> bytes:
        """An ERROR frame `[3, code, message]` refusing a request with `error`'s code."""
        return e2ee.encode_claim_error(error)

    def _answer_with(
        self,
        theirs: e2ee.KeyBundle,
        inbound: vodozemac.InboundGroupSession,
        *,
        recipient: DeviceId | None = None,
    ) -> bytes:
        exported = inbound.export_at(0)
        if exported is None:  # a session made here always exports from its first index
            raise HearthError("our own inbound session does not export from index 0")
        payload = e2ee.encode_forwarded_key(
            e2ee.ForwardedKey(
                room=self.room,
                session_id=self.session_id,
                exported_key=e2ee.key_bytes(exported.to_base64()),
                first_index=0,
                sender_device=self.device,
                recipient_device=theirs.device if recipient is None else recipient,
            )
        )
        kind, ciphertext = self._olm_to(theirs).encrypt(payload).to_parts()
        return e2ee.encode_forward_answer(
            e2ee.ForwardAnswer(sender_bundle=self.bundle, messages=((kind, bytes(ciphertext)),))
        )

    def _olm_to(self, theirs: e2ee.KeyBundle) -> vodozemac.Session:
        """A new Olm session to the device of `theirs`, from its bundle's fallback key."""
        return self._account.create_outbound_session(
            vodozemac.Curve25519PublicKey.from_bytes(theirs.identity_key),
            vodozemac.Curve25519PublicKey.from_bytes(theirs.fallback_key),
        )

    def serve_key_requests(self, script: Script[e2ee.KeyRequest]) -> AskedLog[e2ee.KeyRequest]:
        """Answer the target's key requests on our host (SPEC §27.13) with `script`; the log
        they are noted in. A script may hold a request open by not returning: it is cancelled
        when the target ends the request (its own ask bound) or our host closes."""
        return self._serve(e2ee.KEY_REQUEST_PROTOCOL, e2ee.decode_key_request, script)

    def serve_history(self, script: Script[HistoryRequest]) -> AskedLog[HistoryRequest]:
        """Answer the target's history requests (SPEC §30.6: we are the admin's home that let
        it in) with `script`, as `serve_key_requests` does key requests."""
        return self._serve(HISTORY_PROTOCOL, decode_history_request, script)

    def _serve(
        self, protocol: str, decode: Callable[[bytes], Asked], script: Script[Asked]
    ) -> AskedLog[Asked]:
        log: AskedLog[Asked] = AskedLog()

        async def answer(n: int, request: Asked, stream: FrameStream) -> None:
            frame = await script(n, request)
            with contextlib.suppress(HearthError, P2PError):
                await (stream.close() if frame is None else stream.write_frame(frame))

        async def serve(stream: FrameStream) -> None:
            try:
                request = decode(await stream.read_frame())
            except (HearthError, P2PError):
                return  # broken off, or not a request: nothing to answer
            log.requests.append(request)
            log.changed.set()
            try:
                async with asyncio.TaskGroup() as group:
                    answering = group.create_task(answer(len(log.requests) - 1, request, stream))
                    with contextlib.suppress(HearthError, P2PError):
                        await stream.read_frame()  # the target sends nothing more: its end
                    answering.cancel()  # (done already, unless the target gave up first)
            finally:
                log.ended += 1
                log.changed.set()

        self.kit.host.set_stream_handler(protocol, serve)
        return log
