"""Push notifications (SPEC §19): tell a user's registered endpoints when no client is connected.

Two kinds of endpoint, both an HTTP POST:
- `webhook` (plain webhook or a UnifiedPush endpoint): a JSON body of ids only, never message
  text, so nothing readable leaves the node in the clear;
- `webpush` (RFC 8030): the JSON body encrypted for the subscription (RFC 8291) and signed
  for with VAPID (RFC 8292).

Failures are retried with exponential backoff; an endpoint that answers 404 or 410
`DEAD_AFTER` times in a row is gone for good (RFC 8030 §7.3) and is dropped.

State: `PushDispatcher` owns the bounded queue of notifications, the endpoints found gone or
withdrawn since start, and its counts; on the asyncio loop, filled by `ApiService`, drained by
its workers. The subscriptions themselves are the store's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from cryptography.hazmat.primitives.asymmetric import ec

from hearthmesh.node.api.webpush import VapidKey, b64url_decode, encrypt_webpush
from hearthmesh.node.clock import Clock
from hearthmesh.protocol.client_api import decode_text
from hearthmesh.protocol.errors import HearthError, MalformedMessage
from hearthmesh.protocol.identity import UserId
from hearthmesh.storage.api import PushSubscription
from hearthmesh.storage.async_store import AsyncStore

__all__ = [
    "DEAD_AFTER",
    "RETRY_DELAYS_S",
    "VAPID_SETTING",
    "PushDispatcher",
    "PushTarget",
    "decode_target",
    "encode_target",
    "load_vapid_key",
    "new_subscription_id",
    "parse_target",
]

log = logging.getLogger(__name__)

VAPID_SETTING: Final = "api.vapid.key"
RETRY_DELAYS_S: Final = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
"""Waits between attempts of one notification; after the last one it is given up."""
DEAD_AFTER: Final = 3
"""Consecutive 404/410 answers after which an endpoint is dropped."""
_QUEUE_SIZE: Final = 1024
_CONCURRENCY: Final = 16
_REQUEST_TIMEOUT_S: Final = 10.0
_PUSH_TTL_S: Final = 24 * 3600
_VAPID_SUBJECT: Final = "mailto:admin@localhost"


@dataclass(frozen=True, slots=True, kw_only=True)
class PushTarget:
    """A registered endpoint, as kept (JSON) in `PushSubscription.data`."""

    kind: str
    """`webhook` or `webpush`."""
    endpoint: str
    p256dh: bytes = b""
    auth: bytes = b""


def encode_target(target: PushTarget) -> bytes:
    data: dict[str, str] = {"kind": target.kind, "endpoint": target.endpoint}
    if target.kind == "webpush":
        data |= {"p256dh": target.p256dh.hex(), "auth": target.auth.hex()}
    return json.dumps(data).encode()


def decode_target(data: bytes) -> PushTarget:
    """Raises MalformedMessage."""
    try:
        value = json.loads(data)
        return PushTarget(
            kind=value["kind"],
            endpoint=value["endpoint"],
            p256dh=bytes.fromhex(value.get("p256dh", "")),
            auth=bytes.fromhex(value.get("auth", "")),
        )
    except (ValueError, KeyError, TypeError):
        raise MalformedMessage("stored push subscription unreadable") from None


def parse_target(body: dict[str, Any]) -> PushTarget:
    """A push subscription from an API request. Raises MalformedMessage."""
    kind = body.get("kind", "webhook")
    endpoint = decode_text(body.get("endpoint"), "endpoint", max_bytes=2048)
    if kind not in ("webhook", "webpush"):
        raise MalformedMessage("kind is 'webhook' (or UnifiedPush) or 'webpush'")
    if not endpoint.startswith(("http://", "https://")):
        raise MalformedMessage("endpoint is an http(s) URL")
    if kind == "webhook":
        return PushTarget(kind=kind, endpoint=endpoint)
    keys = body.get("keys")
    if not isinstance(keys, dict):
        raise MalformedMessage("a webpush subscription has keys {p256dh, auth}")
    p256dh = b64url_decode(decode_text(keys.get("p256dh"), "keys.p256dh", max_bytes=128))
    auth = b64url_decode(decode_text(keys.get("auth"), "keys.auth", max_bytes=64))
    if len(p256dh) != 65 or p256dh[0] != 4 or len(auth) != 16:
        raise MalformedMessage("p256dh is a 65-byte P-256 point, auth 16 bytes (base64url)")
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), p256dh)
    except ValueError:
        raise MalformedMessage("p256dh is not on P-256") from None
    return PushTarget(kind=kind, endpoint=endpoint, p256dh=p256dh, auth=auth)


def load_vapid_key(store: AsyncStore) -> VapidKey:
    """Read (or create and keep) the node's VAPID key. Runs in a store write batch."""
    raw = store.store.get_setting(VAPID_SETTING)
    if raw is None:
        key = VapidKey(ec.generate_private_key(ec.SECP256R1()))
        store.store.set_setting(VAPID_SETTING, key.to_bytes())
        return key
    return VapidKey.from_bytes(raw)


class PushDispatcher:
    """A bounded queue of notifications and the workers that deliver them."""

    def __init__(
        self,
        *,
        store: AsyncStore,
        user: UserId,
        vapid: VapidKey,
        clock: Clock,
        retry_delays_s: Sequence[float] = RETRY_DELAYS_S,
        dead_after: int = DEAD_AFTER,
    ) -> None:
        self._store = store
        self._user = user
        self._vapid = vapid
        self._clock = clock
        self._delays = tuple(retry_delays_s)
        self._dead_after = dead_after
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=_QUEUE_SIZE)
        self._gone: dict[bytes, int] = {}
        self._withdrawn: OrderedDict[str, None] = OrderedDict()
        """Recalled message ids (hex), newest last: their notifications are not (re)tried."""
        self.sent = 0
        """Notifications an endpoint accepted (2xx)."""
        self.dropped_endpoints = 0

    def notify_nowait(self, payload: dict[str, Any]) -> None:
        """Queue a notification for every endpoint of our user; dropped (logged) when full."""
        try:
            self._queue.put_nowait(payload)
        except asyncio.QueueFull:
            log.warning("push queue full; a notification was dropped")

    def withdraw(self, message_id: str) -> None:
        """A message was recalled (SPEC §31.1): its notifications still queued or being
        retried are dropped. Remembers the latest `_QUEUE_SIZE` ids."""
        self._withdrawn[message_id] = None
        if len(self._withdrawn) > _QUEUE_SIZE:
            self._withdrawn.popitem(last=False)

    def _is_withdrawn(self, payload: dict[str, Any]) -> bool:
        return payload.get("event") == "message" and payload.get("message_id") in self._withdrawn

    async def run(self) -> None:
        """Deliver queued notifications until cancelled."""
        limit = asyncio.Semaphore(_CONCURRENCY)
        timeout = aiohttp.ClientTimeout(total=_REQUEST_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as http, asyncio.TaskGroup() as group:
            while True:
                payload = await self._queue.get()
                if self._is_withdrawn(payload):
                    continue
                subscriptions = await self._store.run(
                    self._store.store.push_subscriptions, self._user
                )
                for subscription in subscriptions:
                    await limit.acquire()
                    task = group.create_task(self._deliver(http, subscription, payload))
                    task.add_done_callback(lambda _: limit.release())

    async def _deliver(
        self, http: aiohttp.ClientSession, subscription: PushSubscription, payload: dict[str, Any]
    ) -> None:
        try:
            target = decode_target(subscription.data)
        except MalformedMessage as exc:
            log.warning("push subscription %s: %s", subscription.subscription_id.hex(), exc)
            return
        for attempt, delay in enumerate((0.0, *self._delays)):
            if delay:
                await asyncio.sleep(delay)  # backoff between attempts, not a synchronisation
            if self._is_withdrawn(payload):
                return
            status = await self._post(http, target, payload)
            sub_id = subscription.subscription_id
            if status is not None and 200 <= status < 300:
                self._gone.pop(sub_id, None)
                self.sent += 1
                return
            if status in (404, 410):
                self._gone[sub_id] = self._gone.get(sub_id, 0) + 1
                if self._gone[sub_id] >= self._dead_after:
                    await self._drop(sub_id, target)
                    return
            log.info(
                "push to %s failed (attempt %d, status %s)", target.endpoint, attempt + 1, status
            )
        log.warning("push to %s given up after %d attempts", target.endpoint, len(self._delays) + 1)

    async def _drop(self, subscription_id: bytes, target: PushTarget) -> None:
        self._gone.pop(subscription_id, None)
        await self._store.run(
            self._store.store.delete_push_subscription, self._user, subscription_id
        )
        self.dropped_endpoints += 1
        log.warning("push endpoint %s is gone (404/410); subscription dropped", target.endpoint)

    async def _post(
        self, http: aiohttp.ClientSession, target: PushTarget, payload: dict[str, Any]
    ) -> int | None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {"TTL": str(_PUSH_TTL_S), "Urgency": "high"}
        if target.kind == "webpush":
            body = encrypt_webpush(
                body,
                target.p256dh,
                target.auth,
                salt=os.urandom(16),
                sender_key=ec.generate_private_key(ec.SECP256R1()),
            )
            headers |= {
                "Content-Encoding": "aes128gcm",
                "Content-Type": "application/octet-stream",
                "Authorization": self._vapid.authorization(
                    target.endpoint,
                    now_s=self._clock.now_ms() // 1000,
                    subject=_VAPID_SUBJECT,
                ),
            }
        else:
            headers["Content-Type"] = "application/json"
        try:
            async with http.post(target.endpoint, data=body, headers=headers) as response:
                return response.status
        except (aiohttp.ClientError, TimeoutError, HearthError) as exc:
            log.debug("push POST to %s: %s", target.endpoint, exc)
            return None


def new_subscription_id() -> bytes:
    """16 random bytes naming a push subscription."""
    return secrets.token_bytes(16)
