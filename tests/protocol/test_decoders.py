"""Every decoder of protocol/ at the edge (SPEC §6.1.2, §9): hostile bytes raise only the
remote-error family, and whatever decodes re-encodes to the very same bytes.

`DECODERS` lists each public decoder with its encoder and valid samples; Hypothesis feeds each
arbitrary bytes, canonical CBOR of arbitrary values, and mutated samples. A new public
`decode_*`/`load_*` in protocol/ fails `test_every_public_decoder_is_listed` until it is added.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hearthmesh.protocol
from hearthmesh.protocol import (
    actions,
    capabilities,
    client_api,
    content,
    delivery,
    e2ee,
    envelope,
    fetch,
    friend_link,
    gossip,
    hello,
    history_share,
    hlc,
    home_record,
    identity,
    invite_record,
    invites,
    linking,
    media,
    media_seal,
    membership,
    private,
    receipts,
    reconcile,
    signals,
    sync,
    verification,
)
from hearthmesh.protocol.canonical import CborValue, decode_canonical, encode_canonical
from hearthmesh.protocol.errors import RemoteProtocolError
from hearthmesh.protocol.identity import UserId
from tests.conftest import examples
from tests.protocol import scripted

_USER = identity.keypair_from_seed(b"u" * 32)
_DEVICE = identity.keypair_from_seed(b"d" * 32)
_NODE = identity.keypair_from_seed(b"n" * 32)
_ROOM = envelope.RoomId(b"r" * 32)
_CERT = identity.issue_certificate(
    _USER, identity.DeviceId(_DEVICE.public), created_ms=1, expires_ms=None
)
_CERT_BYTES = identity.encode_certificate(_CERT)
_RECORD = home_record.issue_home_record(
    _USER,
    issued_ms=5,
    homes=("12D3KooWhome",),
    addrs=("/ip4/127.0.0.1/tcp/1",),
    devices=(_CERT,),
)
_RECORD_BYTES = home_record.encode_home_record(_RECORD)


def _seal(kind: envelope.Kind, body: bytes, content_type: str = "text/plain") -> envelope.Envelope:
    return envelope.seal(
        _DEVICE,
        kind=kind,
        room=_ROOM,
        sender_user=identity.UserId(_USER.public),
        seq=1,
        hlc=hlc.Timestamp(wall_ms=7, counter=0),
        content_type=content_type,
        body=body,
    )


_MESSAGE = _seal(envelope.Kind.MESSAGE, b"hello")


def _presence(body: bytes) -> gossip.Presence:
    return gossip.decode_presence(_seal(envelope.Kind.PRESENCE, body), now_ms=10)


def _encode_presence(value: gossip.Presence) -> bytes:
    return gossip.encode_presence(
        value.status, value.ttl_ms, home_record.encode_home_record(value.home_record)
    )


def _encode_frame(frame: Any) -> bytes:
    match frame:
        case delivery.Deliver():
            return delivery.encode_deliver(
                frame.batch_id, list(frame.certificates), list(frame.items)
            )
        case delivery.Ack():
            return delivery.encode_ack(frame)
        case delivery.ProtocolErrorFrame():
            return encode_canonical([int(delivery.FrameType.ERROR), frame.code, frame.message])
    raise AssertionError(frame)


def _encode_fetch_answer(answer: Any) -> bytes:
    if isinstance(answer, delivery.ProtocolErrorFrame):
        return encode_canonical([3, answer.code, answer.message])
    certificates: list[CborValue] = list(answer.certificates)
    items: list[CborValue] = [[index, wire] for index, wire in answer.items]
    return encode_canonical([2, certificates, items])


def _encode_media_answer(answer: Any) -> bytes:
    match answer:
        case media.MediaChunk():
            return encode_canonical([2, answer.offset, answer.data])
        case media.MediaEnd():
            return encode_canonical([3, answer.total])
        case delivery.ProtocolErrorFrame():
            return encode_canonical([4, answer.code, answer.message])
    raise AssertionError(answer)


def _encode_claim_answer(answer: Any) -> bytes:
    if isinstance(answer, delivery.ProtocolErrorFrame):
        return encode_canonical([3, answer.code, answer.message])
    return e2ee.encode_claim_answer(answer)


def _encode_join_answer(answer: Any) -> bytes:
    if isinstance(answer, delivery.ProtocolErrorFrame):
        return encode_canonical([3, answer.code, answer.message])
    return invites.encode_join_answer(answer)


def _encode_invite_nonce(value: tuple[bytes, int, int]) -> bytes:
    return invite_record.encode_invite_nonce(*value)


def _encode_sync(frame: Any) -> bytes:
    match frame:
        case sync.RoomList():
            return sync.encode_room_list(list(frame.rooms))
        case sync.RoomReconcile():
            return sync.encode_reconcile(frame.room, frame.message)
        case sync.SyncDone():
            return sync.encode_done()
    raise AssertionError(frame)


@dataclass(frozen=True)
class Decoder:
    """A decoder of bytes from a peer, its inverse (None: not canonical by design), samples."""

    decode: Callable[[bytes], object]
    encode: Callable[[Any], bytes] | None
    samples: tuple[bytes, ...]


_ID = b"i" * 32


def _encode_private(change: private.PrivateChange) -> bytes:
    if isinstance(change, private.BlockChanged):
        return private.encode_block_changed(change.user, blocked=change.blocked)
    if isinstance(change, private.MessageHidden):
        return private.encode_message_hidden(change.room, change.message)
    return private.encode_conversation_deleted(change.room)


DECODERS: dict[str, Decoder] = {
    "canonical.decode_canonical": Decoder(
        lambda b: decode_canonical(b, max_bytes=4096),
        lambda v: encode_canonical(v),
        (encode_canonical([0, [b"x", "y"], None, -5]),),
    ),
    "capabilities.decode_caps_request": Decoder(
        capabilities.decode_caps_request,
        lambda _: capabilities.encode_caps_request(),
        (capabilities.encode_caps_request(),),
    ),
    # not canonical by design: a level the decoder does not know is skipped (SPEC §20.5)
    "capabilities.decode_caps_answer": Decoder(
        capabilities.decode_caps_answer,
        None,
        (capabilities.encode_caps_answer(frozenset(capabilities.Level)),),
    ),
    "content.decode_typing": Decoder(
        content.decode_typing, content.encode_typing, (content.encode_typing(True),)
    ),
    "content.decode_media": Decoder(
        content.decode_media,
        content.encode_media,
        (
            content.encode_media(
                content.MediaRef(type="image", digest=_ID, content_type="image/png", size=3)
            ),
            content.encode_media(
                content.MediaRef(
                    type="image",
                    digest=_ID,
                    content_type="image/png",
                    size=3,
                    seal=media_seal.MediaSeal(key=b"k" * 32, nonce=b"n" * 12, plain_digest=_ID),
                )
            ),
        ),
    ),
    "content.decode_contact": Decoder(
        content.decode_contact,
        content.encode_contact,
        (
            content.encode_contact(
                content.ContactEvent(action=content.ContactAction.REQUEST, note="hi")
            ),
        ),
    ),
    "content.decode_profile": Decoder(
        content.decode_profile,
        content.encode_profile,
        (
            content.encode_profile(content.ProfileCard(handle="ann", display_name="Ann")),
            content.encode_profile(
                content.ProfileCard(
                    display_name="Ann",
                    bio="hi",
                    picture=content.MediaRef(
                        type="image", digest=_ID, content_type="image/png", size=3
                    ),
                )
            ),
        ),
    ),
    "delivery.decode_frame": Decoder(
        delivery.decode_frame,
        _encode_frame,
        (
            delivery.encode_deliver(
                3, [_CERT_BYTES], [delivery.BatchItem(0, _USER.public, _MESSAGE.wire)]
            ),
            delivery.encode_ack(
                delivery.sign_ack(
                    _NODE,
                    3,
                    (
                        delivery.DeliveryResult(
                            message_id=_MESSAGE.message_id, status=delivery.AckStatus.STORED
                        ),
                    ),
                )
            ),
            encode_canonical([3, 2, "malformed"]),
        ),
    ),
    "invites.decode_join_request": Decoder(
        invites.decode_join_request,
        invites.encode_join_request,
        (
            invites.encode_join_request(
                invites.JoinRequest(
                    room=envelope.RoomId(b"r" * 32), secret=b"s" * 16, home_record=b"h" * 40
                )
            ),
        ),
    ),
    "invites.decode_join_answer": Decoder(
        invites.decode_join_answer,
        _encode_join_answer,
        (
            invites.encode_join_answer(envelope.MessageId(b"m" * 32)),
            encode_canonical([3, 60, "no"]),
        ),
    ),
    "history_share.decode_history_request": Decoder(
        history_share.decode_history_request,
        history_share.encode_history_request,
        (
            history_share.encode_history_request(
                history_share.HistoryRequest(room=envelope.RoomId(_ID), user=UserId(_ID))
            ),
        ),
    ),
    "invite_record.decode_invite_nonce": Decoder(
        invite_record.decode_invite_nonce,
        _encode_invite_nonce,
        (invite_record.encode_invite_nonce(b"i" * 16, 2, 3),),
    ),
    "e2ee.decode_claim_request": Decoder(
        e2ee.decode_claim_request,
        e2ee.encode_claim_request,
        (e2ee.encode_claim_request(identity.DeviceId(_DEVICE.public)),),
    ),
    "e2ee.decode_claim_answer": Decoder(
        e2ee.decode_claim_answer,
        _encode_claim_answer,
        (
            e2ee.encode_claim_answer(e2ee.ClaimAnswer(bundle=b"b" * 40, one_time_key=None)),
            e2ee.encode_claim_answer(e2ee.ClaimAnswer(bundle=b"b" * 40, one_time_key=b"k")),
            encode_canonical([3, 14, "no"]),
        ),
    ),
    "e2ee.decode_key_bundle": Decoder(
        e2ee.decode_key_bundle,
        e2ee.encode_key_bundle,
        (
            e2ee.encode_key_bundle(
                e2ee.issue_key_bundle(
                    _DEVICE, identity_key=b"c" * 32, fallback_key=b"f" * 32, issued_ms=3
                )
            ),
        ),
    ),
    "e2ee.decode_one_time_key": Decoder(
        e2ee.decode_one_time_key,
        e2ee.encode_one_time_key,
        (e2ee.encode_one_time_key(e2ee.issue_one_time_key(_DEVICE, b"k" * 32)),),
    ),
    "e2ee.decode_room_key": Decoder(
        e2ee.decode_room_key,
        e2ee.encode_room_key,
        (
            e2ee.encode_room_key(
                e2ee.RoomKey(
                    room=_ROOM,
                    session_id=_ID,
                    session_key=b"k" * 229,
                    first_index=0,
                    sender_user=identity.UserId(_USER.public),
                    sender_device=identity.DeviceId(_DEVICE.public),
                    sender_curve=b"c" * 32,
                    recipient_device=identity.DeviceId(_ID),
                    recipient_curve=b"w" * 32,
                )
            ),
        ),
    ),
    "e2ee.decode_room_key_shares": Decoder(
        e2ee.decode_room_key_shares,
        e2ee.encode_room_key_shares,
        (
            e2ee.encode_room_key_shares(
                e2ee.RoomKeyShares(
                    sender_bundle=e2ee.issue_key_bundle(
                        _DEVICE, identity_key=b"c" * 32, fallback_key=b"f" * 32, issued_ms=1
                    ),
                    shares=(
                        e2ee.Share(
                            recipient=identity.DeviceId(_ID),
                            olm_kind=e2ee.OlmKind.PRE_KEY,
                            ciphertext=b"o" * 40,
                        ),
                    ),
                )
            ),
        ),
    ),
    "e2ee.decode_forwarded_key": Decoder(
        e2ee.decode_forwarded_key,
        e2ee.encode_forwarded_key,
        (
            e2ee.encode_forwarded_key(
                e2ee.ForwardedKey(
                    room=envelope.RoomId(_ID),
                    session_id=_ID,
                    exported_key=b"x" * 164,
                    first_index=3,
                    sender_device=identity.DeviceId(_ID),
                    recipient_device=identity.DeviceId(_ID),
                )
            ),
        ),
    ),
    "e2ee.decode_forward_request": Decoder(
        e2ee.decode_forward_request,
        e2ee.encode_forward_request,
        (e2ee.encode_forward_request([(envelope.RoomId(_ID), _ID)]),),
    ),
    "e2ee.decode_key_request": Decoder(
        e2ee.decode_key_request,
        e2ee.encode_key_request,
        (
            e2ee.encode_key_request(
                e2ee.KeyRequest(
                    user=identity.UserId(_ID), sessions=((envelope.RoomId(_ID), _ID),) * 2
                )
            ),
        ),
    ),
    "e2ee.decode_forward_answer": Decoder(
        e2ee.decode_forward_answer,
        None,  # answers and ERROR frames share the decoder
        (
            e2ee.encode_forward_answer(
                e2ee.ForwardAnswer(
                    sender_bundle=e2ee.issue_key_bundle(
                        _DEVICE, identity_key=b"c" * 32, fallback_key=b"f" * 32, issued_ms=1
                    ),
                    messages=((e2ee.OlmKind.PRE_KEY, b"o" * 40),),
                )
            ),
        ),
    ),
    "e2ee.decode_encrypted_body": Decoder(
        e2ee.decode_encrypted_body,
        e2ee.encode_encrypted_body,
        (
            e2ee.encode_encrypted_body(
                e2ee.EncryptedBody(algorithm=e2ee.MEGOLM_V1, session_id=_ID, ciphertext=b"m" * 9)
            ),
        ),
    ),
    "e2ee.decode_plaintext": Decoder(
        e2ee.decode_plaintext,
        lambda pair: e2ee.encode_plaintext(*pair),
        (e2ee.encode_plaintext("text/plain", b"hi"),),
    ),
    "envelope.decode_envelope": Decoder(
        envelope.decode_envelope, lambda e: e.wire, (_MESSAGE.wire,)
    ),
    "envelope.load_envelope": Decoder(envelope.load_envelope, lambda e: e.wire, (_MESSAGE.wire,)),
    "fetch.decode_request": Decoder(
        fetch.decode_request,
        fetch.encode_request,
        (
            fetch.encode_request(
                fetch.FetchRequest(
                    room=_ROOM,
                    sender_device=identity.DeviceId(_DEVICE.public),
                    first_seq=1,
                    last_seq=4,
                )
            ),
        ),
    ),
    "fetch.decode_answer": Decoder(
        fetch.decode_answer,
        _encode_fetch_answer,
        (fetch.encode_answer([(_CERT_BYTES, _MESSAGE.wire)]), encode_canonical([3, 14, "no"])),
    ),
    "gossip.decode_gossip": Decoder(
        lambda b: gossip.decode_gossip(b, now_ms=10),
        lambda item: gossip.encode_gossip(
            identity.encode_certificate(item.certificate), item.envelope.wire
        ),
        (gossip.encode_gossip(_CERT_BYTES, _MESSAGE.wire),),
    ),
    "gossip.load_gossip": Decoder(
        gossip.load_gossip,
        lambda item: gossip.encode_gossip(
            identity.encode_certificate(item.certificate), item.envelope.wire
        ),
        (gossip.encode_gossip(_CERT_BYTES, _MESSAGE.wire),),
    ),
    "gossip.decode_presence": Decoder(
        _presence,
        _encode_presence,
        (gossip.encode_presence(gossip.PresenceStatus.ONLINE, 3000, _RECORD_BYTES),),
    ),
    "signals.decode_signal": Decoder(
        lambda b: signals.decode_signal(b, now_ms=10),
        lambda signal: gossip.encode_gossip(
            identity.encode_certificate(signal.item.certificate), signal.item.envelope.wire
        ),
        (
            gossip.encode_gossip(
                _CERT_BYTES,
                _seal(
                    envelope.Kind.PRESENCE,
                    gossip.encode_presence(gossip.PresenceStatus.ONLINE, 3000, _RECORD_BYTES),
                ).wire,
            ),
            gossip.encode_gossip(
                _CERT_BYTES, _seal(envelope.Kind.TYPING, content.encode_typing(True)).wire
            ),
        ),
    ),
    "hello.decode_hello": Decoder(
        hello.decode_hello,
        hello.encode_hello,
        (
            hello.encode_hello(hello.Hello(records=(_RECORD_BYTES,), sent_ms=9)),
            hello.encode_hello(hello.Hello(records=(), sent_ms=9, offset_ms=-4)),
        ),
    ),
    "hlc.decode_timestamp": Decoder(
        hlc.decode_timestamp,
        hlc.encode_timestamp,
        (hlc.encode_timestamp(hlc.Timestamp(wall_ms=5, counter=2)),),
    ),
    "home_record.decode_home_record": Decoder(
        home_record.decode_home_record, home_record.encode_home_record, (_RECORD_BYTES,)
    ),
    "identity.decode_certificate": Decoder(
        identity.decode_certificate, identity.encode_certificate, (_CERT_BYTES,)
    ),
    "linking.decode_link_request": Decoder(
        linking.decode_link_request,
        linking.encode_link_request,
        (
            linking.encode_link_request(
                linking.LinkRequest(
                    device=_DEVICE.public,
                    node_key=_NODE.public,
                    addrs=("/ip4/127.0.0.1/tcp/1",),
                    proof=b"p" * 32,
                )
            ),
        ),
    ),
    "linking.decode_link_message": Decoder(
        lambda b: linking.decode_link_message(b, sender="Qm"),
        lambda m: (
            linking.encode_readdress(m)
            if isinstance(m, linking.Readdress)
            else linking.encode_link_request(m)
        ),
        (
            linking.encode_readdress(linking.Readdress(addrs=("/ip4/10.0.0.1/tcp/1/p2p/Qm",))),
            linking.encode_link_request(
                linking.LinkRequest(
                    device=_DEVICE.public,
                    node_key=_NODE.public,
                    addrs=(),
                    proof=b"p" * 32,
                )
            ),
        ),
    ),
    "linking.decode_link_answer": Decoder(
        linking.decode_link_answer,
        linking.encode_link_answer,
        (
            linking.encode_link_answer(
                linking.LinkAnswer(certificate=_CERT_BYTES, home_record=_RECORD_BYTES)
            ),
        ),
    ),
    "verification.decode_verify_frame": Decoder(
        verification.decode_verify_frame,
        verification.encode_verify_frame,
        tuple(
            verification.encode_verify_frame(frame)
            for frame in (
                verification.Start(flow=b"f" * 16, user=_ID, device=_ID),
                verification.Accept(flow=b"f" * 16, user=_ID, device=_ID, commitment=_ID),
                verification.KeyShare(flow=b"f" * 16, key=_ID),
                verification.Mac(flow=b"f" * 16, mac="bWFj"),
                verification.Done(flow=b"f" * 16),
                verification.Cancel(flow=b"f" * 16, code=42, reason="user"),
            )
        ),
    ),
    "media.decode_request": Decoder(
        media.decode_request, media.encode_request, (media.encode_request(_ID),)
    ),
    "media.decode_answer": Decoder(
        media.decode_answer,
        _encode_media_answer,
        (*media.answer_frames(b"blob"), encode_canonical([4, 10, "no"])),
    ),
    "membership.decode_membership": Decoder(
        membership.decode_membership,
        membership.encode_membership,
        (
            membership.encode_membership(
                membership.MembershipChange(
                    action=membership.Action.CREATE,
                    target=identity.UserId(_USER.public),
                    role=membership.Role.ADMIN,
                    nonce=b"n" * 16,
                    open=True,
                    name="g",
                )
            ),
        ),
    ),
    "private.decode_private": Decoder(
        private.decode_private,
        _encode_private,
        (
            private.encode_conversation_deleted(_ROOM),
            private.encode_block_changed(UserId(_ID), blocked=True),
            private.encode_message_hidden(_ROOM, envelope.MessageId(_ID)),
        ),
    ),
    "actions.decode_action": Decoder(
        lambda b: actions.decode_action(envelope.Kind.REACTION, actions.REACTION_CONTENT_TYPE, b),
        actions.encode_reaction,
        (
            actions.encode_reaction(
                actions.Reaction(target=envelope.MessageId(_ID), emoji="👍", active=False)
            ),
        ),
    ),
    "actions.decode_annotated": Decoder(
        actions.decode_annotated,
        actions.encode_annotated,
        (
            actions.encode_annotated(
                actions.Annotated(
                    content_type="text/plain", body=b"yes", reply_to=envelope.MessageId(_ID)
                )
            ),
        ),
    ),
    "receipts.decode_receipt": Decoder(
        receipts.decode_receipt,
        receipts.encode_receipt,
        (
            receipts.encode_receipt(
                receipts.Receipt(
                    status=receipts.ReceiptStatus.READ,
                    message_ids=(envelope.MessageId(_ID),),
                )
            ),
        ),
    ),
    "reconcile.decode_message": Decoder(
        reconcile.decode_message,
        reconcile.encode_message,
        (
            reconcile.encode_message(
                reconcile.ReconcileMessage(
                    ranges=(
                        reconcile.Range(
                            upper=None,
                            mode=reconcile.RangeMode.ID_LIST,
                            ids=(envelope.MessageId(_ID),),
                        ),
                    )
                )
            ),
        ),
    ),
    "sync.decode_sync_frame": Decoder(
        sync.decode_sync_frame,
        _encode_sync,
        (
            sync.encode_room_list([sync.RoomEntry(room=_ROOM, direct_users=())]),
            sync.encode_reconcile(_ROOM, b"\x81\x00"),
            sync.encode_done(),
        ),
    ),
}
"""Decoders of bytes from peers (wire formats): canonical, and only the remote family."""

TEXT_DECODERS: dict[str, tuple[Callable[[str], object], tuple[str, ...]]] = {
    "friend_link.decode_friend_link": (
        friend_link.decode_friend_link,
        (
            friend_link.encode_friend_link(identity.UserId(_USER.public)),
            friend_link.encode_friend_link(identity.UserId(_USER.public), b"record"),
        ),
    ),
    "identity.decode_user_id": (
        identity.decode_user_id,
        (identity.user_id_text(identity.UserId(_USER.public)),),
    ),
    "identity.decode_device_id": (
        identity.decode_device_id,
        (identity.device_id_text(identity.DeviceId(_DEVICE.public)),),
    ),
    "linking.decode_link_code": (
        linking.decode_link_code,
        (
            linking.encode_link_code(
                linking.LinkCode(
                    secret=b"s" * linking.LINK_SECRET_BYTES,
                    address="/ip4/127.0.0.1/tcp/1/p2p/12D3KooWx",
                    expires_ms=9,
                )
            ),
        ),
    ),
    "invites.decode_invite": (
        invites.decode_invite,
        (
            invites.encode_invite(
                invites.Invite(
                    room=envelope.RoomId(b"r" * 32),
                    secret=b"s" * 16,
                    addrs=("/ip4/127.0.0.1/tcp/1/p2p/12D3KooWx",),
                )
            ),
        ),
    ),
    "client_api.decode_hex_id": (lambda text: client_api.decode_hex_id(text, "id"), ("ab" * 32,)),
    "client_api.decode_user": (
        client_api.decode_user,
        (identity.user_id_text(identity.UserId(_USER.public)),),
    ),
    "client_api.decode_text": (
        lambda text: client_api.decode_text(text, "text", max_bytes=64),
        ("hi", "h\u00e9llo"),
    ),
    "client_api.decode_count": (lambda text: client_api.decode_count(text, "n", 1, 1000), ("42",)),
    "client_api.decode_json_object": (client_api.decode_json_object, ('{"a": [1, "b"]}',)),
    "client_api.decode_send": (  # takes the object parsed from JSON (the HTTP send's body)
        lambda text: client_api.decode_send(client_api.decode_json_object(text)),
        (
            '{"room_id":"' + "ab" * 32 + '","message":"hi","client_id":"c1"}',
            '{"room_id":"' + "ab" * 32 + '","message":"h\u00e9","client_id":"c","type":"text"}',
        ),
    ),
    "client_api.decode_message_command": (  # an action's fields, as the HTTP routes pass them
        lambda text: client_api.decode_message_command(
            "react", client_api.decode_json_object(text)
        ),
        ('{"message_id":"' + "ab" * 32 + '","emoji":"\u2764","active":false}',),
    ),
    "client_api.decode_client_frame": (
        client_api.decode_client_frame,
        (
            '{"event":"send","room_id":"' + "ab" * 32 + '","message":"hi","client_id":"c1"}',
            '{"event":"ack","message_id":"' + "ab" * 32 + '","status":"read"}',
            '{"event":"typing","room_id":"' + "ab" * 32 + '","active":false}',
            '{"event":"recall","message_id":"' + "ab" * 32 + '"}',
            '{"event":"edit","message_id":"' + "ab" * 32 + '","message":"fixed"}',
        ),
    ),
}
"""Decoders of text from people and clients (pasted codes, ids, JSON frames)."""


def test_every_public_decoder_is_listed() -> None:
    found = set()
    for module_info in pkgutil.iter_modules(hearthmesh.protocol.__path__):
        module = importlib.import_module(f"hearthmesh.protocol.{module_info.name}")
        for name in getattr(module, "__all__", ()):
            if name.startswith(("decode_", "load_")) and callable(getattr(module, name)):
                found.add(f"{module_info.name}.{name}")
    assert found == set(DECODERS) | set(TEXT_DECODERS)


_FIXED = (b"r" * 32, b"s" * 64, _CERT_BYTES, _RECORD_BYTES, _MESSAGE.wire)
"""Well-formed encodings of our structures, for arbitrary CBOR to hold where one is expected."""


@functools.cache  # one strategy per decoder: rebuilt per example it cost ~35% of some tests
def _inputs(decoder: Decoder) -> st.SearchStrategy[bytes]:
    # scripted strategies: one Hypothesis choice per example (tests/protocol/scripted.py)
    edited = [scripted.mutated(decoder.samples)]
    if all(_is_cbor(sample) for sample in decoder.samples):
        edited.append(scripted.restructured(decoder.samples, _FIXED))
    return st.one_of(st.binary(max_size=200), scripted.arbitrary_cbor(_FIXED), *edited, *edited[1:])


def _is_cbor(data: bytes) -> bool:
    try:
        decode_canonical(data, max_bytes=1 << 20)
    except RemoteProtocolError:
        return False
    return True


def _decode_or_none(decoder: Decoder, data: bytes) -> object | None:
    try:
        return decoder.decode(data)
    except RemoteProtocolError:
        return None  # the family: what every caller catches


_FUZZ = settings(
    max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_samples_decode_and_re_encode_exactly(name: str) -> None:
    decoder = DECODERS[name]
    for sample in decoder.samples:
        value = decoder.decode(sample)
        if decoder.encode is not None:
            assert decoder.encode(value) == sample


@pytest.mark.parametrize("name", sorted(DECODERS))
@_FUZZ
@given(data=st.data())
def test_hostile_bytes_raise_only_remote_errors_and_what_decodes_is_canonical(
    name: str, data: st.DataObject
) -> None:
    decoder = DECODERS[name]
    raw = data.draw(_inputs(decoder))
    value = _decode_or_none(decoder, raw)
    if value is not None and decoder.encode is not None:
        assert decoder.encode(value) == raw  # SPEC §6.1.2: one encoding per value


@functools.cache  # one strategy per decoder, as `_inputs`
def _text_inputs(samples: tuple[str, ...]) -> st.SearchStrategy[str]:
    return st.one_of(st.text(max_size=120), scripted.mutated_text(samples))


@pytest.mark.parametrize("name", sorted(TEXT_DECODERS))
@_FUZZ
@given(data=st.data())
def test_hostile_text_raises_only_remote_errors(name: str, data: st.DataObject) -> None:
    decode, samples = TEXT_DECODERS[name]
    for sample in samples:
        decode(sample)
    text = data.draw(_text_inputs(samples))
    with contextlib.suppress(RemoteProtocolError):
        decode(text)


def test_a_hello_has_one_encoding() -> None:
    """Issue #12: `[0, [], 0, null]` decoded, and re-encoded as `[0, [], 0]`."""
    with pytest.raises(RemoteProtocolError):
        hello.decode_hello(bytes.fromhex("84008000f6"))
