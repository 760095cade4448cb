"""Serving and making key claims over `/hearthmesh/keys/0` (SPEC §27.2.2).

`KeyServer` answers a claim for our own device with our signed bundle and one one-time key,
handed out once (`DeviceCrypto.claim_one_time_key` inside a write batch). A claim for any other
device is NOT_FOUND, and a peer asking faster than its limit is RATE_LIMITED; both are charged
to the peer. `claim_keys` is the asker's side: it returns the keys only once they verify as
the named device's. State: the per-peer rate buckets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from hearthmesh.node.clock import Clock
from hearthmesh.node.e2ee.device_crypto import DeviceCrypto
from hearthmesh.node.e2ee.request_server import RequestServer
from hearthmesh.node.p2p.host import P2PHost
from hearthmesh.node.rate_limit import RateLimiter
from hearthmesh.protocol import e2ee
from hearthmesh.protocol.delivery import ProtocolErrorFrame
from hearthmesh.protocol.errors import NotFound, RemoteProtocolError, refusal
from hearthmesh.protocol.identity import DeviceId
from hearthmesh.storage.async_store import AsyncStore

__all__ = ["CLAIMS_BURST", "CLAIMS_PER_S", "KeyServer", "claim_keys"]

CLAIMS_PER_S: Final = 1
CLAIMS_BURST: Final = 10
"""Claims one peer may make: a group's worth of new sessions at once, then one a second. Each
claim uses up a one-time key, so this also bounds how fast a stranger drains the pool."""


class KeyServer(RequestServer):
    """Answers key claims for our own device."""

    def __init__(
        self,
        *,
        store: AsyncStore,
        crypto: DeviceCrypto,
        device: DeviceId,
        clock: Clock,
        on_refused: Callable[[str, RemoteProtocolError], None],
    ) -> None:
        super().__init__(what="key claim", on_refused=on_refused)
        self._store = store
        self._crypto = crypto
        self._device = device
        self._clock = clock
        self._limits = RateLimiter(CLAIMS_PER_S, CLAIMS_BURST, clock)

    async def answer(self, peer: str, request: bytes) -> bytes:
        """Our bundle and a one-time key never handed out before (the key stays handed out
        even if the asker gives up before the answer: never reused)."""
        self._limits.require(peer, "key claims")
        if e2ee.decode_claim_request(request) != self._device:
            raise NotFound("no keys of that device here")
        one_time_key = await self._store.run(self._crypto.claim_one_time_key)
        bundle = await self._store.read(self._crypto.key_bundle, self._clock.now_ms())
        return e2ee.encode_claim_answer(
            e2ee.ClaimAnswer(
                bundle=e2ee.encode_key_bundle(bundle),
                one_time_key=e2ee.encode_one_time_key(one_time_key),
            )
        )


async def claim_keys(
    host: P2PHost, peer: str, device: DeviceId
) -> tuple[e2ee.KeyBundle, e2ee.OneTimeKey | None]:
    """Claim `device`'s keys from its home `peer`. The caller applies a timeout.

    Raises:
        RemoteProtocolError: the answer is malformed, the keys are not `device`'s, or the home
            refused (the error class of its code).
        StreamClosed: the stream ended early.
    """
    async with await host.open_stream(peer, e2ee.KEYS_PROTOCOL) as stream:
        await stream.write_frame(e2ee.encode_claim_request(device))
        answer = e2ee.decode_claim_answer(await stream.read_frame())
    if isinstance(answer, ProtocolErrorFrame):
        raise refusal(answer.code, f"key claim refused: {answer.message}")
    return e2ee.check_claim_answer(answer, device)
