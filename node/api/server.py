"""`ApiServer`: the client API on aiohttp, run inside the node's event loop.

    async with Node(node_config) as node, ApiServer(node, ApiConfig(token=...)) as api:
        print(api.url)

Why aiohttp (SPEC §15.1): one dependency that is both the server and the client (tests, CLI,
push); an asyncio server that starts and stops with `AppRunner`/`TCPSite` inside the node's own
loop and task group, with no second process or thread; WebSocket round trips as fast as
FastAPI on uvicorn on this machine (perf-notes.md). FastAPI's generated OpenAPI is its main
advantage; a data-written document and a test that covers every route give the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final, Self

from aiohttp import WSCloseCode, web
from aiohttp.http_exceptions import HttpProcessingError

from hearthmesh.node.api.auth import make_guard
from hearthmesh.node.api.client_routes import CODES_KEY, FINGERPRINT_KEY, PUBLIC_ROUTES
from hearthmesh.node.api.config import LOOPBACK_HOSTS, ApiConfig
from hearthmesh.node.api.http_routes import add_routes
from hearthmesh.node.api.paired_clients import CLIENTS_KEY, PairedClients
from hearthmesh.node.api.pairing import PairingCodes
from hearthmesh.node.api.service import SERVICE_KEY, ApiService
from hearthmesh.node.api.tls import TlsError, certificate_fingerprint, server_context
from hearthmesh.node.api.web_client import FILES_KEY, load_web_files
from hearthmesh.node.clock import Clock, SystemClock
from hearthmesh.node.node import Node
from hearthmesh.node.supervisor import Supervisor

__all__ = ["ApiServer"]

log = logging.getLogger(__name__)

_SHUTDOWN_S = 2.0
_LINGER_S = 0.5
"""How long aiohttp keeps reading, and discarding, a request body the API answered without
reading (a 413 on its declared size) so the client sees the answer before the close; its
default is 10 s. That read does not notice the client leaving, so until it ends the API's
stop waits on it, up to `_SHUTDOWN_S` (aiohttp 3.14)."""
NODE_FAILED_CLOSE: Final = b"NODE_FAILED: the node stopped itself; reconnect with your cursor"
"""The close reason a failed node's clients get, with code 1011 (SPEC §11.8.5)."""


class ApiServer:
    """The HTTP + WebSocket API of one node; an `async with` lifetime."""

    def __init__(self, node: Node, config: ApiConfig, *, clock: Clock | None = None) -> None:
        self.node = node
        self.config = config
        self.service = ApiService(node, config, clock or SystemClock())
        self._stack = contextlib.AsyncExitStack()
        self._runner: web.AppRunner | None = None
        self._failure_watch: asyncio.Task[None] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """http(s)://host:port of the running API."""
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        scheme = "https" if self.config.tls_cert_file else "http"
        return f"{scheme}://{host}:{self.port}"

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _start(self) -> None:
        clock, config = self.service.clock, self.config
        ssl_context, fingerprint = None, ""
        if config.tls_cert_file is not None and config.tls_key_file is not None:
            ssl_context = server_context(config.tls_cert_file, config.tls_key_file)
            fingerprint = certificate_fingerprint(config.tls_cert_file)
        elif config.host not in LOOPBACK_HOSTS:  # SPEC §15.7: no plaintext beyond this machine
            raise TlsError(f"plain HTTP on {config.host} is refused: use --tls, or a loopback host")
        clients = PairedClients(self.node.store, clock, max_clients=config.max_paired_clients)
        await clients.load()
        app = web.Application(
            middlewares=[make_guard(config, clock, clients, self.node.report_fault)],
            client_max_size=config.max_media_bytes + 1,
        )
        app[SERVICE_KEY] = self.service
        app[CLIENTS_KEY] = clients
        app[CODES_KEY] = PairingCodes(
            clock,
            ttl_s=config.pairing_code_ttl_s,
            rate_per_s=config.pairing_rate_per_s,
            burst=config.pairing_burst,
        )
        app[FILES_KEY] = load_web_files()
        app[FINGERPRINT_KEY] = fingerprint
        add_routes(app)
        for method, path, handler in PUBLIC_ROUTES:
            app.router.add_route(method, path, handler)
        # cancels at exit; a store that failed under an API service stops the node (§11.8.5)
        supervisor = Supervisor(on_fatal=self.node.report_fault)
        await self._stack.enter_async_context(supervisor)
        await self.service.start(supervisor)
        runner = web.AppRunner(
            app,
            access_log=None,
            shutdown_timeout=_SHUTDOWN_S,
            lingering_time=_LINGER_S,
            logger=_ServerLogger(),
        )
        await runner.setup()
        self._stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(
            runner, config.host, config.port, reuse_address=True, ssl_context=ssl_context
        )
        await site.start()
        self.port = int(runner.addresses[0][1])
        self.service.api_url = self.url
        # Outside the API's supervisor: a failing node fails its services too, which would
        # cancel this before the clients are told.
        self._failure_watch = asyncio.create_task(self._close_clients_when_failed())
        log.info("client API on %s", self.url)

    async def _close_clients_when_failed(self) -> None:
        """A failed node feeds its clients nothing more: each WebSocket is closed with a code
        and a reason naming NODE_FAILED, not left open and silent (SPEC §11.8.5)."""
        await self.node.wait_failed()
        await self._close_clients(WSCloseCode.INTERNAL_ERROR, NODE_FAILED_CLOSE)

    async def _close_clients(self, code: int, reason: bytes) -> None:
        for session in list(self.service.sessions):
            with contextlib.suppress(Exception):
                await session.ws.close(code=code, message=reason)

    async def aclose(self) -> None:
        """Close client connections, stop the server and the API's tasks; idempotent."""
        if self._failure_watch is not None:
            self._failure_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._failure_watch
        await self._close_clients(WSCloseCode.GOING_AWAY, b"node stopping")
        await self._stack.aclose()


class _ServerLogger(logging.Logger):
    """aiohttp's server log: a request it cannot parse (a NUL in a header, a bad request line)
    is the client's fault and answered 400 by aiohttp; one quiet line, not a traceback."""

    def __init__(self) -> None:
        super().__init__(f"{__name__}.http")
        self.parent = log

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        error = kwargs.get("exc_info")
        if isinstance(error, HttpProcessingError):
            self.info("refused a request aiohttp cannot parse: %s", error.message)
            return
        super().exception(msg, *args, **kwargs)
