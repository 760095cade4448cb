"""The outbox's reason for a batch no home took (node/delivery/outbox.py `failure_text`): the
log line that says why a destination went down keeps each home's causes, and stays bounded."""

from __future__ import annotations

from hearthmesh.node.delivery.outbox import FAILURE_TEXT_MAX, failure_text
from hearthmesh.node.delivery.peer_link import DeliveryFailed
from hearthmesh.node.p2p.errors import StreamOpenFailed, describe_error


def _failure(peer: str) -> str:
    """What `PeerLinks.deliver` raises when the open's negotiation timed out deep in libp2p:
    the host names the chain (`describe_error`), the link names the peer and the kind."""
    try:
        try:
            try:
                raise TimeoutError("multiselect: no answer to the protocol proposal")
            except TimeoutError as inner:
                raise ConnectionError("yamux stream open: negotiation did not complete") from inner
        except ConnectionError as exc:
            raise StreamOpenFailed(
                f"open /hearthmesh/deliver/0 to {peer}: {describe_error(exc)}"
            ) from exc
    except StreamOpenFailed as exc:
        return str(DeliveryFailed(f"{peer[-8:]}: {type(exc).__name__}: {exc}"))


def test_each_homes_failure_keeps_its_causes() -> None:
    homes = ["12D3KooWHomeOneOfTheRecipientAAAAAAAA", "12D3KooWHomeTwoOfTheRecipientBBBBBBBB"]
    text = failure_text([*(_failure(home) for home in homes), "handed to a relay"])
    # the innermost cause of both homes, and the relay's hand-off after them
    assert text.count("TimeoutError: multiselect: no answer to the protocol proposal") == 2
    assert text.endswith("; handed to a relay")


def test_the_reason_stays_bounded_whatever_the_errors_say() -> None:
    text = failure_text(["x" * 100_000 for _ in range(8)] + ["handed to a relay"])
    assert len(text) <= FAILURE_TEXT_MAX
    assert text.count("x" * 10) and ";" in text  # each home got its share, not the first alone
