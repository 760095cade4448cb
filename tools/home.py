"""`hearthmesh init` and `hearthmesh run`: create a home node's identity, then run it.

Settings come from, in rising priority: built-in defaults, a TOML config file
(`--config FILE`, else `DATA_DIR/config.toml` if present), environment variables
(`HEARTHMESH_DATA_DIR`, `HEARTHMESH_API`, `HEARTHMESH_LISTEN`, `HEARTHMESH_BOOTSTRAP` comma-
separated, `HEARTHMESH_NO_MDNS=1`), and the command line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import signal
import sys
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from hearthmesh.node.config import DEFAULT_LISTEN
from hearthmesh.protocol.errors import HearthError
from hearthmesh.tools.process_gc import freeze_startup_objects, tune_collector

__all__ = [
    "DEFAULT_DATA_DIR",
    "DEFAULT_LISTEN_TCP",
    "HomeSettings",
    "init_node",
    "parse_api",
    "resolve_settings",
    "run_node",
]

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR: Final = Path("data/node")
DEFAULT_LISTEN_TCP: Final = DEFAULT_LISTEN  # 127.0.0.1:4470; --listen for the LAN
DEFAULT_API: Final = "127.0.0.1:8470"


class SettingsError(HearthError):
    """A setting that cannot be used (a bad address, an unreadable config file)."""


@dataclass(kw_only=True)
class HomeSettings:
    """Everything `run` needs."""

    data_dir: Path = DEFAULT_DATA_DIR
    api: str = DEFAULT_API
    listen: list[str] = field(default_factory=lambda: [DEFAULT_LISTEN_TCP])
    bootstrap: list[str] = field(default_factory=list)
    mdns: bool = True
    name: str = ""
    # web client (#17): reaching the API from a phone (SPEC §15.7)
    tls: bool = False
    tls_cert: Path | None = None
    """An operator's certificate (PEM) instead of the one made at init; with `tls_key`."""
    tls_key: Path | None = None
    allowed_hosts: list[str] = field(default_factory=list)
    allowed_origins: list[str] = field(default_factory=list)


def parse_api(text: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 as [::1]:PORT). Raises SettingsError."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise SettingsError(f"--api wants HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _from_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"config file {path}: {exc}") from None


def resolve_settings(args: Any, env: dict[str, str] | None = None) -> HomeSettings:
    """Merge defaults, config file, environment and command line (in that order)."""
    env = dict(os.environ) if env is None else env
    settings = HomeSettings()
    data_dir = args.data_dir or env.get("HEARTHMESH_DATA_DIR")
    config_path = getattr(args, "config", None)
    if config_path is None and data_dir and (Path(data_dir) / "config.toml").is_file():
        config_path = Path(data_dir) / "config.toml"
    if config_path is not None:
        values = _from_file(Path(config_path))
        settings.data_dir = Path(values.get("data_dir", settings.data_dir))
        settings.api = str(values.get("api", settings.api))
        settings.listen = list(values.get("listen", settings.listen))
        settings.bootstrap = list(values.get("bootstrap", settings.bootstrap))
        settings.mdns = bool(values.get("mdns", settings.mdns))
        settings.name = str(values.get("name", settings.name))
        settings.tls = bool(values.get("tls", settings.tls))
        settings.tls_cert = Path(values["tls_cert"]) if "tls_cert" in values else None
        settings.tls_key = Path(values["tls_key"]) if "tls_key" in values else None
        settings.allowed_hosts = [str(h) for h in values.get("allowed_hosts", [])]
        settings.allowed_origins = [str(o) for o in values.get("allowed_origins", [])]
    if "HEARTHMESH_API" in env:
        settings.api = env["HEARTHMESH_API"]
    if "HEARTHMESH_LISTEN" in env:
        settings.listen = [a for a in env["HEARTHMESH_LISTEN"].split(",") if a]
    if "HEARTHMESH_BOOTSTRAP" in env:
        settings.bootstrap = [a for a in env["HEARTHMESH_BOOTSTRAP"].split(",") if a]
    if env.get("HEARTHMESH_NO_MDNS") in ("1", "true", "yes"):
        settings.mdns = False
    if data_dir:
        settings.data_dir = Path(data_dir)
    if getattr(args, "api", None):
        settings.api = args.api
    if getattr(args, "listen", None):
        settings.listen = list(args.listen)
    if getattr(args, "bootstrap", None):
        settings.bootstrap = list(args.bootstrap)
    if getattr(args, "no_mdns", False):
        settings.mdns = False
    if getattr(args, "tls", False):
        settings.tls = True
    parse_api(settings.api)
    return settings


def _has_identity(data_dir: Path) -> bool:
    return (data_dir / "store").exists()


def init_node(data_dir: Path, name: str, *, force: bool) -> dict[str, str]:
    """Create the keys, the user's profile and the API token; returns the new ids.

    Raises:
        SettingsError: an identity exists and `force` is not set.
    """
    from hearthmesh.node.api.tls import ensure_certificate
    from hearthmesh.node.api.token import create_token
    from hearthmesh.node.clock import SystemClock
    from hearthmesh.node.identity.keyring import load_or_create_keyring
    from hearthmesh.protocol.identity import device_id_text, user_id_text
    from hearthmesh.storage.api import Profile
    from hearthmesh.storage.lmdb_store import LmdbStore

    if _has_identity(data_dir) or (data_dir / "api-token").exists():
        if not force:
            raise SettingsError(
                f"{data_dir} already holds a node identity; "
                "pass --force to replace it (its keys and history are deleted)"
            )
        shutil.rmtree(data_dir / "store", ignore_errors=True)
        (data_dir / "api-token").unlink(missing_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    clock = SystemClock()
    store = LmdbStore(data_dir / "store")
    try:
        keyring = load_or_create_keyring(store, now_ms=clock.now_ms, rng=secrets.token_bytes)
        store.put_profile(
            Profile(
                user=keyring.user_id,
                handle="",
                display_name=name,
                avatar=None,
                bio="",
                updated_ms=clock.now_ms(),
            )
        )
    finally:
        store.close()
    create_token(data_dir, force=True)
    ensure_certificate(data_dir)  # for `run --tls` (SPEC §15.7)
    return {
        "user_id": user_id_text(keyring.user_id),
        "device_id": device_id_text(keyring.device_id),
        "peer_id": keyring.peer_id,
        "token_file": str(data_dir / "api-token"),
    }


def link_node(data_dir: Path, code: str, listen: list[str]) -> dict[str, str]:
    """Make `data_dir` a new device of the user whose primary showed `code`; returns the ids.

    Raises:
        HearthError: a damaged or used code, an unreachable primary, or a directory that
            already holds a user.
    """
    from hearthmesh.node.api.token import create_token
    from hearthmesh.node.clock import SystemClock
    from hearthmesh.node.identity.linking import link_new_device
    from hearthmesh.protocol.identity import DeviceId, UserId, device_id_text, user_id_text

    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    linked = asyncio.run(
        link_new_device(
            data_dir,
            code,
            now_ms=SystemClock().now_ms,
            rng=secrets.token_bytes,
            listen_addrs=tuple(listen),
        )
    )
    create_token(data_dir, force=True)
    return {
        "user_id": user_id_text(UserId(linked.user)),
        "device_id": device_id_text(DeviceId(linked.device)),
        "peer_id": linked.peer_id,
        "token_file": str(data_dir / "api-token"),
    }


async def _serve(settings: HomeSettings, started: Any) -> None:
    from hearthmesh.node.api import ApiConfig, ApiServer
    from hearthmesh.node.api.token import load_token
    from hearthmesh.node.config import NodeConfig
    from hearthmesh.node.node import Node

    host, port = parse_api(settings.api)
    token = load_token(settings.data_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    config = NodeConfig(
        data_dir=settings.data_dir,
        display_name=settings.name,
        listen_addrs=tuple(settings.listen),
        bootstrap=tuple(settings.bootstrap),
        enable_mdns=settings.mdns,
    )
    api_config = ApiConfig(
        token=token,
        host=host,
        port=port,
        allowed_hosts=tuple(settings.allowed_hosts),
        allowed_origins=tuple(settings.allowed_origins),
    )
    if settings.tls:
        cert, key = _tls_files(settings)
        api_config = replace(api_config, tls_cert_file=cert, tls_key_file=key)
    async with Node(config) as node, ApiServer(node, api_config) as api:
        started(node, api)
        await stop.wait()
        print("stopping: announcing offline, flushing, closing the store ...", flush=True)
    print("stopped cleanly", flush=True)


def _tls_files(settings: HomeSettings) -> tuple[Path, Path]:
    """The API's certificate and key with --tls: the operator's, else the one made at init
    (made now for a data dir from before), naming the configured hosts."""
    from hearthmesh.node.api.tls import CERT_FILE, KEY_FILE, ensure_certificate

    if settings.tls_cert is not None and settings.tls_key is not None:
        return settings.tls_cert, settings.tls_key
    ensure_certificate(settings.data_dir, settings.allowed_hosts)
    return settings.data_dir / CERT_FILE, settings.data_dir / KEY_FILE


def run_node(settings: HomeSettings) -> int:
    """Run until SIGINT/SIGTERM; returns the exit code."""
    from hearthmesh.protocol.identity import user_id_text

    if not _has_identity(settings.data_dir):
        ids = init_node(settings.data_dir, settings.name, force=False)
        print(f"created a new identity in {settings.data_dir} (user {ids['user_id']})")

    def started(node: Any, api: Any) -> None:
        freeze_startup_objects()
        print("hearthmesh home node up", flush=True)
        print(f"  user id:   {user_id_text(node.user_id)}")
        print(f"  peer id:   {node.peer_id}")
        for address in node.listen_addrs:
            print(f"  listening: {address}")
        print(f"  API:       {api.url}  (token: {settings.data_dir / 'api-token'})")
        print(f"  web:       {api.url}/  (pair a browser: hearthmesh client pair)")
        print("press Ctrl-C to stop", flush=True)

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    tune_collector()
    try:
        asyncio.run(_serve(settings, started))
    except HearthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the API port is taken, say
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
