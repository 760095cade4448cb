"""kad-dht for `P2PHost`: signed home records under one strictly validated namespace.

Part of the libp2p bridge (ARCHITECTURE §5, §9; tests/test_layering.py `BRIDGE_MODULES`).
`P2PHost` owns one `DhtLayer` when its config carries the record rules and forwards
`dht_put` / `dht_get` to it through the host's call path. libp2p objects live on the trio thread.

The DHT runs in server mode (it answers FIND_NODE / GET_VALUE / PUT_VALUE) with py-libp2p's
`NamespacedValidator` in strict mode holding exactly one namespace, `home`: a key outside it is
refused, and a value under it must pass the app's `validate` callable before any node stores,
returns or forwards it. Between several valid values the app's `select` callable picks the best
(for home records: the newest, see protocol/home_dht.py). The default `pk` and `ipns`
namespaces of py-libp2p are not installed (`validator_changed=True`).

py-libp2p 0.8.1 behaviour worth knowing (kad_dht/kad_dht.py): with fewer than 5 peers in the
routing table a walk starts from the connected peers and the peerstore; a put walks to the 20
peers closest to the key and stores there and locally (the count is only logged).

A get does not use py-libp2p's `get_value`: on a miss that asks every peer it hears of (each
answer names up to 20 more), two RPCs per peer of the mesh (FIND_NODE, then GET_VALUE), so a
lookup of a user known nowhere cost a 25-node mesh ~48 streams, and a group's 1,000 absent
members made DHT walks 72 % of a home's busy time (SPEC §13.5). A put leaves the record at
the peers closest to the key, so asking the few closest known, and any closer peers they name,
finds it: `NEAREST_ASKED` RPCs at a time, at most `GET_ROUNDS` rounds, whatever the mesh's size.

py-libp2p's WARNINGs for a request's normal end and for failed stores are sorted by `dht_log`.

Our answers name closer peers by id and addresses, without the signed peer record py-libp2p
adds to each (`_KadDHT`): some 210 bytes each, up to 20 an answer, so a node's kad bytes per
message grew with the mesh until it had 21 nodes (3.0 KB at 10 nodes, 5.5 at 25, SPEC §20.6),
and each asker verified every record (an Ed25519 check each, uncached). Kademlia's answers
carry no records in go-libp2p either; a dial to an address checks the peer's key anyway
(Noise), so a record only proves an address the dial proves.

Our GET_VALUE requests (`_get_value`) carry no record of our own either: py-libp2p put our
signed peer record (213 bytes of a 271-byte request) in each, which the server verified and
stored in its peerstore, where identify had stored the same record when the connection
opened; a request without one is answered alike (the field is optional). Nor do we verify the
one the server puts in its answer (an Ed25519 check and a rewrite of its addresses): identify
stored that record too when the connection opened. Our answers carry none either
(`_WithoutRecord`: py-libp2p sets it inside its handler, so it comes off on the way
out), and each goes out in one write, not its length and then itself. py-libp2p's own PUT_VALUE
and FIND_NODE requests (a put, the routing table's upkeep) go out the same way (`_KadDHT`
gives its requesters a host whose streams are `_WithoutRecord`): 586 bytes in two writes for a
put to one peer, was 1,019 in four. A record another peer's request carries is checked once
while unchanged and held, as gossip's are (`_consume_once`, node/p2p/peer_records.py), not on
every request.

An answer to our GET_VALUE that cannot be right is charged to the peer that sent it as a
whole frame (`refused`, SPEC §11.6.1) and taken as holding nothing, its closer peers
unlearnt: a length over `MAX_ANSWER_BYTES` (`TOO_LARGE`), bytes that are no kad message, or a
message of another type or with a closer peer's address that does not parse (`MALFORMED`).
A peer that does not answer within `ASK_TIMEOUT_S`, or whose stream ends or fails, is not
charged: a loaded or departing honest peer does the same. Nor is a record that fails our
checks: an honest server holds a record it checked when it took it, whose certificate may
have expired since (SPEC §13.5).

A peer's request to our server that cannot be right, and a record it pushes that no honest
pusher sends, are charged to it the same way (`kad_requests`, SPEC §13.4.1).
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Final, cast

import libp2p.kad_dht.kad_dht as _kad_module
import libp2p.kad_dht.peer_routing as _peer_routing_module
import libp2p.kad_dht.value_store as _value_store_module
import trio
from google.protobuf.message import DecodeError
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.kad_dht import DHTMode, KadDHT
from libp2p.kad_dht.common import PROTOCOL_ID
from libp2p.kad_dht.pb.kademlia_pb2 import Message, Record
from libp2p.kad_dht.routing_table import KBucket
from libp2p.kad_dht.utils import maybe_consume_signed_record, sort_peer_ids_by_distance
from libp2p.peer.id import ID
from libp2p.peer.peerstore import PeerStoreError
from libp2p.records.validator import Validator
from libp2p.tools.anyio_service import background_trio_service
from libp2p.utils.varint import (
    decode_uvarint,
    encode_varint_prefixed,
)
from multiaddr import Multiaddr  # type: ignore[import-untyped]
from multiaddr.exceptions import Error as MultiaddrError  # type: ignore[import-untyped]

from hearthmesh.node.p2p import dht_log, peer_records
from hearthmesh.node.p2p.errors import HostClosed, P2PError
from hearthmesh.node.p2p.gossipsub import BridgeCall
from hearthmesh.node.p2p.kad_requests import (
    JudgedRequests,
    JudgedValidator,
    KadRefused,
    serving,
)
from hearthmesh.node.p2p.periodic_jobs import KAD_REFRESH, PeriodicJobs
from hearthmesh.node.p2p.varint_messages import parse_message, read_message_bytes
from hearthmesh.protocol.errors import (
    LocalProtocolError,
    MalformedMessage,
    RemoteProtocolError,
)
from hearthmesh.protocol.home_dht import (
    HOME_DHT_NAMESPACE,
    select_home_record,
    validate_home_record,
)

__all__ = [
    "DHT_NAMESPACE",
    "KAD_PROTOCOL",
    "REFRESH_SPREAD_S",
    "DhtLayer",
    "DhtSelect",
    "DhtValidate",
    "RefreshSpread",
    "home_record_rules",
]

log = logging.getLogger(__name__)

KAD_PROTOCOL: Final = str(PROTOCOL_ID)
"""py-libp2p's kad protocol id, which our DHT serves (for a peer outside the bridge)."""

DHT_NAMESPACE: Final = HOME_DHT_NAMESPACE
"""The only key namespace the DHT accepts: keys are `/home/<...>`."""
_KEY_PREFIX: Final = f"/{DHT_NAMESPACE}/"

NEAREST_ASKED: Final = 3
"""Peers a get asks at once: the closest to the key it knows of. A put stores at the 20
closest, so one that missed a store (or went away) still leaves two to answer."""

GET_ROUNDS: Final = 4
"""Rounds of a get at most: each asks the nearest peers not asked yet, among them those the
last answers named; a mesh whose routing tables are nearly complete needs one."""

ASK_TIMEOUT_S: Final = 5.0
"""One peer's answer to a get: a peer that takes longer counts as holding nothing."""

MAX_ANSWER_BYTES: Final = 64 * 1024
"""A GET_VALUE answer we read at most: a home record (12 KiB) and 20 closer peers with their
addresses fit many times (py-libp2p reads up to 4 MiB from any peer)."""

CLOSER_TAKEN: Final = 20
"""Closer peers taken from one answer at most, the first named: kad's bucket size, the most an
honest server names (py-libp2p and go-libp2p alike). An answer naming more (up to some 1,500
fit in `MAX_ANSWER_BYTES`) filled the peerstore with addresses kept `CLOSER_ADDRS_TTL_S`."""

CLOSER_ADDRS_TTL_S: Final = 600
"""How long the addresses an answer gives for a closer peer are kept (py-libp2p's own)."""

ADDRS_WAIT_S: Final = 10.0
"""How long a newly connected peer may take to tell its addresses (identify's own bound)
before it is offered to the routing table anyway (without them it is not added)."""
ADDRS_POLL_S: Final = 0.2
"""How often the peerstore is looked at meanwhile."""

DhtValidate = Callable[[str, bytes], None]
"""`validate(key, value)`: returns if `value` may be stored under `key`, raises otherwise.
Runs on the trio thread for every put, every stored value and every value fetched: it must be
pure (close over a clock if it needs one), fast and thread-safe."""

DhtSelect = Callable[[str, list[bytes]], int]
"""`select(key, values)`: the index of the best of several validated values for `key`."""

DhtRefused = KadRefused
"""`refused(peer id, error)`: a peer's kad answer or request cannot be right (trio thread; a
whole frame, SPEC §11.6.1)."""


def home_record_rules(now_ms: Callable[[], int]) -> tuple[DhtValidate, DhtSelect]:
    """`(dht_validate, dht_select)` for `HostConfig`: home records checked at `now_ms()`.

    Args:
        now_ms: The node's clock (e.g. `Clock.now_ms`); called on the trio thread.
    """

    def validate(key: str, value: bytes) -> None:
        validate_home_record(key, value, now_ms=now_ms())

    return validate, select_home_record


def _has_addrs(host: IHost, peer: ID) -> bool:
    try:
        return bool(host.get_peerstore().addrs(peer))
    except PeerStoreError:  # not in the peerstore at all yet
        return False


def _consume_once(msg: Message | Message.Peer, host: IHost, peer_id: ID | None = None) -> bool:
    """py-libp2p's `maybe_consume_signed_record` for kad, skipping a sender's record already
    accepted from that peer and still held (`peer_records.consume_record_once`)."""
    if not isinstance(msg, Message) or peer_id is None or not msg.HasField("senderRecord"):
        return maybe_consume_signed_record(msg, host, peer_id)
    return peer_records.consume_record_once(
        bytes(msg.senderRecord),
        host,
        peer_id,
        lambda: maybe_consume_signed_record(msg, host, peer_id),
    )


def _install_consume_once() -> None:
    """Use `_consume_once` in py-libp2p's kad modules that check records (idempotent)."""
    for module in (_kad_module, _peer_routing_module, _value_store_module):
        module.maybe_consume_signed_record = _consume_once  # type: ignore[attr-defined]


_ping_peer = KBucket._ping_peer


async def _ping_if_connected(bucket: KBucket, peer_id: ID) -> bool:
    """py-libp2p's liveness ping of a full bucket's oldest peer (before a new peer may take its
    place), unless we hold no connection to it: then it is kept, as one alive, and not dialled.
    Each new connection offers its peer to the table (`add_peer`); at 50 nodes a bucket holds
    more than 20 of them, so each offer pinged the bucket's oldest, which the connection manager
    had mostly closed as idle (SPEC §10.17): a dial, and at its far end a new connection whose
    offer pinged and dialled again, a chain of dials across the mesh (b1, SPEC §20.6)."""
    if not bucket.host.get_network().get_connections(peer_id):
        return True
    return await _ping_peer(bucket, peer_id)


def _install_ping_if_connected() -> None:
    """Use `_ping_if_connected` in every bucket (idempotent)."""
    KBucket._ping_peer = _ping_if_connected  # type: ignore[method-assign,assignment]


class _AppValidator(Validator):
    """Adapts the app's two callables to py-libp2p's `Validator` (trio thread)."""

    def __init__(self, validate: DhtValidate, select: DhtSelect) -> None:
        self._validate = validate
        self._select = select

    def validate(self, key: str, value: bytes) -> None:
        self._validate(key, value)

    def select(self, key: str, values: list[bytes]) -> int:
        if len(values) > 1 and values.count(values[0]) == len(values):
            # py-libp2p's server asks `select([held, offered])` and answers a PUT_VALUE only if
            # the offered one wins; a put of the very record it holds (our record goes out
            # again after each dial of ours, SPEC §13.4) lost to it, so the server reset the
            # stream unanswered and the putter logged a failed store: 90 of them in a 10-node
            # scale run. The same bytes either way: the offered one (the last) wins.
            return len(values) - 1
        index = self._select(key, values)
        if not 0 <= index < len(values):
            raise LocalProtocolError(f"DHT select returned {index} for {len(values)} values")
        return index


REFRESH_SPREAD_S: Final = 120.0
"""Before each routing-table refresh but the first, a wait of up to this long (`RefreshSpread`)."""


class RefreshSpread:
    """When a node's routing-table refreshes run (SPEC §20.6): the first at once, each later
    one after a wait drawn anew, up to `REFRESH_SPREAD_S`.

    py-libp2p refreshes at the start and then 600 s after each refresh ended, so nodes that
    started together refresh together: a 50-node scale run's nodes started within 7 s, so
    their refreshes (0.19 CPU s each, ~9.7 on a 2-core machine) fell in the same seconds,
    just before its workload's last two 10 s windows, whose p50 to the last member rose to
    2.8 and 3.0 s from at most 0.93 (not shown to be the cause; with the spread, the next
    such run's refreshes ran over 86 s of its workload and no window passed 0.55 s). Each
    wait shifts the node's phase again, so the refreshes of nodes that restarted together (an
    upgrade, a power cut) spread apart and stay apart; the interval becomes 600-720 s
    (go-libp2p's is 10 minutes too)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._runs = 0

    def next_wait(self) -> float:
        """Seconds to wait before the next refresh (0 for the first: the table fills at start)."""
        self._runs += 1
        return 0.0 if self._runs == 1 else self._rng.uniform(0.0, REFRESH_SPREAD_S)


class _KadDHT(KadDHT):
    """py-libp2p's DHT, whose answers and requests carry no signed records: neither ours nor
    those of the closer peers its answers name."""

    def __init__(
        self,
        host: IHost,
        *args: object,
        jobs: PeriodicJobs,
        refused: DhtRefused,
        **kwargs: object,
    ) -> None:
        super().__init__(host, *args, **kwargs)  # type: ignore[arg-type]
        self._jobs = jobs
        self._refused = refused
        self._spread = RefreshSpread()
        # Its PUT_VALUE and FIND_NODE requests go out on streams these open.
        requester = cast(IHost, _RequestsWithoutRecord(host))
        self.value_store.host = requester
        self.peer_routing.host = requester

    async def _do_handle_stream(self, stream: INetStream) -> None:
        # A peer's requests judged and charged (node/p2p/kad_requests.py, SPEC §13.4.1).
        peer = stream.muxed_conn.peer_id.to_base58()
        judged = cast(INetStream, JudgedRequests(stream, peer, self._refused))
        with serving(peer):
            await super()._do_handle_stream(cast(INetStream, _WithoutRecord(judged)))

    async def refresh_routing_table(self) -> None:
        """py-libp2p's, as a run of the periodic job `KAD_REFRESH`, after `RefreshSpread`'s
        wait (SPEC §20.6)."""
        wait = self._spread.next_wait()
        if wait > 0:
            await trio.sleep(wait)
        started = trio.current_time()
        with self._jobs.running(KAD_REFRESH):
            await super().refresh_routing_table()
        # when each node's refreshes ran, to tell them apart from the load of a run's windows
        log.info(
            "routing-table refresh took %.1f s, after %.0f s of spread",
            trio.current_time() - started,
            wait,
        )

    def _add_closer_peers_to_response(
        self, response: Message, closest_peers: Sequence[ID], exclude_peer_id: ID | None = None
    ) -> None:
        super()._add_closer_peers_to_response(response, closest_peers, exclude_peer_id)
        for peer in response.closerPeers:
            peer.ClearField("signedRecord")


class _RequestsWithoutRecord:
    """The host as py-libp2p's kad requesters use it: the streams it opens are `_WithoutRecord`."""

    def __init__(self, host: IHost) -> None:
        self._host = host

    def __getattr__(self, name: str) -> object:
        return getattr(self._host, name)

    async def new_stream(self, peer: ID, protocols: Sequence[TProtocol]) -> INetStream:
        stream = await self._host.new_stream(peer, protocols)
        return cast(INetStream, _WithoutRecord(stream))


class _WithoutRecord:
    """A kad stream as py-libp2p writes to it: each message's length, then the message, with
    our signed peer record set. The pair goes out as one write, the message without the
    record; a write that is not such a pair goes out as it came."""

    def __init__(self, stream: INetStream) -> None:
        self._stream = stream
        self._length: bytes | None = None
        """A message's length prefix, held until the message comes."""

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)

    async def write(self, data: bytes) -> None:
        if self._length is None and 0 < len(data) <= _MAX_VARINT_BYTES and data[-1] < 0x80:
            self._length = data
            return
        length, self._length = self._length or b"", None
        if length and decode_uvarint(length) == len(data):
            await self._stream.write(encode_varint_prefixed(_without_record(data)))
            return
        await self._stream.write(length + data)


_MAX_VARINT_BYTES: Final = 10


def _without_record(answer: bytes) -> bytes:
    """A kad message without its sender's signed record (as it came if it does not parse)."""
    message = Message()
    try:
        message.ParseFromString(answer)
    except DecodeError:
        return answer
    if not message.HasField("senderRecord"):
        return answer
    message.ClearField("senderRecord")
    return message.SerializeToString()


class DhtLayer:
    """The kad-dht half of one `P2PHost` (see the module docstring)."""

    def __init__(
        self,
        *,
        call: BridgeCall,
        validate: DhtValidate,
        select: DhtSelect,
        refused: DhtRefused,
        jobs: PeriodicJobs,
    ) -> None:
        self._call = call
        self._refused = refused
        self._jobs = jobs
        self._app_validator = _AppValidator(validate, select)
        # Owned by the trio thread:
        self._dht: KadDHT | None = None
        self.asked = 0
        """Peers asked by gets so far (status and tests; written on the trio thread)."""

    # ---- lifetime (trio thread) ---------------------------------------------------------------

    def build(self, host: IHost) -> None:
        """Create the DHT on `host` before it listens; this registers the kad protocol."""
        dht_log.install()
        _install_consume_once()
        _install_ping_if_connected()
        validator = JudgedValidator({DHT_NAMESPACE: self._app_validator}, self._refused)
        self._dht = _KadDHT(
            host,
            DHTMode.SERVER,
            jobs=self._jobs,
            refused=self._refused,
            validator=validator,
            validator_changed=True,  # else py-libp2p adds its `pk` and `ipns` namespaces
            strict_validation=True,  # else keys outside every namespace are accepted
        )

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the DHT's maintenance service while the block runs (trio thread)."""
        dht = self._require_dht()
        async with background_trio_service(dht):
            yield

    def release(self) -> None:
        """Forget the DHT (trio thread, after the host closed)."""
        self._dht = None

    async def add_peer(self, peer: ID) -> None:
        """Offer a connected peer to the routing table (trio thread; it must speak kad), once
        its addresses are known.

        py-libp2p adds no peer whose addresses the peerstore lacks, and a peer that dialled us
        has none there until identify tells them: offered at once, it was skipped for good
        (unless it opened a kad stream to us). So each host's table held only the peers it
        had dialled; a walk through a peer named none of those that dialled it, and on a
        loaded machine (identify slower than this call) a put along a chain of 6 hosts
        stored at 2 of them and a get from the far end missed it (`bench p2p`, load 40-50).
        """
        dht = self._dht
        if dht is None:
            return
        with trio.move_on_after(ADDRS_WAIT_S):
            while not _has_addrs(dht.host, peer):  # noqa: ASYNC110 (identify signals no end)
                await trio.sleep(ADDRS_POLL_S)
        try:
            await dht.add_peer(peer)
        except Exception as exc:  # a peer that went away meanwhile: nothing to add
            log.debug("adding %s to the DHT routing table failed: %r", peer, exc)

    def buckets(self) -> list[list[str]]:
        """The routing table's peers, bucket by bucket (trio thread; none before `build`)."""
        if self._dht is None:
            return []
        return [[p.to_base58() for p in b.peer_ids()] for b in self._dht.routing_table.buckets]

    def _require_dht(self) -> KadDHT:
        if self._dht is None:
            raise HostClosed("libp2p host is not running")
        return self._dht

    # ---- values -------------------------------------------------------------------------------

    async def put(self, key: str, value: bytes) -> None:
        """See `P2PHost.dht_put`."""
        await self._call(P2PError, f"DHT put {key[:80]}", self._put_on_trio, key, value)

    async def _put_on_trio(self, key: str, value: bytes) -> None:
        dht = self._require_dht()
        validator = dht.validator
        assert validator is not None
        try:
            validator.validate(key, value)
        except Exception as exc:
            raise LocalProtocolError(f"DHT put {key[:80]!r}: value rejected: {exc}") from exc
        held = dht.value_store.get(key.encode())
        if held is not None and held.value != value and validator.select(key, [value, held.value]):
            raise LocalProtocolError(f"DHT put {key[:80]!r}: a newer value is already held")
        await dht.put_value(key, value)

    async def get(self, key: str) -> bytes | None:
        """See `P2PHost.dht_get`."""
        return await self._call(P2PError, f"DHT get {key[:80]}", self._get_on_trio, key)

    async def _get_on_trio(self, key: str) -> bytes | None:
        if not key.startswith(_KEY_PREFIX):
            raise LocalProtocolError(
                f"DHT get {key[:80]!r}: outside the {DHT_NAMESPACE!r} namespace"
            )
        dht = self._require_dht()
        key_bytes = key.encode()
        held = dht.value_store.get(key_bytes)
        if held is not None:
            return held.value
        known = set(dht.routing_table.find_local_closest_peers(key_bytes))
        known.update(dht.host.get_connected_peers())  # a routing table still filling up
        known.discard(dht.local_peer_id)
        asked: set[ID] = set()
        found: list[bytes] = []
        for _ in range(GET_ROUNDS):
            nearest = sort_peer_ids_by_distance(key_bytes, list(known))[:NEAREST_ASKED]
            ask = [peer for peer in nearest if peer not in asked]
            if not ask:
                break  # the nearest known have all answered: nobody nearer holds it
            asked.update(ask)
            async with trio.open_nursery() as nursery:
                for peer in ask:
                    nursery.start_soon(self._ask, dht, peer, key, known, found)
            if found:
                break
        if not found:
            return None
        return found[self._app_validator.select(key, found)]

    async def _ask(
        self, dht: KadDHT, peer: ID, key: str, known: set[ID], found: list[bytes]
    ) -> None:
        """One GET_VALUE: a valid value goes to `found`, the closer peers named to `known`."""
        self.asked += 1
        with trio.move_on_after(ASK_TIMEOUT_S):
            try:
                record, closer = await _get_value(dht.host, peer, key.encode())
            except RemoteProtocolError as exc:  # an answer that cannot be right: charged
                log.debug("DHT get %s from %s refused: %r", key[:80], peer, exc)
                self._refused(peer.to_base58(), exc)
                return
            except Exception as exc:  # the peer failed or went away: as if it held nothing
                log.debug("DHT get %s from %s failed: %r", key[:80], peer, exc)
                return
            known.update(p for p in closer if p != dht.local_peer_id)
            if record is None:
                return
            try:
                self._app_validator.validate(key, record.value)
            except Exception as exc:  # a peer's bad value: as if it held none
                log.debug("DHT value for %s from %s refused: %r", key[:80], peer, exc)
                return
            found.append(record.value)


async def _get_value(host: IHost, peer: ID, key: bytes) -> tuple[Record | None, list[ID]]:
    """One GET_VALUE RPC to `peer` (trio thread): (its record for `key` if it holds one, the
    closer peers it names, their addresses kept). py-libp2p's own (`_get_from_peer`) sends
    our signed peer record with the request and verifies the one in the answer; see the
    module docstring for why this one does neither.

    Raises:
        RemoteProtocolError: the answer cannot be right (see the module docstring); nothing
            of it was kept.
    """
    answer = await _rpc(host, peer, Message(type=Message.MessageType.GET_VALUE, key=key))
    if answer.type != Message.MessageType.GET_VALUE:
        raise MalformedMessage(f"a kad answer of type {answer.type} to a GET_VALUE")
    named_addrs = [(ID(named.id), _addrs(named)) for named in answer.closerPeers[:CLOSER_TAKEN]]
    closer = []
    for closer_id, addrs in named_addrs:
        if closer_id != host.get_id():
            closer.append(closer_id)
            if addrs:
                host.get_peerstore().add_addrs(closer_id, addrs, CLOSER_ADDRS_TTL_S)
    found = answer.HasField("record") and bool(answer.record.value)
    return (answer.record if found else None), closer


def _addrs(named: Message.Peer) -> list[Multiaddr]:
    """A closer peer's addresses, each parsed: `Multiaddr(bytes)` parses lazily, so bytes that
    are no address went into the peerstore and failed whatever read them there."""
    addrs = [Multiaddr(addr) for addr in named.addrs]
    try:
        for addr in addrs:
            str(addr)
    except MultiaddrError as exc:
        raise MalformedMessage(f"a closer peer's address does not parse: {exc}") from None
    return addrs


async def _rpc(host: IHost, peer: ID, request: Message) -> Message:
    """`request` to `peer` on a kad stream of its own, in one write (its length and itself),
    and the answer (trio thread; at most `MAX_ANSWER_BYTES`).

    Raises:
        TooLarge: the answer's length is over `MAX_ANSWER_BYTES`.
        MalformedMessage: its length or its bytes do not parse.
    """
    stream = await host.new_stream(peer, [PROTOCOL_ID])
    try:
        await stream.write(encode_varint_prefixed(request.SerializeToString()))
        data = await read_message_bytes(stream, MAX_ANSWER_BYTES, "a kad answer")
        return parse_message(data, Message(), "a kad answer")
    finally:
        await stream.close()
