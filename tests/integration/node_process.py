"""A home node in its own process, for tests that kill -9 it.

`python -m tests.integration.node_process --data-dir D --port P [--connect ADDR]` prints one
JSON line (peer id, user id, address) once the node is up, then serves until killed or until
SIGTERM, which stops it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path

from hearthmesh.node.config import NodeConfig
from hearthmesh.node.node import Node


async def serve(data_dir: Path, port: int, connect: list[str]) -> None:
    config = NodeConfig(
        data_dir=data_dir,
        listen_addrs=(f"/ip4/127.0.0.1/tcp/{port}",),
        presence_interval_ms=300,
        presence_ttl_ms=1500,
        retry_poll_ms=50,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with Node(config) as node:
        for address in connect:
            await node.connect(address)
        line = {
            "peer_id": node.peer_id,
            "user_id": node.user_id.hex(),
            "addr": node.listen_addrs[0],
        }
        print(json.dumps(line), flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connect", action="append", default=[])
    args = parser.parse_args()
    asyncio.run(serve(args.data_dir, args.port, args.connect))
    sys.exit(0)


if __name__ == "__main__":
    main()
