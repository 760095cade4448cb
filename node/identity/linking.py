"""Linking devices (SPEC §22): the primary's side (`LinkService`) and the new device's side.

The primary keeps its one-time codes in memory (a restart voids them, which is safe) and, on a
request with a valid proof, certifies the new device, adds its node to the user's home record
and answers with both. The new device runs `link_new_device` once, before its first start.
State owned here: the primary's pending one-time codes (memory only); the home record is
`OwnHomes`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from hearthmesh.node.identity.keyring import prepare_link_keys, store_link
from hearthmesh.node.mesh.standing import PeerStanding
from hearthmesh.node.p2p.errors import StreamClosed
from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.node.p2p.host import HostConfig, P2PHost
from hearthmesh.protocol.delivery import ProtocolErrorFrame, decode_frame, encode_error
from hearthmesh.protocol.e2ee.keys import KeyBundle
from hearthmesh.protocol.errors import (
    BadCertificate,
    NotAuthorized,
    RemoteProtocolError,
    refusal,
)
from hearthmesh.protocol.home_record import decode_home_record, verify_home_record
from hearthmesh.protocol.identity import (
    DeviceCertificate,
    DeviceId,
    Rng,
    decode_certificate,
    verify_certificate,
)
from hearthmesh.protocol.linking import (
    LINK_PROTOCOL,
    LinkAnswer,
    LinkCode,
    LinkRequest,
    Readdress,
    check_link_proof,
    decode_link_answer,
    decode_link_code,
    decode_link_message,
    encode_link_answer,
    encode_link_request,
    encode_readdress,
    link_proof,
    new_link_code,
)
from hearthmesh.protocol.peer_id import peer_id_of_node_key
from hearthmesh.storage.lmdb_store import LmdbStore

__all__ = [
    "AddHome",
    "LinkService",
    "LinkedDevice",
    "ReaddressHome",
    "link_new_device",
    "send_readdress",
]

log = logging.getLogger(__name__)

AddHome = Callable[[str, tuple[str, ...], DeviceId], Awaitable[tuple[bytes, bytes]]]
"""(peer id, addresses, device) -> (certificate, new home record): the primary's node does it."""

ReaddressHome = Callable[[str, tuple[str, ...], KeyBundle | None], Awaitable[bytes]]
"""(linked home's peer id, its addresses) -> the home record re-issued with them (SPEC §10.10);
raises NotAuthorized if the peer is not a linked home of the user."""


class LinkService:
    """The primary's pending pairing codes and the `/hearthmesh/link/0` handler."""

    def __init__(
        self,
        *,
        add_home: AddHome,
        readdress_home: ReaddressHome,
        now_ms: Callable[[], int],
        rng: Rng,
        standing: PeerStanding,
    ) -> None:
        self._add_home = add_home
        self._readdress_home = readdress_home
        self._now_ms = now_ms
        self._rng = rng
        self._standing = standing
        self._pending: list[LinkCode] = []

    def offer(self, *, address: str, ttl_ms: int) -> LinkCode:
        """A new one-time code; expired ones are forgotten."""
        now = self._now_ms()
        self._pending = [c for c in self._pending if c.expires_ms > now]
        code = new_link_code(self._rng, address=address, now_ms=now, ttl_ms=ttl_ms)
        self._pending.append(code)
        return code

    def _redeem(self, request: LinkRequest) -> LinkCode:
        now = self._now_ms()
        for code in self._pending:
            if code.expires_ms <= now:
                continue
            try:
                check_link_proof(code.secret, request)
            except NotAuthorized:
                continue
            self._pending.remove(code)  # single use
            return code
        raise NotAuthorized("no valid pairing code matches (wrong, used or expired)")

    async def serve(self, stream: FrameStream) -> None:
        """One link request or readdress (SPEC §10.10), one answer (or an ERROR frame)."""
        try:
            message = decode_link_message(await stream.read_frame(), sender=stream.remote_peer)
            if isinstance(message, Readdress):
                record = await self._readdress_home(
                    stream.remote_peer, message.addrs, message.bundle
                )
                await stream.write_frame(record)
                return
            self._redeem(message)
            if peer_id_of_node_key(message.node_key) != stream.remote_peer:
                raise NotAuthorized("the request names another node than the one asking")
        except StreamClosed:
            return
        except RemoteProtocolError as exc:  # a guessed code costs as much as garbage
            self._standing.refused(stream.remote_peer, exc, protocol=LINK_PROTOCOL)
            log.info("link request from %s refused: %s", stream.remote_peer[-8:], exc)
            await stream.write_frame(encode_error(exc))
            return
        certificate, record = await self._add_home(
            stream.remote_peer, message.addrs, DeviceId(message.device)
        )
        log.info("linked a new device on node %s", stream.remote_peer[-8:])
        await stream.write_frame(
            encode_link_answer(LinkAnswer(certificate=certificate, home_record=record))
        )


async def send_readdress(
    host: P2PHost, primary: str, addrs: tuple[str, ...], bundle: KeyBundle
) -> bytes:
    """A linked home gives the primary its addresses (SPEC §10.10) and its device's key bundle
    (SPEC §27.1); returns the re-issued home record (unverified: the caller learns it like any
    other). Raises the refusal, or a P2PError if the primary is not reachable."""
    async with await host.open_stream(primary, LINK_PROTOCOL) as stream:
        await stream.write_frame(encode_readdress(Readdress(addrs=addrs, bundle=bundle)))
        reply = await stream.read_frame()
    refusal = _refusal(reply)
    if refusal is not None:
        raise refusal
    return reply


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkedDevice:
    """What `link_new_device` did."""

    user: bytes
    device: bytes
    peer_id: str
    certificate: DeviceCertificate


async def link_new_device(
    data_dir: Path,
    code_text: str,
    *,
    now_ms: Callable[[], int],
    rng: Rng,
    listen_addrs: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",),
) -> LinkedDevice:
    """Link a fresh data directory to the user whose primary showed `code_text`.

    `listen_addrs` should be where the node will listen when it runs: they go into the user's
    home record as this home's addresses.

    Raises:
        InvalidIdentifier: the code is damaged.
        NotAuthorized / BadCertificate / MalformedMessage: the primary refused, or answered
            with something that does not certify this device for that user.
        StorageError: the directory already holds a user.
        P2PError: the primary could not be reached.
    """
    code = decode_link_code(code_text)
    store = LmdbStore(data_dir / "store")
    try:
        node, device = prepare_link_keys(store, rng)
        config = HostConfig(identity_seed=node.seed, listen_addrs=list(listen_addrs))
        async with P2PHost(config) as host:
            primary = await host.connect(code.address)
            proof = link_proof(code.secret, device=device.public, node_key=node.public)
            request = LinkRequest(
                device=device.public,
                node_key=node.public,
                addrs=tuple(host.listen_addrs),
                proof=proof,
            )
            async with await host.open_stream(primary, LINK_PROTOCOL) as stream:
                await stream.write_frame(encode_link_request(request))
                reply = await stream.read_frame()
        refusal = _refusal(reply)
        if refusal is not None:
            raise refusal
        answer = decode_link_answer(reply)
        certificate = decode_certificate(answer.certificate)
        verify_certificate(certificate, now_ms=now_ms())
        record = decode_home_record(answer.home_record)
        verify_home_record(record, now_ms=now_ms())
        if certificate.device != device.public or certificate.user != record.user:
            raise BadCertificate("the primary certified another device or user")
        store_link(
            store, user=record.user, certificate=answer.certificate, home_record=answer.home_record
        )
        return LinkedDevice(
            user=record.user, device=device.public, peer_id=host.peer_id, certificate=certificate
        )
    finally:
        store.close()


def _refusal(reply: bytes) -> RemoteProtocolError | None:
    """The error an ERROR frame stands for, or None if `reply` is not one."""
    try:
        frame = decode_frame(reply)
    except RemoteProtocolError:
        return None
    if isinstance(frame, ProtocolErrorFrame):
        return refusal(frame.code, f"the primary refused: {frame.message}")
    return None
