"""The control of `bench api-control`: a minimal same-node server, in a process of its own.

`python -m hearthmesh.tools.bench.control_server [--store DIR]` serves `/v1/ws` on 127.0.0.1
(any bearer token), prints one JSON line `{"port": P}` once up, and serves until SIGTERM; then
it prints `{"commits": N, "sends": M}` and exits. It has the node API's shape and nothing else
of the node: each connection's reader starts one task per `send` frame, and each connection's
queued frames go out in order from its writer task (the node's own `ClientSession`,
`node/api/service.py`, used as `node/api/ws.py` uses it). A send is answered with
`message_sent` to its sender, then a `message` frame to every connection, the sender's first
(the node's echo, then the other clients'). With `--store`, each send first
puts its frame's bytes in an LMDB store, the node's own engine (`storage/lmdb_store.py`'s
`LmdbEngine`: sync and metasync on), and commits on the loop's thread, as the node commits a
lone write when its loop is idle (ARCHITECTURE §10): one commit, its two flushes.
No libp2p, no trio thread, no crypto, no feed: what a same-node message waits for here is the
machine, the event loop, aiohttp and (with `--store`) the disk.

The process runs on the event loop the node's does (`tools/event_loop.py`, the `uvloop`
setting) with the node process's collector settings (`tools/process_gc.py`). Its state (the
connections, the store, the counter of sends) is `_Relay`'s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Final

from aiohttp import WSMsgType, web

from hearthmesh.node.api.config import ApiConfig
from hearthmesh.node.api.service import ClientSession
from hearthmesh.storage.keys import Table
from hearthmesh.storage.lmdb_store import LmdbEngine
from hearthmesh.tools.event_loop import run_node_loop
from hearthmesh.tools.process_gc import freeze_startup_objects, tune_collector
from hearthmesh.tools.settings import env_setting

__all__ = ["SENDER_ID", "main"]

SENDER_ID: Final = "control"
"""The `sender_id` of every `message` frame (the clients are all one user's, so none acks)."""
_HEARTBEAT_S: Final = 30.0
_CLIENT_QUEUE: Final = ApiConfig(token="").client_queue
"""Frames queued for a client at most: the node API's default."""


class _Relay:
    """The server's state: its connections in the order they came, the store, the sends."""

    def __init__(self, store: LmdbEngine | None) -> None:
        self.store = store
        self.connections: list[ClientSession] = []
        self.sends = 0
        self.commits = 0

    def _commit(self, data: bytes) -> None:
        """One put and its durable commit, on the loop's thread (py-lmdb lets the GIL go for
        the commit, as the node's in-place commit relies on)."""
        assert self.store is not None
        key = self.sends.to_bytes(8, "big")
        self.store.write(lambda txn: txn.put(Table.HISTORY, key, data))
        self.commits += 1

    async def send(self, sender: ClientSession, frame: dict[str, str], data: bytes) -> None:
        self.sends += 1
        message_id = f"{self.sends:032x}"
        if self.store is not None:
            self._commit(data)
        sent = {"event": "message_sent", "client_id": frame["client_id"], "message_id": message_id}
        sender.put(json.dumps(sent))
        message = {
            "event": "message",
            "message_id": message_id,
            "room_id": frame.get("room_id", ""),
            "sender_id": SENDER_ID,
            "body": frame.get("message", ""),
        }
        text = json.dumps(message)
        sender.put(text)
        for other in self.connections:
            if other is not sender:
                other.put(text)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=_HEARTBEAT_S)
        await ws.prepare(request)
        connection = ClientSession(ws, max_queued=_CLIENT_QUEUE)
        self.connections.append(connection)
        connection.open([json.dumps({"event": "ready", "user_id": SENDER_ID})])
        try:
            async with asyncio.TaskGroup() as group:
                writer = group.create_task(connection.write_loop())
                async for message in ws:
                    if message.type != WSMsgType.TEXT:
                        continue
                    frame = json.loads(message.data)
                    if frame.get("event") == "send":
                        data = message.data.encode()
                        group.create_task(self.send(connection, frame, data))
                writer.cancel()
        finally:
            self.connections.remove(connection)
        return ws


async def _serve(store_dir: Path | None) -> int:
    store = None if store_dir is None else LmdbEngine(store_dir)
    relay = _Relay(store)
    app = web.Application()
    app.router.add_get("/v1/ws", relay.handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        freeze_startup_objects()
        port = runner.addresses[0][1]
        print(json.dumps({"port": port}), flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()
        if store is not None:
            store.close()
    print(json.dumps({"commits": relay.commits, "sends": relay.sends}), flush=True)
    return 0


def main() -> None:
    """Entry point: `python -m hearthmesh.tools.bench.control_server`."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", type=Path, help="commit each send in an LMDB store here")
    args = parser.parse_args()
    tune_collector()
    sys.exit(run_node_loop(_serve(args.store), uvloop=env_setting("uvloop")))


if __name__ == "__main__":
    main()
