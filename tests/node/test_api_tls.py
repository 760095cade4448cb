"""The API beyond loopback (SPEC §15.7): HTTPS with the certificate made at init, pinned by
the fingerprint in the pairing link; plain HTTP on any other address is refused."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509

from hearthmesh.node.api import ApiConfig, ApiServer
from hearthmesh.node.api.paired_clients import COOKIE_NAME
from hearthmesh.node.api.tls import KEY_FILE, TlsError, certificate_fingerprint, ensure_certificate
from hearthmesh.node.node import Node
from tests.integration.api_helpers import TOKEN
from tests.integration.conftest import node_config


def test_the_certificate_names_loopback_and_the_configured_hosts(tmp_path: Path) -> None:
    cert = ensure_certificate(tmp_path, ["192.168.1.5", "home.lan"])
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    names = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert {str(n.value) for n in names.value} >= {
        "localhost",
        "127.0.0.1",
        "192.168.1.5",
        "home.lan",
    }
    fingerprint = certificate_fingerprint(cert)
    assert ensure_certificate(tmp_path) == cert  # kept, not remade
    assert certificate_fingerprint(cert) == fingerprint


async def test_plain_http_beyond_loopback_is_refused(tmp_path: Path) -> None:
    async with asyncio.timeout(15), Node(node_config(tmp_path / "a")) as node:
        with pytest.raises(TlsError, match=r"plain HTTP on 0\.0\.0\.0 is refused"):
            async with ApiServer(node, ApiConfig(token=TOKEN, host="0.0.0.0", port=0)):
                pass


async def test_https_pinned_by_the_fingerprint_in_the_pairing_link(tmp_path: Path) -> None:
    cert = ensure_certificate(tmp_path)
    config = ApiConfig(token=TOKEN, port=0, tls_cert_file=cert, tls_key_file=tmp_path / KEY_FILE)
    async with (
        asyncio.timeout(15),
        Node(node_config(tmp_path / "a")) as node,
        ApiServer(node, config) as api,
    ):
        assert api.url.startswith("https://127.0.0.1:")
        fingerprint = certificate_fingerprint(cert)
        pinned = aiohttp.Fingerprint(bytes.fromhex(fingerprint))
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with (
            aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
        ):
            async with http.post(api.url + "/v1/clients/pair", headers=auth, ssl=pinned) as r:
                offer = await r.json()
            assert offer["url"] == f"{api.url}/#pair={offer['code']}&fp={fingerprint}"
            async with http.post(
                api.url + "/v1/pair", json={"code": offer["code"]}, ssl=pinned
            ) as r:
                assert r.status == 201
                assert r.cookies[COOKIE_NAME]["secure"]  # never sent over plain HTTP
            wrong = aiohttp.Fingerprint(bytes(32))
            with pytest.raises(aiohttp.ServerFingerprintMismatch):
                async with http.get(api.url + "/", ssl=wrong):
                    pass
