"""The vector operations of the wire sections (SPEC §20.1): one decode path per `op`.

Each operation takes a vector case (its inputs as hex or text) and returns the decoded fields
as plain JSON (`as_json`), or raises the error of SPEC §9 the input earns. The generators run
them to pin each case; tests/protocol/test_vectors_wire.py runs them against the pinned files,
and another implementation runs its own decoders on the same inputs. State: none.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from enum import Enum
from typing import Any, Final

from hearthmesh.protocol.actions import (
    ActionEvent,
    Target,
    action_event,
    check_action,
    decode_action,
    decode_annotated,
    fold_actions,
)
from hearthmesh.protocol.capabilities import decode_caps_answer, decode_caps_request
from hearthmesh.protocol.content import decode_contact, decode_media, decode_profile, decode_typing
from hearthmesh.protocol.delivery import (
    Ack,
    ProtocolErrorFrame,
    decode_frame,
    verify_ack,
    verify_batch,
)
from hearthmesh.protocol.e2ee import (
    ClaimAnswer,
    ForwardAnswer,
    address_room_key_refusal,
    check_claim_answer,
    check_forwarded_key,
    check_sender_bundle,
    decode_claim_answer,
    decode_claim_request,
    decode_forward_answer,
    decode_forward_request,
    decode_forwarded_key,
    decode_key_bundle,
    decode_key_request,
    decode_room_key_shares,
    verify_key_bundle,
)
from hearthmesh.protocol.envelope import Kind, RoomId, decode_envelope, load_envelope
from hearthmesh.protocol.errors import MalformedMessage, refusal
from hearthmesh.protocol.fetch import answer_batch
from hearthmesh.protocol.fetch import decode_answer as decode_fetch_answer
from hearthmesh.protocol.fetch import decode_request as decode_fetch_request
from hearthmesh.protocol.gossip import decode_gossip, decode_presence
from hearthmesh.protocol.hello import decode_hello
from hearthmesh.protocol.history_share import decode_history_request, take_history_answer
from hearthmesh.protocol.hlc import encode_timestamp
from hearthmesh.protocol.home_dht import home_record_key, select_home_record, validate_home_record
from hearthmesh.protocol.home_record import decode_home_record, verify_home_record
from hearthmesh.protocol.identity import DeviceId, UserId
from hearthmesh.protocol.invites import (
    check_invite,
    decode_invite,
    decode_join_answer,
    decode_join_request,
)
from hearthmesh.protocol.linking import (
    check_link_proof,
    decode_link_answer,
    decode_link_code,
    decode_link_request,
)
from hearthmesh.protocol.media import MediaDownload
from hearthmesh.protocol.media import decode_answer as decode_media_answer
from hearthmesh.protocol.media import decode_request as decode_media_request
from hearthmesh.protocol.membership import (
    RoomState,
    decode_membership,
    fold,
    ruling,
)
from hearthmesh.protocol.private import decode_private
from hearthmesh.protocol.receipts import decode_receipt
from hearthmesh.protocol.signals import check_signal_sender, decode_signal
from hearthmesh.protocol.sync import decode_sync_frame
from hearthmesh.protocol.verification import (
    Accept,
    KeyShare,
    Start,
    check_commitment,
    decode_verify_frame,
)

from .data_cases import DATA_OPS
from .joiner_release import joiner_release

__all__ = ["OPS", "as_json", "run_op"]

Case = dict[str, Any]


def as_json(value: object) -> Any:
    """Decoded values as JSON: dataclasses as objects (the fields one is built from: not one
    derived as it is decoded, `init=False`), bytes as hex, enums as their value, sets as
    sorted lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {
            f.name: as_json(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init
        }
        return {"type": type(value).__name__, **fields}
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [as_json(v) for v in value]
    if isinstance(value, frozenset):  # a set has no order: sorted
        return sorted(as_json(v) for v in value)
    if isinstance(value, dict):
        return {as_json(k): as_json(v) for k, v in value.items()}
    return value


def _hex(case: Case, key: str = "hex") -> bytes:
    return bytes.fromhex(case[key])


def _deliver_frame(case: Case) -> Any:
    """§11.1-11.3: a frame of the deliver stream; an ACK's node signature is checked too."""
    frame = decode_frame(_hex(case))
    if isinstance(frame, Ack):
        verify_ack(frame)
    return as_json(frame)


def _home_record(case: Case) -> Any:
    """§13.1-13.2: decode, then verify at the case's clock."""
    record = decode_home_record(_hex(case))
    verify_home_record(record, now_ms=case["now_ms"])
    return as_json(record)


def _home_dht_validate(case: Case) -> Any:
    """§13.4: what a DHT node accepts under a key."""
    return as_json(validate_home_record(case["key"], _hex(case), now_ms=case["now_ms"]))


def _history_order(wires: list[str]) -> list[Any]:
    """Envelopes sorted by (hlc, sender device, seq) (SPEC §4.5), whatever order they came in."""
    envelopes = [decode_envelope(bytes.fromhex(w)) for w in wires]
    return sorted(envelopes, key=lambda e: (encode_timestamp(e.hlc), e.sender_device, e.seq))


def _caps_request(case: Case) -> Any:
    """§20.5: the one request, `[0]`."""
    decode_caps_request(_hex(case))
    return {"request": True}


def _claim_answer(case: Case) -> Any:
    """§27.2.2: an ANSWER, its keys checked as those of `device_hex`, or an ERROR frame."""
    answer = decode_claim_answer(_hex(case))
    if isinstance(answer, ClaimAnswer):
        bundle, one_time_key = check_claim_answer(answer, DeviceId(_hex(case, "device_hex")))
        return {"bundle": as_json(bundle), "one_time_key": as_json(one_time_key)}
    return as_json(answer)


def _state(state: RoomState) -> Any:
    return {
        "created": state.created,
        "name": state.name,
        "open": state.open,
        "members": {user.hex(): int(role) for user, role in sorted(state.members.items())},
        "ignored": state.ignored,
        "topic": state.topic,
        "avatar": state.avatar.hex(),
        "banned": sorted(user.hex() for user in state.banned),
        # SPEC §30.3, §30.6: named only when set, so the older folds' vectors stand as they are
        **(
            {"invites": [as_json(r) for _, r in sorted(state.invites.items())]}
            if state.invites
            else {}
        ),
        **({"history": [state.history, state.history_limit]} if state.history_limit else {}),
    }


def _membership_body(case: Case) -> Any:
    """§12.1: a MEMBERSHIP body; `more` named only for an ADD of several (§12.1.1), so the
    older bodies' vectors stand as they are."""
    fields = as_json(decode_membership(_hex(case)))
    if not fields["more"]:
        del fields["more"]
    return fields


def _membership_fold(case: Case) -> Any:
    """§12.3: the state is the fold of the events in history order, whatever their arrival."""
    return _state(fold(RoomId(_hex(case, "room_hex")), _history_order(case["events_hex"])))


def _membership_ruling(case: Case) -> Any:
    """§12.2: what the rules say of one change after the events held."""
    state = fold(RoomId(_hex(case, "room_hex")), _history_order(case["events_hex"]))
    change = decode_membership(_hex(case))
    sender = UserId(_hex(case, "sender_hex"))
    return {"ruling": ruling(state, sender, change, at_ms=case.get("at_ms", 0)).name}


def _presence(case: Case) -> Any:
    """§14.2: a PRESENCE envelope's body, its record verified and the sender's own."""
    envelope = decode_envelope(_hex(case))
    return as_json(decode_presence(envelope, now_ms=case["now_ms"]))


def _gossip(case: Case) -> Any:
    """§14.1: a room topic payload, certificate and envelope verified."""
    item = decode_gossip(_hex(case), now_ms=case["now_ms"])
    return {"message_id": item.envelope.message_id.hex(), "kind": int(item.envelope.kind)}


def _media_download(case: Case) -> Any:
    """§25.2-25.4: a fetcher fed the answer frames of one blob."""
    download = MediaDownload(_hex(case, "digest_hex"), case["declared_size"])
    blob = None
    for frame in case["frames_hex"]:
        blob = download.receive(bytes.fromhex(frame))
    return {"blob_hex": None if blob is None else blob.hex()}


def _signal(case: Case) -> Any:
    """§32.4.1: a push on `/hearthmesh/signals/0` at a home whose user has the contacts
    `contacts_hex` and blocks `blocked_hex`: the sender and the body of its kind."""
    signal = decode_signal(_hex(case), now_ms=case["now_ms"])
    sender = signal.item.envelope.sender_user.hex()
    check_signal_sender(
        contact=sender in case["contacts_hex"], blocked=sender in case["blocked_hex"]
    )
    envelope = signal.item.envelope
    return {
        "kind": int(envelope.kind),
        "sender_user": sender,
        "sender_device": envelope.sender_device.hex(),
        "room": envelope.room.hex(),
        "presence": as_json(signal.presence),
        "typing": signal.typing,
    }


def _history_answer(case: Case) -> Any:
    """§30.6.2, §30.6.4: the admin's home's answer, taken only from the device whose bundle
    `listed_hex` the admin's record names at the peer asked; an ERROR frame raises its code."""
    return as_json(take_history_answer(_hex(case), decode_key_bundle(_hex(case, "listed_hex"))))


def _fetch_taken(case: Case) -> Any:
    """§26.5: what the asker of `request_hex` takes of the answer `hex`: only items of the
    requested room, device and range, each number once, in the order they came, each then
    verified alone (§11.2): `taken` the numbers that verified, `discarded` [number, code] of
    those that did not. An ERROR frame is the refusal its code names."""
    answer = decode_fetch_answer(_hex(case))
    if isinstance(answer, ProtocolErrorFrame):
        raise refusal(answer.code, answer.message)
    batch = answer_batch(decode_fetch_request(_hex(case, "request_hex")), answer, b"")
    taken: list[int] = []
    discarded: list[list[int]] = []
    for item, verified in zip(batch.items, verify_batch(batch, now_ms=case["now_ms"]), strict=True):
        seq = load_envelope(item.wire).seq
        if verified.error is None:
            taken.append(seq)
        else:
            discarded.append([seq, int(verified.error.code)])
    return {"taken": taken, "discarded": discarded}


def _verify_commitment(case: Case) -> Any:
    """§29.3.1: the initiator's check of the responder's KEY frame (`hex`) against the
    commitment of its ACCEPT over the START frame's bytes; all three of one flow (§29.3.3)."""
    start_bytes = _hex(case, "start_hex")
    start = decode_verify_frame(start_bytes)
    accept = decode_verify_frame(_hex(case, "accept_hex"))
    key = decode_verify_frame(_hex(case))
    if not (isinstance(start, Start) and isinstance(accept, Accept) and isinstance(key, KeyShare)):
        raise MalformedMessage("START, ACCEPT and KEY frames")
    if not start.flow == accept.flow == key.flow:
        raise MalformedMessage("a frame of another flow")
    check_commitment(accept.commitment, key.key, start_bytes)
    return {"sas_key": key.key.hex()}


def _link_request(case: Case) -> Any:
    """§22: a link request, its HMAC proof checked with the code's secret."""
    request = decode_link_request(_hex(case))
    check_link_proof(_hex(case, "secret_hex"), request)
    return as_json(request)


def _action_body(case: Case) -> Any:
    """§31.1-31.3: an EDIT, RECALL or REACTION body of the case's kind and content type."""
    return as_json(decode_action(Kind(case["kind"]), case["content_type"], _hex(case)))


def _action_event(hex_text: str) -> ActionEvent:
    envelope = decode_envelope(bytes.fromhex(hex_text))
    return action_event(envelope, envelope.content_type, envelope.body)


def _action_check(case: Case) -> Any:
    """§31.1-31.3: may the action envelope act on the target envelope?"""
    target = Target.of(decode_envelope(_hex(case, "target_hex")))
    check_action(_action_event(case["action_hex"]), target)
    return {"allowed": True}


def _action_fold(case: Case) -> Any:
    """§31.5: the view a target and its actions fold to (any order gives the same)."""
    target = Target.of(decode_envelope(_hex(case, "target_hex")))
    state = fold_actions(target, [_action_event(h) for h in case["actions_hex"]])
    return {
        "status": state.status.value,
        "is_deleted": state.is_deleted,
        "recalled_by": None if state.recalled_by is None else state.recalled_by.hex(),
        "text": state.text,
        "edits": [e.message_id.hex() for e in state.edits],
        "reactions": {emoji: [u.hex() for u in users] for emoji, users in state.reactions.items()},
    }


def _join_answer(case: Case) -> Any:
    """§30.4: the ADD's message id, or an ERROR frame."""
    answer = decode_join_answer(_hex(case))
    return {"add": answer.hex()} if isinstance(answer, bytes) else as_json(answer)


def _invite_check(case: Case) -> Any:
    """§30.3: may the invite (as the group's events fold it, or none) let one more in now?"""
    state = fold(RoomId(_hex(case, "room_hex")), _history_order(case["events_hex"]))
    record = state.invites.get(_hex(case, "invite_id_hex"))
    return as_json(check_invite(record, now_ms=case["now_ms"]))


def _room_key_body(case: Case) -> Any:
    """§27.5: a ROOM_KEY body, its bundle checked as the envelope's sender device's."""
    shares = decode_room_key_shares(_hex(case))
    check_sender_bundle(shares, DeviceId(_hex(case, "sender_device_hex")))
    return as_json(shares)


def _room_key_at_home(case: Case) -> Any:
    """§27.5.3: a ROOM_KEY envelope delivered to a home of `recipient_hex`, whose newest record
    lists `recipient_devices_hex`: its body's shares, or NOT_ADDRESSED when an addressed one
    holds none for those devices (its sender's own homes and the sequenced form never)."""
    envelope = decode_envelope(_hex(case))
    shares = decode_room_key_shares(envelope.body)
    devices = {DeviceId(bytes.fromhex(d)) for d in case["recipient_devices_hex"]}
    recipient = UserId(_hex(case, "recipient_hex"))
    refused = address_room_key_refusal(envelope, shares, recipient, devices)
    if refused is not None:
        raise refused
    return {"seq": envelope.seq, "shares": as_json(shares)}


def _key_forward_answer(case: Case) -> Any:
    """§27.12.1: an ANSWER (its bundle's signature checked) or an ERROR frame."""
    answer = decode_forward_answer(_hex(case))
    if isinstance(answer, ForwardAnswer):
        verify_key_bundle(answer.sender_bundle)
    return as_json(answer)


def _forwarded_key(case: Case) -> Any:
    """§27.12.2, §27.13.2: an Olm plaintext of a forwarded key, for `recipient_hex`, and (a
    key request's answer) of the session of `owner_hex`."""
    key = decode_forwarded_key(_hex(case))
    owner = DeviceId(_hex(case, "owner_hex")) if "owner_hex" in case else None
    check_forwarded_key(key, recipient=DeviceId(_hex(case, "recipient_hex")), owner=owner)
    return as_json(key)


def _hello(case: Case) -> Any:
    """§13.3: a hello; `"levels": true` names the form of `/hearthmesh/hello/1`, whose fields
    add `levels` (hello/0's have none)."""
    with_levels = bool(case.get("levels", False))
    fields = as_json(decode_hello(_hex(case), with_levels=with_levels))
    if not with_levels:
        del fields["levels"]
    return fields


OPS: Final[dict[str, Callable[[Case], Any]]] = {
    "action_body": _action_body,
    "annotated_body": lambda c: as_json(decode_annotated(_hex(c))),
    "action_check": _action_check,
    "action_fold": _action_fold,
    "deliver_frame": _deliver_frame,
    "hello": _hello,
    "home_record": _home_record,
    "home_dht_key": lambda c: {"key": home_record_key(UserId(_hex(c, "user_hex")))},
    "home_dht_validate": _home_dht_validate,
    "home_dht_select": lambda c: {
        "index": select_home_record(c["key"], [bytes.fromhex(v) for v in c["values_hex"]])
    },
    "membership_body": _membership_body,
    "membership_fold": _membership_fold,
    "membership_ruling": _membership_ruling,
    "receipt_body": lambda c: as_json(decode_receipt(_hex(c))),
    "sync_frame": lambda c: as_json(decode_sync_frame(_hex(c))),
    "media_request": lambda c: {"digest": decode_media_request(_hex(c)).hex()},
    "media_answer": lambda c: as_json(decode_media_answer(_hex(c))),
    "media_download": _media_download,
    "media_descriptor": lambda c: as_json(decode_media(_hex(c))),
    "fetch_request": lambda c: as_json(decode_fetch_request(_hex(c))),
    "fetch_answer": lambda c: as_json(decode_fetch_answer(_hex(c))),
    "fetch_taken": _fetch_taken,
    "joiner_release": joiner_release,
    "link_code": lambda c: as_json(decode_link_code(c["text"])),
    "link_request": _link_request,
    "link_answer": lambda c: as_json(decode_link_answer(_hex(c))),
    "presence": _presence,
    "gossip": _gossip,
    "invite_link": lambda c: as_json(decode_invite(c["text"])),
    "join_request": lambda c: as_json(decode_join_request(_hex(c))),
    "history_request": lambda c: as_json(decode_history_request(_hex(c))),
    "history_answer": _history_answer,
    "signal": _signal,
    "join_answer": _join_answer,
    "invite_check": _invite_check,
    "room_key_body": _room_key_body,
    "room_key_at_home": _room_key_at_home,
    "key_forward_request": lambda c: {"sessions": as_json(decode_forward_request(_hex(c)))},
    "key_forward_answer": _key_forward_answer,
    "forwarded_key": _forwarded_key,
    "key_request": lambda c: as_json(decode_key_request(_hex(c))),
    "caps_request": _caps_request,
    "claim_request": lambda c: {"device": decode_claim_request(_hex(c)).hex()},
    "claim_answer": _claim_answer,
    "verify_frame": lambda c: as_json(decode_verify_frame(_hex(c))),
    "verify_commitment": _verify_commitment,
    "typing_body": lambda c: {"active": decode_typing(_hex(c))},
    "contact_body": lambda c: as_json(decode_contact(_hex(c))),
    "private_body": lambda c: as_json(decode_private(_hex(c))),
    "profile_body": lambda c: as_json(decode_profile(_hex(c))),
    "caps_answer": lambda c: {"levels": sorted(str(n) for n in decode_caps_answer(_hex(c)))},
    **DATA_OPS,
}
"""Every operation a vector names; the keys are the `op` of its cases (the data files' cases
as `data_cases.wire_case` puts them)."""


def run_op(case: Case) -> Any:
    """The fields `case` decodes to, or the error it raises."""
    return OPS[case["op"]](case)
