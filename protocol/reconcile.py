"""Range-based set reconciliation of room histories (SPEC §21), in the spirit of Negentropy.

Two replicas each hold a set of items `(hlc, message id)`, ordered by their 44-byte key
`encode_timestamp(hlc) || id`. They exchange messages that cover the key space with ranges;
each range carries a fingerprint (sum of ids mod 2^256 and count, hashed), a list of ids, or
the outcome of comparing such a list. Equal fingerprints settle a range at once; a differing
range is split into `branching` sub-ranges, down to id lists for small ones. Both sides end
knowing exactly which ids they hold that the peer lacks (`have`) and which they lack (`need`);
moving the events themselves is outside this protocol.

Sans-I/O: the caller moves the bytes. `Reconciler.initiate()` gives the first message;
`Reconciler.reconcile(message)` consumes one and returns a `Step`. Items come through the narrow
`ItemSource` protocol, so storage can serve them from running sums without loading a history.

State: a `Reconciler` owns one round's progress and the ids found had and needed; one per
exchange, driven by its caller.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Final, Protocol

from .canonical import CborValue, decode_canonical, encode_canonical
from .envelope import MessageId
from .errors import (
    LocalProtocolError,
    MalformedMessage,
    RemoteProtocolError,
    UnsupportedVersion,
)
from .hlc import TIMESTAMP_BYTES, Timestamp, encode_timestamp

__all__ = [
    "DEFAULT_BRANCHING",
    "DEFAULT_FRAME_LIMIT_BYTES",
    "DEFAULT_ID_LIST_THRESHOLD",
    "FINGERPRINT_BYTES",
    "FINGERPRINT_DOMAIN",
    "ID_BYTES",
    "KEY_BYTES",
    "MAX_FRAME_LIMIT_BYTES",
    "MAX_MESSAGE_BYTES",
    "MAX_RANGES",
    "MIN_FRAME_LIMIT_BYTES",
    "RECONCILE_VERSION",
    "ItemSource",
    "Range",
    "RangeMode",
    "ReconcileMessage",
    "Reconciler",
    "SortedItems",
    "Step",
    "decode_message",
    "encode_message",
    "fingerprint",
    "item_key",
    "separating_bound",
]

RECONCILE_VERSION: Final = 0
"""First element of every message (SPEC §21.4)."""
ID_BYTES: Final = 32
KEY_BYTES: Final = TIMESTAMP_BYTES + ID_BYTES
"""An item's sort key: 12-byte HLC then 32-byte id (SPEC §21.1)."""
FINGERPRINT_BYTES: Final = 16
FINGERPRINT_DOMAIN: Final = b"hearthmesh/reconcile-fingerprint/v0\x00"
MAX_MESSAGE_BYTES: Final = 1_048_576
"""Hard limit on one message, checked before parsing (SPEC §21.7)."""
MAX_RANGES: Final = 4_096
"""Most ranges one message may carry (SPEC §21.7)."""
MIN_FRAME_LIMIT_BYTES: Final = 4_096
MAX_FRAME_LIMIT_BYTES: Final = 262_144
DEFAULT_FRAME_LIMIT_BYTES: Final = 65_536
"""Size our messages stay within (SPEC §21.6.2); the receiver accepts up to MAX_MESSAGE_BYTES."""
DEFAULT_BRANCHING: Final = 16
"""Sub-ranges a differing range is split into (SPEC §21.6)."""
MAX_BRANCHING: Final = 32
DEFAULT_ID_LIST_THRESHOLD: Final = 16
"""A differing range with at most this many of our items is answered with its id list."""

_SUM_MODULUS: Final = 1 << 256
_HEADER_BYTES: Final = 4  # array head (≤ 3 bytes for MAX_RANGES + 1 items) + version
_TAIL_RESERVE_BYTES: Final = 72  # one pending SKIP (≤ 48) + the closing FINGERPRINT (20)
_ID_LIST_OVERHEAD_BYTES: Final = 56  # range head, bound (≤ 46), mode, byte-string head


class RangeMode(IntEnum):
    """What a range carries (SPEC §21.4). Values are never renumbered."""

    SKIP = 0
    FINGERPRINT = 1
    ID_LIST = 2
    DIFF = 3


def item_key(hlc: Timestamp, message_id: MessageId) -> bytes:
    """The 44-byte sort key of an item: byte order is (hlc, id) order (SPEC §21.1).

    Raises:
        LocalProtocolError: `message_id` is not 32 bytes.
    """
    if len(message_id) != ID_BYTES:
        raise LocalProtocolError(f"a message id is {ID_BYTES} bytes, got {len(message_id)}")
    return encode_timestamp(hlc) + message_id


def fingerprint(id_sum: int, count: int) -> bytes:
    """Fingerprint of a range from the sum of its ids (big-endian ints) and its count.

    SHA-256(FINGERPRINT_DOMAIN || (sum mod 2^256) as 32 bytes || count as u64), first 16 bytes
    (SPEC §21.3). Sums add, so a store can keep running sums and answer any range in O(1).
    """
    data = FINGERPRINT_DOMAIN + (id_sum % _SUM_MODULUS).to_bytes(32, "big")
    return hashlib.sha256(data + count.to_bytes(8, "big")).digest()[:FINGERPRINT_BYTES]


def separating_bound(previous_key: bytes, key: bytes) -> bytes:
    """The shortest prefix of `key` greater than `previous_key` (SPEC §21.2).

    Items below it are exactly those up to `previous_key`; `key` and later items are not.

    Raises:
        LocalProtocolError: `key` does not sort after `previous_key`.
    """
    if key <= previous_key:
        raise LocalProtocolError("keys must be strictly increasing")
    shared = 0
    for a, b in zip(previous_key, key, strict=False):
        if a != b:
            break
        shared += 1
    return key[: shared + 1]


class ItemSource(Protocol):
    """Sorted, read-only access to one replica's items (a snapshot for one reconciliation)."""

    def __len__(self) -> int:
        """Number of items."""
        ...

    def bisect(self, bound: bytes) -> int:
        """Number of items whose key sorts below `bound` (a key prefix)."""
        ...

    def keys(self, start: int, end: int) -> Sequence[bytes]:
        """The 44-byte keys of items `start` to `end` (exclusive), in order."""
        ...

    def id_sum(self, start: int, end: int) -> int:
        """Sum of the ids of items `start` to `end` as big-endian integers, mod 2^256."""
        ...


class SortedItems:
    """In-memory `ItemSource`: a sorted key list and prefix sums of the ids."""

    __slots__ = ("_keys", "_sums")

    def __init__(self, items: Iterable[tuple[Timestamp, MessageId]]) -> None:
        """Sort and index `items`; an identical item given twice counts once.

        Raises:
            LocalProtocolError: an id that is not 32 bytes, or one id under two timestamps.
        """
        keys = sorted({item_key(hlc, message_id) for hlc, message_id in items})
        if len({key[TIMESTAMP_BYTES:] for key in keys}) != len(keys):
            raise LocalProtocolError("one message id appears under two timestamps")
        sums = [0] * (len(keys) + 1)
        running = 0
        for index, key in enumerate(keys):
            running += int.from_bytes(key[TIMESTAMP_BYTES:], "big")
            sums[index + 1] = running
        self._keys = keys
        self._sums = sums

    def __len__(self) -> int:
        return len(self._keys)

    def bisect(self, bound: bytes) -> int:
        """Number of keys below `bound`."""
        return bisect.bisect_left(self._keys, bound)

    def keys(self, start: int, end: int) -> Sequence[bytes]:
        """Keys `start` to `end` (exclusive)."""
        return self._keys[start:end]

    def id_sum(self, start: int, end: int) -> int:
        """Sum of ids `start` to `end` (exclusive), mod 2^256."""
        return (self._sums[end] - self._sums[start]) % _SUM_MODULUS


@dataclass(frozen=True, slots=True, kw_only=True)
class Range:
    """One range of a message; it starts where the previous one ended (SPEC §21.4)."""

    upper: bytes | None
    """Exclusive upper bound (a key prefix); None is infinity, allowed only on the last range."""
    mode: RangeMode
    fingerprint: bytes = b""
    """FINGERPRINT: the sender's 16-byte fingerprint of the range."""
    bits: bytes = b""
    """DIFF: bit i (most significant first) set = the sender lacks the receiver's i-th item."""
    ids: tuple[MessageId, ...] = ()
    """ID_LIST: all the sender's ids in the range; DIFF: the sender's ids the receiver lacks."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconcileMessage:
    """A decoded message: ranges in increasing order of their upper bounds."""

    ranges: tuple[Range, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """What one received message produced."""

    reply: bytes | None
    """Bytes to send back, or None when the peer expects nothing."""
    have: list[MessageId]
    """Newly learned ids we hold and the peer lacks (send these events)."""
    need: list[MessageId]
    """Newly learned ids the peer holds and we lack (fetch these events)."""
    done: bool
    """True once no further message is expected in either direction."""


def _encode_bound(bound: bytes, previous: bytes) -> bytes:
    shared = 0
    for a, b in zip(previous, bound, strict=False):
        if a != b:
            break
        shared += 1
    return bytes([shared]) + bound[shared:]


def _decode_bound(encoded: bytes, previous: bytes) -> bytes:
    if len(encoded) < 2:
        raise MalformedMessage("a bound needs a shared-length byte and a non-empty suffix")
    shared, suffix = encoded[0], encoded[1:]
    if shared > len(previous):
        raise MalformedMessage("bound shares more bytes than the previous bound has")
    if shared < len(previous) and suffix[0] <= previous[shared]:
        raise MalformedMessage("bounds must increase, with the shared prefix maximal")
    bound = previous[:shared] + suffix
    if len(bound) > KEY_BYTES:
        raise MalformedMessage(f"a bound is at most {KEY_BYTES} bytes")
    return bound


def _range_value(item: Range, previous: bytes) -> list[CborValue]:
    bound: CborValue = None if item.upper is None else _encode_bound(item.upper, previous)
    match item.mode:
        case RangeMode.SKIP:
            return [bound, int(item.mode)]
        case RangeMode.FINGERPRINT:
            return [bound, int(item.mode), item.fingerprint]
        case RangeMode.ID_LIST:
            return [bound, int(item.mode), b"".join(item.ids)]
        case RangeMode.DIFF:
            return [bound, int(item.mode), item.bits, b"".join(item.ids)]


def _split_ids(data: CborValue) -> tuple[MessageId, ...]:
    if not isinstance(data, bytes) or len(data) % ID_BYTES:
        raise MalformedMessage(f"ids must be a byte string of {ID_BYTES}-byte ids")
    ids = tuple(MessageId(data[i : i + ID_BYTES]) for i in range(0, len(data), ID_BYTES))
    if len(set(ids)) != len(ids):
        raise MalformedMessage("an id is listed twice")
    return ids


def encode_message(message: ReconcileMessage) -> bytes:
    """Canonical CBOR `[0, range, ...]` (SPEC §21.4).

    Raises:
        LocalProtocolError: bounds not increasing, infinity before the last range, or a SKIP
            that is last or follows another SKIP.
    """
    previous = b""
    value: list[CborValue] = [RECONCILE_VERSION]
    for index, item in enumerate(message.ranges):
        last = index == len(message.ranges) - 1
        if item.upper is None and not last:
            raise LocalProtocolError("only the last range may reach infinity")
        if item.upper is not None and item.upper <= previous:
            raise LocalProtocolError("range bounds must increase")
        if item.mode is RangeMode.SKIP and (last or message.ranges[index + 1].mode is item.mode):
            raise LocalProtocolError("a SKIP is never last nor doubled")
        value.append(_range_value(item, previous))
        previous = item.upper or b""
    return encode_canonical(value)


def _decode_range(value: CborValue, previous: bytes, last: bool) -> Range:
    if not isinstance(value, list) or not 2 <= len(value) <= 4:
        raise MalformedMessage("a range is an array of 2 to 4 items")
    raw_bound, raw_mode, *payload = value
    if raw_bound is None:
        if not last:
            raise MalformedMessage("only the last range may reach infinity")
        upper = None
    elif isinstance(raw_bound, bytes):
        upper = _decode_bound(raw_bound, previous)
    else:
        raise MalformedMessage("a bound is a byte string or null")
    if not isinstance(raw_mode, int):
        raise MalformedMessage("a range mode is an integer")
    try:
        mode = RangeMode(raw_mode)
    except ValueError:
        raise MalformedMessage(f"unknown range mode {raw_mode!r}") from None
    arity = {RangeMode.SKIP: 0, RangeMode.FINGERPRINT: 1, RangeMode.ID_LIST: 1, RangeMode.DIFF: 2}
    if len(payload) != arity[mode]:
        raise MalformedMessage(f"a {mode.name} range carries {arity[mode]} payload items")
    match mode:
        case RangeMode.SKIP:
            return Range(upper=upper, mode=mode)
        case RangeMode.FINGERPRINT:
            fp = payload[0]
            if not isinstance(fp, bytes) or len(fp) != FINGERPRINT_BYTES:
                raise MalformedMessage(f"a fingerprint is {FINGERPRINT_BYTES} bytes")
            return Range(upper=upper, mode=mode, fingerprint=fp)
        case RangeMode.ID_LIST:
            return Range(upper=upper, mode=mode, ids=_split_ids(payload[0]))
        case RangeMode.DIFF:
            if not isinstance(payload[0], bytes):
                raise MalformedMessage("DIFF bits are a byte string")
            return Range(upper=upper, mode=mode, bits=payload[0], ids=_split_ids(payload[1]))


def decode_message(data: bytes) -> ReconcileMessage:
    """Parse one message, checking every rule of SPEC §21.4 and §21.7.

    Raises:
        TooLarge: `data` is longer than MAX_MESSAGE_BYTES (checked before parsing).
        UnsupportedVersion: the first element is not RECONCILE_VERSION.
        MalformedMessage: anything else wrong.
    """
    value = decode_canonical(data, max_bytes=MAX_MESSAGE_BYTES)
    if not isinstance(value, list) or not value or not isinstance(value[0], int):
        raise MalformedMessage("a reconciliation message is [version, range, ...]")
    if value[0] != RECONCILE_VERSION:
        raise UnsupportedVersion(f"reconciliation version {value[0]}")
    if len(value) - 1 > MAX_RANGES:
        raise MalformedMessage(f"more than {MAX_RANGES} ranges")
    ranges: list[Range] = []
    previous = b""
    for index, raw in enumerate(value[1:]):
        item = _decode_range(raw, previous, index == len(value) - 2)
        if item.mode is RangeMode.SKIP and (
            index == len(value) - 2 or (ranges and ranges[-1].mode is RangeMode.SKIP)
        ):
            raise MalformedMessage("a SKIP is never last nor doubled")
        ranges.append(item)
        previous = item.upper or b""
    return ReconcileMessage(ranges=tuple(ranges))


def _bitfield(flags: Sequence[bool]) -> bytes:
    out = bytearray((len(flags) + 7) // 8)
    for index, flag in enumerate(flags):
        if flag:
            out[index >> 3] |= 0x80 >> (index & 7)
    return bytes(out)


class _Writer:
    """Builds one outgoing message: merges SKIPs, delta-encodes bounds, tracks the size."""

    def __init__(self, limit_bytes: int) -> None:
        self.ranges: list[Range] = []
        self.has_work = False
        self._limit = limit_bytes
        self._size = _HEADER_BYTES
        self._previous = b""
        self._skip_to: bytes | None = None

    def skip(self, upper: bytes | None) -> None:
        if upper is not None:  # a skip to infinity is the implicit end of every message
            self._skip_to = upper

    def _cost(self, items: Sequence[Range]) -> int:
        previous, total = self._previous, 0
        if self._skip_to is not None:
            items = [Range(upper=self._skip_to, mode=RangeMode.SKIP), *items]
        for item in items:
            total += len(encode_canonical(_range_value(item, previous)))
            previous = item.upper or b""
        return total

    def available(self) -> int:
        skip = 0 if self._skip_to is None else self._cost([])
        return self._limit - self._size - skip - _TAIL_RESERVE_BYTES

    def has_room(self, count: int) -> bool:
        """Whether `count` more ranges (plus a SKIP and the tail) stay within MAX_RANGES."""
        return len(self.ranges) + count + 3 <= MAX_RANGES

    def add(self, items: Sequence[Range], *, force: bool = False) -> bool:
        """Append `items` if they fit (or `force`); True if appended."""
        if not force and not self.has_room(len(items)):
            return False
        cost = self._cost(items)
        if not force and self._size + cost + _TAIL_RESERVE_BYTES > self._limit:
            return False
        if self._skip_to is not None:
            self.ranges.append(Range(upper=self._skip_to, mode=RangeMode.SKIP))
            self._skip_to = None
        self.ranges.extend(items)
        self._size += cost
        self._previous = items[-1].upper or b""
        self.has_work = self.has_work or any(
            item.mode in (RangeMode.FINGERPRINT, RangeMode.ID_LIST) for item in items
        )
        return True

    def finish(self) -> bytes:
        return encode_message(ReconcileMessage(ranges=tuple(self.ranges)))


class Reconciler:
    """One side of a reconciliation; both sides run the same machine (SPEC §21.5).

    The initiator calls `initiate()` once and sends the result; the other side starts with
    `reconcile()`. Each received message yields a `Step`; send `step.reply` if it is not None.
    The `ItemSource` must not change until `done`.
    """

    def __init__(
        self,
        items: ItemSource,
        *,
        frame_limit_bytes: int = DEFAULT_FRAME_LIMIT_BYTES,
        branching: int = DEFAULT_BRANCHING,
        id_list_threshold: int = DEFAULT_ID_LIST_THRESHOLD,
    ) -> None:
        """Reconcile `items`, which must not change until `done`.

        Args:
            items: our replica's items.
            frame_limit_bytes: the largest message we build (SPEC §21.6.2).
            branching: sub-ranges per split (SPEC §21.6.1).
            id_list_threshold: at most this many of our items in a differing range: send ids.

        Raises:
            LocalProtocolError: a limit outside the ranges SPEC §21.6 allows.
        """
        if not MIN_FRAME_LIMIT_BYTES <= frame_limit_bytes <= MAX_FRAME_LIMIT_BYTES:
            raise LocalProtocolError(f"frame limit {frame_limit_bytes} out of range")
        if not 2 <= branching <= MAX_BRANCHING or not 1 <= id_list_threshold <= 64:
            raise LocalProtocolError("branching must be 2..32 and the id list threshold 1..64")
        self._items = items
        self._limit = frame_limit_bytes
        self._branching = branching
        self._threshold = id_list_threshold
        self._started = False
        self._done = False
        self._have: set[bytes] = set()
        self._need: set[bytes] = set()

    @property
    def done(self) -> bool:
        """True once this side expects no further message."""
        return self._done

    def initiate(self) -> bytes:
        """The first message: our id list if we hold few items, else one fingerprint of all.

        Raises:
            LocalProtocolError: this machine already sent or received a message.
        """
        if self._started:
            raise LocalProtocolError("initiate() must be the first call")
        self._started = True
        count = len(self._items)
        writer = _Writer(self._limit)
        if count <= self._threshold:
            writer.add([self._id_list(None, 0, count)], force=True)
        else:
            fp = fingerprint(self._items.id_sum(0, count), count)
            writer.add([Range(upper=None, mode=RangeMode.FINGERPRINT, fingerprint=fp)])
        return writer.finish()

    def reconcile(self, message: bytes) -> Step:
        """Consume one message from the peer; on any error our state is unchanged.

        Raises:
            TooLarge, MalformedMessage, UnsupportedVersion: a bad message (SPEC §21.7).
            RemoteProtocolError: a message after the exchange ended.
        """
        if self._done:
            raise RemoteProtocolError("reconciliation message after the exchange ended")
        decoded = decode_message(message)
        items = self._items
        count = len(items)
        writer = _Writer(self._limit)
        have: list[MessageId] = []
        need: list[MessageId] = []
        lower, low = b"", 0
        tail: bytes | None = None  # where output stopped fitting; one FINGERPRINT covers the rest
        for item in decoded.ranges:
            high = count if item.upper is None else items.bisect(item.upper)
            if item.mode is RangeMode.DIFF:
                self._apply_diff(item, low, high, have, need)
            if tail is None:
                match item.mode:
                    case RangeMode.FINGERPRINT:
                        tail = self._on_fingerprint(writer, item, lower, low, high)
                    case RangeMode.ID_LIST:
                        tail = self._on_id_list(writer, item, lower, low, high, have, need)
                    case _:
                        writer.skip(item.upper)
            lower, low = item.upper or b"", high
        if tail is not None:
            start = items.bisect(tail)
            fp = fingerprint(items.id_sum(start, count), count - start)
            writer.add([Range(upper=None, mode=RangeMode.FINGERPRINT, fingerprint=fp)], force=True)
        expects_reply = any(
            item.mode in (RangeMode.FINGERPRINT, RangeMode.ID_LIST) for item in decoded.ranges
        )
        self._started = True
        reply = writer.finish() if expects_reply else None
        self._done = not writer.has_work
        new_have = [i for i in dict.fromkeys(have) if i not in self._have]
        new_need = [i for i in dict.fromkeys(need) if i not in self._need]
        self._have.update(new_have)
        self._need.update(new_need)
        return Step(reply=reply, have=new_have, need=new_need, done=self._done)

    def _id_list(self, upper: bytes | None, low: int, high: int) -> Range:
        ids = tuple(MessageId(key[TIMESTAMP_BYTES:]) for key in self._items.keys(low, high))
        return Range(upper=upper, mode=RangeMode.ID_LIST, ids=ids)

    def _send_ids(
        self, writer: _Writer, upper: bytes | None, lower: bytes, low: int, high: int
    ) -> bytes | None:
        """Our id list for the range, cut short when it does not fit; returns the tail start."""
        fit = max(0, writer.available() - _ID_LIST_OVERHEAD_BYTES) // ID_BYTES
        if fit >= high - low and writer.add([self._id_list(upper, low, high)]):
            return None
        if writer.ranges and (fit == 0 or not writer.has_room(1)):
            return lower
        fit = max(fit, 1)  # the first range of a reply always goes out: progress (SPEC §21.6)
        if fit >= high - low:
            writer.add([self._id_list(upper, low, high)], force=True)
            return None
        edge = self._items.keys(low + fit - 1, low + fit + 1)
        bound = separating_bound(edge[0], edge[1])
        writer.add([self._id_list(bound, low, low + fit)], force=True)
        return bound

    def _on_fingerprint(
        self, writer: _Writer, item: Range, lower: bytes, low: int, high: int
    ) -> bytes | None:
        count = high - low
        if fingerprint(self._items.id_sum(low, high), count) == item.fingerprint:
            writer.skip(item.upper)
            return None
        if count <= self._threshold:
            return self._send_ids(writer, item.upper, lower, low, high)
        cuts = {low + count * k // self._branching for k in range(1, self._branching)}
        points = sorted(cut for cut in cuts if low < cut < high)  # every sub-range non-empty
        subranges: list[Range] = []
        start = low
        for end in [*points, high]:
            if end == high:
                bound = item.upper
            else:
                edge = self._items.keys(end - 1, end + 1)
                bound = separating_bound(edge[0], edge[1])
            fp = fingerprint(self._items.id_sum(start, end), end - start)
            subranges.append(Range(upper=bound, mode=RangeMode.FINGERPRINT, fingerprint=fp))
            start = end
        if writer.add(subranges, force=not writer.ranges):
            return None
        return lower

    def _on_id_list(
        self,
        writer: _Writer,
        item: Range,
        lower: bytes,
        low: int,
        high: int,
        have: list[MessageId],
        need: list[MessageId],
    ) -> bytes | None:
        theirs = set(item.ids)
        # Our DIFF lists at least (ours - theirs) ids; skip reading a range that cannot fit.
        if (high - low - len(theirs)) * ID_BYTES <= writer.available():
            ours = [MessageId(key[TIMESTAMP_BYTES:]) for key in self._items.keys(low, high)]
            ours_set = set(ours)
            missing = [peer_id not in ours_set for peer_id in item.ids]
            extra = tuple(i for i in ours if i not in theirs)
            diff = Range(upper=item.upper, mode=RangeMode.DIFF, bits=_bitfield(missing), ids=extra)
            if writer.add([diff]):
                have.extend(extra)
                need.extend(i for i, lacking in zip(item.ids, missing, strict=True) if lacking)
                return None
        return self._send_ids(writer, item.upper, lower, low, high)

    def _apply_diff(
        self, item: Range, low: int, high: int, have: list[MessageId], need: list[MessageId]
    ) -> None:
        count = high - low
        if len(item.bits) != (count + 7) // 8:
            raise MalformedMessage(f"DIFF bits cover {len(item.bits) * 8} items, we hold {count}")
        if count % 8 and item.bits[-1] & (0xFF >> (count % 8)):
            raise MalformedMessage("DIFF padding bits must be zero")
        ours = [MessageId(key[TIMESTAMP_BYTES:]) for key in self._items.keys(low, high)]
        ours_set = set(ours)
        if any(peer_id in ours_set for peer_id in item.ids):
            raise MalformedMessage("DIFF offers an id we hold in that range")
        have.extend(i for n, i in enumerate(ours) if item.bits[n >> 3] & (0x80 >> (n & 7)))
        need.extend(item.ids)
