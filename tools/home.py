"""`hearthmesh init` and `hearthmesh run`: create a home node's identity, then run it.

`run` serves the node and its client API until SIGINT/SIGTERM. A node that failed (its libp2p
run ended unasked, its store failed: it stopped itself, SPEC §11.8.5) is started again in this
process from the same data dir after a backoff, its API showing the failure meanwhile; the run
gives up with exit code 1 when faults repeat (`tools/restarts.py`, SPEC §11.8.6) or a start
fails on the store. Settings (config file, environment, flags) are merged by
`hearthmesh.tools.settings`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
import signal
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hearthmesh.protocol.actions import MAX_RECALL_WINDOW_MS
from hearthmesh.protocol.errors import HearthError, NodeFailed, StorageError
from hearthmesh.protocol.prefixes import PrefixPolicy
from hearthmesh.tools.bench.cost_probe import node_windows
from hearthmesh.tools.bench.loop_lag import watch_loop
from hearthmesh.tools.event_loop import run_node_loop
from hearthmesh.tools.process_gc import freeze_startup_objects, tune_collector
from hearthmesh.tools.restarts import RestartPolicy, Restarts
from hearthmesh.tools.settings import HomeSettings, SettingsError, parse_api

if TYPE_CHECKING:
    from hearthmesh.node.api import ApiConfig
    from hearthmesh.node.config import NodeConfig
    from hearthmesh.node.node import Node

__all__ = ["init_node", "link_node", "node_config", "run_node", "serve_restarting"]

log = logging.getLogger(__name__)


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


def node_config(settings: HomeSettings) -> NodeConfig:
    """The node's settings as `hearthmesh run` starts it with `settings`."""
    from hearthmesh.node.config import NodeConfig
    from hearthmesh.node.p2p.relay_limits import RelayServiceLimits
    from hearthmesh.storage.api import DEFAULT_RELAY_QUOTA

    return NodeConfig(
        data_dir=settings.data_dir,
        display_name=settings.name,
        listen_addrs=tuple(settings.listen),
        announce_addrs=tuple(settings.announce),
        bootstrap=tuple(settings.bootstrap),
        enable_mdns=settings.mdns,
        share_presence=settings.share_presence,
        relay_service=settings.relay_service,
        relay_reservations=settings.relay_reservations,
        webrtc=settings.webrtc,
        stun_servers=tuple(settings.stun_servers),
        upnp=settings.upnp,
        autonat_loopback=settings.autonat_loopback,
        trio_on_loop=settings.trio_on_loop,
        relay_limits=RelayServiceLimits(
            max_reservations=settings.relay_max_reservations,
            max_circuits_per_reservation=settings.relay_circuits_per_reservation,
            circuit_bytes=settings.relay_circuit_bytes,
            circuit_seconds=settings.relay_circuit_seconds,
        ),
        prefixes=PrefixPolicy(exempt_loopback=settings.prefix_exempt_loopback),
        relay_ttl_ms=settings.relay_inbox_days * 86_400_000,
        relay_quota=replace(
            DEFAULT_RELAY_QUOTA,
            max_count=settings.relay_inbox_recipient_count,
            max_bytes=settings.relay_inbox_recipient_bytes,
            stranger_count=settings.relay_inbox_stranger_count,
            stranger_bytes=settings.relay_inbox_stranger_bytes,
            total_count=settings.relay_inbox_total_count,
            total_bytes=settings.relay_inbox_total_bytes,
        ),
    )


async def _serve(settings: HomeSettings, started: Any) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return await serve_restarting(settings, started, stop)


async def serve_restarting(
    settings: HomeSettings,
    started: Any,
    stop: asyncio.Event,
    policy: RestartPolicy | None = None,
) -> int:
    """Serve the node and its API until `stop` is set (0), starting a failed node again after
    the policy's wait; 1 once the policy gives up. `started(node, api)` hears of each start.

    Raises:
        HearthError, OSError: the first start failed (settings, a taken port), or any start
            failed on the store (StorageError: starting again would not cure it).
    """
    restarts = Restarts(policy or RestartPolicy())
    loop = asyncio.get_running_loop()
    first = True
    while not stop.is_set():
        try:
            gave_up = await _serve_once(settings, started, stop, restarts, loop.time)
        except StorageError:
            raise
        except (HearthError, OSError) as exc:
            if first:
                raise
            gave_up = await _after_fault(exc, restarts, stop, loop.time())
        if gave_up:
            return 1
        first = False
    return 0


async def _serve_once(
    settings: HomeSettings,
    started: Any,
    stop: asyncio.Event,
    restarts: Restarts,
    now_s: Callable[[], float],
) -> bool:
    """One node's run: until `stop`, or its failure and the wait after it (the failed node's
    API answering meanwhile, its status saying why). True when the policy gives up."""
    from hearthmesh.node.api import ApiServer
    from hearthmesh.node.node import Node

    async with (
        Node(node_config(settings)) as node,
        ApiServer(node, _api_config(settings)) as api,
        watch_loop(lambda: {"store_transactions": node.store.transactions}),
        node_windows(node),
    ):
        started(node, api)
        failure = await _stopped_or_failed(stop, node)
        if failure is None:
            print("stopping: announcing offline, flushing, closing the store ...", flush=True)
            gave_up = False
        else:
            gave_up = await _after_fault(failure, restarts, stop, now_s())
    if failure is None:
        print("stopped cleanly", flush=True)
    return gave_up


async def _stopped_or_failed(stop: asyncio.Event, node: Node) -> NodeFailed | None:
    """Wait for `stop` or the node's failure, whichever is first: the failure, or None."""
    async with asyncio.TaskGroup() as group:
        stopped = group.create_task(stop.wait())
        failed = group.create_task(node.wait_failed())
        await asyncio.wait([stopped, failed], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        failed.cancel()
    return None if stop.is_set() or failed.cancelled() else failed.result()


async def _after_fault(
    fault: BaseException, restarts: Restarts, stop: asyncio.Event, now_s: float
) -> bool:
    """Count a fault and wait before the restart (a stop ends the wait); True: give up."""
    wait_s = restarts.fault(now_s)
    if wait_s is None:
        policy = restarts.policy
        print(
            f"error: {restarts.faults} faults within {policy.window_s:.0f} s, the last: "
            f"{fault}; giving up",
            file=sys.stderr,
            flush=True,
        )
        return True
    print(f"node failed: {fault}; starting it again in {wait_s:.0f} s", flush=True)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait_s):
            await stop.wait()
    return False


def _api_config(settings: HomeSettings) -> ApiConfig:
    from hearthmesh.node.api import ApiConfig
    from hearthmesh.node.api.token import load_token

    host, port = parse_api(settings.api)
    token = load_token(settings.data_dir)
    api_config = ApiConfig(
        token=token,
        host=host,
        port=port,
        allowed_hosts=tuple(settings.api_allowed_hosts),
        allowed_origins=tuple(settings.api_allowed_origins),
        recall_window_ms=min(settings.recall_window_ms, MAX_RECALL_WINDOW_MS),
    )
    if settings.api_tls:
        cert, key = _tls_files(settings)
        api_config = replace(api_config, tls_cert_file=cert, tls_key_file=key)
    return api_config


def _tls_files(settings: HomeSettings) -> tuple[Path, Path]:
    """The API's certificate and key with --tls: the operator's, else the one made at init
    (made now for a data dir from before), naming the configured hosts (SPEC §15.7)."""
    from hearthmesh.node.api.tls import CERT_FILE, KEY_FILE, ensure_certificate

    if settings.api_tls_cert and settings.api_tls_key:
        return Path(settings.api_tls_cert), Path(settings.api_tls_key)
    ensure_certificate(settings.data_dir, settings.api_allowed_hosts)
    return settings.data_dir / CERT_FILE, settings.data_dir / KEY_FILE


def run_node(settings: HomeSettings) -> int:
    """Run until SIGINT/SIGTERM, restarting a failed node (SPEC §11.8.6); the exit code."""
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
        for address in settings.announce:  # what the home record and identify give peers
            print(f"  announced: {address}/p2p/{node.peer_id}")
        if settings.public:  # SPEC §10.14
            given = "an announced" if settings.announce else "a listening"
            print(
                f"  public:    bootstrap and relay node (relay service for "
                f"{settings.relay_max_reservations} peers); give others {given} address"
            )
        print(f"  API:       {api.url}  (token: {settings.data_dir / 'api-token'})")
        print(f"  web:       {api.url}/  (pair a browser: hearthmesh client pair)")
        print("press Ctrl-C to stop", flush=True)

    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    logging.getLogger("multiaddr").setLevel(logging.WARNING)  # a line per address parsed
    tune_collector()
    try:
        return run_node_loop(_serve(settings, started), uvloop=settings.uvloop)
    except HearthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the API port is taken, say
        print(f"error: {exc}", file=sys.stderr)
        return 1
