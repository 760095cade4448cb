"""Generate hello.json (SPEC §13.3), home_record.json (§13.1, §13.2, §13.4) and gossip.json
(§14.1, §14.2): what two nodes say when they meet and what travels on gossip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hearthmesh.protocol.canonical import CborValue, decode_canonical, encode_canonical
from hearthmesh.protocol.capabilities import Level
from hearthmesh.protocol.e2ee.keys import KeyBundle, encode_key_bundle, issue_key_bundle
from hearthmesh.protocol.envelope import Kind, RoomId
from hearthmesh.protocol.errors import (
    BadCertificate,
    BadSignature,
    ClockSkew,
    InvalidIdentifier,
    MalformedMessage,
    NotAuthorized,
    TooLarge,
)
from hearthmesh.protocol.gossip import (
    PRESENCE_CONTENT_TYPE,
    PresenceStatus,
    encode_gossip,
    encode_presence,
)
from hearthmesh.protocol.hello import Hello, encode_hello
from hearthmesh.protocol.hlc import MAX_DRIFT_MS
from hearthmesh.protocol.home_dht import home_record_key
from hearthmesh.protocol.home_record import (
    HOME_RECORD_DOMAIN,
    encode_home_record,
    issue_home_record,
)
from hearthmesh.protocol.identity import KeyPair

from .cast import NOW_MS, Cast
from .common import VECTORS_DIR, pin, refuse, write_vectors
from .gen_e2ee import curve_public

__all__ = ["PRESENCE_ROOM", "generate", "presence_wire", "record_bytes"]

PRESENCE_ROOM = RoomId(bytes(32))
"""PRESENCE envelopes name no room (SPEC §14.2)."""


def _bundle(device: KeyPair) -> KeyBundle:
    """The device's key bundle with fixed Curve25519 keys (SPEC §27.1)."""
    return issue_key_bundle(
        device,
        identity_key=curve_public(f"home-identity-{device.public.hex()}"),
        fallback_key=curve_public(f"home-fallback-{device.public.hex()}"),
        issued_ms=NOW_MS,
    )


def _resign(user: KeyPair, unsigned: list[CborValue]) -> bytes:
    """A record of these unsigned fields with a good user signature (only the fields are bad)."""
    return encode_canonical([*unsigned, user.sign(HOME_RECORD_DOMAIN + encode_canonical(unsigned))])


def record_bytes(
    c: Cast,
    user: KeyPair,
    device: KeyPair,
    *,
    issued_ms: int = NOW_MS,
    bundles: tuple[KeyBundle, ...] | None = None,
) -> bytes:
    return encode_home_record(
        issue_home_record(
            user,
            issued_ms=issued_ms,
            homes=(c.node_peer_id,),
            addrs=(f"/ip4/192.0.2.1/tcp/4001/p2p/{c.node_peer_id}",),
            devices=(c.certificate(user, device),),
            bundles=(_bundle(device),) if bundles is None else bundles,
        )
    )


def presence_wire(c: Cast, body: bytes, user: KeyPair, device: KeyPair) -> bytes:
    """A PRESENCE envelope of `user`'s `device` with this body (SPEC §14.2)."""
    envelope = c.seal(
        user,
        device,
        kind=Kind.PRESENCE,
        room=PRESENCE_ROOM,
        seq=1,
        body=body,
        content_type=PRESENCE_CONTENT_TYPE,
    )
    return envelope.wire


_LEVELS = frozenset({Level.CORE, Level.E2EE, Level.ADDRESSED_ROOM_KEYS})


def _hello(c: Cast, directory: Path) -> Path:
    record = record_bytes(c, c.alice, c.phone)
    valid = [
        pin(
            "hello",
            "a hello with one record",
            hex=encode_hello(Hello(records=(record,), sent_ms=NOW_MS)).hex(),
        ),
        pin(
            "hello",
            "an answer: the asker's clock offset, 1.5 s behind",
            hex=encode_hello(Hello(records=(record,), sent_ms=NOW_MS, offset_ms=-1500)).hex(),
        ),
        pin(
            "hello",
            "a node with no users yet",
            hex=encode_hello(Hello(records=(), sent_ms=0)).hex(),
        ),
        pin(
            "hello",
            "hello/1: the sender's levels after its clock, sorted",
            levels=True,
            hex=encode_hello(Hello(records=(record,), sent_ms=NOW_MS, levels=_LEVELS)).hex(),
        ),
        pin(
            "hello",
            "hello/1's answer: the levels, then the offset",
            levels=True,
            hex=encode_hello(
                Hello(records=(), sent_ms=NOW_MS, offset_ms=-1500, levels=_LEVELS)
            ).hex(),
        ),
        pin(
            "hello",
            "hello/1: a level not known here is skipped",
            levels=True,
            hex=encode_canonical([1, [], NOW_MS, ["core", "from-a-later-release"]]).hex(),
        ),
    ]
    invalid = [
        refuse("hello", MalformedMessage, "version 1", hex=encode_canonical([1, [], NOW_MS]).hex()),
        refuse(
            "hello",
            MalformedMessage,
            "nine records: at most eight",
            hex=encode_canonical([0, [record] * 9, NOW_MS]).hex(),
        ),
        refuse(
            "hello",
            MalformedMessage,
            "an absent offset is no 4th item, never null",
            hex=encode_canonical([0, [], NOW_MS, None]).hex(),
        ),
        refuse(
            "hello",
            MalformedMessage,
            "an offset beyond ten years",
            hex=encode_canonical([0, [], NOW_MS, 10 * 365 * 24 * 3600 * 1000 + 1]).hex(),
        ),
        refuse(
            "hello",
            MalformedMessage,
            "hello/1: levels out of order",
            levels=True,
            hex=encode_canonical([1, [], NOW_MS, ["e2ee", "core"]]).hex(),
        ),
        refuse(
            "hello",
            MalformedMessage,
            "hello/1: the form of hello/0",
            levels=True,
            hex=encode_canonical([0, [], NOW_MS]).hex(),
        ),
    ]
    return write_vectors(
        "hello",
        spec="SPEC.md §13.3",
        function="tools/vectors/codecs.py op hello: decode_hello",
        valid=valid,
        invalid=invalid,
        directory=directory,
    )


def _home_record(c: Cast, directory: Path) -> Path:
    record = record_bytes(c, c.alice, c.phone)
    newer = record_bytes(c, c.alice, c.phone, issued_ms=NOW_MS + 60_000)
    bob_record = record_bytes(c, c.bob, c.laptop)
    key = home_record_key(c.user(c.alice))
    forged = bytearray(record)
    forged[-1] ^= 0x01
    foreign = encode_home_record(
        issue_home_record(
            c.alice, issued_ms=NOW_MS, homes=(), addrs=(), devices=(c.certificate(c.bob, c.laptop),)
        )
    )
    unsigned: list[CborValue] = [
        0,
        c.user(c.alice),
        NOW_MS,
        [c.node_peer_id] * 9,
        [],
        [],
        [],
        bytes(64),
    ]
    record_value = decode_canonical(record, max_bytes=len(record))
    assert isinstance(record_value, list)
    bad_bundle = bytearray(encode_key_bundle(_bundle(c.phone)))
    bad_bundle[-1] ^= 0x01
    # Re-signed by alice, so only the bundle is wrong.
    forged_bundle = _resign(c.alice, [*record_value[:6], [bytes(bad_bundle)]])
    unlisted_bundle = _resign(c.alice, [*record_value[:6], [encode_key_bundle(_bundle(c.laptop))]])
    valid: list[dict[str, Any]] = [
        pin(
            "home_record",
            "alice's record: one home, one address, one device with its key bundle",
            hex=record.hex(),
            now_ms=NOW_MS,
        ),
        pin(
            "home_record",
            "issued exactly MAX_DRIFT_MS ahead of the verifier",
            hex=record_bytes(c, c.alice, c.phone, issued_ms=NOW_MS + MAX_DRIFT_MS).hex(),
            now_ms=NOW_MS,
        ),
        pin(
            "home_dht_key",
            "/home/ + base64url of the user id, 49 bytes",
            user_hex=c.user(c.alice).hex(),
        ),
        pin(
            "home_dht_validate",
            "a DHT node accepts alice's record under alice's key",
            key=key,
            hex=record.hex(),
            now_ms=NOW_MS,
        ),
        pin(
            "home_dht_select",
            "the newest issued_ms wins whatever its position",
            key=key,
            values_hex=[record.hex(), newer.hex(), bob_record.hex()],
        ),
    ]
    invalid = [
        refuse(
            "home_record", BadSignature, "signature bit flipped", hex=forged.hex(), now_ms=NOW_MS
        ),
        refuse(
            "home_record",
            ClockSkew,
            "issued one ms past MAX_DRIFT_MS ahead",
            hex=record_bytes(c, c.alice, c.phone, issued_ms=NOW_MS + MAX_DRIFT_MS + 1).hex(),
            now_ms=NOW_MS,
        ),
        refuse(
            "home_record",
            BadCertificate,
            "a certificate of another user's device",
            hex=foreign.hex(),
            now_ms=NOW_MS,
        ),
        refuse(
            "home_record",
            BadSignature,
            "a key bundle whose device signature fails (SPEC §27.1)",
            hex=forged_bundle.hex(),
            now_ms=NOW_MS,
        ),
        refuse(
            "home_record",
            BadCertificate,
            "a key bundle of a device the record does not list",
            hex=unlisted_bundle.hex(),
            now_ms=NOW_MS,
        ),
        refuse(
            "home_record",
            MalformedMessage,
            "nine homes: at most eight",
            hex=encode_canonical(unsigned).hex(),
            now_ms=NOW_MS,
        ),
        refuse(
            "home_record",
            TooLarge,
            "over 12 KiB",
            hex=encode_canonical([*unsigned[:5], [bytes(12288)], [], bytes(64)]).hex(),
            now_ms=NOW_MS,
        ),
        refuse(
            "home_dht_validate",
            NotAuthorized,
            "bob's record under alice's key",
            key=key,
            hex=bob_record.hex(),
            now_ms=NOW_MS,
        ),
        refuse(
            "home_dht_validate",
            InvalidIdentifier,
            "a key of hex, not base64url",
            key="/home/" + c.user(c.alice).hex(),
            hex=record.hex(),
            now_ms=NOW_MS,
        ),
        refuse(
            "home_dht_select",
            MalformedMessage,
            "no value is a record for the key",
            key=key,
            values_hex=[bob_record.hex(), "00"],
        ),
    ]
    return write_vectors(
        "home_record",
        spec="SPEC.md §13.1, §13.2, §13.4",
        function="tools/vectors/codecs.py ops home_record, home_dht_*",
        valid=valid,
        invalid=invalid,
        directory=directory,
    )


def _gossip(c: Cast, directory: Path) -> Path:
    record = record_bytes(c, c.alice, c.phone)

    def presence(body: bytes, user: KeyPair = c.alice, device: KeyPair = c.phone) -> str:
        return presence_wire(c, body, user, device).hex()

    message = c.seal(
        c.alice,
        c.phone,
        kind=Kind.MESSAGE,
        room=c.group_room,
        seq=3,
        body=b"hi all",
        content_type="text/plain",
    )
    cert = c.certificate_bytes(c.alice, c.phone)
    payload = encode_gossip(cert, message.wire)
    valid = [
        pin(
            "presence",
            "online for a minute, with alice's own record",
            hex=presence(encode_presence(PresenceStatus.ONLINE, 60_000, record)),
            now_ms=NOW_MS,
        ),
        pin(
            "presence",
            "offline",
            hex=presence(encode_presence(PresenceStatus.OFFLINE, 1, record)),
            now_ms=NOW_MS,
        ),
        pin(
            "presence",
            "the record alone, for the presence topic: no presence (SPEC §32.4)",
            hex=presence(encode_presence(PresenceStatus.RECORD, 60_000, record)),
            now_ms=NOW_MS,
        ),
        pin(
            "gossip",
            "a room topic payload: [certificate, envelope]",
            hex=payload.hex(),
            now_ms=NOW_MS,
        ),
    ]
    invalid = [
        refuse(
            "presence",
            NotAuthorized,
            "bob's record in alice's announcement",
            hex=presence(
                encode_presence(PresenceStatus.ONLINE, 60_000, record_bytes(c, c.bob, c.laptop))
            ),
            now_ms=NOW_MS,
        ),
        refuse(
            "presence",
            MalformedMessage,
            "a ttl over one hour",
            hex=presence(encode_presence(PresenceStatus.ONLINE, 3_600_001, record)),
            now_ms=NOW_MS,
        ),
        refuse(
            "presence",
            MalformedMessage,
            "status 4",
            hex=presence(encode_canonical([4, 60_000, record])),
            now_ms=NOW_MS,
        ),
        refuse(
            "gossip",
            NotAuthorized,
            "bob's certificate on alice's envelope",
            hex=encode_gossip(c.certificate_bytes(c.bob, c.laptop), message.wire).hex(),
            now_ms=NOW_MS,
        ),
        refuse(
            "gossip",
            BadSignature,
            "the envelope's signature bit flipped",
            hex=encode_gossip(cert, message.wire[:-1] + bytes([message.wire[-1] ^ 1])).hex(),
            now_ms=NOW_MS,
        ),
    ]
    return write_vectors(
        "gossip",
        spec="SPEC.md §14.1, §14.2",
        function="tools/vectors/codecs.py ops presence, gossip: decode_presence, decode_gossip",
        valid=valid,
        invalid=invalid,
        directory=directory,
    )


def generate(directory: Path = VECTORS_DIR) -> list[Path]:
    """Write the three files."""
    c = Cast()
    return [_hello(c, directory), _home_record(c, directory), _gossip(c, directory)]
