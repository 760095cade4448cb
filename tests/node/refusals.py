"""A bare host's refusal handler for tests: what it reported, in order (not a test module)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hearthmesh.protocol.errors import ErrorCode, RemoteProtocolError


@dataclass(slots=True)
class RefusalLog:
    """`P2PHost.set_refusal_handler(log)`: each refusal's peer, code and whole-frame flag, and
    the protocols they were charged under."""

    seen: list[tuple[str, ErrorCode, bool]] = field(default_factory=list)
    protocols: set[str] = field(default_factory=set)

    def __call__(
        self, peer: str, error: RemoteProtocolError, *, protocol: str, whole_frame: bool = True
    ) -> None:
        self.seen.append((peer, ErrorCode(error.code), whole_frame))
        self.protocols.add(protocol)
