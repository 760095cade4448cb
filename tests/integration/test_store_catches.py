"""A store that failed, met where errors are caught broadly (SPEC §11.8.5): the API answers the
request that met it with 500 STORAGE, a background fetch lets it through, and the node
fail-stops; it is not logged and served on.

The store is closed under the running node (`AsyncStore.aclose`), so every read and write
after it raises a real `StorageError("store … is closing")`, as a store that failed does.
Services that look at the store now and then (the outbox, key forwarding and requests,
presence) would meet it too: their looks are put off (`QUIET`), and each test checks that the
fault the node stopped for is the one its request met.
"""

from __future__ import annotations

import asyncio
import os
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hearthmesh.node.events import MessageReceived
from hearthmesh.protocol.errors import ErrorCode, NodeFailed, StorageError
from hearthmesh.tools.client import ApiRefused

from .api_helpers import Home, Socket, home, link
from .conftest import collect
from .test_media import _download, _send_image

pytestmark = pytest.mark.integration

QUIET: dict[str, Any] = {
    name: 600_000
    for name in (
        "retry_poll_ms",
        "key_forward_interval_ms",
        "key_request_interval_ms",
        "presence_interval_ms",
    )
}
"""The timers of the services that look at the store by themselves: none looks in a test."""


async def test_an_api_request_that_meets_a_failed_store_answers_500_and_stops_the_node(
    tmp_path: Path,
) -> None:
    async with asyncio.timeout(30), home(tmp_path / "a", **QUIET) as a:
        failed = asyncio.ensure_future(a.node.wait_failed())
        await a.node.store.aclose()  # the store fails under the running node
        assert not failed.done()  # nothing but the request below meets it
        with pytest.raises(ApiRefused) as refused:
            await a.client.call("GET", "/v1/conversation")
        assert (refused.value.status, refused.value.error_code) == (500, ErrorCode.STORAGE)
        failure = await asyncio.wait_for(failed, 10)  # a bound on a hang, not a timing
        assert "closing" in str(failure)
        assert "list_conversations" in _frames(failure.__cause__)  # the request's own fault
        assert (await a.status())["state"] == "failed"


async def test_a_websocket_command_that_meets_a_failed_store_stops_the_node(
    tmp_path: Path,
) -> None:
    async with _socket_on_a_failing_store(tmp_path / "a") as (_, ws, failed):
        await ws.ws.send_json({"event": "get_all_group", "request_id": "r1"})
        error = await ws.next("error")
        assert (error["error"]["code"], error.get("request_id")) == (ErrorCode.STORAGE, "r1")
        failure = await asyncio.wait_for(failed, 10)  # a bound on a hang, not a timing
        assert "_handle" in _frames(failure.__cause__)  # the command's own fault


async def test_the_websocket_clients_of_a_failed_node_are_closed_naming_node_failed(
    tmp_path: Path,
) -> None:
    """A failed node feeds its clients nothing more: an open socket is closed with 1011 and a
    reason naming NODE_FAILED (it used to stay open and silent until the API stopped), and a
    new one is refused 503 NODE_FAILED rather than given a `ready` and then nothing."""
    async with _socket_on_a_failing_store(tmp_path / "a") as (a, ws, failed):
        with pytest.raises(ApiRefused):  # the request that meets the failed store
            await a.client.call("GET", "/v1/conversation")
        await asyncio.wait_for(failed, 10)  # a bound on a hang, not a timing
        closed = await asyncio.wait_for(ws.ws.receive(), 10)
        assert closed.type is aiohttp.WSMsgType.CLOSE
        assert closed.data == aiohttp.WSCloseCode.INTERNAL_ERROR
        assert str(closed.extra).startswith("NODE_FAILED")
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with a.client.websocket():
                pass
        assert refused.value.status == 503
        assert (await a.status())["state"] == "failed"


async def test_a_receipt_that_meets_a_failed_store_stops_the_node(tmp_path: Path) -> None:
    """An ack of a message bob's client was shown is taken from memory (no read), queued, and
    sent by the receipt service a moment later; its store read then meets the failed store.
    The service caught every HearthError of a send ("we left the room meanwhile"): it now lets
    a failed store through, and the API's supervisor hands it to the node."""
    async with (
        asyncio.timeout(30),
        home(tmp_path / "a", **QUIET) as a,
        home(tmp_path / "b", **QUIET) as b,
        b.socket() as bob_ws,
    ):
        await link(a, b)
        bob = (await b.status())["user_id"]
        room = (await a.client.call("POST", "/v1/conversation", {"recipient_id": bob}))["room_id"]
        await a.client.call("POST", f"/v1/conversation/{room}/messages", {"message": "hi"})
        shown = await bob_ws.next("message")
        # The feed may still be reading what else this conversation stored (keys, contacts):
        # held still, so the receipts' flush is what meets the failed store first.
        async with b.api.service.feed._draining:
            failed = asyncio.ensure_future(b.node.wait_failed())
            await b.node.store.aclose()
            await bob_ws.send(event="ack", message_id=shown["message_id"], status="read")
            failure = await asyncio.wait_for(failed, 10)  # a bound on a hang, not a timing
        assert {"run", "_flush"} <= set(_frames(failure.__cause__))  # the receipts' own fault


@asynccontextmanager
async def _socket_on_a_failing_store(
    path: Path,
) -> AsyncIterator[tuple[Home, Socket, asyncio.Future[NodeFailed]]]:
    """A home with one client socket, whose store then fails under it: the home, the socket,
    and the node's failure to come (nothing but what the test does next meets the store)."""
    async with asyncio.timeout(30), home(path, **QUIET) as a, a.socket() as ws:
        failed = asyncio.ensure_future(a.node.wait_failed())
        await a.node.store.aclose()
        yield a, ws, failed


def _frames(error: BaseException | None) -> list[str]:
    """The functions `error` passed through: which code met the failed store."""
    assert isinstance(error, StorageError)
    return [frame.f_code.co_name for frame, _ in traceback.walk_tb(error.__traceback__)]


async def test_a_background_media_fetch_that_meets_a_failed_store_stops_the_node(
    tmp_path: Path,
) -> None:
    """The fetcher caught every HearthError of a fetch ("a background fetch never stops the
    node"): a store that failed under it was logged, not fatal."""
    async with (
        asyncio.timeout(30),
        home(tmp_path / "a", **QUIET) as a,
        home(tmp_path / "b", **QUIET) as b,
    ):
        await link(a, b)
        arriving = asyncio.create_task(collect(b.node.events(), MessageReceived, 1))
        await asyncio.sleep(0)
        media = await _send_image(a, b, os.urandom(4096))
        [received] = await arriving
        assert (await _download(b, media["digest"]))[0] == 200  # fetched; that fetch ended
        failed = asyncio.ensure_future(b.node.wait_failed())
        await b.node.store.aclose()
        b.node.media.want([received.envelope])  # as a newly stored envelope does
        failure = await asyncio.wait_for(failed, 10)  # a bound on a hang, not a timing
        assert "_fetch" in _frames(failure.__cause__)  # the fetch's own fault
