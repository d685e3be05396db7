"""The control plane's TLS: which listeners need it, and the certificate it serves.

A listener reachable from other machines (anything but loopback or a Unix socket) carries
the token and every cell's code, so it is served over TLS unless ``--insecure`` says
otherwise (``listener_security``, the one decision). Without ``--tls-cert``/``--tls-key``
the control plane makes a self-signed certificate in its data directory once and reuses
it, so a client's pin (its SHA-256 fingerprint) stays valid across restarts.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "Certificate",
    "TLSRequired",
    "fingerprint",
    "is_loopback",
    "listener_host",
    "listener_security",
    "load_certificate",
    "self_signed",
]

#: Where a generated certificate and its key live, in the data directory.
CERT_FILE = "tls/cert.pem"
KEY_FILE = "tls/key.pem"

Security = Literal["tls", "plaintext", "insecure"]


class TLSRequired(ValueError):
    """A listener that needs TLS was given none; the message says what to pass."""


def listener_host(address: str) -> str | None:
    """The host of a ``HOST:PORT`` listener (``[::1]:7433`` -> ``::1``); None for ``unix:``."""
    if address.startswith("unix:"):
        return None
    return address.rpartition(":")[0].strip("[]")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only: 127.0.0.0/8, ::1 or localhost."""
    if host.lower() in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: whatever it resolves to, other machines may reach it


def listener_security(
    address: str, *, tls: bool, insecure: bool, flag: str = "--listen"
) -> Security:
    """How the listener on ``address`` is served: "tls", "plaintext" (a Unix socket or
    loopback) or "insecure" (plaintext elsewhere, as ``--insecure`` allows; warn of it).

    Raises:
        TLSRequired: ``address`` is reachable from other machines and neither TLS nor
            ``--insecure`` was asked for.
    """
    host = listener_host(address)
    if host is None:
        return "plaintext"  # a Unix socket: its directory's mode guards it
    if tls:
        return "tls"
    if is_loopback(host):
        return "plaintext"
    if insecure:
        return "insecure"
    raise TLSRequired(
        f"{flag} {address} is reachable from other machines, so it needs TLS: pass --tls "
        "(a self-signed certificate is made in the data directory), or --tls-cert PATH "
        "--tls-key PATH, or --insecure to serve it in plaintext"
    )


@dataclass(frozen=True)
class Certificate:
    """A certificate the control plane serves, with its key, as files and as bytes."""

    cert_path: Path
    key_path: Path
    cert_pem: bytes
    key_pem: bytes

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cert_pem)


def fingerprint(cert_pem: bytes) -> str:
    """The SHA-256 of the (first) certificate in ``cert_pem``'s DER, as lowercase hex."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def load_certificate(cert_path: Path, key_path: Path) -> Certificate:
    """The certificate and key in these PEM files.

    Raises:
        ValueError: one is unreadable or not PEM; the message names it.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    loaded: list[bytes] = []
    for path, what in ((cert_path, "certificate"), (key_path, "key")):
        try:
            loaded.append(path.read_bytes())
        except OSError as err:
            raise ValueError(f"cannot read the TLS {what} {path}: {err.strerror}") from None
    cert_pem, key_pem = loaded
    try:
        x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise ValueError(
            f"{cert_path} holds no PEM certificate; give --tls-cert a PEM file"
        ) from None
    try:
        load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise ValueError(
            f"{key_path} holds no unencrypted PEM private key; give --tls-key one"
        ) from None
    return Certificate(cert_path, key_path, cert_pem, key_pem)


def self_signed(data_dir: Path, hosts: list[str]) -> Certificate:
    """The data directory's self-signed certificate, made (ECDSA P-256, its key 0600) if
    there is none: valid for ``hosts``, localhost, 127.0.0.1 and this machine's name.
    An existing one is reused as it is, so that its fingerprint stays what clients pin."""
    cert_path, key_path = data_dir / CERT_FILE, data_dir / KEY_FILE
    if cert_path.exists() and key_path.exists():
        return load_certificate(cert_path, key_path)
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys([*hosts, "localhost", "127.0.0.1", socket.gethostname()]):
        if not host or host in ("0.0.0.0", "::"):
            continue  # a wildcard bind is no name a client connects to
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "remotecell control plane")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        # A CA for itself only, so TLS libraries accept it as the root a client pins.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(mode=0o700, exist_ok=True)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    for path, content in ((key_path, key_pem), (cert_path, cert_pem)):
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.replace(tmp, path)  # the key first: a certificate alone is never reused
    return Certificate(cert_path, key_path, cert_pem, key_pem)
