"""CLI commands that talk to a running home node through its client API.

Exit codes: 0 success, 1 the node refused (its JSON error is printed), 2 bad usage,
3 no node answers at the API address (or no token file).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import aiohttp

from hearthmesh.protocol.errors import HearthError
from hearthmesh.tools import social_cli
from hearthmesh.tools.group_cli import run_group

__all__ = [
    "EXIT_API",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "ApiClient",
    "run_client_command",
    "show_qr",
]

EXIT_API: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNREACHABLE: Final = 3
_TIMEOUT_S: Final = 30.0


class ApiRefused(HearthError):
    """The node answered with an error."""

    def __init__(self, status: int, body: Any) -> None:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        super().__init__(f"{status} {error.get('name', '')}: {error.get('message', body)}")
        self.status = status
        self.body = body
        self.error_code: int | None = error.get("code")
        """The SPEC §9 code of the refusal (None if the answer named none)."""


class ApiClient:
    """A small async client of the HTTP API (also used by tests and the benchmark)."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        pin: str | None = None,
        unix: str | None = None,
        timeout_s: float = _TIMEOUT_S,
    ) -> None:
        """`pin`: over HTTPS, the sha-256 (hex) of the node's certificate, which is trusted
        instead of a certificate authority (the node makes its own at init, SPEC §15.7).
        `unix`: reach `url` through this Unix socket (a node in a network namespace, behind
        `hearthmesh simulate`'s forwarder). `timeout_s`: the bound of each call."""
        self.url = url.rstrip("/")
        self.token = token
        ssl = True if pin is None else aiohttp.Fingerprint(bytes.fromhex(pin))
        connector = (
            aiohttp.TCPConnector(ssl=ssl) if unix is None else aiohttp.UnixConnector(path=unix)
        )
        self._http = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            connector=connector,
        )

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._http.close()

    async def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        """The JSON answer. Raises ApiRefused for a 4xx/5xx."""
        async with self._http.request(
            method, self.url + path, json=body, params=params
        ) as response:
            data = await response.json(content_type=None)
            if response.status >= 400:
                raise ApiRefused(response.status, data)
            return data

    async def upload(self, data: bytes, content_type: str) -> Any:
        """`POST /v1/media`: the stored blob's JSON (digest, size). Raises ApiRefused."""
        headers = {"Content-Type": content_type}
        async with self._http.post(self.url + "/v1/media", data=data, headers=headers) as response:
            answer = await response.json(content_type=None)
            if response.status >= 400:
                raise ApiRefused(response.status, answer)
            return answer

    def websocket(self, cursor: str | None = None, *, deflate: bool = False) -> Any:
        """Open `/v1/ws`; `deflate` offers permessage-deflate (RFC 7692), as browsers do."""
        params = {} if cursor is None else {"cursor": cursor}
        return self._http.ws_connect(
            self.url + "/v1/ws", params=params, compress=15 if deflate else 0
        )


def _connection(args: Any) -> tuple[str, str, str | None]:
    """The API's URL, the token and, over TLS, the certificate's fingerprint to pin."""
    from hearthmesh.node.api.tls import CERT_FILE, certificate_fingerprint
    from hearthmesh.tools.settings import parse_api, resolve_settings

    settings = resolve_settings(args)
    host, port = parse_api(settings.api)
    if host in ("0.0.0.0", "::"):  # a node listening everywhere answers on loopback too
        host = "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    token_file = Path(args.token_file) if args.token_file else settings.data_dir / "api-token"
    try:
        token = token_file.read_text(encoding="ascii").strip()
    except OSError as exc:
        raise FileNotFoundError(f"cannot read the API token: {exc}") from None
    if not settings.api_tls:
        return f"http://{host}:{port}", token, None
    cert = Path(settings.api_tls_cert) if settings.api_tls_cert else settings.data_dir / CERT_FILE
    pin = certificate_fingerprint(cert)
    return f"https://{host}:{port}", token, pin


async def _status(client: ApiClient, args: Any) -> int:
    status = await client.call("GET", "/v1/node/status")
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    if status.get("state") == "failed":  # SPEC §11.8.5; an older node does not say
        print(f"FAILED:    {status['failure']}")
    print(f"user id:   {status['user_id']}")
    print(f"peer id:   {status['peer_id']}")
    for address in status["listen_addrs"]:
        print(f"listening: {address}")
    print(f"peers:     {len(status['connected_peers'])} connected")
    relays = ", ".join(status["relays"]) or "none"
    print(f"reachable: {status['reachability']} (relays: {relays})")
    for peer, paths in sorted(status["peer_paths"].items()):  # SPEC §10.13
        named = (p if p in ("direct", "webrtc") else f"relayed via {p}" for p in paths)
        print(f"  {peer}: " + ", ".join(named))
    punches = status["hole_punches"]
    for transport, tried in sorted(punches["tried"].items()):
        went = punches["direct"].get(transport, 0)
        print(f"upgrades:  {transport}: {went} of {tried} relayed connections went direct")
    print(f"clients:   {status['clients']} connected")
    unreachable = status["unreachable"]
    for user in unreachable["users"]:
        print(f"waiting:   home of {user} unreachable; its messages wait parked")
    for peer in unreachable["own_homes"]:
        print(f"waiting:   our home {peer} unreachable; its copies wait parked")
    print(f"e2ee:      {status['undecryptable']} undecryptable (no key after requests)")
    print(f"version:   hearthmesh {status['version']} (protocol v{status['protocol_version']})")
    return 0


async def _send(client: ApiClient, args: Any) -> int:
    from hearthmesh.tools.message_cli import send_message

    room = args.room
    if room is None:
        room = (await client.call("POST", "/v1/conversation", {"recipient_id": args.to}))["room_id"]
    sent = await send_message(client, args, room)
    print(f"sent {sent['message_id']} to {room}")
    return 0


async def _tail(client: ApiClient, args: Any) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with client.websocket(args.cursor) as ws:
        reader = asyncio.ensure_future(_print_frames(ws, args))
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for task in (reader, stopper):
            task.cancel()
    return 0


async def _print_frames(ws: Any, args: Any) -> None:
    async for message in ws:
        frame = json.loads(message.data)
        if args.room and frame.get("room_id") not in (None, args.room):
            continue
        if args.json:
            print(json.dumps(frame), flush=True)
        elif frame["event"] == "message":
            print(f"[{frame['sender_id'][:12]}] {frame.get('message', '')}", flush=True)
            if args.ack and frame.get("client_id") is None:
                await ws.send_json(
                    {"event": "ack", "message_id": frame["message_id"], "status": "delivered"}
                )
        elif frame["event"] in ("receipt", "presence", "typing", "error", "resync"):
            print(f"({frame['event']}) {json.dumps(frame)}", flush=True)


def show_qr(text: str, png: str | None) -> None:
    """Print `text` as a QR code in the terminal; also as a PNG file if asked."""
    import segno

    qr = segno.make(text, error="m")
    qr.terminal(compact=True)
    if png:
        qr.save(png, scale=6)
        print(f"QR code written to {png}")


async def _device(client: ApiClient, args: Any) -> int:
    if args.action == "link":
        offer = await client.call("POST", "/v1/devices/link")
        show_qr(offer["code"], args.png)
        print(f"on the new device: hearthmesh init --data-dir DIR --link {offer['code']}")
        print(f"check that both screens show {offer['short_code']}; the code works once")
        return 0
    if args.action == "revoke":
        if not args.device_id:
            print("device revoke needs a DEVICE_ID", file=sys.stderr)
            return EXIT_USAGE
        await client.call("DELETE", f"/v1/devices/{args.device_id}")
        print(f"revoked {args.device_id}: it receives nothing new")
        return 0
    listing = await client.call("GET", "/v1/devices")
    for device in listing["devices"]:
        mark = "  (this device)" if device["this_device"] else ""
        print(f"{device['device_id']}  on {device['peer_id'] or '-'}{mark}")
    return 0


async def _paired_clients(client: ApiClient, args: Any) -> int:
    """`hearthmesh client pair|list|revoke`: browsers paired with the web client (SPEC §15.7)."""
    if args.action == "pair":
        offer = await client.call("POST", "/v1/clients/pair")
        show_qr(offer["url"], args.png)
        print(f"open {offer['url']} in the browser to pair (or scan the QR code),")
        print(f"or type the code {offer['code']} on its pairing screen; it works once, for 5 min")
        return 0
    if args.action == "revoke":
        if not args.client_id:
            print("client revoke needs a CLIENT_ID (see `hearthmesh client list`)", file=sys.stderr)
            return EXIT_USAGE
        await client.call("DELETE", f"/v1/clients/{args.client_id}")
        print(f"revoked {args.client_id}: its session ended")
        return 0
    clients = (await client.call("GET", "/v1/clients"))["clients"]
    for paired in clients:
        print(f"{paired['client_id']}  {paired['name']}  paired {_when(paired['created_ms'])}")
    if not clients:
        print("no browser is paired: `hearthmesh client pair`")
    return 0


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _show_flow(flow: dict[str, Any]) -> None:
    print(f"verification {flow['flow_id']}: {flow['state']}")
    if flow["user_id"]:
        print(f"  with {flow['user_id']}, device {flow['device_id']} on {flow['peer_id']}")
    if flow["emoji"]:
        print("  " + "  ".join(f"{e['symbol']} {e['name']}" for e in flow["emoji"]))
        print("  " + " ".join(str(d) for d in flow["decimals"]))
    if flow["state"] == "showing":
        print(f"  same on both devices? hearthmesh verify confirm {flow['flow_id']}")
        print(f"  different?            hearthmesh verify cancel {flow['flow_id']}")


async def _verify(client: ApiClient, args: Any) -> int:
    """`hearthmesh verify start|show|confirm|cancel|list|trust` (SPEC §29.5)."""
    if args.action == "start" and not args.target:
        print(f"verify {args.action} needs a USER_ID", file=sys.stderr)
        return EXIT_USAGE
    if args.action in ("show", "confirm", "cancel") and not args.target:
        print(f"verify {args.action} needs a FLOW_ID", file=sys.stderr)
        return EXIT_USAGE
    if args.action == "start":
        body = {"user_id": args.target, **({"peer_id": args.peer} if args.peer else {})}
        _show_flow(await client.call("POST", "/v1/verifications", body))
        print("  then: hearthmesh verify show FLOW_ID (once both keys are exchanged)")
        return 0
    if args.action == "trust":  # one user's, or (no USER_ID) every verified user's
        if args.target:
            views = [await client.call("GET", f"/v1/users/{args.target}/trust")]
        else:
            views = (await client.call("GET", "/v1/trust"))["users"]
            print(f"{len(views)} users with a verified device")
        for trust in views:
            indent = "" if args.target else "  "
            if not args.target:
                print(trust["user_id"])
            for device in trust["devices"]:
                mark = "verified" if device["verified"] else "not verified"
                print(f"{indent}{device['device_id']}  {mark}")
            if trust["keys_changed"]:
                print(f"{indent}warning: this user's device keys changed since you verified them")
        return 0
    if args.action == "list":
        for flow in (await client.call("GET", "/v1/verifications"))["verifications"]:
            _show_flow(flow)
        return 0
    path = f"/v1/verifications/{args.target}"
    if args.action == "show":
        _show_flow(await client.call("GET", path))
    else:
        _show_flow(await client.call("POST", f"{path}/{args.action}"))
    return 0


_COMMANDS: Final[dict[str, Callable[[ApiClient, Any], Awaitable[int]]]] = {
    "status": _status,
    "send": _send,
    "tail": _tail,
    "friends": social_cli.friends,
    "profile": social_cli.profile,
    "device": _device,
    "client": _paired_clients,
    "verify": _verify,
    "group": run_group,
}


def run_client_command(args: Any) -> int:
    """Run one client subcommand; returns its exit code."""
    try:
        url, token, pin = _connection(args)
    except (FileNotFoundError, HearthError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE

    from hearthmesh.tools.message_cli import MESSAGE_COMMANDS

    commands: dict[str, Callable[[ApiClient, Any], Awaitable[int]]] = {
        **_COMMANDS,
        **MESSAGE_COMMANDS,
    }
    command = commands[args.command]

    async def main() -> int:
        async with ApiClient(url, token, pin=pin) as client:
            return await command(client, args)

    try:
        return asyncio.run(main())
    except ApiRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_API
    except aiohttp.ServerFingerprintMismatch:
        print(
            f"error: the node at {url} shows another certificate than the one pinned "
            "(its fingerprint differs from DATA_DIR/api-cert.pem's); not talking to it",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE
    except (aiohttp.ClientConnectionError, TimeoutError) as exc:
        print(f"error: no node answers at {url} ({exc}); is `hearthmesh run` up?", file=sys.stderr)
        return EXIT_UNREACHABLE
