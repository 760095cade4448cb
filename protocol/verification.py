"""SAS verification of a device key (SPEC §29): the frames of `/hearthmesh/verify/0` and the
machine each side runs, sans-I/O.

Two devices (of one user, or of two users) prove they see each other's device keys by comparing
a short authentication string derived from an X25519 exchange (vodozemac `Sas`):

    initiator                                responder
    START  [1, flow, user, device]      ->
                                        <-   ACCEPT [2, flow, user, device, commitment]
    KEY    [3, flow, sas key]           ->                 commitment = SHA-256(sas key | START)
                                        <-   KEY    [3, flow, sas key]
    (both show 7 emoji and 3 decimals; each user confirms on their device)
    MAC    [4, flow, mac]               <->  MAC    [4, flow, mac]
    DONE   [5, flow]                    <->  DONE   [5, flow]
    CANCEL [6, flow, code, reason] from either side at any point ends it.

The commitment binds the responder's key before it sees the initiator's, and the initiator
reveals its key before it sees the responder's, so neither side can choose its key to steer the
string. The MAC covers the sender's user and device keys under the shared secret; a key that a
man in the middle swapped gives different strings and a MAC that does not verify.

`SasVerification` owns one flow's state. The caller makes the vodozemac `Sas` (its key comes
from the OS), feeds frames with `receive`, and sends what `data_to_send` returns.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Final

import vodozemac

from .canonical import decode_canonical, encode_canonical
from .errors import (
    LocalProtocolError,
    MalformedMessage,
    ProtocolError,
    SasMismatch,
    VerificationCancelled,
)

__all__ = [
    "EMOJI",
    "FLOW_ID_BYTES",
    "MAX_VERIFY_FRAME_BYTES",
    "VERIFY_PROTOCOL",
    "Accept",
    "Cancel",
    "Done",
    "KeyShare",
    "Mac",
    "SasShown",
    "SasVerification",
    "Start",
    "VerifyFrameType",
    "VerifyState",
    "check_commitment",
    "commitment_of",
    "decode_verify_frame",
    "encode_verify_frame",
    "keys_changed",
]

VERIFY_PROTOCOL: Final = "/hearthmesh/verify/0"
MAX_VERIFY_FRAME_BYTES: Final = 512
"""The longest frame (a CANCEL with its reason) is well under this; longer is TOO_LARGE."""
FLOW_ID_BYTES: Final = 16
_KEY_BYTES: Final = 32
_MAX_REASON_CHARS: Final = 128
_SAS_INFO: Final = b"HEARTHMESH_SAS_V0"
_MAC_INFO: Final = "HEARTHMESH_MAC_V0"

EMOJI: Final[tuple[tuple[str, str], ...]] = (
    ("🐶", "Dog"), ("🐱", "Cat"), ("🦁", "Lion"), ("🐎", "Horse"), ("🦄", "Unicorn"),
    ("🐷", "Pig"), ("🐘", "Elephant"), ("🐰", "Rabbit"), ("🐼", "Panda"), ("🐓", "Rooster"),
    ("🐧", "Penguin"), ("🐢", "Turtle"), ("🐟", "Fish"), ("🐙", "Octopus"), ("🦋", "Butterfly"),
    ("🌷", "Flower"), ("🌳", "Tree"), ("🌵", "Cactus"), ("🍄", "Mushroom"), ("🌏", "Globe"),
    ("🌙", "Moon"), ("☁️", "Cloud"), ("🔥", "Fire"), ("🍌", "Banana"), ("🍎", "Apple"),
    ("🍓", "Strawberry"), ("🌽", "Corn"), ("🍕", "Pizza"), ("🎂", "Cake"), ("❤️", "Heart"),
    ("😀", "Smiley"), ("🤖", "Robot"), ("🎩", "Hat"), ("👓", "Glasses"), ("🔧", "Spanner"),
    ("🎅", "Santa"), ("👍", "Thumbs Up"), ("☂️", "Umbrella"), ("⌛", "Hourglass"), ("⏰", "Clock"),
    ("🎁", "Gift"), ("💡", "Light Bulb"), ("📕", "Book"), ("✏️", "Pencil"), ("📎", "Paperclip"),
    ("✂️", "Scissors"), ("🔒", "Lock"), ("🔑", "Key"), ("🔨", "Hammer"), ("☎️", "Telephone"),
    ("🏁", "Flag"), ("🚂", "Train"), ("🚲", "Bicycle"), ("✈️", "Aeroplane"), ("🚀", "Rocket"),
    ("🏆", "Trophy"), ("⚽", "Ball"), ("🎸", "Guitar"), ("🎺", "Trumpet"), ("🔔", "Bell"),
    ("⚓", "Anchor"), ("🎧", "Headphones"), ("📁", "Folder"), ("📌", "Pin"),
)  # fmt: skip
"""The 64 SAS emoji with their names (the Matrix table, so users of both see the same)."""


class VerifyFrameType(IntEnum):
    """First element of every frame on a verify stream (SPEC §29.2). Never renumbered."""

    START = 1
    ACCEPT = 2
    KEY = 3
    MAC = 4
    DONE = 5
    CANCEL = 6


class VerifyState(Enum):
    """Where one side's flow is."""

    STARTED = "started"
    """Initiator: START sent, waiting for ACCEPT."""
    ACCEPTED = "accepted"
    """Responder: ACCEPT sent, waiting for the initiator's KEY."""
    KEY_SENT = "key_sent"
    """Initiator: KEY sent, waiting for the responder's KEY."""
    SHOWING = "showing"
    """Both keys known: the string is shown, waiting for our user and the peer's MAC."""
    CONFIRMED = "confirmed"
    """Our user confirmed and our MAC went out; waiting for the peer's MAC."""
    DONE = "done"
    """Both MACs verified: the peer's device key is verified."""
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True, kw_only=True)
class Start:
    flow: bytes
    user: bytes
    """The initiator's user key (Ed25519, 32 bytes)."""
    device: bytes
    """The initiator's device key being verified."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Accept:
    flow: bytes
    user: bytes
    device: bytes
    commitment: bytes
    """SHA-256 of the responder's SAS public key followed by the START frame's bytes."""


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyShare:
    flow: bytes
    key: bytes
    """The sender's ephemeral X25519 SAS public key."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Mac:
    flow: bytes
    mac: str
    """vodozemac's base64 HMAC-SHA-256 over the sender's user and device keys."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Done:
    flow: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancel:
    flow: bytes
    code: int
    """A §9 code: why it ended."""
    reason: str


VerifyFrame = Start | Accept | KeyShare | Mac | Done | Cancel


@dataclass(frozen=True, slots=True, kw_only=True)
class SasShown:
    """The short authentication string both users compare."""

    emoji: tuple[int, ...]
    """Seven indexes into `EMOJI`."""
    decimals: tuple[int, int, int]
    """Three numbers of 1000..9191."""

    @property
    def emoji_names(self) -> tuple[str, ...]:
        return tuple(EMOJI[i][1] for i in self.emoji)

    @property
    def emoji_symbols(self) -> tuple[str, ...]:
        return tuple(EMOJI[i][0] for i in self.emoji)


def keys_changed(verified: Collection[bytes], listed: Collection[bytes]) -> bool:
    """The warning of SPEC §29.5: a user has verified device keys, and their newest record
    lists a key that is not verified, or no longer lists a verified one."""
    return bool(verified) and (
        any(key not in verified for key in listed) or any(key not in listed for key in verified)
    )


# --- frames ------------------------------------------------------------------------------------


def encode_verify_frame(frame: VerifyFrame) -> bytes:
    """Canonical CBOR of a frame (SPEC §29.2)."""
    match frame:
        case Start(flow=flow, user=user, device=device):
            return encode_canonical([int(VerifyFrameType.START), flow, user, device])
        case Accept(flow=flow, user=user, device=device, commitment=commitment):
            return encode_canonical([int(VerifyFrameType.ACCEPT), flow, user, device, commitment])
        case KeyShare(flow=flow, key=key):
            return encode_canonical([int(VerifyFrameType.KEY), flow, key])
        case Mac(flow=flow, mac=mac):
            return encode_canonical([int(VerifyFrameType.MAC), flow, mac])
        case Done(flow=flow):
            return encode_canonical([int(VerifyFrameType.DONE), flow])
        case Cancel(flow=flow, code=code, reason=reason):
            return encode_canonical([int(VerifyFrameType.CANCEL), flow, code, reason])
    raise LocalProtocolError(f"not a verify frame: {frame!r}")


def commitment_of(sas_key: bytes, start: bytes) -> bytes:
    """The responder's ACCEPT commitment: SHA-256 of its SAS key then the START frame's bytes
    (SPEC §29.3.1)."""
    return hashlib.sha256(sas_key + start).digest()


def check_commitment(commitment: bytes, sas_key: bytes, start: bytes) -> None:
    """The initiator's check of the responder's KEY against its ACCEPT (SPEC §29.3.1).

    Raises:
        SasMismatch: the key is not the one committed to over this START.
    """
    if commitment_of(sas_key, start) != commitment:
        raise SasMismatch("the responder's key does not match its commitment")


def _key(value: object) -> bytes:
    if isinstance(value, bytes) and len(value) == _KEY_BYTES:
        return value
    raise MalformedMessage("a key in a verify frame is 32 bytes")


def decode_verify_frame(data: bytes) -> VerifyFrame:
    """Parse one frame.

    Raises:
        TooLarge: over MAX_VERIFY_FRAME_BYTES (checked before parsing).
        MalformedMessage: anything that is not one of the six frames.
    """
    value = decode_canonical(data, max_bytes=MAX_VERIFY_FRAME_BYTES)
    if not (isinstance(value, list) and len(value) >= 2 and isinstance(value[1], bytes)):
        raise MalformedMessage("a verify frame is [type, 16-byte flow id, ...]")
    flow = value[1]
    if len(flow) != FLOW_ID_BYTES:
        raise MalformedMessage("a verify flow id is 16 bytes")
    match value:
        case [1, _, user, device]:
            return Start(flow=flow, user=_key(user), device=_key(device))
        case [2, _, user, device, commitment]:
            return Accept(
                flow=flow, user=_key(user), device=_key(device), commitment=_key(commitment)
            )
        case [3, _, key]:
            return KeyShare(flow=flow, key=_key(key))
        case [4, _, str() as mac] if 0 < len(mac) <= 64:
            return Mac(flow=flow, mac=mac)
        case [5, _]:
            return Done(flow=flow)
        case [6, _, int() as code, str() as reason] if (
            0 <= code < 2**16 and len(reason) <= _MAX_REASON_CHARS
        ):
            return Cancel(flow=flow, code=code, reason=reason)
    raise MalformedMessage("not a verify frame (START, ACCEPT, KEY, MAC, DONE or CANCEL)")


# --- the machine -------------------------------------------------------------------------------


class SasVerification:
    """One side of one verification flow (SPEC §29.3).

    A frame that breaks the flow raises a `ProtocolError` from `receive` after queueing a
    CANCEL with its code; the flow is then CANCELLED and refuses everything else.
    """

    def __init__(
        self,
        *,
        sas: vodozemac.Sas,
        flow: bytes,
        user: bytes,
        device: bytes,
        initiator: bool,
    ) -> None:
        """`user` and `device` are our own keys; the initiator queues START at once."""
        if len(flow) != FLOW_ID_BYTES:
            raise LocalProtocolError("a flow id is 16 bytes")
        self._sas: vodozemac.Sas | None = sas
        self._our_key = sas.public_key.to_bytes()
        self._flow = flow
        self._user = user
        self._device = device
        self.initiator = initiator
        self.peer_user: bytes | None = None
        self.peer_device: bytes | None = None
        self.shown: SasShown | None = None
        self.cancel_code: int | None = None
        self._start_bytes = b""
        self._commitment = b""
        self._established: vodozemac.EstablishedSas | None = None
        self._peer_mac_ok = False
        self._peer_done = False
        self._out: list[bytes] = []
        self.state = VerifyState.STARTED if initiator else VerifyState.ACCEPTED
        if initiator:
            self._start_bytes = self._queue(Start(flow=flow, user=user, device=device))

    @classmethod
    def respond_to(
        cls, start: bytes, *, sas: vodozemac.Sas, user: bytes, device: bytes
    ) -> SasVerification:
        """The responder's machine for the first frame of a stream, which MUST be START.

        Raises:
            RemoteProtocolError: the frame is not a well-formed START.
        """
        frame = decode_verify_frame(start)
        if not isinstance(frame, Start):
            raise MalformedMessage("a verify stream begins with START")
        machine = cls(sas=sas, flow=frame.flow, user=user, device=device, initiator=False)
        machine.receive(start)
        return machine

    @property
    def flow(self) -> bytes:
        return self._flow

    def data_to_send(self) -> list[bytes]:
        """The frames to write, in order; each is returned once."""
        out, self._out = self._out, []
        return out

    def _queue(self, frame: VerifyFrame) -> bytes:
        data = encode_verify_frame(frame)
        self._out.append(data)
        return data

    def receive(self, data: bytes) -> None:
        """Take one frame from the peer.

        Raises:
            VerificationCancelled: the peer sent CANCEL (its code is `cancel_code`).
            SasMismatch: the commitment or the peer's MAC does not verify (a CANCEL is queued).
            RemoteProtocolError: a malformed frame, another flow, a frame out of order.
        """
        try:
            self._receive(data)
        except VerificationCancelled:
            raise
        except ProtocolError as exc:
            if self.state is not VerifyState.CANCELLED:
                self.cancel(exc.code, str(exc))
            raise

    def _receive(self, data: bytes) -> None:
        if self.state is VerifyState.CANCELLED:
            raise MalformedMessage("a frame after the flow was cancelled")
        frame = decode_verify_frame(data)
        if frame.flow != self._flow:
            raise MalformedMessage("a frame of another flow")
        if self.state is VerifyState.DONE:
            if isinstance(frame, Done) and not self._peer_done:
                self._peer_done = True  # the peer's DONE: ours went out already
                return
            raise MalformedMessage("a frame after the flow ended")
        match frame, self.state:
            case Cancel(code=code, reason=reason), _:
                self.state = VerifyState.CANCELLED
                self.cancel_code = code
                self._sas = None
                raise VerificationCancelled(f"the peer cancelled ({code}): {reason}")
            case Start(user=user, device=device), VerifyState.ACCEPTED if self.peer_device is None:
                self.peer_user, self.peer_device = user, device
                self._start_bytes = data
                commitment = commitment_of(self._our_key, data)
                self._queue(
                    Accept(
                        flow=self._flow, user=self._user, device=self._device, commitment=commitment
                    )
                )
            case Accept(user=user, device=device, commitment=commitment), VerifyState.STARTED:
                self.peer_user, self.peer_device = user, device
                self._commitment = commitment
                self._queue(KeyShare(flow=self._flow, key=self._our_key))
                self.state = VerifyState.KEY_SENT
            case KeyShare(key=key), VerifyState.ACCEPTED if self.peer_device is not None:
                self._queue(KeyShare(flow=self._flow, key=self._our_key))
                self._establish(key, initiator_key=key, responder_key=self._our_key)
            case KeyShare(key=key), VerifyState.KEY_SENT:
                check_commitment(self._commitment, key, self._start_bytes)
                self._establish(key, initiator_key=self._our_key, responder_key=key)
            case Mac(mac=mac), VerifyState.SHOWING | VerifyState.CONFIRMED:
                self._check_mac(mac)
            case _:
                raise MalformedMessage(
                    f"{type(frame).__name__} is not expected in {self.state.value}"
                )

    def _establish(self, peer_key: bytes, *, initiator_key: bytes, responder_key: bytes) -> None:
        if self._sas is None:
            raise LocalProtocolError("the SAS was used already")
        try:
            self._established = self._sas.diffie_hellman(
                vodozemac.Curve25519PublicKey.from_bytes(peer_key)
            )
        except ValueError:  # vodozemac refuses a non-contributory key
            raise SasMismatch("the peer's SAS key is not usable") from None
        self._sas = None  # one exchange per Sas
        info = self._sas_info(initiator_key, responder_key)
        sas_bytes = self._established.bytes(info.hex())
        self.shown = SasShown(
            emoji=tuple(sas_bytes.emoji_indices),
            decimals=tuple(sas_bytes.decimals),  # type: ignore[arg-type]
        )
        self.state = VerifyState.SHOWING

    def _sas_info(self, initiator_key: bytes, responder_key: bytes) -> bytes:
        """Both sides' identities and keys, in initiator-then-responder order (SPEC §29.3)."""
        assert self.peer_user is not None and self.peer_device is not None
        ours = self._user + self._device
        theirs = self.peer_user + self.peer_device
        first, second = (ours, theirs) if self.initiator else (theirs, ours)
        return _SAS_INFO + self._flow + first + initiator_key + second + responder_key

    def _mac_info(self, *, sender: bytes, receiver: bytes) -> str:
        return f"{_MAC_INFO}|{self._flow.hex()}|{sender.hex()}|{receiver.hex()}"

    def confirm(self) -> None:
        """Our user saw the same string on both devices: send our MAC.

        Raises:
            LocalProtocolError: no string is shown (yet), or the flow ended.
        """
        if self.state is not VerifyState.SHOWING or self._established is None:
            raise LocalProtocolError(f"nothing to confirm in {self.state.value}")
        assert self.peer_device is not None
        mac = self._established.calculate_mac(
            (self._user + self._device).hex(),
            self._mac_info(sender=self._device, receiver=self.peer_device),
        )
        self._queue(Mac(flow=self._flow, mac=mac))
        self.state = VerifyState.CONFIRMED
        self._finish_if_done()

    def _check_mac(self, mac: str) -> None:
        assert self._established is not None
        assert self.peer_user is not None and self.peer_device is not None
        if self._peer_mac_ok:
            raise MalformedMessage("a second MAC")
        try:
            self._established.verify_mac(
                (self.peer_user + self.peer_device).hex(),
                self._mac_info(sender=self.peer_device, receiver=self._device),
                mac,
            )
        except ValueError:
            raise SasMismatch("the peer's MAC over its device key does not verify") from None
        self._peer_mac_ok = True
        self._finish_if_done()

    def _finish_if_done(self) -> None:
        if self.state is VerifyState.CONFIRMED and self._peer_mac_ok:
            self._queue(Done(flow=self._flow))
            self.state = VerifyState.DONE
            self._established = None

    @property
    def verified(self) -> bool:
        """Both MACs verified and our user confirmed: the peer's device key is verified."""
        return self.state is VerifyState.DONE

    def cancel(self, code: int, reason: str) -> None:
        """End the flow and queue CANCEL (a no-op once it ended)."""
        if self.state in (VerifyState.DONE, VerifyState.CANCELLED):
            return
        self._queue(Cancel(flow=self._flow, code=int(code), reason=reason[:_MAX_REASON_CHARS]))
        self.state = VerifyState.CANCELLED
        self.cancel_code = int(code)
        self._sas = None
        self._established = None
