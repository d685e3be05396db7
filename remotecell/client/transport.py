"""How a process reaches the control plane: channels, stubs, credentials, a loop thread.

The clients (``AsyncClient``, ``Client``) and the runner's connection build their
channels and stubs here, so that every connection to a control plane has the same
options, and the stubs are made in one place.

An ``https://`` endpoint gets a TLS channel. With a fingerprint pin, gRPC cannot check
the pin itself, so the server's certificate is fetched once per process (a plain TLS
handshake), compared with the pin, and then made the channel's only trusted root: a
server presenting any other certificate later fails the handshake.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

import grpc
import grpc.experimental

from remotecell._proto import pb_grpc
from remotecell.client.config import ENV_CA_FILE, ENV_TLS_FINGERPRINT, Endpoint
from remotecell.contract.errors import ConfigError, ConnectionError
from remotecell.contract.wire import CHUNK_BYTES, MAX_MESSAGE_BYTES

__all__ = [
    "CHANNEL_OPTIONS",
    "CHUNK",
    "CertificateMismatch",
    "LoopThread",
    "aio_channel",
    "blocking_channel",
    "check_pin",
    "control_plane_stub",
    "metadata",
    "tls_credentials",
]

T = TypeVar("T")

#: Content (blobs, volume files) travels in messages of this size.
CHUNK = CHUNK_BYTES

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
    # The control plane takes no larger message: larger values travel as blobs.
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # Find a restarted control plane quickly instead of backing off for minutes.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.enable_retries", 0),
]

# A blocking stream is read by the thread that iterates it, with no hand-off through the
# channel's polling thread (measured: ~0.5 ms less to a warm cell's last event).
_BLOCKING_OPTIONS: list[tuple[str, Any]] = [
    (grpc.experimental.ChannelOptions.SingleThreadedUnaryStream, 1)
]


def metadata(endpoint: Endpoint) -> tuple[tuple[str, str], ...]:
    """The call metadata that carries ``endpoint``'s token."""
    return (("authorization", f"Bearer {endpoint.token}"),)


def aio_channel(endpoint: Endpoint) -> grpc.aio.Channel:
    """An asyncio channel to ``endpoint``, for the running event loop.

    Raises:
        ConnectionError: a pinned certificate is not the one the server presents.
    """
    if endpoint.tls:
        credentials, options = tls_credentials(endpoint)
        return grpc.aio.secure_channel(
            endpoint.target, credentials, options=[*CHANNEL_OPTIONS, *options]
        )
    return grpc.aio.insecure_channel(endpoint.target, options=CHANNEL_OPTIONS)


def blocking_channel(endpoint: Endpoint) -> grpc.Channel:
    """A channel to ``endpoint`` for blocking calls from ordinary threads.

    Raises:
        ConnectionError: a pinned certificate is not the one the server presents.
    """
    if endpoint.tls:
        credentials, options = tls_credentials(endpoint)
        return grpc.secure_channel(
            endpoint.target,
            credentials,
            options=[*CHANNEL_OPTIONS, *_BLOCKING_OPTIONS, *options],
        )
    return grpc.insecure_channel(endpoint.target, options=[*CHANNEL_OPTIONS, *_BLOCKING_OPTIONS])


def tls_credentials(
    endpoint: Endpoint,
) -> tuple[grpc.ChannelCredentials, list[tuple[str, Any]]]:
    """The credentials (and channel options) that check ``endpoint``'s certificate: its
    fingerprint pin, else its CA file, else the system's CAs.

    Raises:
        ConfigError: the CA file cannot be read.
        ConnectionError: the server cannot be reached to check a fingerprint pin, or
            presents another certificate.
    """
    if endpoint.tls_fingerprint:
        pem, name = _pinned(endpoint)
        # The pin decides, not the name: the name is one the certificate holds.
        options = [("grpc.ssl_target_name_override", name)] if name else []
        return grpc.ssl_channel_credentials(root_certificates=pem), options
    if endpoint.ca_file:
        try:
            with open(endpoint.ca_file, "rb") as f:
                roots = f.read()
        except OSError as err:
            raise ConfigError(
                f"cannot read the CA file {endpoint.ca_file} ({ENV_CA_FILE}): {err.strerror}"
            ) from None
        return grpc.ssl_channel_credentials(root_certificates=roots), []
    return grpc.ssl_channel_credentials(), []


class CertificateMismatch(ConnectionError):
    """The control plane presents a certificate other than the pinned one: retrying
    cannot help."""


def check_pin(endpoint: Endpoint) -> None:
    """Checks ``endpoint``'s pinned certificate now, where it has a fingerprint pin not
    checked yet in this process, so that the channels made next find it checked.

    It is a blocking TLS handshake (up to 10 s): an event loop calls it in a worker
    thread, before ``aio_channel``, which would otherwise make it on the loop.

    Raises:
        CertificateMismatch: the server presents another certificate.
        ConnectionError: the server cannot be reached, or does not answer TLS.
    """
    if endpoint.tls and endpoint.tls_fingerprint:
        _pinned(endpoint)


_pins: dict[tuple[str, str], tuple[bytes, str]] = {}
_pins_lock = threading.Lock()


def _pinned(endpoint: Endpoint) -> tuple[bytes, str]:
    """The PEM certificate ``endpoint``'s server presents, which has the pinned
    fingerprint, and a name it is valid for; fetched once per process."""
    key = (endpoint.target, endpoint.tls_fingerprint)
    with _pins_lock:
        if key in _pins:
            return _pins[key]
    host, _, port = endpoint.target.rpartition(":")
    try:
        pem = ssl.get_server_certificate((host.strip("[]"), int(port)), timeout=10.0)
    except ValueError:
        raise ConfigError(f"{endpoint.url!r}: expected https://HOST:PORT") from None
    except ssl.SSLError as err:
        raise ConnectionError(
            f"the control plane at {endpoint.url} does not answer TLS ({err.reason or err}); "
            "if it serves plaintext, give its address as HOST:PORT without https://"
        ) from None
    except OSError as err:
        raise ConnectionError(
            f"no remotecell control plane answers at {endpoint.url} "
            f"({err.strerror or err}); start one with `remotecell serve --tls`"
        ) from None
    found = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()
    if found != endpoint.tls_fingerprint:
        raise CertificateMismatch(
            f"the control plane at {endpoint.url} presents a certificate with SHA-256 "
            f"fingerprint {found}, not the pinned {endpoint.tls_fingerprint} "
            f"({ENV_TLS_FINGERPRINT}): check the address, and pin the new fingerprint only "
            "if you know its certificate changed"
        )
    pinned = (pem.encode(), _a_name(pem.encode()))
    with _pins_lock:
        _pins[key] = pinned
    return pinned


def _a_name(pem: bytes) -> str:
    """A host name (else an address) the certificate is valid for, "" if it names none."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pem)
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ""
    dns = names.get_values_for_type(x509.DNSName)
    addresses = names.get_values_for_type(x509.IPAddress)
    return dns[0] if dns else str(addresses[0]) if addresses else ""


def control_plane_stub(channel: grpc.Channel | grpc.aio.Channel) -> pb_grpc.ControlPlaneStub:
    """The control plane's RPCs over ``channel`` (blocking or asyncio, as the channel is)."""
    return pb_grpc.ControlPlaneStub(channel)


class LoopThread:
    """One event loop running forever in a daemon thread, for async code that blocking
    code drives (such as the runner's connection)."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()
            raise

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)
