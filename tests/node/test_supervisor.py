"""The supervisor (SPEC §11.8): faults are logged once, charged, and services go on."""

from __future__ import annotations

import asyncio
import inspect
import logging

import pytest

from hearthmesh.node.p2p.errors import StreamClosed
from hearthmesh.node.supervisor import Supervisor
from hearthmesh.protocol.errors import (
    ErrorCode,
    LocalProtocolError,
    MalformedMessage,
    RemoteProtocolError,
    StorageError,
    TooLarge,
    UnreadableItem,
)

FAST = (0.001, 0.01)


class FlakyService:
    """Fails `failures` times with the same bug, then runs until told to stop."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.starts = 0
        self.running = asyncio.Event()
        self.stop = asyncio.Event()

    async def run(self) -> None:
        self.starts += 1
        if self.starts <= self.failures:
            raise KeyError("a bug an input found")
        self.running.set()
        await self.stop.wait()


class IdleService:
    """Waits until cancelled; says when it started and when it ended."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.ended = asyncio.Event()

    async def run(self) -> None:
        self.started.set()
        try:
            await asyncio.Event().wait()
        finally:
            self.ended.set()


async def test_a_failing_service_is_restarted_and_its_fault_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="hearthmesh.node.supervisor")
    async with asyncio.timeout(5):
        service = FlakyService(failures=3)
        async with Supervisor(backoff_s=FAST) as supervisor:
            supervisor.keep(service.run, "flaky")
            await service.running.wait()
            service.stop.set()
        assert service.starts == 4
        assert supervisor.faults == 3
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "flaky" in errors[0].getMessage() and errors[0].exc_info is not None


async def test_a_one_shot_reaction_that_fails_ends_alone() -> None:
    async with asyncio.timeout(5):
        service = FlakyService(failures=0)
        async with Supervisor(backoff_s=FAST) as supervisor:
            supervisor.keep(service.run, "steady")
            supervisor.spawn(FlakyService(failures=1).run(), "reaction")
            await service.running.wait()
            while supervisor.faults == 0:  # noqa: ASYNC110 - a count with no event
                await asyncio.sleep(0)
            assert service.starts == 1  # the other service never noticed
            service.stop.set()


async def test_a_storage_error_ends_the_group() -> None:
    """The fault ends every service and is handed to the node (`wait_fatal`), which stops
    itself (SPEC §11.8.5); it is not raised into the group, which would cancel whichever task
    entered it (the one that started the node) and tell it nothing."""
    broken = StorageError("the disk is gone")

    async def broken_store() -> None:
        raise broken

    relay = IdleService()
    async with asyncio.timeout(5), Supervisor(backoff_s=FAST) as supervisor:
        supervisor.keep(relay.run, "relay")
        supervisor.keep(broken_store, "outbox")
        assert await supervisor.wait_fatal() is broken
        await relay.ended.wait()  # the other service was cancelled


async def test_a_storage_error_inside_a_services_task_group_ends_the_group() -> None:
    """A service with a task group of its own (the media fetcher's) raises its child's
    StorageError inside an ExceptionGroup: still the node's fatal fault, not a restart."""
    broken = StorageError("the disk is gone")

    async def fails() -> None:
        raise broken

    async def fetcher() -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(fails())
            await asyncio.Event().wait()

    relay = IdleService()
    async with asyncio.timeout(5), Supervisor(backoff_s=FAST) as supervisor:
        supervisor.keep(relay.run, "relay")
        supervisor.keep(fetcher, "media-fetch")
        assert await supervisor.wait_fatal() is broken
        await relay.ended.wait()
    assert supervisor.faults == 0


async def test_contained_inputs_are_charged_to_their_peer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    charged: list[tuple[str, RemoteProtocolError]] = []
    supervisor = Supervisor(charge=lambda peer, error, protocol: charged.append((peer, error)))
    with supervisor.contain("listener", "peer-a"):
        raise TooLarge("a refusal of the family")
    for _ in range(3):
        with supervisor.contain("listener", "peer-b"):
            raise IndexError("a bug an input found")
    with supervisor.contain("listener"):  # no peer known: logged, charged to no one
        raise IndexError("a bug an input found")
    with supervisor.contain("listener", "peer-c"):  # a killed peer: expected, costs nothing
        raise StreamClosed("stream write failed: StreamReset()")
    assert [(peer, error.code) for peer, error in charged] == [
        ("peer-a", ErrorCode.TOO_LARGE),
        ("peer-b", ErrorCode.MALFORMED),
        ("peer-b", ErrorCode.MALFORMED),
        ("peer-b", ErrorCode.MALFORMED),
    ]
    assert isinstance(charged[1][1], MalformedMessage)
    assert supervisor.faults == 4
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1
    with pytest.raises(StorageError), supervisor.contain("listener", "peer-a"):
        raise StorageError("ours, fatal")


class _Stream:
    """What `Supervisor.handler` reads of a stream: its peer."""

    remote_peer = "peer-a"


async def test_a_store_failure_in_a_stream_handler_ends_the_group() -> None:
    """A store that failed under a stream handler is the node's fatal fault too (SPEC
    §11.8.5): the handler's stream ends with it and every service is cancelled."""
    broken = StorageError("write to store x failed: EIO")

    async def serve(stream: _Stream) -> None:
        raise broken

    relay = IdleService()
    async with asyncio.timeout(5), Supervisor(backoff_s=FAST) as supervisor:
        supervisor.keep(relay.run, "relay")
        await relay.started.wait()  # a task cancelled before it ran never ends visibly
        with pytest.raises(StorageError):
            await supervisor.handler("/hearthmesh/media/0", serve)(_Stream())
        assert await supervisor.wait_fatal() is broken
        await relay.ended.wait()


async def test_an_unreadable_item_is_contained_logged_once_and_charged_to_no_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One unreadable item (SPEC §11.8.7) met by a handler, an input or a service ends that
    request alone: the node goes on, the item is logged once, no peer pays."""
    caplog.set_level(logging.DEBUG, logger="hearthmesh.node.supervisor")
    damaged = UnreadableItem("media blob m/ab/abcd does not match", item="m/ab/abcd")
    charged: list[tuple[str, RemoteProtocolError]] = []

    async def serve(stream: _Stream) -> None:
        raise damaged

    async def service() -> None:
        raise damaged

    async with asyncio.timeout(5):
        async with Supervisor(
            charge=lambda peer, error, protocol: charged.append((peer, error)), backoff_s=FAST
        ) as supervisor:
            for _ in range(3):  # the host resets that stream alone
                with pytest.raises(UnreadableItem):
                    await supervisor.handler("/hearthmesh/media/0", serve)(_Stream())
            with supervisor.contain("listener", "peer-b"):
                raise damaged
            supervisor.spawn(service(), "purge")
            while supervisor.unreadable_items < 5:  # noqa: ASYNC110 - a count with no event
                await asyncio.sleep(0)
            fatal = asyncio.ensure_future(supervisor.wait_fatal())
            await asyncio.sleep(0)
            assert not fatal.done()
            fatal.cancel()
    assert charged == []
    assert supervisor.faults == 0
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "m/ab/abcd" in errors[0].getMessage()


async def test_a_fault_reported_from_outside_is_fatal_only_when_the_store_failed() -> None:
    """What the API met and answered itself (`report`): one unreadable item is counted, a
    refusal is the caller's alone, a store that failed ends every service and is handed on
    (`on_fatal`: the API's own supervisor tells the node's)."""
    damaged = UnreadableItem("row r/1 does not decode", item="r/1")
    broken = StorageError("store /x: I/O error")
    handed: list[tuple[str, Exception]] = []
    async with asyncio.timeout(5):
        async with Supervisor(
            backoff_s=FAST, on_fatal=lambda name, exc: handed.append((name, exc))
        ) as supervisor:
            idle = IdleService()
            supervisor.keep(idle.run, "idle")
            await idle.started.wait()
            fatal = asyncio.ensure_future(supervisor.wait_fatal())
            supervisor.report("api", damaged)
            supervisor.report("api", TooLarge("a refusal"))
            await asyncio.sleep(0)
            assert not fatal.done() and supervisor.unreadable_items == 1
            supervisor.report("api", broken)
            assert await fatal is broken
            await idle.ended.wait()
    assert handed == [("api", broken)]
    assert supervisor.faults == 0


async def test_a_reaction_spawned_after_the_end_is_refused_and_closed() -> None:
    """A reaction spawned once the node stopped (a home lookup after a fail-stop) is refused
    and closed: it was left unawaited, a RuntimeWarning in test_fail_stop."""

    async def reaction() -> None:
        await asyncio.sleep(0)

    async with Supervisor() as supervisor:
        pass
    work = reaction()
    with pytest.raises(LocalProtocolError):
        supervisor.spawn(work, "late")
    assert inspect.getcoroutinestate(work) == inspect.CORO_CLOSED  # nothing left to warn about


async def test_a_reaction_cancelled_before_it_started_is_closed() -> None:
    """A reaction spawned just before the node stops (a home lookup as a fail-stop begins) is
    cancelled before its first step: its wrapper never ran, so the reaction inside it was
    left unawaited, the RuntimeWarning still seen in test_fail_stop's whole-suite runs."""

    async def reaction() -> None:
        await asyncio.sleep(0)

    work = reaction()
    async with Supervisor() as supervisor:
        supervisor.spawn(work, "just before the stop")
        supervisor.cancel()  # before the loop ran the new task's first step
    assert inspect.getcoroutinestate(work) == inspect.CORO_CLOSED  # nothing left to warn about
