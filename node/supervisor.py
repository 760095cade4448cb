"""Supervision (SPEC §11.8): nothing a peer or a client sends can end a service or the node.

Every long-lived service of a node (the outbox worker, the relay, presence, the room-gossip
listeners, the API pumps...) and every background reaction runs under one `Supervisor`, in one
task group. An unexpected exception in one of them is logged once with its context (the
service's name, and the peer when one is known), charged to that peer, and the service goes
on: a one-shot reaction simply ends, a service is restarted after a backoff. The node stops only
for its own fatal faults (`FATAL`): a `StorageError` (the store failed) or a `NodeFailed` (the
libp2p run ended unasked), met by a service or a stream handler alike. The first one is kept,
every service is cancelled, and `wait_fatal()` returns it to the node, which stops itself
(fail-stop, SPEC §11.8.5). It is not raised into the task group: that would cancel whichever
task happened to enter the group (the one that started the node) and tell no one why.

One `UnreadableItem` (a damaged blob, a row that does not decode) is no such fault: it is
contained where it is met, logged once per item (`unreadable`) and charged to no one, since the
fault is ours and a peer asking for it again must not restart the node each time (§11.8.7).

Inside a service, one input at a time is contained with `contain(name, peer)`: what one peer's
message breaks costs that message alone, and the next one is handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, Final, Protocol, Self, TypeVar

from hearthmesh.node.p2p.errors import P2PError
from hearthmesh.protocol.errors import (
    HearthError,
    LocalProtocolError,
    MalformedMessage,
    NodeFailed,
    RemoteProtocolError,
    StorageError,
    UnreadableItem,
    store_failed,
)

__all__ = ["FATAL", "MAX_UNREADABLE_LOGGED", "RESTART_BACKOFF_S", "Supervisor"]

log = logging.getLogger(__name__)

RESTART_BACKOFF_S: Final = (0.05, 30.0)
"""A failed service is restarted after the first delay, doubled per failure in a row, capped
at the second; a run that lasted longer than the cap resets the count."""

FATAL: Final = (StorageError, NodeFailed)
"""The node's own faults: never contained; the first ends every service (`wait_fatal`).
`UnreadableItem`, a `StorageError`, is caught before this tuple wherever it is used."""

MAX_UNREADABLE_LOGGED: Final = 1024
"""Unreadable items remembered as logged; past it, each new one is one DEBUG line."""


class Charge(Protocol):
    """Charges a refusal to a peer, under the input's name (`PeerStanding.refused_item`)."""

    def __call__(self, peer: str, error: RemoteProtocolError, *, protocol: str) -> None: ...


Report = Callable[[str, HearthError], None]
"""Where a fault met outside a supervisor goes (`Supervisor.report`, `Node.report_fault`)."""

Work = Coroutine[Any, Any, None]


class _FromPeer(Protocol):
    @property
    def remote_peer(self) -> str: ...


S = TypeVar("S", bound=_FromPeer)


class Supervisor:
    """One task group of supervised services; `async with` bounds their lifetime."""

    def __init__(
        self,
        *,
        charge: Charge | None = None,
        backoff_s: tuple[float, float] = RESTART_BACKOFF_S,
        on_fatal: Report | None = None,
    ) -> None:
        self._charge = charge
        self._on_fatal = on_fatal
        self._backoff_s = backoff_s
        self._group: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._logged: set[tuple[str, str]] = set()
        self._unreadable_logged: set[str] = set()
        self._unreadable_observers: list[Callable[[UnreadableItem], None]] = []
        self._fatal: asyncio.Future[HearthError] | None = None
        self.faults = 0
        """Unexpected exceptions contained since start (services and inputs)."""
        self.unreadable_items = 0
        """Times an unreadable item was met (each one logged once, `unreadable`)."""

    async def __aenter__(self) -> Self:
        group = asyncio.TaskGroup()
        await group.__aenter__()
        self._group = group
        self._fatal = asyncio.get_running_loop().create_future()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        group, self._group = self._group, None
        self.cancel()
        if group is not None:
            await group.__aexit__(*exc_info)

    def set_charge(self, charge: Charge) -> None:
        """Where contained faults with a known peer are charged (set once peers exist)."""
        self._charge = charge

    def spawn(self, work: Work, name: str) -> None:
        """Run a one-shot reaction: an unexpected exception is logged once and ends it."""
        if self._group is None:  # refused below: `_start` closes only the wrapper
            work.close()  # so no "coroutine was never awaited" warning for `work`
        task = self._start(self._once(work, name), name)
        # A task cancelled before its first step (the node stopping) never runs its wrapper,
        # so `work` would be left unawaited; once the task is done, `work` ended or never
        # began, and closing it is a no-op or keeps it quiet.
        task.add_done_callback(lambda _: work.close())

    def keep(self, service: Callable[[], Work], name: str) -> None:
        """Run a service until it returns: after an unexpected exception, `service()` starts
        it again after a backoff (RESTART_BACKOFF_S)."""
        self._start(self._keep(service, name), name)

    def cancel(self) -> None:
        """Cancel every task (the node is stopping); the group's exit waits for them."""
        for task in list(self._tasks):
            task.cancel()

    async def wait_fatal(self) -> HearthError:
        """The first fatal fault (`FATAL`) of a service, once one ended them all."""
        fatal = self._fatal
        if fatal is None:
            raise LocalProtocolError("wait_fatal outside the supervisor's lifetime")
        return await asyncio.shield(fatal)

    def _fatal_fault(self, name: str, exc: HearthError) -> None:
        """Keep the first fatal fault for `wait_fatal` and end every service; the node that
        waits logs it (once, as the cause of its stop)."""
        fatal = self._fatal
        if fatal is not None and not fatal.done():
            log.debug("%s hit a fatal fault: %r", name, exc)
            fatal.set_result(exc)
            self.cancel()
            if self._on_fatal is not None:  # a supervisor of the API: the node's fault too
                self._on_fatal(name, exc)

    def report(self, name: str, exc: HearthError) -> None:
        """A fault that `name` met outside this supervisor's tasks and answered itself (an API
        request): a store that failed is the node's fatal fault, one unreadable item is noted
        once (`unreadable`); any other error is the caller's alone."""
        if isinstance(exc, UnreadableItem):
            self.unreadable(name, exc)
        elif isinstance(exc, FATAL):
            self._fatal_fault(name, exc)

    def handler(
        self, name: str, serve: Callable[[S], Awaitable[None]]
    ) -> Callable[[S], Awaitable[None]]:
        """`serve` for a stream handler: an unexpected exception is logged once (`_fault`) and
        raised as `MalformedMessage`, so the host, which owns a stream's outcome, charges it to
        the peer as a whole frame and resets the stream, exactly once (SPEC §11.8.2).
        Refusals and ended links pass through unchanged. An `UnreadableItem` is logged once
        and passes through (the host resets that stream and charges no one); any other
        `StorageError` or `NodeFailed` is the node's fatal fault, as in a service."""

        async def supervised(stream: S) -> None:
            try:
                await serve(stream)
            except UnreadableItem as exc:
                self.unreadable(name, exc)
                raise
            except FATAL as exc:
                self._fatal_fault(name, exc)
                raise
            except (RemoteProtocolError, P2PError):
                raise
            except Exception as exc:
                self._fault(name, exc, stream.remote_peer)
                raise MalformedMessage(f"input made {name} fail: {exc!r}") from exc

        return supervised

    @contextlib.contextmanager
    def contain(self, name: str, peer: str | None = None) -> Iterator[None]:
        """Handle one input of `peer`: a `RemoteProtocolError` is charged and dropped quietly;
        a stream or connection that ended (`P2PError`: a peer killed, a link cut) is an
        expected event, one DEBUG line; anything else unexpected is logged once and charged as
        malformed input. An `UnreadableItem` is logged once and dropped, charged to no one
        (the fault is ours); any other `StorageError` and cancellation pass through."""
        try:
            yield
        except UnreadableItem as exc:
            self.unreadable(name, exc)
        except StorageError:
            raise
        except P2PError as exc:
            log.debug("%s: the link to %s ended: %s", name, _short(peer), exc)
        except RemoteProtocolError as exc:
            log.debug("%s: input from %s refused: %s", name, _short(peer), exc)
            self._charge_peer(peer, exc, name)
        except Exception as exc:
            self._fault(name, exc, peer)
            self._charge_peer(peer, MalformedMessage(f"input made {name} fail: {exc!r}"), name)

    def _start(self, work: Work, name: str) -> asyncio.Task[None]:
        if self._group is None:
            work.close()
            raise LocalProtocolError(f"{name} started outside the supervisor's lifetime")
        task = self._group.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _once(self, work: Work, name: str) -> None:
        try:
            await work
        except UnreadableItem as exc:
            self.unreadable(name, exc)
        except FATAL as exc:
            self._fatal_fault(name, exc)
        except Exception as exc:
            self._fault_or_fatal(name, exc)

    async def _keep(self, service: Callable[[], Work], name: str) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            started = loop.time()
            try:
                await service()
                return
            except UnreadableItem as exc:
                self.unreadable(name, exc)
            except FATAL as exc:
                self._fatal_fault(name, exc)
                return
            except Exception as exc:
                if self._fault_or_fatal(name, exc):
                    return
            first, cap = self._backoff_s
            failures = 1 if loop.time() - started > cap else failures + 1
            delay = min(cap, first * 2 ** min(failures - 1, 30))
            log.info("service %s restarts in %.2f s", name, delay)
            await asyncio.sleep(delay)

    def _fault_or_fatal(self, name: str, exc: Exception) -> bool:
        """A service's unexpected exception: the node's fatal fault if one is inside it (a
        service with a task group of its own raises an `ExceptionGroup`, which `except FATAL`
        does not match), so True; else a fault logged once, so False."""
        fatal = _fatal_inside(exc)
        if fatal is None:
            self._fault(name, exc, None)
            return False
        self._fatal_fault(name, fatal)
        return True

    def unreadable(self, name: str, exc: UnreadableItem) -> None:
        """Note one unreadable item met by `name`: an ERROR naming it the first time (up to
        MAX_UNREADABLE_LOGGED items), a DEBUG line each time after; nothing is charged."""
        self.unreadable_items += 1
        if exc.item in self._unreadable_logged:
            log.debug("%s met unreadable %s again", name, exc.item)
        elif len(self._unreadable_logged) >= MAX_UNREADABLE_LOGGED:
            log.debug("%s met unreadable %s: %s", name, exc.item, exc)
        else:
            self._unreadable_logged.add(exc.item)
            log.error("%s met an unreadable item; the node goes on: %s", name, exc)
        for observer in self._unreadable_observers:
            observer(exc)

    def observe_unreadable(self, observer: Callable[[UnreadableItem], None]) -> None:
        """Tell `observer` of each unreadable item met, wherever: what can repair one (a
        damaged blob fetched again, SPEC §11.8.7) hears of it from every path alike."""
        self._unreadable_observers.append(observer)

    def _fault(self, name: str, exc: Exception, peer: str | None) -> None:
        """Log an unexpected exception: with its traceback the first time for this service and
        type, then one DEBUG line each (a flood of one bad input is not a flood of tracebacks)."""
        self.faults += 1
        key = (name, type(exc).__qualname__)
        context = name if peer is None else f"{name} (input from peer {peer})"
        if key in self._logged:
            log.debug("%s failed again: %r", context, exc)
            return
        self._logged.add(key)
        log.error("%s failed; it goes on: %r", context, exc, exc_info=exc)

    def _charge_peer(self, peer: str | None, error: RemoteProtocolError, name: str) -> None:
        if peer and self._charge is not None:
            self._charge(peer, error, protocol=name)


def _short(peer: str | None) -> str:
    return "?" if peer is None else peer[-8:]


def _fatal_inside(exc: BaseException) -> HearthError | None:
    """The first fatal fault (`FATAL`, not one `UnreadableItem`) in `exc`'s group, at any depth."""
    if not isinstance(exc, BaseExceptionGroup):
        return None
    for inner in exc.exceptions:
        if isinstance(inner, NodeFailed) or store_failed(inner):
            return inner
        found = _fatal_inside(inner)
        if found is not None:
            return found
    return None
