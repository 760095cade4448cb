"""A tiny STUN server (RFC 5389 Binding only) and a one-shot STUN client, for the namespace lab:
they tell what mapping a NAT gives a UDP socket, and let WebRTC (aiortc's ICE) learn its
server-reflexive candidates from a STUN server (SPEC §10.16). The message codec is aioice's
(aiortc's ICE library, already a dependency). State owned: the server's UDP socket.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Final, cast

from aioice import stun

from hearthmesh.tools.netlab import in_netns

__all__ = ["STUN_PORT", "StunServer", "stun_mapped_address", "udp_socket_in"]

CLIENT_TIMEOUT_S: Final = 2.0
STUN_PORT: Final = 3478


def udp_socket_in(ns: str, address: str = "0.0.0.0", port: int = 0) -> socket.socket:
    """A UDP socket made in network namespace `ns` (it stays there), bound to address:port."""
    with in_netns(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((address, port))
    except OSError:
        sock.close()
        raise
    return sock


class StunServer(asyncio.DatagramProtocol):
    """Answers each Binding request with the address it came from (XOR-MAPPED-ADDRESS);
    anything else is ignored."""

    def __init__(self) -> None:
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)  # a datagram endpoint's

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        try:
            request = stun.parse_message(data)
        except ValueError:
            return
        if request.message_method != stun.Method.BINDING or (
            request.message_class != stun.Class.REQUEST
        ):
            return
        response = stun.Message(
            message_method=stun.Method.BINDING,
            message_class=stun.Class.RESPONSE,
            transaction_id=request.transaction_id,
        )
        response.attributes["XOR-MAPPED-ADDRESS"] = (str(addr[0]), addr[1])
        if self._transport is not None:
            self._transport.sendto(bytes(response), addr)

    @classmethod
    async def serve(cls, sock: socket.socket) -> asyncio.DatagramTransport:
        """Serve on a bound UDP `sock` (made in the namespace it serves in); close the
        returned transport to stop."""
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(cls, sock=sock)
        return transport

    @classmethod
    async def serve_in(cls, ns: str, address: str) -> asyncio.DatagramTransport:
        """Serve on address:`STUN_PORT` in namespace `ns`; close the transport to stop."""
        return await cls.serve(udp_socket_in(ns, address, STUN_PORT))


async def stun_mapped_address(sock: socket.socket, server: tuple[str, int]) -> tuple[str, int]:
    """The address a STUN server sees UDP `sock` at (our NAT's mapping of it toward `server`).

    Raises:
        TimeoutError: no answer within CLIENT_TIMEOUT_S.
    """
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    async with asyncio.timeout(CLIENT_TIMEOUT_S):
        await loop.sock_sendto(sock, bytes(request), server)
        while True:
            data = await loop.sock_recv(sock, 2048)
            try:
                answer = stun.parse_message(data)
            except ValueError:
                continue
            if answer.transaction_id == request.transaction_id:
                host, port = answer.attributes["XOR-MAPPED-ADDRESS"]
                return str(host), int(port)
