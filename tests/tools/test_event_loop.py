"""tools/event_loop.py: a node process runs on uvloop's loop unless the `uvloop` setting is off."""

from __future__ import annotations

import asyncio

import uvloop

from hearthmesh.tools.event_loop import run_node_loop


async def _loop_type() -> type[asyncio.AbstractEventLoop]:
    return type(asyncio.get_running_loop())


def test_a_node_loop_is_uvloops_unless_the_setting_is_off() -> None:
    assert run_node_loop(_loop_type(), uvloop=True) is uvloop.Loop
    assert not issubclass(run_node_loop(_loop_type(), uvloop=False), uvloop.Loop)
