"""SAS verification between this device and another home's device (SPEC §29): the pump of
`protocol.verification.SasVerification` over `/hearthmesh/verify/0`, and trust.

Owns the flows in progress (at most MAX_FLOWS, one per peer, in memory: a restart ends them,
which is safe) and writes what a finished flow settled to the store's trust table; each move of
a flow is told to the app (`VerificationChanged`, the clients' `verification` event). A flow is
bound to the libp2p stream it runs on: the keys a side names in START or ACCEPT MUST be the
device that the named user's newest home record places on that peer (SPEC §29.4), so the
string the users compare vouches for the device key behind that node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import vodozemac

from hearthmesh.node.clock import Clock
from hearthmesh.node.delivery.peer_link import PeerLinks
from hearthmesh.node.events import DeviceVerified, NodeEvent, VerificationChanged
from hearthmesh.node.identity.home_directory import HomeDirectory
from hearthmesh.node.identity.keyring import Keyring
from hearthmesh.node.identity.own_homes import OwnHomes
from hearthmesh.node.mesh.standing import PeerStanding
from hearthmesh.node.p2p.errors import P2PError, StreamClosed
from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.node.p2p.host import P2PHost
from hearthmesh.protocol.errors import (
    Busy,
    ErrorCode,
    NotAuthorized,
    NotFound,
    RemoteProtocolError,
    VerificationCancelled,
)
from hearthmesh.protocol.home_record import HomeRecord, decode_home_record
from hearthmesh.protocol.identity import DeviceId, UserId
from hearthmesh.protocol.verification import (
    FLOW_ID_BYTES,
    VERIFY_PROTOCOL,
    SasVerification,
    VerifyState,
)
from hearthmesh.storage.api import Trust
from hearthmesh.storage.async_store import AsyncStore

__all__ = ["MAX_FLOWS", "VerificationService", "VerifyFlow", "device_at"]

log = logging.getLogger(__name__)

MAX_FLOWS: Final = 16
"""Flows held at once, finished ones included (the oldest finished goes first)."""
FLOW_TIMEOUT_S: Final = 600.0
"""A flow not finished by then is cancelled: the users walked away."""


def device_at(record: HomeRecord, peer: str) -> DeviceId | None:
    """The device a home record places on `peer` (devices and homes pair up by position)."""
    for certificate, home in zip(record.devices, record.homes, strict=False):
        if home == peer:
            return certificate.device
    return None


@dataclass(slots=True)
class VerifyFlow:
    """One flow: its machine and the stream it runs on."""

    machine: SasVerification
    peer: str
    stream: FrameStream | None = None
    task: asyncio.Task[None] | None = None


class VerificationService:
    """Runs verification flows (`run` owns their tasks until cancelled)."""

    def __init__(
        self,
        *,
        host: P2PHost,
        links: PeerLinks,
        store: AsyncStore,
        keyring: Keyring,
        homes: OwnHomes,
        directory: HomeDirectory,
        standing: PeerStanding,
        clock: Clock,
        emit: Callable[[NodeEvent], None],
    ) -> None:
        self._host = host
        self._links = links
        self._store = store
        self._keyring = keyring
        self._homes = homes
        self._directory = directory
        self._standing = standing
        self._clock = clock
        self._emit = emit
        self._flows: OrderedDict[bytes, VerifyFlow] = OrderedDict()
        self._group: asyncio.TaskGroup | None = None

    async def run(self) -> None:
        """Own the initiators' flow tasks until cancelled."""
        async with asyncio.TaskGroup() as group:
            self._group = group
            await asyncio.Event().wait()

    # --- the API's side ------------------------------------------------------------------

    def flows(self) -> list[VerifyFlow]:
        """The flows held here, oldest first (finished ones until MAX_FLOWS push them out)."""
        return list(self._flows.values())

    def flow(self, flow_id: bytes) -> VerifyFlow:
        """A flow held here. Raises NotFound."""
        try:
            return self._flows[flow_id]
        except KeyError:
            raise NotFound("no such verification here") from None

    async def start(self, user: UserId, peer: str | None = None) -> VerifyFlow:
        """Begin verifying `user`'s device on `peer` (default: their first home that is not us).

        Raises:
            NotFound: no home of `user` is known (or the peer is not one).
            Busy: MAX_FLOWS unfinished flows are running.
            P2PError, TimeoutError: the peer could not be reached.
        """
        record = self._record_of(user)
        homes = [h for h in (record.homes if record else ()) if h != self._host.peer_id]
        if peer is None and homes:
            peer = homes[0]
        if record is None or peer not in homes:
            raise NotFound("no home of that user to verify")
        if self._group is None:
            raise Busy("the node is not running")
        machine = SasVerification(
            sas=vodozemac.Sas(),
            flow=secrets.token_bytes(FLOW_ID_BYTES),
            user=self._keyring.user_id,
            device=self._keyring.device_id,
            initiator=True,
        )
        flow = self._hold(VerifyFlow(machine=machine, peer=peer))
        try:
            await self._links.reach(peer, self._directory.addresses(user))
            flow.stream = await self._host.open_stream(peer, VERIFY_PROTOCOL)
        except BaseException:  # unreachable or cancelled: the flow ends, the peer's slot frees
            machine.cancel(ErrorCode.VERIFICATION_CANCELLED, "the peer was not reached")
            machine.data_to_send()
            self._changed(flow)
            raise
        flow.task = self._group.create_task(self._pump(flow))
        self._changed(flow)
        return flow

    async def confirm(self, flow_id: bytes) -> VerifyFlow:
        """Our user saw the same string on both devices. Raises NotFound, LocalProtocolError."""
        flow = self.flow(flow_id)
        flow.machine.confirm()
        await self._flush(flow)
        await self._settle(flow)
        self._changed(flow)
        return flow

    async def cancel(self, flow_id: bytes) -> VerifyFlow:
        """Our user says the strings differ, or gave up. Raises NotFound."""
        flow = self.flow(flow_id)
        flow.machine.cancel(ErrorCode.VERIFICATION_CANCELLED, "cancelled by the user")
        with contextlib.suppress(StreamClosed, P2PError):
            await self._flush(flow)
        self._changed(flow)
        return flow

    async def trust_of(self, user: UserId) -> tuple[dict[DeviceId, Trust], tuple[DeviceId, ...]]:
        """`user`'s trusted device keys, and the device keys their newest record lists."""
        trusted = await self._store.read(self._store.store.trusted_devices, user)
        return trusted, self._listed(user)

    async def trusted_users(
        self,
    ) -> list[tuple[UserId, dict[DeviceId, Trust], tuple[DeviceId, ...]]]:
        """`trust_of` for every user with a trusted device key, in one read of the store."""
        trusted = await self._store.read(self._store.store.trusted_users)
        return [(user, devices, self._listed(user)) for user, devices in trusted.items()]

    # --- the responder's side ------------------------------------------------------------

    async def serve(self, stream: FrameStream) -> None:
        """A peer starts a flow: hold it, then pump it until it ends (the stream's lifetime)."""
        peer = stream.remote_peer
        flow: VerifyFlow | None = None
        try:
            machine = SasVerification.respond_to(
                await stream.read_frame(),
                sas=vodozemac.Sas(),
                user=self._keyring.user_id,
                device=self._keyring.device_id,
            )
            flow = VerifyFlow(machine=machine, peer=peer, stream=stream)
            self._check_peer(flow)  # before holding it: a stranger's START takes no slot
            self._hold(flow)
            self._changed(flow)  # the request our user's clients show
        except StreamClosed:
            return
        except Busy:  # no one peer's fault: nothing charged
            return
        except RemoteProtocolError as exc:
            self._refused(peer, exc, "verification from %s refused: %s")
            if flow is not None:
                with contextlib.suppress(StreamClosed, P2PError):
                    await self._flush(flow)
            return
        await self._pump(flow)

    # --- the pump ------------------------------------------------------------------------

    async def _pump(self, flow: VerifyFlow) -> None:
        assert flow.stream is not None
        machine = flow.machine
        try:
            async with asyncio.timeout(FLOW_TIMEOUT_S):
                await self._flush(flow)
                while machine.state not in (VerifyState.DONE, VerifyState.CANCELLED):
                    frame = await flow.stream.read_frame()
                    try:
                        machine.receive(frame)
                        self._check_peer(flow)
                    except VerificationCancelled:
                        log.info("verification with %s cancelled by the peer", flow.peer[-8:])
                    except RemoteProtocolError as exc:
                        self._refused(flow.peer, exc, "verification with %s failed: %s")
                    await self._flush(flow)
                    await self._settle(flow)
                    self._changed(flow)
        except TimeoutError:
            machine.cancel(ErrorCode.VERIFICATION_CANCELLED, "timed out")
            with contextlib.suppress(StreamClosed, P2PError):
                await self._flush(flow)
        except RemoteProtocolError as exc:  # no frame at all (over the limit): charged here,
            # on a flow our user started too, whose task has no stream handler to charge it
            # (it ended every flow's task group, and the flow held the peer's slot for good)
            self._refused(flow.peer, exc, "verification with %s failed: %s")
            machine.cancel(exc.code, str(exc))
            with contextlib.suppress(StreamClosed, P2PError):
                await self._flush(flow)
        except (StreamClosed, P2PError) as exc:
            machine.cancel(ErrorCode.VERIFICATION_CANCELLED, f"stream ended: {exc}")
            machine.data_to_send()  # nowhere to send it
        finally:
            with contextlib.suppress(StreamClosed, P2PError):
                await flow.stream.close()
            self._changed(flow)  # ended: by its last frame, a timeout or the stream

    def _refused(self, peer: str, exc: RemoteProtocolError, logged_as: str) -> None:
        """Charge `peer` for a frame on a verification flow (SPEC §29.4.1) and log it."""
        self._standing.refused(peer, exc, protocol=VERIFY_PROTOCOL)
        log.info(logged_as, peer[-8:], exc)

    def _check_peer(self, flow: VerifyFlow) -> None:
        """The keys the peer named are the device its user's record places on this peer."""
        machine = flow.machine
        if machine.peer_user is None or machine.peer_device is None:
            return
        record = self._record_of(UserId(machine.peer_user))
        if record is None or device_at(record, flow.peer) != machine.peer_device:
            error = NotAuthorized("the peer named a device its user's record does not put there")
            machine.data_to_send()  # our ACCEPT or KEY never goes to an impostor
            machine.cancel(error.code, str(error))
            raise error

    async def _flush(self, flow: VerifyFlow) -> None:
        frames = flow.machine.data_to_send()
        if frames and flow.stream is not None:
            await flow.stream.write_frames(frames)

    async def _settle(self, flow: VerifyFlow) -> None:
        machine = flow.machine
        if not machine.verified or machine.peer_user is None or machine.peer_device is None:
            return
        user, device = UserId(machine.peer_user), DeviceId(machine.peer_device)
        trusted = await self._store.read(self._store.store.trusted_devices, user)
        if trusted.get(device) is Trust.VERIFIED:
            return
        await self._store.run(
            self._store.store.set_trust, user, device, Trust.VERIFIED, now_ms=self._clock.now_ms()
        )
        log.info("verified the device %s of %s", bytes(device).hex()[:12], bytes(user).hex()[:12])
        self._emit(DeviceVerified(user=user, device=device))

    # --- bookkeeping ---------------------------------------------------------------------

    def _changed(self, flow: VerifyFlow) -> None:
        self._emit(VerificationChanged(flow=flow.machine.flow))

    def _hold(self, flow: VerifyFlow) -> VerifyFlow:
        """Keep `flow`; one running flow per peer, MAX_FLOWS in all. Raises Busy."""
        running = [f for f in self._flows.values() if not _ended(f)]
        if any(f.peer == flow.peer for f in running) or len(running) >= MAX_FLOWS:
            raise Busy("a verification with that peer, or too many, is running")
        while len(self._flows) >= MAX_FLOWS:
            oldest = next(k for k, f in self._flows.items() if _ended(f))
            del self._flows[oldest]
        self._flows[flow.machine.flow] = flow
        return flow

    def _listed(self, user: UserId) -> tuple[DeviceId, ...]:
        """The device keys `user`'s newest record lists."""
        record = self._record_of(user)
        return tuple(c.device for c in record.devices) if record else ()

    def _record_of(self, user: UserId) -> HomeRecord | None:
        if user == self._keyring.user_id:
            return decode_home_record(self._homes.signed_record())
        return self._directory.record(user)


def _ended(flow: VerifyFlow) -> bool:
    return flow.machine.state in (VerifyState.DONE, VerifyState.CANCELLED)
