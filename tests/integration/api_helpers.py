"""Home nodes with their client API on 127.0.0.1, driven through HTTP and WebSocket only."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import subprocess
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from hearthmesh.node.api import ApiConfig, ApiServer
from hearthmesh.node.api.tls import certificate_fingerprint
from hearthmesh.node.clock import Clock
from hearthmesh.node.node import Node
from hearthmesh.tools.cli import main
from hearthmesh.tools.client import ApiClient

from .conftest import node_config

TOKEN = "test-token-0123456789"


@dataclass
class Home:
    """A running node + API, and an authenticated HTTP client for it."""

    node: Node
    api: ApiServer
    client: ApiClient

    @property
    def url(self) -> str:
        return self.api.url

    async def status(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.client.call("GET", "/v1/node/status")
        return result

    @asynccontextmanager
    async def socket(self, cursor: str | None = None) -> AsyncIterator[Socket]:
        async with self.client.websocket(cursor) as ws:
            socket = Socket(ws)
            socket.ready = await socket.next("ready")
            yield socket


class Socket:
    """A client WebSocket: send frames, wait for the next frame of an event."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []
        self.ready: dict[str, Any] = {}

    async def send(self, **frame: Any) -> None:
        await self.ws.send_str(json.dumps(frame))

    async def send_raw(self, data: str) -> None:
        await self.ws.send_str(data)

    async def next(
        self, event: str, where: Callable[[dict[str, Any]], bool] = lambda f: True
    ) -> dict[str, Any]:
        """The next frame of `event` that satisfies `where` (callers bound the wait)."""
        while True:
            message = await self.ws.receive()
            if message.type is not aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"socket ended: {message.type} {message.extra}")
            frame: dict[str, Any] = json.loads(message.data)
            self.seen.append(frame)
            if frame["event"] == event and where(frame):
                return frame


@asynccontextmanager
async def home(
    path: Path, *, api_clock: Clock | None = None, **overrides: Any
) -> AsyncIterator[Home]:
    """A node and its API; `api_clock` (default: the system clock) times the API's limits."""
    api_options = overrides.pop("api", {})
    async with Node(node_config(path, **overrides)) as node:
        config = ApiConfig(token=TOKEN, port=0, **api_options)
        pin = (
            None if config.tls_cert_file is None else certificate_fingerprint(config.tls_cert_file)
        )
        server = ApiServer(node, config, clock=api_clock)
        async with server as api, ApiClient(api.url, TOKEN, pin=pin) as client:
            yield Home(node=node, api=api, client=client)


async def open_conversation(h: Home, user: str) -> str:
    """`POST /v1/conversation` on `h` with `user`; the room id."""
    room: str = (await h.client.call("POST", "/v1/conversation", {"recipient_id": user}))["room_id"]
    return room


async def run_cli(h: Home, token_file: Path, command: str, *args: str) -> tuple[int, str]:
    """`hearthmesh COMMAND ARGS` against `h`'s API: (exit code, what it printed on stdout and
    stderr), by `run_main` in a thread: its event loop is its own, as in a process."""
    api = h.url.split("://")[1]
    argv = [command, *args, "--api", api, "--token-file", str(token_file)]
    done = await asyncio.to_thread(run_main, *argv)
    return done.returncode, done.stdout + done.stderr


_CLI_OUTPUT = threading.Lock()
"""sys.stdout and sys.stderr are the process's: one CLI run at a time redirects them."""


def run_main(*argv: str) -> subprocess.CompletedProcess[str]:
    """The `hearthmesh` CLI's `main` in this process, its exit code and output as a process's.
    Not a new interpreter: each start of the console script imports hearthmesh and its client
    again (~0.45 s of CPU), and the suite made some 60; tests/tools/test_cli.py and
    test_cli_home.py still start the script itself for what needs it."""
    out, err = io.StringIO(), io.StringIO()
    with _CLI_OUTPUT, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse refused the arguments (exit code 2)
            code = exc.code if isinstance(exc.code, int) else 1
    return subprocess.CompletedProcess(list(argv), code, out.getvalue(), err.getvalue())


async def befriend(a: Home, b: Home) -> tuple[str, str]:
    """a asks b to be friends through the API and b accepts; (a's user, b's user) once a lists
    b as a friend. Presence and typing go to contacts alone (SPEC §32.4). Callers bound it."""
    alice = (await a.status())["user_id"]
    bob = (await b.status())["user_id"]
    await a.client.call("POST", "/v1/friends/requests", {"user_id": bob, "note": "hi"})
    while alice not in await _listed(b, "/v1/friends/requests", "requests"):  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    await b.client.call("POST", f"/v1/friends/requests/{alice}/accept")
    while await _listed(a, "/v1/friends", "friends") != [bob]:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    return alice, bob


async def _listed(h: Home, path: str, key: str) -> list[str]:
    """The user ids a listing of users names (a listing has no event to wait on)."""
    return [item["user_id"] for item in (await h.client.call("GET", path))[key]]


async def link(a: Home, b: Home) -> None:
    """Dial b from a through a's API (swaps home records)."""
    address = (await b.status())["listen_addrs"][0]
    await a.client.call("POST", "/v1/peers", {"address": address})


@dataclass
class GroupOfThree:
    """Three homes, linked, each with one client socket, in a group alice (the first) made."""

    homes: tuple[Home, Home, Home]
    sockets: tuple[Socket, Socket, Socket]
    users: tuple[str, str, str]
    room: str
    """The group's id, as the API names it."""


@asynccontextmanager
async def group_of_three(path: Path, **carols_home: Any) -> AsyncIterator[GroupOfThree]:
    """alice, bob and carol on three homes under `path`, once bob's and carol's clients show
    the group with its three members; `carols_home` overrides her home's settings. Callers
    bound it with `asyncio.timeout`."""
    async with home(path / "a") as a, home(path / "b") as b, home(path / "c", **carols_home) as c:
        await link(a, b)
        await link(a, c)
        await link(b, c)
        alice, bob, carol = [(await h.status())["user_id"] for h in (a, b, c)]
        async with a.socket() as alice_ws, b.socket() as bob_ws, c.socket() as carol_ws:
            group = await a.client.call(
                "POST", "/v1/groups", {"name": "hearth", "members": [bob, carol]}
            )
            room: str = group["id"]
            for ws in (bob_ws, carol_ws):
                await ws.next(
                    "membership", lambda f: f["room_id"] == room and len(f["members"]) == 3
                )
            yield GroupOfThree(
                homes=(a, b, c),
                sockets=(alice_ws, bob_ws, carol_ws),
                users=(alice, bob, carol),
                room=room,
            )
