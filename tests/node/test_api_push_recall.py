"""A recall withdraws the push notifications of its message still pending (SPEC §31.1.3)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from tests.integration.api_helpers import home

from .test_api_push import dispatcher_of, receiver


async def test_a_recalled_messages_pending_push_is_not_retried(tmp_path: Path) -> None:
    hits: list[str] = []
    first = asyncio.Event()

    async def failing(request: web.Request) -> web.Response:
        hits.append((await request.json())["message_id"])
        first.set()
        return web.Response(status=503)  # down: the dispatcher retries after a backoff

    async with asyncio.timeout(10), receiver(failing) as endpoint, home(tmp_path / "a") as h:
        await h.client.call("POST", "/v1/push/subscriptions", {"endpoint": endpoint})
        dispatcher = await dispatcher_of(h, retry_delays_s=(0.2, 0.2, 0.2))
        async with asyncio.TaskGroup() as group:
            worker = group.create_task(dispatcher.run())
            dispatcher.notify_nowait({"event": "message", "message_id": "aa" * 32})
            await first.wait()
            dispatcher.withdraw("aa" * 32)  # the sender recalled it
            dispatcher.notify_nowait({"event": "message", "message_id": "aa" * 32})  # a late one
            dispatcher.notify_nowait({"event": "message", "message_id": "bb" * 32})
            while hits.count("bb" * 32) < 4:  # noqa: ASYNC110 - the other message's attempts
                await asyncio.sleep(0.01)
            worker.cancel()
        assert hits.count("aa" * 32) == 1  # no retry, no late notification
