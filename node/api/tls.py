"""TLS for the client API beyond loopback (SPEC §15.7): a self-signed certificate made at init.

State owned: DATA_DIR/api-cert.pem and api-key.pem (0600). The certificate's sha-256
fingerprint goes into the pairing QR code, so a client that scans it can pin the certificate
instead of trusting a name. An operator may provide their own pair of files instead.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hearthmesh.protocol.errors import HearthError

__all__ = [
    "CERT_FILE",
    "KEY_FILE",
    "TlsError",
    "certificate_fingerprint",
    "ensure_certificate",
    "server_context",
]

CERT_FILE: Final = "api-cert.pem"
KEY_FILE: Final = "api-key.pem"
_VALID_DAYS: Final = 3650
_ALWAYS: Final = ("localhost", "127.0.0.1", "::1")


class TlsError(HearthError):
    """A certificate or key that cannot be made or loaded."""


def _name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def ensure_certificate(
    data_dir: Path, hosts: Sequence[str] = (), *, now: datetime.datetime | None = None
) -> Path:
    """Make DATA_DIR/api-cert.pem and api-key.pem unless both exist; returns the cert path.

    The certificate names `localhost`, the loopback addresses and `hosts` (the names and
    addresses a phone will use, from `allowed_hosts`).
    """
    cert_path, key_path = data_dir / CERT_FILE, data_dir / KEY_FILE
    if cert_path.exists() and key_path.exists():
        return cert_path
    key = ec.generate_private_key(ec.SECP256R1())
    start = now or datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hearthmesh home node")])
    names = list(dict.fromkeys([*_ALWAYS, *hosts]))
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - datetime.timedelta(minutes=5))
        .not_valid_after(start + datetime.timedelta(days=_VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName([_name(h) for h in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key_path.unlink(missing_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # private from the start
    with os.fdopen(fd, "wb") as file:
        file.write(key_pem)
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return cert_path


def certificate_fingerprint(cert_path: Path) -> str:
    """sha-256 of the certificate's DER bytes, as 64 hex digits (what a client pins)."""
    try:
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise TlsError(f"cannot read the certificate {cert_path}: {exc}") from None
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """A server context of TLS 1.2 or newer with this certificate and key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_path, key_path)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"cannot load {cert_path} / {key_path}: {exc}") from None
    return context
