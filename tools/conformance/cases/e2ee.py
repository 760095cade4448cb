"""The cases of level `e2ee` (SPEC §20.5): key claims, Megolm messages and key requests
(SPEC §27). State: none.
"""

from __future__ import annotations

import asyncio
from typing import Final

import vodozemac

from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.protocol import e2ee
from hearthmesh.protocol.capabilities import Level
from hearthmesh.protocol.delivery import AckStatus, ProtocolErrorFrame
from hearthmesh.protocol.envelope import Envelope, Kind, RoomId, decode_envelope
from hearthmesh.protocol.errors import HearthError
from hearthmesh.protocol.identity import DeviceId, generate_keypair, user_id_text
from hearthmesh.protocol.verification import (
    VERIFY_PROTOCOL,
    Accept,
    Cancel,
    KeyShare,
    Start,
    commitment_of,
    decode_verify_frame,
    encode_verify_frame,
)
from hearthmesh.tools.hostile.megolm_sender import MegolmSender
from hearthmesh.tools.hostile.peer import DeliveryTrap, HostilePeer, code_name

from ..session import Session, outcome
from .case import Case
from .shared import greet_node, newcomer_home

__all__ = [
    "BINDING_CHECKED",
    "COMMITMENT_CHECKED",
    "ENCRYPTED_WITH_AN_UNKNOWN_SESSION",
    "KEY_CLAIM",
    "KEY_REQUEST_FROM_A_STRANGER",
    "OWED_THEN_REQUESTED",
]


async def _key_claim(s: Session) -> str:
    """§27.2.2: the node hands out its device's bundle and a one-time key, both signed by it
    (checked as the device's by `check_claim_answer`)."""
    if s.device is None:
        return "no-device-in-the-record"
    request = e2ee.encode_claim_request(s.device)
    answer = await s.ask(e2ee.KEYS_PROTOCOL, request, e2ee.decode_claim_answer)
    if isinstance(answer, str | ProtocolErrorFrame):
        return outcome(answer)
    try:
        e2ee.check_claim_answer(answer, s.device)
    except HearthError as exc:
        return f"invalid:{type(exc).__name__}"
    return "ok"


async def _encrypted_unknown_session(s: Session) -> str:
    """A Megolm message of a session whose key the node was never given (SPEC §27.7.1): it is
    history, so the home stores it and holds its plaintext until a key comes."""
    return await s.deliver([MegolmSender(s.kit, s.room).encrypted("sealed for no one yet").wire])


async def _owed_then_requested(s: Session) -> str:
    """§27.10.1 and §27.13.1: the node's user writes to ours while our record lists no key
    bundle. The message still comes (encrypted, its session owed to our user), and once our
    record lists a device with a bundle, a key request gets that session's key from an index
    that opens the message, from the device that sent it."""
    assert s.api is not None
    trap = s.kit.catch_deliveries(AckStatus.STORED)
    text = "owed until your key came"
    await s.api.call("POST", f"/v1/conversation/{s.room.hex()}/messages", {"message": text})
    try:
        envelope = await _encrypted_from_node(s, trap)
    except TimeoutError:
        return "no-message-came"
    session_id = e2ee.decode_encrypted_body(envelope.body).session_id
    account = vodozemac.Account()
    account.generate_fallback_key()  # type: ignore[attr-defined]  # missing in the stub
    fallback = next(iter(account.fallback_key.values()))  # type: ignore[attr-defined]
    bundle = e2ee.issue_key_bundle(
        s.kit.stranger.device,
        identity_key=bytes(account.curve25519_key.to_bytes()),
        fallback_key=bytes(fallback.to_bytes()),
        issued_ms=s.kit.now_ms(),
    )
    await s.kit.announce_home(s.peer_id, bundles=(bundle,))
    request = e2ee.KeyRequest(user=s.kit.user_id, sessions=((s.room, session_id),))
    answer = await s.ask(
        e2ee.KEY_REQUEST_PROTOCOL, e2ee.encode_key_request(request), e2ee.decode_forward_answer
    )
    if isinstance(answer, str | ProtocolErrorFrame):
        return outcome(answer)
    ours = DeviceId(s.kit.stranger.device.public)
    return _open_with_answer(answer, account, ours, envelope, text)


async def _encrypted_from_node(s: Session, trap: DeliveryTrap) -> Envelope:
    """The first encrypted MESSAGE of the node's user in our direct room that reaches our
    trap. Raises TimeoutError."""
    async with asyncio.timeout(s.wait_s):
        while True:
            for wire in trap.wires:
                envelope = decode_envelope(wire)
                if (
                    envelope.kind == Kind.MESSAGE
                    and envelope.room == s.room
                    and envelope.sender_user == s.user
                    and envelope.content_type == e2ee.ENCRYPTED_CONTENT_TYPE
                ):
                    return envelope
            trap.got_one.clear()
            await trap.got_one.wait()


def _open_with_answer(
    answer: e2ee.ForwardAnswer,
    account: vodozemac.Account,
    ours: DeviceId,
    envelope: Envelope,
    text: str,
) -> str:
    """OPENED when the answer's one key, of the session of the device that sealed `envelope`
    and sent to our device `ours`, decrypts it to `text`; else what failed."""
    if answer.sender_bundle.device != envelope.sender_device or len(answer.messages) != 1:
        return f"answer-of-{len(answer.messages)}-keys-or-from-another-device"
    try:
        e2ee.verify_key_bundle(answer.sender_bundle)
        kind, ciphertext = answer.messages[0]
        pre_key = vodozemac.AnyOlmMessage.from_parts(kind, ciphertext).to_pre_key()
        if pre_key is None:
            return "not-an-olm-pre-key-message"
        sender_curve = vodozemac.Curve25519PublicKey.from_bytes(answer.sender_bundle.identity_key)
        _, plaintext = account.create_inbound_session(sender_curve, pre_key)
        key = e2ee.decode_forwarded_key(bytes(plaintext))
        e2ee.check_forwarded_key(key, recipient=ours, owner=envelope.sender_device)
        encrypted = e2ee.decode_encrypted_body(envelope.body)
        if key.room != envelope.room or key.session_id != encrypted.session_id:
            return "a-key-of-another-session"
        exported = vodozemac.ExportedSessionKey(e2ee.key_text(key.exported_key))
        opened = e2ee.open_encrypted(
            vodozemac.InboundGroupSession.import_session(exported), encrypted
        )
    except (HearthError, ValueError) as exc:
        return f"invalid:{type(exc).__name__}"
    return "OPENED" if text.encode() in opened.body else "opened-to-another-text"


async def _key_request_stranger(s: Session) -> str:
    """§27.13.1: a stranger asking for the key of a session in a room it is not in: its home is
    not listed (NOT_LISTED, whatever the rooms: a stranger learns no one's membership)."""
    sessions = ((RoomId(s.kit.rng(32)), s.kit.rng(32)),)
    request = e2ee.encode_key_request(e2ee.KeyRequest(user=s.kit.user_id, sessions=sessions))
    return (await s.kit.request(s.peer_id, e2ee.KEY_REQUEST_PROTOCOL, request)).summary


KEY_CLAIM: Final = Case(
    name="key_claim", section="§27.2.2", expected="ok", run=_key_claim, level=Level.E2EE
)


ENCRYPTED_WITH_AN_UNKNOWN_SESSION: Final = Case(
    name="encrypted_with_an_unknown_session",
    section="§27.7.1",
    expected="STORED",
    run=_encrypted_unknown_session,
    level=Level.E2EE,
)


OWED_THEN_REQUESTED: Final = Case(
    name="owed_then_requested",
    section="§27.10.1, §27.13.1",
    expected="OPENED",
    run=_owed_then_requested,
    needs_api=True,
    level=Level.E2EE,
)


KEY_REQUEST_FROM_A_STRANGER: Final = Case(
    name="key_request_from_a_stranger",
    section="§27.13.1",
    expected="ERROR:NOT_LISTED",
    run=_key_request_stranger,
    hostile=True,
    level=Level.E2EE,
)


async def _commitment_checked(s: Session) -> str:
    """§29.3.1: the node's user starts verifying our stranger's device (over the API); the
    node, the initiator, must check the KEY we answer with against the commitment of our
    ACCEPT. A KEY that matches it moves the flow on (the API shows the strings: `showing`);
    one that does not is cancelled with `SAS_MISMATCH` on the stream."""
    assert s.api is not None
    await greet_node(s.kit, s.peer_id)  # the node's newest record of us names this peer
    matched = await _respond_to_a_flow(s, s.kit)
    swapped = await _respond_to_a_flow(s, s.kit, swap=True)
    return f"MATCHED:{matched},SWAPPED:{swapped}"


async def _binding_checked(s: Session) -> str:
    """§29.4.1: the keys a responder names in ACCEPT must be the device its user's newest
    record places on the stream's peer. The node's user starts verifying a newcomer, whose
    ACCEPT names a device key of no record: the node must cancel with `NOT_AUTHORIZED` before
    it sends its KEY."""
    async with newcomer_home(s) as (newcomer, _):
        return await _respond_to_a_flow(s, newcomer, device=generate_keypair(newcomer.rng).public)


async def _respond_to_a_flow(
    s: Session, kit: HostilePeer, *, swap: bool = False, device: bytes | None = None
) -> str:
    """Answer, as `kit`, one flow the node's user starts with `kit`'s user (§29.3.1): our
    ACCEPT names our device (or `device`), our KEY is the one it committed to (or, `swap`,
    another). The flow's state once the node judged what we sent (the API's); for a flow the
    node cancelled, the frame it cancelled with."""
    assert s.api is not None
    ours, another = vodozemac.Sas().public_key.to_bytes(), vodozemac.Sas().public_key.to_bytes()
    ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def respond(stream: FrameStream) -> None:
        try:
            ended.set_result(
                await _answer_start(stream, kit, device, ours, another if swap else ours)
            )
        except HearthError as exc:
            ended.set_result(f"broken:{type(exc).__name__}")

    kit.host.set_stream_handler(VERIFY_PROTOCOL, respond)
    body = {"user_id": user_id_text(kit.user_id), "peer_id": kit.peer_id}
    flow = (await s.api.call("POST", "/v1/verifications", body))["flow_id"]
    state = "started"
    for _ in range(int(s.wait_s / 0.05)):  # until our KEY was judged: poll the API
        if (state := (await s.api.call("GET", f"/v1/verifications/{flow}"))["state"]) not in (
            "started",
            "key_sent",
        ):
            break
        await asyncio.sleep(0.05)
    if state == "showing":  # the node waits for its user now: end the flow (one per peer)
        await s.api.call("POST", f"/v1/verifications/{flow}/cancel")
    try:
        async with asyncio.timeout(s.wait_s):
            after = await ended
    except TimeoutError:
        return f"{state},no-frame-after-our-key"
    return after if state == "cancelled" else state


async def _answer_start(
    stream: FrameStream, kit: HostilePeer, device: bytes | None, committed: bytes, sent: bytes
) -> str:
    """The responder's frames: ACCEPT committing to `committed`, then, after the node's KEY,
    a KEY of `sent`; the frame the node sends after ours, as `CANCEL:<code>` or its type."""
    start_bytes = await stream.read_frame()
    start = decode_verify_frame(start_bytes)
    if not isinstance(start, Start):
        return f"first:{type(start).__name__}"
    accept = Accept(
        flow=start.flow,
        user=kit.stranger.user.public,
        device=kit.stranger.device.public if device is None else device,
        commitment=commitment_of(committed, start_bytes),
    )
    await stream.write_frame(encode_verify_frame(accept))
    answer = decode_verify_frame(await stream.read_frame())  # the node's KEY, or a CANCEL
    if isinstance(answer, KeyShare):
        await stream.write_frame(encode_verify_frame(KeyShare(flow=start.flow, key=sent)))
        answer = decode_verify_frame(await stream.read_frame())  # a CANCEL, at once or later
    return (
        f"CANCEL:{code_name(answer.code)}" if isinstance(answer, Cancel) else type(answer).__name__
    )


BINDING_CHECKED: Final = Case(
    name="binding_checked",
    section="§29.4.1",
    expected="CANCEL:NOT_AUTHORIZED",
    run=_binding_checked,
    needs_api=True,
    level=Level.E2EE,
)

COMMITMENT_CHECKED: Final = Case(
    name="commitment_checked",
    section="§29.3.1",
    expected="MATCHED:showing,SWAPPED:CANCEL:SAS_MISMATCH",
    run=_commitment_checked,
    needs_api=True,
    level=Level.E2EE,
)
