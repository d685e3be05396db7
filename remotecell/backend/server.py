"""`remotecell serve`: the control plane process, wiring only.

It opens the store and blob store, starts the controller with the local executor,
serves gRPC on the configured addresses (a Unix socket and/or TCP; over TLS where
``tls.listener_security`` says, with ``--tls-cert`` or a self-signed certificate), and
advertises itself in ``DATA_DIR/server.json`` for the notebook side to find.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import getpass
import json
import logging
import os
import re
import secrets
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

import grpc

import remotecell
from remotecell._proto import pb_grpc
from remotecell.backend.auth import Authenticator
from remotecell.backend.blob_service import BlobServicer
from remotecell.backend.config import ServeConfig, parse_http, runner_log_dir
from remotecell.backend.controller import Controller, ControllerConfig
from remotecell.backend.deployments.manager import DeploymentManager
from remotecell.backend.deployments.service import DeploymentServicer
from remotecell.backend.deployments.store import DeploymentStore
from remotecell.backend.executors.base import Executor
from remotecell.backend.executors.local import LocalExecutor
from remotecell.backend.gateway.endpoints import EndpointGateway
from remotecell.backend.gpus import inventory
from remotecell.backend.images.cache import open_cache
from remotecell.backend.images.service import ImageServicer
from remotecell.backend.job_service import JobServicer
from remotecell.backend.scheduler.queue import MachineGPU
from remotecell.backend.secrets.service import SecretServicer
from remotecell.backend.secrets.store import SecretStore
from remotecell.backend.service import ControlPlaneService
from remotecell.backend.state import private
from remotecell.backend.state.blobs import TOUCH_EVERY, BlobStore
from remotecell.backend.state.credentials import CredentialStore
from remotecell.backend.state.store import Store
from remotecell.backend.state.volumes import VolumeRecords
from remotecell.backend.tls import Certificate, TLSRequired, listener_security
from remotecell.backend.volumes.service import VolumeServicer
from remotecell.backend.volumes.store import VolumeStore
from remotecell.client.config import ENDPOINT_FILE, TOKEN_FILE
from remotecell.client.config import data_dir as default_data_dir
from remotecell.client.image import Image
from remotecell.contract.users import USER_NAME
from remotecell.contract.wire import MAX_MESSAGE_BYTES

if TYPE_CHECKING:
    from remotecell.backend.gateway.http import HTTPServer

log = logging.getLogger("remotecell.server")

GRPC_OPTIONS = [
    # gRPC takes in a whole message before the token is checked: this bounds what an
    # unauthenticated call can make the control plane hold (contract/wire.py).
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", 256 * 1024 * 1024),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5000),
]


def default_socket(data_dir: Path) -> str:
    # In a directory of its own: the docker executor mounts the socket's directory into
    # runner containers, and the data directory holds the token and the state. Private
    # either way (clients find it in server.json), never a guessable name in /tmp.
    path = data_dir / "run" / "cp.sock"
    if len(str(path)) > 100:  # AF_UNIX paths are limited to 108 bytes
        path = private.socket_dir(data_dir) / "cp.sock"
    return f"unix:{path}"


def local_user() -> str:
    """This machine's user as a remotecell user name: the data directory's owner."""
    try:
        name = getpass.getuser()
    except Exception:
        name = ""
    name = re.sub(r"[^a-z0-9_.-]", "_", name.lower())[:64]
    return name if USER_NAME.fullmatch(name) else "owner"


def ensure_token(data_dir: Path) -> str:
    """The data directory's token, created (mode 0600) if it does not exist."""
    path = data_dir / TOKEN_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


class AlreadyRunning(RuntimeError):
    pass


class CannotServe(RuntimeError):
    """An address the control plane was told to serve on cannot be used."""


def _lock(data_dir: Path) -> IO[str]:
    handle = open(data_dir / "server.lock", "a+")  # noqa: SIM115 - held for the process lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise AlreadyRunning(
            f"a remotecell control plane already runs on {data_dir}; stop it first "
            "(`remotecell stop`) or pass another --data-dir"
        ) from None
    return handle


def _executor(config: ServeConfig, data_dir: Path, blobs: BlobStore) -> Executor:
    log_dir = runner_log_dir(data_dir)
    volume_cache = data_dir / "volume-copies"
    if config.executor == "local":
        return LocalExecutor(log_dir, volume_cache=volume_cache)
    if config.executor == "docker":
        from remotecell.backend.executors.docker import DockerExecutor

        return DockerExecutor(log_dir, blob_dir=blobs.local_dir, volume_cache=volume_cache)
    raise ValueError(f"unknown executor {config.executor!r}: use local or docker")


async def run(config: ServeConfig, ready: Callable[[list[str]], None] | None = None) -> None:
    """Runs the control plane until cancelled or signalled (SIGTERM/SIGINT)."""
    data_dir = (config.data_dir or default_data_dir()).resolve()
    listen = list(config.listen or [default_socket(data_dir)])
    security = _security(config, listen)  # before anything is made or bound
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        private.tighten(data_dir)  # before anything in it is read or written
    except private.NotPrivate as err:
        raise CannotServe(str(err)) from None
    certificate = _certificate(config, data_dir, listen) if "tls" in security.values() else None
    lock = _lock(data_dir)
    token = ensure_token(data_dir)
    token_file = data_dir / TOKEN_FILE
    store = Store(data_dir / "state.sqlite3")
    # The data directory's token is its owner's: an admin, who makes the other users.
    users = CredentialStore(store.path)
    owner = local_user()
    users.add_token(owner, token, admin=True)
    users.adopt_unowned(owner)
    secret_store = SecretStore(store.path)  # its key: secrets.key beside the database
    blobs = BlobStore(
        config.blob_url or str(data_dir / "blobs"),
        touch_every=min(TOUCH_EVERY, config.blob_ttl / 10) if config.blob_ttl > 0 else TOUCH_EVERY,
    )
    volume_store = VolumeStore(
        config.volume_url or str(data_dir / "volumes"), VolumeRecords(store.path)
    )
    images = open_cache(data_dir, docker_base_image=config.docker_base_image)
    private.tighten(data_dir)  # the state files just made, too
    executor = _executor(config, data_dir, blobs)
    machine_gpus, gpu_note = _machine_gpus()

    server = grpc.aio.server(interceptors=[Authenticator(users.lookup)], options=GRPC_OPTIONS)
    addresses: list[str] = []
    for address in listen:
        if security[address] == "insecure":
            log.warning(
                "serving %s in plaintext (--insecure): anyone on the network can read the "
                "token and every cell",
                address,
            )
        if certificate is not None and security[address] == "tls":
            host = address.rpartition(":")[0]
            credentials = grpc.ssl_server_credentials([(certificate.key_pem, certificate.cert_pem)])
            bound = server.add_secure_port(address, credentials)
            if bound == 0:
                raise OSError(f"cannot listen on {address}")
            addresses.append(f"https://{host}:{bound}")
        elif address.startswith("unix:"):
            socket_path = Path(address[len("unix:") :])
            socket_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with contextlib.suppress(FileNotFoundError):
                socket_path.unlink()
            server.add_insecure_port(address)
            addresses.append(address)
        else:
            host = address.rpartition(":")[0]
            bound = server.add_insecure_port(address)
            if bound == 0:
                raise OSError(f"cannot listen on {address}")
            addresses.append(f"{host}:{bound}")

    controller = Controller(
        ControllerConfig(
            control_url=addresses[0],
            tls_fingerprint=certificate.fingerprint if certificate is not None else "",
            owner=owner,
            settings=config,
        ),
        store,
        executor,
        images=images,
        builder=config.builder,
        default_image=Image.debian_slim().to_spec()[0] if config.executor == "docker" else None,
        fetch_blob=blobs.get,
        gpus=machine_gpus,
        gpu_note=gpu_note,
        touch_blobs=blobs.touch,
        secret_store=secret_store,
        volume_store=volume_store,
        credentials=users,
    )
    volume_store.reserved = _runner_paths(data_dir, addresses, blobs)
    deployment_store = DeploymentStore(store.path)
    deployments = DeploymentManager(controller, deployment_store, data_dir / "deployments")
    http = _http_server(  # bound now: a port in use stops here
        config.http,
        token,
        controller,
        certificate if security.get("http") == "tls" else None,
        EndpointGateway(deployments, users.lookup),
    )
    servicer = ControlPlaneService(
        JobServicer(controller, blobs),
        BlobServicer(blobs, config.max_blob_size),
        ImageServicer(images),
        VolumeServicer(volume_store, controller.volume_users, users.has_user),
        SecretServicer(secret_store, users.has_user),
        DeploymentServicer(deployments),
    )
    pb_grpc.add_ControlPlaneServicer_to_server(servicer, server)
    await server.start()
    images.recover()
    await controller.start()
    await deployments.start()
    http_task = asyncio.create_task(http.serve()) if http is not None else None
    collecting = (
        asyncio.create_task(_collect_blobs(blobs, controller, config.blob_ttl))
        if config.blob_ttl > 0 and blobs.local_dir is not None
        else None
    )
    controller.http_url = http.url if http is not None else ""
    endpoint = data_dir / ENDPOINT_FILE
    tmp = endpoint.with_suffix(".tmp")
    tmp.write_text(
        json.dumps(
            {
                "url": addresses[0],
                "urls": addresses,
                "pid": os.getpid(),
                "version": remotecell.__version__,
                "token_file": str(token_file),
                "http_url": controller.http_url,
                "tls_fingerprint": certificate.fingerprint if certificate is not None else "",
            }
        )
    )
    tmp.chmod(0o600)
    os.replace(tmp, endpoint)
    log.info(
        "remotecell control plane %s listening on %s", remotecell.__version__, ", ".join(addresses)
    )
    if controller.http_url:
        log.info("Prometheus metrics at %s/metrics", controller.http_url)
    if certificate is not None:
        log.info(
            "TLS certificate %s, SHA-256 fingerprint %s (clients pin it with "
            "REMOTECELL_TLS_FINGERPRINT)",
            certificate.cert_path,
            certificate.fingerprint,
        )
    if ready is not None:
        ready(addresses)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        with contextlib.suppress(FileNotFoundError):
            info = json.loads(endpoint.read_text())
            if info.get("pid") == os.getpid():
                endpoint.unlink()
        if collecting is not None:
            collecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collecting
        if http is not None and http_task is not None:
            await http.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(http_task, 5.0)
        await deployments.close()
        await controller.close()
        deployment_store.close()
        await images.close()
        await server.stop(grace=1.0)
        secret_store.close()
        users.close()
        volume_store.records.close()
        store.close()
        lock.close()


async def _collect_blobs(blobs: BlobStore, controller: Controller, ttl: float) -> None:
    """Deletes blobs unused for ``ttl`` seconds, a few times per ``ttl`` (hourly at most)."""
    interval = min(max(ttl / 4, 0.25), 3600.0)
    while True:
        keep = controller.active_blob_refs()
        try:
            await asyncio.to_thread(blobs.collect, ttl, keep)
        except Exception:  # the next round tries again; serving goes on
            log.exception("collecting unused blobs failed")
        await asyncio.sleep(interval)


def _security(config: ServeConfig, listen: list[str]) -> dict[str, str]:
    """How each listener, and the HTTP side (under "http"), is served: "tls",
    "plaintext" or "insecure" (``tls.listener_security`` decides)."""
    security: dict[str, str] = {}
    try:
        for address in listen:
            security[address] = listener_security(
                address, tls=config.serves_tls, insecure=config.insecure
            )
        if parse_http(config.http) is not None:
            security["http"] = listener_security(
                config.http, tls=config.serves_tls, insecure=config.insecure, flag="--http"
            )
    except TLSRequired as err:
        raise CannotServe(str(err)) from None
    if (config.tls_cert is None) != (config.tls_key is None):
        raise CannotServe("--tls-cert and --tls-key go together: give both, or neither")
    return security


def _certificate(config: ServeConfig, data_dir: Path, listen: list[str]) -> Certificate:
    """The certificate given (``--tls-cert``/``--tls-key``), else the data directory's
    self-signed one, made for the hosts listened on if there is none."""
    from remotecell.backend import tls

    try:
        if config.tls_cert is not None and config.tls_key is not None:
            return tls.load_certificate(config.tls_cert, config.tls_key)
        hosts = [h for a in [*listen, config.http] if (h := tls.listener_host(a)) is not None]
        return tls.self_signed(data_dir, hosts)
    except ValueError as err:
        raise CannotServe(str(err)) from None


def _http_server(
    address: str,
    token: str,
    controller: Controller,
    certificate: Certificate | None = None,
    gateway: EndpointGateway | None = None,
) -> HTTPServer | None:
    """The HTTP side on ``address`` (``host:port``), or None where it is "off"; over TLS
    with ``certificate``; deployed endpoints served by ``gateway``."""
    parsed = parse_http(address)
    if parsed is None:
        return None
    from remotecell.backend.gateway.http import HTTPServer, make_app
    from remotecell.backend.telemetry.prometheus import metrics_endpoint

    manager = gateway.manager if gateway is not None else None
    app = make_app(token, {"/metrics": metrics_endpoint(controller, manager)}, gateway)
    try:
        return HTTPServer(app, *parsed, certificate=certificate)
    except OSError as err:
        raise CannotServe(
            f"cannot serve HTTP on {address}: {err.strerror or err}; "
            "pass another --http HOST:PORT, or --http off"
        ) from None


def _runner_paths(data_dir: Path, addresses: list[str], blobs: BlobStore) -> tuple[str, ...]:
    """Directories runners need as they are, so no volume may be mounted over them: the
    data directory, the socket's, the blob store's, and the runner's Python (here, and
    in the docker builder's images)."""
    from remotecell.backend.images.docker import VENV

    paths = {str(data_dir), sys.prefix, sys.base_prefix, VENV}
    paths.add(str(Path(remotecell.__file__).resolve().parent.parent))
    if blobs.local_dir is not None:
        paths.add(str(blobs.local_dir))
    for address in addresses:
        if address.startswith("unix:"):
            paths.add(os.path.dirname(os.path.abspath(address[len("unix:") :])))
    return tuple(sorted(paths))


def _machine_gpus() -> tuple[tuple[MachineGPU, ...], str]:
    """This machine's GPUs as NVML lists them, read once at start, and why there are
    none when there are none."""
    try:
        with inventory.load() as found:
            gpus = found.gpus
    except inventory.NVMLUnavailable as err:
        log.info("%s", err)
        return (), str(err)
    for gpu in gpus:
        log.info("%s", gpu.describe())
    machine = tuple(MachineGPU(g.uuid, g.type, g.name, g.index, g.memory_total) for g in gpus)
    return machine, "" if machine else "NVML sees no GPU on this machine"
