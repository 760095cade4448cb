"""Push (SPEC §19): Web Push encryption and VAPID, delivery to local receivers, dead endpoints."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from hearthmesh.node.api.push import PushDispatcher, load_vapid_key
from hearthmesh.node.api.webpush import (
    VapidKey,
    b64url,
    b64url_decode,
    decrypt_webpush,
    encrypt_webpush,
    public_bytes,
)
from tests.integration.api_helpers import Home, home

Handler = Callable[[web.Request], Awaitable[web.Response]]


def test_webpush_payload_decrypts_only_with_the_subscription_keys() -> None:
    ua = ec.generate_private_key(ec.SECP256R1())
    auth = os.urandom(16)
    body = encrypt_webpush(
        b'{"hello": 1}',
        public_bytes(ua),
        auth,
        salt=os.urandom(16),
        sender_key=ec.generate_private_key(ec.SECP256R1()),
    )
    assert b"hello" not in body
    assert decrypt_webpush(body, ua, auth) == b'{"hello": 1}'


def test_vapid_header_is_an_es256_jwt_for_the_endpoint_origin() -> None:
    key = VapidKey(ec.generate_private_key(ec.SECP256R1()))
    header = key.authorization("https://push.example:8443/x/y", now_s=1000, subject="mailto:a@b")
    token = header.split("t=")[1].split(",")[0]
    assert header.endswith(f"k={key.public_key}")
    head, claims, signature = token.split(".")
    assert json.loads(b64url_decode(claims)) == {
        "aud": "https://push.example:8443",
        "exp": 1000 + 12 * 3600,
        "sub": "mailto:a@b",
    }
    raw = b64url_decode(signature)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    key.private.public_key().verify(der, f"{head}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))
    assert VapidKey.from_bytes(key.to_bytes()).public_key == key.public_key


@asynccontextmanager
async def receiver(handler: Handler) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/push", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/push"
    finally:
        await runner.cleanup()


async def test_webpush_reaches_a_local_receiver_encrypted(tmp_path: Path) -> None:
    ua = ec.generate_private_key(ec.SECP256R1())
    auth = os.urandom(16)
    got: asyncio.Queue[tuple[dict[str, str], bytes]] = asyncio.Queue()

    async def handle(request: web.Request) -> web.Response:
        await got.put((dict(request.headers), await request.read()))
        return web.Response(status=201)

    async with asyncio.timeout(10), receiver(handle) as endpoint, home(tmp_path / "a") as h:
        keys = {"p256dh": b64url(public_bytes(ua)), "auth": b64url(auth)}
        await h.client.call(
            "POST",
            "/v1/push/subscriptions",
            {"kind": "webpush", "endpoint": endpoint, "keys": keys},
        )
        vapid = (await h.client.call("GET", "/v1/push/vapid"))["public_key"]
        assert h.api.service.push is not None
        h.api.service.push.notify_nowait({"event": "message", "message_id": "00" * 32})
        headers, body = await got.get()
        assert headers["Content-Encoding"] == "aes128gcm"
        assert headers["Authorization"].endswith(f"k={vapid}")
        assert json.loads(decrypt_webpush(body, ua, auth))["message_id"] == "00" * 32


async def dispatcher_of(h: Home, **options: Any) -> PushDispatcher:
    """A dispatcher of `h`'s user, apart from the one its API runs, with `options`."""
    store = h.node.store
    return PushDispatcher(
        store=store,
        user=h.node.user_id,
        vapid=await store.run(load_vapid_key, store),
        clock=h.api.service.clock,
        **options,
    )


async def test_an_endpoint_answering_410_repeatedly_is_dropped(tmp_path: Path) -> None:
    hits: list[int] = []

    async def gone(request: web.Request) -> web.Response:
        hits.append(1)
        return web.Response(status=410)

    async with asyncio.timeout(10), receiver(gone) as endpoint, home(tmp_path / "a") as h:
        await h.client.call("POST", "/v1/push/subscriptions", {"endpoint": endpoint})
        dispatcher = await dispatcher_of(h, retry_delays_s=(0.01, 0.02, 0.04), dead_after=3)
        async with asyncio.TaskGroup() as group:
            worker = group.create_task(dispatcher.run())
            dispatcher.notify_nowait({"event": "message"})
            while dispatcher.dropped_endpoints == 0:  # noqa: ASYNC110 - a counter, no event
                await asyncio.sleep(0.01)
            worker.cancel()
        assert len(hits) == 3
        listing = await h.client.call("GET", "/v1/push/subscriptions")
        assert listing["subscriptions"] == []
