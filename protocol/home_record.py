"""Signed home records (SPEC §13): where a user's inbox lives and which devices are theirs.

A home record maps a user to the libp2p peer ids (and addresses) of their home node(s) and
carries the certificates of their devices and each device's signed key bundle (SPEC §27.1), so
a sender can share a room key with a device whose home is away. The user key signs it; the
newest `issued_ms` wins. Anyone may pass it on (DHT, gossip, a contact) because nobody else
can forge it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .canonical import CborValue, decode_canonical, encode_canonical
from .e2ee.keys import KeyBundle, decode_key_bundle, encode_key_bundle, verify_key_bundle
from .errors import BadCertificate, ClockSkew, MalformedMessage, RemoteProtocolError
from .hlc import MAX_DRIFT_MS
from .identity import (
    KEY_BYTES,
    SIGNATURE_BYTES,
    DeviceCertificate,
    KeyPair,
    UserId,
    decode_certificate,
    encode_certificate,
    verify_certificate,
    verify_signature,
)

__all__ = [
    "HOME_RECORD_DOMAIN",
    "MAX_HOME_RECORD_BYTES",
    "HomeRecord",
    "decode_home_record",
    "encode_home_record",
    "issue_home_record",
    "verify_home_record",
]

HOME_RECORD_DOMAIN: Final = b"hearthmesh/home-record/v0\x00"
MAX_HOME_RECORD_BYTES: Final = 12288
"""16 devices with certificate and bundle, 16 addresses of 256 bytes and 8 homes fit."""
_MAX_HOMES: Final = 8
_MAX_ADDRS: Final = 16
_MAX_DEVICES: Final = 16
_MAX_TEXT: Final = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class HomeRecord:
    """A user's signed statement of their home nodes and devices."""

    user: UserId
    issued_ms: int
    homes: tuple[str, ...]
    """libp2p peer ids (base58 text) of the home node(s)."""
    addrs: tuple[str, ...]
    """Multiaddrs (with /p2p/) where the home nodes listen; a hint, not a promise."""
    devices: tuple[DeviceCertificate, ...]
    bundles: tuple[KeyBundle, ...]
    """The key bundle of each listed device that has published one (at most one each)."""
    signature: bytes

    def _unsigned(self) -> list[CborValue]:
        return [
            0,
            self.user,
            self.issued_ms,
            list(self.homes),
            list(self.addrs),
            [encode_certificate(d) for d in self.devices],
            [encode_key_bundle(b) for b in self.bundles],
        ]

    def bundle_of(self, device: bytes) -> KeyBundle | None:
        """The key bundle the record lists for `device`, if any."""
        return next((b for b in self.bundles if b.device == device), None)

    def bundle_at_home(self, peer: str) -> KeyBundle | None:
        """The key bundle of the device on home `peer` (a home and its device share a position
        in the record, SPEC §22), if the record lists both."""
        if peer not in self.homes:
            return None
        position = self.homes.index(peer)
        if position >= len(self.devices):
            return None
        return self.bundle_of(self.devices[position].device)

    def home_of(self, device: bytes) -> str | None:
        """The peer id of the home that runs `device`, if the record lists both."""
        for position, certificate in enumerate(self.devices):
            if certificate.device == device:
                return self.homes[position] if position < len(self.homes) else None
        return None


def issue_home_record(
    user_key: KeyPair,
    *,
    issued_ms: int,
    homes: tuple[str, ...],
    addrs: tuple[str, ...],
    devices: tuple[DeviceCertificate, ...],
    bundles: tuple[KeyBundle, ...] = (),
) -> HomeRecord:
    """Sign a home record with the user key; bundles of devices it does not list are left out."""
    listed = {cert.device for cert in devices}
    bundles = tuple(b for b in bundles if b.device in listed)
    unsigned = HomeRecord(
        user=UserId(user_key.public),
        issued_ms=issued_ms,
        homes=homes,
        addrs=addrs,
        devices=devices,
        bundles=bundles,
        signature=b"",
    )
    signature = user_key.sign(HOME_RECORD_DOMAIN + encode_canonical(unsigned._unsigned()))
    return HomeRecord(
        user=unsigned.user,
        issued_ms=issued_ms,
        homes=homes,
        addrs=addrs,
        devices=devices,
        bundles=bundles,
        signature=signature,
    )


def encode_home_record(record: HomeRecord) -> bytes:
    """CBOR [0, user, issued_ms, [home...], [addr...], [certificate...], [bundle...], signature]."""
    return encode_canonical([*record._unsigned(), record.signature])


def _texts(value: object, limit: int) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > limit:
        raise MalformedMessage("too many or not a list")
    if not all(isinstance(v, str) and 0 < len(v) <= _MAX_TEXT for v in value):
        raise MalformedMessage("entries must be short text")
    return tuple(str(v) for v in value)


def decode_home_record(data: bytes) -> HomeRecord:
    """Parse a home record (structure only; see `verify_home_record`).

    Raises:
        TooLarge, MalformedMessage.
    """
    value = decode_canonical(data, max_bytes=MAX_HOME_RECORD_BYTES)
    match value:
        case [
            0,
            bytes() as user,
            int() as issued_ms,
            homes,
            addrs,
            list() as certs,
            list() as bundles,
            bytes() as sig,
        ] if (
            len(user) == KEY_BYTES
            and issued_ms >= 0
            and len(sig) == SIGNATURE_BYTES
            and len(certs) <= _MAX_DEVICES
            and len(bundles) <= _MAX_DEVICES
            and all(isinstance(c, bytes) for c in certs)
            and all(isinstance(b, bytes) for b in bundles)
        ):
            return HomeRecord(
                user=UserId(user),
                issued_ms=issued_ms,
                homes=_texts(homes, _MAX_HOMES),
                addrs=_texts(addrs, _MAX_ADDRS),
                devices=tuple(decode_certificate(c) for c in certs if isinstance(c, bytes)),
                bundles=tuple(decode_key_bundle(b) for b in bundles if isinstance(b, bytes)),
                signature=sig,
            )
    raise MalformedMessage("not a home record")


def verify_home_record(record: HomeRecord, *, now_ms: int) -> None:
    """Check the user's signature, the issue time, and every device certificate.

    Raises:
        BadSignature: not signed by `record.user`.
        ClockSkew: issued (or a certificate created) beyond MAX_DRIFT_MS in the future: one of
            the two clocks is wrong, so the record may be good later (SPEC §13.2).
        BadCertificate: a device certificate that fails or belongs to someone else
            (`expired` set for one past its expiry alone).
    """
    unsigned = HOME_RECORD_DOMAIN + encode_canonical(record._unsigned())
    verify_signature(record.user, unsigned, record.signature)
    if record.issued_ms - now_ms > MAX_DRIFT_MS:
        raise ClockSkew("home record issued in the future")
    for cert in record.devices:
        if cert.user != record.user:
            raise BadCertificate("a device certificate of another user")
        try:
            verify_certificate(cert, now_ms=now_ms)
        except ClockSkew:
            raise
        except RemoteProtocolError as exc:
            # an expired one keeps saying so: it was good when pushed (SPEC §13.4.1)
            expired = isinstance(exc, BadCertificate) and exc.expired
            raise BadCertificate(f"device certificate: {exc}", expired=expired) from None
    listed = {cert.device for cert in record.devices}
    seen: set[bytes] = set()
    for bundle in record.bundles:
        if bundle.device not in listed or bundle.device in seen:
            raise BadCertificate("a key bundle of a device the record does not list, or twice")
        seen.add(bundle.device)
        verify_key_bundle(bundle)  # BadSignature
