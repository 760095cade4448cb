"""`read_exactly` at a connection's end (node/p2p/eof_reads.py): over a real TCP connection
through py-libp2p's own stream classes, the peer's close ends the read at the first empty
read, where py-libp2p's read the ended socket 100 times more."""

from __future__ import annotations

import libp2p.io.msgio
import pytest
import trio
from libp2p.io.exceptions import IncompleteReadError
from libp2p.io.trio import TrioTCPStream
from libp2p.network.connection.raw_connection import RawConnection

from hearthmesh.node.p2p import eof_reads
from hearthmesh.node.p2p.eof_reads import read_exactly
from hearthmesh.node.p2p.host import HostConfig, P2PHost


class _Counted(RawConnection):
    """A raw connection that counts its reads."""

    reads = 0

    async def read(self, n: int | None = None) -> bytes:
        self.reads += 1
        return await super().read(n)


async def _read_after(sent: list[bytes], n: int) -> tuple[bytes | None, int, int]:
    """A peer sends `sent` (a write each) and closes; `read_exactly(n)` on our end: (what it
    returned or None, the bytes it had when it raised, our reads)."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:

        async def peer() -> None:
            stream = await listeners[0].accept()
            for data in sent:
                await stream.send_all(data)
                await trio.sleep(0.01)  # each its own read on our end
            await stream.aclose()

        nursery.start_soon(peer)
        ours = _Counted(TrioTCPStream(await trio.open_tcp_stream("127.0.0.1", port)), False)
        await trio.sleep(0.1)  # the peer has written and closed
        try:
            got, had = await read_exactly(ours, n), n
        except IncompleteReadError as exc:
            got, had = None, exc.received_bytes
    await listeners[0].aclose()
    return got, had, ours.reads


def test_the_peers_close_ends_the_read_at_once() -> None:
    assert trio.run(_read_after, [], 2) == (None, 0, 1)
    assert trio.run(_read_after, [b"a"], 2) == (None, 1, 2)


def test_what_the_peer_sent_before_closing_is_read_whole() -> None:
    assert trio.run(_read_after, [b"ab", b"cd"], 4)[:2] == (b"abcd", 4)


@pytest.mark.parametrize("n", [0, 3])
def test_a_read_of_what_is_there_takes_one_read(n: int) -> None:
    assert trio.run(_read_after, [b"xyz"], n)[::2] == (b"xyz"[:n], 1)


async def test_a_host_puts_it_where_py_libp2p_reads_exactly() -> None:
    async with P2PHost(HostConfig(identity_seed=bytes([9]) * 32)):
        assert vars(libp2p.io.msgio)["read_exactly"] is read_exactly
    assert all(vars(module)["read_exactly"] is read_exactly for module in eof_reads._IMPORTERS)
