"""Certificate caches, one per thread (node/identity/certificates.py): the trio thread's gossip
validators and the event loop's receiver never share one, and a cache used from a second
thread says so instead of being corrupted under load."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from hearthmesh.node.identity.certificates import ThreadCertificates
from hearthmesh.protocol.errors import LocalProtocolError
from hearthmesh.protocol.identity import DeviceCertificate

from ..protocol.test_certificate_cache import NOW_MS
from ..protocol.test_certificate_cache import _certificate as certificate


def _verify_on_another_thread(cache: ThreadCertificates, cert: DeviceCertificate) -> BaseException:
    raised: list[BaseException] = []

    def run() -> None:
        try:
            cache.verify(cert, now_ms=NOW_MS)
        except BaseException as exc:  # handed back to the test to assert on
            raised.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert len(raised) == 1, "the second thread was let in"
    return raised[0]


def test_the_first_thread_owns_the_cache_and_a_second_is_refused(
    rng: Callable[[int], bytes],
) -> None:
    cache = ThreadCertificates()
    cert = certificate(rng)
    cache.verify(cert, now_ms=NOW_MS)
    cache.verify(cert, now_ms=NOW_MS)  # the owner, again
    assert cert in cache
    refused = _verify_on_another_thread(cache, certificate(rng))
    assert isinstance(refused, LocalProtocolError)
    assert len(cache) == 1  # the refused call changed nothing


def test_a_cache_first_used_on_another_thread_belongs_to_it(
    rng: Callable[[int], bytes],
) -> None:
    cache = ThreadCertificates()
    cert = certificate(rng)
    thread = threading.Thread(target=cache.verify, args=(cert,), kwargs={"now_ms": NOW_MS})
    thread.start()
    thread.join()
    assert cert in cache
    with pytest.raises(LocalProtocolError):
        cache.verify(cert, now_ms=NOW_MS)
