"""Generate protocol/vectors/keys.json: the wire of room keys between devices (SPEC §27.5,
§27.12, §27.13): ROOM_KEY bodies with the sender's bundle, key-forward requests and answers,
forwarded-key plaintexts and key requests, and ROOM_KEY envelopes at a home, addressed or in
the form before (§27.5.3, §20.7).

The Olm ciphertexts are fixed bytes: these cases pin the frames around them (an Olm message is
vodozemac's, opaque here); the exported key is a real one, of e2ee.json's pickled session.
"""

from __future__ import annotations

import base64
from pathlib import Path

import vodozemac

from hearthmesh.protocol.addressing import UNSEQUENCED
from hearthmesh.protocol.canonical import encode_canonical
from hearthmesh.protocol.e2ee import (
    ROOM_KEY_CONTENT_TYPE,
    ForwardAnswer,
    ForwardedKey,
    KeyRequest,
    OlmKind,
    RoomKeyShares,
    Share,
    encode_claim_error,
    encode_forward_answer,
    encode_forward_request,
    encode_forwarded_key,
    encode_key_bundle,
    encode_key_request,
    encode_room_key_shares,
    issue_key_bundle,
    session_id_bytes,
)
from hearthmesh.protocol.envelope import Kind, RoomId, seal
from hearthmesh.protocol.errors import (
    BadSignature,
    KeyMismatch,
    KeyRequestDenied,
    MalformedMessage,
    NotAddressed,
    NotListed,
    UnsupportedVersion,
)
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.identity import DeviceId, KeyPair

from .cast import NOW_MS, Cast
from .common import VECTORS_DIR, fixed_seed, pin, refuse, write_vectors
from .gen_e2ee import GROUP_SESSION_PICKLE, PICKLE_KEY, curve_public

__all__ = ["generate"]


def _exported_key() -> tuple[bytes, bytes]:
    """(session id, the session exported at index 0) of e2ee.json's pickled session."""
    session = vodozemac.GroupSession.from_pickle(GROUP_SESSION_PICKLE, PICKLE_KEY)
    inbound = vodozemac.InboundGroupSession(session.session_key)
    exported = inbound.export_at(0)
    assert exported is not None
    text = exported.to_base64()
    return session_id_bytes(session.session_id), base64.b64decode(text + "=" * (-len(text) % 4))


def _room_key_wire(c: Cast, room: RoomId, body: bytes, *, seq: int) -> str:
    """A ROOM_KEY of alice's phone in `room` carrying `body`, as hex."""
    return seal(
        c.phone,
        kind=Kind.ROOM_KEY,
        room=room,
        sender_user=c.user(c.alice),
        seq=seq,
        hlc=Timestamp(wall_ms=NOW_MS, counter=0),
        content_type=ROOM_KEY_CONTENT_TYPE,
        body=body,
    ).wire.hex()


def _devices(*keys: KeyPair) -> list[str]:
    return [key.public.hex() for key in keys]


def generate(directory: Path = VECTORS_DIR) -> Path:
    """Every expectation computed by our decoders (tools/vectors/codecs.py)."""
    c = Cast()
    phone, laptop = DeviceId(c.phone.public), DeviceId(c.laptop.public)
    bundle = issue_key_bundle(
        c.phone,
        identity_key=curve_public("keys-phone-identity"),
        fallback_key=curve_public("keys-phone-fallback"),
        issued_ms=NOW_MS,
    )
    bundle_bytes = encode_key_bundle(bundle)
    forged = bytearray(bundle_bytes)
    forged[-1] ^= 1
    olm = fixed_seed("keys-olm-message") * 4
    shares = RoomKeyShares(
        sender_bundle=bundle,
        shares=(
            Share(recipient=laptop, olm_kind=OlmKind.PRE_KEY, ciphertext=olm),
            Share(recipient=DeviceId(c.tablet.public), olm_kind=OlmKind.NORMAL, ciphertext=olm),
        ),
    )
    body = encode_room_key_shares(shares)
    for_bob = encode_room_key_shares(RoomKeyShares(sender_bundle=bundle, shares=shares.shares[:1]))
    for_phone = encode_room_key_shares(
        RoomKeyShares(
            sender_bundle=bundle,
            shares=(Share(recipient=phone, olm_kind=OlmKind.NORMAL, ciphertext=olm),),
        )
    )
    twice = encode_canonical([0, bundle_bytes, [[laptop, 0, olm], [laptop, 1, olm]]])
    room = c.group_room
    session_id, exported = _exported_key()
    sessions = [(room, session_id), (c.direct_room, fixed_seed("keys-other-session"))]
    answer = encode_forward_answer(
        ForwardAnswer(sender_bundle=bundle, messages=((OlmKind.PRE_KEY, olm), (1, olm)))
    )
    forged_answer = encode_canonical([2, bytes(forged), [[0, olm]]])
    key = ForwardedKey(
        room=room,
        session_id=session_id,
        exported_key=exported,
        first_index=0,
        sender_device=phone,
        recipient_device=laptop,
    )
    key_hex = encode_forwarded_key(key).hex()
    request = KeyRequest(user=c.user(c.bob), sessions=tuple(sessions))
    valid = [
        pin(
            "room_key_body",
            "the sender's bundle, then one Olm message per recipient device (§27.5)",
            hex=body.hex(),
            sender_device_hex=phone.hex(),
        ),
        pin(
            "key_forward_request",
            "two sessions asked of a sibling (§27.12.1)",
            hex=encode_forward_request(sessions).hex(),
        ),
        pin(
            "key_forward_answer",
            "the forwarder's bundle and one Olm message per key it holds (§27.12.1)",
            hex=answer.hex(),
        ),
        pin(
            "key_forward_answer",
            "a refusal: KEY_REQUEST_DENIED (§27.13.1)",
            hex=encode_claim_error(KeyRequestDenied("not a member")).hex(),
        ),
        pin(
            "key_forward_answer",
            "a refusal: NOT_LISTED, the asking home is not one its user's record lists yet,"
            " which an asker does not count as an attempt, four times a session (§27.13.1,"
            " §27.13.3)",
            hex=encode_claim_error(NotListed("not listed")).hex(),
        ),
        pin(
            "forwarded_key",
            "a session exported at index 0, for the laptop (§27.12.2)",
            hex=key_hex,
            recipient_hex=laptop.hex(),
        ),
        pin(
            "forwarded_key",
            "a key request's answer: the session is the answering device's (§27.13.2)",
            hex=key_hex,
            recipient_hex=laptop.hex(),
            owner_hex=phone.hex(),
        ),
        pin(
            "key_request",
            "bob's home asks for two sessions (§27.13.1)",
            hex=encode_key_request(request).hex(),
        ),
        pin(
            "room_key_at_home",
            "an addressed ROOM_KEY (unsequenced) at a home of the user whose device it holds a"
            " share for (§27.5.3)",
            hex=_room_key_wire(c, room, for_bob, seq=UNSEQUENCED),
            recipient_hex=c.user(c.bob).hex(),
            recipient_devices_hex=_devices(c.laptop),
        ),
        pin(
            "room_key_at_home",
            "an addressed ROOM_KEY at its sender's own home: always addressed to it (§27.5.3)",
            hex=_room_key_wire(c, room, for_bob, seq=UNSEQUENCED),
            recipient_hex=c.user(c.alice).hex(),
            recipient_devices_hex=_devices(c.phone),
        ),
        pin(
            "room_key_at_home",
            "an addressed ROOM_KEY with a share for a device the home's copy of its user's record"
            " does not list (linked since): judged by the shares it lists (§27.5.3)",
            hex=_room_key_wire(c, room, body, seq=UNSEQUENCED),
            recipient_hex=c.user(c.bob).hex(),
            recipient_devices_hex=_devices(c.laptop),
        ),
        pin(
            "room_key_at_home",
            "a sequenced ROOM_KEY, the form before the revision, with bob's share alone at"
            " carol's home: to every member, never judged by its shares (§20.7)",
            hex=_room_key_wire(c, room, for_bob, seq=7),
            recipient_hex=c.user(c.carol).hex(),
            recipient_devices_hex=_devices(c.tablet),
        ),
    ]
    invalid = [
        refuse(
            "room_key_body",
            KeyMismatch,
            "the bundle is not the envelope's sender device's",
            hex=body.hex(),
            sender_device_hex=laptop.hex(),
        ),
        refuse(
            "room_key_body",
            BadSignature,
            "the bundle's last signature bit flipped",
            hex=encode_canonical([0, bytes(forged), [[laptop, 0, olm]]]).hex(),
            sender_device_hex=phone.hex(),
        ),
        refuse(
            "room_key_body",
            MalformedMessage,
            "one recipient twice",
            hex=twice.hex(),
            sender_device_hex=phone.hex(),
        ),
        refuse(
            "room_key_body",
            UnsupportedVersion,
            "version 1",
            hex=encode_canonical([1, bundle_bytes, [[laptop, 0, olm]]]).hex(),
            sender_device_hex=phone.hex(),
        ),
        refuse(
            "key_forward_request",
            MalformedMessage,
            "no session",
            hex=encode_canonical([1, []]).hex(),
        ),
        refuse(
            "key_forward_request",
            MalformedMessage,
            "65 sessions",
            hex=encode_canonical([1, [[room, session_id]] * 65]).hex(),
        ),
        refuse(
            "key_forward_answer",
            BadSignature,
            "the forwarder's bundle is forged",
            hex=forged_answer.hex(),
        ),
        refuse(
            "key_forward_answer",
            MalformedMessage,
            "Olm kind 2",
            hex=encode_canonical([2, bundle_bytes, [[2, olm]]]).hex(),
        ),
        refuse(
            "forwarded_key",
            KeyMismatch,
            "forwarded to another device",
            hex=key_hex,
            recipient_hex=phone.hex(),
        ),
        refuse(
            "forwarded_key",
            KeyMismatch,
            "a key request answered with another device's session",
            hex=key_hex,
            recipient_hex=laptop.hex(),
            owner_hex=DeviceId(c.tablet.public).hex(),
        ),
        refuse(
            "forwarded_key",
            UnsupportedVersion,
            "version 1",
            hex=encode_canonical([1, room, session_id, exported, 0, phone, laptop]).hex(),
            recipient_hex=laptop.hex(),
        ),
        refuse(
            "key_request",
            MalformedMessage,
            "a key-forward request has no user",
            hex=encode_forward_request(sessions).hex(),
        ),
        refuse(
            "key_request",
            MalformedMessage,
            "a user id of 31 bytes",
            hex=encode_canonical([1, c.user(c.bob)[:31], [[room, session_id]]]).hex(),
        ),
        refuse(
            "room_key_at_home",
            NotAddressed,
            "an addressed ROOM_KEY whose shares are all for a device of another user (bob's),"
            " at carol's home (§27.5.3)",
            hex=_room_key_wire(c, room, for_bob, seq=UNSEQUENCED),
            recipient_hex=c.user(c.carol).hex(),
            recipient_devices_hex=_devices(c.tablet),
        ),
        refuse(
            "room_key_at_home",
            NotAddressed,
            "an addressed ROOM_KEY at bob's home, for bob's user with no share of his devices:"
            " the share is for alice's phone (§27.5.3)",
            hex=_room_key_wire(c, room, for_phone, seq=UNSEQUENCED),
            recipient_hex=c.user(c.bob).hex(),
            recipient_devices_hex=_devices(c.laptop),
        ),
        refuse(
            "room_key_at_home",
            MalformedMessage,
            "an addressed ROOM_KEY whose body names one recipient twice (§27.5.1)",
            hex=_room_key_wire(c, room, twice, seq=UNSEQUENCED),
            recipient_hex=c.user(c.bob).hex(),
            recipient_devices_hex=_devices(c.laptop),
        ),
    ]
    return write_vectors(
        "keys",
        spec="SPEC.md §27.5, §27.12, §27.13",
        function=(
            "tools/vectors/codecs.py ops room_key_body, key_forward_request, "
            "key_forward_answer, forwarded_key, key_request, room_key_at_home"
        ),
        valid=valid,
        invalid=invalid,
        directory=directory,
    )
