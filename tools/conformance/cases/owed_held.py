"""The case of level `owed-held` (SPEC §20.5, §27.11.2-27.11.3): an envelope older than the
session the node holds is held, not refused. State: none.
"""

from __future__ import annotations

from typing import Final

import vodozemac

from hearthmesh.protocol import e2ee
from hearthmesh.protocol.capabilities import Level
from hearthmesh.protocol.delivery import ProtocolErrorFrame
from hearthmesh.protocol.envelope import Envelope, Kind
from hearthmesh.protocol.errors import HearthError
from hearthmesh.protocol.identity import DeviceId

from ..session import Session, outcome
from .case import Case

__all__ = ["OLDER_THAN_THE_SESSION_HELD"]


async def _older_than_the_session_held(s: Session) -> str:
    """Our stranger seals two Megolm messages of one session (indexes 0 and 1), gives the
    node's device the session's key from index 1 (a ROOM_KEY over Olm, from its bundle's
    fallback key), and delivers the ROOM_KEY with the second message, then the first: a node
    that advertises `owed-held` stores the first, held for a key from an earlier index
    (§27.11.2); a release before it answered REJECTED `UNDECRYPTABLE`, and a sender that owed
    the session from index 0 lost it (§27.11.3)."""
    if s.device is None:
        return "no-device-in-the-record"
    claimed = await s.ask(
        e2ee.KEYS_PROTOCOL, e2ee.encode_claim_request(s.device), e2ee.decode_claim_answer
    )
    if isinstance(claimed, str | ProtocolErrorFrame):
        return f"claim:{outcome(claimed)}"
    try:
        theirs = e2ee.decode_key_bundle(claimed.bundle)
    except HearthError as exc:
        return f"claim:invalid:{type(exc).__name__}"
    account = vodozemac.Account()
    ours = e2ee.issue_key_bundle(
        s.kit.stranger.device,
        identity_key=bytes(account.curve25519_key.to_bytes()),
        fallback_key=s.kit.rng(e2ee.CURVE_KEY_BYTES),  # never used: we only send
        issued_ms=s.kit.now_ms(),
    )
    await s.kit.announce_home(s.peer_id, bundles=(ours,))  # the ROOM_KEY's bundle is ours
    session = vodozemac.GroupSession()
    first = _encrypted(s, session, "index 0")
    room_key = _room_key(s, account, ours, theirs, session)  # from index 1
    second = _encrypted(s, session, "index 1")
    given = await s.deliver([room_key.wire, second.wire])
    older = await s.deliver([first.wire])
    return f"KEY:{given},OLDER:{older}"


def _encrypted(s: Session, session: vodozemac.GroupSession, text: str) -> Envelope:
    body, _ = e2ee.encrypt_content(session, "text/plain", text.encode())
    return s.kit.forge.seal(
        Kind.MESSAGE, s.room, body, now_ms=s.kit.now_ms(), content_type=e2ee.ENCRYPTED_CONTENT_TYPE
    )


def _room_key(
    s: Session,
    account: vodozemac.Account,
    ours: e2ee.KeyBundle,
    theirs: e2ee.KeyBundle,
    session: vodozemac.GroupSession,
) -> Envelope:
    """A ROOM_KEY of `session` at its current index for the node's device (§27.5)."""
    payload = e2ee.encode_room_key(
        e2ee.RoomKey(
            room=s.room,
            session_id=e2ee.session_id_bytes(session.session_id),
            session_key=e2ee.key_bytes(session.session_key.to_base64()),
            first_index=session.message_index,
            sender_user=s.kit.user_id,
            sender_device=DeviceId(s.kit.stranger.device.public),
            sender_curve=ours.identity_key,
            recipient_device=theirs.device,
            recipient_curve=theirs.identity_key,
        )
    )
    olm = account.create_outbound_session(
        vodozemac.Curve25519PublicKey.from_bytes(theirs.identity_key),
        vodozemac.Curve25519PublicKey.from_bytes(theirs.fallback_key),
    )
    kind, ciphertext = olm.encrypt(payload).to_parts()
    share = e2ee.Share(recipient=theirs.device, olm_kind=kind, ciphertext=bytes(ciphertext))
    body = e2ee.encode_room_key_shares(e2ee.RoomKeyShares(sender_bundle=ours, shares=(share,)))
    return s.kit.forge.seal(
        Kind.ROOM_KEY, s.room, body, now_ms=s.kit.now_ms(), content_type=e2ee.ROOM_KEY_CONTENT_TYPE
    )


OLDER_THAN_THE_SESSION_HELD: Final = Case(
    name="older_than_the_session_held",
    section="§27.11.2, §27.11.3",
    expected="KEY:STORED,STORED,OLDER:STORED",
    run=_older_than_the_session_held,
    level=Level.OWED_HELD,
)
