"""A store that failed, met outside a service's own task (SPEC §11.8.5): the API answers the
request that met it with 500 STORAGE and the node fail-stops; it is not logged and served on.

The store is closed under the running node (`AsyncStore.aclose`), so every read and write
after it raises a real `StorageError("store … is closing")`, as a store that failed does.
Services that look at the store now and then (the outbox, key forwarding) would meet it too,
later: each test checks that the fault the node stopped for is the one its request met.
"""

from __future__ import annotations

import asyncio
import traceback
from pathlib import Path

import pytest

from hearthmesh.protocol.errors import ErrorCode, StorageError
from hearthmesh.tools.client import ApiRefused

from .api_helpers import home

pytestmark = pytest.mark.integration


async def test_an_api_request_that_meets_a_failed_store_answers_500_and_stops_the_node(
    tmp_path: Path,
) -> None:
    async with asyncio.timeout(30), home(tmp_path / "a") as a:
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
    async with (
        asyncio.timeout(30),
        home(tmp_path / "a") as a,
        a.socket() as ws,
    ):
        failed = asyncio.ensure_future(a.node.wait_failed())
        await a.node.store.aclose()
        await ws.ws.send_json({"event": "get_all_group", "request_id": "r1"})
        error = await ws.next("error")
        assert (error["error"]["code"], error.get("request_id")) == (ErrorCode.STORAGE, "r1")
        failure = await asyncio.wait_for(failed, 10)  # a bound on a hang, not a timing
        assert "_handle" in _frames(failure.__cause__)  # the command's own fault


def _frames(error: BaseException | None) -> list[str]:
    """The functions `error` passed through: which code met the failed store."""
    assert isinstance(error, StorageError)
    return [frame.f_code.co_name for frame, _ in traceback.walk_tb(error.__traceback__)]
